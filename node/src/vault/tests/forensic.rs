//! Forensic canary scan: no plaintext, no subject reference, and after erasure no key,
//! commitment secret or earlier root of an erased record anywhere in the data directory
//! or the log output. A negative control shows the scanner finds what sled keeps.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{canary, reading};
use crate::vault::kv::{KvStore as _, SledStore, WriteBatch};
use crate::vault::{Vault, VaultConfig};

/// Every file under `dir`, read whole.
fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

/// Which of `needles` (name → bytes, each at least 8 bytes) occur in `haystack`.
fn find(haystack: &[u8], needles: &HashMap<String, Vec<u8>>) -> Vec<String> {
    let mut by_prefix: HashMap<[u8; 8], Vec<(&String, &Vec<u8>)>> = HashMap::new();
    for (name, n) in needles {
        by_prefix.entry(n[..8].try_into().unwrap()).or_default().push((name, n));
    }
    let mut hits = Vec::new();
    for i in 0..haystack.len().saturating_sub(7) {
        if let Some(cands) = by_prefix.get(&<[u8; 8]>::try_from(&haystack[i..i + 8]).unwrap()) {
            for (name, n) in cands {
                if haystack[i..].starts_with(n) && !hits.contains(*name) {
                    hits.push((*name).clone());
                }
            }
        }
    }
    hits
}

/// Scans every byte under `dir`; returns `(file, needle)` for each hit.
fn scan(dir: &Path, needles: &HashMap<String, Vec<u8>>) -> Vec<(String, String)> {
    let mut all = Vec::new();
    files(dir, &mut all);
    assert!(all.iter().map(|(_, b)| b.len()).sum::<usize>() > 0, "nothing to scan under {}", dir.display());
    all.iter().flat_map(|(f, bytes)| find(bytes, needles).into_iter().map(move |n| (f.clone(), n))).collect()
}

/// A log sink for the test's tracing subscriber.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_plaintext_ever_and_no_key_or_old_root_after_erasure() {
    let log = Log::default();
    let sink = log.clone();
    let subscriber =
        tracing_subscriber::fmt().with_writer(move || sink.clone()).with_max_level(tracing::Level::TRACE).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let config = || VaultConfig { fanout: 8, bucket_slots: 16, ..VaultConfig::default() };
    let mut v = Vault::open_dir(dir.path(), config()).unwrap();
    let mut roots = vec![v.root_key()];
    let mut plaintext = HashMap::new();
    let mut canaries = Vec::new();
    for batch in 0..10 {
        let subject_canary = canary();
        plaintext.insert(format!("subject {batch}"), format!("Patient/{subject_canary}").into_bytes());
        let records: Vec<_> = (0..20)
            .map(|_| {
                let c = canary();
                plaintext.insert(format!("canary {c}"), c.clone().into_bytes());
                reading(&c, Some(&format!("Patient/{subject_canary}")))
            })
            .collect();
        for (receipt, _) in v.put_batch(records).unwrap().into_iter().zip(0..) {
            canaries.push(receipt.rid);
        }
    }
    // Before any erasure: no plaintext and no subject reference anywhere.
    v.kv().sync().unwrap();
    assert_eq!(scan(dir.path(), &plaintext), vec![], "plaintext on disk before erasure");

    // Capture the secrets of the records about to be erased, then erase in 3 epochs and
    // one subject erasure.
    let erased: Vec<_> = canaries.iter().copied().filter(|r| r.0[0] % 2 == 0).collect();
    let mut secrets = HashMap::new();
    for rid in &erased {
        let (dk, s) = v.secrets_of(rid).unwrap();
        secrets.insert(format!("dk of {rid}"), dk.expose().to_vec());
        secrets.insert(format!("s of {rid}"), s.expose().to_vec());
    }
    for chunk in erased.chunks(erased.len() / 3 + 1) {
        v.erase(chunk).unwrap();
        roots.push(v.root_key());
    }
    let subject = v.get(v.record_ids().first().unwrap()).unwrap().subject.unwrap();
    let subject_rids = v.subject_records(&subject).unwrap();
    for rid in &subject_rids {
        let (dk, s) = v.secrets_of(rid).unwrap();
        secrets.insert(format!("dk of {rid}"), dk.expose().to_vec());
        secrets.insert(format!("s of {rid}"), s.expose().to_vec());
    }
    v.erase_subject(&subject).unwrap();
    roots.push(v.root_key());
    let survivors = v.record_ids();
    drop(v);

    let current_root = roots.pop().unwrap();
    for (i, r) in roots.iter().enumerate() {
        secrets.insert(format!("root of epoch {i}"), r.expose().to_vec());
    }
    let mut needles = plaintext.clone();
    needles.extend(secrets);
    assert_eq!(scan(dir.path(), &needles), vec![], "residue after erasure");
    // The scanner does see secrets that are there: the current root is in the slot.
    let current = HashMap::from([("current root".to_string(), current_root.expose().to_vec())]);
    assert_eq!(scan(dir.path(), &current).len(), 1);

    // The log never held any of it.
    let log = log.0.lock().unwrap().clone();
    assert!(String::from_utf8_lossy(&log).contains("erasure epoch committed"), "the log was captured");
    assert_eq!(find(&log, &needles), Vec::<String>::new());
    assert_eq!(find(hex::encode(&log).as_bytes(), &needles), Vec::<String>::new());

    // Everything not erased is intact.
    let v = Vault::open_dir(dir.path(), config()).unwrap();
    assert_eq!(v.record_ids(), survivors);
    assert_eq!(v.verify().unwrap().records_ok, survivors.len());
    println!(
        "scanned for {} needles: {} plaintext canaries and subject references, {} erased secrets and old roots",
        needles.len(),
        plaintext.len(),
        needles.len() - plaintext.len()
    );
}

#[test]
fn negative_control_sled_keeps_what_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    let c = canary();
    let needle = HashMap::from([("canary".to_string(), c.clone().into_bytes())]);
    {
        let store = SledStore::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        b.put(b"plain".to_vec(), c.clone().into_bytes());
        store.apply(b).unwrap();
        let mut b = WriteBatch::default();
        b.remove(b"plain".to_vec());
        store.apply(b).unwrap();
        store.sync().unwrap();
        assert_eq!(store.get(b"plain").unwrap(), None);
        for i in 0u32..2_000 {
            let mut b = WriteBatch::default();
            b.put(i.to_be_bytes().to_vec(), vec![0u8; 64]);
            store.apply(b).unwrap();
        }
        store.sync().unwrap();
    }
    let hits = scan(dir.path(), &needle);
    assert!(!hits.is_empty(), "the scanner must find a canary that sled removed but kept on disk");
    let mut out = std::io::stdout();
    writeln!(out, "negative control: removed canary still found in {hits:?}").unwrap();
}
