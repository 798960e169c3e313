//! The coordinator's bookkeeping without a network: what is due to whom, how answers are
//! taken in, how a refusing custodian is paced. (The multi-custodian scenarios over the
//! simulated network are in `records::sim`.)

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::Duration;

use cairn_proto::consensus::{CertifiedHeader, CommitCertificate};
use cairn_proto::erasure::{CommittedErasure, ErasureReceipt, ErasureTrigger, SignedErasureReceipt};
use cairn_proto::ledger::{BatchKind, BlockHeader};
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::record::{Manifest, RecordId};
use cairn_proto::signed::SignedBody as _;
use cairn_proto::{Hash32, KeyId, Keypair, SecretSeed};
use tokio::time::Instant;

use crate::testing::signed_batch;

use super::job::{EraseAnswer, Job, JobRecord, MAX_RETRY, ORDERS_PER_MESSAGE, Pacing, ROUND};

fn key(b: u8) -> Keypair {
    Keypair::from_seed(&SecretSeed::from_bytes([b; 32]))
}

fn header() -> CertifiedHeader {
    CertifiedHeader {
        header: BlockHeader {
            version: 1,
            chain: Hash32([0; 32]),
            height: 1,
            prev_hash: Hash32([0; 32]),
            log_size: 1,
            log_root: Hash32([0; 32]),
            time_ms: 1,
            proposer: key(1).public().key_id(),
            body_hash: Hash32([0; 32]),
        },
        certificate: CommitCertificate { version: 1, height: 1, round: 0, value: Hash32([0; 32]), signatures: vec![] },
    }
}

fn anchor(i: u8, custodians: &[KeyId]) -> AnchorReceipt {
    AnchorReceipt {
        version: 1,
        rid: RecordId([i; 16]),
        manifest: Manifest { version: 1, custodians: custodians.to_vec() },
        commitment: Hash32([i; 32]),
        leaf: Hash32([i.wrapping_add(100); 32]),
        batch: signed_batch(&key(1), BatchKind::Anchors, 0, 64),
        leaf_index: 0,
        batch_proof: vec![],
        log_index: 0,
        log_proof: vec![],
        block: header(),
    }
}

fn job(records: usize, custodians: &[KeyId]) -> Job {
    Job {
        version: 1,
        id: [7; 16],
        requested_by: key(9).public().key_id(),
        owner: key(9).public().key_id(),
        trigger: ErasureTrigger::SubjectRequest,
        request_hash: Hash32([4; 32]),
        requested_at_ms: 10,
        deadline_ms: 20,
        records: (0..records).map(|i| JobRecord::new(anchor(i as u8, custodians))).collect(),
    }
}

fn receipt(by: &Keypair, job: &Job, record: usize) -> SignedErasureReceipt {
    ErasureReceipt {
        version: 1,
        custodian: by.public().key_id(),
        record_leaf: job.records[record].anchor.leaf,
        trigger: job.trigger,
        request_hash: job.request_hash,
        requested_at_ms: job.requested_at_ms,
        deadline_ms: job.deadline_ms,
        erased_at_ms: 11,
        epoch_before: 1,
        epoch_after: 2,
    }
    .sign(by)
    .unwrap()
}

/// A committed receipt (the batch and block are placeholders: absorbing does not verify).
fn committed(r: SignedErasureReceipt) -> EraseAnswer {
    EraseAnswer::Committed(Box::new(CommittedErasure {
        receipt: r,
        batch: signed_batch(&key(1), BatchKind::ErasureReceipts, 0, 64),
        leaf_index: 0,
        batch_proof: vec![],
        log_index: 0,
        log_proof: vec![],
        block: header(),
    }))
}

#[test]
fn every_custodian_of_every_record_is_due_until_its_receipt_is_committed() {
    let (a, b) = (key(1), key(2));
    let custodians = [a.public().key_id(), b.public().key_id()];
    let mut job = job(3, &custodians);
    let now = Instant::now();
    let due = job.due(&Pacing::default(), now);
    assert_eq!(due.len(), 2, "one message per custodian");
    for d in &due {
        assert_eq!(d.slots.len(), 3);
        assert_eq!(
            d.orders.iter().map(|o| o.rid).collect::<Vec<_>>(),
            job.records.iter().map(|r| r.anchor.rid).collect::<Vec<_>>()
        );
        assert!(d.orders.iter().all(|o| o.request_hash == job.request_hash && o.deadline_ms == job.deadline_ms));
    }
    let to_a = due.iter().find(|d| d.custodian == custodians[0]).unwrap().clone();

    // A signed receipt is kept but the custodian stays due until it is committed.
    let signed: Vec<EraseAnswer> = (0..3).map(|i| EraseAnswer::Signed(receipt(&a, &job, i))).collect();
    assert!(job.absorb(&to_a, signed.clone()));
    assert!(!job.absorb(&to_a, signed), "the same answer again changes nothing");
    assert!(job.records.iter().all(|r| r.receipts[0].is_some() && r.committed[0].is_none()));
    assert_eq!(job.due(&Pacing::default(), now).len(), 2);

    // Committed for record 0 only: record 0 leaves a's orders.
    let mut answers = vec![committed(receipt(&a, &job, 0))];
    answers.extend((1..3).map(|i| EraseAnswer::Signed(receipt(&a, &job, i))));
    assert!(job.absorb(&to_a, answers));
    let due = job.due(&Pacing::default(), now);
    let to_a = due.iter().find(|d| d.custodian == custodians[0]).unwrap();
    assert_eq!(to_a.slots, vec![(1, 0), (2, 0)]);
    assert!(!job.complete());
    assert!(job.certificate(0).is_none(), "b has not committed record 0");

    // Everything committed everywhere: nothing is due, every certificate exists.
    for (ci, k) in [&a, &b].into_iter().enumerate() {
        let d = super::job::Due {
            custodian: k.public().key_id(),
            slots: (0..3).map(|ri| (ri, ci)).collect(),
            orders: vec![],
        };
        let answers = (0..3).map(|i| committed(receipt(k, &job, i))).collect();
        job.absorb(&d, answers);
    }
    assert!(job.complete());
    assert!(job.due(&Pacing::default(), now).is_empty());
    let certs = job.certificates().unwrap();
    assert_eq!(certs.len(), 3);
    assert_eq!(certs[1].erasures.len(), 2);
}

#[test]
fn a_receipt_from_another_custodian_record_or_request_is_not_taken() {
    let (a, b) = (key(1), key(2));
    let custodians = [a.public().key_id(), b.public().key_id()];
    let mut job = job(2, &custodians);
    let due = job.due(&Pacing::default(), Instant::now());
    let to_a = due.iter().find(|d| d.custodian == custodians[0]).unwrap().clone();
    let mut other_request = job.clone();
    other_request.request_hash = Hash32([5; 32]);
    let wrong = vec![
        EraseAnswer::Signed(receipt(&b, &job, 0)),           // b's receipt offered by a
        EraseAnswer::Signed(receipt(&a, &other_request, 1)), // another request
    ];
    assert!(job.absorb(&to_a, wrong), "the errors changed");
    assert!(job.records.iter().all(|r| r.receipts.iter().all(Option::is_none)));
    assert_eq!(job.records[0].errors[0].as_deref(), Some("answered for another record or request"));
    // Record 1 answered for record 0's leaf: refused too.
    let swapped = vec![EraseAnswer::Signed(receipt(&a, &job, 1)), EraseAnswer::Refused("busy".into())];
    job.absorb(&to_a, swapped);
    assert!(job.records[0].receipts[0].is_none());
    assert_eq!(job.records[1].errors[0].as_deref(), Some("busy"));
    // Fewer answers than orders: the rest count as refused.
    job.absorb(&to_a, vec![]);
    assert_eq!(job.records[1].errors[0].as_deref(), Some("no answer for this order"));
}

#[test]
fn orders_to_one_custodian_are_split_into_messages_of_at_most_the_limit() {
    let a = key(1);
    let custodians = [a.public().key_id()];
    let mut job = job(0, &custodians);
    job.records = (0..ORDERS_PER_MESSAGE + 5).map(|i| JobRecord::new(anchor((i % 250) as u8, &custodians))).collect();
    let due = job.due(&Pacing::default(), Instant::now());
    assert_eq!(due.iter().map(|d| d.orders.len()).collect::<Vec<_>>(), vec![ORDERS_PER_MESSAGE, 5]);
    assert_eq!(due[1].slots[0], (ORDERS_PER_MESSAGE, 0));
}

#[test]
fn a_custodian_that_refuses_is_paced_with_doubling_pauses_and_asked_at_once_after_an_answer() {
    let custodian = key(2);
    let k = ([7; 16], custodian.public().key_id());
    let job = job(1, &[k.1]);
    let refused = [EraseAnswer::Refused("this custodian holds no such record".into())];
    let t0 = Instant::now();
    let mut pacing = Pacing::default();
    assert!(!pacing.pausing(&k, t0), "asked in the first round");

    // Refusals: 0.5 s, 1 s, 2 s, ... never more than a minute; not due while pausing.
    let mut now = t0;
    let mut pauses = Vec::new();
    for _ in 0..10 {
        pacing.note(k, Some(&refused), now);
        let (at, pause) = pacing.next_ask(&k).unwrap();
        assert!(pacing.pausing(&k, now) && pacing.pausing(&k, at - Duration::from_millis(1)));
        assert!(job.due(&pacing, now).is_empty(), "a pausing custodian is not asked");
        assert!(!pacing.pausing(&k, at), "asked again when the pause ends");
        assert_eq!(job.due(&pacing, at).len(), 1);
        pauses.push(pause);
        now = at;
    }
    assert_eq!(&pauses[..4], &[ROUND, ROUND * 2, ROUND * 4, ROUND * 8]);
    assert_eq!(pauses[9], MAX_RETRY);

    // Not connected (not asked), or answered even partly: asked in the next round.
    pacing.note(k, None, now);
    assert!(!pacing.pausing(&k, now));
    pacing.note(k, Some(&refused), now);
    assert!(pacing.pausing(&k, now));
    let partly = [EraseAnswer::Signed(receipt(&custodian, &job, 0)), refused[0].clone()];
    pacing.note(k, Some(&partly), now);
    assert!(!pacing.pausing(&k, now), "it answered: asked again at once");

    // A finished job's pacing is forgotten.
    pacing.note(k, Some(&refused), now);
    pacing.retain(|id| *id != k.0);
    assert!(pacing.next_ask(&k).is_none());
}

#[test]
fn errors_are_logged_without_the_record_ids_they_name() {
    use crate::records::RecordsError;
    use crate::vault::VaultError;
    let rid = RecordId([0xab; 16]);
    let hex = rid.to_string();
    let records = [
        RecordsError::NotFound(rid),
        RecordsError::Vault(VaultError::NotFound(rid)),
        RecordsError::Vault(VaultError::Invalid(format!("record {rid} is malformed"))),
    ];
    for e in records {
        assert!(e.to_string().contains(&hex), "the answer to the caller names it: {e}");
        assert!(!e.for_log().contains(&hex), "the log does not: {}", e.for_log());
    }
    let erasures = [
        super::ErasureError::NotFound(rid),
        super::ErasureError::Unavailable(format!("record {rid} is not anchored yet; ask again in a few seconds")),
    ];
    for e in erasures {
        assert!(e.to_string().contains(&hex));
        assert!(!e.for_log().contains(&hex), "{}", e.for_log());
    }
}
