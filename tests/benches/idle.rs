//! Idle chain benchmark (issue 17, ADR 019): what a consortium with nothing to commit
//! stores per day, and how long the first reading after a quiet spell waits for its
//! receipt.
//!
//! `cargo bench -p cairn-tests --bench idle -- [IDLE_BLOCK_MS] [QUIET_SECONDS] [BLOCK_INTERVAL_MS]`
//! (defaults 60000, 120, 500; `IDLE_BLOCK_MS` 0 is the behaviour before issue 17: an
//! empty block at every interval).
//!
//! Four validators start on this machine; after one transaction (the gateway's
//! registration) the chain is left alone for `QUIET_SECONDS`. Heights decided and bytes
//! added under the four data directories in that time are scaled to a day. Then one
//! reading is submitted and its receipt long-polled: the time from sending to the
//! receipt is the first-reading latency. Three quiet spells, three readings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_client::gateway::{BodyFormat, Gateway};
use cairn_tests::bench;
use cairn_tests::cluster::Cluster;
use cairn_tests::fixtures::observation;

/// Bytes in the files under `dir` (their lengths, as `du --apparent-size`): all, and
/// without the node's log. Files that vanish while counted are skipped.
fn bytes_under(dir: &Path) -> (u64, u64) {
    let (mut all, mut logs) = (0, 0);
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::metadata(&p) else { continue };
            if m.is_dir() {
                dirs.push(p);
            } else {
                all += m.len();
                if p.extension().is_some_and(|x| x == "log") {
                    logs += m.len();
                }
            }
        }
    }
    (all, all - logs)
}

fn main() {
    let args = bench::args();
    let idle_ms: u64 = bench::arg(&args, 0, 60_000);
    let quiet: u64 = bench::arg(&args, 1, 120);
    let interval: u64 = bench::arg(&args, 2, 500);
    println!(
        "idle bench: 4 validators, block interval {interval} ms, idle_block_ms {idle_ms}, quiet spells of {quiet} s"
    );
    let mut c = Cluster::layout(4, 29900, interval);
    c.edit_configs(&format!("idle_block_ms = {}", Cluster::IDLE_BLOCK_MS), &format!("idle_block_ms = {idle_ms}"));
    c.start_all();
    c.wait_ready();
    let (_, key) = c.register_gateway("idle-bench");
    let gateway = Gateway::new(&c.urls[1], key);
    let height = |c: &Cluster| (0..4).filter_map(|i| c.height(i)).max().unwrap_or(0);
    let size = |c: &Cluster| (0..4).map(|i| bytes_under(c.data_dir(i))).fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    for spell in 1..=3 {
        let (h0, b0, t0) = (height(&c), size(&c), Instant::now());
        // A quiet spell is the measurement itself: nothing to wait for but the clock.
        while t0.elapsed() < Duration::from_secs(quiet) {
            std::thread::sleep(Duration::from_millis(500));
        }
        let secs = t0.elapsed().as_secs_f64();
        let (h1, b1) = (height(&c), size(&c));
        let per_day = 86_400.0 / secs;
        let body = observation("Patient/idle-bench", spell, "quiet");
        let sent = Instant::now();
        let answer = gateway.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None).unwrap();
        let receipt = gateway.receipt(&answer.records[0].rid, 30_000).unwrap().expect("a receipt");
        let waited = sent.elapsed();
        receipt.verify(&c.genesis()).unwrap();
        println!(
            "RESULT spell={spell} idle_block_ms={idle_ms} quiet_s={secs:.0} heights={} heights_per_day={:.0} bytes_4_nodes={} bytes_per_node_per_day={:.0} without_logs_per_node_per_day={:.0} first_reading_receipt_ms={:.0}",
            h1 - h0,
            (h1 - h0) as f64 * per_day,
            b1.0.saturating_sub(b0.0),
            b1.0.saturating_sub(b0.0) as f64 / 4.0 * per_day,
            b1.1.saturating_sub(b0.1) as f64 / 4.0 * per_day,
            waited.as_secs_f64() * 1000.0
        );
    }
}
