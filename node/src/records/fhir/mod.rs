//! Readings as FHIR R4 `Observation` resources: splitting a request body (JSON lines or a
//! FHIR `Bundle`) into resources and checking each one, with an error per item that names
//! the offending field. A resource is kept byte for byte as the gateway sent it.
//!
//! Three rules decide what is accepted (ADR 015):
//! - **Unique keys.** FHIR JSON property names SHALL be unique within an object; an object
//!   with a key twice — anywhere in a resource or in the Bundle around it — is refused and
//!   the key's path is named (`subject`, `component[0].valueQuantity.value`).
//! - **A reading is filed under the person it is about, or refused** ([`subject_key`]):
//!   a literal reference (`Patient/123`, an absolute URL) is filed as given, without a
//!   `/_history/N` version; a reference that only means something inside the message —
//!   a contained resource (`#p1`) or a Bundle entry (`urn:uuid:…`, `urn:oid:…`) — is
//!   filed under the first identifier (with a system and a value) of the resource it points to, as
//!   `Type?identifier=system|value`; a logical reference (`subject.identifier`) likewise.
//!   A reference that cannot be resolved to one stated identity is refused.
//! - **A UTF-8 byte-order mark** at the start of a body is ignored.

mod keys;
mod subject;

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use keys::{KeyError, unique_keys};
pub use subject::{requested_subject, subject_key};

/// Statuses FHIR R4 allows for an Observation.
const STATUSES: [&str; 8] =
    ["registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"];
/// Longest subject reference, bytes (`cairn_proto::subject::MAX_SUBJECT`).
pub const MAX_SUBJECT: usize = cairn_proto::subject::MAX_SUBJECT;
/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One accepted reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The subject key it is filed under ([`subject_key`]).
    pub subject: String,
    /// The resource's JSON, as sent.
    pub resource: Vec<u8>,
}

/// What is wrong with one item of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemError {
    /// Position in the batch, from 0 (line or entry).
    pub index: usize,
    /// The offending field (a FHIRPath-like name).
    pub field: String,
    /// Why.
    pub message: String,
}

fn item_error(index: usize, field: &str, message: impl Into<String>) -> ItemError {
    ItemError { index, field: field.into(), message: message.into() }
}

/// How the body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One Observation per line (`application/x-ndjson`).
    JsonLines,
    /// A FHIR `Bundle` whose entries are Observations (`application/fhir+json`).
    Bundle,
}

/// Why a body cannot be split into items at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON.
    #[error("{0}")]
    Malformed(String),
    /// JSON, but not a Bundle.
    #[error("{0}")]
    NotABundle(String),
    /// An object of the Bundle has a key twice (FHIR: property names SHALL be unique);
    /// the path of the second one, e.g. `entry[2].resource.subject`.
    #[error("the key {0:?} appears twice in one object; FHIR JSON property names are unique")]
    DuplicateKey(String),
}

/// A body split into its items: each Observation (or why an item is not one) with its
/// position, and for a Bundle the other entries by `fullUrl`, which an Observation's
/// subject may refer to.
#[derive(Debug, Default)]
pub struct Split {
    /// Observations to check, with their line or entry index.
    pub items: Vec<(usize, Result<Box<RawValue>, ItemError>)>,
    /// Entries that are not Observations, by `fullUrl`: (entry index, resource type, resource).
    pub context: HashMap<String, (usize, String, Value)>,
    /// Entries that are not Observations and have no `fullUrl`: (index, resource type).
    pub loose: Vec<(usize, String)>,
}

/// Splits a body into raw resources (each with its item index). A UTF-8 byte-order mark
/// at the start is skipped.
pub fn split(body: &[u8], format: Format) -> Result<Split, BodyError> {
    let body = body.strip_prefix(BOM).unwrap_or(body);
    let mut out = Split::default();
    match format {
        Format::JsonLines => {
            let text =
                std::str::from_utf8(body).map_err(|e| BodyError::Malformed(format!("body is not UTF-8: {e}")))?;
            out.items = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, line)| {
                    let raw = serde_json::from_str::<Box<RawValue>>(line).map_err(|e| {
                        let hint = if line.trim() == "{" || line.trim() == "[" {
                            " (JSON lines hold one whole resource per line; send an indented Bundle as application/fhir+json)"
                        } else {
                            ""
                        };
                        item_error(i, "", format!("line {} is not JSON: {e}{hint}", i + 1))
                    });
                    (i, raw)
                })
                .collect();
        }
        Format::Bundle => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Entry {
                full_url: Option<String>,
                resource: Option<Box<RawValue>>,
            }
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Bundle {
                resource_type: String,
                #[serde(default)]
                entry: Vec<Entry>,
            }
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Kind {
                resource_type: Option<String>,
            }
            match unique_keys(body) {
                Ok(()) => {}
                Err(KeyError::Duplicate(path)) => return Err(BodyError::DuplicateKey(path)),
                Err(KeyError::Malformed(e)) => {
                    return Err(BodyError::Malformed(format!("body is not a JSON Bundle: {e}")));
                }
            }
            let bundle: Bundle = serde_json::from_slice(body)
                .map_err(|e| BodyError::Malformed(format!("body is not a JSON Bundle: {e}")))?;
            if bundle.resource_type != "Bundle" {
                return Err(BodyError::NotABundle(format!(
                    "resourceType is {:?}, expected \"Bundle\"",
                    bundle.resource_type
                )));
            }
            for (i, e) in bundle.entry.into_iter().enumerate() {
                let Some(raw) = e.resource else {
                    out.items.push((i, Err(item_error(i, "entry.resource", "the entry has no resource"))));
                    continue;
                };
                let kind = serde_json::from_str::<Kind>(raw.get()).ok().and_then(|k| k.resource_type);
                match kind {
                    Some(t) if t != "Observation" => match e.full_url {
                        Some(url) if out.context.contains_key(&url) => {
                            let why = format!("fullUrl {url:?} names two entries; each names one (FHIR)");
                            out.items.push((i, Err(item_error(i, "entry.fullUrl", why))));
                        }
                        Some(url) => {
                            let value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
                            out.context.insert(url, (i, t, value));
                        }
                        None => out.loose.push((i, t)),
                    },
                    _ => out.items.push((i, Ok(raw))),
                }
            }
        }
    }
    Ok(out)
}

/// Checks one resource: an Observation with unique keys, a status FHIR allows, a code,
/// and a subject it can be filed under ([`subject_key`]); at most `max_bytes` long.
/// Returns the reading and every Bundle entry (`fullUrl`) it refers to (its subject,
/// device, `derivedFrom`, …).
pub fn check(
    index: usize,
    raw: &RawValue,
    max_bytes: usize,
    context: &HashMap<String, (usize, String, Value)>,
) -> Result<(Reading, Vec<String>), ItemError> {
    let text = raw.get();
    if text.len() > max_bytes {
        return Err(item_error(index, "", format!("resource is {} bytes; at most {max_bytes} allowed", text.len())));
    }
    match unique_keys(text.as_bytes()) {
        Ok(()) => {}
        Err(KeyError::Duplicate(path)) => {
            return Err(item_error(
                index,
                &path,
                format!("the key {path:?} appears twice in one object; FHIR JSON property names are unique"),
            ));
        }
        Err(KeyError::Malformed(e)) => return Err(item_error(index, "", format!("not JSON: {e}"))),
    }
    let value: Value = serde_json::from_str(text).map_err(|e| item_error(index, "", format!("not JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| item_error(index, "", "a resource is a JSON object"))?;
    match obj.get("resourceType").and_then(Value::as_str) {
        Some("Observation") => {}
        Some(other) => {
            return Err(item_error(
                index,
                "resourceType",
                format!("{other:?} is not accepted; cairn stores Observations"),
            ));
        }
        None => return Err(item_error(index, "resourceType", "missing")),
    }
    match obj.get("status").and_then(Value::as_str) {
        Some(s) if STATUSES.contains(&s) => {}
        Some(s) => return Err(item_error(index, "status", format!("{s:?} is not an Observation status"))),
        None => return Err(item_error(index, "status", "missing (required by FHIR R4)")),
    }
    let code = obj.get("code").and_then(Value::as_object).ok_or_else(|| item_error(index, "code", "missing"))?;
    let has_coding = code.get("coding").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
    let has_text = code.get("text").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
    if !has_coding && !has_text {
        return Err(item_error(index, "code", "needs a coding or a text"));
    }
    let subject = subject_key(obj, context).map_err(|(field, message)| item_error(index, &field, message))?;
    let mut refers_to = Vec::new();
    if !context.is_empty() {
        references(&value, context, &mut refers_to);
    }
    Ok((Reading { subject, resource: text.as_bytes().to_vec() }, refers_to))
}

/// Every `reference` in `value` that names an entry of `context`.
fn references(value: &Value, context: &HashMap<String, (usize, String, Value)>, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(r) if k == "reference" && context.contains_key(r) => out.push(r.clone()),
                    _ => references(v, context, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, context, out)),
        _ => {}
    }
}

/// Splits and checks a whole body: every reading, or every item's error. In a Bundle,
/// an entry that is not an Observation is accepted only when an Observation refers to
/// it (as its subject, its device, …) by its `fullUrl`; it is not stored: only the
/// Observations are.
pub fn parse(body: &[u8], format: Format, max_bytes: usize) -> Result<Result<Vec<Reading>, Vec<ItemError>>, BodyError> {
    let split = split(body, format)?;
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    let mut used = HashSet::new();
    for (i, item) in split.items {
        match item.and_then(|raw| check(i, &raw, max_bytes, &split.context)) {
            Ok((r, refers_to)) => {
                used.extend(refers_to);
                ok.push(r);
            }
            Err(e) => errors.push(e),
        }
    }
    let unused = split.context.into_iter().filter(|(url, _)| !used.contains(url)).map(|(_, (i, t, _))| (i, t));
    for (i, kind) in unused.chain(split.loose) {
        errors.push(item_error(
            i,
            "resourceType",
            format!(
                "{kind:?} is not accepted: cairn stores Observations, and reads other entries only when an \
                 Observation of the Bundle refers to them by fullUrl"
            ),
        ));
    }
    errors.sort_by_key(|e| e.index);
    Ok(if errors.is_empty() { Ok(ok) } else { Err(errors) })
}

/// The unique-key rule for any JSON text (a consent-layer document): `Err` names the
/// path of the first key seen twice, or why the text is not JSON.
pub fn check_unique_keys(text: &[u8]) -> Result<(), String> {
    match keys::unique_keys(text) {
        Ok(()) => Ok(()),
        Err(keys::KeyError::Duplicate(path)) => Err(format!("the key at {path} appears twice in one object")),
        Err(keys::KeyError::Malformed(e)) => Err(format!("not JSON: {e}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// The published examples, copied from `../shared/vectors/fhir` (CC0-1.0).
    fn vectors() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/fhir")
    }

    /// Inputs of the kinds gateways send, copied from `../shared/field-cases`.
    fn field_case(name: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/field-cases").join(name)).unwrap()
    }

    /// A Bundle around one resource's text, kept as it is.
    fn bundle_of(texts: &[&str]) -> String {
        let entries: Vec<String> = texts.iter().map(|t| format!("{{\"resource\":{t}}}")).collect();
        format!("{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[{}]}}", entries.join(","))
    }

    #[test]
    fn published_observations_are_kept_byte_for_byte_as_indented_or_refused_by_field() {
        let (mut accepted, mut refused) = (0, Vec::new());
        for dir in ["phd-ig/observations", "r4-core/observations"] {
            for entry in std::fs::read_dir(vectors().join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text.trim_end();
                match parse(bundle_of(&[text]).as_bytes(), Format::Bundle, 64 * 1024).unwrap() {
                    Ok(readings) => {
                        assert_eq!(readings[0].resource, text.as_bytes(), "{}", path.display());
                        accepted += 1;
                    }
                    Err(errors) => refused.push((path.file_name().unwrap().to_string_lossy().into_owned(), errors)),
                }
            }
        }
        refused.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<(&str, &str)> = refused.iter().map(|(n, e)| (n.as_str(), e[0].field.as_str())).collect();
        // The one published example without a subject (the Apgar score's `#newborn` is
        // a contained Patient with an identifier: filed under it).
        assert_eq!(names, [("Observation-decimal.json", "subject")]);
        assert_eq!(accepted, 19 + 26);
    }

    /// Every Observation entry of every published Bundle is kept as the bytes of its
    /// entry; a Bundle is refused only for entries that are neither Observations nor
    /// the subject of one.
    #[test]
    fn published_bundles_keep_each_entry_as_its_bytes() {
        #[derive(serde::Deserialize)]
        struct Entry<'a> {
            #[serde(borrow)]
            resource: Option<&'a RawValue>,
        }
        #[derive(serde::Deserialize)]
        struct Bundle<'a> {
            #[serde(borrow)]
            entry: Vec<Entry<'a>>,
        }
        let mut stored = 0;
        for dir in ["phd-ig/bundles", "r4-core/bundles"] {
            for entry in std::fs::read_dir(vectors().join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let body = std::fs::read(&path).unwrap();
                let raw: Bundle<'_> = serde_json::from_slice(&body).unwrap();
                let observations: Vec<&str> = raw
                    .entry
                    .iter()
                    .filter_map(|e| e.resource)
                    .map(RawValue::get)
                    .filter(|t| {
                        t.contains("\"resourceType\": \"Observation\"")
                            || t.contains("\"resourceType\":\"Observation\"")
                    })
                    .collect();
                match parse(&body, Format::Bundle, 64 * 1024).unwrap() {
                    Ok(readings) => {
                        let got: Vec<&[u8]> = readings.iter().map(|r| r.resource.as_slice()).collect();
                        let want: Vec<&[u8]> = observations.iter().map(|t| t.as_bytes()).collect();
                        assert_eq!(got, want, "{}", path.display());
                        stored += readings.len();
                    }
                    Err(_) => {
                        // Each Observation on its own (with its literal subject) is kept as sent.
                        for t in observations.iter().filter(|t| !t.contains("urn:uuid:")) {
                            let one = parse(bundle_of(&[t]).as_bytes(), Format::Bundle, 64 * 1024).unwrap().unwrap();
                            assert_eq!(one[0].resource, t.as_bytes(), "{}", path.display());
                        }
                    }
                }
            }
        }
        // continuousnonin (47), the PHD example (3, subjects in the Bundle), lipids (4 — its
        // DiagnosticReport is refused, so counted one by one above: 0 here).
        assert_eq!(stored, 47 + 3);
    }

    #[test]
    fn decimals_keep_their_precision() {
        let body = field_case("decimal-precision.jsonl");
        let readings = parse(&body, Format::JsonLines, 64 * 1024).unwrap().unwrap();
        let line = std::str::from_utf8(&body).unwrap().trim_end();
        assert_eq!(readings[0].resource, line.as_bytes());
        assert!(line.contains("\"value\":1.50") && line.contains("\"value\":1.00"));
    }

    #[test]
    fn a_key_twice_anywhere_is_refused_with_its_path() {
        let errors =
            parse(&field_case("duplicate-subject-key.jsonl"), Format::JsonLines, 64 * 1024).unwrap().unwrap_err();
        assert_eq!((errors[0].index, errors[0].field.as_str()), (0, "subject"));
        let nested = r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/1"},"component":[{"code":{"text":"a"}},{"valueQuantity":{"value":1,"value":2}}]}"#;
        let errors = parse(nested.as_bytes(), Format::JsonLines, 64 * 1024).unwrap().unwrap_err();
        assert_eq!(errors[0].field, "component[1].valueQuantity.value");
        let escaped = r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/1"},"st\u0061tus":"final"}"#;
        assert_eq!(parse(escaped.as_bytes(), Format::JsonLines, 64 * 1024).unwrap().unwrap_err()[0].field, "status");
        let envelope = r#"{"resourceType":"Bundle","type":"collection","type":"batch","entry":[]}"#;
        assert_eq!(parse(envelope.as_bytes(), Format::Bundle, 1024), Err(BodyError::DuplicateKey("type".into())));
        let in_entry = bundle_of(&[nested]);
        assert_eq!(
            parse(in_entry.as_bytes(), Format::Bundle, 64 * 1024),
            Err(BodyError::DuplicateKey("entry[0].resource.component[1].valueQuantity.value".into()))
        );
    }

    #[test]
    fn contained_subjects_are_filed_by_their_identifier() {
        let readings = parse(&field_case("contained-subject.jsonl"), Format::JsonLines, 64 * 1024).unwrap().unwrap();
        let subjects: Vec<&str> = readings.iter().map(|r| r.subject.as_str()).collect();
        assert_eq!(
            subjects,
            ["Patient?identifier=urn:example:shoe-owner|W-0701", "Patient?identifier=urn:example:shoe-owner|W-0702"]
        );
        let obs = |contained: &str, subject: &str| {
            format!(
                r#"{{"resourceType":"Observation","contained":[{contained}],"status":"final","code":{{"text":"x"}},"subject":{subject}}}"#
            )
        };
        let cases = [
            (obs(r#"{"resourceType":"Patient","id":"p1"}"#, r##"{"reference":"#p1"}"##), "contained[0].identifier"),
            (
                obs(
                    r#"{"resourceType":"Patient","id":"p1","identifier":[{"value":"W-1"}]}"#,
                    r##"{"reference":"#p1"}"##,
                ),
                "contained[0].identifier",
            ),
            (
                obs(
                    r#"{"resourceType":"Patient","id":"p1","identifier":[{"system":"s","value":"1"}]}"#,
                    r##"{"reference":"#p2"}"##,
                ),
                "subject.reference",
            ),
            (
                obs(
                    r#"{"resourceType":"Practitioner","id":"p1","identifier":[{"system":"s","value":"1"}]}"#,
                    r##"{"reference":"#p1"}"##,
                ),
                "contained[0].resourceType",
            ),
            (obs("", r#"{"reference":"urn:uuid:5b7842fe-978d-4182-a41f-0d07a8617bc2"}"#), "subject.reference"),
            (obs("", r#"{"reference":"urn:oid:1.2.3"}"#), "subject.reference"),
            (obs("", r#"{"display":"someone"}"#), "subject.reference"),
            (obs("", r#"{"identifier":{"value":"1"}}"#), "subject.identifier"),
            // Literal references name a type an Observation's subject may have.
            (obs("", r#"{"reference":"Practitioner/1"}"#), "subject.reference"),
            (obs("", r#"{"reference":"https://h/fhir/Practitioner/1"}"#), "subject.reference"),
            (obs("", r#"{"reference":"12345"}"#), "subject.reference"),
            (obs("", r#"{"reference":"Patient?name=Smith"}"#), "subject.reference"),
            (obs("", r#"{"reference":"Patient?identifier=s|1&name=x"}"#), "subject.reference"),
            // Two contained resources under one id.
            (
                obs(
                    r#"{"resourceType":"Patient","id":"p1","identifier":[{"system":"s","value":"1"}]},{"resourceType":"Patient","id":"p1","identifier":[{"system":"s","value":"2"}]}"#,
                    r##"{"reference":"#p1"}"##,
                ),
                "contained",
            ),
        ];
        for (line, field) in cases {
            let errors = parse(line.as_bytes(), Format::JsonLines, 64 * 1024).unwrap().unwrap_err();
            assert_eq!(errors[0].field, field, "{line}");
        }
        let two_ids = obs(
            r#"{"resourceType":"Device","id":"d","identifier":[{"value":"no system"},{"system":"urn:x","value":"a|b"},{"system":"urn:y","value":"c"}]}"#,
            r##"{"reference":"#d"}"##,
        );
        let r = parse(two_ids.as_bytes(), Format::JsonLines, 64 * 1024).unwrap().unwrap();
        assert_eq!(r[0].subject, r"Device?identifier=urn:x|a\|b");
        let logical = obs("", r#"{"identifier":{"system":"http://example.org/ids","value":"1234567"}}"#);
        let r = parse(logical.as_bytes(), Format::JsonLines, 64 * 1024).unwrap().unwrap();
        assert_eq!(r[0].subject, "Patient?identifier=http://example.org/ids|1234567");
        let conditional = obs("", r#"{"reference":"Patient?identifier=urn:s|W-1"}"#);
        let r = parse(conditional.as_bytes(), Format::JsonLines, 64 * 1024).unwrap().unwrap();
        assert_eq!(r[0].subject, "Patient?identifier=urn:s|W-1", "the same key as a contained W-1");
        let versioned = obs("", r#"{"reference":"Patient/45/_history/2"}"#);
        assert_eq!(
            parse(versioned.as_bytes(), Format::JsonLines, 64 * 1024).unwrap().unwrap()[0].subject,
            "Patient/45"
        );
    }

    #[test]
    fn bundle_entries_resolve_subjects_and_nothing_else_rides_along() {
        let obs = r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:1"}}"#;
        let patient = r#"{"resourceType":"Patient","identifier":[{"system":"urn:s","value":"W-1"}]}"#;
        let body = format!(
            r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"fullUrl":"urn:uuid:1","resource":{patient}}},{{"resource":{obs}}}]}}"#
        );
        let r = parse(body.as_bytes(), Format::Bundle, 64 * 1024).unwrap().unwrap();
        assert_eq!((r.len(), r[0].subject.as_str()), (1, "Patient?identifier=urn:s|W-1"));
        // The same Patient entry, referred to by no Observation, is refused by its index.
        let body = format!(
            r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"fullUrl":"urn:uuid:2","resource":{patient}}},{{"resource":{obs}}}]}}"#
        );
        let errors = parse(body.as_bytes(), Format::Bundle, 64 * 1024).unwrap().unwrap_err();
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(got, [(0, "resourceType"), (1, "subject.reference")]);
        // Two entries under one fullUrl: which wearer is meant is not said.
        let other = r#"{"resourceType":"Patient","identifier":[{"system":"urn:s","value":"W-2"}]}"#;
        let body = format!(
            r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"fullUrl":"urn:uuid:1","resource":{patient}}},{{"fullUrl":"urn:uuid:1","resource":{other}}},{{"resource":{obs}}}]}}"#
        );
        let errors = parse(body.as_bytes(), Format::Bundle, 64 * 1024).unwrap().unwrap_err();
        assert_eq!((errors[0].index, errors[0].field.as_str()), (1, "entry.fullUrl"));
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_indented_bundles_are_read() {
        let r = parse(&field_case("bom-bundle.json"), Format::Bundle, 64 * 1024).unwrap().unwrap();
        assert_eq!(r[0].subject, "Patient/fc-0401");
        let mut lines = BOM.to_vec();
        lines.extend_from_slice(&field_case("decimal-precision.jsonl"));
        assert_eq!(parse(&lines, Format::JsonLines, 64 * 1024).unwrap().unwrap().len(), 1);
        let pretty = field_case("pretty-bundle.json");
        let r = parse(&pretty, Format::Bundle, 64 * 1024).unwrap().unwrap();
        assert_eq!(r.len(), 2);
        assert!(std::str::from_utf8(&r[1].resource).unwrap().contains("\n        \"status\": \"final\","));
        // Sent as JSON lines, an indented resource gets a hint.
        let errors = parse(&pretty, Format::JsonLines, 64 * 1024).unwrap().unwrap_err();
        assert!(errors[0].message.contains("application/fhir+json"), "{}", errors[0].message);
    }

    #[test]
    fn requested_subjects_are_keys_not_message_local_references() {
        assert!(requested_subject("#p1").is_err());
        assert!(requested_subject("urn:uuid:5b7842fe").is_err());
        assert_eq!(requested_subject("Patient/45/_history/2").unwrap(), "Patient/45");
        assert_eq!(requested_subject("Patient?identifier=urn:s|W-1").unwrap(), "Patient?identifier=urn:s|W-1");
        assert!(requested_subject("").is_err());
        assert!(requested_subject("Practitioner/1").is_err());
    }

    #[test]
    fn each_bad_item_is_named_with_its_field() {
        let ok = r#"{"resourceType":"Observation","status":"final","code":{"text":"steps"},"subject":{"reference":"Patient/1"}}"#;
        let body = [
            ok,
            r#"{"resourceType":"Patient","id":"p"}"#,
            r#"{"resourceType":"Observation","status":"done","code":{"text":"x"},"subject":{"reference":"Patient/1"}}"#,
            r#"{"resourceType":"Observation","status":"final","code":{},"subject":{"reference":"Patient/1"}}"#,
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"}}"#,
            r#"{"resourceType":"Observation","#,
            "[1,2]",
        ]
        .join("\n");
        let errors = parse(body.as_bytes(), Format::JsonLines, 64 * 1024).unwrap().unwrap_err();
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(got, [(1, "resourceType"), (2, "status"), (3, "code"), (4, "subject"), (5, ""), (6, "")]);
        let big = ok.replace("steps", &"s".repeat(200));
        assert_eq!(parse(big.as_bytes(), Format::JsonLines, 150).unwrap().unwrap_err()[0].index, 0);
        assert!(matches!(parse(b"{", Format::Bundle, 100), Err(BodyError::Malformed(_))));
        assert!(matches!(parse(ok.as_bytes(), Format::Bundle, 1000), Err(BodyError::NotABundle(_))));
    }
}
