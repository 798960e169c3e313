//! The literal subject reference rule (ADR 015), shared by the node's intake, which files
//! a reading under it, and the `cairn` command's smart-shoe CSV reader, which must make
//! only Observations the node accepts.

/// Resource types an Observation's subject may name (FHIR R4 `Observation.subject`).
pub const SUBJECT_TYPES: [&str; 4] = ["Patient", "Group", "Device", "Location"];

/// Longest subject key, bytes (checked by the caller: the node names the field it came
/// from).
pub const MAX_SUBJECT: usize = 256;

/// `Type/id/_history/v` → `Type/id`: a versioned reference names the same subject.
pub fn without_version(reference: &str) -> &str {
    match reference.find("/_history/") {
        Some(i) => reference.get(..i).unwrap_or(reference),
        None => reference,
    }
}

/// A literal subject reference as it is filed: `Type/id` or an absolute URL ending in
/// `Type/id` (without `/_history/N`), whose type may be an Observation's subject; or a
/// conditional reference by identifier, `Type?identifier=system|value`.
///
/// # Errors
/// Why the reference names no subject, as a sentence quoting it.
pub fn literal(reference: &str) -> Result<String, String> {
    let reference = without_version(reference);
    let kind = match reference.split_once('?') {
        Some((kind, query)) => {
            let by_identifier = query.strip_prefix("identifier=").is_some_and(|t| !t.is_empty() && !t.contains('&'));
            if !by_identifier {
                return Err(format!(
                    "{reference:?}: a conditional reference names one subject only by identifier \
                     (Type?identifier=system|value)"
                ));
            }
            kind
        }
        None => {
            let mut segments = reference.rsplit('/');
            let (id, kind) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
            if id.is_empty() || kind.is_empty() {
                return Err(format!("{reference:?} is not a reference (Type/id, or a URL ending in Type/id)"));
            }
            kind
        }
    };
    if !SUBJECT_TYPES.contains(&kind) {
        return Err(format!("{reference:?}: an Observation's subject is a Patient, Group, Device or Location"));
    }
    Ok(reference.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_references_name_a_subject_type_and_fit() {
        assert_eq!(literal("Patient/1/_history/3").as_deref(), Ok("Patient/1"));
        assert_eq!(literal("https://h.example/fhir/Device/x").as_deref(), Ok("https://h.example/fhir/Device/x"));
        assert!(literal("Patient?identifier=urn:x|1").is_ok());
        for bad in ["Patient/fc-1Patient/fc-2", "Observation/1", "Patient/", "#p1", "Patient?name=x", "1"] {
            assert!(literal(bad).is_err(), "{bad}");
        }
    }
}
