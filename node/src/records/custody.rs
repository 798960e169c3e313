//! The vault actor: one thread owns the [`Vault`] (its calls block on `fdatasync`), reached
//! through a cloneable [`VaultHandle`]. Stores that queue up while one is being synced are
//! committed together (group commit): one `fdatasync` acknowledges many requests.

use cairn_proto::Hash32;
use cairn_proto::record::RecordId;
use tokio::sync::{mpsc, oneshot};

use crate::vault::kv::SledStore;
use crate::vault::root::FileRootSlot;
use crate::vault::{NewRecord, PutReceipt, Replica, StoredRecord, Vault, VaultError};

/// Most replicas committed in one group.
const GROUP_LIMIT: usize = 20_000;

type Reply<T> = oneshot::Sender<Result<T, VaultError>>;

enum Command {
    Seal(Vec<NewRecord>, Reply<Vec<Replica>>),
    Store(Vec<Replica>, Reply<Vec<PutReceipt>>),
    Get(RecordId, Reply<StoredRecord>),
    Erase(Vec<RecordId>, Reply<()>),
    Leaves(Reply<Vec<Hash32>>),
}

/// The vault's mailbox.
#[derive(Debug, Clone)]
pub struct VaultHandle {
    tx: mpsc::Sender<Command>,
}

/// The vault thread has stopped (a fatal storage error ended it).
fn stopped() -> VaultError {
    VaultError::Invalid("the vault has stopped".into())
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
    /// Erases records.
    pub async fn erase(&self, rids: Vec<RecordId>) -> Result<(), VaultError> {
        self.ask(|r| Command::Erase(rids, r)).await
    }
    /// The leaves of every live record.
    pub async fn leaves(&self) -> Result<Vec<Hash32>, VaultError> {
        self.ask(Command::Leaves).await
    }
}

fn run(mut vault: Vault<SledStore, FileRootSlot>, mut rx: mpsc::Receiver<Command>) {
    let mut next = None;
    loop {
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
                store_group(&mut vault, group);
            }
            Command::Seal(records, reply) => {
                let _ = reply.send(vault.seal_batch(records));
            }
            Command::Get(rid, reply) => {
                let _ = reply.send(vault.get(&rid));
            }
            Command::Erase(rids, reply) => {
                let _ = reply.send(vault.erase(&rids).map(|_| ()));
            }
            Command::Leaves(reply) => {
                let leaves = vault.record_ids().iter().map(|rid| vault.get(rid).map(|r| r.leaf)).collect();
                let _ = reply.send(leaves);
            }
        }
    }
}

/// Commits a group in one vault batch; if that fails (one request's replicas are
/// refused), each request is committed on its own so one bad request fails alone.
fn store_group(vault: &mut Vault<SledStore, FileRootSlot>, group: Vec<(Vec<Replica>, Reply<Vec<PutReceipt>>)>) {
    if group.len() == 1 {
        for (replicas, reply) in group {
            let _ = reply.send(vault.store(replicas));
        }
        return;
    }
    let sizes: Vec<usize> = group.iter().map(|(r, _)| r.len()).collect();
    let all: Vec<Replica> = group.iter().flat_map(|(r, _)| r.iter().cloned()).collect();
    match vault.store(all) {
        Ok(receipts) => {
            let mut receipts = receipts.into_iter();
            for ((_, reply), n) in group.into_iter().zip(sizes) {
                let _ = reply.send(Ok(receipts.by_ref().take(n).collect()));
            }
        }
        Err(e) => {
            tracing::debug!("group store refused ({e}); storing each request alone");
            for (replicas, reply) in group {
                let _ = reply.send(vault.store(replicas));
            }
        }
    }
}
