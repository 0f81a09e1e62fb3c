//! Wire formats (placeholder until written).
