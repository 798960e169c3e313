//! The vault contract, run against sled (with the file root slot) and against memory.

use cairn_proto::record::{Manifest, RecordId, record_leaf};

use super::{canary, reading};
use crate::vault::index;
use crate::vault::kv::{KvStore, MemStore};
use crate::vault::root::{MemRootStore, RootStore};
use crate::vault::{Vault, VaultConfig, VaultError};

/// Opens (and reopens) a vault over the same storage.
trait Backend {
    type K: KvStore;
    type R: RootStore;
    fn open(&self, config: VaultConfig) -> Vault<Self::K, Self::R>;
}

struct Sled(tempfile::TempDir);
impl Backend for Sled {
    type K = crate::vault::kv::SledStore;
    type R = crate::vault::root::FileRootSlot;
    fn open(&self, config: VaultConfig) -> Vault<Self::K, Self::R> {
        Vault::open_dir(self.0.path(), config).unwrap()
    }
}

#[derive(Default)]
struct Memory(MemStore, MemRootStore);
impl Backend for Memory {
    type K = MemStore;
    type R = MemRootStore;
    fn open(&self, config: VaultConfig) -> Vault<MemStore, MemRootStore> {
        Vault::open(self.0.clone(), self.1.clone(), config).unwrap()
    }
}

fn small() -> VaultConfig {
    // 3 directories × 3 buckets × 4 slots: exercises every level with few records.
    VaultConfig { fanout: 3, bucket_slots: 4, ..VaultConfig::default() }
}

fn put_get_round_trip(b: &impl Backend) {
    let mut v = b.open(VaultConfig::default());
    let input = reading(&canary(), None);
    let receipt = v.put(input.clone()).unwrap();
    let got = v.get(&receipt.rid).unwrap();
    assert_eq!(got.payload.as_slice(), input.payload.as_slice());
    assert_eq!(got.header.rid, receipt.rid);
    assert_eq!(got.header.purpose, "TREAT");
    assert_eq!(got.commitment, receipt.commitment);
    assert_eq!(got.leaf, receipt.leaf);
    assert_eq!(got.leaf, record_leaf(&receipt.rid, &input.manifest.hash().unwrap(), &receipt.commitment));
    assert!(matches!(v.get(&RecordId([0; 16])), Err(VaultError::NotFound(_))));
}

fn survives_reopen(b: &impl Backend) {
    let rids: Vec<_> = {
        let mut v = b.open(small());
        (0..20).map(|i| v.put(reading(&format!("r{i}"), Some("Patient/1"))).unwrap().rid).collect()
    };
    let v = b.open(small());
    let mut sorted = rids.clone();
    sorted.sort();
    assert_eq!(v.record_ids(), sorted);
    for (i, rid) in rids.iter().enumerate() {
        assert!(String::from_utf8_lossy(&v.get(rid).unwrap().payload).contains(&format!("\"r{i}\"")));
    }
    let report = v.verify().unwrap();
    assert_eq!((report.records_ok, report.subjects_ok), (20, 1));
}

fn erase_is_final_and_spares_the_rest(b: &impl Backend) {
    let mut v = b.open(small());
    let rids: Vec<_> = (0..30).map(|i| v.put(reading(&format!("r{i}"), None)).unwrap().rid).collect();
    let doomed: Vec<RecordId> = rids.iter().step_by(3).copied().collect();
    let before = v.epoch();
    let evidence = v.erase(&doomed).unwrap();
    assert_eq!(evidence.len(), doomed.len());
    assert!(evidence.iter().all(|e| e.epoch_before == before && e.epoch_after == before + 1));
    assert_eq!(v.epoch(), before + 1, "one root write for the whole batch");
    drop(v);
    let v = b.open(small());
    assert_eq!(v.epoch(), before + 1);
    for rid in &rids {
        let gone = doomed.contains(rid);
        assert_eq!(matches!(v.get(rid), Err(VaultError::NotFound(_))), gone, "{rid}");
    }
    assert_eq!(v.verify().unwrap().records_ok, 20);
}

fn rejections_change_nothing(b: &impl Backend) {
    let mut v = b.open(small());
    let rid = v.put(reading("keep", None)).unwrap().rid;
    let epoch = v.epoch();
    let unknown = RecordId([9; 16]);
    assert!(matches!(v.erase(&[rid, unknown]), Err(VaultError::NotFound(r)) if r == unknown));
    assert!(matches!(v.erase(&[rid, rid]), Err(VaultError::Invalid(_))));
    assert!(matches!(v.erase(&[]), Err(VaultError::Invalid(_))));
    let mut bad = vec![reading("ok", None), reading("ok", None)];
    bad[1].payload.clear();
    assert!(matches!(v.put_batch(bad), Err(VaultError::Invalid(m)) if m.starts_with("record 1")));
    let mut bad = reading("x", None);
    bad.payload = vec![b'x'; 64 * 1024 + 1];
    assert!(matches!(v.put(bad), Err(VaultError::Invalid(_))));
    let mut bad = reading("x", None);
    bad.purpose = "no spaces".into();
    assert!(matches!(v.put(bad), Err(VaultError::Invalid(_))));
    let mut bad = reading("x", None);
    bad.retain_until_ms = bad.received_at_ms;
    assert!(matches!(v.put(bad), Err(VaultError::Invalid(_))));
    let mut bad = reading("x", None);
    bad.manifest = Manifest { version: 1, custodians: vec![] };
    assert!(matches!(v.put(bad), Err(VaultError::Invalid(_))));
    assert_eq!((v.len(), v.epoch()), (1, epoch));
    drop(v);
    let v = b.open(small());
    assert_eq!((v.len(), v.epoch()), (1, epoch));
    v.get(&rid).unwrap();
}

fn subjects_index_and_erase(b: &impl Backend) {
    let mut v = b.open(small());
    let alice: Vec<_> = (0..5).map(|i| v.put(reading(&format!("a{i}"), Some("Patient/alice"))).unwrap().rid).collect();
    let bob: Vec<_> = (0..3).map(|i| v.put(reading(&format!("b{i}"), Some("Patient/bob"))).unwrap().rid).collect();
    let alice_ref = v.get(&alice[0]).unwrap().subject.unwrap();
    let bob_ref = v.get(&bob[0]).unwrap().subject.unwrap();
    assert_eq!(v.subject_records(&alice_ref).unwrap(), alice);
    v.erase(&[alice[1]]).unwrap();
    let remaining: Vec<_> = alice.iter().copied().filter(|r| *r != alice[1]).collect();
    assert_eq!(v.subject_records(&alice_ref).unwrap(), remaining);
    let evidence = v.erase_subject(&alice_ref).unwrap();
    assert_eq!(evidence.len(), 4);
    assert!(matches!(v.subject_records(&alice_ref), Err(VaultError::SubjectNotFound)));
    assert!(matches!(v.erase_subject(&alice_ref), Err(VaultError::SubjectNotFound)));
    drop(v);
    let mut v = b.open(small());
    assert_eq!(v.record_ids().len(), 3);
    assert_eq!(v.subject_records(&bob_ref).unwrap(), bob);
    assert_eq!(v.verify().unwrap().subjects_ok, 1);
    // A new record for an erased subject starts a new index.
    let again = v.put(reading("a-new", Some("Patient/alice"))).unwrap().rid;
    assert_eq!(v.subject_records(&alice_ref).unwrap(), vec![again]);
}

/// A subject's index spans several chunks; stores append to it, erasures rewrite it under a
/// new key and leave nothing readable under the old one.
fn long_index_spans_chunks(b: &impl Backend) {
    let mut v = b.open(VaultConfig::default());
    let mut all = Vec::new();
    for (round, n) in [1, 254, 1, 300, 100].into_iter().enumerate() {
        let batch = (0..n).map(|i| reading(&format!("l{round}-{i}"), Some("Patient/long"))).collect();
        all.extend(v.put_batch(batch).unwrap().into_iter().map(|r| r.rid));
    }
    let subject = v.get(&all[0]).unwrap().subject.unwrap();
    assert_eq!(v.subject_records(&subject).unwrap(), all);
    let old = v.subject_index_key(&subject).unwrap();
    assert_eq!(index::stored_values(v.kv(), &old).unwrap(), 4, "a head and three chunks for 656 ids");
    let gone = [all[300], all[511], all[512]];
    v.erase(&gone).unwrap();
    all.retain(|r| !gone.contains(r));
    assert_eq!(v.subject_records(&subject).unwrap(), all);
    assert_eq!(index::stored_values(v.kv(), &old).unwrap(), 0, "no index value under the replaced key");
    drop(v);
    let mut v = b.open(VaultConfig::default());
    assert_eq!(v.subject_records(&subject).unwrap(), all);
    let tail = v.put(reading("after", Some("Patient/long"))).unwrap().rid;
    all.push(tail);
    assert_eq!(v.subject_records(&subject).unwrap(), all);
    assert_eq!(v.verify().unwrap().subjects_ok, 1);
    let key = v.subject_index_key(&subject).unwrap();
    assert_eq!(v.erase_subject(&subject).unwrap().len(), all.len());
    assert_eq!(index::stored_values(v.kv(), &key).unwrap(), 0);
}

/// Stores append to subjects' indexes from what the vault remembers of them
/// (`index::Tails`): after stores of two interleaved subjects across chunk boundaries, an
/// erasure and more stores, a reopened vault reads each subject's ids in order.
fn remembered_tails_write_the_same_index(b: &impl Backend) {
    let mut v = b.open(VaultConfig::default());
    let (mut a, mut c) = (Vec::new(), Vec::new());
    for (round, n) in [3, 380, 1, 2, 300].into_iter().enumerate() {
        store_two(&mut v, round, n, &mut a, &mut c);
    }
    assert_eq!(v.tails.len(), 2, "both subjects remembered");
    let (sa, sc) = (v.get(&a[0]).unwrap().subject.unwrap(), v.get(&c[0]).unwrap().subject.unwrap());
    let gone = [a[5], c[100]];
    v.erase(&gone).unwrap();
    assert_eq!(v.tails.len(), 0, "an erasure forgets what stores remembered");
    for round in 5..8 {
        store_two(&mut v, round, 200, &mut a, &mut c);
    }
    a.retain(|r| !gone.contains(r));
    c.retain(|r| !gone.contains(r));
    drop(v);
    let v = b.open(VaultConfig::default());
    assert_eq!(v.subject_records(&sa).unwrap(), a);
    assert_eq!(v.subject_records(&sc).unwrap(), c);
    assert_eq!(v.verify().unwrap().subjects_ok, 2);
}

/// Stores `n` readings in one batch, every third of subject c, the others of subject a.
fn store_two<K: KvStore, R: RootStore>(
    v: &mut Vault<K, R>,
    round: usize,
    n: usize,
    a: &mut Vec<RecordId>,
    c: &mut Vec<RecordId>,
) {
    let who = |i: usize| if i.is_multiple_of(3) { "Patient/c" } else { "Patient/a" };
    let batch = (0..n).map(|i| reading(&format!("t{round}-{i}"), Some(who(i)))).collect();
    for (i, r) in v.put_batch(batch).unwrap().into_iter().enumerate() {
        if i.is_multiple_of(3) { c.push(r.rid) } else { a.push(r.rid) }
    }
}

/// A vault written before chunks holds a subject's whole list as one value: it is read as
/// it is and replaced by chunks on the subject's next store or erasure.
fn legacy_index_is_read_and_migrated(b: &impl Backend) {
    let mut v = b.open(small());
    let batch = (0..6).map(|i| reading(&format!("g{i}"), Some("Patient/old"))).collect();
    let mut all: Vec<_> = v.put_batch(batch).unwrap().into_iter().map(|r| r.rid).collect();
    let subject = v.get(&all[0]).unwrap().subject.unwrap();
    let key = v.subject_index_key(&subject).unwrap();
    index::write_legacy(v.kv(), &key).unwrap();
    // Opened again, as a vault written before chunks is (nothing remembered of the index).
    drop(v);
    let mut v = b.open(small());
    assert_eq!(index::stored_values(v.kv(), &key).unwrap(), 1, "only the whole-list value");
    assert_eq!(v.subject_records(&subject).unwrap(), all);
    all.push(v.put(reading("g6", Some("Patient/old"))).unwrap().rid);
    assert_eq!(v.subject_records(&subject).unwrap(), all);
    assert_eq!(index::stored_values(v.kv(), &key).unwrap(), 2, "a head and one chunk, the old value removed");
    index::write_legacy(v.kv(), &key).unwrap();
    v.erase(&[all[2]]).unwrap();
    all.remove(2);
    assert_eq!(v.subject_records(&subject).unwrap(), all);
    assert_eq!(index::stored_values(v.kv(), &key).unwrap(), 0);
    let key = v.subject_index_key(&subject).unwrap();
    assert_eq!(index::stored_values(v.kv(), &key).unwrap(), 2);
    index::write_legacy(v.kv(), &key).unwrap();
    assert_eq!(v.erase_subject(&subject).unwrap().len(), all.len());
    assert_eq!(index::stored_values(v.kv(), &key).unwrap(), 0);
    assert!(matches!(v.subject_records(&subject), Err(VaultError::SubjectNotFound)));
}

/// The retention index lists expired records by end of retention, a page at a time, opens
/// only those, forgets erased ones, and learns the end of records from before issue 17.
fn expired_records_come_in_pages(b: &impl Backend) {
    let mut v = b.open(small());
    let batch: Vec<_> = (0..10u64)
        .map(|i| {
            let mut r = reading(&format!("e{i}"), None);
            r.retain_until_ms = 2_000 + (i % 5) * 1_000;
            r
        })
        .collect();
    let rids: Vec<_> = v.put_batch(batch).unwrap().into_iter().map(|r| r.rid).collect();
    let ends = |page: &[crate::vault::StoredRecord]| page.iter().map(|r| r.header.retain_until_ms).collect::<Vec<_>>();
    let (first, cursor) = v.expired_page(3_000, None, 3).unwrap();
    assert_eq!(ends(&first), [2_000, 2_000, 3_000]);
    let (second, cursor) = v.expired_page(3_000, cursor, 3).unwrap();
    assert_eq!(ends(&second), [3_000]);
    assert!(cursor.is_none());
    assert!(v.expired_page(1_999, None, 10).unwrap().0.is_empty());
    v.erase(&[rids[0]]).unwrap();
    let (all, _) = v.expired_page(10_000, None, 100).unwrap();
    assert_eq!(all.len(), 9);
    assert!(all.iter().all(|r| r.header.rid != rids[0]));
    drop(v);
    let mut v = b.open(small());
    assert_eq!(v.expired_page(10_000, None, 100).unwrap().0.len(), 9, "rebuilt from the key tree");
    v.forget_retention();
    assert_eq!(ends(&v.expired_page(4_000, None, 100).unwrap().0), [2_000, 3_000, 3_000, 4_000, 4_000]);
}

fn full_vault_refuses_and_reuses_erased_slots(b: &impl Backend) {
    let mut v = b.open(small());
    // 36 slots: 35 records and one subject entry.
    let batch: Vec<_> = (0..35).map(|i| reading(&format!("f{i}"), (i == 0).then_some("Patient/full"))).collect();
    let rids: Vec<_> = v.put_batch(batch).unwrap().into_iter().map(|r| r.rid).collect();
    assert!(matches!(v.put(reading("one too many", None)), Err(VaultError::Full(36))));
    assert_eq!(v.len(), 35);
    v.erase(&rids[10..14]).unwrap();
    let new: Vec<_> = (0..4).map(|i| v.put(reading(&format!("n{i}"), None)).unwrap().rid).collect();
    drop(v);
    let v = b.open(small());
    assert_eq!(v.len(), 35);
    for rid in new.iter().chain(&rids[..10]) {
        v.get(rid).unwrap();
    }
}

fn replicas_store_the_same_record_elsewhere(b: &impl Backend) {
    let mut home = b.open(small());
    let mut other = Vault::open(MemStore::default(), MemRootStore::default(), small()).unwrap();
    let inputs: Vec<_> = (0..5).map(|i| reading(&format!("rep{i}"), Some("Patient/9"))).collect();
    let sealed = home.seal_batch(inputs.clone()).unwrap();
    assert!(home.is_empty(), "sealing stores nothing");
    let here = home.store(sealed.clone()).unwrap();
    let there = other.store(sealed.clone()).unwrap();
    assert_eq!(here, there, "same ids, commitments and leaves at both custodians");
    for (r, input) in here.iter().zip(&inputs) {
        let got = other.get(&r.rid).unwrap();
        assert_eq!(got.payload.as_slice(), input.payload.as_slice());
        assert_eq!(got.leaf, r.leaf);
        assert_eq!(home.replica(&r.rid).unwrap().leaf().unwrap(), r.leaf);
    }
    let subject = crate::vault::SubjectRef { gateway: inputs[0].gateway, local: "Patient/9".into() };
    assert_eq!(other.subject_records(&subject).unwrap().len(), 5);
    // A repeated replication is a no-op with the same answer.
    assert_eq!(other.store(sealed.clone()).unwrap(), there);
    assert_eq!(other.len(), 5);
    // A replica whose ciphertext was changed, or moved under another header, is refused
    // and nothing is stored.
    let mut fresh = home.seal_batch(vec![reading("x", None), reading("y", None)]).unwrap();
    let last = fresh[1].ciphertext.len() - 1;
    fresh[1].ciphertext[last] ^= 1;
    assert!(matches!(other.store(fresh.clone()), Err(VaultError::Invalid(m)) if m.contains("replica 1")));
    let mut moved = home.seal_batch(vec![reading("z", None)]).unwrap();
    moved[0].header.purpose = "RESCH".into();
    assert!(matches!(other.store(moved), Err(VaultError::Invalid(_))));
    assert_eq!(other.len(), 5);
}

macro_rules! contract {
    ($($name:ident),*) => {
        mod sled_backend {
            $(#[test] fn $name() { super::$name(&super::Sled(tempfile::tempdir().unwrap())); })*
        }
        mod memory_backend {
            $(#[test] fn $name() { super::$name(&super::Memory::default()); })*
        }
    };
}

contract!(
    put_get_round_trip,
    survives_reopen,
    erase_is_final_and_spares_the_rest,
    rejections_change_nothing,
    subjects_index_and_erase,
    long_index_spans_chunks,
    remembered_tails_write_the_same_index,
    legacy_index_is_read_and_migrated,
    expired_records_come_in_pages,
    full_vault_refuses_and_reuses_erased_slots,
    replicas_store_the_same_record_elsewhere
);
