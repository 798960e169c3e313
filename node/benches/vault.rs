//! Vault throughput and latency on 256-byte readings, single thread, on a real sled
//! database and root slot file. Run: `cargo bench -p cairn-node --bench vault`
//! (optionally `-- --records N`). Results go to BENCHMARKS.md.

// A benchmark binary: a failed expectation ends it with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use cairn_node::vault::kv::{KvStore as _, SledStore, WriteBatch};
use cairn_node::vault::{NewRecord, Vault, VaultConfig};
use cairn_proto::KeyId;
use cairn_proto::record::{ContentType, Manifest, RecordId};

fn reading(i: u64) -> NewRecord {
    let mut payload = format!(
        r#"{{"resourceType":"Observation","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"41950-7"}}]}},"valueQuantity":{{"value":{i},"unit":"steps"}},"effectiveDateTime":"2026-11-22T10:00:00Z","note":""#
    );
    while payload.len() < 254 {
        payload.push('x');
    }
    payload.push_str("\"}");
    assert_eq!(payload.len(), 256);
    NewRecord {
        gateway: KeyId([7; 16]),
        content_type: ContentType::FhirObservationJson,
        purpose: "TREAT".into(),
        received_at_ms: 1,
        retain_until_ms: 2,
        subject: None,
        manifest: Manifest::new(vec![KeyId([1; 16]), KeyId([2; 16])]).unwrap(),
        payload: payload.into_bytes(),
    }
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:>10.0} records/s", n as f64 / d.as_secs_f64())
}

/// A small deterministic shuffle so erasures hit records all over the tree.
fn shuffle(ids: &mut [RecordId], mut seed: u64) {
    for i in (1..ids.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ids.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: usize = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
        .map_or(200_000, |n| n.parse().unwrap());
    let dir = tempfile::tempdir_in(
        std::env::var("CAIRN_BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )
    .unwrap();
    if let Some(n) = args.iter().position(|a| a == "--one-subject").and_then(|i| args.get(i + 1)) {
        one_subject(dir.path(), n.parse().unwrap());
        return;
    }
    let config = VaultConfig::default();
    println!(
        "vault benchmark: {records} records of 256 bytes, fanout {}, {} slots per bucket, data in {}",
        config.fanout,
        config.bucket_slots,
        dir.path().display()
    );
    let mut v = Vault::open_dir(dir.path(), config).unwrap();

    // put, in batches of 1000 (one fsync per batch); readings are built outside the clock
    let mut spent = Duration::ZERO;
    let mut ids = Vec::with_capacity(records);
    for chunk in 0..records / 1000 {
        let batch = (0..1000).map(|i| reading((chunk * 1000 + i) as u64)).collect();
        let t = Instant::now();
        ids.extend(v.put_batch(batch).unwrap().into_iter().map(|r| r.rid));
        spent += t.elapsed();
        if chunk % 50 == 49 {
            eprintln!("  put {} / {records}", ids.len());
        }
    }
    println!("put, batches of 1000:  {}", rate(ids.len(), spent));

    let mut spent = Duration::ZERO;
    for i in 0..1000 {
        let batch = (0..100).map(|j| reading(i * 100 + j)).collect();
        let t = Instant::now();
        ids.extend(v.put_batch(batch).unwrap().into_iter().map(|r| r.rid));
        spent += t.elapsed();
    }
    println!("put, batches of 100:   {}", rate(100_000, spent));

    let mut lat = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        ids.push(v.put(reading(i)).unwrap().rid);
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "put, one per call:     {}  (p50 {:?}, p99 {:?}; each call fsyncs)",
        rate(500, lat.iter().sum()),
        lat[250],
        lat[495]
    );

    // get, random order
    let mut order = ids.clone();
    shuffle(&mut order, 0x9e3779b97f4a7c15);
    let start = Instant::now();
    for rid in order.iter().take(100_000) {
        assert_eq!(v.get(rid).unwrap().payload.len(), 256);
    }
    println!("get, random:           {}", rate(100_000.min(order.len()), start.elapsed()));

    // The retention sweep (`erasure::sweep_retention`), 1,000 records per vault command:
    // with nothing expired, and with every record expired (each one is opened).
    let t = Instant::now();
    assert!(v.expired_page(1, None, 1000).unwrap().0.is_empty());
    println!("retention sweep, none expired: {:?} for {} records", t.elapsed(), v.len());
    let start = Instant::now();
    let (mut expired, mut cursor, mut longest) = (0, None, Duration::ZERO);
    loop {
        let t = Instant::now();
        let (page, next) = v.expired_page(2, cursor, 1000).unwrap();
        longest = longest.max(t.elapsed());
        expired += page.len();
        let Some(next) = next else { break };
        cursor = Some(next);
    }
    assert_eq!(expired, v.len());
    println!(
        "retention sweep, all expired: {}  ({expired} records in {:?}; longest page of 1000: {longest:?})",
        rate(expired, start.elapsed()),
        start.elapsed()
    );

    // erase, random records, batches of 1000
    let mut doomed = order.into_iter();
    let start = Instant::now();
    let mut erased = 0;
    for round in 0..20 {
        let batch: Vec<_> = doomed.by_ref().take(1000).collect();
        erased += v.erase(&batch).unwrap().len();
        if round % 5 == 4 {
            eprintln!("  erased {erased}");
        }
    }
    println!("erase, batches of 1000: {}", rate(erased, start.elapsed()));

    for (size, reps) in [(1usize, 50), (100, 10), (10_000, 1)] {
        let mut lat = Vec::new();
        for _ in 0..reps {
            let batch: Vec<_> = doomed.by_ref().take(size).collect();
            let t = Instant::now();
            v.erase(&batch).unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        println!("erase latency, batch of {size:>6}: p50 {:?}  max {:?}", lat[lat.len() / 2], lat[lat.len() - 1]);
    }
    // Baseline: the same number of 600-byte values (a record's blob size) written
    // straight into sled in batches of 1000, with the same durability step.
    let raw_dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let raw = SledStore::open(raw_dir.path()).unwrap();
    let t = Instant::now();
    for chunk in 0..records / 1000 {
        let mut batch = WriteBatch::default();
        for i in 0..1000u64 {
            let key = ((chunk as u64) * 1000 + i).wrapping_mul(0x9e3779b97f4a7c15).to_be_bytes().to_vec();
            batch.put(key, vec![0xa5; 600]);
        }
        raw.apply(batch).unwrap();
        raw.sync().unwrap();
    }
    println!("baseline, raw sled:    {}  (600-byte values, batches of 1000, same sync)", rate(records, t.elapsed()));

    let t = Instant::now();
    drop(v);
    let v = Vault::open_dir(dir.path(), VaultConfig::default()).unwrap();
    println!("reopen with {} records: {:?}", v.len(), t.elapsed());
}

/// Flat cost (issue 17): `n` records of one subject, stored in batches of 1000, with 200
/// single stores (each fsynced) before and after; prints the rate of the first and last
/// tenth and the single-store latencies at both ends.
fn one_subject(dir: &std::path::Path, n: usize) {
    let mut v = Vault::open_dir(dir, VaultConfig::default()).unwrap();
    let subject = cairn_node::vault::SubjectRef { gateway: KeyId([7; 16]), local: "Patient/shoe".into() };
    let of_subject = |i: u64| NewRecord { subject: Some(subject.clone()), ..reading(i) };
    println!("one-subject benchmark: {n} records of one subject, batches of 1000, data in {}", dir.display());
    let singles = |v: &mut Vault<SledStore, cairn_node::vault::root::FileRootSlot>, from: u64| {
        let mut lat: Vec<Duration> = (0..200)
            .map(|i| {
                let r = of_subject(from + i);
                let t = Instant::now();
                v.put(r).unwrap();
                t.elapsed()
            })
            .collect();
        lat.sort();
        (lat[100], lat[198])
    };
    let (first_p50, first_p99) = singles(&mut v, 0);
    let tenth = n / 10;
    let mut windows = Vec::new();
    let (mut spent, mut stored) = (Duration::ZERO, 0usize);
    while stored < n {
        let batch = (0..1000).map(|i| of_subject((stored + i) as u64)).collect();
        let t = Instant::now();
        stored += v.put_batch(batch).unwrap().len();
        spent += t.elapsed();
        if stored % tenth.max(1000) == 0 {
            windows.push(tenth.max(1000) as f64 / spent.as_secs_f64());
            spent = Duration::ZERO;
            eprintln!("  {stored} / {n}: {:.0} records/s", windows.last().unwrap());
        }
    }
    let (last_p50, last_p99) = singles(&mut v, n as u64);
    let (first, last) = (windows[0], windows[windows.len() - 1]);
    println!(
        "store rate, first tenth: {first:.0} records/s; last tenth: {last:.0} records/s; last/first {:.2}",
        last / first
    );
    println!(
        "single store with 200 records: p50 {first_p50:?} p99 {first_p99:?}; with {} records: p50 {last_p50:?} p99 {last_p99:?}; p50 ratio {:.2}",
        n + 200,
        last_p50.as_secs_f64() / first_p50.as_secs_f64()
    );
    let t = Instant::now();
    let listed = v.subject_records(&subject).unwrap().len();
    println!("subject index read: {listed} ids in {:?}", t.elapsed());
    assert_eq!(listed, n + 400);
}
