//! Taking readings in and giving them back.
//!
//! **When a submission is acknowledged.** `POST /v1/readings` answers 200 only when every
//! record of the batch is durable (sled flush + `fdatasync`) in the vault of *every*
//! custodian its manifest names: the receiving node (home) and `replication − 1` other
//! validators, chosen in genesis order after the home node among those connected. Losing
//! any one custodian after the answer therefore loses no record (with the default
//! replication of 2). Anchoring happens after the answer: every custodian anchors the
//! leaves it holds, so a receipt can be had from any surviving custodian.

use std::collections::HashSet;
use std::sync::Arc;

use cairn_proto::record::{ContentType, Manifest, RecordId};
use cairn_proto::{Hash32, KeyId};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::anchor::AnchorHandle;
use super::custody::VaultHandle;
use super::fhir::Reading;
use crate::run::p2p::{Outbound, Request, Response};
use crate::vault::{NewRecord, Replica, StoredRecord, SubjectRef, VaultError};

/// What the ingest path and the read path need.
#[derive(Debug)]
pub struct Records {
    /// This node's key id.
    pub me: KeyId,
    /// Genesis validators in genesis order, with their peer ids.
    pub validators: Vec<(KeyId, PeerId)>,
    /// The vault actor.
    pub vault: VaultHandle,
    /// The anchoring actor.
    pub anchors: AnchorHandle,
    /// Erasure: receipts, jobs, the receipt batcher.
    pub erasures: super::erasure::Erasures,
    /// Requests to peers.
    pub p2p: mpsc::Sender<Outbound>,
    /// Peers connected to cairn's swarm.
    pub connected: watch::Receiver<HashSet<PeerId>>,
    /// Custodians per record, this node included.
    pub replication: usize,
    /// The batcher's queue.
    pub jobs: mpsc::Sender<Job>,
}

/// One request's readings waiting for the batcher.
#[derive(Debug)]
pub struct Job {
    terms: BatchTerms,
    readings: Vec<Reading>,
    reply: oneshot::Sender<Result<(Manifest, Vec<Ingested>), RecordsError>>,
}

/// Merges requests that wait together into groups (up to `max_readings` readings) and
/// stores up to `max_groups` groups at once. Under light load a request is a group of
/// its own and pays no wait; under load, requests share the seal, the replication round
/// trip and the vault commit.
pub async fn run_batcher(
    shared: Arc<crate::run::Shared>,
    mut rx: mpsc::Receiver<Job>,
    max_groups: usize,
    max_readings: usize,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(max_groups.max(1)));
    let mut carry: Option<Job> = None;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let first = match carry.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut total = first.readings.len();
        let mut group = vec![first];
        while total < max_readings {
            match rx.try_recv() {
                Ok(job) if total + job.readings.len() <= max_readings => {
                    total += job.readings.len();
                    group.push(job);
                }
                Ok(job) => {
                    carry = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let (inputs, replies): (Vec<_>, Vec<_>) =
                group.into_iter().map(|j| ((j.terms, j.readings), j.reply)).unzip();
            match shared.records.ingest_group(inputs).await {
                Ok((manifest, parts)) => {
                    for (reply, part) in replies.into_iter().zip(parts) {
                        let _ = reply.send(Ok((manifest.clone(), part)));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Why a submission or a read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordsError {
    /// Not enough custodians are reachable to acknowledge.
    #[error("{0}")]
    Unavailable(String),
    /// The vault refused or failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// No custodian has the record (or the caller may not see it).
    #[error("no record {0}")]
    NotFound(RecordId),
}

/// A stored record as it is shown to the gateway that wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordView {
    /// Record id.
    pub rid: RecordId,
    /// Submitting gateway.
    pub gateway: KeyId,
    /// Declared purpose.
    pub purpose: String,
    /// Received, Unix milliseconds.
    pub received_at_ms: u64,
    /// Erase by, Unix milliseconds.
    pub retain_until_ms: u64,
    /// The gateway's subject reference.
    pub subject: Option<String>,
    /// The resource's JSON as it was sent.
    pub resource: String,
    /// Custodians.
    pub manifest: Manifest,
    /// Content commitment `C`.
    pub commitment: Hash32,
    /// Record leaf.
    pub leaf: Hash32,
}

impl RecordView {
    /// Builds the view of a stored record.
    pub fn of(r: &StoredRecord) -> Self {
        Self {
            rid: r.header.rid,
            gateway: r.header.gateway,
            purpose: r.header.purpose.clone(),
            received_at_ms: r.header.received_at_ms,
            retain_until_ms: r.header.retain_until_ms,
            subject: r.subject.as_ref().map(|s| s.local.clone()),
            resource: String::from_utf8_lossy(&r.payload).into_owned(),
            manifest: r.manifest.clone(),
            commitment: r.commitment,
            leaf: r.leaf,
        }
    }
}

/// A record with its receipt (`None` until its leaf is committed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadAnswer {
    /// The record.
    pub record: RecordView,
    /// Its anchor receipt from the custodian that answered.
    pub receipt: Option<cairn_proto::receipt::AnchorReceipt>,
}

/// One stored reading.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ingested {
    /// Record id.
    pub rid: RecordId,
    /// Its leaf.
    pub leaf: Hash32,
}

/// What a batch declares for all its readings.
#[derive(Debug, Clone)]
pub struct BatchTerms {
    /// Submitting gateway.
    pub gateway: KeyId,
    /// Purpose code.
    pub purpose: String,
    /// Receipt time, Unix milliseconds.
    pub now_ms: u64,
    /// Retention, milliseconds.
    pub retention_ms: u64,
}

impl Records {
    /// The peer id of a genesis validator.
    pub fn peer(&self, validator: &KeyId) -> Option<PeerId> {
        self.validators.iter().find(|(k, _)| k == validator).map(|(_, p)| *p)
    }

    /// The custodians for new records: this node, then connected validators in genesis
    /// order after it, `replication` in all.
    pub fn custodians(&self) -> Result<Vec<(KeyId, Option<PeerId>)>, RecordsError> {
        let connected = self.connected.borrow().clone();
        let start = self.validators.iter().position(|(k, _)| *k == self.me).unwrap_or(0);
        let n = self.validators.len();
        let mut chosen = vec![(self.me, None)];
        for i in 1..n {
            if chosen.len() == self.replication {
                break;
            }
            if let Some((k, p)) = self.validators.get((start + i) % n)
                && connected.contains(p)
            {
                chosen.push((*k, Some(*p)));
            }
        }
        if chosen.len() < self.replication {
            return Err(RecordsError::Unavailable(format!(
                "{} of the {} custodians a record needs are reachable",
                chosen.len(),
                self.replication
            )));
        }
        Ok(chosen)
    }

    /// Sends a request to a peer and waits for the answer.
    pub async fn ask(&self, peer: PeerId, request: Request) -> Result<Response, String> {
        let (reply, rx) = oneshot::channel();
        self.p2p.send(Outbound { peer, request, reply }).await.map_err(|_| "the p2p task has stopped".to_string())?;
        rx.await.map_err(|_| "the p2p task dropped the request".to_string())?
    }

    /// Stores readings at every custodian; returns when all hold them durably. Requests
    /// that arrive together are merged by the batcher ([`run_batcher`]) into one seal,
    /// one replication message per custodian and one vault commit.
    pub async fn ingest(
        &self,
        terms: BatchTerms,
        readings: Vec<Reading>,
    ) -> Result<(Manifest, Vec<Ingested>), RecordsError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job { terms, readings, reply })
            .await
            .map_err(|_| RecordsError::Unavailable("the ingest batcher has stopped".into()))?;
        rx.await.map_err(|_| RecordsError::Unavailable("the ingest batcher dropped the request".into()))?
    }

    /// Stores the readings of several requests as one group; all or nothing.
    pub async fn ingest_group(
        &self,
        jobs: Vec<(BatchTerms, Vec<Reading>)>,
    ) -> Result<(Manifest, Vec<Vec<Ingested>>), RecordsError> {
        let custodians = self.custodians()?;
        let manifest = Manifest::new(custodians.iter().map(|(k, _)| *k).collect())
            .map_err(|e| RecordsError::Unavailable(e.to_string()))?;
        let sizes: Vec<usize> = jobs.iter().map(|(_, r)| r.len()).collect();
        let records: Vec<NewRecord> = jobs
            .into_iter()
            .flat_map(|(terms, readings)| {
                let manifest = manifest.clone();
                readings.into_iter().map(move |r| NewRecord {
                    gateway: terms.gateway,
                    content_type: ContentType::FhirObservationJson,
                    purpose: terms.purpose.clone(),
                    received_at_ms: terms.now_ms,
                    retain_until_ms: terms.now_ms.saturating_add(terms.retention_ms),
                    subject: Some(SubjectRef { gateway: terms.gateway, local: r.subject }),
                    manifest: manifest.clone(),
                    payload: r.resource,
                })
            })
            .collect();
        let replicas = self.vault.seal(records).await?;
        let rids: Vec<RecordId> = replicas.iter().map(|r| r.header.rid).collect();
        let remote = custodians.iter().filter_map(|(_, p)| *p).map(|peer| {
            let replicas = replicas.clone();
            async move { (peer, self.ask(peer, Request::Replicate(replicas)).await) }
        });
        let (local, remote) =
            tokio::join!(self.vault.store(replicas.clone()), libp2p::futures::future::join_all(remote));
        let mut failure = None;
        for (peer, answer) in remote {
            match answer {
                Ok(Response::Stored { count }) if count == rids.len() as u64 => {}
                Ok(Response::Error(e)) => failure = Some(format!("custodian {peer} refused the replicas: {e}")),
                Ok(other) => failure = Some(format!("custodian {peer} answered {other:?}")),
                Err(e) => failure = Some(format!("custodian {peer} unreachable: {e}")),
            }
        }
        let stored = match (local, failure) {
            (Ok(stored), None) => stored,
            (local, failure) => {
                if local.is_ok()
                    && let Err(e) = self.vault.erase(rids).await
                {
                    // The error may name a record id: only its kind is logged.
                    tracing::warn!(fatal = e.is_fatal(), "could not remove records whose replication failed");
                }
                return Err(match (local, failure) {
                    (Err(e), _) => RecordsError::Vault(e),
                    (_, Some(f)) => RecordsError::Unavailable(f),
                    (Ok(_), None) => RecordsError::Unavailable("replication failed".into()),
                });
            }
        };
        self.anchors.add(stored.iter().map(|r| r.leaf).collect()).await;
        let mut stored = stored.into_iter().map(|r| Ingested { rid: r.rid, leaf: r.leaf });
        let split = sizes.into_iter().map(|n| stored.by_ref().take(n).collect()).collect();
        Ok((manifest, split))
    }

    /// Stores replicas that a home custodian sent; `from` must be a custodian of each.
    pub async fn accept_replicas(&self, from: PeerId, replicas: Vec<Replica>) -> Response {
        let sender = self.validators.iter().find(|(_, p)| *p == from).map(|(k, _)| *k);
        for r in &replicas {
            let listed = |k: &KeyId| r.manifest.custodians.contains(k);
            if !listed(&self.me) || !sender.as_ref().is_some_and(listed) {
                return Response::Error(format!("record {} does not name both nodes as custodians", r.header.rid));
            }
        }
        match self.vault.store(replicas).await {
            Ok(stored) => {
                let count = stored.len() as u64;
                self.anchors.add(stored.into_iter().map(|r| r.leaf).collect()).await;
                Response::Stored { count }
            }
            Err(e) => Response::Error(e.to_string()),
        }
    }

    /// Reads a record held here, for `gateway` only.
    pub async fn read_local(&self, rid: RecordId, gateway: KeyId) -> Result<RecordView, RecordsError> {
        match self.vault.get(rid).await {
            Ok(r) if r.header.gateway == gateway => Ok(RecordView::of(&r)),
            Ok(_) | Err(VaultError::NotFound(_)) => Err(RecordsError::NotFound(rid)),
            Err(e) => Err(e.into()),
        }
    }
}
