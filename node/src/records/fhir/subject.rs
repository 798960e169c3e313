//! The subject rule (ADR 015): the key a reading is filed under, from a literal, a
//! contained, a Bundle-local or a logical reference, and the check of a subject a caller
//! names in an erasure or a hold.

use std::collections::HashMap;

use serde_json::Value;

use cairn_proto::subject::{SUBJECT_TYPES, literal};

use super::MAX_SUBJECT;

/// Escapes a token part the way FHIR search does (`\`, `|`, `,` and `$` get a `\`).
fn escape_token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A reference that only means something inside the message that carries it.
fn is_message_local(reference: &str) -> bool {
    reference.starts_with('#') || reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:")
}

/// The identity a resource states: `Type?identifier=system|value` from its first
/// identifier with both a system and a value (FHIR keeps list order); `at` is the resource's path for errors.
fn stated_identity(resource: &Value, at: &str, what: &str) -> Result<String, (String, String)> {
    let kind = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
    if !SUBJECT_TYPES.contains(&kind) {
        return Err((
            format!("{at}.resourceType"),
            format!("{what} is a {kind:?}; an Observation's subject is a Patient, Group, Device or Location"),
        ));
    }
    identity(kind, resource.get("identifier").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]), at, what)
}

fn identity(kind: &str, identifiers: &[Value], at: &str, what: &str) -> Result<String, (String, String)> {
    let first = identifiers.iter().find_map(|id| {
        let system = id.get("system").and_then(Value::as_str).filter(|s| !s.is_empty())?;
        let value = id.get("value").and_then(Value::as_str).filter(|s| !s.is_empty())?;
        Some((system, value))
    });
    match first {
        Some((system, value)) => Ok(format!("{kind}?identifier={}|{}", escape_token(system), escape_token(value))),
        None => Err((
            format!("{at}.identifier"),
            format!(
                "{what} states no identifier with a system and a value, so nothing says whose reading this is; \
                 give it one, or use a literal reference (Patient/…)"
            ),
        )),
    }
}

/// The subject key a reading is filed under (ADR 015), or the field and reason it is
/// refused. `context` holds a Bundle's other entries by `fullUrl`.
///
/// - `subject.reference` literal (`Patient/123`, `https://…/Patient/123`): as given,
///   without `/_history/N`;
/// - `subject.reference` `#id`: the contained resource with that id, by its first
///   identifier: `Patient?identifier=system|value`;
/// - `subject.reference` `urn:uuid:…`/`urn:oid:…`: the Bundle entry with that `fullUrl`,
///   by its first identifier (refused in JSON lines: it names no one there);
/// - only `subject.identifier`: `{subject.type or Patient}?identifier=system|value`.
///
/// At most [`MAX_SUBJECT`] bytes.
pub fn subject_key(
    obj: &serde_json::Map<String, Value>,
    context: &HashMap<String, (usize, String, Value)>,
) -> Result<String, (String, String)> {
    let err = |f: &str, m: String| Err((f.to_owned(), m));
    let Some(subject) = obj.get("subject") else {
        return err("subject", "missing: cairn files each reading under its subject".into());
    };
    let key = match subject.get("reference") {
        Some(Value::String(r)) if r.starts_with('#') => {
            let id = r.get(1..).unwrap_or("");
            let contained = obj.get("contained").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            let mut named =
                contained.iter().enumerate().filter(|(_, c)| c.get("id").and_then(Value::as_str) == Some(id));
            let Some((i, resource)) = named.next() else {
                return err("subject.reference", format!("{r:?} names no contained resource"));
            };
            if named.next().is_some() {
                return err("contained", format!("two contained resources have the id {id:?}; ids are unique (FHIR)"));
            }
            let what = format!("the contained resource {id:?} the subject refers to");
            stated_identity(resource, &format!("contained[{i}]"), &what)?
        }
        Some(Value::String(r)) if is_message_local(r) => match context.get(r) {
            Some((i, _, resource)) => {
                let what = format!("the entry {r} the subject refers to");
                stated_identity(resource, &format!("entry[{i}].resource"), &what)?
            }
            None => {
                return err(
                    "subject.reference",
                    format!(
                        "{r:?} refers to a Bundle entry, and no entry of this body has that fullUrl: it names no one \
                         here; send the Patient in the same Bundle, or a literal reference (Patient/…)"
                    ),
                );
            }
        },
        Some(Value::String(r)) if !r.is_empty() => literal(r).map_err(|m| ("subject.reference".to_owned(), m))?,
        Some(_) => return err("subject.reference", "must be a non-empty string".into()),
        None => match subject.get("identifier") {
            Some(id) => {
                let kind = subject.get("type").and_then(Value::as_str).unwrap_or("Patient");
                if !SUBJECT_TYPES.contains(&kind) {
                    return err(
                        "subject.type",
                        format!("{kind:?}: the subject is a Patient, Group, Device or Location"),
                    );
                }
                identity(kind, std::slice::from_ref(id), "subject", "the subject")?
            }
            None => return err("subject.reference", "missing: cairn files each reading under its subject".into()),
        },
    };
    if key.len() > MAX_SUBJECT {
        return err("subject", format!("the subject key is {} bytes; at most {MAX_SUBJECT}", key.len()));
    }
    Ok(key)
}

/// Checks the subject a caller names in an erasure or a hold: the key readings are filed
/// under ([`subject_key`]). A reference local to one message (`#p1`, `urn:uuid:…`) names
/// no one and is refused; a versioned literal reference is taken without its version.
pub fn requested_subject(subject: &str) -> Result<String, String> {
    if is_message_local(subject) {
        return Err(format!(
            "{subject:?} is local to the message it was sent in and names no one; use the key the readings are filed \
             under (the record's \"subject\", e.g. Patient?identifier=system|value)"
        ));
    }
    let key = literal(subject)?;
    if key.len() > MAX_SUBJECT {
        return Err(format!("1 to {MAX_SUBJECT} bytes"));
    }
    Ok(key)
}
