//! The vault actor: one thread owns the [`Vault`] (its calls block on `fdatasync`), reached
//! through a cloneable [`VaultHandle`]. Stores that queue up while one is being synced are
//! committed together (group commit): one `fdatasync` acknowledges many requests.

use cairn_proto::Hash32;
use cairn_proto::record::RecordId;
use tokio::sync::{mpsc, oneshot};

use crate::vault::kv::SledStore;
use crate::vault::retention::ExpiredCursor;
use crate::vault::root::FileRootSlot;
use crate::vault::{ErasureEvidence, NewRecord, PutReceipt, Replica, StoredRecord, SubjectRef, Vault, VaultError};

/// Most replicas committed in one group.
const GROUP_LIMIT: usize = 20_000;

type Reply<T> = oneshot::Sender<Result<T, VaultError>>;

enum Command {
    Seal(Vec<NewRecord>, Reply<Vec<Replica>>),
    Store(Vec<Replica>, Reply<Vec<PutReceipt>>),
    Get(RecordId, Reply<StoredRecord>),
    Erase(Vec<RecordId>, Reply<Vec<ErasureEvidence>>),
    Epoch(Reply<u64>),
    Ids(Reply<Vec<RecordId>>),
    Expired(u64, Option<ExpiredCursor>, usize, Reply<(Vec<StoredRecord>, Option<ExpiredCursor>)>),
    Subject(SubjectRef, Reply<Vec<StoredRecord>>),
    Leaves(Reply<Vec<Hash32>>),
    Documents(Reply<Vec<StoredRecord>>),
}

/// The vault's mailbox.
#[derive(Debug, Clone)]
pub struct VaultHandle {
    tx: mpsc::Sender<Command>,
}

/// The vault thread has stopped (a fatal storage error ended it).
fn stopped() -> VaultError {
    VaultError::Fatal("the vault has stopped".into())
}

/// Sends a reply; true if the result was a fatal failure (the actor then stops).
fn answer<T>(reply: Reply<T>, result: Result<T, VaultError>) -> bool {
    let fatal = result.as_ref().err().is_some_and(VaultError::is_fatal);
    if let Err(e) = &result
        && fatal
    {
        tracing::error!("vault failure, stopping the vault: {e}");
    }
    let _ = reply.send(result);
    fatal
}

impl VaultHandle {
    /// Starts the actor thread on an open vault; `bound` is the mailbox size.
    pub fn spawn(vault: Vault<SledStore, FileRootSlot>, bound: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(bound);
        std::thread::Builder::new().name("vault".into()).spawn(move || run(vault, rx))?;
        Ok(Self { tx })
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, VaultError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Resolves when the vault thread has stopped (after a fatal failure).
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Seals new records (ids, keys, ciphertext) without storing them.
    pub async fn seal(&self, records: Vec<NewRecord>) -> Result<Vec<Replica>, VaultError> {
        self.ask(|r| Command::Seal(records, r)).await
    }
    /// Stores sealed records durably.
    pub async fn store(&self, replicas: Vec<Replica>) -> Result<Vec<PutReceipt>, VaultError> {
        self.ask(|r| Command::Store(replicas, r)).await
    }
    /// Reads a record.
    pub async fn get(&self, rid: RecordId) -> Result<StoredRecord, VaultError> {
        self.ask(|r| Command::Get(rid, r)).await
    }
    /// Erases records in one keystore epoch; all or nothing.
    pub async fn erase(&self, rids: Vec<RecordId>) -> Result<Vec<ErasureEvidence>, VaultError> {
        self.ask(|r| Command::Erase(rids, r)).await
    }
    /// The ids of every live record, sorted.
    pub async fn ids(&self) -> Result<Vec<RecordId>, VaultError> {
        self.ask(Command::Ids).await
    }
    /// Up to `limit` records whose retention ended at or before `now_ms`, after `after`,
    /// and the cursor of the next page (`Vault::expired_page`: only those records are
    /// opened; ask a page at a time, so that other work runs in between).
    pub async fn expired(
        &self,
        now_ms: u64,
        after: Option<ExpiredCursor>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, Option<ExpiredCursor>), VaultError> {
        self.ask(|r| Command::Expired(now_ms, after, limit, r)).await
    }
    /// The keystore's current epoch.
    pub async fn epoch(&self) -> Result<u64, VaultError> {
        self.ask(Command::Epoch).await
    }
    /// Every record of a subject held here (none if the vault does not know the subject).
    pub async fn subject(&self, subject: SubjectRef) -> Result<Vec<StoredRecord>, VaultError> {
        self.ask(|r| Command::Subject(subject, r)).await
    }
    /// The leaves of every live record.
    pub async fn leaves(&self) -> Result<Vec<Hash32>, VaultError> {
        self.ask(Command::Leaves).await
    }
    /// Every live record that is not a reading: consent-layer documents and access-log
    /// keys.
    pub async fn documents(&self) -> Result<Vec<StoredRecord>, VaultError> {
        self.ask(Command::Documents).await
    }
}

fn run(mut vault: Vault<SledStore, FileRootSlot>, mut rx: mpsc::Receiver<Command>) {
    let mut next = None;
    let mut fatal = false;
    while !fatal {
        let Some(command) = next.take().or_else(|| rx.blocking_recv()) else { return };
        match command {
            Command::Store(first, reply) => {
                let mut group = vec![(first, reply)];
                let mut total = group.iter().map(|(r, _)| r.len()).sum::<usize>();
                while total < GROUP_LIMIT {
                    match rx.try_recv() {
                        Ok(Command::Store(more, reply)) => {
                            total += more.len();
                            group.push((more, reply));
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                fatal = store_group(&mut vault, group);
            }
            Command::Seal(records, reply) => fatal = answer(reply, vault.seal_batch(records)),
            Command::Get(rid, reply) => fatal = answer(reply, vault.get(&rid)),
            Command::Erase(rids, reply) => fatal = answer(reply, vault.erase(&rids)),
            Command::Epoch(reply) => fatal = answer(reply, Ok(vault.epoch())),
            Command::Ids(reply) => fatal = answer(reply, Ok(vault.record_ids())),
            Command::Expired(now, after, limit, reply) => fatal = answer(reply, vault.expired_page(now, after, limit)),
            Command::Subject(subject, reply) => {
                let records = match vault.subject_records(&subject) {
                    Ok(rids) => rids.iter().map(|rid| vault.get(rid)).collect(),
                    Err(VaultError::SubjectNotFound) => Ok(Vec::new()),
                    Err(e) => Err(e),
                };
                fatal = answer(reply, records);
            }
            Command::Leaves(reply) => {
                let leaves = vault.record_ids().iter().map(|rid| vault.get(rid).map(|r| r.leaf)).collect();
                fatal = answer(reply, leaves);
            }
            Command::Documents(reply) => {
                let docs: Result<Vec<StoredRecord>, VaultError> = vault
                    .record_ids()
                    .iter()
                    .map(|rid| vault.get(rid))
                    .filter(|r| r.as_ref().map_or(true, |r| !r.header.content_type.is_reading()))
                    .collect();
                fatal = answer(reply, docs);
            }
        }
    }
}

/// Commits a group in one vault batch; if that is refused (one request's replicas are
/// invalid), each request is committed on its own so one bad request fails alone.
/// Returns true on a fatal failure.
fn store_group(vault: &mut Vault<SledStore, FileRootSlot>, group: Vec<(Vec<Replica>, Reply<Vec<PutReceipt>>)>) -> bool {
    if group.len() == 1 {
        return group.into_iter().any(|(replicas, reply)| answer(reply, vault.store(replicas)));
    }
    let sizes: Vec<usize> = group.iter().map(|(r, _)| r.len()).collect();
    let all: Vec<Replica> = group.iter().flat_map(|(r, _)| r.iter().cloned()).collect();
    match vault.store(all) {
        Ok(receipts) => {
            let mut receipts = receipts.into_iter();
            for ((_, reply), n) in group.into_iter().zip(sizes) {
                let _ = reply.send(Ok(receipts.by_ref().take(n).collect()));
            }
            false
        }
        Err(e) if e.is_fatal() => {
            tracing::error!("vault failure, stopping the vault: {e}");
            for (_, reply) in group {
                let _ = reply.send(Err(stopped()));
            }
            true
        }
        Err(_) => {
            // The reason may name a record id: not logged.
            tracing::debug!("group store refused; storing each request alone");
            let mut fatal = false;
            for (replicas, reply) in group {
                fatal = fatal || answer(reply, vault.store(replicas));
            }
            fatal
        }
    }
}
