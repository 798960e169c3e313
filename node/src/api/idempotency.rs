//! Idempotency keys (`Idempotency-Key` on `POST /v1/readings`): a retried request with
//! the same key and body gets the first answer again, a different body with the same key
//! is refused (422), and one still being stored is refused (409 `idempotency_in_progress`,
//! which the client retries). Kept per gateway in memory, the oldest forgotten first.

use std::collections::{HashMap, VecDeque};

use axum::http::StatusCode;
use cairn_proto::{Hash32, KeyId};

use super::error::ApiError;

/// The header carrying an idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Remembered idempotency keys, per gateway, oldest forgotten first.
#[derive(Debug, Default)]
pub struct Idempotency {
    entries: HashMap<(KeyId, String), (Hash32, Option<serde_json::Value>)>,
    order: VecDeque<(KeyId, String)>,
}

pub(super) enum Idem {
    /// Not seen: go ahead (and `finish` it).
    Fresh,
    /// Answered before: this is the answer.
    Replay(serde_json::Value),
}

impl Idempotency {
    /// Starts a request under `key` for a body hashing to `body`; at most `cap` keys are kept.
    pub(super) fn begin(&mut self, key: (KeyId, String), body: Hash32, cap: usize) -> Result<Idem, ApiError> {
        match self.entries.get(&key) {
            Some((h, _)) if *h != body => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this idempotency key was used for a different body",
            )
            .field(IDEMPOTENCY_HEADER)),
            Some((_, Some(answer))) => Ok(Idem::Replay(answer.clone())),
            Some((_, None)) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this idempotency key is still being stored",
            )
            .field(IDEMPOTENCY_HEADER)),
            None => {
                while self.order.len() >= cap {
                    if let Some(old) = self.order.pop_front() {
                        self.entries.remove(&old);
                    }
                }
                self.entries.insert(key.clone(), (body, None));
                self.order.push_back(key);
                Ok(Idem::Fresh)
            }
        }
    }
    /// Ends it: keeps the answer for replays, or forgets the key if it failed.
    pub(super) fn finish(&mut self, key: &(KeyId, String), answer: Option<serde_json::Value>) {
        match answer {
            Some(a) => {
                if let Some(e) = self.entries.get_mut(key) {
                    e.1 = Some(a);
                }
            }
            None => {
                self.entries.remove(key);
                self.order.retain(|k| k != key);
            }
        }
    }
}
