//! Replication, erasure propagation and refusals across custodians, on the in-process
//! consortium of [`super::sim`]: no processes, milliseconds per scenario.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use cairn_proto::erasure::{ErasureScope, ErasureTrigger};

use super::RecordsError;
use super::erasure::coordinator::round;
use super::erasure::{ErasureError, Job, Pacing, accept};
use super::sim::{Sim, gateway, other_gateway};
use super::wire::{Request, Response};
use crate::vault::VaultError;

/// Runs coordinator rounds at `node` until `done(job)` holds; returns the job.
async fn rounds_until(
    sim: &Sim,
    node: usize,
    pacing: &mut Pacing,
    id: [u8; 16],
    what: &str,
    done: impl Fn(&Job) -> bool,
) -> Job {
    let records = sim.nodes[node].clone();
    let mut last = None;
    sim.until(what, async || {
        round(&records, pacing).await.unwrap();
        let job = records.erasures.store.job(&id).unwrap().unwrap();
        let ok = done(&job);
        last = Some(job);
        ok
    })
    .await;
    last.unwrap()
}

/// One reading of `subject` stored through node 0 and anchored; its id and gateway.
async fn anchored_record(sim: &Sim, subject: &str) -> (cairn_proto::record::RecordId, cairn_proto::KeyId) {
    let stored = sim.ingest(0, &gateway(), subject, 1).await.unwrap();
    let (rid, g) = (stored[0].rid, gateway().public().key_id());
    sim.until("anchored", async || sim.nodes[0].read_here(rid, g).await.unwrap().receipt.is_some()).await;
    (rid, g)
}

/// A subject's request to erase `rid`, accepted at node 0.
async fn erase_record(sim: &Sim, rid: cairn_proto::record::RecordId) -> Job {
    let g = gateway().public().key_id();
    let scope = ErasureScope::Records(vec![rid]);
    accept::accept(&sim.nodes[0], g, scope, ErasureTrigger::SubjectRequest, crate::clock::now_ms()).await.unwrap()
}

fn state(job: &Job, custodian: cairn_proto::KeyId) -> (bool, bool, Option<String>) {
    let r = &job.records[0];
    let i = r.anchor.manifest.custodians.iter().position(|c| *c == custodian).unwrap();
    (r.receipts[i].is_some(), r.committed[i].is_some(), r.errors[i].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_stored_at_home_and_the_next_connected_custodian_or_refused() {
    let sim = Sim::start(4, 2).await;
    let stored = sim.ingest(0, &gateway(), "Patient/a", 3).await.unwrap();
    assert_eq!(stored.len(), 3);
    for r in &stored {
        let mut at = Vec::new();
        for node in &sim.nodes {
            at.push(node.vault.get(r.rid).await.is_ok());
        }
        assert_eq!(at, [true, true, false, false], "home and the next validator in genesis order");
    }
    // The next one down: the one after it is chosen.
    sim.net.set_down(sim.id(1), true);
    let stored = sim.ingest(0, &gateway(), "Patient/a", 1).await.unwrap();
    assert!(sim.nodes[2].vault.get(stored[0].rid).await.is_ok());
    assert!(matches!(sim.nodes[1].vault.get(stored[0].rid).await, Err(VaultError::NotFound(_))));
    // Too few reachable: refused, nothing stored at home.
    for i in 1..4 {
        sim.net.set_down(sim.id(i), true);
    }
    let before = sim.nodes[0].vault.ids().await.unwrap().len();
    match sim.ingest(0, &gateway(), "Patient/a", 1).await {
        Err(RecordsError::Unavailable(m)) => assert!(m.contains("1 of the 2 custodians"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(sim.nodes[0].vault.ids().await.unwrap().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custodian_refuses_replicas_from_a_node_its_manifest_does_not_name() {
    let sim = Sim::start(3, 2).await;
    let stored = sim.ingest(0, &gateway(), "Patient/b", 1).await.unwrap();
    let replica_of = sim.nodes[1].vault.get(stored[0].rid).await.unwrap();
    assert_eq!(replica_of.manifest.custodians.len(), 2);
    // Node 2 is not a custodian of records sealed by 0 for {0, 1}: a replica "from" 0
    // sent to 2 is refused; so is one from 2 (not named) to 1.
    let replicas = sim.nodes[0]
        .vault
        .seal(vec![crate::vault::NewRecord {
            gateway: gateway().public().key_id(),
            content_type: cairn_proto::record::ContentType::FhirObservationJson,
            purpose: "TREAT".into(),
            received_at_ms: 1,
            retain_until_ms: 2,
            subject: None,
            manifest: replica_of.manifest.clone(),
            payload: b"{}".to_vec(),
        }])
        .await
        .unwrap();
    let answer = sim.nodes[2].serve(sim.id(0), Request::Replicate(replicas.clone())).await;
    assert!(matches!(&answer, Response::Error(m) if m.contains("custodians")), "{answer:?}");
    let answer = sim.nodes[1].serve(sim.id(2), Request::Replicate(replicas)).await;
    assert!(matches!(&answer, Response::Error(m) if m.contains("custodians")), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_reaches_a_custodian_that_was_down_once_it_is_back_and_is_certified() {
    let sim = Sim::start(4, 2).await;
    let stored = sim.ingest(0, &gateway(), "Patient/c", 1).await.unwrap();
    let rid = stored[0].rid;
    let (home, other) = (sim.id(0), sim.id(1));
    // Wait for the anchor receipt (the request needs it), then take custodian 1 down.
    sim.until("anchored", async || {
        sim.nodes[0].read_here(rid, gateway().public().key_id()).await.unwrap().receipt.is_some()
    })
    .await;
    sim.net.set_down(other, true);
    let job = accept::accept(
        &sim.nodes[0],
        gateway().public().key_id(),
        ErasureScope::Records(vec![rid]),
        ErasureTrigger::PurposeAchieved,
        crate::clock::now_ms(),
    )
    .await
    .unwrap();
    let mut pacing = Pacing::default();
    let job = rounds_until(&sim, 0, &mut pacing, job.id, "home committed", |j| state(j, home).1).await;
    let (signed, committed, error) = state(&job, other);
    assert!(!signed && !committed);
    assert!(error.unwrap().contains("unreachable"), "the down custodian is reported unreachable");
    assert_eq!(sim.net.delivered(other, "erase"), 0, "a custodian that is not connected is not asked");
    assert!(job.certificates().is_none());
    assert!(matches!(sim.nodes[0].vault.get(rid).await, Err(VaultError::NotFound(_))), "erased at home");

    // Back: asked at once (not paced), erases, its receipt is committed, certified.
    sim.net.set_down(other, false);
    let job = rounds_until(&sim, 0, &mut pacing, job.id, "certified", Job::complete).await;
    assert!(matches!(sim.nodes[1].vault.get(rid).await, Err(VaultError::NotFound(_))), "erased at the other");
    let certificates = job.certificates().unwrap();
    assert_eq!(certificates.len(), 1);
    certificates[0].verify(sim.ledger.genesis_for_tests()).unwrap();
    assert_eq!(certificates[0].erasures.len(), 2, "one committed receipt per custodian");
    assert_eq!(sim.nodes[0].counters.erasure_certificates.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_over_a_record_of_an_open_request_is_refused_naming_it() {
    let sim = Sim::start(3, 2).await;
    let stored = sim.ingest(0, &gateway(), "Patient/d", 2).await.unwrap();
    let g = gateway().public().key_id();
    sim.until("anchored", async || sim.nodes[0].read_here(stored[1].rid, g).await.unwrap().receipt.is_some()).await;
    sim.net.set_down(sim.id(1), true); // keeps the first request open
    let first =
        accept::accept(&sim.nodes[0], g, ErasureScope::Records(vec![stored[0].rid]), ErasureTrigger::SubjectRequest, 1)
            .await
            .unwrap();
    let overlapping = ErasureScope::Records(vec![stored[1].rid, stored[0].rid]);
    match accept::accept(&sim.nodes[0], g, overlapping.clone(), ErasureTrigger::SubjectRequest, 2).await {
        Err(ErasureError::InProgress(id)) => assert_eq!(id, first.id_hex()),
        other => panic!("expected InProgress, got {other:?}"),
    }
    // By subject too (the subject's records include the one being erased).
    match accept::accept(
        &sim.nodes[0],
        g,
        ErasureScope::Subject { gateway: g, local: "Patient/d".into() },
        ErasureTrigger::SubjectRequest,
        3,
    )
    .await
    {
        Err(ErasureError::InProgress(id)) => assert_eq!(id, first.id_hex()),
        other => panic!("expected InProgress, got {other:?}"),
    }
    // Another gateway learns nothing: not found.
    let o = other_gateway().public().key_id();
    assert!(matches!(
        accept::accept(&sim.nodes[0], o, overlapping, ErasureTrigger::SubjectRequest, 4).await,
        Err(ErasureError::NotFound(_))
    ));
    // Nothing else was stored: one open job.
    assert_eq!(sim.nodes[0].erasures.store.open_jobs().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custodian_that_refuses_is_asked_again_after_a_pause_and_the_job_completes_once_it_answers() {
    let sim = Sim::start(2, 2).await;
    let other = sim.id(1);
    let (rid, _) = anchored_record(&sim, "Patient/e").await;
    sim.net.set_refusing(other, true);
    let job = erase_record(&sim, rid).await;
    let mut pacing = Pacing::default();
    round(&sim.nodes[0], &mut pacing).await.unwrap();
    assert_eq!(sim.net.delivered(other, "erase"), 1);
    let stored_job = sim.nodes[0].erasures.store.job(&job.id).unwrap().unwrap();
    assert!(state(&stored_job, other).2.unwrap().contains("refused"), "the refusal is in the status");
    let (at, pause) = pacing.next_ask(&(job.id, other)).expect("paced");
    assert_eq!(pause, super::erasure::job::ROUND);
    // Rounds during the pause do not ask it again.
    round(&sim.nodes[0], &mut pacing).await.unwrap();
    round(&sim.nodes[0], &mut pacing).await.unwrap();
    assert_eq!(sim.net.delivered(other, "erase"), 1, "not asked while pausing");
    // Still refusing after the pause: asked once more, and the pause doubles.
    tokio::time::sleep_until(at).await;
    round(&sim.nodes[0], &mut pacing).await.unwrap();
    assert_eq!(sim.net.delivered(other, "erase"), 2);
    assert_eq!(pacing.next_ask(&(job.id, other)).unwrap().1, pause * 2);
    // It recovers: after the pause it answers and the job completes.
    sim.net.set_refusing(other, false);
    tokio::time::sleep_until(pacing.next_ask(&(job.id, other)).unwrap().0).await;
    let job = rounds_until(&sim, 0, &mut pacing, job.id, "certified", Job::complete).await;
    job.certificates().unwrap()[0].verify(sim.ledger.genesis_for_tests()).unwrap();
    assert!(pacing.next_ask(&(job.id, other)).is_none(), "forgotten once it answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custodian_that_never_answers_is_unreachable_after_the_request_timeout_and_paced() {
    let sim = Sim::start(2, 2).await;
    let other = sim.id(1);
    let (rid, _) = anchored_record(&sim, "Patient/g").await;
    sim.net.set_silent(other, true);
    let job = erase_record(&sim, rid).await;
    let mut pacing = Pacing::default();
    let started = tokio::time::Instant::now();
    round(&sim.nodes[0], &mut pacing).await.unwrap();
    let erase = super::wire::Request::Erase(vec![]);
    assert!(started.elapsed() >= super::sim::SimNet::timeout(&erase), "the round waited for the timeout");
    let stored_job = sim.nodes[0].erasures.store.job(&job.id).unwrap().unwrap();
    let error = state(&stored_job, other).2.unwrap();
    assert!(error.contains("unreachable") && error.contains("not delivered"), "{error}");
    assert!(pacing.next_ask(&(job.id, other)).is_some(), "a hung custodian is paced like a refusing one");
    // Replication to a hung custodian fails the same way: not acknowledged.
    match sim.ingest(0, &gateway(), "Patient/g", 1).await {
        Err(RecordsError::Unavailable(m)) => assert!(m.contains("unreachable") && m.contains("not delivered"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    sim.net.set_silent(other, false);
    tokio::time::sleep_until(pacing.next_ask(&(job.id, other)).unwrap().0).await;
    rounds_until(&sim, 0, &mut pacing, job.id, "certified", Job::complete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_by_subject_finds_the_records_at_every_custodian_and_refuses_when_too_many_are_out_of_reach() {
    let sim = Sim::start(4, 2).await;
    let g = gateway().public().key_id();
    // Two readings of the subject through two home nodes: custodians {0,1} and {2,3}.
    let a = sim.ingest(0, &gateway(), "Patient/f", 1).await.unwrap();
    let b = sim.ingest(2, &gateway(), "Patient/f", 1).await.unwrap();
    sim.ingest(0, &gateway(), "Patient/other", 1).await.unwrap();
    for (node, rid) in [(0, a[0].rid), (2, b[0].rid)] {
        sim.until("anchored", async || sim.nodes[node].read_here(rid, g).await.unwrap().receipt.is_some()).await;
    }
    let subject = ErasureScope::Subject { gateway: g, local: "Patient/f".into() };
    // Two of four out of reach (replication 2): some record may have no custodian left.
    sim.net.set_down(sim.id(2), true);
    sim.net.set_down(sim.id(3), true);
    assert!(matches!(
        accept::accept(&sim.nodes[0], g, subject.clone(), ErasureTrigger::SubjectRequest, 1).await,
        Err(ErasureError::Unavailable(_))
    ));
    sim.net.set_down(sim.id(2), false);
    sim.net.set_down(sim.id(3), false);
    let job = accept::accept(&sim.nodes[0], g, subject, ErasureTrigger::SubjectRequest, crate::clock::now_ms())
        .await
        .unwrap();
    let mut rids: Vec<_> = job.records.iter().map(|r| r.anchor.rid).collect();
    rids.sort();
    let mut expected = vec![a[0].rid, b[0].rid];
    expected.sort();
    assert_eq!(rids, expected, "exactly the subject's records, wherever they are held");
    let mut pacing = Pacing::default();
    rounds_until(&sim, 0, &mut pacing, job.id, "certified", Job::complete).await;
    for (i, rid) in [(0, a[0].rid), (1, a[0].rid), (2, b[0].rid), (3, b[0].rid)] {
        assert!(matches!(sim.nodes[i].vault.get(rid).await, Err(VaultError::NotFound(_))), "erased at {i}");
    }
    assert_eq!(
        sim.nodes[0]
            .subject_here(crate::vault::SubjectRef { gateway: g, local: "Patient/other".into() })
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A custodian that erased a record and crashed before storing its receipt answers the
/// order again with a receipt from the intent's keystore epoch; asked again, it answers
/// the same receipt from its store; a record it never held is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_interrupted_before_its_receipt_is_completed_from_its_intent() {
    use super::erasure::custodian::erase_here;
    use super::erasure::{EraseAnswer, EraseOrder};
    let sim = Sim::start(1, 1).await;
    let records = &sim.nodes[0];
    let me = records.me;
    let record = crate::vault::NewRecord {
        gateway: cairn_proto::Keypair::from_seed(&cairn_proto::SecretSeed::from_bytes([9; 32])).public().key_id(),
        content_type: cairn_proto::record::ContentType::FhirObservationJson,
        purpose: "TREAT".into(),
        received_at_ms: 1_000,
        retain_until_ms: 2_000,
        subject: None,
        manifest: cairn_proto::record::Manifest::new(vec![me]).unwrap(),
        payload: b"{}".to_vec(),
    };
    let vault = &sim.nodes[0].vault;
    let replicas = vault.seal(vec![record]).await.unwrap();
    let stored = vault.store(replicas).await.unwrap();
    let (rid, leaf) = (stored[0].rid, stored[0].leaf);
    let order = EraseOrder {
        request_hash: cairn_proto::Hash32([5; 32]),
        trigger: cairn_proto::erasure::ErasureTrigger::SubjectRequest,
        requested_at_ms: 3_000,
        deadline_ms: 4_000,
        rid,
        leaf,
    };
    // The intent is written, the vault erases, then the process "crashes".
    let before = vault.epoch().await.unwrap();
    records.erasures.store.put_intents(&[order.key()], before).unwrap();
    vault.erase(vec![rid]).await.unwrap();
    let after = vault.epoch().await.unwrap();
    assert!(after > before);

    let answer = erase_here(records, vec![order.clone()]).await;
    let receipt = match &answer[..] {
        [EraseAnswer::Signed(r)] => r.clone(),
        other => panic!("expected a signed receipt: {other:?}"),
    };
    assert_eq!((receipt.body.epoch_before, receipt.body.epoch_after), (before, after));
    assert_eq!((receipt.body.custodian, receipt.body.record_leaf), (me, leaf));
    receipt.verify(&cairn_proto::Keypair::from_seed(&super::sim::seed(0)).public()).unwrap();
    // Asked again, the same receipt comes from the store: still waiting for its batch,
    // or already committed (the sim anchors every 5 ms, so either may be seen).
    match &erase_here(records, vec![order.clone()]).await[..] {
        [EraseAnswer::Signed(again)] => assert_eq!(*again, receipt, "answered from the store"),
        [EraseAnswer::Committed(c)] => assert_eq!(c.receipt, receipt, "answered from the store"),
        other => panic!("{other:?}"),
    }
    let unknown =
        EraseOrder { rid: cairn_proto::record::RecordId([3; 16]), leaf: cairn_proto::Hash32([3; 32]), ..order };
    match &erase_here(records, vec![unknown]).await[..] {
        [EraseAnswer::Refused(why)] => assert!(why.contains("holds no such record"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// The retention sweep reads the vault a page of ids at a time: a record erased after the
/// ids were listed is skipped, not an error; a record whose retention has not ended is
/// not returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_page_skips_records_erased_since_the_ids_were_listed() {
    let sim = Sim::start(1, 1).await;
    let me = sim.nodes[0].me;
    let record = |retain_until_ms: u64| crate::vault::NewRecord {
        gateway: cairn_proto::Keypair::from_seed(&cairn_proto::SecretSeed::from_bytes([9; 32])).public().key_id(),
        content_type: cairn_proto::record::ContentType::FhirObservationJson,
        purpose: "TREAT".into(),
        received_at_ms: 1_000,
        retain_until_ms,
        subject: None,
        manifest: cairn_proto::record::Manifest::new(vec![me]).unwrap(),
        payload: b"{}".to_vec(),
    };
    let vault = &sim.nodes[0].vault;
    let replicas = vault.seal(vec![record(2_000), record(2_000), record(9_000)]).await.unwrap();
    let stored = vault.store(replicas).await.unwrap();
    let ids = vault.ids().await.unwrap();
    assert_eq!(ids.len(), 3);
    vault.erase(vec![stored[0].rid]).await.unwrap();
    let (expired, more) = vault.expired(5_000, None, 10).await.unwrap();
    assert_eq!(expired.iter().map(|r| r.header.rid).collect::<Vec<_>>(), vec![stored[1].rid]);
    assert!(more.is_none());
    assert_eq!(vault.expired(10_000, None, 10).await.unwrap().0.len(), 2, "later, the third one too");
    // A page at a time: the cursor of a full page leads to the rest.
    let (first, cursor) = vault.expired(10_000, None, 1).await.unwrap();
    let (second, last) = vault.expired(10_000, cursor, 1).await.unwrap();
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(first[0].header.rid, second[0].header.rid);
    assert!(vault.expired(10_000, last, 1).await.unwrap().0.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_stored_once_whichever_node_receives_it() {
    use super::claims::{Claimed, claim_id};
    let sim = Sim::start(4, 2).await;
    let g = gateway().public().key_id();
    let (id, body, other_body) = (claim_id(g, "batch-1"), cairn_proto::Hash32([1; 32]), cairn_proto::Hash32([2; 32]));
    assert_eq!(sim.nodes[0].claim(id, body).await, Claimed::Fresh);
    // Failed over to another node while the first is still storing: in progress.
    assert_eq!(sim.nodes[2].claim(id, body).await, Claimed::InProgress);
    // Retried at the same node while it is still storing: in progress too.
    assert_eq!(sim.nodes[0].claim(id, body).await, Claimed::InProgress);
    // The first node stores and settles; a retry at any node gets its answer.
    sim.nodes[0].settle(id, body, Some(b"{\"count\":1}".to_vec())).await;
    for node in [1, 2, 3, 0] {
        assert_eq!(sim.nodes[node].claim(id, body).await, Claimed::Replay(b"{\"count\":1}".to_vec()), "node {node}");
    }
    // The same key with another body is refused anywhere.
    assert_eq!(sim.nodes[3].claim(id, other_body).await, Claimed::Reused);
    // The node that stored it restarts and forgets: the others still answer.
    sim.nodes[0].claims.forget_all();
    assert_eq!(sim.nodes[0].claim(id, body).await, Claimed::Replay(b"{\"count\":1}".to_vec()));
    // One faulty validator alone can neither fake a stored answer nor block a key.
    let id4 = claim_id(g, "batch-4");
    sim.nodes[3].claims.take(id4, other_body, sim.id(3), crate::clock::now_ms());
    sim.nodes[3].claims.settle(id4, other_body, sim.id(3), Some(b"{\"forged\":true}".to_vec()));
    assert_eq!(sim.nodes[1].claim(id4, body).await, Claimed::Fresh, "one report is not believed");
    sim.nodes[1].settle(id4, body, None).await;

    // A released claim (the batch failed) may be claimed again elsewhere.
    let id2 = claim_id(g, "batch-2");
    assert_eq!(sim.nodes[1].claim(id2, body).await, Claimed::Fresh);
    sim.nodes[1].settle(id2, body, None).await;
    assert_eq!(sim.nodes[3].claim(id2, body).await, Claimed::Fresh);

    // Without a majority of validators a keyed batch is not stored.
    sim.net.set_down(sim.id(1), true);
    sim.net.set_down(sim.id(2), true);
    assert!(matches!(sim.nodes[0].claim(claim_id(g, "batch-3"), body).await, Claimed::Unavailable(_)));
    // ... and the claim it made is released: with the majority back, it goes ahead.
    sim.net.set_down(sim.id(1), false);
    sim.net.set_down(sim.id(2), false);
    assert_eq!(sim.nodes[3].claim(claim_id(g, "batch-3"), body).await, Claimed::Fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legal_hold_blocks_every_erasure_trigger_and_pauses_one_accepted_before_it() {
    let sim = Sim::start(3, 2).await;
    let g = gateway().public().key_id();
    let stored = sim.ingest(0, &gateway(), "Patient/h", 2).await.unwrap();
    for r in &stored {
        sim.until("anchored", async || sim.nodes[0].read_here(r.rid, g).await.unwrap().receipt.is_some()).await;
    }
    let held = ErasureScope::Records(vec![stored[0].rid]);
    accept::hold(&sim.nodes[0], g, &held, true, 1).await.unwrap();
    let subject = || ErasureScope::Subject { gateway: g, local: "Patient/h".into() };
    // Asked at another node than the one that placed the hold, by every trigger.
    for (node, scope, trigger) in [
        (1, subject(), ErasureTrigger::SubjectRequest),
        (2, held.clone(), ErasureTrigger::PurposeAchieved),
        (1, subject(), ErasureTrigger::ConsentWithdrawn),
    ] {
        match accept::accept(&sim.nodes[node], g, scope, trigger, 2).await {
            Err(ErasureError::Held(rids)) => assert_eq!(rids, vec![stored[0].rid]),
            other => panic!("{trigger:?}: expected Held, got {other:?}"),
        }
    }
    match accept::consent_withdrawn(&sim.nodes[0], g, g, "Patient/h".into(), 3).await {
        Err(ErasureError::Held(rids)) => assert_eq!(rids, vec![stored[0].rid]),
        other => panic!("expected Held, got {other:?}"),
    }
    // Nothing was erased; the record not held can be erased by id.
    assert!(sim.nodes[0].read_here(stored[0].rid, g).await.is_ok());
    let rest =
        accept::accept(&sim.nodes[0], g, ErasureScope::Records(vec![stored[1].rid]), ErasureTrigger::SubjectRequest, 4)
            .await
            .unwrap();
    let mut pacing = Pacing::default();
    rounds_until(&sim, 0, &mut pacing, rest.id, "the rest certified", |j| j.complete()).await;

    // A hold placed after an erasure was accepted pauses it at the custodians until lifted.
    let stored = sim.ingest(0, &gateway(), "Patient/k", 1).await.unwrap();
    let rid = stored[0].rid;
    sim.until("anchored", async || sim.nodes[0].read_here(rid, g).await.unwrap().receipt.is_some()).await;
    let job = erase_record(&sim, rid).await;
    accept::hold(&sim.nodes[0], g, &ErasureScope::Records(vec![rid]), true, 5).await.unwrap();
    round(&sim.nodes[0], &mut pacing).await.unwrap();
    let paused = sim.nodes[0].erasures.store.job(&job.id).unwrap().unwrap();
    assert!(paused.records[0].receipts.iter().all(Option::is_none), "no custodian erased a held record");
    assert!(sim.nodes[0].read_here(rid, g).await.is_ok());
    accept::hold(&sim.nodes[0], g, &ErasureScope::Records(vec![rid]), false, 6).await.unwrap();
    let mut pacing = Pacing::default();
    rounds_until(&sim, 0, &mut pacing, job.id, "erased once the hold is lifted", |j| j.complete()).await;
}

/// Rectification: a corrected reading replaces one of the same subject; the old one is
/// erased at every custodian, and its certificate names the trigger and the corrected
/// record (it verifies). A record cannot replace itself, nor one of another subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rectified_reading_is_erased_with_a_certificate_naming_the_corrected_record() {
    let sim = Sim::start(4, 2).await;
    let (old, g) = anchored_record(&sim, "Patient/r").await;
    let (new, _) = anchored_record(&sim, "Patient/r").await;
    let (elsewhere, _) = anchored_record(&sim, "Patient/s").await;
    let now = crate::clock::now_ms();
    assert!(matches!(accept::rectified(&sim.nodes[0], g, old, old, now).await, Err(ErasureError::Invalid(_))));
    assert!(matches!(accept::rectified(&sim.nodes[0], g, old, elsewhere, now).await, Err(ErasureError::Invalid(_))));
    let other = other_gateway().public().key_id();
    assert!(matches!(accept::rectified(&sim.nodes[0], other, old, new, now).await, Err(ErasureError::NotFound(_))));
    let job = accept::rectified(&sim.nodes[0], g, old, new, now).await.unwrap();
    assert_eq!(job.records.len(), 1);
    let mut pacing = Pacing::default();
    let job = rounds_until(&sim, 0, &mut pacing, job.id, "certified", Job::complete).await;
    let certs = job.certificates().unwrap();
    assert_eq!(certs[0].record.rid, old);
    assert_eq!(certs[0].trigger, ErasureTrigger::Rectified { replaced_by: new });
    certs[0].verify(sim.ledger.genesis_for_tests()).unwrap();
    for n in &sim.nodes {
        assert!(matches!(n.vault.get(old).await, Err(VaultError::NotFound(_))));
    }
    assert!(sim.nodes[0].read_anywhere(new, g).await.is_ok(), "the corrected reading stays");
}

/// Two requests for the same record accepted at two coordinators (a gateway retried at
/// another node after an answer it did not get), each reaching a different custodian
/// first: each custodian erases once and answers the other request from its receipt,
/// so both requests are certified (the kill-loop soak found both stuck before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_for_one_record_at_two_coordinators_are_both_certified() {
    let sim = Sim::start(4, 2).await;
    let (rid, g) = anchored_record(&sim, "Patient/twice").await;
    let custodians = sim.nodes[0].read_here(rid, g).await.unwrap().receipt.unwrap().manifest.custodians;
    let (a, b) = (custodians[0], custodians[1]);
    let node_of = |id| (0..4).find(|i| sim.id(*i) == id).unwrap();
    let scope = || ErasureScope::Records(vec![rid]);
    let now = crate::clock::now_ms;

    // The first request, at a's node, erases at a only (b is down).
    sim.net.set_down(b, true);
    let first =
        accept::accept(&sim.nodes[node_of(a)], g, scope(), ErasureTrigger::SubjectRequest, now()).await.unwrap();
    let mut pacing_a = Pacing::default();
    rounds_until(&sim, node_of(a), &mut pacing_a, first.id, "a erased", |j| state(j, a).0).await;
    // The second, at b's node, erases at b only (a is down now).
    sim.net.set_down(b, false);
    sim.net.set_down(a, true);
    let second =
        accept::accept(&sim.nodes[node_of(b)], g, scope(), ErasureTrigger::SubjectRequest, now()).await.unwrap();
    let mut pacing_b = Pacing::default();
    rounds_until(&sim, node_of(b), &mut pacing_b, second.id, "b erased", |j| state(j, b).0).await;
    sim.net.set_down(a, false);

    let mut certified = Vec::new();
    for (job, node, pacing) in [(first, node_of(a), &mut pacing_a), (second, node_of(b), &mut pacing_b)] {
        let done = rounds_until(&sim, node, pacing, job.id, "certified", Job::complete).await;
        let certificates = done.certificates().unwrap();
        certificates[0].verify(sim.ledger.genesis_for_tests()).unwrap();
        assert_eq!(certificates[0].request_hash, job.request_hash);
        certified.push(certificates[0].clone());
    }
    // One erasure per custodian: both requests' receipts from a custodian name the same
    // epochs, those of the one erasure that destroyed the record there.
    let epochs = |k: usize, c: usize| {
        let r = &certified[k].erasures[c].receipt.body;
        (r.custodian, r.epoch_before, r.epoch_after)
    };
    for c in 0..2 {
        assert_eq!(epochs(0, c), epochs(1, c), "custodian {c}");
    }
    for id in [a, b] {
        assert!(matches!(sim.nodes[node_of(id)].vault.get(rid).await, Err(VaultError::NotFound(_))));
    }
}
