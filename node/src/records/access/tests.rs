//! The access log at the record layer: one log key per subject shared by the validators,
//! entries listed with proofs from any node, entries that outlive the subject's erasure
//! and link to no one afterwards (forensic scan, coercive adversary).

use std::collections::{BTreeSet, HashMap};

use cairn_proto::KeyId;
use cairn_proto::access::{AccessAction, AccessEvent, Accessor, Disclosure, Outcome};
use cairn_proto::consent::Subject;
use cairn_proto::erasure::{ErasureScope, ErasureTrigger};
use cairn_proto::record::{ContentType, Manifest, RecordId};

use crate::records::wire::{Request, Response};

use super::store::{AccessLogHandle, NewEntry, day_of, expires_ms};
use super::{DayKey, LogKey, StoredLogKey, open_row, stored_log_key};
use crate::records::erasure::coordinator::round;
use crate::records::erasure::retention::sweep_retention;
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
    let day = DayKey { rid: RecordId([3; 16]), day: day_of(crate::clock::now_ms()), key: rand_bytes() };
    for outcome in [Outcome::Granted, Outcome::Refused] {
        let e = event(me, outcome, "TREAT");
        log.log(vec![NewEntry { key: key.clone(), day: day.clone(), event: e }]).await.unwrap();
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

/// Past the log's retention, a day's entries lose their events and the node's key for
/// that day is erased like a record — by the retention sweep, with a certificate that
/// verifies — so no kept copy of a sealed event opens again; the rows still count and
/// their receipts still verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_are_erased_with_a_certificate_of_their_day_key() {
    let sim = Sim::start(4, 2).await;
    let subject = Subject { gateway: gateway().public().key_id(), reference: "Patient/expiring".into() };
    let node = &sim.nodes[0];
    for outcome in [Outcome::Granted, Outcome::Refused] {
        node.log_access(&subject, event(sim.id(0), outcome, "TREAT")).await.unwrap();
    }
    let genesis = sim.ledger.genesis_for_tests().clone();
    sim.until("both entries committed", async || {
        let (list, _) = node.disclosures(&subject).await.unwrap();
        list.len() == 2 && list.iter().all(|e| e.receipt.is_some())
    })
    .await;
    let day = day_of(crate::clock::now_ms());
    let day_key = node.held_day_key(day).await.unwrap().expect("the day's key was made");
    let log_key = node.held_log_keys(&subject).await.unwrap().remove(0).1;
    let walked = node.access.log.walk(vec![log_key.clone()]).await.unwrap();
    assert_eq!(walked.len(), 2);
    assert!(walked.iter().all(|w| w.row.sealed_under == day_key.reference()));
    assert!(walked.iter().all(|w| open_row(&log_key, &day_key, &sim.id(0), w).is_some()), "positive control");
    // The subject's log key alone does not open an event.
    let other = DayKey { rid: day_key.rid, day, key: [0; 32] };
    assert!(walked.iter().all(|w| open_row(&log_key, &other, &sim.id(0), w).is_none()));

    // The day before the end of retention nothing happens; at its end the sweep starts
    // the day key's erasure (trigger retention_expired).
    let end = expires_ms(day, node.settings.log_retention_ms);
    assert!(end > crate::clock::now_ms() + 5 * 365 * 86_400_000, "six years by default");
    let jobs = sweep_retention(node, end - 1).await.unwrap();
    assert!(jobs.iter().all(|j| j.records.iter().all(|r| r.anchor.rid != day_key.rid)));
    assert!(node.disclosures(&subject).await.unwrap().0.iter().all(|e| e.entry.is_some()));
    let mut job = None;
    sim.until("the day key's erasure started", async || {
        job = sweep_retention(node, end)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.records.iter().any(|r| r.anchor.rid == day_key.rid));
        job.is_some()
    })
    .await;
    let job = job.unwrap();
    assert_eq!(job.trigger, ErasureTrigger::RetentionExpired);
    let mut pacing = Pacing::default();
    sim.until("the day key's erasure certified", async || {
        round(node, &mut pacing).await.unwrap();
        node.erasures.store.job(&job.id).unwrap().unwrap().complete()
    })
    .await;
    let certificates = node.erasures.store.certificates_of(&job.request_hash, &[day_key.rid]).unwrap();
    assert_eq!(certificates.len(), 1);
    certificates[0].verify(&genesis).unwrap();
    assert_eq!(certificates[0].record.rid, day_key.rid);
    assert_eq!(certificates[0].trigger, ErasureTrigger::RetentionExpired);

    // The key is gone from the index and the vault; the rows remain, without events, and
    // still verify; a copy of a sealed event taken before no longer opens here.
    assert!(node.held_day_key(day).await.unwrap().is_none());
    assert!(node.vault.documents().await.unwrap().iter().all(|r| r.header.rid != day_key.rid));
    let (list, _) = node.disclosures(&subject).await.unwrap();
    assert_eq!(list.len(), 2);
    for e in &list {
        assert!(e.entry.is_none(), "an expired entry keeps no event");
        e.receipt.clone().expect("committed").verify(&genesis).unwrap();
    }
    let rows = node.access_rows().await.unwrap();
    assert!(rows.iter().all(|(_, r)| r.sealed.is_none() && r.sealed_under == day_key.reference()));
    assert!(node.held_day_keys().await.unwrap().is_empty());
    // The regulator's view: the day key, not held, with its certificate.
    let states = node.day_key_states(&rows).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!((states[0].record, states[0].held, states[0].day), (Some(day_key.rid), false, day));
    assert_eq!(states[0].certificate.as_ref(), Some(&certificates[0]));
}

/// Erasing some of a subject's readings is written in the subject's access log by the
/// coordinator (action `erase`, naming the request's hash and the records), and the
/// request's certificates can be had from it by that hash — what the export carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_of_some_readings_is_in_the_subjects_log_with_its_certificates() {
    let sim = Sim::start(4, 2).await;
    let g = gateway().public().key_id();
    let reference = "Patient/partly-erased";
    let ingested = sim.ingest(0, &gateway(), reference, 3).await.unwrap();
    let subject = Subject { gateway: g, reference: reference.into() };
    let gone = ingested[0].rid;
    // A subject nobody read has no access log, and an erasure makes none.
    let mut first_job = None;
    sim.until("a first erasure accepted", async || {
        first_job = accept::accept(
            &sim.nodes[1],
            g,
            ErasureScope::Records(vec![ingested[2].rid]),
            ErasureTrigger::SubjectRequest,
            crate::clock::now_ms(),
        )
        .await
        .ok();
        first_job.is_some()
    })
    .await;
    assert!(sim.nodes[3].disclosures(&subject).await.unwrap().0.is_empty());
    for n in &sim.nodes {
        assert!(n.held_log_keys(&subject).await.unwrap().is_empty(), "no log key made for an erasure");
    }
    // Once the subject was read, the next erasure is in their log.
    sim.nodes[0].log_access(&subject, event(sim.id(0), Outcome::Granted, "TREAT")).await.unwrap();
    let mut job = None;
    sim.until("the erasure accepted", async || {
        job = accept::accept(
            &sim.nodes[1],
            g,
            ErasureScope::Records(vec![gone]),
            ErasureTrigger::SubjectRequest,
            crate::clock::now_ms(),
        )
        .await
        .ok();
        job.is_some()
    })
    .await;
    let job = job.unwrap();
    let (list, _) = sim.nodes[3].disclosures(&subject).await.unwrap();
    let erase: Vec<_> =
        list.iter().filter_map(|e| e.entry.as_ref()).filter(|e| e.event.action != AccessAction::Search).collect();
    assert_eq!(erase.len(), 1, "one event besides the read: the erasure");
    let e = &erase[0].event;
    assert_eq!(e.action, AccessAction::Erase { request: job.request_hash, trigger: ErasureTrigger::SubjectRequest });
    assert_eq!(e.records, vec![gone]);
    assert_eq!(e.accessor, Accessor::Gateway { key: g });
    assert_eq!(e.node, sim.id(1));
    assert!(
        sim.nodes[1].erasures.store.certificates_of(&job.request_hash, &[gone]).unwrap().is_empty(),
        "not yet certified"
    );
    let mut pacing = Pacing::default();
    let coordinator = sim.nodes[1].clone();
    sim.until("the erasure certified", async || {
        round(&coordinator, &mut pacing).await.unwrap();
        coordinator.erasures.store.job(&job.id).unwrap().unwrap().complete()
    })
    .await;
    let genesis = sim.ledger.genesis_for_tests().clone();
    let asked = sim.nodes[3].ask(sim.id(1), Request::ErasureCertificates(job.request_hash, vec![gone])).await.unwrap();
    let Response::ErasureCertificates(certificates) = asked else { panic!("{asked:?}") };
    assert_eq!(certificates.len(), 1);
    certificates[0].verify(&genesis).unwrap();
    assert_eq!(certificates[0].record.rid, gone);
    // Only the records asked for: a request may cover other subjects' records.
    let kept = ingested[1].rid;
    assert!(sim.nodes[1].erasures.store.certificates_of(&job.request_hash, &[kept]).unwrap().is_empty());
    // A whole-subject erasure logs nothing: it takes the log key with it.
    let before = sim.nodes[0].access_rows().await.unwrap().len() + sim.nodes[1].access_rows().await.unwrap().len();
    let scope = ErasureScope::Subject { gateway: g, local: reference.into() };
    accept::accept(&sim.nodes[0], g, scope, ErasureTrigger::SubjectRequest, crate::clock::now_ms()).await.unwrap();
    let after = sim.nodes[0].access_rows().await.unwrap().len() + sim.nodes[1].access_rows().await.unwrap().len();
    assert_eq!(before, after);
}
