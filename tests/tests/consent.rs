//! Consent, purpose and the three-party agreement on four real validator processes
//! (issue 15, sandbox conditions ⑥ ⑦ ⑧): a hospital reads a wearer's readings with a
//! consent for TREAT and is refused for a purpose outside the policy, a purpose not
//! consented, after revocation (at another node than the one that took it) and outside
//! the consent period; a family member is refused without a grant, without an executed
//! agreement, with an agreement signed by two of three, allowed with all three and refused
//! after the grant is revoked; a grant for another patient gives nothing of this one; a
//! policy change short of the quorum is refused; bad documents are refused with nothing
//! stored; nothing personal reaches a block or a non-vault file; erasing the patient
//! destroys the binding, consents and grants (residue audit).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use cairn_client::consent::{
    AgreementSpec, ConsentSpec, DocumentFile, GrantSpec, agreement_json, binding_json, consent_json, grant_json,
    revocation_json,
};
use cairn_client::gateway::{BodyFormat, Erase, Gateway, GatewayError};
use cairn_proto::consent::{DocumentKind, Period, PersonRole, Subject};
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, Keypair, SecretSeed};
use cairn_tests::cluster::Cluster;
use cairn_tests::fixtures::{files, observation, random_hex, scan};
use cairn_tests::{run, run_ok};
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR_MS: u64 = 3_600_000;

fn person() -> Keypair {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    Keypair::from_seed(&SecretSeed::from_bytes(seed))
}

fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64).unwrap().to_string()
}

/// The status and reason code of a refusal.
fn refused<T: std::fmt::Debug>(r: Result<T, GatewayError>) -> (u16, String) {
    match r {
        Err(GatewayError::Refused { status, code, .. }) => (status, code),
        other => panic!("expected a refusal: {other:?}"),
    }
}

/// Signs `file` by each key for the chain and gives it through `g`.
fn give(g: &Gateway, chain: &Hash32, mut file: DocumentFile, signers: &[&Keypair]) -> Result<RecordId, GatewayError> {
    for k in signers {
        file.sign(chain, k).unwrap();
    }
    g.give(&file).map(|c| c.id)
}

fn consent(subject: &str, org: &str, purposes: &[&str], start: u64, end: u64) -> String {
    consent_json(&ConsentSpec {
        subject: subject.into(),
        organisation: org.into(),
        purposes: purposes.iter().map(|p| p.to_string()).collect(),
        categories: Vec::new(),
        start: rfc3339(start),
        end: rfc3339(end),
        data_start: None,
        data_end: None,
        deny_purposes: Vec::new(),
    })
    .unwrap()
}

fn records(answer: &[u8]) -> Vec<Value> {
    let v: Value = serde_json::from_slice(answer).unwrap();
    v["records"].as_array().unwrap().clone()
}

#[test]
fn consented_reads_family_access_agreements_and_refusals_on_four_nodes() {
    let c = Cluster::start(4, 28200, 100);
    c.wait_ready();
    let (_, gw_key) = c.register_gateway("shoe");
    let (_, hospital_key) = c.register("hospital-reader", 1, "accessor");
    let (_, clinic_key) = c.register("clinic-reader", 2, "accessor");
    let genesis = c.genesis();
    let chain = genesis.hash().unwrap();
    let hospital_org = "org1";
    let now = cairn_proto::time::now_ms();

    let gateway = Gateway::new(&c.urls[0], gw_key.clone());
    let gw = gw_key.public().key_id();
    let subject_ref = format!("Patient/p-{}", random_hex(8));
    let other_ref = format!("Patient/q-{}", random_hex(8));
    let subject = Subject { gateway: gw, reference: subject_ref.clone() };
    let other = Subject { gateway: gw, reference: other_ref.clone() };
    let (patient, family, other_patient, other_family, stranger) = (person(), person(), person(), person(), person());

    // Readings: three of the patient, one of the other patient.
    let mut body = String::new();
    let mut sent = Vec::new();
    for k in 0..3 {
        let line = observation(&subject_ref, 100 + k, &format!("canary-{}", random_hex(8)));
        body.push_str(&line);
        body.push('\n');
        sent.push(line);
    }
    body.push_str(&observation(&other_ref, 7, "other"));
    body.push('\n');
    let stored = gateway.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None).unwrap();
    let mine: Vec<RecordId> = stored.records[..3].iter().map(|r| r.rid).collect();
    let theirs = stored.records[3].rid;

    // Collection for a purpose outside the policy is refused.
    assert_eq!(
        refused(gateway.submit(body.as_bytes(), BodyFormat::JsonLines, "HMARKT", 30, None)),
        (403, "purpose_not_in_policy".into())
    );

    // The gateway binds the patients' keys (off chain, encrypted, with the records).
    let bind = |s: &Subject, key: &Keypair| {
        let file = DocumentFile::new(
            DocumentKind::SubjectBinding,
            s.clone(),
            binding_json(key.public(), PersonRole::Patient).unwrap(),
        )
        .unwrap();
        give(&gateway, &chain, file, &[&gw_key]).unwrap()
    };
    let binding = bind(&subject, &patient);
    bind(&other, &other_patient);

    // Bad documents: a clear 4xx each, nothing stored.
    let as_patient = Gateway::new(&c.urls[0], patient.clone());
    let as_stranger = Gateway::new(&c.urls[0], stranger.clone());
    let consent_doc = |json: String| DocumentFile::new(DocumentKind::Consent, subject.clone(), json).unwrap();
    let live = consent(&subject_ref, hospital_org, &["TREAT"], now - HOUR_MS, now + HOUR_MS);
    assert_eq!(refused(give(&as_stranger, &chain, consent_doc(live.clone()), &[&stranger])), (403, "not_bound".into()));
    assert_eq!(
        refused(give(
            &as_patient,
            &chain,
            consent_doc(consent(&subject_ref, hospital_org, &["TREAT"], now - 2 * HOUR_MS, now - HOUR_MS)),
            &[&patient]
        )),
        (403, "expired".into())
    );
    assert_eq!(
        refused(give(&as_patient, &chain, consent_doc(live.replace("\"active\"", "\"proposed\"")), &[&patient])),
        (422, "invalid_document".into())
    );
    assert_eq!(
        refused(give(&as_patient, &chain, consent_doc(live.replace("\"period\"", "\"perio\"")), &[&patient])),
        (422, "invalid_document".into())
    );
    assert_eq!(
        refused(give(
            &as_patient,
            &chain,
            consent_doc(consent(&subject_ref, hospital_org, &["HMARKT"], now - HOUR_MS, now + HOUR_MS)),
            &[&patient]
        )),
        (403, "purpose_not_in_policy".into())
    );
    // A consent for a subject the signer is not bound to.
    let foreign = DocumentFile::new(
        DocumentKind::Consent,
        other.clone(),
        consent(&other_ref, hospital_org, &["TREAT"], now - HOUR_MS, now + HOUR_MS),
    )
    .unwrap();
    assert_eq!(refused(give(&as_patient, &chain, foreign, &[&patient])), (403, "not_bound".into()));
    let listed = gateway.documents(&subject).unwrap();
    assert_eq!(listed["documents"].as_array().unwrap().len(), 1, "only the binding is stored: {listed}");

    // The patient consents to the hospital for TREAT; node 0 takes it.
    let consent_id = give(&as_patient, &chain, consent_doc(live.clone()), &[&patient]).unwrap();
    // The consent comes back byte for byte, and its receipt verifies offline.
    let shown: Value = serde_json::from_slice(&as_patient.document_bytes(&consent_id).unwrap()).unwrap();
    assert_eq!(shown["resource"].to_string(), serde_json::from_str::<Value>(&live).unwrap().to_string());
    let raw = String::from_utf8(as_patient.document_bytes(&consent_id).unwrap()).unwrap();
    assert!(raw.contains(&live), "the FHIR Consent is served exactly as given");
    let receipt = as_patient.document_receipt(&consent_id, 30_000).unwrap().expect("the consent event is committed");
    let receipt: cairn_proto::consent::DocumentReceipt = serde_json::from_value(receipt).unwrap();
    receipt.verify(&genesis).unwrap();

    // The hospital reads at node 1 for TREAT: the three readings, byte for byte.
    let hospital = Gateway::new(&c.urls[1], hospital_key.clone());
    let got = records(&hospital.access("TREAT", &consent_id, None).unwrap());
    assert_eq!(got.len(), 3);
    let mut resources: Vec<String> = got.iter().map(|r| r["resource"].to_string()).collect();
    resources.sort();
    let mut expected: Vec<String> =
        sent.iter().map(|s| serde_json::from_str::<Value>(s).unwrap().to_string()).collect();
    expected.sort();
    assert_eq!(resources, expected);
    let one = hospital.access("TREAT", &consent_id, Some(&mine[0])).unwrap();
    assert!(String::from_utf8(one).unwrap().contains(&sent[0]), "one record, byte for byte");
    // Refused: a purpose outside the policy, one not consented, no purpose, another
    // organisation, another subject's record.
    assert_eq!(refused(hospital.access("HMARKT", &consent_id, None)), (403, "purpose_not_in_policy".into()));
    assert_eq!(refused(hospital.access("HRESCH", &consent_id, None)), (403, "purpose_not_consented".into()));
    assert_eq!(refused(hospital.access("PUBHLTH", &consent_id, None)), (403, "purpose_not_consented".into()));
    let no_purpose =
        hospital.call("GET", &format!("/v1/access/records?basis={consent_id}"), "application/json", &[], b"");
    assert_eq!(refused(no_purpose), (403, "no_purpose".into()));
    let clinic = Gateway::new(&c.urls[2], clinic_key.clone());
    assert_eq!(refused(clinic.access("TREAT", &consent_id, None)), (403, "not_grantee".into()));
    assert_eq!(refused(hospital.access("TREAT", &consent_id, Some(&theirs))).0, 404);
    assert_eq!(refused(hospital.access("TREAT", &RecordId([7; 16]), None)), (403, "no_consent".into()));

    // A consent whose period has not begun.
    let later = give(
        &as_patient,
        &chain,
        consent_doc(consent(&subject_ref, hospital_org, &["TREAT"], now + HOUR_MS, now + 2 * HOUR_MS)),
        &[&patient],
    )
    .unwrap();
    assert_eq!(refused(hospital.access("TREAT", &later, None)), (403, "not_yet_valid".into()));
    // A consent that ends in a few seconds: allowed now, refused once its period is over.
    let short = give(
        &as_patient,
        &chain,
        consent_doc(consent(
            &subject_ref,
            hospital_org,
            &["TREAT"],
            now - HOUR_MS,
            cairn_proto::time::now_ms() + 3_000,
        )),
        &[&patient],
    )
    .unwrap();
    assert_eq!(records(&hospital.access("TREAT", &short, None).unwrap()).len(), 3);
    c.wait_for("the short consent to expire", MINUTE, |_| {
        matches!(hospital.access("TREAT", &short, None), Err(GatewayError::Refused { ref code, .. }) if code == "expired")
    });

    // The patient revokes at node 2; node 3 refuses at once.
    let at_node2 = Gateway::new(&c.urls[2], patient.clone());
    let revocation =
        DocumentFile::new(DocumentKind::Revocation, subject.clone(), revocation_json(consent_id).unwrap()).unwrap();
    give(&at_node2, &chain, revocation, &[&patient]).unwrap();
    let hospital3 = Gateway::new(&c.urls[3], hospital_key.clone());
    assert_eq!(refused(hospital3.access("TREAT", &consent_id, None)), (403, "revoked".into()));
    // The gateway cannot erase the revocation (or any document) on its own to bring the
    // consent back: documents go only with their subject.
    let listed = gateway.documents(&subject).unwrap();
    let revocation_id: RecordId = listed["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "revocation")
        .map(|d| d["id"].as_str().unwrap().parse().unwrap())
        .unwrap();
    assert_eq!(refused(gateway.erase(&Erase::Records(vec![revocation_id]), None)).0, 404);
    assert_eq!(refused(hospital.access("TREAT", &consent_id, None)), (403, "revoked".into()));

    // Family access (⑦ ⑧).
    let as_family = Gateway::new(&c.urls[3], family.clone());
    assert_eq!(refused(as_family.access("FAMRQT", &RecordId([9; 16]), None)), (403, "no_grant".into()));
    let contract = c.dir.path().join("contract.txt");
    std::fs::write(&contract, "The full contract text.").unwrap();
    // The institution signs agreements with its organisation's admin key (in the genesis,
    // so the certificate verifies offline from the genesis file alone).
    let institution = cairn_client::keys::load(&c.dir.path().join("dev/admins/org1/node.key")).unwrap();
    let agreement_for = |patient: &Keypair, family: &Keypair| {
        agreement_json(&AgreementSpec {
            text_hash: cairn_proto::hash::blake3(b"The full contract text."),
            organisation: hospital_org.into(),
            institution_key: institution.public(),
            patient: patient.public(),
            family: vec![(family.public(), "MTH".into())],
            purposes: vec!["FAMRQT".into(), "TREAT".into()],
            categories: vec!["*".into()],
            retention_days: 365,
            liability: "The hospital is liable for leaks and breach of this contract.".into(),
            breach_hours: 72,
            breach_duties: "Notify patient and family within 72 hours.".into(),
            period: Period { start_ms: now - HOUR_MS, end_ms: now + 24 * HOUR_MS },
            replaces: None,
        })
        .unwrap()
    };
    let agreement_file =
        |s: &Subject, json: String| DocumentFile::new(DocumentKind::Agreement, s.clone(), json).unwrap();
    // Signed by two of three: not executed, nothing stored.
    let two = give(
        &as_patient,
        &chain,
        agreement_file(&subject, agreement_for(&patient, &family)),
        &[&institution, &patient],
    );
    assert_eq!(refused(two), (403, "agreement_not_executed".into()));
    let grant_for = |patient: &Keypair, family: &Keypair, agreement: RecordId| {
        grant_json(&GrantSpec {
            patient: patient.public(),
            representative: None,
            family: family.public(),
            relationship: "MTH".into(),
            evidence_hash: cairn_proto::hash::blake3(b"family register extract"),
            verified_by: hospital_org.into(),
            verifier: hospital_key.public(),
            agreement,
            purposes: vec!["FAMRQT".into(), "TREAT".into()],
            categories: vec!["*".into()],
            period: Period { start_ms: now - HOUR_MS, end_ms: now + 24 * HOUR_MS },
        })
        .unwrap()
    };
    let grant_file = |s: &Subject, json: String| DocumentFile::new(DocumentKind::FamilyGrant, s.clone(), json).unwrap();
    // A grant under no executed agreement is refused.
    let no_agreement = give(
        &as_patient,
        &chain,
        grant_file(&subject, grant_for(&patient, &family, RecordId([3; 16]))),
        &[&patient, &hospital_key],
    );
    assert_eq!(refused(no_agreement), (403, "agreement_not_executed".into()));
    // A grant naming two patients cannot be made.
    let two_patients = grant_for(&patient, &family, RecordId([3; 16])).replacen(
        &format!("\"patient\": \"{}\"", patient.public()),
        &format!("\"patient\": [\"{}\", \"{}\"]", patient.public(), other_patient.public()),
        1,
    );
    assert_ne!(two_patients, grant_for(&patient, &family, RecordId([3; 16])));
    assert_eq!(
        refused(give(&as_patient, &chain, grant_file(&subject, two_patients), &[&patient, &hospital_key])).0,
        422
    );

    // All three sign: executed.
    let agreement = give(
        &as_patient,
        &chain,
        agreement_file(&subject, agreement_for(&patient, &family)),
        &[&institution, &patient, &family],
    )
    .unwrap();
    let grant = give(
        &as_patient,
        &chain,
        grant_file(&subject, grant_for(&patient, &family, agreement)),
        &[&patient, &hospital_key],
    )
    .unwrap();
    let family_reads = records(&as_family.access("FAMRQT", &grant, None).unwrap());
    assert_eq!(family_reads.len(), 3, "the family member reads with grant and executed agreement");
    assert_eq!(refused(as_family.access("PUBHLTH", &grant, None)), (403, "purpose_not_consented".into()));
    // The hospital cannot use the family grant, nor the family member a consent.
    assert_eq!(refused(hospital.access("FAMRQT", &grant, None)), (403, "no_consent".into()));

    // A grant for another patient gives nothing of this one.
    let other_agreement = give(
        &gateway,
        &chain,
        agreement_file(&other, agreement_for(&other_patient, &other_family)),
        &[&institution, &other_patient, &other_family],
    );
    assert_eq!(refused(other_agreement).0, 403, "the gateway is not a signer of the agreement");
    let as_other = Gateway::new(&c.urls[1], other_patient.clone());
    let other_agreement = give(
        &as_other,
        &chain,
        agreement_file(&other, agreement_for(&other_patient, &other_family)),
        &[&institution, &other_patient, &other_family],
    )
    .unwrap();
    let other_grant = give(
        &as_other,
        &chain,
        grant_file(&other, grant_for(&other_patient, &other_family, other_agreement)),
        &[&other_patient, &hospital_key],
    )
    .unwrap();
    let as_other_family = Gateway::new(&c.urls[2], other_family.clone());
    let theirs_read = records(&as_other_family.access("FAMRQT", &other_grant, None).unwrap());
    assert_eq!(theirs_read.len(), 1);
    assert_eq!(refused(as_other_family.access("FAMRQT", &other_grant, Some(&mine[0]))).0, 404);
    assert_eq!(refused(as_family.access("FAMRQT", &other_grant, None)), (403, "not_grantee".into()));

    // The agreement certificate verifies offline (from the node that took it).
    let cert = as_patient.agreement_certificate(&agreement, 30_000).unwrap().expect("committed");
    cert.verify(&genesis).unwrap();
    let cert_path = c.dir.path().join("agreement-cert.json");
    std::fs::write(&cert_path, serde_json::to_string_pretty(&cert).unwrap()).unwrap();
    let out = run_ok(
        "cairn",
        &["verify-agreement", "--genesis", c.genesis_path().to_str().unwrap(), cert_path.to_str().unwrap()],
    );
    assert!(out.contains("all parties, no one else"), "{out}");

    // The family member terminates the agreement: the grant under it ends with it.
    let terminate =
        DocumentFile::new(DocumentKind::Revocation, subject.clone(), revocation_json(agreement).unwrap()).unwrap();
    give(&as_family, &chain, terminate, &[&family]).unwrap();
    assert_eq!(refused(as_family.access("FAMRQT", &grant, None)), (403, "agreement_terminated".into()));

    // The patient revokes the grant: the family member is refused everywhere.
    let at_node1 = Gateway::new(&c.urls[1], patient.clone());
    give(
        &at_node1,
        &chain,
        DocumentFile::new(DocumentKind::Revocation, subject.clone(), revocation_json(grant).unwrap()).unwrap(),
        &[&patient],
    )
    .unwrap();
    assert_eq!(refused(as_family.access("FAMRQT", &grant, None)), (403, "revoked".into()));

    // A policy change signed by fewer organisations than the quorum (3 of 4) is refused.
    let admin = |i: usize| c.dir.path().join(format!("dev/admins/org{i}/node.key"));
    let short_policy = run(
        "cairn",
        &[
            "policy",
            "change",
            "--node",
            &c.urls[0],
            "--genesis",
            c.genesis_path().to_str().unwrap(),
            "--admin-key",
            admin(0).to_str().unwrap(),
            "--admin-key",
            admin(1).to_str().unwrap(),
            "--purpose",
            "TREAT",
            "--purpose",
            "HRESCH",
        ],
    );
    assert!(!short_policy.status.success());
    let err = String::from_utf8_lossy(&short_policy.stderr);
    assert!(err.contains("2 organisation(s); the policy needs 3"), "{err}");
    let policy: Value = cairn_client::http::get_json(&format!("{}/v1/policy", c.urls[2])).unwrap();
    assert_eq!(policy["version"], 0);

    // Nothing personal on chain or in any non-vault file: every block, every file outside
    // the vaults, searched for the subject references, the person keys (raw and hex) and
    // the evidence and contract text.
    let mut needles: Vec<Vec<u8>> = vec![
        subject_ref.as_bytes().to_vec(),
        other_ref.as_bytes().to_vec(),
        b"family register extract".to_vec(),
        b"The full contract text.".to_vec(),
    ];
    for k in [&patient, &family, &other_patient, &other_family] {
        needles.push(k.public().as_bytes().to_vec());
        needles.push(k.public().to_string().into_bytes());
    }
    let height = c.height(0).unwrap();
    let mut haystacks = Vec::new();
    for h in 1..=height {
        let (s, block) = cairn_client::http::request("GET", &format!("{}/v1/blocks/{h}", c.urls[0]), "", &[]).unwrap();
        assert_eq!(s, 200);
        haystacks.push((format!("block {h}"), block));
    }
    for i in 0..4 {
        for f in files(c.data_dir(i)) {
            if f.components().any(|p| p.as_os_str() == "vault") {
                continue;
            }
            haystacks.push((f.display().to_string(), std::fs::read(&f).unwrap()));
        }
    }
    let (hits, scanned) = scan(&haystacks, &needles);
    assert!(hits.is_empty(), "personal data outside the vaults: {hits:?}");
    assert!(scanned > 100_000, "scanned {scanned} bytes");

    // Erasing the patient destroys the binding, consents, grants and agreement with the
    // readings, at every node.
    let id = gateway.erase(&Erase::Subject(subject_ref.clone()), Some("subject_request")).unwrap();
    c.wait_for("the patient's erasure to finish", 2 * MINUTE, |_| gateway.certificates(&id).unwrap().is_some());
    let certs = gateway.certificates(&id).unwrap().unwrap();
    assert!(certs.len() >= 3 + 6, "readings and documents each have a certificate: {}", certs.len());
    for i in 0..4 {
        let g = Gateway::new(&c.urls[i], gw_key.clone());
        match g.documents(&subject) {
            Ok(v) if v["documents"].as_array().is_some_and(Vec::is_empty) => {}
            other => panic!("node {i} still lists documents of the erased patient: {other:?}"),
        }
    }
    assert_eq!(refused(hospital.access("TREAT", &later, None)), (403, "no_consent".into()));
    assert_eq!(refused(as_patient.document_bytes(&binding)).0, 404);
    // The other patient's documents are untouched.
    assert_eq!(records(&as_other_family.access("FAMRQT", &other_grant, None).unwrap()).len(), 1);
    // Residue audit of a stopped node: nothing of the erased documents remains.
    let mut c = c;
    c.kill(3);
    let out = run_ok("cairn-node", &["audit", "residue", "--config", c.configs[3].to_str().unwrap()]);
    assert!(out.contains("found: nothing"), "{out}");
    assert!(
        !out.contains("records this node erased as a custodian: 0\n"),
        "node 3 erased the documents it held: {out}"
    );
}
