//! The access log, break-glass, restriction and the patient's view on four real
//! validator processes (issue 16): consented reads, a refused read, a break-glass read and
//! a family read each appear in the patient's disclosure list with purpose and basis and
//! verify against the chain; an event survives kill -9 of the node that answered; a
//! break-glass without justification is refused, ends with its time box, is counted in
//! metrics and closed by a reviewer; a restriction blocks a consented read (403
//! `restricted`, logged) until the patient lifts it; after the patient's erasure the
//! entries still count and verify, and no file of any node holds the subject reference
//! or the patient's key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use cairn_client::access::{DisclosureList, restriction_json};
use cairn_client::consent::{
    AgreementSpec, ConsentSpec, DocumentFile, GrantSpec, agreement_json, binding_json, consent_json, grant_json,
    revocation_json,
};
use cairn_client::gateway::{BodyFormat, Erase, Gateway, GatewayError};
use cairn_proto::access::Outcome;
use cairn_proto::consent::{BreakGlass, DocumentKind, Period, PersonRole, Subject};
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, Keypair, SecretSeed};
use cairn_tests::cluster::Cluster;
use cairn_tests::fixtures::{files, observation, random_hex, scan};
use cairn_tests::run_ok;
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

fn refused<T: std::fmt::Debug>(r: Result<T, GatewayError>) -> (u16, String) {
    match r {
        Err(GatewayError::Refused { status, code, .. }) => (status, code),
        other => panic!("expected a refusal: {other:?}"),
    }
}

fn give(g: &Gateway, chain: &Hash32, mut file: DocumentFile, signers: &[&Keypair]) -> Result<RecordId, GatewayError> {
    for k in signers {
        file.sign(chain, k).unwrap();
    }
    g.give(&file).map(|c| c.id)
}

/// The decision's access-log entry handle in an access answer.
fn entry_of(answer: &[u8]) -> String {
    let v: Value = serde_json::from_slice(answer).unwrap();
    v["decision"]["entry"].as_str().unwrap().to_string()
}

fn break_glass(org: &str, justification: &str, start: u64, end: u64) -> String {
    serde_json::to_string(&BreakGlass {
        organisation: org.into(),
        purpose: "ETREAT".into(),
        justification: justification.into(),
        period: Period { start_ms: start, end_ms: end },
    })
    .unwrap()
}

#[test]
fn every_disclosure_is_logged_durably_shown_to_the_patient_and_outlives_erasure() {
    let mut c = Cluster::layout(4, 26200, 100);
    // Reviews fall due after one minute, so the overdue gauge can be seen in the test.
    c.edit_configs("review_minutes = 4320", "review_minutes = 1");
    c.start_all();
    c.wait_ready();
    let (_, gw_key) = c.register_gateway("shoe");
    let (_, hospital_key) = c.register("hospital-reader", 1, "accessor");
    let (_, regulator_key) = c.register("privacy-officer", 2, "regulator");
    let genesis = c.genesis();
    let chain = genesis.hash().unwrap();
    let now = cairn_proto::time::now_ms();

    let gateway = Gateway::new(&c.urls[0], gw_key.clone());
    let gw = gw_key.public().key_id();
    let subject_ref = format!("Patient/a-{}", random_hex(8));
    let subject = Subject { gateway: gw, reference: subject_ref.clone() };
    // The patient's key lives in a file (for the CLI); the family member's in memory.
    let key_file = c.dir.path().join("patient.key");
    run_ok("cairn", &["keygen", "--out", key_file.to_str().unwrap()]);
    let (patient, family) = (cairn_client::keys::load(&key_file).unwrap(), person());
    let body: String = (0..3).map(|k| observation(&subject_ref, 10 + k, &random_hex(8)) + "\n").collect();
    gateway.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None).unwrap();
    let binding = DocumentFile::new(
        DocumentKind::SubjectBinding,
        subject.clone(),
        binding_json(patient.public(), PersonRole::Patient).unwrap(),
    )
    .unwrap();
    give(&gateway, &chain, binding, &[&gw_key]).unwrap();
    let as_patient = Gateway::new(&c.urls[0], patient.clone());
    let consent = consent_json(&ConsentSpec {
        subject: subject_ref.clone(),
        organisation: "org1".into(),
        purposes: vec!["TREAT".into()],
        categories: Vec::new(),
        start: rfc3339(now - HOUR_MS),
        end: rfc3339(now + 24 * HOUR_MS),
        data_start: None,
        data_end: None,
        deny_purposes: Vec::new(),
    })
    .unwrap();
    let consent_id = give(
        &as_patient,
        &chain,
        DocumentFile::new(DocumentKind::Consent, subject.clone(), consent).unwrap(),
        &[&patient],
    )
    .unwrap();

    eprintln!("step: Consented reads at two nodes");
    // Consented reads at two nodes, and a refused one.
    let hospital = Gateway::new(&c.urls[0], hospital_key.clone());
    let granted = entry_of(&hospital.access("TREAT", &consent_id, None).unwrap());
    let hospital1 = Gateway::new(&c.urls[1], hospital_key.clone());
    hospital1.access("TREAT", &consent_id, None).unwrap();
    assert_eq!(refused(hospital.access("HRESCH", &consent_id, None)), (403, "purpose_not_consented".into()));

    eprintln!("step: A family read under");
    // A family read under an executed agreement and a grant.
    let institution = cairn_client::keys::load(&c.dir.path().join("dev/admins/org1/node.key")).unwrap();
    let period = Period { start_ms: now - HOUR_MS, end_ms: now + 24 * HOUR_MS };
    let agreement = agreement_json(&AgreementSpec {
        text_hash: cairn_proto::hash::blake3(b"contract"),
        organisation: "org1".into(),
        institution_key: institution.public(),
        patient: patient.public(),
        family: vec![(family.public(), "MTH".into())],
        purposes: vec!["FAMRQT".into()],
        categories: vec!["*".into()],
        retention_days: 365,
        liability: "The hospital is liable for leaks.".into(),
        breach_hours: 72,
        breach_duties: "Notify within 72 hours.".into(),
        period,
        replaces: None,
    })
    .unwrap();
    let agreement = give(
        &as_patient,
        &chain,
        DocumentFile::new(DocumentKind::Agreement, subject.clone(), agreement).unwrap(),
        &[&institution, &patient, &family],
    )
    .unwrap();
    let grant = grant_json(&GrantSpec {
        patient: patient.public(),
        representative: None,
        family: family.public(),
        relationship: "MTH".into(),
        evidence_hash: cairn_proto::hash::blake3(b"register extract"),
        verified_by: "org1".into(),
        verifier: hospital_key.public(),
        agreement,
        purposes: vec!["FAMRQT".into()],
        categories: vec!["*".into()],
        period,
    })
    .unwrap();
    let grant = give(
        &as_patient,
        &chain,
        DocumentFile::new(DocumentKind::FamilyGrant, subject.clone(), grant).unwrap(),
        &[&patient, &hospital_key],
    )
    .unwrap();
    let as_family = Gateway::new(&c.urls[3], family.clone());
    as_family.access("FAMRQT", &grant, None).unwrap();

    eprintln!("step: Break-glass: refused");
    // Break-glass: refused without a justification; a read under a short time box is
    // flagged; after the box the read is refused.
    let hospital2 = Gateway::new(&c.urls[2], hospital_key.clone());
    let bg = |json: String| DocumentFile::new(DocumentKind::BreakGlass, subject.clone(), json).unwrap();
    let t = cairn_proto::time::now_ms();
    let (status, _) = refused(give(&hospital2, &chain, bg(break_glass("org1", "  ", t, t + 60_000)), &[&hospital_key]));
    assert_eq!(status, 422, "no justification, no break-glass");
    let too_long = break_glass("org1", "unconscious in the ER", t, t + 5 * HOUR_MS);
    assert_eq!(refused(give(&hospital2, &chain, bg(too_long), &[&hospital_key])).0, 422, "longer than the time box");
    let declaration = give(
        &hospital2,
        &chain,
        bg(break_glass("org1", "unconscious in the ER, no relative reachable", t, t + 4_000)),
        &[&hospital_key],
    )
    .unwrap();
    let answer: Value = serde_json::from_slice(&hospital2.access("ETREAT", &declaration, None).unwrap()).unwrap();
    assert_eq!(answer["decision"]["break_glass"], true);
    assert_eq!(answer["records"].as_array().unwrap().len(), 3);
    c.wait_for("the break-glass time box to end", MINUTE, |_| {
        matches!(hospital2.access("ETREAT", &declaration, None),
            Err(GatewayError::Refused { ref code, .. }) if code == "expired")
    });

    eprintln!("step: Restriction: the consented");
    // Restriction: the consented read is refused and logged, until the patient lifts it.
    let restriction = give(
        &as_patient,
        &chain,
        DocumentFile::new(DocumentKind::Restriction, subject.clone(), restriction_json().unwrap()).unwrap(),
        &[&patient],
    )
    .unwrap();
    assert_eq!(refused(hospital1.access("TREAT", &consent_id, None)), (403, "restricted".into()));
    let as_family_1 = Gateway::new(&c.urls[1], family.clone());
    assert_eq!(refused(as_family_1.access("FAMRQT", &grant, None)), (403, "restricted".into()));
    let lift =
        DocumentFile::new(DocumentKind::Revocation, subject.clone(), revocation_json(restriction).unwrap()).unwrap();
    assert_eq!(refused(give(&hospital, &chain, lift, &[&hospital_key])).0, 403, "only the patient's side lifts it");
    let lift =
        DocumentFile::new(DocumentKind::Revocation, subject.clone(), revocation_json(restriction).unwrap()).unwrap();
    give(&as_patient, &chain, lift, &[&patient]).unwrap();

    eprintln!("step: kill -9 of the node");
    // kill -9 of the node that answered, right after the answer: the event is there after
    // the restart.
    let hospital3 = Gateway::new(&c.urls[3], hospital_key.clone());
    let last = entry_of(&hospital3.access("TREAT", &consent_id, None).unwrap());
    c.kill(3);
    c.start_node(3);
    c.wait_ready();

    eprintln!("step: The patient's list, at another");
    // The patient's list, at another node: every kind, with purpose and basis, each
    // verified against the chain once committed.
    let list = |g: &Gateway| -> DisclosureList { g.disclosures(&subject).unwrap() };
    let as_patient2 = Gateway::new(&c.urls[2], patient.clone());
    c.wait_for("every entry committed", MINUTE, |_| {
        let l = list(&as_patient2);
        l.missing.is_empty() && l.entries.len() >= 9 && l.entries.iter().all(|e| e.receipt.is_some())
    });
    let l = list(&as_patient2);
    for e in &l.entries {
        e.disclosure().unwrap().verify(&genesis).unwrap();
    }
    let events: Vec<_> = l.entries.iter().map(|e| e.entry.as_ref().unwrap().event.clone()).collect();
    let handles: Vec<String> = l.entries.iter().map(|e| e.handle.to_string()).collect();
    assert!(handles.contains(&granted) && handles.contains(&last), "the first read and the read before kill -9");
    let has = |outcome: Outcome, purpose: &str, basis: RecordId, reason: Option<&str>| {
        events.iter().any(|e| {
            e.outcome == outcome && e.purpose == purpose && e.basis == Some(basis) && e.reason.as_deref() == reason
        })
    };
    assert!(has(Outcome::Granted, "TREAT", consent_id, None));
    assert!(has(Outcome::Refused, "HRESCH", consent_id, Some("purpose_not_consented")));
    assert!(has(Outcome::Granted, "FAMRQT", grant, None));
    assert!(has(Outcome::BreakGlass, "ETREAT", declaration, None));
    assert!(has(Outcome::Refused, "ETREAT", declaration, Some("expired")));
    assert!(has(Outcome::Refused, "TREAT", consent_id, Some("restricted")));
    let glass = events.iter().find(|e| e.outcome == Outcome::BreakGlass).unwrap();
    assert_eq!(glass.justification.as_deref(), Some("unconscious in the ER, no relative reachable"));
    assert_eq!(glass.records.len(), 3);
    let audit = l.entries.iter().find(|e| e.outcome == Outcome::BreakGlass).unwrap().audit_event.clone().unwrap();
    assert_eq!(audit["resourceType"], "AuditEvent");
    assert_eq!(audit["meta"]["security"][0]["code"], "BTG");
    // The CLI verifies the list offline too.
    let out = cairn_tests::run(
        "cairn",
        &[
            "disclosures",
            "--node",
            &c.urls[1],
            "--key",
            key_file.to_str().unwrap(),
            "--gateway",
            &gw.to_string(),
            "--subject",
            &subject_ref,
            "--genesis",
            c.genesis_path().to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("verified against the chain"), "{err}");
    // Nobody else sees the list.
    assert_eq!(refused(hospital.disclosures(&subject)).0, 404);

    eprintln!("step: The review: open");
    // The review: open and overdue in the metrics of the node that took the declaration,
    // closed by a regulator, once.
    let home = 2;
    assert!(c.metric(home, "cairn_break_glass_reviews_open").unwrap() >= 1.0);
    c.wait_for("the review to fall due", 2 * MINUTE, |c| {
        c.metric(home, "cairn_break_glass_reviews_overdue").is_some_and(|v| v >= 1.0)
    });
    let reviewer = Gateway::new(&c.urls[home], regulator_key.clone());
    let reviews = reviewer.reviews().unwrap();
    let open = &reviews["reviews"][0];
    assert_eq!(open["declaration"], declaration.to_string());
    assert_eq!(open["overdue"], true);
    assert_eq!(refused(hospital2.reviews()).0, 403, "an accessor does not review itself");
    let closed = reviewer.close_review(&declaration, "reviewed", "cardiac arrest, documented").unwrap();
    assert_eq!(closed["verdict"], "reviewed");
    assert_eq!(refused(reviewer.close_review(&declaration, "unjustified", "again")).0, 409);
    assert_eq!(c.metric(home, "cairn_break_glass_reviews_overdue"), Some(0.0));

    eprintln!("step: one reading erased");
    // A fourth reading, erased on its own: the coordinator logs the erasure in the
    // patient's access log, and the export carries its certificate.
    let canary = random_hex(8);
    let extra = observation(&subject_ref, 99, &canary) + "\n";
    let extra_rid = gateway.submit(extra.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None).unwrap().records[0].rid;
    let mut erased = None;
    c.wait_for("the fourth reading's erasure accepted", MINUTE, |_| {
        erased = gateway.erase(&Erase::Records(vec![extra_rid]), Some("subject_request")).ok();
        erased.is_some()
    });
    let erased = erased.unwrap();
    c.wait_for("the fourth reading's erasure", 2 * MINUTE, |_| gateway.certificates(&erased).unwrap().is_some());
    c.wait_for("every entry committed", MINUTE, |_| {
        let l = list(&as_patient2);
        l.missing.is_empty() && l.entries.iter().all(|e| e.receipt.is_some())
    });
    let l = list(&as_patient2);
    let erase_events: Vec<&Value> =
        l.entries.iter().filter_map(|e| e.audit_event.as_ref()).filter(|a| a["action"] == "D").collect();
    assert_eq!(erase_events.len(), 1, "the erasure is in the patient's log");
    assert!(erase_events[0].to_string().contains(&extra_rid.to_string()), "{}", erase_events[0]);

    eprintln!("step: export");
    // Export: everything held about the patient, resources byte for byte, every proof
    // verifying offline; a tampered entry is refused by name.
    let exported = as_patient2.export(&subject).unwrap();
    let v = cairn_client::export::verify_export(&genesis, &exported, |_, _| {}).unwrap();
    assert_eq!(v.readings, 3, "the erased reading is not exported");
    assert_eq!((v.erasures, v.erasures_pending), (1, 0), "its certificate is");
    let text = String::from_utf8(exported.clone()).unwrap();
    assert!(!text.contains(&canary), "the erased reading's content is not in the export");
    // A certificate altered in the export is refused by its URL.
    let at = text.find("\"fullUrl\":\"urn:cairn:erasure:").unwrap();
    let data_at = at + text[at..].find("\"data\":\"").unwrap() + 8;
    let mut forged = text.clone().into_bytes();
    forged[data_at + 10] = if forged[data_at + 10] == b'A' { b'B' } else { b'A' };
    let err = cairn_client::export::verify_export(&genesis, &forged, |_, _| {}).unwrap_err();
    assert!(err.item.starts_with("urn:cairn:erasure:"), "{err}");
    assert!(v.documents >= 7, "binding, consent, agreement, grant, declaration, restriction, lift: {}", v.documents);
    assert!(v.disclosures + v.pending >= l.entries.len(), "{} < {}", v.disclosures, l.entries.len());
    assert!(v.disclosures >= l.entries.len(), "every entry listed above was committed: {}", v.disclosures);
    let bundle: Value = serde_json::from_slice(&exported).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    for line in body.lines() {
        assert!(text.contains(&format!("\"resource\":{line}")), "a reading not byte for byte: {line}");
    }
    let first = body.lines().next().unwrap();
    let tampered = text.replacen(first, &first.replacen("\"status\":\"final\"", "\"status\":\"amended\"", 1), 1);
    assert_ne!(tampered, text);
    let err = cairn_client::export::verify_export(&genesis, tampered.as_bytes(), |_, _| {}).unwrap_err();
    assert!(
        err.item.starts_with("urn:cairn:record:") && err.problem.contains("not what the validator signed"),
        "{err}"
    );
    // The same through the CLI.
    let export_file = c.dir.path().join("export.json");
    run_ok(
        "cairn",
        &[
            "export",
            "--node",
            &c.urls[0],
            "--key",
            key_file.to_str().unwrap(),
            "--gateway",
            &gw.to_string(),
            "--subject",
            &subject_ref,
            "--out",
            export_file.to_str().unwrap(),
        ],
    );
    let out = run_ok(
        "cairn",
        &["verify-export", "--genesis", c.genesis_path().to_str().unwrap(), export_file.to_str().unwrap()],
    );
    assert!(out.contains("ok: 3 readings") && out.contains("ok: 1 erasure certificates"), "{out}");
    std::fs::write(&export_file, tampered).unwrap();
    let out = cairn_tests::run(
        "cairn",
        &["verify-export", "--genesis", c.genesis_path().to_str().unwrap(), export_file.to_str().unwrap()],
    );
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("urn:cairn:record:"));

    // Erasure of the patient: the entries still count and verify, at every node.
    // Row counts per node, once every row's batch is committed (each receipt verified).
    let counts = |c: &Cluster| -> Option<Vec<u64>> {
        let mut out = Vec::new();
        for i in 0..4 {
            let log = Gateway::new(&c.urls[i], regulator_key.clone()).access_log(None, None).unwrap();
            for row in log["rows"].as_array().unwrap() {
                if row["receipt"].is_null() {
                    return None;
                }
                let receipt: cairn_proto::access::AccessReceipt =
                    serde_json::from_value(row["receipt"].clone()).unwrap();
                receipt.verify(&genesis).unwrap();
            }
            out.push(log["rows"].as_array().unwrap().len() as u64);
        }
        Some(out)
    };
    c.wait_for("every access event committed", MINUTE, |c| counts(c).is_some());
    let before = counts(&c).unwrap();
    // Each row names the node's day key it is sealed under; within retention it is held.
    let log = Gateway::new(&c.urls[0], regulator_key.clone()).access_log(None, None).unwrap();
    let day_keys: Vec<&Value> = log["day_keys"].as_array().unwrap().iter().collect();
    assert!(!day_keys.is_empty() && day_keys.iter().all(|d| d["held"] == true && d["certificate"].is_null()));
    for row in log["rows"].as_array().unwrap() {
        assert!(day_keys.iter().any(|d| d["reference"] == row["sealed_under"]), "{row}");
    }
    // The list above (with the erasure), and the two exports since (each an access event).
    assert_eq!(before.iter().sum::<u64>(), l.entries.len() as u64 + 2);
    let id = gateway.erase(&Erase::Subject(subject_ref.clone()), Some("subject_request")).unwrap();
    c.wait_for("the patient's erasure", 2 * MINUTE, |_| gateway.certificates(&id).unwrap().is_some());
    assert_eq!(counts(&c), Some(before.clone()), "every entry still counts and verifies after the erasure");
    assert_eq!(refused(as_patient2.disclosures(&subject)).0, 404, "the binding went with the patient");

    eprintln!("step: Forensic scan");
    // Forensic scan of every file of every node (vaults and stores included) and their
    // logs: no subject reference, no patient or family key.
    let mut needles: Vec<Vec<u8>> = vec![subject_ref.as_bytes().to_vec()];
    for k in [&patient, &family] {
        needles.push(k.public().as_bytes().to_vec());
        needles.push(k.public().to_string().into_bytes());
    }
    let mut haystacks = Vec::new();
    for i in 0..4 {
        for f in files(c.data_dir(i)) {
            haystacks.push((f.display().to_string(), std::fs::read(&f).unwrap()));
        }
        haystacks.push((format!("log of node {i}"), c.log(i).into_bytes()));
    }
    let (hits, scanned) = scan(&haystacks, &needles);
    assert!(hits.is_empty(), "personal data after erasure: {hits:?}");
    assert!(scanned > 1_000_000, "scanned {scanned} bytes");

    // The residue audit of a stopped node counts its entries, all linked to no one, and
    // names the file it does not search.
    c.kill(0);
    let out = run_ok("cairn-node", &["audit", "residue", "--config", c.configs[0].to_str().unwrap()]);
    let expect = format!("access log: {} entries", before[0]);
    assert!(out.contains(&expect) && out.contains("0 linked to a subject"), "{out}");
    assert!(out.contains(&format!("{} linked to no one", before[0])), "{out}");
    assert!(out.contains("file not searched:") && out.contains("erasures.redb"), "{out}");
    assert!(out.contains("found: nothing"), "{out}");
}
