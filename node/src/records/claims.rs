//! Idempotency keys across the consortium (ADR 015): a gateway that retries a submission
//! with the same `Idempotency-Key` — at the same node or, after a timeout, at another —
//! stores it once.
//!
//! Before storing, the receiving node **claims** the key at every validator (itself
//! included) and goes ahead only when a majority (⌊n/2⌋+1, 3 of 4) granted it. Two
//! claims of the same key cannot both win a majority, so two nodes never store the same
//! keyed batch at once. When the batch is stored the answer is **settled** at every
//! validator that answers; a later claim anywhere is answered with it (a replay). When
//! the batch fails the claim is released. A validator answering a claim reports what it
//! knows: another request body under the key (refused, 422), an answer (replayed) — each
//! believed only when f+1 validators report the same, so one faulty validator cannot
//! fake either — or a claim still in progress (409, the client retries). An in-progress
//! claim older than [`CLAIM_TTL`] is abandoned (its holder stopped) and may be taken
//! over.
//!
//! A claim is identified by `blake3("cairn/idempotency/v1" ‖ gateway ‖ key)` and bound
//! to the hash of the request (query and body): no subject and no content travel. Claims
//! are kept in memory, at most `capacity` per node (the oldest settled first forgotten):
//! a restart of one validator forgets its claims, and two majorities still share at
//! least one other validator that remembers.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};

use super::Records;
use super::wire::{Request, Response};
use crate::clock::now_ms;

/// How long a claim may stay in progress before another node may take it over.
pub const CLAIM_TTL: Duration = Duration::from_secs(120);

/// What a validator answers to a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimAnswer {
    /// Recorded for the asking node.
    Granted,
    /// Already claimed.
    Taken {
        /// Hash of the request it was claimed for.
        request: Hash32,
        /// The node storing it.
        holder: KeyId,
        /// Its answer (JSON), once stored.
        answer: Option<Vec<u8>>,
    },
}

#[derive(Debug, Clone)]
struct Claim {
    request: Hash32,
    holder: KeyId,
    since_ms: u64,
    answer: Option<Vec<u8>>,
}

/// The claims one validator knows.
#[derive(Debug)]
pub struct Claims {
    inner: Mutex<(HashMap<Hash32, Claim>, VecDeque<Hash32>)>,
    capacity: usize,
}

impl Claims {
    /// At most `capacity` claims are kept.
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new((HashMap::new(), VecDeque::new())), capacity: capacity.max(1) }
    }

    /// Records a claim of `id` for `request` by `holder`, unless another one stands.
    pub fn take(&self, id: Hash32, request: Hash32, holder: KeyId, now_ms: u64) -> ClaimAnswer {
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (entries, order) = &mut *guard;
        if let Some(c) = entries.get(&id) {
            // Even the holder's own second claim is refused while the first is in
            // progress: a client retrying at the same node must not store twice.
            let abandoned = c.answer.is_none() && now_ms.saturating_sub(c.since_ms) > CLAIM_TTL.as_millis() as u64;
            if !abandoned {
                return ClaimAnswer::Taken { request: c.request, holder: c.holder, answer: c.answer.clone() };
            }
        } else {
            while order.len() >= self.capacity {
                if let Some(old) = order.pop_front() {
                    entries.remove(&old);
                }
            }
            order.push_back(id);
        }
        entries.insert(id, Claim { request, holder, since_ms: now_ms, answer: None });
        ClaimAnswer::Granted
    }

    /// Forgets every claim, as a restart does (tests).
    #[cfg(test)]
    pub fn forget_all(&self) {
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Default::default();
    }

    /// Settles `holder`'s claim of `id` with its answer, or releases it (`None`).
    pub fn settle(&self, id: Hash32, request: Hash32, holder: KeyId, answer: Option<Vec<u8>>) {
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (entries, order) = &mut *guard;
        match (entries.get_mut(&id), answer) {
            (Some(c), answer) if c.holder == holder && c.request == request && c.answer.is_none() => match answer {
                Some(a) => c.answer = Some(a),
                None => {
                    entries.remove(&id);
                    order.retain(|k| *k != id);
                }
            },
            // Settled here without having been claimed here (this validator was out of
            // reach during the claim): remember the answer.
            (None, Some(a)) => {
                while order.len() >= self.capacity {
                    if let Some(old) = order.pop_front() {
                        entries.remove(&old);
                    }
                }
                order.push_back(id);
                entries.insert(id, Claim { request, holder, since_ms: now_ms(), answer: Some(a) });
            }
            _ => {}
        }
    }
}

/// The outcome of claiming an idempotency key across the consortium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This node holds the claim: store the batch, then [`Records::settle`].
    Fresh,
    /// The batch was stored before: its answer (JSON).
    Replay(Vec<u8>),
    /// The key was used for another request body.
    Reused,
    /// A node is storing the batch now; ask again shortly.
    InProgress,
    /// Fewer than a majority of validators answered.
    Unavailable(String),
}

/// The claim id of `key` for `gateway`.
pub fn claim_id(gateway: KeyId, key: &str) -> Hash32 {
    cairn_proto::hash::hash_parts("cairn/idempotency/v1", &[&gateway.0, key.as_bytes()])
}

impl Records {
    /// Claims idempotency key `id` for `request` at every validator (ADR 015).
    pub async fn claim(&self, id: Hash32, request: Hash32) -> Claimed {
        let now = now_ms();
        let mut answers = vec![self.claims.take(id, request, self.me, now)];
        let others: Vec<KeyId> = self.validators.iter().filter(|k| **k != self.me).copied().collect();
        let asks = others.iter().map(|peer| self.ask(*peer, Request::Claim { id, request, holder: self.me }));
        for answer in futures::future::join_all(asks).await {
            if let Ok(Response::Claim(a)) = answer {
                answers.push(a);
            }
        }
        let granted = answers.iter().filter(|a| **a == ClaimAnswer::Granted).count();
        // A replay or a reuse is believed from f+1 validators (one of them honest, with
        // f = ⌊(n−1)/3⌋ faulty tolerated, as for consensus): one faulty validator can
        // neither make a batch look stored nor block its key. Fewer: in progress, retry.
        let trusted = (self.validators.len().saturating_sub(1)) / 3 + 1;
        let mut replays: Vec<(&Vec<u8>, usize)> = Vec::new();
        let (mut reused, mut taken) = (0, 0);
        for a in &answers {
            if let ClaimAnswer::Taken { request: r, answer, .. } = a {
                taken += 1;
                match answer {
                    _ if *r != request => reused += 1,
                    Some(answer) => match replays.iter_mut().find(|(a, _)| *a == answer) {
                        Some((_, n)) => *n += 1,
                        None => replays.push((answer, 1)),
                    },
                    None => {}
                }
            }
        }
        let quorum = self.validators.len() / 2 + 1;
        // With a majority granted no other claim can hold one: a minority reporting a
        // claim in progress is stale or faulty, and does not hold this one up.
        let outcome = if reused >= trusted {
            Claimed::Reused
        } else if let Some((answer, _)) = replays.iter().find(|(_, n)| *n >= trusted) {
            Claimed::Replay((*answer).clone())
        } else if granted >= quorum {
            return Claimed::Fresh;
        } else if taken > 0 {
            Claimed::InProgress
        } else {
            Claimed::Unavailable(format!(
                "{granted} of the {quorum} validators an idempotency key needs answered; nothing was stored"
            ))
        };
        if granted > 0 {
            self.settle(id, request, None).await;
        }
        outcome
    }

    /// Settles this node's claim of `id` with the stored batch's answer, or releases it
    /// (`None`), at every validator that answers.
    pub async fn settle(&self, id: Hash32, request: Hash32, answer: Option<Vec<u8>>) {
        self.claims.settle(id, request, self.me, answer.clone());
        let others: Vec<KeyId> = self.validators.iter().filter(|k| **k != self.me).copied().collect();
        let asks = others
            .iter()
            .map(|peer| self.ask(*peer, Request::Settle { id, request, holder: self.me, answer: answer.clone() }));
        futures::future::join_all(asks).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_stands_until_settled_released_or_abandoned() {
        let claims = Claims::new(2);
        let (id, req, a, b) = (Hash32([1; 32]), Hash32([2; 32]), KeyId([1; 16]), KeyId([2; 16]));
        assert_eq!(claims.take(id, req, a, 0), ClaimAnswer::Granted);
        let taken = ClaimAnswer::Taken { request: req, holder: a, answer: None };
        assert_eq!(claims.take(id, req, b, 1), taken);
        // The holder asking again (a client retrying at the same node) is refused too.
        assert_eq!(claims.take(id, req, a, 1), taken);
        // Past the TTL an unsettled claim is abandoned.
        let later = CLAIM_TTL.as_millis() as u64 + 10;
        assert_eq!(claims.take(id, req, b, later), ClaimAnswer::Granted);
        // Only the holder settles.
        claims.settle(id, req, a, Some(b"{}".to_vec()));
        assert_eq!(claims.take(id, req, a, later), ClaimAnswer::Taken { request: req, holder: b, answer: None });
        claims.settle(id, req, b, Some(b"{}".to_vec()));
        assert_eq!(
            claims.take(id, Hash32([3; 32]), a, later),
            ClaimAnswer::Taken { request: req, holder: b, answer: Some(b"{}".to_vec()) }
        );
        // Released claims are gone; the capacity bounds memory.
        claims.take(Hash32([5; 32]), req, a, later);
        claims.settle(Hash32([5; 32]), req, a, None);
        assert_eq!(claims.take(Hash32([5; 32]), req, b, later), ClaimAnswer::Granted);
        claims.take(Hash32([6; 32]), req, a, later);
        assert_eq!(claims.take(id, req, a, later), ClaimAnswer::Granted, "the oldest was forgotten");
    }
}
