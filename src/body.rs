//! Body and error types every layer passes around: the boxed error, the
//! response body sluice serves, and the request body it sends to an origin.
//!
//! A leaf below the pipeline and the upstream clients, so that neither
//! imports the other for them.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body as sluice serves it: relayed, generated or whole.
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request body as sluice sends it to an origin (proxied requests).
pub type OriginBody = UnsyncBoxBody<Bytes, BoxError>;

/// A whole response body.
pub fn full(bytes: Bytes) -> RespBody {
    UnsyncBoxBody::new(Full::new(bytes).map_err(|never| match never {}))
}

/// A whole request body for an origin.
pub fn full_request(bytes: Bytes) -> OriginBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}
