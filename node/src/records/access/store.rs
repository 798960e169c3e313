//! `access-log.redb`: this node's access events, keyed by entry handle, written by one
//! thread that commits each group of events in one durable redb transaction (group
//! commit: one `fsync` for every event that arrived meanwhile) and answers only after it.
//!
//! A row holds, in clear, only what names no one: the day, the outcome class, the
//! commitment `C` (keyed by a salt only the log key derives) and when the entry expires;
//! the event itself is sealed under a key derived from the subject's log key and this
//! node's day key, whose record id the row names. Rows are never removed: an entry past
//! the log's retention keeps its handle, day, outcome and commitment (so it still counts
//! and its leaf still verifies) and loses its sealed event, while the retention sweep
//! erases its day key with a certificate (so no stale copy of the event opens either).

use std::collections::HashMap;
use std::path::Path;

use cairn_proto::access::{AccessAction, AccessEvent, Outcome, access_commitment, access_leaf};
use cairn_proto::encoding::encode;
use cairn_proto::version::{Versioned, decode_versioned};
use cairn_proto::{Hash32, KeyId};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{DayKey, LogKey};
use crate::records::StoreError;
use crate::vault::crypto;

const ENTRIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("access_entries");
const ROW_LIMIT: usize = 1 << 20;
/// Events committed in one transaction at most.
const GROUP_LIMIT: usize = 1024;
/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// The day (since the Unix epoch) of a time in Unix milliseconds.
pub fn day_of(ms: u64) -> u32 {
    u32::try_from(ms / DAY_MS).unwrap_or(u32::MAX)
}

/// When the retention of `day`'s entries ends, and with it its day key's: `retention_ms`
/// after the day ends (Unix milliseconds).
pub fn expires_ms(day: u32, retention_ms: u64) -> u64 {
    (u64::from(day) + 1).saturating_mul(DAY_MS).saturating_add(retention_ms)
}

/// One row of the access log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    version: u8,
    /// Days since the Unix epoch of the decision.
    pub day: u32,
    /// Granted, refused or break-glass.
    pub outcome: Outcome,
    /// The commitment `C`.
    pub commitment: Hash32,
    /// When the entry's retention ends, Unix milliseconds: [`expires_ms`] of its day.
    pub expires_ms: u64,
    /// The day key the event is sealed under, by [`DayKey::reference`] (a hash of its
    /// record id: the residue audit looks for erased record ids in every file).
    pub sealed_under: Hash32,
    /// The entry records an erasure of the subject's records, not a disclosure.
    pub erasure: bool,
    /// The event, sealed under the log key and the day key (nonce, ciphertext, tag);
    /// `None` once the entry expired.
    pub sealed: Option<Vec<u8>>,
}

impl Versioned for Row {
    const VERSION: u8 = 2;
    fn version(&self) -> u8 {
        self.version
    }
}

impl Row {
    /// The row's leaf under `handle`.
    pub fn leaf(&self, handle: &Hash32) -> Hash32 {
        access_leaf(handle, &self.commitment)
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new("access log", e)
}

/// An event to log under a subject's log key.
#[derive(Debug)]
pub struct NewEntry {
    /// The key it is logged under.
    pub key: LogKey,
    /// This node's key for the event's day.
    pub day: DayKey,
    /// The event.
    pub event: AccessEvent,
}

/// What logging an event produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    /// The entry handle.
    pub handle: Hash32,
    /// Its leaf (to be committed in an `AccessEvents` batch).
    pub leaf: Hash32,
}

type Reply = oneshot::Sender<Result<Vec<Logged>, StoreError>>;

enum Command {
    Log(Vec<NewEntry>, Reply),
    Walk(Vec<LogKey>, oneshot::Sender<Result<Vec<Walked>, StoreError>>),
    All(oneshot::Sender<Result<Vec<(Hash32, Row)>, StoreError>>),
    Expire(u64, oneshot::Sender<Result<u64, StoreError>>),
}

/// A row found by a walk: which of the keys it is under, its k, handle and row.
#[derive(Debug, Clone)]
pub struct Walked {
    /// Index of the key in the walk's list.
    pub key: usize,
    /// The entry's k at this node.
    pub k: u64,
    /// Its handle.
    pub handle: Hash32,
    /// The row.
    pub row: Row,
}

/// Reading a stopped node's access log (the residue audit).
#[derive(Debug)]
pub struct AccessLogStore;

impl AccessLogStore {
    /// Every row of the access log at `path`, by handle.
    pub fn rows(path: &Path) -> Result<HashMap<Hash32, Row>, StoreError> {
        let db = redb::Database::open(path)
            .map_err(|e| StoreError::new("access log", format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        let mut out = HashMap::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.insert(Hash32(*k.value()), decode_row(v.value())?);
        }
        Ok(out)
    }
}

/// The access log's mailbox (one writer thread).
#[derive(Debug, Clone)]
pub struct AccessLogHandle {
    tx: mpsc::Sender<Command>,
}

fn stopped() -> StoreError {
    StoreError::new("access log", "the access-log thread has stopped")
}

impl AccessLogHandle {
    /// Opens `path` and starts the writer thread.
    pub fn spawn(path: &Path, me: KeyId, retention_ms: u64) -> Result<Self, StoreError> {
        let db = redb::Database::create(path)
            .map_err(|e| StoreError::new("access log", format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(ENTRIES).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer { db, me, retention_ms, next: HashMap::new() };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::new("access log", format!("cannot start its thread: {e}")))?;
        Ok(Self { tx })
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(command(reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Logs `entries` durably (committed and synced) and returns their handles and leaves,
    /// in order.
    pub async fn log(&self, entries: Vec<NewEntry>) -> Result<Vec<Logged>, StoreError> {
        self.ask(|r| Command::Log(entries, r)).await
    }

    /// Every row this node logged under any of `keys`, with its handle.
    pub async fn walk(&self, keys: Vec<LogKey>) -> Result<Vec<Walked>, StoreError> {
        self.ask(|r| Command::Walk(keys, r)).await
    }

    /// Every row (for the leaves at start and the regulator's count).
    pub async fn all(&self) -> Result<Vec<(Hash32, Row)>, StoreError> {
        self.ask(Command::All).await
    }

    /// Drops the sealed event of every entry whose retention ended by `now_ms`; returns
    /// how many.
    pub async fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.ask(|r| Command::Expire(now_ms, r)).await
    }
}

struct Writer {
    db: redb::Database,
    me: KeyId,
    retention_ms: u64,
    /// The next k of each log key at this node (by the key's digest), once probed.
    next: HashMap<Hash32, u64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut next = None;
        while let Some(command) = next.take().or_else(|| rx.blocking_recv()) {
            match command {
                Command::Log(first, reply) => {
                    let mut group = vec![(first, reply)];
                    let mut total = group.iter().map(|(e, _)| e.len()).sum::<usize>();
                    while total < GROUP_LIMIT {
                        match rx.try_recv() {
                            Ok(Command::Log(more, reply)) => {
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
                    match self.log_group(&group) {
                        Ok(mut answers) => {
                            for ((_, reply), answer) in group.into_iter().zip(answers.drain(..)) {
                                let _ = reply.send(Ok(answer));
                            }
                        }
                        Err(e) => {
                            // Nothing of the group was written; the counters may have
                            // advanced: forget them, they are probed again.
                            self.next.clear();
                            for (_, reply) in group {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
                Command::Walk(keys, reply) => {
                    let _ = reply.send(self.walk(&keys));
                }
                Command::All(reply) => {
                    let _ = reply.send(self.all());
                }
                Command::Expire(now_ms, reply) => {
                    let _ = reply.send(self.expire(now_ms));
                }
            }
        }
    }

    /// The first k with no row under `key`: rows are written in order from 0 and never
    /// removed, so an exponential then binary search finds it in O(log n) lookups.
    fn probe(
        &self,
        table: &impl redb::ReadableTable<&'static [u8; 32], &'static [u8]>,
        key: &LogKey,
    ) -> Result<u64, StoreError> {
        let has = |k: u64| -> Result<bool, StoreError> {
            Ok(table.get(&key.handle(&self.me, k).0).map_err(db_err)?.is_some())
        };
        if !has(0)? {
            return Ok(0);
        }
        let mut hi = 1u64;
        while has(hi)? {
            hi = hi.saturating_mul(2);
        }
        let mut lo = hi / 2; // has(lo) holds, has(hi) does not
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if has(mid)? { lo = mid } else { hi = mid }
        }
        Ok(hi)
    }

    fn log_group(&mut self, group: &[(Vec<NewEntry>, Reply)]) -> Result<Vec<Vec<Logged>>, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut out = Vec::with_capacity(group.len());
        {
            let mut table = txn.open_table(ENTRIES).map_err(db_err)?;
            for (entries, _) in group {
                let mut logged = Vec::with_capacity(entries.len());
                for e in entries {
                    let digest = e.key.digest();
                    let k = match self.next.get(&digest) {
                        Some(k) => *k,
                        None => self.probe(&table, &e.key)?,
                    };
                    self.next.insert(digest, k + 1);
                    let handle = e.key.handle(&self.me, k);
                    let salt = e.key.salt(&self.me, k);
                    let commitment = access_commitment(&salt.0, &e.event).map_err(db_err)?;
                    let plain = encode(&e.event).map_err(db_err)?;
                    let day = day_of(e.event.recorded_ms);
                    if day != e.day.day {
                        return Err(db_err("an event was given another day's key"));
                    }
                    let sealed = crypto::seal(&e.key.seal_key(&e.day), handle.as_bytes(), &plain).map_err(db_err)?;
                    let row = Row {
                        version: 2,
                        day,
                        outcome: e.event.outcome,
                        commitment,
                        expires_ms: expires_ms(day, self.retention_ms),
                        sealed_under: e.day.reference(),
                        erasure: matches!(e.event.action, AccessAction::Erase { .. }),
                        sealed: Some(sealed),
                    };
                    table.insert(&handle.0, encode(&row).map_err(db_err)?.as_slice()).map_err(db_err)?;
                    logged.push(Logged { handle, leaf: access_leaf(&handle, &commitment) });
                }
                out.push(logged);
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(out)
    }

    fn walk(&self, keys: &[LogKey]) -> Result<Vec<Walked>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        let mut out = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            for k in 0.. {
                let handle = key.handle(&self.me, k);
                let Some(v) = table.get(&handle.0).map_err(db_err)? else { break };
                out.push(Walked { key: i, k, handle, row: decode_row(v.value())? });
            }
        }
        Ok(out)
    }

    fn all(&self) -> Result<Vec<(Hash32, Row)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(ENTRIES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push((Hash32(*k.value()), decode_row(v.value())?));
        }
        Ok(out)
    }

    fn expire(&self, now_ms: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut n = 0;
        {
            let mut table = txn.open_table(ENTRIES).map_err(db_err)?;
            let mut due = Vec::new();
            for row in table.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                let row = decode_row(v.value())?;
                if row.sealed.is_some() && row.expires_ms <= now_ms {
                    due.push((*k.value(), row));
                }
            }
            for (k, mut row) in due {
                row.sealed = None;
                table.insert(&k, encode(&row).map_err(db_err)?.as_slice()).map_err(db_err)?;
                n += 1;
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(n)
    }
}

fn decode_row(bytes: &[u8]) -> Result<Row, StoreError> {
    decode_versioned(bytes, ROW_LIMIT).map_err(|e| StoreError::new("access log", format!("a row does not decode: {e}")))
}
