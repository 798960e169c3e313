//! Taking readings in and giving them back.
//!
//! **When a submission is acknowledged.** `POST /v1/readings` answers 200 only when every
//! record of the batch is durable (sled flush + `fdatasync`) in the vault of *every*
//! custodian its manifest names: the receiving node (home) and `replication − 1` other
//! validators, chosen in genesis order after the home node among those connected. Losing
//! any one custodian after the answer therefore loses no record (with the default
//! replication of 2). Anchoring happens after the answer: every custodian anchors the
//! leaves it holds, so a receipt can be had from any surviving custodian.

use std::sync::Arc;

use cairn_proto::record::{ContentType, Manifest, RecordId};
use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::fhir::Reading;
use super::ports::AskError;
use super::wire::{Request, Response};
use super::{Records, RecordsError};
use crate::vault::{NewRecord, SubjectRef};

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
pub async fn run_batcher(records: Arc<Records>, mut rx: mpsc::Receiver<Job>, max_groups: usize) {
    let max_readings = records.settings.max_batch_readings;
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
        let records = records.clone();
        tokio::spawn(async move {
            let (inputs, replies): (Vec<_>, Vec<_>) =
                group.into_iter().map(|j| ((j.terms, j.readings), j.reply)).unzip();
            match records.ingest_group(inputs).await {
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
    /// The custodians for new records: this node, then connected validators in genesis
    /// order after it, `replication` in all.
    pub fn custodians(&self) -> Result<Vec<KeyId>, RecordsError> {
        let connected = self.peers.connected();
        let replication = self.settings.replication;
        let start = self.validators.iter().position(|k| *k == self.me).unwrap_or(0);
        let n = self.validators.len();
        let mut chosen = vec![self.me];
        for i in 1..n {
            if chosen.len() == replication {
                break;
            }
            if let Some(k) = self.validators.get((start + i) % n)
                && connected.contains(k)
            {
                chosen.push(*k);
            }
        }
        if chosen.len() < replication {
            return Err(RecordsError::Unavailable(format!(
                "{} of the {replication} custodians a record needs are reachable",
                chosen.len()
            )));
        }
        Ok(chosen)
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
        let manifest = Manifest::new(custodians.clone()).map_err(|e| RecordsError::Unavailable(e.to_string()))?;
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
        let stored = self.seal_and_replicate(&custodians, records).await?;
        let mut stored = stored.into_iter().map(|r| Ingested { rid: r.rid, leaf: r.leaf });
        let split = sizes.into_iter().map(|n| stored.by_ref().take(n).collect()).collect();
        Ok((manifest, split))
    }

    /// Seals `records` here, stores them at every custodian (this node and the others,
    /// at once) and queues their leaves for anchoring; all or nothing: if any custodian
    /// fails, what this node stored is removed again.
    pub(crate) async fn seal_and_replicate(
        &self,
        custodians: &[KeyId],
        records: Vec<NewRecord>,
    ) -> Result<Vec<crate::vault::PutReceipt>, RecordsError> {
        let replicas = self.vault.seal(records).await?;
        let rids: Vec<RecordId> = replicas.iter().map(|r| r.header.rid).collect();
        let remote = custodians.iter().filter(|k| **k != self.me).map(|peer| {
            let replicas = replicas.clone();
            async move { (*peer, self.ask(*peer, Request::Replicate(replicas)).await) }
        });
        let (local, remote) = tokio::join!(self.vault.store(replicas.clone()), futures::future::join_all(remote));
        let mut failure = None;
        for (peer, answer) in remote {
            match answer {
                Ok(Response::Stored { count }) if count == rids.len() as u64 => {}
                Err(AskError::Refused(e)) => failure = Some(format!("custodian {peer} refused the replicas: {e}")),
                Ok(_) => failure = Some(format!("custodian {peer} answered with something else than Stored")),
                Err(e @ AskError::NotDelivered(_)) => failure = Some(format!("custodian {peer} unreachable: {e}")),
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
        Ok(stored)
    }
}
