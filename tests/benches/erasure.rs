//! Erasure benchmark: records erased per second at every custodian, and the latency from
//! an erasure request to its certificate, on a 4-validator consortium of real processes.
//!
//! `cargo bench -p cairn-tests --bench erasure -- [RECORDS_PER_REQUEST] [REQUESTS] [BLOCK_INTERVAL_MS] [CLIENTS]`
//!
//! The records are stored first (100 per submission, spread over the four validators,
//! two custodians each) and anchored. Then `CLIENTS` threads send `POST /v1/erasures`,
//! each naming `RECORDS_PER_REQUEST` records, to the validators in turn, and poll
//! `GET /v1/erasures/{id}/certificate` every 20 ms until the certificates are served.
//! Latency is from sending the request to the certificates being served; throughput is
//! all records over the time from the first request to the last certificate. Every
//! certificate is verified offline at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::gateway::{BodyFormat, Erase, Gateway};
use cairn_proto::erasure::ErasureCertificate;
use cairn_proto::record::RecordId;
use cairn_tests::bench::{self, percentile_ms};
use cairn_tests::cluster::Cluster;
use cairn_tests::fixtures::observation;

/// A request's latency, when its certificates were served, and the certificates.
type Done = (Duration, Instant, Vec<ErasureCertificate>);

fn main() {
    let args = bench::args();
    let per_request: usize = bench::arg(&args, 0, 1);
    let requests: usize = bench::arg(&args, 1, 200);
    let interval: u64 = bench::arg(&args, 2, 100);
    let clients: usize = bench::arg(&args, 3, 8);
    let total = per_request * requests;
    println!(
        "erasure bench: 4 validators, block interval {interval} ms, {total} records erased in {requests} requests of {per_request}, {clients} clients"
    );
    let c = Cluster::start(4, 28900, interval);
    c.wait_ready();
    let (_, key) = c.register_gateway("bench");
    let gateways: Vec<Gateway> = c.urls.iter().map(|u| Gateway::new(u, key.clone())).collect();

    // Store and anchor the records.
    let mut rids: Vec<RecordId> = Vec::with_capacity(total);
    for (b, chunk) in (0..total).collect::<Vec<_>>().chunks(100).enumerate() {
        let body: String =
            chunk.iter().map(|i| observation(&format!("Patient/bench-{}", i % 500), *i as u64, "x") + "\n").collect();
        let stored = gateways[b % 4].submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None).unwrap();
        rids.extend(stored.records.iter().map(|r| r.rid));
    }
    for chunk in rids.chunks(1000) {
        assert!(gateways[0].receipts(chunk, 30_000).unwrap().iter().all(Option::is_some), "anchored");
    }
    println!("  {} records stored and anchored", rids.len());

    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Done>>> = Arc::default();
    let start = Instant::now();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..clients {
            let (next, results, gateways, rids) = (next.clone(), results.clone(), &gateways, &rids);
            handles.push(s.spawn(move || {
                loop {
                    let r = next.fetch_add(1, Relaxed);
                    if r >= requests {
                        return;
                    }
                    let g = &gateways[r % 4];
                    let which = rids[r * per_request..(r + 1) * per_request].to_vec();
                    let sent = Instant::now();
                    let id = g.erase(&Erase::Records(which), None).unwrap();
                    let certs = loop {
                        if let Some(certs) = g.certificates(&id).unwrap() {
                            break certs;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    };
                    let now = Instant::now();
                    results.lock().unwrap().push((now.duration_since(sent), now, certs));
                }
            }));
        }
        let mut last = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            if last.elapsed() > Duration::from_secs(2) {
                last = Instant::now();
                let done = results.lock().unwrap().len() * per_request;
                println!("  {done:>6} records certified erased, {:.1}/s", done as f64 / start.elapsed().as_secs_f64());
            }
            assert!(start.elapsed() < Duration::from_secs(900), "benchmark did not finish in 15 minutes");
            std::thread::sleep(Duration::from_millis(50));
        }
        for h in handles {
            h.join().unwrap();
        }
    });
    let results = results.lock().unwrap();
    let end = results.iter().map(|(_, t, _)| *t).max().unwrap();
    let secs = end.duration_since(start).as_secs_f64();
    let mut lat: Vec<Duration> = results.iter().map(|(d, _, _)| *d).collect();
    lat.sort();
    let genesis = c.genesis();
    let verified = results.iter().flat_map(|(_, _, certs)| certs).filter(|cert| cert.verify(&genesis).is_ok()).count();
    assert_eq!(verified, total, "every certificate verifies offline");
    println!(
        "RESULT records_per_request={per_request} requests={requests} clients={clients} block_ms={interval} \
         erasures_per_s={:.1} request_to_certificate_ms p50={:.0} p90={:.0} p99={:.0} max={:.0} certificates_verified={verified}",
        total as f64 / secs,
        percentile_ms(&lat, 0.5),
        percentile_ms(&lat, 0.9),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0)
    );
}
