//! A FHIR R4 `Consent` read into the terms cairn decides on (ADR 017, docs/consent.md).
//!
//! What is read: `resourceType` `Consent`; `status` `active`; `patient.reference` (the
//! subject key the document is filed under); `provision.type` (`permit` or `deny`);
//! `provision.period` (required, the consent period); exactly one
//! `provision.actor[].reference` of the form `Organization/<genesis organisation name>`
//! (the grantee); `provision.purpose[]` (v3 PurposeOfUse codings); `provision.code[]`
//! (record categories, matched against `Observation.code` codings; absent = all);
//! the actor's `role` must be `IRCP` (v3 ParticipationType, information recipient);
//! `modifierExtension` is refused wherever it appears;
//! `provision.dataPeriod`; nested `provision.provision[]`, each of type `deny`, with
//! `purpose`, `code` and `dataPeriod` only. Elements that would change the meaning and
//! that cairn does not decide on (`provision.action`, `securityLabel`, `class`, `data`,
//! nested actors) are refused, so a consent never grants more than it says. Other
//! elements (`id`, `meta`, `text`, `scope`, `category`, `dateTime`, `policy`, …) are kept
//! as sent and not interpreted.

use cairn_proto::consent::Period;
use serde::Deserialize;

/// The v3 ActReason code system (PurposeOfUse).
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// Whether a provision permits or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionType {
    /// Permits what it covers.
    Permit,
    /// Denies what it covers.
    Deny,
}

/// What a provision covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// v3 PurposeOfUse codes (empty: every purpose).
    pub purposes: Vec<String>,
    /// Record categories as `system|code` (empty: every category).
    pub categories: Vec<String>,
    /// Records whose time is in this period (none: any time).
    pub data_period: Option<Period>,
}

impl Scope {
    /// Whether the scope covers `purpose` for every record (no category or data period).
    pub fn covers_purpose_wholly(&self, purpose: &str) -> bool {
        self.covers_purpose(purpose) && self.categories.is_empty() && self.data_period.is_none()
    }
    /// Whether the scope names `purpose` (or no purpose at all).
    pub fn covers_purpose(&self, purpose: &str) -> bool {
        self.purposes.is_empty() || self.purposes.iter().any(|p| p == purpose)
    }
    /// Whether a record of `codes` at `time_ms` is inside (for its categories and period).
    pub fn covers_record(&self, codes: &[String], time_ms: u64) -> bool {
        let category = self.categories.is_empty() || codes.iter().any(|c| self.categories.contains(c));
        let period = self.data_period.is_none_or(|p| p.covers(time_ms));
        category && period
    }
}

/// The terms of a consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentTerms {
    /// The subject key (`patient.reference`).
    pub patient: String,
    /// Permit or deny (base provision).
    pub kind: ProvisionType,
    /// The consent period (`provision.period`).
    pub period: Period,
    /// The grantee organisation (genesis name).
    pub grantee: String,
    /// What the base provision covers.
    pub scope: Scope,
    /// Nested deny provisions (exceptions).
    pub exceptions: Vec<Scope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    resource_type: String,
    status: String,
    patient: Option<Reference>,
    provision: Option<Provision>,
    modifier_extension: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Reference {
    reference: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FhirPeriod {
    start: Option<String>,
    end: Option<String>,
    #[serde(default, rename = "id")]
    _id: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "extension")]
    _extension: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Coding {
    system: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct CodeableConcept {
    #[serde(default)]
    coding: Vec<Coding>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Actor {
    role: Option<CodeableConcept>,
    reference: Option<Reference>,
    #[serde(default, rename = "id")]
    _id: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "extension")]
    _extension: Option<serde::de::IgnoredAny>,
}

/// The v3 ParticipationType code of the actor a consent names: the information
/// recipient.
pub const RECIPIENT: &str = "IRCP";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Provision {
    #[serde(rename = "type")]
    kind: Option<ProvisionType>,
    period: Option<FhirPeriod>,
    #[serde(default)]
    actor: Vec<Actor>,
    #[serde(default)]
    purpose: Vec<Coding>,
    #[serde(default)]
    code: Vec<CodeableConcept>,
    data_period: Option<FhirPeriod>,
    #[serde(default)]
    provision: Vec<Provision>,
    #[serde(default, rename = "id")]
    _id: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "extension")]
    _extension: Option<serde::de::IgnoredAny>,
}

/// Why a consent is refused: the FHIR path and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentError {
    /// FHIR path (e.g. `provision.period.end`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn err(field: &str, problem: impl Into<String>) -> ConsentError {
    ConsentError { field: field.into(), problem: problem.into() }
}

/// Reads an RFC 3339 date-time with an offset (FHIR `dateTime` with a time) as Unix ms.
pub fn instant_ms(field: &str, text: &str) -> Result<u64, ConsentError> {
    let t: jiff::Timestamp =
        text.parse().map_err(|e| err(field, format!("{text:?} is not a date-time with an offset: {e}")))?;
    u64::try_from(t.as_millisecond()).map_err(|_| err(field, "before 1970"))
}

fn period(field: &str, p: &FhirPeriod, need_both: bool) -> Result<Period, ConsentError> {
    let start = match &p.start {
        Some(s) => instant_ms(&format!("{field}.start"), s)?,
        None if need_both => return Err(err(&format!("{field}.start"), "required")),
        None => 0,
    };
    let end = match &p.end {
        Some(s) => instant_ms(&format!("{field}.end"), s)?,
        None if need_both => return Err(err(&format!("{field}.end"), "required: a consent ends")),
        None => u64::MAX,
    };
    if start >= end {
        return Err(err(field, "start must be before end"));
    }
    Ok(Period { start_ms: start, end_ms: end })
}

fn purposes(field: &str, codings: &[Coding]) -> Result<Vec<String>, ConsentError> {
    let mut out = Vec::new();
    for (i, c) in codings.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if c.system.as_deref() != Some(ACT_REASON) {
            return Err(err(&format!("{f}.system"), format!("must be {ACT_REASON}")));
        }
        match c.code.as_deref() {
            Some(code) if cairn_proto::policy::is_purpose_code(code) => out.push(code.to_string()),
            _ => return Err(err(&format!("{f}.code"), "a v3 PurposeOfUse code (2 to 16 of A-Z)")),
        }
    }
    Ok(out)
}

fn categories(field: &str, codes: &[CodeableConcept]) -> Result<Vec<String>, ConsentError> {
    let mut out = Vec::new();
    for (i, cc) in codes.iter().enumerate() {
        if cc.coding.is_empty() {
            return Err(err(&format!("{field}[{i}].coding"), "at least one coding"));
        }
        for (j, c) in cc.coding.iter().enumerate() {
            match (&c.system, &c.code) {
                (Some(s), Some(k)) if !s.is_empty() && !k.is_empty() => out.push(format!("{s}|{k}")),
                _ => return Err(err(&format!("{field}[{i}].coding[{j}]"), "needs both system and code")),
            }
        }
    }
    Ok(out)
}

fn scope(field: &str, p: &Provision) -> Result<Scope, ConsentError> {
    Ok(Scope {
        purposes: purposes(&format!("{field}.purpose"), &p.purpose)?,
        categories: categories(&format!("{field}.code"), &p.code)?,
        data_period: p.data_period.as_ref().map(|d| period(&format!("{field}.dataPeriod"), d, false)).transpose()?,
    })
}

/// Reads a FHIR R4 `Consent` (the JSON as sent) into its terms.
pub fn parse(json: &str) -> Result<ConsentTerms, ConsentError> {
    let r: Resource = serde_json::from_str(json).map_err(|e| err("Consent", e.to_string()))?;
    if r.resource_type != "Consent" {
        return Err(err("resourceType", format!("{:?} is not Consent", r.resource_type)));
    }
    if r.modifier_extension.is_some() {
        return Err(err("modifierExtension", "cairn does not decide on modifier extensions, so it refuses them"));
    }
    if r.status != "active" {
        return Err(err("status", format!("{:?}: only an active consent can be given", r.status)));
    }
    let patient = r
        .patient
        .and_then(|p| p.reference)
        .ok_or_else(|| err("patient.reference", "required: the subject the readings are filed under"))?;
    let p = r.provision.ok_or_else(|| err("provision", "required"))?;
    let kind = p.kind.ok_or_else(|| err("provision.type", "required: permit or deny"))?;
    let period =
        period("provision.period", p.period.as_ref().ok_or_else(|| err("provision.period", "required"))?, true)?;
    let [actor] = p.actor.as_slice() else {
        return Err(err("provision.actor", "exactly one actor: the organisation that may read"));
    };
    let recipient = actor.role.as_ref().is_some_and(|r| r.coding.iter().any(|c| c.code.as_deref() == Some(RECIPIENT)));
    if !recipient {
        return Err(err("provision.actor[0].role", "the actor's role must be IRCP (information recipient)"));
    }
    let grantee = actor
        .reference
        .as_ref()
        .and_then(|r| r.reference.as_deref())
        .and_then(|r| r.strip_prefix("Organization/"))
        .filter(|name| cairn_proto::membership::is_name(name))
        .ok_or_else(|| {
            err("provision.actor[0].reference", "must be Organization/<organisation name in the genesis file>")
        })?
        .to_string();
    let base = scope("provision", &p)?;
    if kind == ProvisionType::Permit && base.purposes.is_empty() {
        return Err(err("provision.purpose", "a permit names the purposes it permits"));
    }
    let mut exceptions = Vec::new();
    for (i, nested) in p.provision.iter().enumerate() {
        let field = format!("provision.provision[{i}]");
        if nested.kind != Some(ProvisionType::Deny) || kind != ProvisionType::Permit {
            return Err(err(&format!("{field}.type"), "nested provisions are deny exceptions of a permit"));
        }
        if !nested.actor.is_empty() || nested.period.is_some() || !nested.provision.is_empty() {
            return Err(err(&field, "a nested provision has only purpose, code and dataPeriod"));
        }
        exceptions.push(scope(&field, nested)?);
    }
    Ok(ConsentTerms { patient, kind, period, grantee, scope: base, exceptions })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> serde_json::Value {
        serde_json::json!({
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/123"},
            "provision": {
                "type": "permit",
                "period": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
                "actor": [{"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": "Organization/hospital"}}],
                "purpose": [{"system": ACT_REASON, "code": "TREAT"}],
                "code": [{"coding": [{"system": "http://loinc.org", "code": "41950-7"}]}],
                "provision": [{"type": "deny", "purpose": [{"system": ACT_REASON, "code": "TREAT"}],
                               "dataPeriod": {"start": "2026-06-01T00:00:00Z", "end": "2026-07-01T00:00:00Z"}}]
            }
        })
    }

    #[test]
    fn reads_the_terms() {
        let t = parse(&sample().to_string()).unwrap();
        assert_eq!(t.patient, "Patient/123");
        assert_eq!(t.grantee, "hospital");
        assert_eq!(t.kind, ProvisionType::Permit);
        assert_eq!(t.scope.purposes, ["TREAT"]);
        assert_eq!(t.scope.categories, ["http://loinc.org|41950-7"]);
        assert_eq!(t.period.start_ms, 1_767_225_600_000);
        assert_eq!(t.exceptions.len(), 1);
        assert!(t.exceptions[0].data_period.is_some());
    }

    #[test]
    fn refuses_what_it_cannot_decide_on_naming_the_path() {
        type Change = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Change)> = vec![
            ("resourceType", Box::new(|v| v["resourceType"] = "Observation".into())),
            ("status", Box::new(|v| v["status"] = "proposed".into())),
            ("patient.reference", Box::new(|v| v["patient"] = serde_json::json!({"display": "x"}))),
            (
                "provision.period.end",
                Box::new(|v| v["provision"]["period"] = serde_json::json!({"start": "2026-01-01T00:00:00Z"})),
            ),
            ("provision.period.start", Box::new(|v| v["provision"]["period"]["start"] = "2026-13-01".into())),
            ("provision.actor", Box::new(|v| v["provision"]["actor"] = serde_json::json!([]))),
            (
                "provision.actor[0].reference",
                Box::new(|v| {
                    v["provision"]["actor"][0]["reference"] = serde_json::json!({"reference": "Practitioner/1"})
                }),
            ),
            ("provision.purpose[0].system", Box::new(|v| v["provision"]["purpose"][0]["system"] = "urn:x".into())),
            ("provision.purpose", Box::new(|v| v["provision"]["purpose"] = serde_json::json!([]))),
            ("provision.provision[0].type", Box::new(|v| v["provision"]["provision"][0]["type"] = "permit".into())),
            ("Consent", Box::new(|v| v["provision"]["action"] = serde_json::json!([{"coding": []}]))),
            ("modifierExtension", Box::new(|v| v["modifierExtension"] = serde_json::json!([{"url": "urn:x"}]))),
            (
                "provision.actor[0].role",
                Box::new(|v| v["provision"]["actor"][0]["role"] = serde_json::json!({"coding": [{"code": "PRCP"}]})),
            ),
            ("Consent", Box::new(|v| v["provision"]["actor"][0]["modifierExtension"] = serde_json::json!([]))),
        ];
        for (field, change) in cases {
            let mut v = sample();
            change(&mut v);
            let e = parse(&v.to_string()).unwrap_err();
            assert_eq!(e.field, field, "{e:?}");
        }
    }

    #[test]
    fn scopes_cover_records_by_category_and_data_period() {
        let t = parse(&sample().to_string()).unwrap();
        let steps = ["http://loinc.org|41950-7".to_string()];
        assert!(t.scope.covers_record(&steps, 5));
        assert!(!t.scope.covers_record(&["http://loinc.org|8867-4".into()], 5));
        let june = 1_780_272_000_000 + 1; // 2026-06-01T00:00:00.001Z
        assert!(t.exceptions[0].covers_record(&steps, june));
        assert!(!t.exceptions[0].covers_purpose_wholly("TREAT"));
    }
}
