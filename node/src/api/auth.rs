//! Checking signed requests (DESIGN.md §9, `cairn_proto::request`): the key must be a
//! registered member, the signature must cover this exact request, the timestamp must be
//! within the allowed skew of the node's clock and the nonce must not have been seen.
//! Seen nonces are kept until their timestamp leaves the window, so the memory they take
//! is bounded by the request rate times twice the skew (and by a hard cap).

use std::collections::{HashSet, VecDeque};

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use cairn_proto::KeyId;
use cairn_proto::identity::Signature;
use cairn_proto::membership::{MemberKey, Role};
use cairn_proto::request::{HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, RequestToSign};

use std::sync::Arc;

use axum::extract::{FromRequest, Request};

use super::ApiState;
use super::error::ApiError;

/// Most nonces remembered at once; beyond this new requests wait (429).
const MAX_NONCES: usize = 4_000_000;

/// Seen nonces, oldest first.
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: HashSet<(KeyId, [u8; 16])>,
    order: VecDeque<(u64, KeyId, [u8; 16])>,
}

impl NonceCache {
    /// Records a nonce valid until `expires_ms`; false if it was seen before.
    fn insert(&mut self, now_ms: u64, expires_ms: u64, key: KeyId, nonce: [u8; 16]) -> Result<bool, ApiError> {
        while let Some((expiry, k, n)) = self.order.front().copied() {
            if expiry >= now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&(k, n));
        }
        if self.seen.contains(&(key, nonce)) {
            return Ok(false);
        }
        if self.seen.len() >= MAX_NONCES {
            return Err(ApiError::busy("too many requests in the replay window"));
        }
        self.seen.insert((key, nonce));
        self.order.push_back((expires_ms, key, nonce));
        Ok(true)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    let v = headers.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unsigned",
            format!("the request is not signed: header {name} is missing"),
        )
        .field(name)
    })?;
    v.to_str().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_header", "not ASCII").field(name))
}

fn hex_array<const N: usize>(s: &str, name: &'static str) -> Result<[u8; N], ApiError> {
    hex::decode(s).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_header", format!("must be {} hex digits", 2 * N)).field(name)
    })
}

/// Checks a request's signature; returns the caller's membership entry, which must have
/// `role`.
pub fn authenticate(
    state: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    role: Role,
    now_ms: u64,
) -> Result<MemberKey, ApiError> {
    let key: KeyId = header(headers, HEADER_KEY)?
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_header", "must be 32 hex digits").field(HEADER_KEY))?;
    let timestamp_ms: u64 = header(headers, HEADER_TIMESTAMP)?.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_header", "must be Unix milliseconds").field(HEADER_TIMESTAMP)
    })?;
    let nonce: [u8; 16] = hex_array(header(headers, HEADER_NONCE)?, HEADER_NONCE)?;
    let signature = Signature(hex_array(header(headers, HEADER_SIGNATURE)?, HEADER_SIGNATURE)?);
    let member =
        state.chain.ledger().membership().members.iter().find(|m| m.public_key.key_id() == key).cloned().ok_or_else(
            || {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unknown_key",
                    format!("key {key} is not a registered member key"),
                )
                .field(HEADER_KEY)
            },
        )?;
    let statement =
        RequestToSign::new(method.as_str(), uri.path(), uri.query().unwrap_or(""), body, key, timestamp_ms, nonce);
    statement.verify(&member.public_key, &signature).map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the signature does not cover this method, path, query and body with this key",
        )
        .field(HEADER_SIGNATURE)
    })?;
    let skew = state.limits.request_skew_ms;
    if timestamp_ms.abs_diff(now_ms) > skew {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "stale_timestamp",
            format!("timestamp {timestamp_ms} is more than {skew} ms from the node's clock ({now_ms})"),
        )
        .field(HEADER_TIMESTAMP));
    }
    let fresh = state.nonces().insert(now_ms, timestamp_ms.saturating_add(skew), key, nonce)?;
    if !fresh {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "replayed_request", "this nonce was already used")
            .field(HEADER_NONCE));
    }
    if member.role != role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_role",
            format!("key {key} is registered as {:?}; this route needs {role:?}", member.role),
        ));
    }
    Ok(member)
}

/// A request body of at most `custody.max_body_bytes` (413 `too_large` beyond).
#[derive(Debug)]
pub struct LimitedBody(pub axum::body::Bytes);

impl FromRequest<Arc<ApiState>> for LimitedBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &Arc<ApiState>) -> Result<Self, ApiError> {
        read_limited(state, req.into_body()).await.map(LimitedBody)
    }
}

/// Reads a body of at most `custody.max_body_bytes`.
async fn read_limited(state: &ApiState, body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.limits.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body exceeds {limit} bytes"))
    })
}

/// A request signed by a registered gateway key (DESIGN.md §9): the extractor every
/// gateway route takes. It reads the body (413 `too_large` past the limit), then checks
/// the signature, the clock skew, the nonce and the role ([`authenticate`]), answering
/// 401/403/429 with the JSON error as it does.
#[derive(Debug)]
pub struct SignedGateway {
    /// The gateway's key id.
    pub gateway: cairn_proto::KeyId,
    /// The body, as signed.
    pub body: axum::body::Bytes,
    /// When the request was checked (the node's clock), Unix milliseconds.
    pub now_ms: u64,
}

impl FromRequest<Arc<ApiState>> for SignedGateway {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &Arc<ApiState>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        // A GET is signed over an empty body; whatever it carries is not read.
        let body =
            if parts.method == Method::GET { axum::body::Bytes::new() } else { read_limited(state, body).await? };
        let now_ms = crate::clock::now_ms();
        let member = authenticate(state, &parts.method, &parts.uri, &parts.headers, &body, Role::Gateway, now_ms)?;
        Ok(SignedGateway { gateway: member.public_key.key_id(), body, now_ms })
    }
}
