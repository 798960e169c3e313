//! Seen request nonces (DESIGN.md §9, ADR 015): a signed request is good once. A nonce
//! is remembered until its request's timestamp leaves the allowed skew, in memory and in
//! `nonces.redb` (written and synced before the request is acted on), so a node restart
//! does not reopen the window. Rows are keyed `expiry (8 bytes, big-endian) ‖ key id ‖
//! nonce`, so expired ones are dropped with one range delete. No subject, no content:
//! key ids and random nonces only.
//!
//! One thread writes `nonces.redb` and commits whatever nonces arrived while it was
//! syncing the previous commit in one transaction (a group commit): a request still
//! returns only once its own nonce is durable, and concurrent requests share a sync.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;

use axum::http::StatusCode;
use cairn_proto::KeyId;
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::error::ApiError;

/// Most nonces remembered at once; beyond this new requests wait (429).
const MAX_NONCES: usize = 4_000_000;
/// Most of them from keys registered nowhere (patients, family members: anyone can make
/// such a key), so that a flood of person-signed requests cannot fill the replay window
/// of gateways and other members (ADR 017).
pub const MAX_PERSON_NONCES: usize = 100_000;

const SEEN: TableDefinition<&[u8], ()> = TableDefinition::new("seen_nonces");

type Seen = (KeyId, [u8; 16]);
/// The nonces in memory: a set to look up, and the same oldest-expiring first.
type Memory = (HashSet<Seen>, VecDeque<(u64, KeyId, [u8; 16])>);

/// Most nonces committed in one transaction.
const MAX_GROUP: usize = 4096;

/// A nonce row for the writer, the caller's `now_ms`, and where to say it is durable.
struct Write {
    row: [u8; 40],
    now_ms: u64,
    done: mpsc::SyncSender<Result<(), String>>,
}

/// The thread that owns `nonces.redb`. Dropping this closes its queue and waits for it,
/// so the file is closed when the store is gone.
struct Writer {
    queue: Option<mpsc::Sender<Write>>,
    thread: Option<JoinHandle<u64>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Commits queued nonces until every sender is gone: each transaction takes every
/// write queued by then (up to [`MAX_GROUP`]), drops rows expired at the earliest
/// caller's `now_ms` and answers each caller after the commit. Returns the number of
/// transactions committed.
fn write_groups(db: redb::Database, queue: mpsc::Receiver<Write>) -> u64 {
    let mut commits = 0;
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP
            && let Ok(more) = queue.try_recv()
        {
            group.push(more);
        }
        let now_ms = group.iter().map(|w| w.now_ms).min().unwrap_or_default();
        let result = (|| -> Result<(), String> {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut table = txn.open_table(SEEN).map_err(|e| e.to_string())?;
                let upper = now_ms.to_be_bytes();
                table.retain_in::<&[u8], _>(..upper.as_slice(), |_, _| false).map_err(|e| e.to_string())?;
                for w in &group {
                    table.insert(w.row.as_slice(), ()).map_err(|e| e.to_string())?;
                }
            }
            txn.commit().map_err(|e| e.to_string())
        })();
        commits += u64::from(result.is_ok());
        for w in group {
            let _ = w.done.send(result.clone());
        }
    }
    commits
}

/// Seen nonces, oldest first, in memory and on disk.
pub struct NonceStore {
    memory: Mutex<Memory>,
    /// Expiries of the person nonces in memory, oldest first.
    persons: Mutex<VecDeque<u64>>,
    person_limit: usize,
    writer: Option<Writer>,
}

impl std::fmt::Debug for NonceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceStore")
    }
}

fn row(expires_ms: u64, key: KeyId, nonce: [u8; 16]) -> [u8; 40] {
    let mut r = [0u8; 40];
    r[..8].copy_from_slice(&expires_ms.to_be_bytes());
    r[8..24].copy_from_slice(&key.0);
    r[24..].copy_from_slice(&nonce);
    r
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("the nonce store failed: {e}"))
}

impl NonceStore {
    /// Kept in memory only (tests of other parts).
    pub fn in_memory() -> Self {
        Self { memory: Mutex::default(), persons: Mutex::default(), person_limit: MAX_PERSON_NONCES, writer: None }
    }

    /// In memory, with at most `limit` person nonces at once (tests).
    pub fn in_memory_with_person_limit(limit: usize) -> Self {
        Self { person_limit: limit, ..Self::in_memory() }
    }

    /// Opens or creates `path`, drops the nonces expired at `now_ms` and loads the rest.
    pub fn open(path: &Path, now_ms: u64) -> Result<Self, String> {
        let db = redb::Database::create(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(SEEN).map_err(|e| e.to_string())?;
            let upper = now_ms.to_be_bytes();
            table.retain_in::<&[u8], _>(..upper.as_slice(), |_, _| false).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())?;
        let mut memory: Memory = Default::default();
        let read = db.begin_read().map_err(|e| e.to_string())?;
        let table = read.open_table(SEEN).map_err(|e| e.to_string())?;
        for r in table.iter().map_err(|e| e.to_string())? {
            let (k, _) = r.map_err(|e| e.to_string())?;
            let k = k.value();
            let (Some(exp), Some(key), Some(nonce)) = (k.get(..8), k.get(8..24), k.get(24..40)) else { continue };
            let (Ok(exp), Ok(key), Ok(nonce)) =
                (<[u8; 8]>::try_from(exp), <[u8; 16]>::try_from(key), <[u8; 16]>::try_from(nonce))
            else {
                continue;
            };
            memory.0.insert((KeyId(key), nonce));
            memory.1.push_back((u64::from_be_bytes(exp), KeyId(key), nonce));
        }
        drop(table);
        drop(read);
        let (queue, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nonce-writer".into())
            .spawn(move || write_groups(db, rx))
            .map_err(|e| format!("cannot start the nonce writer: {e}"))?;
        let writer = Writer { queue: Some(queue), thread: Some(thread) };
        // Nonces reloaded after a restart count against the members' budget.
        Ok(Self {
            memory: Mutex::new(memory),
            persons: Mutex::default(),
            person_limit: MAX_PERSON_NONCES,
            writer: Some(writer),
        })
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `nonce` of `key` was seen (checked before a body is read).
    pub fn seen(&self, key: KeyId, nonce: [u8; 16]) -> bool {
        self.memory().0.contains(&(key, nonce))
    }

    /// Records a nonce valid until `expires_ms`, durably; false if it was seen before.
    /// `person`: the key is registered nowhere (its nonces have their own, smaller
    /// budget: 429 past [`MAX_PERSON_NONCES`]). Blocks on a disk sync: call it off the
    /// async workers.
    pub fn insert(
        &self,
        now_ms: u64,
        expires_ms: u64,
        key: KeyId,
        nonce: [u8; 16],
        person: bool,
    ) -> Result<bool, ApiError> {
        if person {
            let mut persons = self.persons.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while persons.front().is_some_and(|e| *e < now_ms) {
                persons.pop_front();
            }
            if persons.len() >= self.person_limit {
                return Err(ApiError::busy("too many requests from unregistered keys in the replay window"));
            }
            persons.push_back(expires_ms);
        }
        {
            let mut guard = self.memory();
            let (seen, order) = &mut *guard;
            while let Some((expiry, k, n)) = order.front().copied() {
                if expiry >= now_ms {
                    break;
                }
                order.pop_front();
                seen.remove(&(k, n));
            }
            if seen.contains(&(key, nonce)) {
                return Ok(false);
            }
            if seen.len() >= MAX_NONCES {
                return Err(ApiError::busy("too many requests in the replay window"));
            }
            seen.insert((key, nonce));
            order.push_back((expires_ms, key, nonce));
        }
        if let Some(queue) = self.writer.as_ref().and_then(|w| w.queue.as_ref()) {
            let (done, durable) = mpsc::sync_channel(1);
            let sent = queue.send(Write { row: row(expires_ms, key, nonce), now_ms, done });
            let written = match sent {
                Ok(()) => durable.recv().unwrap_or_else(|_| Err("the nonce writer stopped".into())),
                Err(_) => Err("the nonce writer stopped".into()),
            };
            if let Err(e) = written {
                // Not remembered durably: the request is refused, and may be sent again.
                self.memory().0.remove(&(key, nonce));
                return Err(store_error(e));
            }
        }
        Ok(true)
    }
}

impl Default for NonceStore {
    fn default() -> Self {
        Self::in_memory()
    }
}

/// 401 `replayed_request`.
pub fn replayed() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "replayed_request", "this nonce was already used")
        .field(cairn_proto::request::HEADER_NONCE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nonces_outlive_a_restart_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nonces.redb");
        let (k, n) = (KeyId([1; 16]), [7u8; 16]);
        {
            let store = NonceStore::open(&path, 1_000).unwrap();
            assert!(store.insert(1_000, 5_000, k, n, false).unwrap());
            assert!(!store.insert(1_001, 5_000, k, n, false).unwrap());
            assert!(store.insert(1_001, 2_000, k, [8; 16], false).unwrap());
        }
        let store = NonceStore::open(&path, 3_000).unwrap();
        assert!(store.seen(k, n), "a nonce within its window is remembered across a restart");
        assert!(!store.seen(k, [8; 16]), "an expired one is dropped");
        assert!(!store.insert(3_000, 5_000, k, n, false).unwrap());
    }

    /// Writes queued while the writer is busy go out in one transaction, each is answered
    /// once it is durable, and all of them are there after a restart.
    #[test]
    fn queued_nonces_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nonces.redb");
        drop(NonceStore::open(&path, 1_000).unwrap());
        let db = redb::Database::create(&path).unwrap();
        let (queue, rx) = mpsc::channel();
        let mut answers = Vec::new();
        for i in 0..50u8 {
            let (done, durable) = mpsc::sync_channel(1);
            queue.send(Write { row: row(5_000, KeyId([i; 16]), [i; 16]), now_ms: 1_000 + u64::from(i), done }).unwrap();
            answers.push(durable);
        }
        drop(queue);
        assert_eq!(write_groups(db, rx), 1, "fifty queued nonces, one transaction");
        for durable in answers {
            assert_eq!(durable.recv().unwrap(), Ok(()));
        }
        let store = NonceStore::open(&path, 2_000).unwrap();
        assert!((0..50u8).all(|i| store.seen(KeyId([i; 16]), [i; 16])));
    }

    /// Many request threads at once: each nonce is taken exactly once, and every taken
    /// one is there after a restart.
    #[test]
    fn concurrent_inserts_are_each_durable_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nonces.redb");
        {
            let store = std::sync::Arc::new(NonceStore::open(&path, 1_000).unwrap());
            let threads: Vec<_> = (0..16u8)
                .map(|t| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        // Every thread tries the same 20 nonces of key 1 and 20 of its own.
                        let shared =
                            (0..20u8).filter(|i| store.insert(1_000, 9_000, KeyId([1; 16]), [*i; 16], false).unwrap());
                        let shared = shared.count();
                        let own = (0..20u8)
                            .filter(|i| store.insert(1_000, 9_000, KeyId([t + 2; 16]), [*i; 16], false).unwrap());
                        (shared, own.count())
                    })
                })
                .collect();
            let counts: Vec<(usize, usize)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(counts.iter().map(|c| c.0).sum::<usize>(), 20, "each shared nonce accepted once");
            assert!(counts.iter().all(|c| c.1 == 20), "own nonces all accepted");
        }
        let store = NonceStore::open(&path, 2_000).unwrap();
        assert!((0..20u8).all(|i| store.seen(KeyId([1; 16]), [i; 16])));
        assert!((0..16u8).all(|t| (0..20u8).all(|i| store.seen(KeyId([t + 2; 16]), [i; 16]))));
    }

    #[test]
    fn unregistered_keys_have_their_own_budget_and_members_keep_theirs() {
        let store = NonceStore::in_memory_with_person_limit(3);
        for i in 0..3u8 {
            assert!(store.insert(1_000, 5_000, KeyId([i; 16]), [i; 16], true).unwrap());
        }
        let full = store.insert(1_000, 5_000, KeyId([9; 16]), [9; 16], true).unwrap_err();
        let answer = axum::response::IntoResponse::into_response(full);
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(store.insert(1_000, 5_000, KeyId([10; 16]), [1; 16], false).unwrap(), "a member is not refused");
        // Once the window passes, persons are served again.
        assert!(store.insert(6_000, 9_000, KeyId([9; 16]), [9; 16], true).unwrap());
    }
}
