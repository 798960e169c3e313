//! A custodian's part of erasure: on an order from a coordinator, record an intent,
//! erase through the vault (one keystore epoch per order batch), sign an
//! [`ErasureReceipt`], store it (intent dropped in the same transaction) and hand its
//! leaf to the batcher of `BatchKind::ErasureReceipts`. Asked again, it answers from its
//! store, with the proof of commitment once its batch is in a block. Also the signed
//! answer to a live challenge.

use std::sync::atomic::Ordering::Relaxed;

use cairn_proto::Hash32;
use cairn_proto::erasure::{
    ChallengeAnswer, CommittedErasure, ErasureReceipt, SignedChallengeAnswer, SignedErasureReceipt,
};
use cairn_proto::record::RecordId;
use cairn_proto::signed::SignedBody as _;
use tracing::{debug, warn};

use super::job::{EraseAnswer, EraseOrder};
use crate::clock::now_ms;
use crate::records::receipts::InLog;
use crate::records::{Records, RecordsError};
use crate::vault::VaultError;

fn fatal(e: impl std::fmt::Display) -> RecordsError {
    RecordsError::Fatal(e.to_string())
}

/// Answers a live challenge: whether this node holds a record with this id and leaf,
/// signed with its key.
pub async fn answer_challenge(
    records: &Records,
    rid: RecordId,
    leaf: Hash32,
    nonce: [u8; 16],
) -> Result<SignedChallengeAnswer, RecordsError> {
    let holds = match records.vault.get(rid).await {
        Ok(r) => r.leaf == leaf,
        Err(VaultError::NotFound(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let answer =
        ChallengeAnswer { version: 1, custodian: records.me, rid, leaf, nonce, answered_at_ms: now_ms(), holds };
    answer.sign(&records.erasures.key).map_err(fatal)
}

/// Carries out orders as a custodian: erases what it holds, signs and stores a receipt
/// per order, and answers each order with its receipt, committed if it is.
pub async fn erase_here(records: &Records, orders: Vec<EraseOrder>) -> Vec<EraseAnswer> {
    match try_erase_here(records, &orders).await {
        Ok(answers) => answers,
        Err(e) => {
            // The reason may name a record id: only that it failed is logged.
            warn!("an erasure failed at this custodian; the coordinator will ask again");
            let e = records.note(e);
            orders.iter().map(|_| EraseAnswer::Refused(format!("the custodian failed: {e}"))).collect()
        }
    }
}

fn refuse(answers: &mut [Option<EraseAnswer>], i: usize, why: &str) {
    if let Some(slot) = answers.get_mut(i) {
        *slot = Some(EraseAnswer::Refused(why.to_string()));
    }
}

async fn try_erase_here(records: &Records, orders: &[EraseOrder]) -> Result<Vec<EraseAnswer>, RecordsError> {
    let er = &records.erasures;
    let me = records.me;
    let mut answers: Vec<Option<EraseAnswer>> = vec![None; orders.len()];
    let mut done: Vec<(usize, SignedErasureReceipt)> = Vec::new();
    let mut to_erase: Vec<usize> = Vec::new();
    let mut signed: Vec<([u8; 64], SignedErasureReceipt)> = Vec::new();
    let receipt = |o: &EraseOrder, erased_at_ms: u64, epoch_before: u64, epoch_after: u64| ErasureReceipt {
        version: 1,
        custodian: me,
        record_leaf: o.leaf,
        trigger: o.trigger,
        request_hash: o.request_hash,
        requested_at_ms: o.requested_at_ms,
        deadline_ms: o.deadline_ms,
        erased_at_ms,
        epoch_before,
        epoch_after,
    };
    for (i, o) in orders.iter().enumerate() {
        if let Some(r) = er.store.receipt(&o.key())? {
            done.push((i, r));
            continue;
        }
        match records.vault.get(o.rid).await {
            // A hold placed after the request was accepted pauses it here until lifted.
            Ok(r) if r.leaf == o.leaf && er.store.held(&o.rid)? => refuse(&mut answers, i, "under legal hold here"),
            Ok(r) if r.leaf == o.leaf && r.manifest.custodians.contains(&me) => to_erase.push(i),
            Ok(_) => refuse(&mut answers, i, "the record here has another leaf"),
            Err(VaultError::NotFound(_)) => match er.store.intent(&o.key())? {
                // Erased before a crash, receipt not yet stored: the epoch moved since.
                Some(before) => {
                    let now = records.vault.epoch().await?;
                    let r = receipt(o, now_ms(), before, now).sign(&er.key).map_err(fatal)?;
                    signed.push((o.key(), r.clone()));
                    done.push((i, r));
                }
                None => match er.store.erased(&o.leaf)? {
                    // Erased here already, under another request for the same record
                    // (two requests accepted at two coordinators): the key has been gone
                    // since that erasure. This request gets its own receipt, naming that
                    // erasure's epochs and the time of this answer (ADR 013).
                    Some(earlier) => {
                        let (before, after) = (earlier.body.epoch_before, earlier.body.epoch_after);
                        let r =
                            receipt(o, now_ms().max(o.requested_at_ms), before, after).sign(&er.key).map_err(fatal)?;
                        signed.push((o.key(), r.clone()));
                        done.push((i, r));
                    }
                    None => refuse(&mut answers, i, "this custodian holds no such record"),
                },
            },
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(_) => refuse(&mut answers, i, "the vault refused to read the record"),
        }
    }
    if !to_erase.is_empty() {
        let keys: Vec<[u8; 64]> = to_erase.iter().filter_map(|&i| orders.get(i)).map(EraseOrder::key).collect();
        let epoch = records.vault.epoch().await?;
        er.store.put_intents(&keys, epoch)?;
        let rids: Vec<_> = to_erase.iter().filter_map(|&i| orders.get(i)).map(|o| o.rid).collect();
        let evidence = records.vault.erase(rids.clone()).await?;
        records.documents_erased(&rids).await;
        let erased_at_ms = now_ms();
        for (&i, ev) in to_erase.iter().zip(&evidence) {
            let Some(o) = orders.get(i) else { continue };
            let r = receipt(o, erased_at_ms, ev.epoch_before, ev.epoch_after).sign(&er.key).map_err(fatal)?;
            signed.push((o.key(), r.clone()));
            done.push((i, r));
        }
        debug!(records = evidence.len(), "erased");
        records.counters.records_erased.fetch_add(evidence.len() as u64, Relaxed);
    }
    if !signed.is_empty() {
        er.store.put_receipts(&signed)?;
        let leaves = signed.iter().map(|(_, r)| r.body.leaf()).collect::<Result<Vec<_>, _>>().map_err(fatal)?;
        er.batches.add(leaves).await;
    }
    let leaves = done.iter().map(|(_, r)| r.body.leaf()).collect::<Result<Vec<_>, _>>().map_err(fatal)?;
    let located = er.batches.locate(leaves).await;
    for ((i, r), loc) in done.into_iter().zip(located) {
        let committed = match loc {
            Some(loc) => records.in_log(&loc)?.map(|InLog { log_index, log_proof, block }| CommittedErasure {
                receipt: r.clone(),
                batch: loc.commit,
                leaf_index: loc.index,
                batch_proof: loc.proof,
                log_index,
                log_proof,
                block,
            }),
            None => None,
        };
        if let Some(slot) = answers.get_mut(i) {
            *slot = Some(match committed {
                Some(c) => EraseAnswer::Committed(Box::new(c)),
                None => EraseAnswer::Signed(r),
            });
        }
    }
    Ok(answers.into_iter().map(|a| a.unwrap_or_else(|| EraseAnswer::Refused("not handled".into()))).collect())
}
