//! Crash safety. A child process (this test binary, re-run in child mode) writes and
//! erases records and prints each acknowledgement; the parent kills it with SIGKILL at
//! random moments, or arms a fault point that aborts it at one step of the protocol.
//! After every crash the parent reopens the vault and checks: it opens without error,
//! every acknowledged record reads back equal, every acknowledged erasure is complete,
//! and an erasure in flight happened entirely or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use cairn_proto::record::RecordId;

use super::{random, reading};
use crate::vault::{FaultPoint, Vault, VaultConfig, VaultError};

pub(super) const CHILD_TEST: &str = "vault::tests::crash::child_process";

fn config(fault: Option<FaultPoint>) -> VaultConfig {
    VaultConfig { fanout: 8, bucket_slots: 8, fault, ..VaultConfig::default() }
}

/// Child mode: runs only when the parent starts this binary with `CAIRN_CRASH_DIR`.
/// Prints `put RID PAYLOAD_HEX`, `erasing RID...`, `erased RID...` and `root HEX` (the
/// root before an erasure, so the parent can look for it afterwards).
#[test]
#[ignore = "run by the crash tests in a child process"]
fn child_process() {
    let Ok(dir) = std::env::var("CAIRN_CRASH_DIR") else { return };
    let fault = std::env::var("CAIRN_CRASH_FAULT").ok().and_then(|f| FaultPoint::from_name(&f));
    let rounds: u32 = std::env::var("CAIRN_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(u32::MAX);
    // Create the vault unarmed: the root-slot faults are for erasure commits.
    drop(Vault::open_dir(Path::new(&dir), config(None)).unwrap());
    let mut v = Vault::open_dir(Path::new(&dir), config(fault)).unwrap();
    for _ in 0..rounds {
        let n = 1 + random::<1>()[0] as usize % 4;
        let batch: Vec<_> = (0..n)
            .map(|_| {
                let subject = ["Patient/a", "Patient/b", "Patient/c"][random::<1>()[0] as usize % 3];
                reading(&hex::encode(random::<8>()), Some(subject))
            })
            .collect();
        let payloads: Vec<_> = batch.iter().map(|r| hex::encode(&r.payload)).collect();
        match v.put_batch(batch) {
            Ok(receipts) => {
                for (r, p) in receipts.iter().zip(payloads) {
                    println!("put {} {p}", r.rid);
                }
            }
            Err(VaultError::Full(_)) => {}
            Err(e) => panic!("put failed: {e}"),
        }
        let ids = v.record_ids();
        if ids.len() > 40 || random::<1>()[0].is_multiple_of(2) {
            let k = 1 + random::<1>()[0] as usize % 6;
            // Mostly records with a given byte, so erasures cluster in some buckets.
            let pick = |r: &RecordId| ids.len() > 60 || r.0[1].is_multiple_of(4);
            let doomed: Vec<RecordId> = ids.iter().copied().filter(pick).take(k).collect();
            let doomed = if doomed.is_empty() { ids.into_iter().take(1).collect() } else { doomed };
            if doomed.is_empty() {
                continue;
            }
            println!("root {}", hex::encode(v.root_key().expose()));
            println!("erasing {}", doomed.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(" "));
            v.erase(&doomed).unwrap();
            println!("erased {}", doomed.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(" "));
        }
    }
}

/// What the parent knows from the child's acknowledgements.
#[derive(Default)]
struct Model {
    live: BTreeMap<RecordId, Vec<u8>>,
    erased: BTreeSet<RecordId>,
    in_flight: Vec<RecordId>,
    old_roots: Vec<Vec<u8>>,
}

impl Model {
    fn read(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let rids = |w: std::str::SplitWhitespace<'_>| w.map(|r| r.parse::<RecordId>().unwrap()).collect::<Vec<_>>();
        match words.next() {
            Some("put") => {
                let rid = words.next().unwrap().parse().unwrap();
                self.live.insert(rid, hex::decode(words.next().unwrap()).unwrap());
            }
            Some("root") => self.old_roots.push(hex::decode(words.next().unwrap()).unwrap()),
            Some("erasing") => self.in_flight = rids(words),
            Some("erased") => {
                for rid in rids(words) {
                    self.live.remove(&rid);
                    self.erased.insert(rid);
                }
                self.in_flight.clear();
                // The root printed before this erasure is now a previous root.
            }
            _ => {} // test harness output
        }
    }

    /// Reopens the vault and checks every promise; settles the in-flight erasure.
    fn check(&mut self, dir: &Path) -> Vault<crate::vault::kv::SledStore, crate::vault::root::FileRootSlot> {
        let v = Vault::open_dir(dir, config(None)).unwrap_or_else(|e| panic!("vault does not open after a crash: {e}"));
        for (rid, payload) in &self.live {
            if self.in_flight.contains(rid) {
                continue;
            }
            let got = v.get(rid).unwrap_or_else(|e| panic!("acknowledged record {rid} lost: {e}"));
            assert_eq!(got.payload.as_slice(), payload.as_slice(), "record {rid} changed");
        }
        for rid in &self.erased {
            assert!(matches!(v.get(rid), Err(VaultError::NotFound(_))), "acknowledged erasure of {rid} undone");
        }
        let present: Vec<bool> = self.in_flight.iter().map(|r| v.get(r).is_ok()).collect();
        assert!(
            present.iter().all(|p| *p) || present.iter().all(|p| !*p),
            "an erasure was applied in part: {present:?}"
        );
        if present.first() == Some(&false) {
            for rid in self.in_flight.drain(..) {
                self.live.remove(&rid);
                self.erased.insert(rid);
            }
        }
        self.in_flight.clear();
        // Records put but killed before the acknowledgement was printed are allowed;
        // they must read back like the rest.
        for rid in v.record_ids() {
            self.live.entry(rid).or_insert_with(|| v.get(&rid).unwrap().payload.to_vec());
        }
        v.verify().unwrap_or_else(|e| panic!("vault does not verify after a crash: {e}"));
        v
    }
}

fn spawn(dir: &Path, fault: Option<FaultPoint>, rounds: Option<u32>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", CHILD_TEST, "--ignored", "--nocapture", "--test-threads", "1"])
        .env("CAIRN_CRASH_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(f) = fault {
        cmd.env("CAIRN_CRASH_FAULT", f.name());
    }
    if let Some(r) = rounds {
        cmd.env("CAIRN_CRASH_ROUNDS", r.to_string());
    }
    cmd.spawn().unwrap()
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let (kills, mut acks) = (200, 0usize);
    for round in 0..kills {
        let mut child = spawn(dir.path(), None, None);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Wait for a random number of acknowledgements, then kill mid-flight.
        let wait_for = 1 + random::<1>()[0] as usize % 12;
        let mut seen = 0;
        while seen < wait_for {
            let Some(line) = lines.next() else { panic!("child exited early in round {round}") };
            let line = line.unwrap();
            seen += usize::from(line.starts_with("put ") || line.starts_with("erased "));
            model.read(&line);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines {
            model.read(&line.unwrap());
        }
        acks += seen;
        drop(model.check(dir.path()));
    }
    println!(
        "{kills} SIGKILLs after {acks} acknowledgements: {} records live, {} erased, all as acknowledged",
        model.live.len(),
        model.erased.len()
    );
    assert!(model.erased.len() > 20 && model.live.len() > 10, "the run exercised both puts and erasures");
}

#[test]
fn a_crash_at_every_step_of_the_protocol_recovers() {
    for fault in FaultPoint::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::default();
        let mut child = spawn(dir.path(), Some(fault), Some(50));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines {
            model.read(&line.unwrap());
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "{fault:?}: the child should have aborted at the fault point");
        let in_flight = model.in_flight.clone();
        let v = model.check(dir.path());
        let committed = in_flight.first().is_some_and(|r| matches!(v.get(r), Err(VaultError::NotFound(_))));
        let expect_committed =
            matches!(fault, FaultPoint::RootBeforeScrub | FaultPoint::EraseAfterCommit | FaultPoint::EraseAfterCleanup);
        if fault != FaultPoint::PutBeforeSync {
            assert!(!in_flight.is_empty(), "{fault:?}: the crash came during an erasure");
            assert_eq!(committed, expect_committed, "{fault:?}");
        }
        drop(v);
        // Once recovered, no earlier root is left in the directory.
        let current = model.old_roots.last().filter(|_| !committed).cloned();
        let mut files = Vec::new();
        collect(dir.path(), &mut files);
        for root in model.old_roots.iter().filter(|r| Some(*r) != current.as_ref()) {
            for bytes in &files {
                assert!(!bytes.windows(32).any(|w| w == root.as_slice()), "{fault:?}: an old root survived recovery");
            }
        }
        let outcome = match (fault, committed) {
            (FaultPoint::PutBeforeSync, _) => "put interrupted, earlier records intact",
            (_, true) => "erasure completed",
            (_, false) => "erasure undone",
        };
        println!("{fault:?}: recovered, {outcome}");
    }
}

fn collect(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { collect(&p, out) } else { out.push(std::fs::read(&p).unwrap()) }
    }
}
