//! The access log at the record layer: one log key per subject shared by the validators,
//! entries listed with proofs from any node, entries that outlive the subject's erasure
//! and link to no one afterwards (forensic scan, coercive adversary).

use std::collections::{BTreeSet, HashMap};

use cairn_proto::KeyId;
use cairn_proto::access::{AccessAction, AccessEvent, Accessor, Disclosure, Outcome};
use cairn_proto::consent::Subject;
use cairn_proto::erasure::{ErasureScope, ErasureTrigger};
use cairn_proto::record::{ContentType, Manifest, RecordId};

use super::store::{AccessLogHandle, NewEntry};
use super::{LogKey, StoredLogKey, stored_log_key};
use crate::records::erasure::coordinator::round;
use crate::records::erasure::{Pacing, accept};
use crate::records::sim::{Sim, gateway};
use crate::vault::tests::adversary::{copy_dir, harvest, recover};
use crate::vault::{NewRecord, SubjectRef, Vault, VaultConfig};

fn event(node: KeyId, outcome: Outcome, purpose: &str) -> AccessEvent {
    AccessEvent {
        version: 1,
        recorded_ms: crate::clock::now_ms(),
        node,
        action: AccessAction::Search,
        outcome,
        purpose: purpose.into(),
        accessor: Accessor::Organisation { name: "org1".into(), key: KeyId([9; 16]) },
        basis: Some(RecordId([8; 16])),
        records: vec![RecordId([7; 16])],
        withheld: 0,
        reason: (outcome == Outcome::Refused).then(|| "purpose_not_consented".into()),
        justification: None,
        trace: vec!["consent 08…".into()],
    }
}

/// Every file under `dir`, read whole.
fn files(dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_share_one_key_list_with_proofs_and_outlive_the_subjects_erasure_unlinkable() {
    let sim = Sim::start(4, 2).await;
    let g = gateway().public().key_id();
    let reference = "Patient/log-7f3a9c";
    sim.ingest(0, &gateway(), reference, 1).await.unwrap();
    let subject = Subject { gateway: g, reference: reference.into() };
    // Three events at two nodes: the first creates the subject's log key at every node.
    let mut handles = Vec::new();
    for (i, outcome, purpose) in
        [(0, Outcome::Granted, "TREAT"), (1, Outcome::Refused, "HRESCH"), (0, Outcome::BreakGlass, "ETREAT")]
    {
        handles.push(sim.nodes[i].log_access(&subject, event(sim.id(i), outcome, purpose)).await.unwrap());
    }
    let mut keys = BTreeSet::new();
    let mut holders = 0;
    for n in &sim.nodes {
        let held = n.held_log_keys(&subject).await.unwrap();
        holders += usize::from(!held.is_empty());
        keys.extend(held.into_iter().map(|(id, k)| (id, *k.bytes())));
    }
    assert_eq!(keys.len(), 1, "one key for the subject, made once and found by the second node");
    assert!(holders >= 3, "the key is held at n − f validators: {holders}");
    let (key_id, key_bytes) = keys.into_iter().next().unwrap();

    // Any node lists every entry, each with its event and a proof that verifies.
    let genesis = sim.ledger.genesis_for_tests().clone();
    sim.until("every entry committed", async || {
        let (list, _) = sim.nodes[3].disclosures(&subject).await.unwrap();
        list.len() == 3 && list.iter().all(|e| e.receipt.is_some())
    })
    .await;
    let (list, missing) = sim.nodes[3].disclosures(&subject).await.unwrap();
    assert!(missing.is_empty());
    let outcomes: BTreeSet<Outcome> = list.iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [Outcome::Granted, Outcome::Refused, Outcome::BreakGlass].into_iter().collect());
    for e in &list {
        let d = Disclosure { entry: e.entry.clone().unwrap(), receipt: e.receipt.clone() };
        d.verify(&genesis).unwrap();
        assert!(handles.contains(&e.handle));
    }
    // A tampered event does not verify.
    let mut forged = Disclosure { entry: list[0].entry.clone().unwrap(), receipt: list[0].receipt.clone() };
    forged.entry.event.purpose = "HMARKT".into();
    assert!(forged.verify(&genesis).is_err());
    let rows_before: HashMap<_, _> = {
        let mut m = HashMap::new();
        for i in 0..2 {
            for (h, r) in sim.nodes[i].access_rows().await.unwrap() {
                m.insert(h, r.leaf(&h));
            }
        }
        m
    };
    assert_eq!(rows_before.len(), 3);

    // The subject is erased: the key record goes with the readings.
    let scope = ErasureScope::Subject { gateway: g, local: reference.into() };
    let job =
        accept::accept(&sim.nodes[0], g, scope, ErasureTrigger::SubjectRequest, crate::clock::now_ms()).await.unwrap();
    assert!(job.records.iter().any(|r| r.anchor.rid == key_id), "the log key is erased with the subject");
    let mut pacing = Pacing::default();
    let records = sim.nodes[0].clone();
    sim.until("the subject's erasure certified", async || {
        round(&records, &mut pacing).await.unwrap();
        records.erasures.store.job(&job.id).unwrap().unwrap().complete()
    })
    .await;
    for n in &sim.nodes {
        assert!(n.held_log_keys(&subject).await.unwrap().is_empty());
    }
    // The entries still count and verify; the subject's log is empty to everyone.
    let mut after = HashMap::new();
    for i in 0..2 {
        let rows = sim.nodes[i].access_rows().await.unwrap();
        for ((h, r), receipt) in rows.iter().zip(sim.nodes[i].access_receipts(&rows).await.unwrap()) {
            receipt.expect("committed").verify(&genesis).unwrap();
            after.insert(*h, r.leaf(h));
        }
    }
    assert_eq!(after, rows_before, "no entry lost or rewritten");
    assert!(sim.nodes[2].disclosures(&subject).await.unwrap().0.is_empty());

    // Forensic scan of every file of every node: neither the log key nor the subject
    // reference remains (the handles do, by design: they name no one).
    let mut all = Vec::new();
    files(sim.dir(), &mut all);
    let needles: [(&str, &[u8]); 2] = [("log key", &key_bytes), ("subject reference", reference.as_bytes())];
    for (file, bytes) in &all {
        for (name, n) in needles {
            assert!(!bytes.windows(n.len()).any(|w| w == n), "{name} found in {file}");
        }
    }
    assert!(all.iter().map(|(_, b)| b.len()).sum::<usize>() > 100_000);
}

/// The coercive adversary copies a node's disk before the erasure and later obtains its
/// current root: the log key is out of reach, so no handle of the log can be derived and
/// no entry linked to the patient. With the root of the copy's time (the positive
/// control) the key opens and its handles match the log's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_disk_copy_and_the_current_root_link_no_entry_to_the_patient() {
    let live = tempfile::tempdir().unwrap();
    let me = KeyId([1; 16]);
    let config = || VaultConfig { fanout: 4, bucket_slots: 8, ..VaultConfig::default() };
    let key = LogKey::from_bytes(rand_bytes());
    let subject = SubjectRef { gateway: KeyId([7; 16]), local: "Patient/coerced".into() };
    let payload = cairn_proto::encoding::encode(&StoredLogKey { version: 1, key: key.clone() }).unwrap();
    let record = NewRecord {
        gateway: subject.gateway,
        content_type: ContentType::AccessLogKey,
        purpose: "HOPERAT".into(),
        received_at_ms: 1,
        retain_until_ms: u64::MAX,
        subject: Some(subject.clone()),
        manifest: Manifest::new(vec![me, KeyId([2; 16])]).unwrap(),
        payload,
    };
    let vault_dir = live.path().join("vault");
    let (rid, old_root) = {
        let mut v = Vault::open_dir(&vault_dir, config()).unwrap();
        let rid = v.put_batch(vec![record]).unwrap()[0].rid;
        // Other records, kept, so the current root still opens something.
        v.put_batch((0..20).map(|_| crate::vault::tests::reading("kept", Some("Patient/other"))).collect()).unwrap();
        (rid, v.root_key())
    };
    let log = AccessLogHandle::spawn(&live.path().join("access-log.redb"), me, u64::MAX / 2).unwrap();
    for outcome in [Outcome::Granted, Outcome::Refused] {
        log.log(vec![NewEntry { key: key.clone(), event: event(me, outcome, "TREAT") }]).await.unwrap();
    }
    let rows: BTreeSet<_> = log.all().await.unwrap().into_iter().map(|(h, _)| h).collect();
    let before = tempfile::tempdir().unwrap();
    copy_dir(&vault_dir, before.path());

    let current_root = {
        let mut v = Vault::open_dir(&vault_dir, config()).unwrap();
        v.erase(&[rid]).unwrap();
        v.root_key()
    };
    // Every payload the adversary opens with the current root, from the old copy and the
    // live store: none is a log key, none derives a handle of the log.
    let pairs = harvest(&[before.path(), &vault_dir]);
    let opened = recover(&pairs, &current_root);
    assert!(!opened.is_empty(), "the current root opens the kept records");
    assert!(!opened.contains_key(&rid));
    let linked = |opened: &std::collections::BTreeMap<RecordId, Vec<u8>>| {
        opened
            .values()
            .filter_map(|p| stored_log_key(ContentType::AccessLogKey, p))
            .any(|k| rows.contains(&k.handle(&me, 0)))
    };
    assert!(!linked(&opened), "an entry linked with the current root");
    // Positive control: the copy's own root opens the key, and its handles are the rows.
    let old = recover(&harvest(&[before.path()]), &old_root);
    assert!(linked(&old), "with the old root the entries link to the key");
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    b
}
