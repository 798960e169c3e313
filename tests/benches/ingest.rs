//! Ingestion benchmark: readings per second from the HTTP request to a final receipt, on
//! a 4-validator consortium of real processes on this machine.
//!
//! `cargo bench -p cairn-tests --bench ingest -- [READINGS_PER_REQUEST] [TOTAL] [BLOCK_INTERVAL_MS] [SUBMITTERS]`
//! (over HTTPS; with `CAIRN_BENCH_PLAINTEXT=1`, over plain HTTP)
//!
//! Submitter threads send signed `POST /v1/readings` as fast as they can, spread over the
//! four validators (each a home custodian replicating to one other). A pool of waiter
//! threads long-polls `GET /v1/records/{rid}/receipt?wait_ms=` for the first record of
//! every request (of every 10th request when each holds one reading): the records of a
//! request are queued together and anchored in the same batch, so that receipt's time is
//! the request's. Latency is from sending the request to the receipt being served;
//! throughput is all readings over the time from the first request to the last receipt.
//! At the end every record's receipt is fetched and verified offline.
//!
//! Besides throughput and latency the `RESULT` line gives the four nodes' CPU time (user
//! and system, from `/proc/<pid>/stat`) per reading and per request over the ingest
//! phase, instructions per reading where `perf stat` can count them, and the throughput
//! of each fifth of the run by acknowledgements (flat cost: the last fifth against the
//! first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cairn_client::gateway::{BodyFormat, Gateway, GatewayError};
use cairn_proto::record::RecordId;
use cairn_tests::bench::{self, CpuMeter, fifth_rates, percentile_ms};
use cairn_tests::cluster::Cluster;

fn observation(i: usize) -> String {
    format!(
        r#"{{"resourceType":"Observation","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"55423-8"}}]}},"subject":{{"reference":"Patient/bench-{}"}},"effectivePeriod":{{"start":"2026-11-22T10:00:00Z","end":"2026-11-22T10:05:00Z"}},"valueQuantity":{{"value":{},"unit":"steps"}},"component":[{{"code":{{"text":"Walking cadence"}},"valueQuantity":{{"value":101.5,"unit":"steps/min"}}}}]}}"#,
        i % 500,
        i % 20_000
    )
}

fn main() {
    let args = bench::args();
    let per_request: usize = bench::arg(&args, 0, 100);
    let total: usize = bench::arg(&args, 1, 100_000);
    let interval: u64 = bench::arg(&args, 2, 200);
    let submitters: usize = bench::arg(&args, 3, 8);
    let requests = total / per_request;
    let sample_every = if per_request == 1 { 10 } else { 1 };
    println!(
        "ingest bench: 4 validators, block interval {interval} ms, {} readings in {requests} requests of {per_request}, {submitters} submitters",
        requests * per_request
    );
    // HTTPS as nodes serve it; CAIRN_BENCH_PLAINTEXT=1 measures plain HTTP for comparison.
    let plaintext = std::env::var_os("CAIRN_BENCH_PLAINTEXT").is_some();
    let mut c = Cluster::layout(4, 28700, interval);
    if plaintext {
        c.use_plaintext();
    }
    c.start_all();
    println!("transport: {}", if plaintext { "plain HTTP" } else { "HTTPS (TLS 1.3, rustls)" });
    c.wait_ready();
    let (_, key) = c.register_gateway("bench");
    let gateways: Vec<Gateway> = c.urls.iter().map(|u| Gateway::new(u, key.clone())).collect();
    let bodies: Vec<String> = (0..requests)
        .map(|r| (0..per_request).map(|k| observation(r * per_request + k)).collect::<Vec<_>>().join("\n"))
        .collect();

    let (probe_tx, probe_rx) = mpsc::channel::<(usize, RecordId, Instant)>();
    let probe_rx = Arc::new(Mutex::new(probe_rx));
    let finals: Arc<Mutex<Vec<(Duration, Instant)>>> = Arc::default();
    let acks: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let acked_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let all_rids: Arc<Mutex<Vec<(usize, RecordId)>>> = Arc::default();
    let (next, busy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let pids: Vec<u32> = (0..4).filter_map(|i| c.pid(i)).collect();
    assert_eq!(pids.len(), 4, "four node processes to measure");
    let meter = CpuMeter::start(&pids);
    let start = Instant::now();
    std::thread::scope(|s| {
        let mut waiters = Vec::new();
        for _ in 0..48 {
            let (rx, gateways, finals) = (probe_rx.clone(), &gateways, finals.clone());
            waiters.push(s.spawn(move || {
                loop {
                    let Ok((node, rid, sent)) = rx.lock().unwrap().recv() else { return };
                    loop {
                        match gateways[node].receipt(&rid, 10_000) {
                            Ok(Some(_)) => break,
                            Ok(None) => {}
                            Err(e) => panic!("receipt of {rid}: {e}"),
                        }
                    }
                    let now = Instant::now();
                    finals.lock().unwrap().push((now.duration_since(sent), now));
                }
            }));
        }
        let mut senders = Vec::new();
        for t in 0..submitters {
            let (next, busy, bodies, gateways) = (next.clone(), busy.clone(), &bodies, &gateways);
            let (probe_tx, acks, all_rids) = (probe_tx.clone(), acks.clone(), all_rids.clone());
            let acked_at = acked_at.clone();
            senders.push(s.spawn(move || {
                loop {
                    let r = next.fetch_add(1, Relaxed);
                    let Some(body) = bodies.get(r) else { return };
                    let node = (r + t) % 4;
                    let sent = Instant::now();
                    let answer = loop {
                        match gateways[node].submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None) {
                            Ok(a) => break a,
                            Err(GatewayError::Refused { status: 429, .. }) => {
                                busy.fetch_add(1, Relaxed);
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Err(e) => panic!("submission refused: {e}"),
                        }
                    };
                    acks.lock().unwrap().push(sent.elapsed());
                    acked_at.lock().unwrap().push(Instant::now());
                    if r % sample_every == 0 {
                        probe_tx.send((node, answer.records[0].rid, sent)).unwrap();
                    }
                    all_rids.lock().unwrap().extend(answer.records.iter().map(|x| (node, x.rid)));
                }
            }));
        }
        drop(probe_tx);
        let mut last = Instant::now();
        while senders.iter().any(|h| !h.is_finished()) {
            if last.elapsed() > Duration::from_secs(2) {
                last = Instant::now();
                let done = acks.lock().unwrap().len() * per_request;
                println!(
                    "  {done:>7} readings acknowledged, {:>5} requests final, {:.0} readings/s",
                    finals.lock().unwrap().len(),
                    done as f64 / start.elapsed().as_secs_f64()
                );
            }
            assert!(start.elapsed() < Duration::from_secs(900), "benchmark did not finish in 15 minutes");
            std::thread::sleep(Duration::from_millis(50));
        }
        for h in senders {
            h.join().unwrap();
        }
        for h in waiters {
            h.join().unwrap();
        }
    });
    let (cpu_us, instructions) = meter.stop();
    let finals = finals.lock().unwrap();
    let last_final = finals.iter().map(|(_, t)| *t).max().unwrap();
    let secs = last_final.duration_since(start).as_secs_f64();
    let mut lat: Vec<Duration> = finals.iter().map(|(d, _)| *d).collect();
    lat.sort();
    let mut acks = acks.lock().unwrap().clone();
    acks.sort();
    let readings = requests * per_request;
    let fifths = fifth_rates(start, &mut acked_at.lock().unwrap(), per_request);
    let fifth_text = fifths.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join("/");
    let last_over_first = fifths.last().zip(fifths.first()).map_or(f64::NAN, |(l, f)| l / f);
    let per_reading = |x: u64| x as f64 / readings as f64;
    let instructions_text = instructions.map_or("n/a".to_string(), |i| format!("{:.0}", per_reading(i)));

    // Every record has a receipt that verifies offline.
    let genesis = c.genesis();
    let all = all_rids.lock().unwrap();
    let mut verified = 0;
    for (node, gateway) in gateways.iter().enumerate() {
        let rids: Vec<RecordId> = all.iter().filter(|(n, _)| *n == node).map(|(_, r)| *r).collect();
        for chunk in rids.chunks(1000) {
            for r in gateway.receipts(chunk, 10_000).unwrap() {
                r.expect("every record anchored").verify(&genesis).unwrap();
                verified += 1;
            }
            if verified % 100_000 < chunk.len() {
                println!("  {verified:>7} of {readings} receipts verified offline");
            }
        }
    }
    assert_eq!(verified, readings);
    println!(
        "RESULT per_request={per_request} interval={interval}ms submitters={submitters} readings={readings} seconds={secs:.1} readings_per_s={:.0} ack_p50_ms={:.0} ack_p99_ms={:.0} receipt_p50_ms={:.0} receipt_p99_ms={:.0} receipt_max_ms={:.0} busy_429={} verified={verified} node_cpu_us_per_reading={:.1} node_cpu_us_per_request={:.1} instructions_per_reading={instructions_text} fifth_rates={fifth_text} last_fifth_over_first={last_over_first:.2}",
        readings as f64 / secs,
        percentile_ms(&acks, 0.5),
        percentile_ms(&acks, 0.99),
        percentile_ms(&lat, 0.5),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0),
        busy.load(Relaxed),
        per_reading(cpu_us),
        cpu_us as f64 / requests as f64,
    );
}
