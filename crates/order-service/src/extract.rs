//! Request extractors whose every rejection is an [`ApiError`], so clients always get the JSON
//! error body (axum's own rejections are plain text).
//!
//! - [`JsonBody`]: checks `Content-Type` (415), the size limit (413) and JSON syntax (400),
//!   and yields a `serde_json::Value` for the domain parsers to check field by field.
//! - [`OrderPath`], [`OrderLinePath`]: the UUIDs of `/orders/{orderId}[/lines/{orderLineId}]`
//!   (400 naming the segment when one is not a UUID).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON request body, syntax-checked.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(request.headers())?;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|err| ApiError::MalformedJson(err.to_string()))
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        }
    } else {
        ApiError::UnreadableBody(rejection.body_text())
    }
}

/// Accepts `application/json` and `application/<anything>+json`, with parameters such as
/// `charset=utf-8`.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType { found: None });
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            found: Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        })
    }
}

/// The `{orderId}` of `/orders/{orderId}`.
#[derive(Debug, Clone, Copy)]
pub struct OrderPath {
    pub order_id: Uuid,
}

/// The ids of `/orders/{orderId}/lines/{orderLineId}`.
#[derive(Debug, Clone, Copy)]
pub struct OrderLinePath {
    pub order_id: Uuid,
    pub line_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for OrderPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = raw_params(parts, state).await?;
        Ok(Self {
            order_id: uuid_param(&params, "orderId")?,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for OrderLinePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = raw_params(parts, state).await?;
        Ok(Self {
            order_id: uuid_param(&params, "orderId")?,
            line_id: uuid_param(&params, "orderLineId")?,
        })
    }
}

async fn raw_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<Vec<(String, String)>, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        // Fails only when a segment is not UTF-8 once percent-decoded: no UUID either.
        .map_err(|_| ApiError::InvalidPathId {
            name: "path",
            value: "<not UTF-8>".to_owned(),
        })?;
    Ok(params
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

fn uuid_param(params: &[(String, String)], name: &'static str) -> Result<Uuid, ApiError> {
    let value = params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or("");
    // Only the hyphenated form: a path id is an id as the API printed it.
    if value.len() != 36 {
        return Err(ApiError::InvalidPathId {
            name,
            value: value.to_owned(),
        });
    }
    Uuid::parse_str(value).map_err(|_| ApiError::InvalidPathId {
        name,
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.api+json",
        ] {
            assert!(check_json_content_type(&headers(Some(ok))).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "json",
            "",
        ] {
            assert!(
                matches!(
                    check_json_content_type(&headers(Some(bad))),
                    Err(ApiError::UnsupportedMediaType { .. })
                ),
                "{bad}"
            );
        }
        assert!(check_json_content_type(&headers(None)).is_err());
    }

    #[test]
    fn path_ids_must_be_hyphenated_uuids() {
        let id = "0f5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5";
        let params = vec![("orderId".to_owned(), id.to_owned())];
        assert_eq!(uuid_param(&params, "orderId").unwrap().to_string(), id);
        for bad in [
            "42",
            "0f5c7d1e2a3b4c5d8e9fa0b1c2d3e4f5",
            "zz5c7d1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5",
        ] {
            let params = vec![("orderId".to_owned(), bad.to_owned())];
            assert!(matches!(
                uuid_param(&params, "orderId"),
                Err(ApiError::InvalidPathId {
                    name: "orderId",
                    ..
                })
            ));
        }
    }
}
