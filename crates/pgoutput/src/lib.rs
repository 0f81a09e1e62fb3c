//! pgoutput decoder (placeholder until written).
