//! The gateway side of the API: signed requests to submit readings, read records back,
//! fetch receipts, and ask for erasures and their certificates (DESIGN.md §9).

use cairn_proto::Keypair;
use cairn_proto::erasure::ErasureCertificate;
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::record::RecordId;
use cairn_proto::request::RequestToSign;
use cairn_proto::time::now_ms;
use serde::{Deserialize, Serialize};

use crate::http::{HttpError, Pool, path_and_query};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Transport.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The node refused, with its JSON error.
    #[error("node answered {status} {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
        /// The whole error body.
        body: serde_json::Value,
    },
    /// An answer that is not the expected JSON.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A local problem (randomness, encoding, a bad argument).
    #[error("{0}")]
    Local(String),
}

impl GatewayError {
    /// Whether trying again later may succeed (busy, custodians unavailable, network, a
    /// batch with the same idempotency key still being stored).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Http(HttpError::Io { .. }) => true,
            Self::Refused { status: 409, code, .. } => code == "idempotency_in_progress",
            Self::Refused { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }
}

/// How the readings are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One Observation per line.
    JsonLines,
    /// A FHIR Bundle.
    Bundle,
}

/// One stored record as the node acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Record id.
    pub rid: RecordId,
    /// Leaf.
    pub leaf: cairn_proto::Hash32,
}

/// The answer to a submission.
#[derive(Debug, Clone, Deserialize)]
pub struct Submitted {
    /// Number of records.
    pub count: usize,
    /// Custodians holding them.
    pub custodians: Vec<cairn_proto::KeyId>,
    /// Records, in the order of the readings.
    pub records: Vec<Stored>,
}

/// What an erasure request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erase {
    /// These records.
    Records(Vec<RecordId>),
    /// Every record this gateway wrote for this subject reference.
    Subject(String),
}

fn scope_json(what: &Erase) -> serde_json::Value {
    match what {
        Erase::Records(rids) => serde_json::json!({"records": rids}),
        Erase::Subject(subject) => serde_json::json!({"subject": subject}),
    }
}

/// What a node says it is (`GET /v1/identity`): the audience a signed request to it
/// names (ADR 015).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Identity {
    /// The chain's genesis hash.
    pub chain: cairn_proto::Hash32,
    /// The node's validator key id.
    pub node: cairn_proto::KeyId,
}

/// A gateway's connection to one node. Clones share kept-alive connections.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Base URL, e.g. `http://127.0.0.1:26200`.
    pub node: String,
    key: Keypair,
    pool: Pool,
    audience: std::sync::Arc<std::sync::OnceLock<Identity>>,
}

impl Gateway {
    /// A client for `node` signing with `key`; the node's identity is asked once, on the
    /// first request.
    pub fn new(node: &str, key: Keypair) -> Self {
        Self { node: node.trim_end_matches('/').to_string(), key, pool: Pool::new(), audience: Default::default() }
    }

    /// A client for `node` whose chain and key id are known (e.g. from the genesis
    /// file): requests are signed for them without asking the node.
    pub fn with_audience(node: &str, key: Keypair, audience: Identity) -> Self {
        let g = Self::new(node, key);
        let _ = g.audience.set(audience);
        g
    }

    /// The chain and node key id requests to this node are bound to, asked once: the node
    /// must sign its answer, with a fresh nonce, by the validator key whose id it names —
    /// so a node cannot make this client sign requests meant for another (ADR 015).
    pub fn identity(&self) -> Result<Identity, GatewayError> {
        #[derive(Deserialize)]
        struct Proven {
            chain: cairn_proto::Hash32,
            node: cairn_proto::KeyId,
            public_key: String,
            signature: String,
        }
        if let Some(i) = self.audience.get() {
            return Ok(*i);
        }
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| GatewayError::Local(format!("no randomness: {e}")))?;
        let url = format!("{}/v1/identity?nonce={}", self.node, hex::encode(nonce));
        let (status, answer) = self.pool.request_with("GET", &url, "", &[], b"")?;
        if status != 200 {
            return Err(GatewayError::Unexpected(format!("{url} answered {status}")));
        }
        let p: Proven = serde_json::from_slice(&answer)
            .map_err(|e| GatewayError::Unexpected(format!("the node's identity: {e}")))?;
        let unproven = || {
            GatewayError::Unexpected(format!(
                "{} did not prove it holds the key of validator {}: no request is signed for it",
                self.node, p.node
            ))
        };
        let public: cairn_proto::PublicKey = p.public_key.parse().map_err(|_| unproven())?;
        let signature: [u8; 64] =
            hex::decode(&p.signature).ok().and_then(|b| b.try_into().ok()).ok_or_else(unproven)?;
        let statement = cairn_proto::request::identity_statement(&p.chain, &p.node, &nonce);
        let signature = cairn_proto::identity::Signature(signature);
        if public.key_id() != p.node
            || public.verify(cairn_proto::hash::domain::SIG_IDENTITY, &statement, &signature).is_err()
        {
            return Err(unproven());
        }
        let identity = Identity { chain: p.chain, node: p.node };
        Ok(*self.audience.get_or_init(|| identity))
    }

    /// The public key requests are signed with.
    pub fn public_key(&self) -> cairn_proto::PublicKey {
        self.key.public()
    }

    /// Sends a signed request; returns the status and body of a 2xx answer.
    pub fn call(
        &self,
        method: &str,
        target: &str,
        content_type: &str,
        extra: &[(&str, String)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), GatewayError> {
        let url = format!("{}{target}", self.node);
        let (path, query) = path_and_query(&url)?;
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|e| GatewayError::Local(format!("no randomness: {e}")))?;
        let to = self.identity()?;
        let statement = RequestToSign::new(
            to.chain,
            to.node,
            method,
            path,
            query,
            body,
            self.key.public().key_id(),
            now_ms(),
            nonce,
        );
        let signature = statement.sign(&self.key).map_err(|e| GatewayError::Local(e.to_string()))?;
        let mut headers: Vec<(&str, String)> = statement.headers(&signature).into_iter().collect();
        // A person's key (patient, family member) is not registered on chain: the node
        // learns it from this header (ADR 017); for a member key it is ignored.
        headers.push(("x-cairn-public-key", self.key.public().to_string()));
        headers.extend(extra.iter().cloned());
        let (status, answer) = self.pool.request_with(method, &url, content_type, &headers, body)?;
        if (200..300).contains(&status) {
            return Ok((status, answer));
        }
        let body: serde_json::Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|_| serde_json::json!({"message": String::from_utf8_lossy(&answer)}));
        let text = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        Err(GatewayError::Refused { status, code: text("code"), message: text("message"), body })
    }

    /// Submits readings; `idempotency_key` makes a retry of the same body a no-op.
    pub fn submit(
        &self,
        body: &[u8],
        format: BodyFormat,
        purpose: &str,
        retention_days: u32,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, GatewayError> {
        let content_type = match format {
            BodyFormat::JsonLines => "application/x-ndjson",
            BodyFormat::Bundle => "application/fhir+json",
        };
        if !purpose.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(GatewayError::Local(format!("purpose {purpose:?}: letters, digits, '-', '_' and '.' only")));
        }
        let mut extra = Vec::new();
        if let Some(k) = idempotency_key {
            if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(GatewayError::Local("an idempotency key is 1 to 128 printable ASCII characters".into()));
            }
            extra.push(("idempotency-key", k.to_string()));
        }
        let target = format!("/v1/readings?purpose={purpose}&retention_days={retention_days}");
        let (_, answer) = self.call("POST", &target, content_type, &extra, body)?;
        serde_json::from_slice(&answer).map_err(|e| GatewayError::Unexpected(e.to_string()))
    }

    /// Reads a record back for a declared purpose: `{"record","receipt","served_by"}`,
    /// parsed (numbers as `serde_json` reads them: use [`Gateway::record_bytes`] for the
    /// resource as it was sent).
    pub fn record(&self, rid: &RecordId, purpose: &str) -> Result<serde_json::Value, GatewayError> {
        serde_json::from_slice(&self.record_bytes(rid, purpose)?).map_err(|e| GatewayError::Unexpected(e.to_string()))
    }

    /// The node's answer to a read, as the bytes it sent: `record.resource` inside is
    /// the resource byte for byte as it was stored.
    pub fn record_bytes(&self, rid: &RecordId, purpose: &str) -> Result<Vec<u8>, GatewayError> {
        let (_, answer) =
            self.call("GET", &format!("/v1/records/{rid}?purpose={purpose}"), "application/json", &[], b"")?;
        Ok(answer)
    }

    /// The receipt of a record, waiting up to `wait_ms` for it; `None` if still pending.
    pub fn receipt(&self, rid: &RecordId, wait_ms: u64) -> Result<Option<AnchorReceipt>, GatewayError> {
        let target = format!("/v1/records/{rid}/receipt?wait_ms={wait_ms}");
        let (status, answer) = self.call("GET", &target, "application/json", &[], b"")?;
        if status == 202 {
            return Ok(None);
        }
        serde_json::from_slice(&answer).map(Some).map_err(|e| GatewayError::Unexpected(e.to_string()))
    }

    /// Asks for an erasure (`trigger`: `subject_request`, the default,
    /// `purpose_achieved`, or `consent_withdrawn` for a subject); returns the request's
    /// id once the node has stored it. A record already being erased by an open request
    /// at that node: 409 `already_erasing`, that request's id in the body's `"request"`.
    pub fn erase(&self, what: &Erase, trigger: Option<&str>) -> Result<String, GatewayError> {
        let mut body = scope_json(what);
        if let (Some(t), Some(map)) = (trigger, body.as_object_mut()) {
            map.insert("trigger".into(), serde_json::Value::String(t.to_string()));
        }
        let body = serde_json::to_vec(&body).map_err(|e| GatewayError::Local(e.to_string()))?;
        let (_, answer) = self.call("POST", "/v1/erasures", "application/json", &[], &body)?;
        let v: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| GatewayError::Unexpected(e.to_string()))?;
        v.get("id").and_then(|i| i.as_str()).map(str::to_string).ok_or_else(|| GatewayError::Unexpected(v.to_string()))
    }

    /// Rectification: erases reading `old` because `replaced_by` (a reading of the same
    /// subject, stored first) corrects it; the certificate names `replaced_by`. Returns
    /// the erasure request's id.
    pub fn rectify(&self, old: &RecordId, replaced_by: &RecordId) -> Result<String, GatewayError> {
        let body = serde_json::json!({"records": [old], "trigger": "rectified", "replaced_by": replaced_by});
        let body = serde_json::to_vec(&body).map_err(|e| GatewayError::Local(e.to_string()))?;
        let (_, answer) = self.call("POST", "/v1/erasures", "application/json", &[], &body)?;
        let v: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| GatewayError::Unexpected(e.to_string()))?;
        v.get("id").and_then(|i| i.as_str()).map(str::to_string).ok_or_else(|| GatewayError::Unexpected(v.to_string()))
    }

    /// Places (`on`) or lifts a legal hold at every custodian; returns how many records.
    pub fn hold(&self, what: &Erase, on: bool) -> Result<u64, GatewayError> {
        let body = serde_json::to_vec(&scope_json(what)).map_err(|e| GatewayError::Local(e.to_string()))?;
        let target = if on { "/v1/holds" } else { "/v1/holds/release" };
        let (_, answer) = self.call("POST", target, "application/json", &[], &body)?;
        let v: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| GatewayError::Unexpected(e.to_string()))?;
        v.get(if on { "held" } else { "released" })
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| GatewayError::Unexpected(v.to_string()))
    }

    /// This gateway's erasures known to the node: `{"erasures":[{"id","status","trigger",..}]}`.
    pub fn erasures(&self) -> Result<serde_json::Value, GatewayError> {
        let (_, answer) = self.call("GET", "/v1/erasures", "application/json", &[], b"")?;
        serde_json::from_slice(&answer).map_err(|e| GatewayError::Unexpected(e.to_string()))
    }

    /// An erasure request's progress at every custodian.
    pub fn erasure(&self, id: &str) -> Result<serde_json::Value, GatewayError> {
        let (_, answer) = self.call("GET", &format!("/v1/erasures/{id}"), "application/json", &[], b"")?;
        serde_json::from_slice(&answer).map_err(|e| GatewayError::Unexpected(e.to_string()))
    }

    /// The certificates of an erasure request, one per record; `None` while custodians
    /// are still erasing.
    pub fn certificates(&self, id: &str) -> Result<Option<Vec<ErasureCertificate>>, GatewayError> {
        #[derive(Deserialize)]
        struct Answer {
            certificates: Vec<ErasureCertificate>,
        }
        let (status, answer) =
            self.call("GET", &format!("/v1/erasures/{id}/certificate"), "application/json", &[], b"")?;
        if status == 202 {
            return Ok(None);
        }
        let a: Answer = serde_json::from_slice(&answer).map_err(|e| GatewayError::Unexpected(e.to_string()))?;
        Ok(Some(a.certificates))
    }

    /// Receipts of many records (in order; `None` where still pending after `wait_ms`).
    pub fn receipts(&self, rids: &[RecordId], wait_ms: u64) -> Result<Vec<Option<AnchorReceipt>>, GatewayError> {
        #[derive(Deserialize)]
        struct Answer {
            receipts: Vec<Option<AnchorReceipt>>,
        }
        let body = serde_json::to_vec(&serde_json::json!({"rids": rids, "wait_ms": wait_ms}))
            .map_err(|e| GatewayError::Local(e.to_string()))?;
        let (_, answer) = self.call("POST", "/v1/receipts", "application/json", &[], &body)?;
        let a: Answer = serde_json::from_slice(&answer).map_err(|e| GatewayError::Unexpected(e.to_string()))?;
        if a.receipts.len() != rids.len() {
            return Err(GatewayError::Unexpected(format!("{} receipts for {} records", a.receipts.len(), rids.len())));
        }
        Ok(a.receipts)
    }
}
