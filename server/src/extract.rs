//! Extractors that turn every malformed request into the JSON error envelope, and the
//! middleware that does the same for answers produced outside handlers (405, 413, 408, 404).

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use convo_shared::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `axum::Json` with our error envelope on rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

pub(crate) fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidBody,
            // serde's message names the field and the expected type, never echoes strings.
            format!(
                "The request body does not match the expected shape: {}",
                source_text(&e)
            ),
        ),
        JsonRejection::JsonSyntaxError(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            "The request body is not valid JSON.",
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "Send the body as JSON with `Content-Type: application/json`.",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        other => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody,
            format!("The request body could not be read: {}", other.body_text()),
        ),
    }
}

/// Parses a JSON body read by other means (an optional body, a multipart field).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidBody,
            format!("The request body does not match the expected shape: {e}"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            "The request body is not valid JSON.",
        ),
    })
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(src) = inner.source() {
        inner = src;
    }
    inner.to_string()
}

pub(crate) fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        "The request body is too large.",
    )
}

/// `axum::extract::Query` with our error envelope on rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|rej: QueryRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidQuery,
                    format!("Invalid query string: {}", source_text(&rej)),
                )
            })
    }
}

/// Rewrites error answers that did not come from our handlers (axum's 405, the body limit's
/// 413, the timeout's 408, a panic's 500) into the JSON envelope, keeping their headers.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "This method is not allowed on this path; see the Allow header.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::PayloadTooLarge, "The request body is too large.")
        }
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::Timeout, "The request took too long."),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "Nothing is here."),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            "This content type is not accepted here.",
        ),
        s if s.is_server_error() => (
            ErrorCode::Internal,
            "Something went wrong on the server. Try again; if it persists, tell the operator.",
        ),
        _ => (
            ErrorCode::InvalidBody,
            "The request could not be understood.",
        ),
    };
    let (mut parts, _) = resp.into_parts();
    let fresh = ApiError::new(status, code, message).into_response();
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        fresh_parts
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(header::HeaderValue::from_static("application/json")),
    );
    Response::from_parts(parts, body)
}

/// The router's fallback: an unknown path.
pub async fn not_found() -> ApiError {
    ApiError::not_found("No such API path.")
}

/// What a panicking handler answers (the panic itself is logged by the layer).
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("handler panicked");
    ApiError::internal().into_response()
}

/// The address a request came from: the peer's, unless the peer is a trusted proxy
/// (`CONVO_TRUSTED_PROXIES`); then the X-Forwarded-For entries are read from the right (the
/// nearest hop first) past every trusted proxy, and the first untrusted one is the client. An
/// entry that is not an address stops the walk at the hop that wrote it, so a client can never
/// name an address of its choosing by sending the header itself.
pub fn client_ip(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<std::net::IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::client_ip;
    use axum::http::{HeaderMap, HeaderValue};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let trusted = [
            "127.0.0.1/32".parse().expect("cidr"),
            "10.0.0.0/8".parse().expect("cidr"),
        ];
        // No trusted proxies: the header is ignored.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["203.0.113.7"]), &[]),
            ip("127.0.0.1")
        );
        // An untrusted peer cannot name another address.
        assert_eq!(
            client_ip(ip("198.51.100.2"), &xff(&["203.0.113.7"]), &trusted),
            ip("198.51.100.2")
        );
        // Through the proxy: the client it saw.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["203.0.113.7"]), &trusted),
            ip("203.0.113.7")
        );
        // Two proxies: read past the trusted hops from the right; what the client sent
        // itself (left of its own address) is not believed.
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                &xff(&["1.2.3.4, 203.0.113.7, 10.1.2.3"]),
                &trusted
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["1.2.3.4", "203.0.113.7"]), &trusted),
            ip("203.0.113.7")
        );
        // Garbage stops the walk at the hop that wrote it; no header: the proxy itself.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["nonsense, 10.1.2.3"]), &trusted),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(
                ip("::1"),
                &xff(&["2001:db8::1"]),
                &["::1/128".parse().expect("cidr")]
            ),
            ip("2001:db8::1")
        );
    }
}
