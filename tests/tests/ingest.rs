//! Gateway ingestion end to end on four real validator processes: readings in through the
//! `cairn` command, receipts verified offline, records read back, nothing personal in any
//! node's files outside the vault's ciphertext, refusals of bad requests, and the loss of
//! the receiving custodian after acknowledgement.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use cairn_proto::time::now_ms;
use std::time::Duration;

use cairn_client::gateway::{BodyFormat, Gateway, GatewayError};
use cairn_client::http::request_with;
use cairn_client::verify::verify_receipt;
use cairn_proto::encoding::encode;
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::record::RecordId;
use cairn_proto::request::RequestToSign;
use cairn_proto::{Keypair, SecretSeed};
use cairn_tests::cluster::Cluster;
use cairn_tests::fixtures::{files, observation, random_fill, random_hex, scan};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn ten_thousand_readings_through_the_cli() {
    let c = Cluster::start(4, 24000, 200);
    c.wait_ready();
    let (key_file, key) = c.register_gateway("shoe-hub");
    let genesis = c.genesis();

    // 10,000 readings of 50 subjects, each with a distinctive canary.
    let subjects: Vec<String> = (0..50).map(|i| format!("Patient/wearer-{i:02}-{}", random_hex(6))).collect();
    let canaries: Vec<String> = (0..10_000).map(|_| format!("canary-{}", random_hex(12))).collect();
    let lines: Vec<String> =
        canaries.iter().enumerate().map(|(i, k)| observation(&subjects[i % 50], i as u64, k)).collect();
    let input = c.dir.path().join("readings.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    let stored_file = c.dir.path().join("stored.jsonl");
    let out = cairn_tests::run(
        "cairn",
        &[
            "submit",
            "--node",
            &c.urls[0],
            "--key",
            key_file.to_str().unwrap(),
            "--purpose",
            "TREAT",
            "--retention-days",
            "30",
            "--out",
            stored_file.to_str().unwrap(),
            input.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stored 10000 readings in 100 requests"), "{stderr}");
    let stored: Vec<Value> =
        std::fs::read_to_string(&stored_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(stored.len(), 10_000);
    let rids: Vec<RecordId> = stored.iter().map(|v| v["rid"].as_str().unwrap().parse().unwrap()).collect();
    for (i, v) in stored.iter().enumerate() {
        assert_eq!(v["index"], i, "records come back in the order of the readings");
    }

    // Receipts through the CLI, verified offline by the CLI and by the library.
    let receipts_file = c.dir.path().join("receipts.jsonl");
    cairn_tests::run_ok(
        "cairn",
        &[
            "receipt",
            "--node",
            &c.urls[0],
            "--key",
            key_file.to_str().unwrap(),
            "--from",
            stored_file.to_str().unwrap(),
            "--out",
            receipts_file.to_str().unwrap(),
        ],
    );
    let verified = cairn_tests::run_ok(
        "cairn",
        &["verify-receipt", "--genesis", c.genesis_path().to_str().unwrap(), receipts_file.to_str().unwrap()],
    );
    assert!(verified.contains("ok: 10000 receipts verified"), "{verified}");
    let receipts: Vec<AnchorReceipt> =
        std::fs::read_to_string(&receipts_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(receipts.len(), 10_000);
    for ((r, rid), s) in receipts.iter().zip(&rids).zip(&stored) {
        assert_eq!(r.rid, *rid);
        assert_eq!(r.leaf.to_string(), s["leaf"].as_str().unwrap());
        verify_receipt(&genesis, r).unwrap();
    }
    // A receipt changed in one place no longer verifies.
    let mut forged = receipts[0].clone();
    forged.leaf_index ^= 1;
    assert!(verify_receipt(&genesis, &forged).is_err());
    let mut forged = receipts[1].clone();
    forged.commitment.0[0] ^= 1;
    assert!(verify_receipt(&genesis, &forged).is_err());

    // Every record reads back equal to what was sent, from the receiving node.
    let gw = Gateway::new(&c.urls[0], key.clone());
    for (i, rid) in rids.iter().enumerate() {
        let answer = gw.record(rid, "TREAT").unwrap();
        let sent: Value = serde_json::from_str(&lines[i]).unwrap();
        assert_eq!(answer["record"]["resource"], sent, "record {i}");
        assert_eq!(answer["record"]["subject"], subjects[i % 50]);
        assert_eq!(answer["served_by"], "custodian");
    }
    // Any node serves them (a non-custodian forwards to a custodian), with a receipt.
    for i in 1..4 {
        let gw = Gateway::new(&c.urls[i], key.clone());
        for k in [0, 4_321, 9_999] {
            let answer = gw.record(&rids[k], "TREAT").unwrap();
            assert_eq!(answer["record"]["resource"], serde_json::from_str::<Value>(&lines[k]).unwrap());
            let receipt: AnchorReceipt = serde_json::from_value(answer["receipt"].clone()).unwrap();
            verify_receipt(&genesis, &receipt).unwrap();
        }
    }

    // Nothing personal on chain: scan every block (bcs bytes, as served by each node) and
    // every file of every node except the vault for every subject reference, record id
    // (raw and hex) and payload canary.
    let height = (0..4).map(|i| c.height(i).unwrap()).min().unwrap();
    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    for h in 1..=height {
        let block = c.block(0, h);
        haystacks.push((format!("block {h}"), encode(&block).unwrap()));
        haystacks.push((format!("block {h} (JSON)"), serde_json::to_vec(&block).unwrap()));
    }
    for i in 0..4 {
        for p in files(c.data_dir(i)) {
            if p.components().any(|c| c.as_os_str() == "vault") || p.ends_with("node.log") {
                continue;
            }
            haystacks.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    let mut needles: Vec<Vec<u8>> = Vec::new();
    needles.extend(subjects.iter().map(|s| s.as_bytes().to_vec()));
    needles.extend(canaries.iter().map(|s| s.as_bytes().to_vec()));
    needles.extend(rids.iter().map(|r| r.0.to_vec()));
    needles.extend(rids.iter().map(|r| r.to_string().into_bytes()));
    let (hits, scanned) = scan(&haystacks, &needles);
    eprintln!("scanned {} items, {scanned} bytes, for {} needles", haystacks.len(), needles.len());
    assert!(scanned > 100_000, "the scan must cover the stores");
    assert!(hits.is_empty(), "personal data found outside the vault: {hits:?}");
    // Control: the same scan finds what is there (a canary in the readings file).
    let input_bytes = std::fs::read(&input).unwrap();
    let (found, _) = scan(&[("readings".into(), input_bytes)], &needles);
    assert!(found.len() >= 10_000, "the scan finds the canaries in the readings file");
}

#[allow(clippy::too_many_arguments)]
/// Sends a request signed by `key`, optionally naming another key id, at `timestamp_ms`.
fn signed(
    url: &str,
    target: &str,
    key: &Keypair,
    claimed: Option<cairn_proto::KeyId>,
    timestamp_ms: u64,
    content_type: &str,
    extra: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let full = format!("{url}{target}");
    let (path, query) = cairn_client::http::path_and_query(&full).unwrap();
    let nonce: [u8; 16] = {
        let mut n = [0u8; 16];
        random_fill(&mut n);
        n
    };
    let id = claimed.unwrap_or_else(|| key.public().key_id());
    let to = Gateway::new(url, key.clone()).identity().unwrap();
    let statement = RequestToSign::new(to.chain, to.node, "POST", path, query, body, id, timestamp_ms, nonce);
    let sig = statement.sign(key).unwrap();
    let all: Vec<(&str, String)> = statement.headers(&sig).into_iter().chain(extra.iter().cloned()).collect();
    let (status, answer) = request_with("POST", &full, content_type, &all, body).unwrap();
    (status, serde_json::from_slice(&answer).unwrap_or(Value::Null))
}

#[test]
fn refusals_then_losing_the_receiving_custodian() {
    let mut c = Cluster::start(4, 24300, 200);
    c.wait_ready();
    let (_, key) = c.register_gateway("gw");
    let genesis = c.genesis();
    let url = c.urls[0].clone();
    let target = "/v1/readings?purpose=TREAT&retention_days=7";
    let ndjson = "application/x-ndjson";
    let good = observation("Patient/r-1", 10, "c-good");
    let stored = |c: &Cluster| c.metric(0, "cairn_readings_total").unwrap();
    assert_eq!(stored(&c), 0.0);

    // Unsigned.
    let (s, b) = cairn_client::http::post(&format!("{url}{target}"), ndjson, good.as_bytes()).unwrap();
    let b: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, b["code"].as_str().unwrap()), (401, "unsigned"));
    assert_eq!(b["field"], "x-cairn-key");
    // Signed with another key than the one named (wrong key).
    let registered = key.public().key_id();
    let stranger = Keypair::from_seed(&SecretSeed::from_bytes([42; 32]));
    let (s, b) = signed(&url, target, &stranger, Some(registered), now_ms(), ndjson, &[], good.as_bytes());
    assert_eq!((s, b["code"].as_str().unwrap()), (401, "bad_signature"), "{b}");
    // Unknown gateway.
    let (s, b) = signed(&url, target, &stranger, None, now_ms(), ndjson, &[], good.as_bytes());
    assert_eq!((s, b["code"].as_str().unwrap()), (401, "unknown_key"), "{b}");
    // Stale timestamp (10 minutes old; the window is 5).
    let (s, b) = signed(&url, target, &key, None, now_ms() - 600_000, ndjson, &[], good.as_bytes());
    assert_eq!((s, b["code"].as_str().unwrap()), (401, "stale_timestamp"), "{b}");
    // Malformed JSON, invalid FHIR (per-item errors), an oversized body.
    let (s, b) = signed(&url, target, &key, None, now_ms(), ndjson, &[], b"{\"resourceType\": ");
    assert_eq!((s, b["code"].as_str().unwrap()), (422, "invalid_fhir"), "{b}");
    let (s, b) = signed(&url, target, &key, None, now_ms(), "application/fhir+json", &[], b"{not json");
    assert_eq!((s, b["code"].as_str().unwrap()), (400, "malformed_json"), "{b}");
    let bad_fhir = format!("{good}\n{}", good.replace("\"final\"", "\"done\""));
    let (s, b) = signed(&url, target, &key, None, now_ms(), ndjson, &[], bad_fhir.as_bytes());
    assert_eq!((s, b["code"].as_str().unwrap()), (422, "invalid_fhir"), "{b}");
    assert_eq!(
        b["items"],
        json!([{"index": 1, "field": "status", "message": "\"done\" is not an Observation status"}])
    );
    let huge = vec![b' '; 9 << 20];
    let (s, b) = signed(&url, target, &key, None, now_ms(), ndjson, &[], &huge);
    assert_eq!((s, b["code"].as_str().unwrap()), (413, "too_large"), "{b}");
    // Missing purpose.
    let (s, b) = signed(&url, "/v1/readings?retention_days=7", &key, None, now_ms(), ndjson, &[], good.as_bytes());
    assert_eq!((s, b["code"].as_str().unwrap(), b["field"].as_str().unwrap()), (400, "missing_purpose", "purpose"));
    assert_eq!(stored(&c), 0.0, "no refused request stored anything");

    // A replayed request: the same signed bytes twice; the second is refused.
    let full = format!("{url}{target}");
    let (path, query) = cairn_client::http::path_and_query(&full).unwrap();
    let to = Gateway::new(&url, key.clone()).identity().unwrap();
    let statement =
        RequestToSign::new(to.chain, to.node, "POST", path, query, good.as_bytes(), registered, now_ms(), [7; 16]);
    let headers: Vec<(&str, String)> = statement.headers(&statement.sign(&key).unwrap()).into_iter().collect();
    assert_eq!(request_with("POST", &full, ndjson, &headers, good.as_bytes()).unwrap().0, 200);
    let (s, b) = request_with("POST", &full, ndjson, &headers, good.as_bytes()).unwrap();
    let b: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, b["code"].as_str().unwrap()), (401, "replayed_request"));
    // The same signed bytes at each other validator: signed for node 0, refused there.
    for other in &c.urls[1..] {
        let elsewhere = format!("{other}{target}");
        let (s, b) = request_with("POST", &elsewhere, ndjson, &headers, good.as_bytes()).unwrap();
        let b: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!((s, b["code"].as_str().unwrap()), (401, "bad_signature"), "{other}");
    }
    // Node 0 restarts: the request is still a replay.
    c.kill(0);
    c.start_node(0);
    c.wait_for("node 0 back", std::time::Duration::from_secs(60), |c| c.height(0).is_some());
    let (s, b) = request_with("POST", &full, ndjson, &headers, good.as_bytes()).unwrap();
    let b: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, b["code"].as_str().unwrap()), (401, "replayed_request"), "after a restart");
    c.wait_ready();
    // Readings stored through any node; node 0's counter restarted from 0 after the one
    // reading it stored before.
    let stored = |c: &Cluster| 1.0 + (0..4).map(|i| c.metric(i, "cairn_readings_total").unwrap_or(0.0)).sum::<f64>();
    assert_eq!(stored(&c), 1.0);

    // Idempotency: a retried batch is a no-op with the same answer; the same key with
    // other content is refused.
    let gw = Gateway::new(&url, key.clone());
    let body = [observation("Patient/r-2", 1, "c-i1"), observation("Patient/r-2", 2, "c-i2")].join("\n");
    let first = gw.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 7, Some("batch-1")).unwrap();
    let again = gw.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 7, Some("batch-1")).unwrap();
    assert_eq!(first.records, again.records);
    // A gateway that fails over to another node with the same key gets the same answer.
    for other in &c.urls[1..] {
        let failover = Gateway::new(other, key.clone());
        let there = failover.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 7, Some("batch-1")).unwrap();
        assert_eq!(first.records, there.records, "{other}");
    }
    let other = observation("Patient/r-2", 3, "c-i3");
    match gw.submit(other.as_bytes(), BodyFormat::JsonLines, "TREAT", 7, Some("batch-1")) {
        Err(GatewayError::Refused { status: 422, code, .. }) => assert_eq!(code, "idempotency_key_reused"),
        other => panic!("expected 422 idempotency_key_reused, got {other:?}"),
    }
    assert_eq!(stored(&c), 3.0, "1 + 2 readings; the retry and the reuse stored nothing");
    // A read for another purpose (in the policy, not the one collected for) is refused;
    // the node kept serving throughout.
    match gw.record(&first.records[0].rid, "PUBHLTH") {
        Err(GatewayError::Refused { status: 403, code, .. }) => assert_eq!(code, "purpose_mismatch"),
        other => panic!("expected 403, got {other:?}"),
    }
    let doc: Value = cairn_client::http::get_json(&format!("{url}/v1/openapi.json")).unwrap();
    for path in doc["paths"].as_object().unwrap().keys() {
        let concrete = path
            .replace("{rid}", &first.records[0].rid.to_string())
            .replace("{height}", "1")
            .replace("{key_id}", &"0".repeat(32));
        let (s, b) = cairn_client::http::request("GET", &format!("{url}{concrete}"), "", &[]).unwrap();
        let text = String::from_utf8_lossy(&b);
        assert!(!text.contains("no such route"), "{path} in the OpenAPI document is not served ({s})");
    }

    // 300 readings acknowledged by node 0, then node 0 is killed at once.
    let mut acked = Vec::new();
    let mut sent = Vec::new();
    let mut custodians = Vec::new();
    for b in 0..3 {
        let lines: Vec<String> =
            (0..100).map(|i| observation(&format!("Patient/k-{b}"), i, &format!("k-{b}-{i}"))).collect();
        let answer = gw.submit(lines.join("\n").as_bytes(), BodyFormat::JsonLines, "TREAT", 7, None).unwrap();
        assert_eq!(answer.count, 100);
        acked.extend(answer.records.iter().map(|r| r.rid));
        sent.extend(lines);
        custodians = answer.custodians.clone();
    }
    let t = std::time::Instant::now();
    let before = c.height(1).unwrap();
    c.kill(0);
    assert_eq!(custodians.len(), 2);
    assert!(custodians.contains(&c.key(0).public().key_id()), "the receiving node is a custodian");
    let replica = custodians.iter().map(|k| c.index_of(k)).find(|i| *i != 0).unwrap();
    // Every acknowledged record is readable through every surviving node, and its
    // receipt (from the surviving custodian) verifies offline.
    for i in 1..4 {
        let gw = Gateway::new(&c.urls[i], key.clone());
        let receipts = gw.receipts(&acked, 30_000).unwrap();
        eprintln!("[{:>6.1}s] receipts from v{i}", t.elapsed().as_secs_f64());
        for ((rid, r), line) in acked.iter().zip(receipts).zip(&sent) {
            let r = r.unwrap_or_else(|| panic!("no receipt for {rid} from v{i}"));
            verify_receipt(&genesis, &r).unwrap();
            assert_eq!(r.batch.body.node, c.key(replica).public().key_id(), "anchored by the surviving custodian");
            if i == replica || rid.0[0] % 10 == 0 {
                let answer = gw.record(rid, "TREAT").unwrap();
                assert_eq!(answer["record"]["resource"], serde_json::from_str::<Value>(line).unwrap());
            }
        }
    }
    c.wait_for("the three others keep deciding", MINUTE, |c| c.height(1).unwrap_or(0) >= before + 3);
}

#[test]
fn dev_demo_shows_verified_receipts_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("demo.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = std::process::Command::new(cairn_tests::binary("cairn-node"))
        .args(["dev", "--demo", "--base-port", "24600", "--block-interval-ms", "200", "--dir"])
        .arg(dir.path().join("dev"))
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let verified = loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        // The receipts, then (once) a consented read by the hospital and a refused one.
        if text.contains("receipts verified offline") && text.contains("was refused") {
            break true;
        }
        if started.elapsed() > MINUTE || text.contains("demo stopped") {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();
    // SIGTERM stops the demo and every validator.
    std::process::Command::new("kill").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert!(verified, "no verified receipt and consent demo within a minute:\n{text}");
    assert!(text.contains("readings of wearer 0 at") && text.contains("for TREAT (consented)"), "{text}");
    assert!(text.contains("for HMARKT (marketing) was refused: 403 purpose_not_in_policy"), "{text}");
    eprintln!("first receipts verified after {:.1} s", elapsed.as_secs_f64());
    // What the demo wrote verifies with the shipped command too.
    let receipts = dir.path().join("dev/demo/receipts.jsonl");
    let genesis = dir.path().join("dev/genesis.toml");
    let checked = cairn_tests::run_ok(
        "cairn",
        &["verify-receipt", "--genesis", genesis.to_str().unwrap(), receipts.to_str().unwrap()],
    );
    assert!(checked.contains("receipts verified"), "{checked}");
}
