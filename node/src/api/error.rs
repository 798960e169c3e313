//! The one mapping from every error the node can answer with to HTTP: [`ApiError`] and
//! its JSON body `{"code","message"[,"field"][,"items"][,...]}` (the OpenAPI `Error`
//! schema), the mappings of the record layer's errors, and the extractors that turn the
//! framework's own rejections (a path, query or body it cannot parse, a wrong method)
//! into that body instead of `text/plain`.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use utoipa::ToSchema;

use crate::records::RecordsError;
use crate::records::erasure::ErasureError;

/// An error answer: JSON `{"code","message"}`, plus `"field"` naming the offending
/// header, parameter or field, `"items"` with one error per bad item of a batch, and
/// sometimes one value for programs (such as `"request"`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// `"items"` and values for programs, added to the body as they are.
    extra: serde_json::Map<String, serde_json::Value>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, extra: serde_json::Map::new(), retry_after: None }
    }
    /// Names the offending field.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    /// Adds per-item errors.
    pub fn items(mut self, items: serde_json::Value) -> Self {
        self.extra.insert("items".into(), items);
        self
    }
    /// Adds one named value for programs (e.g. the id of the request in the way).
    pub fn detail(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }
    /// 429 with `Retry-After: 1`.
    pub fn busy(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", message);
        e.retry_after = Some(1);
        e
    }
    /// 500.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
    /// 404.
    pub fn not_found(what: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        if let Some(f) = self.field {
            body.insert("field".into(), json!(f));
        }
        body.extend(self.extra);
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(crate::metrics::RefusalCode(self.code));
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}

impl From<RecordsError> for ApiError {
    fn from(e: RecordsError) -> Self {
        match e {
            RecordsError::NotFound(rid) => ApiError::not_found(format!("no record {rid} for this gateway")),
            RecordsError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "custodians_unavailable", m),
            RecordsError::Vault(crate::vault::VaultError::Invalid(m)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_record", m)
            }
            e => ApiError::internal(e),
        }
    }
}

impl From<ErasureError> for ApiError {
    fn from(e: ErasureError) -> Self {
        match e {
            ErasureError::NotFound(rid) => ApiError::not_found(format!("no record {rid} for this gateway")),
            ErasureError::NoRecords => {
                ApiError::new(StatusCode::NOT_FOUND, "no_records", "this gateway holds no record of that subject")
            }
            ErasureError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_erasure", m),
            ErasureError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "custodians_unavailable", m)
            }
            ErasureError::InProgress(id) => ApiError::new(
                StatusCode::CONFLICT,
                "already_erasing",
                format!(
                    "a record is already being erased by request {id}; follow GET /v1/erasures/{id}, then ask again for what remains"
                ),
            )
            .detail("request", json!(id)),
            ErasureError::Held(rids) => {
                let named: Vec<String> = rids.iter().take(5).map(ToString::to_string).collect();
                let more = if rids.len() > 5 { format!(" and {} more (see \"held\")", rids.len() - 5) } else { String::new() };
                let message = format!(
                    "{} record(s) are under legal hold and nothing was erased: {}{more}. The gateway that placed \
                     the hold lifts it (POST /v1/holds/release, `cairn hold --release`), then ask again — or name \
                     only the records in no hold",
                    rids.len(),
                    named.join(", ")
                );
                ApiError::new(StatusCode::CONFLICT, "held", message).detail("held", json!(rids))
            }
            ErasureError::Fatal(m) => ApiError::internal(m),
        }
    }
}

/// `axum::extract::Path`, answering a path it cannot parse with 400 `bad_path`.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(Path(p.0)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text())),
        }
    }
}

/// `axum::extract::Query`, answering a query it cannot parse with 400 `bad_query`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(Query(q.0)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text())),
        }
    }
}

/// The raw body (up to the router's body limit), answering a body too large with 413
/// `too_large`.
#[derive(Debug)]
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.body_text()))
            }
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text())),
        }
    }
}

/// The JSON body of every error answer (what [`ApiError`] serialises to).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code, e.g. `bad_signature`, `not_found`, `invalid_fhir`.
    code: String,
    /// What went wrong, for people.
    message: String,
    /// The header, parameter or field at fault, where one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// One error per bad item of a batch (`invalid_fhir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Vec<ItemError>>,
    /// The open erasure request in the way (`already_erasing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
}

/// One bad item of a batch.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ItemError {
    /// Position in the batch (0-based: line of JSON lines, entry of a Bundle).
    index: usize,
    /// The field at fault (a FHIRPath-like name).
    field: String,
    /// What is wrong.
    message: String,
}

/// 405 for a route served with another method, as a JSON error.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route is served with another method; see /v1/openapi.json",
    )
}

/// 404 for a path no route serves, as a JSON error.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such route; see /v1/openapi.json".into())
}

/// Longest time one request may take, from its head to its answer (a body trickled in
/// slowly, a handler that waits): 408 `request_timeout` past it. Long polls wait at most
/// 30 s.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Checks every request before a route sees it: exactly one `Host` header (RFC 9112
/// §3.2: 400 `bad_host` without one or with two), and at most one content coding,
/// gzip (415 `unsupported_encoding` naming any other; `identity` is no coding): the
/// `Content-Encoding` headers are rewritten to the one `gzip` that the decompression
/// layer reads, or removed. The whole request then has [`REQUEST_TIMEOUT`].
pub async fn request_checks(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header::{CONTENT_ENCODING, HOST};
    let hosts = req.headers().get_all(HOST).iter().count();
    if hosts != 1 {
        let why =
            if hosts == 0 { "the request has no Host header" } else { "the request has more than one Host header" };
        return ApiError::new(StatusCode::BAD_REQUEST, "bad_host", why).field("host").into_response();
    }
    let unsupported = |why: String| {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding", why)
            .field("content-encoding")
            .into_response()
    };
    let mut gzip = 0;
    for value in req.headers().get_all(CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_header", "not ASCII")
                .field("content-encoding")
                .into_response();
        };
        for coding in text.split(',').map(|c| c.trim().to_ascii_lowercase()) {
            match coding.as_str() {
                "identity" | "" => {}
                "gzip" | "x-gzip" => gzip += 1,
                other => {
                    return unsupported(format!(
                        "content coding {other:?} is not accepted: send the body as is, or gzip-compressed once"
                    ));
                }
            }
        }
    }
    if gzip > 1 {
        return unsupported("the body is gzip-compressed more than once: compress it once".into());
    }
    req.headers_mut().remove(CONTENT_ENCODING);
    if gzip == 1 {
        req.headers_mut().insert(CONTENT_ENCODING, axum::http::HeaderValue::from_static("gzip"));
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(answer) => answer,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {} s", REQUEST_TIMEOUT.as_secs()),
        )
        .into_response(),
    }
}

/// 413 `too_large`: the body (counted after decompression) exceeds `limit` bytes.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body exceeds {limit} bytes"))
}

/// The answer to a request body that could not be read: 408 `body_timeout` when it
/// stalled, 400 `bad_body` when it is not valid gzip or the connection broke. (A body
/// over its limit is answered by the reader, `api::auth`, with [`too_large`].)
pub fn body_error(e: &axum::Error) -> ApiError {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if text.contains("timeout") || text.contains("timed out") {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", "the body stalled; send it without pauses")
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_body", format!("the body could not be read: {text}"))
    }
}
