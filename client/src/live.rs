//! The online check beside an erasure certificate (DESIGN.md §8): ask every custodian of
//! the record whether it still holds it, with a fresh nonce, and check each signed answer
//! against the custodian's genesis key.

use std::collections::BTreeMap;

use cairn_proto::KeyId;
use cairn_proto::erasure::{ErasureCertificate, SignedChallengeAnswer};
use cairn_proto::genesis::Genesis;

use crate::http::post;

/// Why a live challenge did not establish the erasure.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// No randomness for the nonce.
    #[error("no randomness: {0}")]
    Random(String),
    /// A custodian of the record answered none of the challenges.
    #[error("custodian {0} did not answer (give the URL of every custodian)")]
    Unanswered(KeyId),
    /// A custodian says it still holds the record.
    #[error("custodian {0} signed that it still holds the record")]
    StillHeld(KeyId),
    /// An answer that does not verify or is not about this challenge.
    #[error("{url}: {why}")]
    BadAnswer {
        /// Node asked.
        url: String,
        /// What is wrong.
        why: String,
    },
}

/// Challenges the nodes at `urls` about the certificate's record; succeeds when every
/// custodian of its manifest signed, for this challenge's nonce, that it does not hold
/// the record. Returns the checks made, in words.
pub fn challenge(genesis: &Genesis, cert: &ErasureCertificate, urls: &[String]) -> Result<Vec<String>, LiveError> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| LiveError::Random(e.to_string()))?;
    let body = serde_json::json!({"rid": cert.record.rid, "leaf": cert.record.leaf, "nonce": hex::encode(nonce)});
    let body = body.to_string();
    let mut answers: BTreeMap<KeyId, (String, bool, u64)> = BTreeMap::new();
    for url in urls {
        let base = url.trim_end_matches('/');
        let bad = |why: String| LiveError::BadAnswer { url: base.to_string(), why };
        let (status, bytes) = match post(&format!("{base}/v1/challenges"), "application/json", body.as_bytes()) {
            Ok(answer) => answer,
            Err(e) => return Err(bad(e.to_string())),
        };
        if status != 200 {
            return Err(bad(format!("answered {status}: {}", String::from_utf8_lossy(&bytes))));
        }
        let answer: SignedChallengeAnswer = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let a = &answer.body;
        let key = genesis
            .membership
            .validator(&a.custodian)
            .ok_or_else(|| bad(format!("{} is not a genesis validator", a.custodian)))?;
        answer.verify(&key.public_key).map_err(|e| bad(format!("signature: {e}")))?;
        if a.version != 1 || a.nonce != nonce || a.rid != cert.record.rid || a.leaf != cert.record.leaf {
            return Err(bad("the answer is not about this challenge".into()));
        }
        answers.insert(a.custodian, (base.to_string(), a.holds, a.answered_at_ms));
    }
    let mut checks = Vec::new();
    for custodian in &cert.record.manifest.custodians {
        let (url, holds, at) = answers.get(custodian).ok_or(LiveError::Unanswered(*custodian))?;
        if *holds {
            return Err(LiveError::StillHeld(*custodian));
        }
        checks.push(format!(
            "live: custodian {custodian} ({url}) signed at {at} ms, for a fresh nonce, that it does not hold the record"
        ));
    }
    Ok(checks)
}
