//! The decision rules of docs/consent.md, one by one, without a network.

use cairn_proto::consent::{
    Agreement, BreachNotice, Document, DocumentKind, FamilyGrant, FamilyMember, Institution, Period, PersonRole,
    RelationshipVerification, Revocation, Subject, SubjectBinding,
};
use cairn_proto::policy::PurposePolicy;
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, Keypair, SecretSeed};

use super::decide::{Doc, DocSet, Reader, Terms, decide};

const CHAIN: Hash32 = Hash32([5; 32]);
const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

fn key(b: u8) -> Keypair {
    Keypair::from_seed(&SecretSeed::from_bytes([b; 32]))
}

fn gateway() -> Keypair {
    key(1)
}
fn patient() -> Keypair {
    key(2)
}
fn family() -> Keypair {
    key(3)
}
fn institution() -> Keypair {
    key(4)
}

fn subject() -> Subject {
    Subject { gateway: gateway().public().key_id(), reference: "Patient/1".into() }
}

fn policy() -> PurposePolicy {
    PurposePolicy::public_service(3)
}

struct Set {
    set: DocSet,
    next: u8,
}

impl Set {
    fn new() -> Self {
        let mut s = Set { set: DocSet::default(), next: 1 };
        let binding = SubjectBinding { key: patient().public(), role: PersonRole::Patient, issued_ms: 0 };
        s.add(DocumentKind::SubjectBinding, serde_json::to_string(&binding).unwrap(), &[&gateway()]);
        s
    }

    fn add(&mut self, kind: DocumentKind, json: String, signers: &[&Keypair]) -> RecordId {
        let mut document = Document { kind, subject: subject(), json, signatures: Vec::new() };
        for k in signers {
            document.sign(&CHAIN, k).unwrap();
        }
        document.verify_signatures(&CHAIN).unwrap();
        let terms = Terms::read(&document).unwrap();
        let id = RecordId([self.next; 16]);
        self.next += 1;
        self.set.docs.push(Doc { id, document, terms });
        id
    }

    fn consent(&mut self, value: serde_json::Value, signer: &Keypair) -> RecordId {
        self.add(DocumentKind::Consent, value.to_string(), &[signer])
    }

    fn revoke(&mut self, id: RecordId, signer: &Keypair) -> RecordId {
        let r = Revocation { revokes: id, at_ms: NOW };
        self.add(DocumentKind::Revocation, serde_json::to_string(&r).unwrap(), &[signer])
    }

    fn org_read(&self, purpose: &str, basis: RecordId) -> Result<super::decide::Permit, &'static str> {
        decide(&self.set, &policy(), &CHAIN, &Reader::Organisation("hospital".into()), purpose, &basis, NOW)
            .map_err(|r| r.code)
    }

    fn family_read(&self, purpose: &str, basis: RecordId) -> Result<super::decide::Permit, &'static str> {
        decide(&self.set, &policy(), &CHAIN, &Reader::Person(family().public()), purpose, &basis, NOW)
            .map_err(|r| r.code)
    }
}

fn ts(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64).unwrap().to_string()
}

fn consent(org: &str, kind: &str, purposes: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Consent", "status": "active",
        "patient": {"reference": "Patient/1"},
        "provision": {
            "type": kind,
            "period": {"start": ts(NOW - HOUR), "end": ts(NOW + HOUR)},
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                       "reference": {"reference": format!("Organization/{org}")}}],
            "purpose": purposes.iter().map(|p| serde_json::json!({"system": super::fhir::ACT_REASON, "code": p})).collect::<Vec<_>>(),
        }
    })
}

const STEPS: &str = "http://loinc.org|55423-8";
const HEART: &str = "http://loinc.org|8867-4";

#[test]
fn a_consent_permits_each_listed_purpose_for_its_grantee_only() {
    let mut s = Set::new();
    let c = s.consent(consent("hospital", "permit", &["TREAT", "CAREMGT"]), &patient());
    assert!(s.org_read("TREAT", c).is_ok());
    assert!(s.org_read("CAREMGT", c).is_ok(), "every listed purpose, one read at a time");
    assert_eq!(s.org_read("PUBHLTH", c).unwrap_err(), "purpose_not_consented");
    assert_eq!(s.org_read("HMARKT", c).unwrap_err(), "purpose_not_in_policy");
    let other = decide(&s.set, &policy(), &CHAIN, &Reader::Organisation("clinic".into()), "TREAT", &c, NOW);
    assert_eq!(other.unwrap_err().code, "not_grantee");
    assert_eq!(s.org_read("TREAT", RecordId([99; 16])).unwrap_err(), "no_consent");
    // The period decides.
    let at = |t| {
        decide(&s.set, &policy(), &CHAIN, &Reader::Organisation("hospital".into()), "TREAT", &c, t).map_err(|r| r.code)
    };
    assert_eq!(at(NOW + HOUR).unwrap_err(), "expired");
    assert_eq!(at(NOW - 2 * HOUR).unwrap_err(), "not_yet_valid");
}

#[test]
fn only_a_bound_key_gives_or_revokes_and_unbinding_ends_its_consents() {
    let mut s = Set::new();
    let stranger = key(9);
    let forged = s.consent(consent("hospital", "permit", &["TREAT"]), &stranger);
    assert_eq!(s.org_read("TREAT", forged).unwrap_err(), "not_bound");
    let c = s.consent(consent("hospital", "permit", &["TREAT"]), &patient());
    // A revocation by someone else is no revocation.
    s.revoke(c, &stranger);
    assert!(s.org_read("TREAT", c).is_ok());
    s.revoke(c, &patient());
    assert_eq!(s.org_read("TREAT", c).unwrap_err(), "revoked");
    // The gateway unbinds the patient key: its other consents end.
    let mut s = Set::new();
    let c = s.consent(consent("hospital", "permit", &["TREAT"]), &patient());
    let binding = s.set.docs[0].id;
    s.revoke(binding, &gateway());
    assert_eq!(s.org_read("TREAT", c).unwrap_err(), "not_bound");
}

#[test]
fn deny_overrides_permits_and_nested_denies_narrow_them() {
    let mut s = Set::new();
    let c = s.consent(consent("hospital", "permit", &["TREAT", "CAREMGT"]), &patient());
    let deny = s.consent(consent("hospital", "deny", &["CAREMGT"]), &patient());
    assert!(s.org_read("TREAT", c).is_ok());
    assert_eq!(s.org_read("CAREMGT", c).unwrap_err(), "denied_by_consent", "a live deny wins");
    assert_eq!(s.org_read("CAREMGT", deny).unwrap_err(), "denied_by_consent");
    s.revoke(deny, &patient());
    assert!(s.org_read("CAREMGT", c).is_ok(), "a revoked deny no longer applies");

    // Nested: a deny of a whole purpose refuses the read; a deny of a category or data
    // period only withholds the records it covers.
    let mut s = Set::new();
    let mut v = consent("hospital", "permit", &["TREAT", "CAREMGT"]);
    v["provision"]["code"] = serde_json::json!([{"coding": [{"system": "http://loinc.org", "code": "55423-8"}]},
                                                {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}]);
    v["provision"]["provision"] = serde_json::json!([
        {"type": "deny", "purpose": [{"system": super::fhir::ACT_REASON, "code": "CAREMGT"}]},
        {"type": "deny", "code": [{"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}],
         "dataPeriod": {"start": ts(NOW - HOUR), "end": ts(NOW)}}
    ]);
    let c = s.consent(v, &patient());
    assert_eq!(s.org_read("CAREMGT", c).unwrap_err(), "denied_by_provision");
    let permit = s.org_read("TREAT", c).unwrap();
    assert!(permit.record(&[STEPS.into()], NOW - 10).is_ok());
    assert_eq!(permit.record(&[HEART.into()], NOW - 10).unwrap_err().code, "denied_by_provision");
    assert!(permit.record(&[HEART.into()], NOW - 2 * HOUR).is_ok(), "outside the nested deny's data period");
    assert_eq!(permit.record(&["http://loinc.org|1-1".into()], NOW).unwrap_err().code, "category_not_covered");
}

fn agreement(replaces: Option<RecordId>, purposes: &[&str]) -> String {
    let a = Agreement {
        text_hash: Hash32([1; 32]),
        institution: Institution { organisation: "hospital".into(), key: institution().public() },
        patient: patient().public(),
        family: vec![FamilyMember { key: family().public(), relationship: "MTH".into() }],
        purposes: purposes.iter().map(|p| p.to_string()).collect(),
        categories: vec!["*".into()],
        retention_days: 30,
        liability: "liable".into(),
        breach_notice: BreachNotice { within_hours: 72, duties: "notify".into() },
        period: Period { start_ms: NOW - HOUR, end_ms: NOW + HOUR },
        replaces,
    };
    serde_json::to_string(&a).unwrap()
}

fn grant(agreement: RecordId, purposes: &[&str]) -> String {
    let g = FamilyGrant {
        patient: patient().public(),
        family: FamilyMember { key: family().public(), relationship: "MTH".into() },
        signed_as: PersonRole::Patient,
        representative: None,
        verification: RelationshipVerification {
            evidence_hash: Hash32([2; 32]),
            verified_by: "hospital".into(),
            verifier: institution().public(),
        },
        agreement,
        purposes: purposes.iter().map(|p| p.to_string()).collect(),
        categories: vec![STEPS.into()],
        period: Period { start_ms: NOW - HOUR, end_ms: NOW + HOUR },
    };
    serde_json::to_string(&g).unwrap()
}

#[test]
fn family_reads_need_a_grant_under_an_agreement_all_three_signed() {
    let mut s = Set::new();
    let (i, p, f) = (institution(), patient(), family());
    let two = s.add(DocumentKind::Agreement, agreement(None, &["FAMRQT", "TREAT"]), &[&i, &p]);
    let g2 = s.add(DocumentKind::FamilyGrant, grant(two, &["FAMRQT"]), &[&p, &i]);
    assert_eq!(s.family_read("FAMRQT", g2).unwrap_err(), "agreement_not_executed");
    let a = s.add(DocumentKind::Agreement, agreement(None, &["FAMRQT"]), &[&i, &p, &f]);
    let g = s.add(DocumentKind::FamilyGrant, grant(a, &["FAMRQT", "TREAT"]), &[&p, &i]);
    let permit = s.family_read("FAMRQT", g).unwrap();
    assert!(permit.record(&[STEPS.into()], NOW).is_ok());
    assert_eq!(permit.record(&[HEART.into()], NOW).unwrap_err().code, "category_not_covered");
    assert_eq!(s.family_read("TREAT", g).unwrap_err(), "agreement_not_covering", "the agreement lists only FAMRQT");
    assert_eq!(s.org_read("FAMRQT", g).unwrap_err(), "no_consent");
    let other = decide(&s.set, &policy(), &CHAIN, &Reader::Person(key(8).public()), "FAMRQT", &g, NOW);
    assert_eq!(other.unwrap_err().code, "not_grantee");

    // Amended: grants must cite the version in force.
    let mut amended = Set::new();
    amended.set.docs.extend(s.set.docs.iter().skip(1).cloned());
    amended.next = s.next;
    let a2 = amended.add(DocumentKind::Agreement, agreement(Some(a), &["FAMRQT"]), &[&i, &p, &f]);
    assert_eq!(amended.family_read("FAMRQT", g).unwrap_err(), "agreement_superseded");
    let g3 = amended.add(DocumentKind::FamilyGrant, grant(a2, &["FAMRQT"]), &[&p, &i]);
    assert!(amended.family_read("FAMRQT", g3).is_ok());

    // Terminated by any party: every grant under it ends.
    s.revoke(a, &f);
    assert_eq!(s.family_read("FAMRQT", g).unwrap_err(), "agreement_terminated");
}

#[test]
fn a_grant_is_refused_without_the_verifier_or_once_revoked() {
    let mut s = Set::new();
    let (i, p, f) = (institution(), patient(), family());
    let a = s.add(DocumentKind::Agreement, agreement(None, &["FAMRQT"]), &[&i, &p, &f]);
    let unverified = s.add(DocumentKind::FamilyGrant, grant(a, &["FAMRQT"]), &[&p]);
    assert_eq!(s.family_read("FAMRQT", unverified).unwrap_err(), "not_bound");
    let g = s.add(DocumentKind::FamilyGrant, grant(a, &["FAMRQT"]), &[&p, &i]);
    assert!(s.family_read("FAMRQT", g).is_ok());
    s.revoke(g, &f);
    assert!(s.family_read("FAMRQT", g).is_ok(), "the family member cannot revoke the patient's grant");
    s.revoke(g, &p);
    assert_eq!(s.family_read("FAMRQT", g).unwrap_err(), "revoked");
}

#[test]
fn a_copy_with_its_signatures_reordered_is_revoked_with_the_original() {
    let mut s = Set::new();
    let (i, p, f) = (institution(), patient(), family());
    let a = s.add(DocumentKind::Agreement, agreement(None, &["FAMRQT"]), &[&i, &p, &f]);
    let g = s.add(DocumentKind::FamilyGrant, grant(a, &["FAMRQT"]), &[&p, &i]);
    s.revoke(g, &p);
    // The verifier gives the same grant again with the signatures the other way round.
    let copy = s.add(DocumentKind::FamilyGrant, grant(a, &["FAMRQT"]), &[&i, &p]);
    assert_ne!(copy, g);
    assert_eq!(s.family_read("FAMRQT", copy).unwrap_err(), "revoked");
    assert!(s.set.copy_of(&s.set.get(&copy).unwrap().document).is_some());
    // An agreement terminated ends its copies too.
    let a2 = s.add(DocumentKind::Agreement, agreement(None, &["FAMRQT"]), &[&f, &p, &i]);
    let g2 = s.add(DocumentKind::FamilyGrant, grant(a2, &["FAMRQT"]), &[&p, &i]);
    s.revoke(a, &i);
    assert_eq!(s.family_read("FAMRQT", g2).unwrap_err(), "agreement_terminated");
}

#[test]
fn a_revocation_stays_in_force_when_its_signer_is_unbound_later() {
    let mut s = Set::new();
    let representative = key(6);
    let rep = SubjectBinding { key: representative.public(), role: PersonRole::Representative, issued_ms: 0 };
    let rep_binding = s.add(DocumentKind::SubjectBinding, serde_json::to_string(&rep).unwrap(), &[&gateway()]);
    let c = s.consent(consent("hospital", "permit", &["TREAT"]), &patient());
    s.revoke(c, &representative);
    assert_eq!(s.org_read("TREAT", c).unwrap_err(), "revoked");
    s.revoke(rep_binding, &gateway());
    assert_eq!(s.org_read("TREAT", c).unwrap_err(), "revoked", "unbinding the representative does not undo it");
}

#[test]
fn a_deny_consent_of_some_categories_withholds_those_records() {
    let mut s = Set::new();
    let c = s.consent(consent("hospital", "permit", &["TREAT"]), &patient());
    let mut deny = consent("hospital", "deny", &["TREAT"]);
    deny["provision"]["code"] = serde_json::json!([{"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}]);
    s.consent(deny, &patient());
    let permit = s.org_read("TREAT", c).unwrap();
    assert!(permit.record(&[STEPS.into()], NOW).is_ok());
    assert_eq!(permit.record(&[HEART.into()], NOW).unwrap_err().code, "denied_by_provision");
    assert!(permit.depends_on_categories() && !permit.depends_on_time());
}
