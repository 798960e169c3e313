//! The access log, restriction and break-glass (DESIGN.md §7; ADR 018; docs/access.md):
//! a patient lists who read their records, restricts or lifts the restriction; an
//! accessor declares an emergency; a regulator counts the log and closes reviews.

use cairn_proto::access::{AccessEntry, AccessReceipt, Disclosure};
use cairn_proto::consent::{BreakGlass, Period, Restriction, Subject};
use cairn_proto::record::RecordId;
use serde::{Deserialize, Serialize};

use crate::gateway::{Gateway, GatewayError};

fn local(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Local(e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(bytes).map_err(|e| GatewayError::Unexpected(e.to_string()))
}

/// The JSON of a restriction issued now.
pub fn restriction_json() -> Result<String, GatewayError> {
    serde_json::to_string_pretty(&Restriction { issued_ms: cairn_proto::time::now_ms() }).map_err(local)
}

/// The JSON of a break-glass declaration by `organisation` for `purpose`, from now for
/// `minutes`; checked as the node will check it (a justification of 10 to 4096 bytes).
pub fn break_glass_json(
    organisation: &str,
    purpose: &str,
    justification: &str,
    minutes: u64,
) -> Result<String, GatewayError> {
    let now = cairn_proto::time::now_ms();
    let b = BreakGlass {
        organisation: organisation.to_string(),
        purpose: purpose.to_string(),
        justification: justification.to_string(),
        period: Period { start_ms: now, end_ms: now.saturating_add(minutes.saturating_mul(60_000)) },
    };
    let json = serde_json::to_string_pretty(&b).map_err(local)?;
    BreakGlass::parse(&json).map_err(local)?;
    Ok(json)
}

/// One entry of a patient's access log, as a node answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisclosureOut {
    /// The node that logged it.
    pub node: cairn_proto::KeyId,
    /// Entry handle.
    pub handle: cairn_proto::Hash32,
    /// Outcome class.
    pub outcome: cairn_proto::access::Outcome,
    /// Days since the Unix epoch.
    pub day: u32,
    /// The FHIR AuditEvent.
    pub audit_event: Option<serde_json::Value>,
    /// The entry as committed.
    pub entry: Option<AccessEntry>,
    /// Its proof.
    pub receipt: Option<AccessReceipt>,
}

impl DisclosureOut {
    /// The entry with its receipt, for [`Disclosure::verify`]; `None` once expired.
    pub fn disclosure(&self) -> Option<Disclosure> {
        Some(Disclosure { entry: self.entry.clone()?, receipt: self.receipt.clone() })
    }
}

/// A patient's access log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisclosureList {
    /// Every entry found.
    pub entries: Vec<DisclosureOut>,
    /// Validators that did not answer.
    pub missing: Vec<cairn_proto::KeyId>,
}

impl Gateway {
    /// The access log of `subject` (the caller must be bound to it).
    pub fn disclosures(&self, subject: &Subject) -> Result<DisclosureList, GatewayError> {
        let body = serde_json::to_vec(subject).map_err(local)?;
        let (_, answer) = self.call("POST", "/v1/disclosures", "application/json", &[], &body)?;
        parse(&answer)
    }

    /// This node's access log in a range of days, without content (regulator).
    pub fn access_log(&self, from_day: Option<u32>, to_day: Option<u32>) -> Result<serde_json::Value, GatewayError> {
        let mut q = Vec::new();
        if let Some(d) = from_day {
            q.push(format!("from_day={d}"));
        }
        if let Some(d) = to_day {
            q.push(format!("to_day={d}"));
        }
        let target =
            if q.is_empty() { "/v1/access-log".to_string() } else { format!("/v1/access-log?{}", q.join("&")) };
        let (_, answer) = self.call("GET", &target, "application/json", &[], b"")?;
        parse(&answer)
    }

    /// The break-glass review list of this node (regulator).
    pub fn reviews(&self) -> Result<serde_json::Value, GatewayError> {
        let (_, answer) = self.call("GET", "/v1/reviews", "application/json", &[], b"")?;
        parse(&answer)
    }

    /// Closes a review with `verdict` (`reviewed` or `unjustified`) and a note.
    pub fn close_review(&self, id: &RecordId, verdict: &str, note: &str) -> Result<serde_json::Value, GatewayError> {
        let body = serde_json::to_vec(&serde_json::json!({"verdict": verdict, "note": note})).map_err(local)?;
        let (_, answer) = self.call("POST", &format!("/v1/reviews/{id}"), "application/json", &[], &body)?;
        parse(&answer)
    }
}
