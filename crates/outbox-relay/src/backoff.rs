//! Exponential backoff between retries (reconnects, stalled events), shared by both sources:
//! the kit's, one type for the three binaries (`service_kit::backoff`).

pub(crate) use service_kit::Backoff;
