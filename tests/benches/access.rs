//! The cost of the access log (issue 16): reads per second of one record through a
//! consent with the access event written (the ordinary build) and without it (a build
//! with the `bench-unlogged` feature, made by this run), each on a 4-validator
//! consortium of real processes; and the on-chain bytes of `AccessEvents` batch
//! commitments per thousand reads.
//!
//! `cargo bench -p cairn-tests --bench access -- [SECONDS_PER_PHASE] [CLIENTS] [RUNS]`
//!
//! The two builds alternate `RUNS` times (default 3) in one process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cairn_client::consent::{ConsentSpec, DocumentFile, binding_json, consent_json};
use cairn_client::gateway::{BodyFormat, Gateway};
use cairn_proto::consensus::CertifiedBlock;
use cairn_proto::consent::{DocumentKind, PersonRole, Subject};
use cairn_proto::ledger::BatchKind;
use cairn_proto::transaction::Transaction;
use cairn_proto::{Keypair, SecretSeed};
use cairn_tests::bench::{self, percentile_ms};
use cairn_tests::cluster::Cluster;

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

/// bcs bytes of the `AccessEvents` batch commitments in blocks `from..=to` of node 0.
fn access_bytes(c: &Cluster, from: u64, to: u64) -> (usize, usize) {
    let (mut bytes, mut batches) = (0, 0);
    for h in from..=to {
        let (status, body) =
            cairn_client::http::request("GET", &format!("{}/v1/blocks/{h}", c.urls[0]), "", &[]).unwrap();
        assert_eq!(status, 200);
        let block: CertifiedBlock = serde_json::from_slice(&body).unwrap();
        for tx in &block.block.transactions {
            if let Transaction::BatchCommit(b) = tx
                && b.body.kind == BatchKind::AccessEvents
            {
                bytes += cairn_proto::encoding::encode(tx).unwrap().len();
                batches += 1;
            }
        }
    }
    (bytes, batches)
}

/// One consortium with `binary` as its node: reads/s, p50, p99, and the access-event
/// bytes on chain per thousand reads.
fn run(name: &str, binary: Option<PathBuf>, port: u16, seconds: u64, clients: usize) -> f64 {
    let mut c = Cluster::layout(4, port, 200);
    c.node_binary = binary;
    c.start_all();
    c.wait_ready();
    let (_, gw_key) = c.register_gateway("bench-gw");
    let (_, hospital_key) = c.register("bench-hospital", 1, "accessor");
    let chain = c.genesis().hash().unwrap();
    let gw = Gateway::new(&c.urls[0], gw_key.clone());
    let subject = Subject { gateway: gw_key.public().key_id(), reference: "Patient/bench".into() };
    let body = cairn_tests::fixtures::observation("Patient/bench", 1, "bench");
    let rid = gw.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None).unwrap().records[0].rid;
    let patient = Keypair::from_seed(&SecretSeed::from_bytes([77; 32]));
    let mut file = DocumentFile::new(
        DocumentKind::SubjectBinding,
        subject.clone(),
        binding_json(patient.public(), PersonRole::Patient).unwrap(),
    )
    .unwrap();
    file.sign(&chain, &gw_key).unwrap();
    gw.give(&file).unwrap();
    let now = cairn_proto::time::now_ms();
    let ts = |ms: u64| jiff::Timestamp::from_millisecond(ms as i64).unwrap().to_string();
    let json = consent_json(&ConsentSpec {
        subject: subject.reference.clone(),
        organisation: "org1".into(),
        purposes: vec!["TREAT".into()],
        categories: Vec::new(),
        start: ts(now - 3_600_000),
        end: ts(now + 24 * 3_600_000),
        data_start: None,
        data_end: None,
        deny_purposes: Vec::new(),
    })
    .unwrap();
    let mut f = DocumentFile::new(DocumentKind::Consent, subject.clone(), json).unwrap();
    f.sign(&chain, &patient).unwrap();
    let basis = Gateway::new(&c.urls[0], patient.clone()).give(&f).unwrap().id;
    let hospitals: Vec<Gateway> = (0..clients).map(|i| Gateway::new(&c.urls[i % 4], hospital_key.clone())).collect();
    // Warm up (the first read makes the subject's log key).
    assert!(hospitals[0].access("TREAT", &basis, Some(&rid)).is_ok());
    let from = c.height(0).unwrap() + 1;
    let (n, lat) = phase(clients, seconds, &|i: usize| hospitals[i].access("TREAT", &basis, Some(&rid)).is_ok());
    // Every batch of the phase committed: two more blocks after the anchor interval.
    let end = c.height(0).unwrap() + 3;
    c.wait_for("the phase's batches committed", Duration::from_secs(30), |c| c.height(0).is_some_and(|h| h >= end));
    let (bytes, batches) = access_bytes(&c, from, end);
    let rate = n as f64 / seconds as f64;
    println!(
        "{name}: {n} reads in {seconds} s = {rate:.0} reads/s; latency p50 {:.1} ms, p99 {:.1} ms; \
         AccessEvents on chain: {batches} batch commitments, {bytes} bytes = {:.0} bytes per 1000 reads",
        percentile_ms(&lat, 0.5),
        percentile_ms(&lat, 0.99),
        bytes as f64 * 1000.0 / n.max(1) as f64
    );
    rate
}

fn main() {
    let args = bench::args();
    let seconds: u64 = bench::arg(&args, 0, 20);
    let clients: usize = bench::arg(&args, 1, 16);
    let runs: usize = bench::arg(&args, 2, 3);
    eprintln!("building cairn-node with the bench-unlogged feature (the comparison build)…");
    let unlogged = cairn_tests::node_variant("bench-unlogged", "cairn-node-unlogged");
    println!("access-log bench: 4 validators, {clients} clients, {seconds} s per phase, one record through a consent");
    for r in 1..=runs {
        let logged = run(&format!("run {r}, access event written (ordinary build)"), None, 28600, seconds, clients);
        let without = run(
            &format!("run {r}, no access event (bench-unlogged build)"),
            Some(unlogged.clone()),
            29000,
            seconds,
            clients,
        );
        println!("run {r}: ratio logged/unlogged {:.2}", logged / without);
    }
}
