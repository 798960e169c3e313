//! Checking signed requests (DESIGN.md §9, `cairn_proto::request`, ADR 015): the
//! signature format must be the current one, the key a registered member with the
//! route's role, the timestamp within the allowed skew of the node's clock and the nonce
//! unseen — all checked from the headers **before the body is read**, so strangers
//! cannot make the node buffer bodies. Then the body is read (at most
//! `custody.max_body_bytes` after decompression), the signature is checked over this
//! chain, this node, the method, path, query and body, and the nonce is stored durably
//! ([`super::nonces`]) before the request is acted on.

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use cairn_proto::KeyId;
use cairn_proto::identity::Signature;
use cairn_proto::membership::{MemberKey, Role};
use cairn_proto::request::{
    HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_VERSION, RequestToSign, VERSION,
};

use std::sync::Arc;

use axum::extract::{FromRequest, Request};

use super::ApiState;
use super::error::ApiError;

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

/// Header carrying the caller's public key (hex) when it is not a registered member key:
/// a patient's or family member's key (ADR 017). Its key id must be the one in
/// `x-cairn-key`.
pub const HEADER_PUBLIC_KEY: &str = "x-cairn-public-key";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// A registered member key of this role.
    Role(Role),
    /// Any registered member key, or a person's key given in [`HEADER_PUBLIC_KEY`].
    Anyone,
}

/// Who signed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A registered member key (gateway, accessor, regulator).
    Member(MemberKey),
    /// A person's key, not registered on chain (a patient, a family member).
    Person(cairn_proto::PublicKey),
}

impl Caller {
    /// The caller's public key.
    pub fn public_key(&self) -> cairn_proto::PublicKey {
        match self {
            Caller::Member(m) => m.public_key,
            Caller::Person(k) => *k,
        }
    }
}

/// What the headers of a signed request say, checked before its body is read.
#[derive(Debug)]
pub struct SigningHeaders {
    caller: Caller,
    key: KeyId,
    timestamp_ms: u64,
    nonce: [u8; 16],
    signature: Signature,
}

/// The signing headers as sent: well-formed, not yet checked against the membership, the
/// clock or the nonces seen ([`check_headers`] does that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeaders {
    /// `x-cairn-key`: the signer's key id.
    pub key: KeyId,
    /// `x-cairn-timestamp`: Unix milliseconds.
    pub timestamp_ms: u64,
    /// `x-cairn-nonce`: 16 bytes.
    pub nonce: [u8; 16],
    /// `x-cairn-signature`: 64 bytes.
    pub signature: Signature,
}

/// Parses the signing headers of format [`VERSION`] (`cairn_proto::request`, ADR 015).
///
/// # Errors
/// 401 `unsigned` when one is missing, 401 `old_signature_version` or
/// `unsupported_signature_version` for another format, 400 `bad_header` (naming the
/// header) when one is malformed.
pub fn parse_headers(headers: &HeaderMap) -> Result<ParsedHeaders, ApiError> {
    let key: KeyId = header(headers, HEADER_KEY)?
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_header", "must be 32 hex digits").field(HEADER_KEY))?;
    match headers.get(HEADER_VERSION).map(|v| v.to_str().unwrap_or("")) {
        Some(v) if v == VERSION.to_string() => {}
        None => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "old_signature_version",
                format!(
                    "the request is signed in format 1 (no {HEADER_VERSION} header), which is not bound to a chain \
                     and a node; this node accepts format {VERSION} only (ADR 015): update the gateway's client"
                ),
            )
            .field(HEADER_VERSION));
        }
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unsupported_signature_version",
                format!("signature format {other:?} is not known here; this node accepts format {VERSION}"),
            )
            .field(HEADER_VERSION));
        }
    }
    let timestamp_ms: u64 = header(headers, HEADER_TIMESTAMP)?.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_header", "must be Unix milliseconds").field(HEADER_TIMESTAMP)
    })?;
    let nonce: [u8; 16] = hex_array(header(headers, HEADER_NONCE)?, HEADER_NONCE)?;
    let signature = Signature(hex_array(header(headers, HEADER_SIGNATURE)?, HEADER_SIGNATURE)?);
    Ok(ParsedHeaders { key, timestamp_ms, nonce, signature })
}

/// Checks the signing headers: format, registered key with `role`, fresh timestamp,
/// unseen nonce. Nothing of the body is needed.
pub fn check_headers(
    state: &ApiState,
    headers: &HeaderMap,
    accept: Accept,
    now_ms: u64,
) -> Result<SigningHeaders, ApiError> {
    let ParsedHeaders { key, timestamp_ms, nonce, signature } = parse_headers(headers)?;
    let member = state.chain.ledger().membership().members.iter().find(|m| m.public_key.key_id() == key).cloned();
    let caller = match (member, accept) {
        (Some(m), _) => Caller::Member(m),
        (None, Accept::Anyone) if headers.contains_key(HEADER_PUBLIC_KEY) => {
            let public: cairn_proto::PublicKey = header(headers, HEADER_PUBLIC_KEY)?.parse().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_header", "must be 64 hex digits").field(HEADER_PUBLIC_KEY)
            })?;
            if public.key_id() != key || public.validate().is_err() {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_key",
                    format!("the public key is unusable or its key id is not {key}"),
                )
                .field(HEADER_PUBLIC_KEY));
            }
            Caller::Person(public)
        }
        (None, _) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown_key",
                format!("key {key} is not a registered member key"),
            )
            .field(HEADER_KEY));
        }
    };
    let skew = state.limits.request_skew_ms;
    if timestamp_ms.abs_diff(now_ms) > skew {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "stale_timestamp",
            format!("timestamp {timestamp_ms} is more than {skew} ms from the node's clock ({now_ms})"),
        )
        .field(HEADER_TIMESTAMP));
    }
    if state.nonces.seen(key, nonce) {
        return Err(super::nonces::replayed());
    }
    if let (Accept::Role(role), Caller::Member(member)) = (accept, &caller)
        && member.role != role
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_role",
            format!("key {key} is registered as {:?}; this route needs {role:?}", member.role),
        ));
    }
    Ok(SigningHeaders { caller, key, timestamp_ms, nonce, signature })
}

/// Checks the signature of a request whose headers passed [`check_headers`]: it must
/// cover this chain, this node, the method, path, query and body.
pub fn verify(
    state: &ApiState,
    signing: &SigningHeaders,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<(), ApiError> {
    let statement = RequestToSign::new(
        state.chain_hash,
        state.records.me,
        method.as_str(),
        uri.path(),
        uri.query().unwrap_or(""),
        body,
        signing.key,
        signing.timestamp_ms,
        signing.nonce,
    );
    statement.verify(&signing.caller.public_key(), &signing.signature).map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the signature does not cover this chain, this node, method, path, query and body with this key \
             (a request signed for another node is refused here)",
        )
        .field(HEADER_SIGNATURE)
    })
}

/// Stores the nonce durably (off the async workers); 401 if it was used meanwhile.
pub async fn remember(state: &Arc<ApiState>, signing: &SigningHeaders, now_ms: u64) -> Result<(), ApiError> {
    let expires = signing.timestamp_ms.saturating_add(state.limits.request_skew_ms);
    let (store, key, nonce) = (state.nonces.clone(), signing.key, signing.nonce);
    let person = matches!(signing.caller, Caller::Person(_));
    let fresh = tokio::task::spawn_blocking(move || store.insert(now_ms, expires, key, nonce, person))
        .await
        .map_err(ApiError::internal)??;
    if fresh { Ok(()) } else { Err(super::nonces::replayed()) }
}

/// Largest body a person's key (not registered on chain) may send: one document with
/// its signatures, bytes.
pub const PERSON_BODY: usize = 256 * 1024;

/// Largest body of an unsigned request a stranger may send (a live challenge), bytes.
pub const SMALL_BODY: usize = 4096;

/// The body of an unsigned request: at most [`SMALL_BODY`] bytes (413 `too_large`
/// beyond), so strangers cannot make the node buffer much.
#[derive(Debug)]
pub struct LimitedBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        read_body(req.into_body(), SMALL_BODY, SMALL_BODY).await.map(LimitedBody)
    }
}

/// Reads and drops what a refused request still sends, up to `custody.max_body_bytes`
/// (and the body timeout), so that its client — still writing — reads the refusal
/// instead of a reset connection. Nothing is kept: memory stays bounded however many
/// strangers send bodies at once.
async fn drain(state: &ApiState, body: axum::body::Body) {
    drain_stream(body.into_data_stream(), state.limits.max_body_bytes).await;
}

/// Reads and drops up to `up_to` more bytes of `stream` (stopping at its end, an error or
/// the body timeout). A node that closed a connection with unread bytes in its receive
/// buffer would make the kernel reset it, and the client would lose the answer.
async fn drain_stream(mut stream: axum::body::BodyDataStream, up_to: usize) {
    use futures::StreamExt as _;
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        seen = seen.saturating_add(chunk.len());
        if seen > up_to {
            break;
        }
    }
}

/// Reads a body of at most `limit` bytes (after decompression). Past the limit it answers
/// 413 `too_large` — after reading and dropping up to `drain` more bytes ([`drain_stream`]),
/// so a client that sent too much reads the 413 rather than a reset connection.
/// A stalled body answers 408 `body_timeout`, a broken one 400 `bad_body`
/// ([`super::error::body_error`]).
async fn read_body(body: axum::body::Body, limit: usize, drain: usize) -> Result<axum::body::Bytes, ApiError> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<axum::body::Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| super::error::body_error(&e))?;
        if chunk.len() > limit.saturating_sub(len) {
            drop(chunks);
            drain_stream(stream, drain).await;
            return Err(super::error::too_large(limit));
        }
        len = len.saturating_add(chunk.len());
        chunks.push(chunk);
    }
    // One chunk (the usual case) is handed on without a copy.
    if chunks.len() == 1 {
        return Ok(chunks.pop().unwrap_or_default());
    }
    let mut whole = bytes::BytesMut::with_capacity(len);
    for chunk in chunks {
        whole.extend_from_slice(&chunk);
    }
    Ok(whole.freeze())
}

/// Reads a signed body of at most `limit` bytes (after decompression) with [`read_body`];
/// past it, drains up to `custody.max_body_bytes` as a refusal from the headers does.
async fn read_limited(state: &ApiState, body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    read_body(body, limit, state.limits.max_body_bytes).await
}

/// A request signed by a registered gateway key (DESIGN.md §9): the extractor every
/// gateway route takes. It checks the headers ([`check_headers`]), reads the body
/// (413 `too_large` past the limit, counted after decompression), checks the signature
/// ([`verify`]) and stores the nonce ([`remember`]), answering 401/403/429 with the JSON
/// error as it does.
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
        let now_ms = crate::clock::now_ms();
        let signing = match check_headers(state, &parts.headers, Accept::Role(Role::Gateway), now_ms) {
            Ok(signing) => signing,
            Err(e) => {
                drain(state, body).await;
                return Err(e);
            }
        };
        // A GET is signed over an empty body; whatever it carries is not read.
        let body = if parts.method == Method::GET {
            axum::body::Bytes::new()
        } else {
            read_limited(state, body, state.limits.max_body_bytes).await?
        };
        verify(state, &signing, &parts.method, &parts.uri, &body)?;
        remember(state, &signing, now_ms).await?;
        Ok(SignedGateway { gateway: signing.key, body, now_ms })
    }
}

/// A request signed by any registered member key or by a person's key (ADR 017): the
/// extractor of the consent and access routes. The same checks as [`SignedGateway`].
#[derive(Debug)]
pub struct SignedCaller {
    /// Who signed.
    pub caller: Caller,
    /// The body, as signed.
    pub body: axum::body::Bytes,
    /// When the request was checked (the node's clock), Unix milliseconds.
    pub now_ms: u64,
}

impl FromRequest<Arc<ApiState>> for SignedCaller {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &Arc<ApiState>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let now_ms = crate::clock::now_ms();
        let signing = match check_headers(state, &parts.headers, Accept::Anyone, now_ms) {
            Ok(signing) => signing,
            Err(e) => {
                drain(state, body).await;
                return Err(e);
            }
        };
        let body = match (&signing.caller, parts.method == Method::GET) {
            (_, true) => axum::body::Bytes::new(),
            // A key registered nowhere sends at most a document's worth.
            (Caller::Person(_), false) => read_limited(state, body, PERSON_BODY).await?,
            (Caller::Member(_), false) => read_limited(state, body, state.limits.max_body_bytes).await?,
        };
        verify(state, &signing, &parts.method, &parts.uri, &body)?;
        remember(state, &signing, now_ms).await?;
        Ok(SignedCaller { caller: signing.caller, body, now_ms })
    }
}
