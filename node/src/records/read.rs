//! Reading records back: the view a gateway gets of a stored record, from this node's
//! vault or from a custodian that holds it.

use cairn_proto::record::{ContentType, Manifest, RecordId};
use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};

use super::wire::{Request, Response};
use super::{Records, RecordsError};
use crate::vault::{Replica, StoredRecord, SubjectRef, VaultError};

/// A stored record as it is shown to the gateway that wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordView {
    /// Record id.
    pub rid: RecordId,
    /// Submitting gateway.
    pub gateway: KeyId,
    /// A reading, or a consent-layer document (never served by the record routes).
    pub kind: ContentType,
    /// Declared purpose.
    pub purpose: String,
    /// Received, Unix milliseconds.
    pub received_at_ms: u64,
    /// Erase by, Unix milliseconds.
    pub retain_until_ms: u64,
    /// The gateway's subject reference.
    pub subject: Option<String>,
    /// The resource's JSON as it was sent (empty where content is left out).
    pub resource: String,
    /// Custodians.
    pub manifest: Manifest,
    /// Content commitment `C`.
    pub commitment: Hash32,
    /// Record leaf.
    pub leaf: Hash32,
}

impl RecordView {
    /// The view of a stored record.
    pub fn of(r: &StoredRecord) -> Self {
        Self { resource: String::from_utf8_lossy(&r.payload).into_owned(), ..Self::without_content(r) }
    }

    /// The view of a stored record with its content left out (erasure, retention).
    pub fn without_content(r: &StoredRecord) -> Self {
        Self {
            rid: r.header.rid,
            gateway: r.header.gateway,
            kind: r.header.content_type,
            purpose: r.header.purpose.clone(),
            received_at_ms: r.header.received_at_ms,
            retain_until_ms: r.header.retain_until_ms,
            subject: r.subject.as_ref().map(|s| s.local.clone()),
            resource: String::new(),
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
    /// Whether the custodian that answered keeps it under legal hold.
    pub held: bool,
}

impl Records {
    /// Stores replicas that a home custodian sent; `from` must be a custodian of each.
    pub async fn accept_replicas(&self, from: KeyId, replicas: Vec<Replica>) -> Response {
        for r in &replicas {
            let listed = |k: &KeyId| r.manifest.custodians.contains(k);
            if !listed(&self.me) || !listed(&from) {
                return Response::Error("a record does not name both nodes as custodians".into());
            }
        }
        let documents: Vec<_> = replicas
            .iter()
            .filter_map(|r| {
                let payload = r.open_payload().ok()?;
                Some((r.header.rid, super::consent::stored_document(r.header.content_type, &payload)?))
            })
            .collect();
        let log_keys: Vec<_> = replicas
            .iter()
            .filter_map(|r| {
                let payload = r.open_payload().ok()?;
                let key = super::access::stored_log_key(r.header.content_type, &payload)?;
                Some((r.header.rid, super::consent::subject_of(r.subject.as_ref()?), key))
            })
            .collect();
        match self.vault.store(replicas).await {
            Ok(stored) => {
                let count = stored.len() as u64;
                self.anchors.add(stored.into_iter().map(|r| r.leaf).collect()).await;
                if let Err(e) = self.documents_stored(documents).await {
                    return Response::Error(self.note(e).to_string());
                }
                for (id, subject, key) in log_keys {
                    if let Err(e) = self.log_key_stored(id, subject, key).await {
                        return Response::Error(self.note(e).to_string());
                    }
                }
                Response::Stored { count }
            }
            Err(e) => Response::Error(self.note(e.into()).to_string()),
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

    /// A record held here, with this node's receipt for it.
    pub async fn read_here(&self, rid: RecordId, gateway: KeyId) -> Result<ReadAnswer, RecordsError> {
        let record = self.read_local(rid, gateway).await?;
        let receipt = self
            .receipts_for(std::slice::from_ref(&record))
            .await
            .map_err(|e| RecordsError::Unavailable(e.to_string()))?
            .pop()
            .flatten();
        let held = self.erasures.store.held(&rid)?;
        Ok(ReadAnswer { record, receipt, held })
    }

    /// A record from this node or, if it is not a custodian, from a connected custodian;
    /// `true` when this node answered.
    pub async fn read_anywhere(&self, rid: RecordId, gateway: KeyId) -> Result<(ReadAnswer, bool), RecordsError> {
        match self.read_here(rid, gateway).await {
            Err(RecordsError::NotFound(_)) => {}
            other => return other.map(|a| (a, true)),
        }
        for peer in self.peers.connected() {
            if let Ok(Response::Record(answer)) = self.ask(peer, Request::Read { rid, gateway }).await {
                return Ok((*answer, false));
            }
        }
        Err(RecordsError::NotFound(rid))
    }

    /// The records of a subject held here (content left out), each with this node's
    /// receipt if it anchored it.
    pub async fn subject_here(&self, subject: SubjectRef) -> Result<Vec<ReadAnswer>, RecordsError> {
        let views: Vec<_> = self.vault.subject(subject).await?.iter().map(RecordView::without_content).collect();
        let receipts = self.receipts_for(&views).await?;
        views
            .into_iter()
            .zip(receipts)
            .map(|(record, receipt)| {
                let held = self.erasures.store.held(&record.rid)?;
                Ok(ReadAnswer { record, receipt, held })
            })
            .collect()
    }
}
