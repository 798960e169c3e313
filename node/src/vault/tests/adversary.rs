//! The coercive adversary: someone who copied the data directory before an erasure and
//! later obtains the current root (say, by court order) still cannot read the erased
//! records; with the root of the copy's time, they could. The root slot is the secret
//! that matters.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cairn_proto::encoding::decode;
use cairn_proto::record::RecordId;

use super::{canary, reading};
use crate::vault::crypto::{Key32, open};
use crate::vault::keytree::{BucketNode, BucketValue, DirNode, Entry, RootNode};
use crate::vault::kv::{KvStore as _, SledStore};
use crate::vault::layout::{aad, label};
use crate::vault::store::{Blob, Meta, payload_aad};
use crate::vault::{Vault, VaultConfig};

pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every key-value pair of every store the adversary holds.
pub(crate) fn harvest(dirs: &[&Path]) -> Pairs {
    let mut all = Vec::new();
    for dir in dirs {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&dir.join("db"), copy.path());
        all.extend(SledStore::open(copy.path()).unwrap().scan_prefix(b"").unwrap());
    }
    all
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &target) } else { std::fs::copy(&p, &target).map(|_| ()).unwrap() }
    }
}

/// Tries every sealed value with every key it can reach from `root`, at every level,
/// across all harvested stores, and returns the payloads it could open.
pub(crate) fn recover(pairs: &Pairs, root: &Key32) -> BTreeMap<RecordId, Vec<u8>> {
    let with = |prefix: u8| pairs.iter().filter(move |(k, _)| k.first() == Some(&prefix));
    let mut dir_keys = Vec::new();
    for (k, v) in with(b'r') {
        if let Some(p) = open(&root.derive(label::ROOT_NODE), &aad(label::ROOT_NODE, k), v) {
            let node: RootNode = decode(&p, 1 << 20).unwrap();
            dir_keys.extend(node.dirs.into_iter().map(|d| d.key));
        }
    }
    let mut bucket_keys = Vec::new();
    for (k, v) in with(b'd') {
        for key in &dir_keys {
            if let Some(p) = open(key, &aad(label::DIR, k), v) {
                let node: DirNode = decode(&p, 1 << 20).unwrap();
                bucket_keys.extend(node.buckets.into_iter().map(|b| b.key));
            }
        }
    }
    // Every bucket value of every version: try every reachable bucket key on its slots.
    let values: Vec<(&Vec<u8>, BucketValue)> = with(b'e').map(|(k, v)| (k, decode(v, 1 << 28).unwrap())).collect();
    let mut entries = Vec::new();
    for (k, value) in &values {
        for key in &bucket_keys {
            if let Some(p) = open(key, &aad(label::BUCKET, k), &value.sealed) {
                let node: BucketNode = decode(&p, 1 << 20).unwrap();
                entries.extend(node.slots.into_iter().flatten());
            }
        }
    }
    // Every blob in every version, tried with every data key recovered.
    let blobs: Vec<Blob> = values
        .iter()
        .flat_map(|(_, v)| v.blobs.iter().flatten())
        .map(|b| decode(b.as_slice(), 1 << 20).unwrap())
        .collect();
    let mut out = BTreeMap::new();
    for entry in entries {
        let (Entry::Record { rid, dk, .. } | Entry::LegacyRecord { rid, dk, .. }) = entry else { continue };
        for blob in &blobs {
            let Some(meta) = open(&dk.derive(label::META), &aad(label::META, &rid.0), &blob.meta) else { continue };
            let meta: Meta = decode(&meta, 1 << 20).unwrap();
            if let Some(payload) = open(&dk, &payload_aad(&rid, &meta.header).unwrap(), &blob.payload) {
                out.insert(rid, payload.to_vec());
            }
        }
    }
    out
}

#[test]
fn old_copy_plus_current_root_reveals_nothing_erased() {
    let live = tempfile::tempdir().unwrap();
    let config = || VaultConfig { fanout: 4, bucket_slots: 8, ..VaultConfig::default() };
    let (all, old_root) = {
        let mut v = Vault::open_dir(live.path(), config()).unwrap();
        let records: Vec<_> = (0..60).map(|_| reading(&canary(), Some("Patient/x"))).collect();
        let all: BTreeSet<RecordId> = v.put_batch(records).unwrap().into_iter().map(|r| r.rid).collect();
        (all, v.root_key())
    };
    let before = tempfile::tempdir().unwrap();
    copy_dir(live.path(), before.path());

    let (erased, current_root) = {
        let mut v = Vault::open_dir(live.path(), config()).unwrap();
        let erased: BTreeSet<RecordId> = all.iter().copied().filter(|r| r.0[0] < 100).collect();
        v.erase(&erased.iter().copied().collect::<Vec<_>>()).unwrap();
        (erased, v.root_key())
    };
    assert!(!erased.is_empty() && erased.len() < all.len());
    let kept: BTreeSet<RecordId> = all.difference(&erased).copied().collect();

    // The old copy and the current store, opened with the current root.
    let pairs = harvest(&[before.path(), live.path()]);
    let got: BTreeSet<RecordId> = recover(&pairs, &current_root).into_keys().collect();
    assert_eq!(got, kept, "with the current root: every kept record and no erased one");

    // The same copy with the root of its own time opens everything.
    let old_pairs = harvest(&[before.path()]);
    let got: BTreeSet<RecordId> = recover(&old_pairs, &old_root).into_keys().collect();
    assert_eq!(got, all, "with the old root the copy opens every record, the erased ones too");
    println!(
        "{} records, {} erased: current root opens {}, old root opens {}",
        all.len(),
        erased.len(),
        kept.len(),
        all.len()
    );
}
