//! shipment-service (placeholder until its issue lands).
