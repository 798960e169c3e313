//! Ledger benchmark: finalized `BatchCommit` transactions per second and the time from
//! submission to finality, on a 4-validator consortium of real processes on this machine.
//!
//! `cargo bench -p cairn-tests --bench ledger -- [RATE_PER_S|max] [TOTAL] [BLOCK_INTERVAL_MS]`
//!
//! Four submitter threads, one per validator, post their validator's batches (sequence
//! 0, 1, ...) over HTTP to that validator at the given total rate (or as fast as they
//! can). A watcher follows validator 0's blocks; a transaction is final when the block
//! holding it is decided there (its commit certificate exists).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::Hash32;
use cairn_tests::bench;
use cairn_tests::cluster::{Cluster, batch};

fn main() {
    let args = bench::args();
    // A number of transactions per second, or "max".
    let rate: Option<f64> = args.first().and_then(|a| a.parse().ok());
    let total: u64 = bench::arg(&args, 1, 20_000);
    let interval: u64 = bench::arg(&args, 2, 200);
    let per_node = total / 4;
    println!(
        "ledger bench: 4 validators, block interval {interval} ms, {} transactions, rate {}",
        per_node * 4,
        rate.map_or("max".to_string(), |r| format!("{r}/s"))
    );
    let c = Arc::new(Cluster::start(4, 28500, interval));
    c.wait_for("first block", Duration::from_secs(60), |c| c.height(0).unwrap_or(0) >= 1);
    let submitted: Arc<Mutex<HashMap<Hash32, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let (c, submitted) = (c.clone(), submitted.clone());
            std::thread::spawn(move || {
                let key = c.key(n);
                let txs: Vec<_> = (0..per_node).map(|seq| batch(&key, seq)).collect();
                for (k, tx) in txs.iter().enumerate() {
                    if let Some(r) = rate {
                        let due = start + Duration::from_secs_f64(k as f64 * 4.0 / r);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let id = tx.id().unwrap();
                    submitted.lock().unwrap().insert(id, Instant::now());
                    loop {
                        let (status, body) = c.submit(n, tx);
                        match status {
                            202 => break,
                            503 => std::thread::sleep(Duration::from_millis(20)),
                            _ => panic!("submission refused: {status} {body}"),
                        }
                    }
                }
            })
        })
        .collect();

    // Follow validator 0's blocks.
    let mut latencies = Vec::new();
    let mut next = c.height(0).unwrap() + 1;
    let mut last_commit = start;
    let mut last_report = Instant::now();
    while (latencies.len() as u64) < per_node * 4 {
        let h = c.height(0).unwrap_or(0);
        while next <= h {
            let block = c.block(0, next);
            let now = Instant::now();
            let map = submitted.lock().unwrap();
            for tx in &block.block.transactions {
                if let Some(t) = map.get(&tx.id().unwrap()) {
                    latencies.push(now.duration_since(*t));
                    last_commit = now;
                }
            }
            next += 1;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            println!("  {:>6} of {} final, height {h}", latencies.len(), per_node * 4);
            last_report = Instant::now();
        }
        assert!(start.elapsed() < Duration::from_secs(600), "benchmark did not finish in 10 minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
    for t in threads {
        t.join().unwrap();
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    let secs = last_commit.duration_since(start).as_secs_f64();
    println!(
        "RESULT interval={interval}ms rate={} txs={} seconds={secs:.1} tx_per_s={:.0} p50_ms={:.0} p99_ms={:.0} max_ms={:.0}",
        rate.map_or("max".to_string(), |r| format!("{r}")),
        latencies.len(),
        latencies.len() as f64 / secs,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
