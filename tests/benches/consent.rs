//! Consent checks on the read path (issue 15): reads per second of one record with and
//! without a consent decision, in the same run, on a 4-validator consortium of real
//! processes; and what a revocation costs until every node refuses.
//!
//! `cargo bench -p cairn-tests --bench consent -- [SECONDS_PER_PHASE] [CLIENTS]`
//!
//! - *without*: the gateway reads its own record, `GET /v1/records/{rid}?purpose=TREAT`
//!   (signature, policy check, the vault);
//! - *with*: the hospital reads the same record through the patient's consent,
//!   `GET /v1/access/records/{rid}?purpose=TREAT&basis=C` (the same, plus gathering the
//!   subject's documents from f other validators and the decision);
//! - *revocation*: a consent given and revoked 20 times; the time of the revocation's
//!   `POST` and until each of the four nodes refuses a read through it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cairn_client::consent::{ConsentSpec, DocumentFile, binding_json, consent_json, revocation_json};
use cairn_client::gateway::{BodyFormat, Gateway, GatewayError};
use cairn_proto::consent::{DocumentKind, PersonRole, Subject};
use cairn_proto::{Keypair, SecretSeed};
use cairn_tests::bench::{self, percentile_ms};
use cairn_tests::cluster::Cluster;

fn person(b: u8) -> Keypair {
    Keypair::from_seed(&SecretSeed::from_bytes([b; 32]))
}

/// Runs `read` from `clients` threads for `seconds`; returns reads and sorted latencies.
fn phase(clients: usize, seconds: u64, read: &(dyn Fn(usize) -> bool + Sync)) -> (usize, Vec<Duration>) {
    let stop = AtomicBool::new(false);
    let count = AtomicUsize::new(0);
    let mut latencies = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|i| {
                let (stop, count) = (&stop, &count);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    while !stop.load(Relaxed) {
                        let t = Instant::now();
                        assert!(read(i), "a read failed");
                        mine.push(t.elapsed());
                        count.fetch_add(1, Relaxed);
                    }
                    mine
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Relaxed);
        for w in workers {
            latencies.extend(w.join().unwrap());
        }
    });
    latencies.sort();
    (count.load(Relaxed), latencies)
}

fn main() {
    let args = bench::args();
    let seconds: u64 = bench::arg(&args, 0, 20);
    let clients: usize = bench::arg(&args, 1, 16);
    println!("consent bench: 4 validators, {clients} clients, {seconds} s per phase");
    let c = Cluster::start(4, 28500, 200);
    c.wait_ready();
    let (_, gw_key) = c.register_gateway("bench-gw");
    let (_, hospital_key) = c.register("bench-hospital", 1, "accessor");
    let chain = c.genesis().hash().unwrap();
    let gw = Gateway::new(&c.urls[0], gw_key.clone());
    let subject = Subject { gateway: gw_key.public().key_id(), reference: "Patient/bench".into() };
    let body = cairn_tests::fixtures::observation("Patient/bench", 1, "bench");
    let rid = gw.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None).unwrap().records[0].rid;
    let patient = person(77);
    let mut file = DocumentFile::new(
        DocumentKind::SubjectBinding,
        subject.clone(),
        binding_json(patient.public(), PersonRole::Patient).unwrap(),
    )
    .unwrap();
    file.sign(&chain, &gw_key).unwrap();
    gw.give(&file).unwrap();
    let now = cairn_proto::time::now_ms();
    let consent = |hours: u64| {
        let ts = |ms: u64| jiff::Timestamp::from_millisecond(ms as i64).unwrap().to_string();
        let json = consent_json(&ConsentSpec {
            subject: subject.reference.clone(),
            organisation: "org1".into(),
            purposes: vec!["TREAT".into()],
            categories: Vec::new(),
            start: ts(now - 3_600_000),
            end: ts(now + hours * 3_600_000),
            data_start: None,
            data_end: None,
            deny_purposes: Vec::new(),
        })
        .unwrap();
        let mut f = DocumentFile::new(DocumentKind::Consent, subject.clone(), json).unwrap();
        f.sign(&chain, &patient).unwrap();
        f
    };
    let as_patient = Gateway::new(&c.urls[0], patient.clone());
    let basis = as_patient.give(&consent(24)).unwrap().id;

    let gateways: Vec<Gateway> = (0..clients).map(|i| Gateway::new(&c.urls[i % 4], gw_key.clone())).collect();
    let hospitals: Vec<Gateway> = (0..clients).map(|i| Gateway::new(&c.urls[i % 4], hospital_key.clone())).collect();
    let mut rows = Vec::new();
    for (name, read) in [
        (
            "without consent check (gateway's own read)",
            &(|i: usize| gateways[i].record_bytes(&rid, "TREAT").is_ok()) as &(dyn Fn(usize) -> bool + Sync),
        ),
        ("with consent check (hospital through the consent)", &|i: usize| {
            hospitals[i].access("TREAT", &basis, Some(&rid)).is_ok()
        }),
    ] {
        let (n, lat) = phase(clients, seconds, read);
        let rate = n as f64 / seconds as f64;
        println!(
            "{name}: {n} reads in {seconds} s = {rate:.0} reads/s; latency p50 {:.1} ms, p99 {:.1} ms",
            percentile_ms(&lat, 0.5),
            percentile_ms(&lat, 0.99)
        );
        rows.push(rate);
    }
    println!("ratio with/without: {:.2}", rows[1] / rows[0]);

    // Revocations: the POST's latency, then until every node refuses.
    let hospital_at: Vec<Gateway> = c.urls.iter().map(|u| Gateway::new(u, hospital_key.clone())).collect();
    let (mut posts, mut everywhere) = (Vec::new(), Vec::new());
    for k in 0..20 {
        let id = as_patient.give(&consent(25 + k)).unwrap().id;
        assert!(hospital_at[3].access("TREAT", &id, Some(&rid)).is_ok());
        let mut r = DocumentFile::new(DocumentKind::Revocation, subject.clone(), revocation_json(id).unwrap()).unwrap();
        r.sign(&chain, &patient).unwrap();
        let at = Gateway::new(&c.urls[k as usize % 4], patient.clone());
        let t = Instant::now();
        at.give(&r).unwrap();
        posts.push(t.elapsed());
        for h in &hospital_at {
            match h.access("TREAT", &id, Some(&rid)) {
                Err(GatewayError::Refused { status: 403, code, .. }) if code == "revoked" => {}
                other => panic!("a node still reads through a revoked consent: {other:?}"),
            }
        }
        everywhere.push(t.elapsed());
    }
    posts.sort();
    everywhere.sort();
    println!(
        "revocation: POST p50 {:.1} ms, p99 {:.1} ms; refused at all 4 nodes after p50 {:.1} ms, max {:.1} ms (20 revocations)",
        percentile_ms(&posts, 0.5),
        percentile_ms(&posts, 0.99),
        percentile_ms(&everywhere, 0.5),
        percentile_ms(&everywhere, 1.0)
    );
}
