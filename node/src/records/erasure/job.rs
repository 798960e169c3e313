//! An accepted erasure request ([`Job`]) and the coordinator's bookkeeping over it, as
//! pure code: [`Job::due`] says which orders to send to which custodian now,
//! [`Job::absorb`] takes a custodian's answers in, [`Pacing`] spaces out a custodian
//! that keeps refusing. Time is an argument; nothing here does I/O (the coordinator
//! around it does: `coordinator.rs`). Tested without a network below.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use cairn_proto::erasure::{CommittedErasure, ErasureCertificate, ErasureTrigger, SignedErasureReceipt};
use cairn_proto::genesis::Genesis;
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::record::RecordId;
use cairn_proto::version::Versioned;
use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Most orders sent to one custodian in one message.
pub const ORDERS_PER_MESSAGE: usize = 1_000;
/// Pause between rounds while jobs are open and nothing else wakes the coordinator; the
/// first pause before asking again a custodian that refused.
pub const ROUND: Duration = Duration::from_millis(500);
/// The longest pause before asking again a custodian that refused or failed.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// What one custodian is asked to do for one record (`/cairn/req/1` `Erase`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseOrder {
    /// Hash of the request.
    pub request_hash: Hash32,
    /// Why.
    pub trigger: ErasureTrigger,
    /// When the coordinator accepted the request, Unix milliseconds.
    pub requested_at_ms: u64,
    /// Deadline, Unix milliseconds.
    pub deadline_ms: u64,
    /// The record.
    pub rid: RecordId,
    /// Its leaf (checked against the vault before erasing).
    pub leaf: Hash32,
}

impl EraseOrder {
    /// Key of this order's intent and receipt in the store: request hash ‖ record leaf.
    pub(crate) fn key(&self) -> [u8; 64] {
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&self.request_hash.0);
        k[32..].copy_from_slice(&self.leaf.0);
        k
    }
}

/// A custodian's answer to one order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EraseAnswer {
    /// Erased; the receipt is signed and waits for its batch to be committed.
    Signed(SignedErasureReceipt),
    /// Erased, and the receipt is committed on chain.
    Committed(Box<CommittedErasure>),
    /// Not done, and why.
    Refused(String),
}

/// One record of a job: what the certificate needs, gathered as custodians answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The record's anchor receipt (its id, manifest, leaf and proof of anchoring).
    pub anchor: AnchorReceipt,
    /// Signed receipts so far, in manifest order.
    pub receipts: Vec<Option<SignedErasureReceipt>>,
    /// Committed receipts so far, in manifest order.
    pub committed: Vec<Option<CommittedErasure>>,
    /// Each custodian's last refusal or failure, in manifest order, for the status.
    pub errors: Vec<Option<String>>,
}

impl JobRecord {
    /// A record no custodian has answered for yet.
    pub fn new(anchor: AnchorReceipt) -> Self {
        let n = anchor.manifest.custodians.len();
        Self { anchor, receipts: vec![None; n], committed: vec![None; n], errors: vec![None; n] }
    }
}

/// An accepted request and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub(super) version: u8,
    /// The request's id (random).
    pub id: [u8; 16],
    /// Who asked: the gateway, or this node for retention expiry.
    pub requested_by: KeyId,
    /// The gateway that wrote the records (it may follow the request).
    pub owner: KeyId,
    /// Why.
    pub trigger: ErasureTrigger,
    /// Hash of the request.
    pub request_hash: Hash32,
    /// When the request was accepted, Unix milliseconds.
    pub requested_at_ms: u64,
    /// Deadline, Unix milliseconds.
    pub deadline_ms: u64,
    /// The records it covers.
    pub records: Vec<JobRecord>,
}

impl Versioned for Job {
    const VERSION: u8 = 1;
    fn version(&self) -> u8 {
        self.version
    }
}

/// Orders due for one custodian, in one message: `slots` are (record, custodian) indexes
/// into the job, one per order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The custodian to ask.
    pub custodian: KeyId,
    /// (record index, index of the custodian in that record's manifest), per order.
    pub slots: Vec<(usize, usize)>,
    /// The orders, in the order of `slots`.
    pub orders: Vec<EraseOrder>,
}

impl Job {
    /// Every custodian of every record committed its receipt.
    pub fn complete(&self) -> bool {
        self.records.iter().all(|r| r.committed.iter().all(Option::is_some))
    }

    /// The id as hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    fn order(&self, r: &JobRecord) -> EraseOrder {
        EraseOrder {
            request_hash: self.request_hash,
            trigger: self.trigger,
            requested_at_ms: self.requested_at_ms,
            deadline_ms: self.deadline_ms,
            rid: r.anchor.rid,
            leaf: r.anchor.leaf,
        }
    }

    /// The orders to send at `now`: to each custodian still missing a committed receipt
    /// for some record and not pausing after refusals, in messages of at most
    /// [`ORDERS_PER_MESSAGE`] orders, custodians in key order.
    pub fn due(&self, pacing: &Pacing, now: Instant) -> Vec<Due> {
        let mut per: BTreeMap<KeyId, Vec<(usize, usize)>> = BTreeMap::new();
        for (ri, r) in self.records.iter().enumerate() {
            for (ci, c) in r.anchor.manifest.custodians.iter().enumerate() {
                if r.committed.get(ci).is_some_and(Option::is_none) && !pacing.pausing(&(self.id, *c), now) {
                    per.entry(*c).or_default().push((ri, ci));
                }
            }
        }
        let mut out = Vec::new();
        for (custodian, slots) in per {
            for chunk in slots.chunks(ORDERS_PER_MESSAGE) {
                let orders = chunk.iter().filter_map(|(ri, _)| self.records.get(*ri)).map(|r| self.order(r)).collect();
                out.push(Due { custodian, slots: chunk.to_vec(), orders });
            }
        }
        out
    }

    /// Takes in `due.custodian`'s answers to `due` (one per order, in order; a missing
    /// answer counts as a refusal). A receipt counts only if it is that custodian's, for
    /// that record and this request. Returns whether the job changed.
    pub fn absorb(&mut self, due: &Due, answers: Vec<EraseAnswer>) -> bool {
        let custodian = due.custodian;
        let mut answers = answers.into_iter();
        let mut changed = false;
        for &(ri, ci) in &due.slots {
            let answer = answers.next().unwrap_or_else(|| EraseAnswer::Refused("no answer for this order".into()));
            let request_hash = self.request_hash;
            let Some(r) = self.records.get_mut(ri) else { continue };
            let expected = |s: &SignedErasureReceipt| {
                s.body.custodian == custodian
                    && s.body.record_leaf == r.anchor.leaf
                    && s.body.request_hash == request_hash
            };
            let error = match answer {
                EraseAnswer::Signed(s) if expected(&s) => {
                    if let Some(slot @ None) = r.receipts.get_mut(ci) {
                        *slot = Some(s);
                        changed = true;
                    }
                    None
                }
                EraseAnswer::Committed(c) if expected(&c.receipt) => {
                    if let (Some(signed), Some(committed)) = (r.receipts.get_mut(ci), r.committed.get_mut(ci))
                        && committed.is_none()
                    {
                        *signed = Some(c.receipt.clone());
                        *committed = Some(*c);
                        changed = true;
                    }
                    None
                }
                EraseAnswer::Refused(m) => Some(m),
                _ => Some("answered for another record or request".to_string()),
            };
            if let Some(slot) = r.errors.get_mut(ci)
                && *slot != error
            {
                *slot = error;
                changed = true;
            }
        }
        changed
    }

    /// Checks every assembled certificate as a regulator would
    /// ([`ErasureCertificate::verify`]); one that fails loses its committed receipts (its
    /// custodians are asked again) and says why in its errors. Returns the reasons.
    pub fn drop_unverifiable(&mut self, genesis: &Genesis) -> Vec<String> {
        let mut failures = Vec::new();
        for i in 0..self.records.len() {
            let Some(cert) = self.certificate(i) else { continue };
            if let Err(e) = cert.verify(genesis)
                && let Some(r) = self.records.get_mut(i)
            {
                r.committed.iter_mut().for_each(|c| *c = None);
                r.errors.iter_mut().for_each(|m| *m = Some(format!("the assembled certificate did not verify: {e}")));
                failures.push(e.to_string());
            }
        }
        failures
    }

    /// The certificate of record `i`, once every custodian's receipt is committed.
    pub fn certificate(&self, i: usize) -> Option<ErasureCertificate> {
        let r = self.records.get(i)?;
        let erasures = r.committed.iter().cloned().collect::<Option<Vec<_>>>()?;
        Some(ErasureCertificate {
            version: 1,
            trigger: self.trigger,
            request_hash: self.request_hash,
            requested_at_ms: self.requested_at_ms,
            deadline_ms: self.deadline_ms,
            record: r.anchor.clone(),
            erasures,
        })
    }

    /// Every record's certificate, once all exist.
    pub fn certificates(&self) -> Option<Vec<ErasureCertificate>> {
        (0..self.records.len()).map(|i| self.certificate(i)).collect()
    }
}

/// When a job may ask a custodian again after it refused or failed: asked again after
/// one [`ROUND`], then after twice the previous pause, at most [`MAX_RETRY`]; forgotten
/// once it answers anything. A custodian that is not connected is not asked, so it costs
/// nothing and is asked as soon as it is back.
#[derive(Debug, Default)]
pub struct Pacing {
    retries: HashMap<([u8; 16], KeyId), Retry>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Retry {
    at: Instant,
    pause: Duration,
}

impl Pacing {
    /// Whether the custodian of `key` (job id, custodian) is not to be asked at `now`.
    pub fn pausing(&self, key: &([u8; 16], KeyId), now: Instant) -> bool {
        self.retries.get(key).is_some_and(|r| r.at > now)
    }

    /// When the custodian of `key` may be asked again (`None`: at once).
    pub fn next_ask(&self, key: &([u8; 16], KeyId)) -> Option<(Instant, Duration)> {
        self.retries.get(key).map(|r| (r.at, r.pause))
    }

    /// Notes how the custodian of `key` answered at `now` (`None`: it was not
    /// connected, so not asked).
    pub fn note(&mut self, key: ([u8; 16], KeyId), answers: Option<&[EraseAnswer]>, now: Instant) {
        match answers {
            Some(a) if a.iter().all(|a| matches!(a, EraseAnswer::Refused(_))) => {
                let pause = self.retries.get(&key).map_or(ROUND, |r| r.pause.saturating_mul(2).min(MAX_RETRY));
                self.retries.insert(key, Retry { at: now + pause, pause });
            }
            _ => {
                self.retries.remove(&key);
            }
        }
    }

    /// Forgets the jobs that `open` does not keep.
    pub fn retain(&mut self, open: impl Fn(&[u8; 16]) -> bool) {
        self.retries.retain(|(id, _), _| open(id));
    }
}
