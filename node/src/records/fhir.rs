//! Readings as FHIR R4 `Observation` resources: splitting a request body (JSON lines or a
//! FHIR `Bundle`) into resources and checking each one, with an error per item that names
//! the offending field. A resource is kept byte for byte as the gateway sent it.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Statuses FHIR R4 allows for an Observation.
const STATUSES: [&str; 8] =
    ["registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"];
/// Longest subject reference, bytes.
pub const MAX_SUBJECT: usize = 256;

/// One accepted reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The gateway's local subject reference (`Observation.subject.reference`).
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
}

/// Splits a body into raw resources (each with its item index).
pub fn split(body: &[u8], format: Format) -> Result<Vec<Result<Box<RawValue>, ItemError>>, BodyError> {
    match format {
        Format::JsonLines => {
            let text =
                std::str::from_utf8(body).map_err(|e| BodyError::Malformed(format!("body is not UTF-8: {e}")))?;
            Ok(text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, line)| {
                    serde_json::from_str::<Box<RawValue>>(line)
                        .map_err(|e| item_error(i, "", format!("line {} is not JSON: {e}", i + 1)))
                })
                .collect())
        }
        Format::Bundle => {
            #[derive(serde::Deserialize)]
            struct Entry {
                resource: Option<Box<RawValue>>,
            }
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Bundle {
                resource_type: String,
                #[serde(default)]
                entry: Vec<Entry>,
            }
            let bundle: Bundle = serde_json::from_slice(body)
                .map_err(|e| BodyError::Malformed(format!("body is not a JSON Bundle: {e}")))?;
            if bundle.resource_type != "Bundle" {
                return Err(BodyError::NotABundle(format!(
                    "resourceType is {:?}, expected \"Bundle\"",
                    bundle.resource_type
                )));
            }
            Ok(bundle
                .entry
                .into_iter()
                .enumerate()
                .map(|(i, e)| e.resource.ok_or_else(|| item_error(i, "entry.resource", "the entry has no resource")))
                .collect())
        }
    }
}

/// Checks one resource: an Observation with a status FHIR allows, a code, and a subject
/// reference of at most [`MAX_SUBJECT`] bytes; at most `max_bytes` long.
pub fn check(index: usize, raw: &RawValue, max_bytes: usize) -> Result<Reading, ItemError> {
    let text = raw.get();
    if text.len() > max_bytes {
        return Err(item_error(index, "", format!("resource is {} bytes; at most {max_bytes} allowed", text.len())));
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
    let subject =
        obj.get("subject").and_then(|s| s.get("reference")).and_then(Value::as_str).ok_or_else(|| {
            item_error(index, "subject.reference", "missing: cairn files each reading under its subject")
        })?;
    if subject.is_empty() || subject.len() > MAX_SUBJECT {
        return Err(item_error(index, "subject.reference", format!("must be 1 to {MAX_SUBJECT} bytes")));
    }
    Ok(Reading { subject: subject.to_owned(), resource: text.as_bytes().to_vec() })
}

/// Splits and checks a whole body: every reading, or every item's error.
pub fn parse(body: &[u8], format: Format, max_bytes: usize) -> Result<Result<Vec<Reading>, Vec<ItemError>>, BodyError> {
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    for (i, item) in split(body, format)?.into_iter().enumerate() {
        match item.and_then(|raw| check(i, &raw, max_bytes)) {
            Ok(r) => ok.push(r),
            Err(e) => errors.push(e),
        }
    }
    Ok(if errors.is_empty() { Ok(ok) } else { Err(errors) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// The published examples, copied from `../shared/vectors/fhir` (CC0-1.0).
    fn vectors() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/fhir")
    }

    #[test]
    fn published_observations_are_accepted_byte_for_byte_or_refused_by_field() {
        let mut accepted = 0;
        for dir in ["phd-ig/observations", "r4-core/observations"] {
            for entry in std::fs::read_dir(vectors().join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                let line: Value = serde_json::from_str(&text).unwrap();
                let line = serde_json::to_string(&line).unwrap();
                match parse(line.as_bytes(), Format::JsonLines, 64 * 1024).unwrap() {
                    Ok(readings) => {
                        assert_eq!(readings[0].resource, line.as_bytes(), "{}", path.display());
                        accepted += 1;
                    }
                    Err(errors) => {
                        // The one published example without a subject.
                        assert_eq!(errors[0].field, "subject.reference", "{}", path.display());
                        assert!(path.ends_with("Observation-decimal.json"), "{}", path.display());
                    }
                }
            }
        }
        assert_eq!(accepted, 19 + 26);
    }

    #[test]
    fn a_published_bundle_of_47_readings_is_split_into_its_entries() {
        let body = std::fs::read(vectors().join("phd-ig/bundles/bundle-continuousnonin.json")).unwrap();
        let readings = parse(&body, Format::Bundle, 64 * 1024).unwrap().unwrap();
        assert_eq!(readings.len(), 47);
        let bundle: Value = serde_json::from_slice(&body).unwrap();
        for (r, e) in readings.iter().zip(bundle["entry"].as_array().unwrap()) {
            assert_eq!(serde_json::from_slice::<Value>(&r.resource).unwrap(), e["resource"]);
        }
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
        assert_eq!(got, [(1, "resourceType"), (2, "status"), (3, "code"), (4, "subject.reference"), (5, ""), (6, "")]);
        let big = ok.replace("steps", &"s".repeat(200));
        assert_eq!(parse(big.as_bytes(), Format::JsonLines, 150).unwrap().unwrap_err()[0].index, 0);
        assert!(matches!(parse(b"{", Format::Bundle, 100), Err(BodyError::Malformed(_))));
        assert!(matches!(parse(ok.as_bytes(), Format::Bundle, 1000), Err(BodyError::NotABundle(_))));
    }
}
