//! Accepting a request: resolving it to the records it covers, each with its anchor
//! receipt (from this node or any custodian, waiting up to [`ANCHOR_WAIT`] for records
//! being anchored), fixing its time, deadline and hash, and storing the job before the
//! caller is answered, so a restart resumes it. Legal holds are placed the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_proto::KeyId;
use cairn_proto::access::{AccessAction, AccessEvent, Accessor, Outcome};
use cairn_proto::consent::Subject;
use cairn_proto::erasure::{ErasureRequest, ErasureScope, ErasureTrigger};
use cairn_proto::record::RecordId;
use futures::StreamExt as _;
use tracing::{info, warn};

use super::job::{Job, JobRecord};
use super::{DEADLINE_MS, ErasureError, MAX_RECORDS};
use crate::clock::now_ms;
use crate::records::consent::ConsentError;
use crate::records::read::ReadAnswer;
use crate::records::wire::{Request, Response};
use crate::records::{Records, RecordsError};
use crate::vault::SubjectRef;

/// Longest wait, when a request is accepted, for its records to be anchored.
const ANCHOR_WAIT: Duration = Duration::from_secs(10);

/// The records of `scope` that `gateway` wrote, each with an anchor receipt, found at this
/// node and its peers.
pub(super) async fn resolve(
    records: &Records,
    gateway: KeyId,
    scope: &ErasureScope,
) -> Result<Vec<ReadAnswer>, ErasureError> {
    let found = match scope {
        ErasureScope::Records(rids) => {
            let mut out = Vec::with_capacity(rids.len());
            for rid in rids {
                match records.read_anywhere(*rid, gateway).await {
                    // A consent-layer document is erased with its subject only, never on
                    // its own: erasing one revocation would bring a consent back.
                    Ok((answer, _)) if !answer.record.kind.is_reading() => {
                        return Err(ErasureError::NotFound(*rid));
                    }
                    Ok((answer, _)) => out.push(answer),
                    Err(RecordsError::NotFound(rid)) => return Err(ErasureError::NotFound(rid)),
                    Err(e) => return Err(ErasureError::Unavailable(e.to_string())),
                }
            }
            out
        }
        ErasureScope::Subject { gateway, local } => {
            let subject = SubjectRef { gateway: *gateway, local: local.clone() };
            let mut by_rid: BTreeMap<RecordId, ReadAnswer> = BTreeMap::new();
            let here =
                records.subject_here(subject.clone()).await.map_err(|e| ErasureError::Unavailable(e.to_string()))?;
            for answer in here {
                by_rid.insert(answer.record.rid, answer);
            }
            // Every record has `replication` custodians: with fewer validators than that
            // out of reach, each record is still listed by one that answers.
            let others: Vec<KeyId> = records.validators.iter().filter(|k| **k != records.me).copied().collect();
            let mut unreachable = 0;
            for peer in others {
                match records.ask(peer, Request::Subject(subject.clone())).await {
                    Ok(Response::Records(list)) => {
                        for answer in list {
                            by_rid.entry(answer.record.rid).or_insert(answer);
                        }
                    }
                    _ => unreachable += 1,
                }
            }
            if unreachable >= records.settings.replication {
                return Err(ErasureError::Unavailable(format!(
                    "{unreachable} validators are out of reach: the subject's records cannot all be found"
                )));
            }
            by_rid.into_values().collect()
        }
    };
    if found.is_empty() {
        return Err(ErasureError::NoRecords);
    }
    Ok(found)
}

/// Fills in the anchor receipts that are missing from `found`, from this node or another
/// custodian of each record, waiting up to [`ANCHOR_WAIT`] for records being anchored.
pub(super) async fn complete_receipts(records: &Records, gateway: KeyId, found: &mut [ReadAnswer]) {
    let deadline = tokio::time::Instant::now() + ANCHOR_WAIT;
    let mut decided = records.ledger.decided();
    loop {
        for answer in found.iter_mut().filter(|a| a.receipt.is_none()) {
            let rid = answer.record.rid;
            if let Ok(here) = records.read_here(rid, gateway).await
                && here.receipt.is_some()
            {
                answer.receipt = here.receipt;
                continue;
            }
            for custodian in answer.record.manifest.custodians.iter().filter(|c| **c != records.me) {
                let asked = records.ask(*custodian, Request::Read { rid, gateway }).await;
                if let Ok(Response::Record(there)) = asked
                    && there.receipt.is_some()
                {
                    answer.receipt = there.receipt;
                    break;
                }
            }
        }
        if found.iter().all(|a| a.receipt.is_some()) || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            _ = decided.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Accepts a request: resolves it, fixes its times and hash, stores the job and wakes
/// the coordinator. Returns the stored job.
pub async fn accept(
    records: &Records,
    requested_by: KeyId,
    scope: ErasureScope,
    trigger: ErasureTrigger,
    now_ms: u64,
) -> Result<Job, ErasureError> {
    if let ErasureScope::Records(rids) = &scope {
        if rids.is_empty() {
            return Err(ErasureError::Invalid("name at least one record".into()));
        }
        if rids.len() > MAX_RECORDS {
            return Err(ErasureError::Invalid(format!("at most {MAX_RECORDS} records per request")));
        }
        let unique: std::collections::BTreeSet<_> = rids.iter().collect();
        if unique.len() != rids.len() {
            return Err(ErasureError::Invalid("a record is named twice".into()));
        }
        // Before looking for the records: those being erased may be gone already.
        records.erasures.store.not_in_open_job(requested_by, rids)?;
    }
    let mut found = resolve(records, requested_by, &scope).await?;
    complete_receipts(records, requested_by, &mut found).await;
    create(records, requested_by, requested_by, scope, trigger, now_ms, found).await
}

/// Erasure on consent withdrawal: every record of `gateway`'s `subject`, at every
/// custodian. Called when a subject withdraws the consent their records were collected
/// under: today by the gateway that reports it (`POST /v1/erasures` with trigger
/// `consent_withdrawn`, `requested_by` the gateway), later also by the consent module.
pub async fn consent_withdrawn(
    records: &Records,
    requested_by: KeyId,
    gateway: KeyId,
    subject: String,
    now_ms: u64,
) -> Result<Job, ErasureError> {
    let scope = ErasureScope::Subject { gateway, local: subject };
    let mut found = resolve(records, gateway, &scope).await?;
    complete_receipts(records, gateway, &mut found).await;
    create(records, requested_by, gateway, scope, ErasureTrigger::ConsentWithdrawn, now_ms, found).await
}

/// Rectification (GDPR Art. 16, PIPA Art. 36): erases reading `old` of `gateway` because
/// `replaced_by` — a reading of the same gateway and subject, stored before — corrects
/// it. The certificate names the corrected record (`ErasureTrigger::Rectified`), so the
/// link between the two outlives the old one.
///
/// # Errors
/// `NotFound` for either record (or one that is not a reading); `Invalid` when they are
/// the same record or of different subjects; the errors of [`accept`].
pub async fn rectified(
    records: &Records,
    gateway: KeyId,
    old: RecordId,
    replaced_by: RecordId,
    now_ms: u64,
) -> Result<Job, ErasureError> {
    if old == replaced_by {
        return Err(ErasureError::Invalid("a record cannot replace itself".into()));
    }
    let mut subjects = Vec::new();
    for rid in [old, replaced_by] {
        match records.read_anywhere(rid, gateway).await {
            Ok((answer, _)) if answer.record.kind.is_reading() => subjects.push(answer.record.subject),
            Ok(_) | Err(RecordsError::NotFound(_)) => return Err(ErasureError::NotFound(rid)),
            Err(e) => return Err(ErasureError::Unavailable(e.to_string())),
        }
    }
    match subjects.as_slice() {
        [Some(a), Some(b)] if a == b => {}
        _ => {
            return Err(ErasureError::Invalid(
                "the corrected reading must be filed under the same subject as the one it replaces".into(),
            ));
        }
    }
    accept(records, gateway, ErasureScope::Records(vec![old]), ErasureTrigger::Rectified { replaced_by }, now_ms).await
}

/// Fixes a request's times and hash, stores its job and wakes the coordinator.
pub(super) async fn create(
    records: &Records,
    requested_by: KeyId,
    owner: KeyId,
    scope: ErasureScope,
    trigger: ErasureTrigger,
    now_ms: u64,
    found: Vec<ReadAnswer>,
) -> Result<Job, ErasureError> {
    if found.len() > MAX_RECORDS {
        return Err(ErasureError::Invalid(format!("{} records; at most {MAX_RECORDS} per request", found.len())));
    }
    // A legal hold blocks every trigger (retention expiry skips held records before).
    let held: Vec<RecordId> = found.iter().filter(|a| a.held).map(|a| a.record.rid).collect();
    if !held.is_empty() {
        return Err(ErasureError::Held(held));
    }
    // The subjects whose records are erased here, for their access logs (below).
    let mut by_subject: BTreeMap<Subject, Vec<RecordId>> = BTreeMap::new();
    if !matches!(scope, ErasureScope::Subject { .. }) {
        for a in &found {
            if let Some(reference) = &a.record.subject {
                let subject = Subject { gateway: a.record.gateway, reference: reference.clone() };
                by_subject.entry(subject).or_default().push(a.record.rid);
            }
        }
    }
    let mut anchors = Vec::with_capacity(found.len());
    for answer in found {
        match answer.receipt {
            Some(receipt) => anchors.push(receipt),
            None => {
                return Err(ErasureError::Unavailable(format!(
                    "record {} is not anchored yet; ask again in a few seconds",
                    answer.record.rid
                )));
            }
        }
    }
    // The request follows the anchoring of every record it covers (a certificate checks
    // this), even if a proposer's clock ran ahead of this node's.
    let anchored = anchors.iter().map(|a| a.block.header.time_ms).max().unwrap_or(0);
    let requested_at_ms = now_ms.max(anchored);
    let deadline_ms = requested_at_ms.saturating_add(DEADLINE_MS);
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| ErasureError::Fatal(format!("OS random source: {e}")))?;
    let (mut id, mut nonce) = ([0u8; 16], [0u8; 16]);
    id.copy_from_slice(&random[..16]);
    nonce.copy_from_slice(&random[16..]);
    let request = ErasureRequest { version: 1, trigger, scope, requested_by, requested_at_ms, deadline_ms, nonce };
    let request_hash = request.hash().map_err(|e| ErasureError::Fatal(e.to_string()))?;
    let job = Job {
        version: 1,
        id,
        requested_by,
        owner,
        trigger,
        request_hash,
        requested_at_ms,
        deadline_ms,
        records: anchors.into_iter().map(JobRecord::new).collect(),
    };
    let er = &records.erasures;
    {
        // A second request over a record being erased could never complete: its custodians
        // no longer hold the record. Checked and stored under one lock.
        let _creating = er.creating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rids: Vec<RecordId> = job.records.iter().map(|r| r.anchor.rid).collect();
        er.store.not_in_open_job(owner, &rids)?;
        er.store.put_job(&job)?;
    }
    info!(id = %job.id_hex(), records = job.records.len(), trigger = ?trigger, "erasure request accepted");
    er.wake.notify_one();
    log_erasure(records, &job, by_subject).await;
    Ok(job)
}

/// Writes the stored job into the access log of each subject whose readings it covers
/// (`AccessAction::Erase`, ADR 018): the subject's disclosure list shows it and their
/// export carries its certificates. A request over a whole subject logs nothing: it
/// erases the subject's log key too. Neither is a log key made for the event: a subject
/// with no access log (never read, never exported) gets no event.
///
/// The erasure goes ahead whatever happens here (it is not a disclosure, and its deadline
/// is the law's): when the subject's log key cannot be looked up (more than f validators
/// out of reach) the event is not written, the node warns and counts it
/// (`cairn_erasure_events_unlogged_total`), and that subject's export will lack the
/// certificates. A failing store stops the node. Up to [`LOG_PARALLEL`] subjects at once.
async fn log_erasure(records: &Records, job: &Job, by_subject: BTreeMap<Subject, Vec<RecordId>>) {
    let automatic = job.requested_by == records.me;
    let accessor =
        if automatic { Accessor::Node { key: records.me } } else { Accessor::Gateway { key: job.requested_by } };
    // v3 ActReason: the subject's own right, or the operator's records management.
    let purpose = match job.trigger {
        ErasureTrigger::RetentionExpired | ErasureTrigger::PurposeAchieved => "HOPERAT",
        _ => "PATRQT",
    };
    let log = |(subject, rids): (Subject, Vec<RecordId>)| {
        let event = AccessEvent {
            version: 1,
            recorded_ms: now_ms(),
            node: records.me,
            action: AccessAction::Erase { request: job.request_hash, trigger: job.trigger },
            outcome: Outcome::Granted,
            purpose: purpose.into(),
            accessor: accessor.clone(),
            basis: None,
            records: rids,
            withheld: 0,
            reason: None,
            justification: None,
            trace: vec![format!("erasure request {} accepted", job.id_hex())],
        };
        async move { records.log_erasure_event(&subject, event).await }
    };
    let mut results = futures::stream::iter(by_subject.into_iter().map(log)).buffer_unordered(LOG_PARALLEL);
    while let Some(result) = results.next().await {
        match result {
            Ok(_) => {}
            Err(ConsentError::Records(e)) if e.is_fatal() => records.note_fatal(e.for_log()),
            Err(_) => {
                records.counters.erasure_events_unlogged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(id = %job.id_hex(), "an erasure could not be written in its subject's access log");
            }
        }
    }
}

/// Subjects whose `erase` events one request writes at once.
const LOG_PARALLEL: usize = 16;

/// Places or lifts legal holds on the records of `scope` written by `gateway`, at every
/// custodian of each (all must confirm). Returns how many records.
pub async fn hold(
    records: &Records,
    gateway: KeyId,
    scope: &ErasureScope,
    on: bool,
    now_ms: u64,
) -> Result<usize, ErasureError> {
    let found = resolve(records, gateway, scope).await?;
    let mut per: BTreeMap<KeyId, Vec<RecordId>> = BTreeMap::new();
    for a in &found {
        for c in &a.record.manifest.custodians {
            per.entry(*c).or_default().push(a.record.rid);
        }
    }
    for (custodian, rids) in per {
        if custodian == records.me {
            records.erasures.store.set_holds(&rids, on, now_ms)?;
            continue;
        }
        match records.ask(custodian, Request::Hold { rids, on }).await {
            Ok(Response::Held) => {}
            _ => {
                return Err(ErasureError::Unavailable(format!(
                    "custodian {custodian} did not confirm the hold; ask again"
                )));
            }
        }
    }
    Ok(found.len())
}
