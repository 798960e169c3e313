//! Verify many signatures at once, and name the bad ones when that fails.
//!
//! Under [`Rules::Zip215`] (commit certificates) a batch is checked with
//! ed25519-consensus's batch equation, which by ZIP-215's design accepts exactly the
//! signatures that one-by-one verification accepts; when the batch fails, every item is
//! checked alone to name the bad ones.
//!
//! Under [`Rules::Strict`] items are checked one by one. No batch equation can agree with
//! `verify_strict`'s cofactorless check on an `R` that carries a torsion component
//! without a per-signature subgroup check, which costs about what batching saves; a fast
//! path that sometimes accepts what a regulator's verifier rejects is worse than no fast
//! path (docs/adr/006-signature-rules.md).

use crate::hash::{domain, hash_parts};
use crate::identity::{PublicKey, Rules, Signature, SignatureError};

/// One signature to check: the key, the exact signed bytes, the signature.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// Signer.
    pub key: &'a PublicKey,
    /// Exactly the bytes that were signed (for cairn kinds, `domain || message`).
    pub signed: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
}

/// The batch failed; these items (by index) do not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} of the signatures do not verify, first at index {}", bad.len(), bad.first().map_or(0, |b| b.0))]
pub struct BatchError {
    /// Index into the batch, and why, for each bad signature (ascending).
    pub bad: Vec<(usize, SignatureError)>,
}

/// Verifies every item under `rules`; on failure names each bad item.
pub fn verify_batch(rules: Rules, items: &[BatchItem<'_>]) -> Result<(), BatchError> {
    if rules == Rules::Zip215 && items.len() > 1 && zip215_batch(items) {
        return Ok(());
    }
    let bad: Vec<_> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| it.key.verify_bytes(rules, it.signed, it.signature).err().map(|e| (i, e)))
        .collect();
    if bad.is_empty() { Ok(()) } else { Err(BatchError { bad }) }
}

fn zip215_batch(items: &[BatchItem<'_>]) -> bool {
    let mut verifier = ed25519_consensus::batch::Verifier::new();
    let mut transcript = blake3::Hasher::new();
    transcript.update(domain::BATCH_VERIFY.as_bytes());
    for it in items {
        let key = ed25519_consensus::VerificationKeyBytes::from(it.key.0);
        let sig = ed25519_consensus::Signature::from(it.signature.0);
        verifier.queue((key, sig, it.signed));
        transcript.update(&it.key.0);
        transcript.update(&it.signature.0);
        transcript.update(hash_parts(domain::BATCH_VERIFY, &[it.signed]).as_bytes());
    }
    verifier.verify(TranscriptRng(transcript.finalize_xof())).is_ok()
}

/// Coefficients for the batch equation, derived from everything in the batch (as
/// ed25519-dalek does with merlin), so this pure crate needs no OS randomness.
struct TranscriptRng(blake3::OutputReader);

impl rand_core_06::RngCore for TranscriptRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core_06::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl rand_core_06::CryptoRng for TranscriptRng {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, SecretSeed, signing_bytes};

    struct Fixture {
        keys: Vec<PublicKey>,
        msgs: Vec<Vec<u8>>,
        sigs: Vec<Signature>,
    }

    fn fixture(n: u8) -> Fixture {
        let mut f = Fixture { keys: vec![], msgs: vec![], sigs: vec![] };
        for i in 0..n {
            let kp = Keypair::from_seed(&SecretSeed::from_bytes([i + 1; 32]));
            let msg = vec![i; 10];
            f.sigs.push(kp.sign(domain::SIG_CHALLENGE, &msg));
            f.msgs.push(signing_bytes(domain::SIG_CHALLENGE, &msg));
            f.keys.push(kp.public());
        }
        f
    }

    fn items(f: &Fixture) -> Vec<BatchItem<'_>> {
        (0..f.keys.len()).map(|i| BatchItem { key: &f.keys[i], signed: &f.msgs[i], signature: &f.sigs[i] }).collect()
    }

    #[test]
    fn good_batches_pass_under_both_rules() {
        let f = fixture(16);
        verify_batch(Rules::Zip215, &items(&f)).unwrap();
        verify_batch(Rules::Strict, &items(&f)).unwrap();
        verify_batch(Rules::Zip215, &[]).unwrap();
    }

    #[test]
    fn bad_signatures_are_named() {
        let mut f = fixture(16);
        f.sigs[3].0[5] ^= 1;
        f.msgs[11][0] ^= 1;
        for rules in [Rules::Zip215, Rules::Strict] {
            let err = verify_batch(rules, &items(&f)).unwrap_err();
            let idx: Vec<usize> = err.bad.iter().map(|b| b.0).collect();
            assert_eq!(idx, vec![3, 11], "{rules:?}");
        }
    }

    #[test]
    fn swapped_signatures_fail_even_though_each_is_valid_somewhere() {
        let mut f = fixture(4);
        f.sigs.swap(0, 1);
        let err = verify_batch(Rules::Zip215, &items(&f)).unwrap_err();
        assert_eq!(err.bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![0, 1]);
    }
}
