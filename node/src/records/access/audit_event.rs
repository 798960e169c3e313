//! An access event as a FHIR R4 `AuditEvent` (IHE Basic Audit Log Patterns, "privacy
//! disclosure"; docs/access.md gives the mapping field by field).

use cairn_proto::access::{AccessAction, AccessEvent, Accessor, Outcome};
use cairn_proto::erasure::ErasureTrigger;
use cairn_proto::{Hash32, KeyId};
use serde_json::{Value, json};

const AUDIT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const CAIRN_KEY: &str = "urn:cairn:key-id";
const CAIRN_RECORD: &str = "urn:cairn:record-id";
const CAIRN_ERASURE: &str = "urn:cairn:erasure-request";

/// An erasure trigger's code (as `POST /v1/erasures` names it).
pub fn trigger_code(t: &ErasureTrigger) -> &'static str {
    match t {
        ErasureTrigger::SubjectRequest => "subject_request",
        ErasureTrigger::PurposeAchieved => "purpose_achieved",
        ErasureTrigger::RetentionExpired => "retention_expired",
        ErasureTrigger::ConsentWithdrawn => "consent_withdrawn",
        ErasureTrigger::Rectified { .. } => "rectified",
    }
}

fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "1970-01-01T00:00:00Z".into(), |t| t.to_string())
}

fn key(k: &KeyId) -> Value {
    json!({"system": CAIRN_KEY, "value": k.to_string()})
}

/// The event as a FHIR R4 `AuditEvent` whose `id` is the entry handle.
pub fn audit_event(handle: &Hash32, e: &AccessEvent) -> Value {
    let (subtype, action) = match e.action {
        AccessAction::Read => ("read", "R"),
        AccessAction::Search => ("search-type", "E"),
        AccessAction::Export => ("search-type", "E"),
        AccessAction::Erase { .. } => ("delete", "D"),
    };
    // FHIR R4 AuditEvent.outcome: 0 success, 4 minor failure (refused by policy).
    let outcome = match e.outcome {
        Outcome::Granted | Outcome::BreakGlass => "0",
        Outcome::Refused => "4",
    };
    let who = match &e.accessor {
        Accessor::Organisation { name, key: k } => json!({
            "who": {"display": format!("Organization/{name}"), "identifier": key(k)},
            "type": {"text": "accessor"},
        }),
        Accessor::FamilyMember { key: k } => json!({"who": {"identifier": key(k)}, "type": {"text": "family member"}}),
        Accessor::Patient { key: k } => json!({"who": {"identifier": key(k)}, "type": {"text": "patient"}}),
        Accessor::Gateway { key: k } => json!({"who": {"identifier": key(k)}, "type": {"text": "gateway"}}),
        Accessor::Node { key: k } => json!({"who": {"identifier": key(k)}, "type": {"text": "validator"}}),
    };
    let agent = with(
        with(who, "requestor", json!(true)),
        "purposeOfUse",
        json!([{"coding": [{"system": ACT_REASON, "code": e.purpose}]}]),
    );
    let mut entities: Vec<Value> = e
        .records
        .iter()
        .map(|rid| {
            json!({
                "what": {"identifier": {"system": CAIRN_RECORD, "value": rid.to_string()}},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            })
        })
        .collect();
    if let Some(basis) = e.basis {
        let mut detail = vec![json!({"type": "withheld", "valueString": e.withheld.to_string()})];
        detail.extend(e.trace.iter().map(|t| json!({"type": "trace", "valueString": t})));
        if let Some(j) = &e.justification {
            detail.push(json!({"type": "justification", "valueString": j}));
        }
        entities.push(json!({
            "what": {"identifier": {"system": CAIRN_RECORD, "value": basis.to_string()}},
            "role": {"system": OBJECT_ROLE, "code": "13", "display": "Security Resource"},
            "description": "the consent, family grant or break-glass declaration relied on",
            "detail": detail,
        }));
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": handle.to_string(),
        "type": {"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": RESTFUL, "code": subtype}],
        "action": action,
        "recorded": rfc3339(e.recorded_ms),
        "outcome": outcome,
        "purposeOfEvent": [{"coding": [{"system": ACT_REASON, "code": e.purpose}]}],
        "agent": [agent],
        "source": {"observer": {"identifier": key(&e.node)}, "type": [{"code": "4", "display": "Application Server"}]},
        "entity": entities.clone(),
    });
    if let AccessAction::Erase { request, trigger } = &e.action {
        // The request's hash names its certificates; the trigger says why.
        entities.push(json!({
            "what": {"identifier": {"system": CAIRN_ERASURE, "value": request.to_string()}},
            "role": {"system": OBJECT_ROLE, "code": "20", "display": "Job"},
            "description": "the erasure request (its certificates name this hash)",
            "detail": [{"type": "trigger", "valueString": trigger_code(trigger)}],
        }));
        event = with(event, "entity", json!(entities));
    }
    if let Some(reason) = &e.reason {
        event = with(event, "outcomeDesc", json!(reason));
    }
    if e.outcome == Outcome::BreakGlass {
        let label = json!({"security": [{"system": ACT_REASON, "code": "BTG", "display": "break the glass"}]});
        event = with(event, "meta", label);
    }
    event
}

/// `object` with member `key` set to `value`.
fn with(mut object: Value, key: &str, value: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert(key.to_string(), value);
    }
    object
}
