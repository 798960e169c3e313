//! Erasure across custodians on four real validator processes (issue 6): by record, by
//! subject and on a subject's consent withdrawal, with 2 and with 3 custodians per record, asked through a node that is not the
//! records' home. One custodian is down during the erasure: no certificate exists until it
//! comes back and erases. Then every certificate verifies offline (library and
//! `cairn verify-erasure`), the erased records are gone from every node, the others read
//! back intact, and a forensic scan of every node's data directory (vault, ledger, anchor
//! and erasure stores, consensus WAL, configuration, log) finds no canary, data key or
//! commitment secret of an erased record.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use cairn_proto::time::now_ms;
use std::time::Duration;

use cairn_client::gateway::{BodyFormat, Erase, Gateway, GatewayError};
use cairn_node::vault::{Vault, VaultConfig};
use cairn_proto::erasure::{ErasureCertificate, ErasureTrigger};
use cairn_proto::record::RecordId;
use cairn_tests::cluster::Cluster;
use cairn_tests::fixtures::{files, observation, random_hex, scan};
use cairn_tests::run_ok;
use serde_json::Value;

const MINUTE: Duration = Duration::from_secs(60);

struct Reading {
    rid: RecordId,
    subject: usize,
    canary: String,
}

/// The states of every custodian of every record of an erasure request.
fn states(status: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in status["records"].as_array().unwrap() {
        for c in r["custodians"].as_array().unwrap() {
            out.push((c["custodian"].as_str().unwrap().to_string(), c["state"].as_str().unwrap().to_string()));
        }
    }
    out
}

fn erase_with_custodians(replication: usize, base_port: u16) {
    let mut c = Cluster::start_with(4, base_port, 100, replication);
    c.wait_ready();
    let (_, key) = c.register_gateway("shoe");
    let (_, stranger) = c.register_gateway("other");
    let genesis = c.genesis();
    let home = Gateway::new(&c.urls[0], key.clone());

    // Subject 0: three readings, subject 1: two, subject 2: one; a canary in each.
    let subjects: Vec<String> = (0..3).map(|i| format!("Patient/s{i}-{}", random_hex(6))).collect();
    let mut body = String::new();
    let mut planned = Vec::new();
    for (subject, n) in [(0usize, 3u64), (1, 2), (2, 1)] {
        for k in 0..n {
            let canary = format!("canary-{}", random_hex(12));
            body.push_str(&observation(&subjects[subject], k, &canary));
            body.push('\n');
            planned.push((subject, canary));
        }
    }
    let submitted = home.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 7, None).unwrap();
    assert_eq!(submitted.custodians.len(), replication);
    let readings: Vec<Reading> = submitted
        .records
        .iter()
        .zip(planned)
        .map(|(s, (subject, canary))| Reading { rid: s.rid, subject, canary })
        .collect();
    let rids: Vec<RecordId> = readings.iter().map(|r| r.rid).collect();
    assert!(home.receipts(&rids, 30_000).unwrap().iter().all(Option::is_some), "every record anchored");
    let custodians: Vec<usize> = submitted.custodians.iter().map(|k| c.index_of(k)).collect();
    assert!(custodians.contains(&0), "the receiving node is a custodian");

    // Refusals, each with its reason; none starts an erasure.
    let refused = |r: Result<String, GatewayError>| match r {
        Err(GatewayError::Refused { status, code, .. }) => (status, code),
        other => panic!("expected a refusal: {other:?}"),
    };
    assert_eq!(refused(home.erase(&Erase::Records(vec![]), None)), (400, "bad_erasure".into()));
    assert_eq!(refused(home.erase(&Erase::Records(vec![RecordId([7; 16])]), None)), (404, "not_found".into()));
    assert_eq!(refused(home.erase(&Erase::Records(vec![rids[0], rids[0]]), None)), (400, "bad_erasure".into()));
    assert_eq!(refused(home.erase(&Erase::Subject("Patient/nobody".into()), None)), (404, "no_records".into()));
    let retention = home.erase(&Erase::Records(vec![rids[0]]), Some("retention_expired"));
    assert_eq!(refused(retention), (400, "bad_trigger".into()));
    let consent_of_records = home.erase(&Erase::Records(vec![rids[0]]), Some("consent_withdrawn"));
    assert_eq!(refused(consent_of_records), (400, "bad_trigger".into()), "consent is a subject's");
    let others = Gateway::new(&c.urls[0], stranger.clone()).erase(&Erase::Records(vec![rids[0]]), None);
    assert_eq!(refused(others), (404, "not_found".into()), "another gateway cannot erase these records");
    assert_eq!(home.erasures().unwrap()["erasures"], serde_json::json!([]));

    // Erased: all of subject 0 (by subject), the first record of subject 1 (by record) and
    // subject 2, who withdrew consent.
    let erased: Vec<&Reading> = readings
        .iter()
        .filter(|r| r.subject == 0)
        .chain(readings.iter().filter(|r| r.subject == 1).take(1))
        .chain(readings.iter().filter(|r| r.subject == 2))
        .collect();
    let kept: Vec<&Reading> = readings.iter().filter(|r| !erased.iter().any(|e| e.rid == r.rid)).collect();

    // One custodian other than node 2 goes down; its vault gives the secrets the scan
    // looks for later.
    let d = custodians.iter().position(|&i| i != 2).unwrap();
    let down = custodians[d];
    let down_key = submitted.custodians[d].to_string();
    c.kill(down);
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    {
        let vault = Vault::open_dir(&c.data_dir(down).join("vault"), VaultConfig::default()).unwrap();
        for r in &erased {
            let replica = vault.replica(&r.rid).unwrap();
            secrets.push(replica.dk.expose().to_vec());
            secrets.push(replica.s.expose().to_vec());
        }
    }

    // Asked through node 2 (not the home custodian).
    let gw = Gateway::new(&c.urls[2], key.clone());
    let by_record = gw.erase(&Erase::Records(vec![erased[3].rid]), Some("purpose_achieved")).unwrap();
    let by_subject = gw.erase(&Erase::Subject(subjects[0].clone()), None).unwrap();
    let by_consent = gw.erase(&Erase::Subject(subjects[2].clone()), Some("consent_withdrawn")).unwrap();
    // Asked again while those run (a client retrying): refused, naming the open request.
    match gw.erase(&Erase::Records(vec![readings[1].rid, erased[3].rid]), None) {
        Err(GatewayError::Refused { status: 409, code, body, .. }) if code == "already_erasing" => {
            assert!(body["request"] == by_subject.as_str() || body["request"] == by_record.as_str(), "{body}");
        }
        other => panic!("an erasure overlapping an open one: {other:?}"),
    }
    assert_eq!(gw.erasures().unwrap()["erasures"].as_array().unwrap().len(), 3, "the refused request left no job");
    match Gateway::new(&c.urls[2], stranger.clone()).erase(&Erase::Records(vec![readings[1].rid]), None) {
        Err(GatewayError::Refused { status: 404, .. }) => {}
        other => panic!("another gateway naming a record being erased: {other:?}"),
    }
    c.wait_for("the custodians that are up to commit their receipts", MINUTE, |_| {
        [&by_record, &by_subject, &by_consent].iter().all(|id| {
            states(&gw.erasure(id).unwrap()).iter().all(|(who, state)| (state == "committed") == (*who != down_key))
        })
    });
    let status = gw.erasure(&by_subject).unwrap();
    assert_eq!(status["records"].as_array().unwrap().len(), 3, "{status}");
    assert_eq!(status["status"], "erasing");
    for r in status["records"].as_array().unwrap() {
        for cu in r["custodians"].as_array().unwrap() {
            if cu["custodian"] == down_key.as_str() {
                assert_eq!(cu["state"], "pending", "{status}");
                assert!(cu["last_error"].as_str().unwrap().contains("unreachable"), "{status}");
            } else {
                assert_eq!((&cu["state"], &cu["last_error"]), (&Value::from("committed"), &Value::Null), "{status}");
            }
        }
    }
    assert!(gw.certificates(&by_subject).unwrap().is_none(), "no certificate while a custodian has not erased");
    assert!(gw.certificates(&by_record).unwrap().is_none(), "no certificate while a custodian has not erased");
    assert!(gw.certificates(&by_consent).unwrap().is_none(), "no certificate while a custodian has not erased");
    // Another gateway cannot see the request.
    match Gateway::new(&c.urls[2], stranger).erasure(&by_subject) {
        Err(GatewayError::Refused { status: 404, .. }) => {}
        other => panic!("another gateway's view of the request: {other:?}"),
    }

    // The custodian comes back, is asked again, erases; then the certificates exist.
    c.start_node(down);
    let mut certificates: Vec<ErasureCertificate> = Vec::new();
    for (id, n, trigger) in [
        (&by_record, 1, ErasureTrigger::PurposeAchieved),
        (&by_subject, 3, ErasureTrigger::SubjectRequest),
        (&by_consent, 1, ErasureTrigger::ConsentWithdrawn),
    ] {
        c.wait_for("the certificates", MINUTE, |_| gw.certificates(id).unwrap().is_some());
        let certs = gw.certificates(id).unwrap().unwrap();
        assert_eq!(certs.len(), n);
        for cert in &certs {
            assert_eq!(cert.trigger, trigger);
            assert_eq!(cert.erasures.len(), replication, "one receipt per custodian");
            let checks = cert.verify(&genesis).unwrap();
            assert!(checks.len() > 2 * replication, "{checks:?}");
        }
        certificates.extend(certs);
    }
    let mut certified: Vec<RecordId> = certificates.iter().map(|c| c.record.rid).collect();
    let mut expected: Vec<RecordId> = erased.iter().map(|r| r.rid).collect();
    certified.sort();
    expected.sort();
    assert_eq!(certified, expected, "one certificate per erased record");
    // The shipped verifier agrees, offline and with the live challenge of every node.
    let file = c.dir.path().join("certificate.json");
    std::fs::write(&file, serde_json::to_string(&certificates[0]).unwrap()).unwrap();
    let genesis_path = c.genesis_path();
    let mut args = vec!["verify-erasure", "--genesis", genesis_path.to_str().unwrap()];
    for url in &c.urls {
        args.extend(["--live", url.as_str()]);
    }
    args.push(file.to_str().unwrap());
    let out = run_ok("cairn", &args);
    assert!(out.contains("not established"), "{out}");
    assert_eq!(out.matches("live: custodian").count(), replication, "{out}");
    // Control: the same challenge about a record that is kept finds it held.
    let mut about_kept = certificates[0].clone();
    let kept_stored = submitted.records.iter().find(|s| s.rid == kept[0].rid).unwrap();
    (about_kept.record.rid, about_kept.record.leaf) = (kept_stored.rid, kept_stored.leaf);
    match cairn_client::live::challenge(&genesis, &about_kept, &c.urls) {
        Err(cairn_client::live::LiveError::StillHeld(_)) => {}
        other => panic!("a kept record challenged: {other:?}"),
    }

    // Erased records are gone from every node; the others read back intact everywhere.
    for i in 0..4 {
        let g = Gateway::new(&c.urls[i], key.clone());
        for r in &erased {
            match g.record(&r.rid, "TREAT") {
                Err(GatewayError::Refused { status: 404, .. }) => {}
                other => panic!("erased record {} read through node {i}: {other:?}", r.rid),
            }
        }
        for r in &kept {
            let answer = g.record(&r.rid, "TREAT").unwrap();
            assert_eq!(answer["record"]["resource"]["note"][0]["text"], r.canary.as_str());
        }
    }

    // Forensic scan of every node's whole data directory, nodes stopped.
    for i in 0..4 {
        c.kill(i);
    }
    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..4 {
        for p in files(c.data_dir(i)) {
            haystacks.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    let mut needles: Vec<Vec<u8>> = erased.iter().map(|r| r.canary.as_bytes().to_vec()).collect();
    needles.extend(secrets.iter().cloned());
    needles.extend(secrets.iter().map(|s| hex::encode(s).into_bytes()));
    let (hits, scanned) = scan(&haystacks, &needles);
    eprintln!("scanned {} files, {scanned} bytes, for {} needles", haystacks.len(), needles.len());
    assert!(haystacks.iter().any(|(n, _)| n.contains("vault")) && scanned > 100_000, "the scan covers the vaults");
    assert!(hits.is_empty(), "an erased record's content or keys remain: {hits:?}");
    // Control: the same scan finds the canaries where they are (the submitted body).
    let (found, _) = scan(&[("body".into(), body.into_bytes())], &needles);
    assert_eq!(found.len(), erased.len());

    // The residue audit of every node finds nothing; the coordinator knows the ids.
    for i in 0..4 {
        let out = run_ok("cairn-node", &["audit", "residue", "--config", c.configs[i].to_str().unwrap()]);
        assert!(out.contains("found: nothing"), "node {i}: {out}");
        let custodian = custodians.contains(&i);
        let erased_here = if custodian { erased.len() } else { 0 };
        assert!(out.contains(&format!("records this node erased as a custodian: {erased_here}\n")), "node {i}: {out}");
        if i == 2 {
            assert!(
                out.contains(&format!("certified erased by erasures this node coordinated: {}\n", erased.len())),
                "{out}"
            );
        }
    }
    // Control: a file left in the data directory naming an erased record is found.
    let leftover = c.data_dir(2).join("export.csv");
    std::fs::write(&leftover, format!("rid\n{}\n", erased[0].rid)).unwrap();
    let out = cairn_tests::run("cairn-node", &["audit", "residue", "--config", c.configs[2].to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&format!("export.csv contains erased record id {}", erased[0].rid)), "{text}");
}

#[test]
fn two_custodians_erase_by_record_and_by_subject_with_one_down() {
    erase_with_custodians(2, 25000);
}

#[test]
fn three_custodians_erase_by_record_and_by_subject_with_one_down() {
    erase_with_custodians(3, 25300);
}

/// The ids of this gateway's erasures at a node that are certified.
fn certified(g: &Gateway) -> Vec<String> {
    let list = g.erasures().unwrap();
    list["erasures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "certified")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn retention_expiry_erases_on_its_own_and_a_legal_hold_stops_it() {
    let mut c = Cluster::layout(4, 25600, 100);
    c.edit_configs("retention_sweep_ms = 60000", "retention_sweep_ms = 300");
    let clock = c.dir.path().join("clock");
    std::fs::write(&clock, now_ms().to_string()).unwrap();
    c.env.push((cairn_node::records::erasure::TEST_CLOCK_ENV.into(), clock.display().to_string()));
    c.start_all();
    c.wait_ready();
    let (_, key) = c.register_gateway("shoe");
    let genesis = c.genesis();
    let gw = Gateway::new(&c.urls[1], key.clone());
    let subject = format!("Patient/r-{}", random_hex(6));
    let canaries: Vec<String> = (0..3).map(|_| format!("canary-{}", random_hex(12))).collect();
    let body: String = canaries.iter().enumerate().map(|(i, k)| observation(&subject, i as u64, k) + "\n").collect();
    let submitted = gw.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 1, None).unwrap();
    let rids: Vec<RecordId> = submitted.records.iter().map(|r| r.rid).collect();
    assert!(gw.receipts(&rids, 30_000).unwrap().iter().all(Option::is_some), "every record anchored");
    // The first custodian of the manifest sweeps for these records.
    let sweeper = Gateway::new(&c.urls[c.index_of(&submitted.custodians[0])], key.clone());
    assert_eq!(gw.hold(&Erase::Records(vec![rids[1]]), true).unwrap(), 1, "one record held");
    let s = c.index_of(&submitted.custodians[0]);
    let sweeps = |c: &Cluster| c.metric(s, "cairn_retention_sweeps_total").unwrap();
    let before = sweeps(&c);
    c.wait_for("two more retention sweeps", MINUTE, |c| sweeps(c) >= before + 2.0);
    assert_eq!(
        sweeper.erasures().unwrap()["erasures"],
        serde_json::json!([]),
        "nothing erased before the retention ends"
    );

    // Two days later by the nodes' retention clock: the one-day retention ran out.
    std::fs::write(&clock, (now_ms() + 2 * 86_400_000).to_string()).unwrap();
    c.wait_for("the retention erasure to be certified", MINUTE, |_| !certified(&sweeper).is_empty());
    let first = certified(&sweeper);
    assert_eq!(first.len(), 1, "one erasure for the expired records");
    let certs = sweeper.certificates(&first[0]).unwrap().unwrap();
    let mut erased: Vec<RecordId> = certs.iter().map(|c| c.record.rid).collect();
    erased.sort();
    let mut expected = vec![rids[0], rids[2]];
    expected.sort();
    assert_eq!(erased, expected, "the held record is not erased");
    for cert in &certs {
        assert_eq!(cert.trigger, ErasureTrigger::RetentionExpired);
        cert.verify(&genesis).unwrap();
    }
    for (i, url) in c.urls.iter().enumerate() {
        let g = Gateway::new(url, key.clone());
        let held = g.record(&rids[1], "TREAT").unwrap();
        assert_eq!(held["record"]["resource"]["note"][0]["text"], canaries[1].as_str(), "node {i}");
        for rid in &expected {
            assert!(matches!(g.record(rid, "TREAT"), Err(GatewayError::Refused { status: 404, .. })), "node {i}");
        }
    }

    // Lifting the hold lets the retention erase the last record too.
    assert_eq!(gw.hold(&Erase::Records(vec![rids[1]]), false).unwrap(), 1);
    c.wait_for("the second retention erasure", MINUTE, |_| certified(&sweeper).len() == 2);
    let second: Vec<String> = certified(&sweeper).into_iter().filter(|id| *id != first[0]).collect();
    let certs = sweeper.certificates(&second[0]).unwrap().unwrap();
    assert_eq!(certs.iter().map(|c| c.record.rid).collect::<Vec<_>>(), vec![rids[1]]);
    certs[0].verify(&genesis).unwrap();
}
