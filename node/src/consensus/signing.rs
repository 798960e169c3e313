//! Signing and verifying consensus messages. Votes, proposals and validator proofs are
//! signed over cairn's own byte formats (`cairn_proto::consensus`), bound to the chain,
//! with the node's ed25519 key through Malachite's ed25519 scheme (ed25519-consensus,
//! ZIP-215) — the same rule the offline certificate verifier applies.

use std::sync::atomic::{AtomicU64, Ordering};

use arc_malachitebft_app_channel::app::types::core::{SignedMessage, ValidatorProof, VoteExtensionScope};
use arc_malachitebft_signing::{Error, Signer, VerificationResult, Verifier};
use arc_malachitebft_signing_ed25519::{PrivateKey, PublicKey, Signature};
use cairn_proto::Hash32;
use cairn_proto::encoding::encode;
use cairn_proto::hash::domain;
use cairn_proto::identity::signing_bytes;

use super::context::{CairnContext, NoExtension, Proposal, Vote};

fn proof_bytes(public_key: &[u8], peer_id: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(signing_bytes(domain::SIG_VALIDATOR_PROOF, &encode(&(public_key, peer_id)).map_err(Error::from_source)?))
}

/// Signs as one validator.
pub struct CairnSigner {
    chain: Hash32,
    key: PrivateKey,
}

impl std::fmt::Debug for CairnSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CairnSigner").field("public_key", &self.key.public_key()).finish()
    }
}

impl CairnSigner {
    /// A signer for `chain` from the node's seed.
    pub fn new(chain: Hash32, seed: &cairn_proto::SecretSeed) -> Self {
        Self { chain, key: PrivateKey::from(*seed.expose()) }
    }
}

#[async_trait::async_trait]
impl Signer<CairnContext> for CairnSigner {
    async fn sign_vote(&self, vote: Vote) -> Result<SignedMessage<CairnContext, Vote>, Error> {
        let bytes = vote.body(self.chain).signing_bytes().map_err(Error::from_source)?;
        let signature = self.key.sign(&bytes);
        Ok(SignedMessage::new(vote, signature))
    }

    async fn sign_proposal(&self, proposal: Proposal) -> Result<SignedMessage<CairnContext, Proposal>, Error> {
        let bytes = proposal.body(self.chain).signing_bytes().map_err(Error::from_source)?;
        let signature = self.key.sign(&bytes);
        Ok(SignedMessage::new(proposal, signature))
    }

    async fn sign_vote_extension(
        &self,
        _scope: VoteExtensionScope<CairnContext>,
        extension: NoExtension,
    ) -> Result<SignedMessage<CairnContext, NoExtension>, Error> {
        match extension {}
    }

    async fn sign_validator_proof(
        &self,
        public_key: Vec<u8>,
        peer_id: Vec<u8>,
    ) -> Result<ValidatorProof<CairnContext>, Error> {
        let signature = self.key.sign(&proof_bytes(&public_key, &peer_id)?);
        Ok(ValidatorProof::new(public_key, peer_id, signature))
    }
}

/// Verifies consensus signatures for one chain.
#[derive(Debug, Clone)]
pub struct CairnVerifier {
    chain: Hash32,
    /// Public keys a validator proof may name; `None` accepts any key.
    validators: Option<Vec<[u8; 32]>>,
}

impl CairnVerifier {
    /// A verifier for `chain` that accepts a validator proof from any key.
    pub fn new(chain: Hash32) -> Self {
        Self { chain, validators: None }
    }

    /// A verifier for `chain` that accepts validator proofs only from these keys (the
    /// genesis validators): a peer proving any other key is disconnected by the network.
    pub fn with_validators(chain: Hash32, keys: Vec<[u8; 32]>) -> Self {
        Self { chain, validators: Some(keys) }
    }
}

/// Signatures refused since the process started.
static BAD_SIGNATURES: AtomicU64 = AtomicU64::new(0);

/// How many consensus signatures (votes, proposals, validator proofs) were refused since
/// the process started.
pub fn bad_signature_count() -> u64 {
    BAD_SIGNATURES.load(Ordering::Relaxed)
}

fn check(key: &PublicKey, bytes: &[u8], signature: &Signature) -> VerificationResult {
    let ok = key.verify(bytes, signature).is_ok();
    if !ok {
        BAD_SIGNATURES.fetch_add(1, Ordering::Relaxed);
    }
    VerificationResult::from_bool(ok)
}

#[async_trait::async_trait]
impl Verifier<CairnContext> for CairnVerifier {
    async fn verify_signed_vote(
        &self,
        vote: &Vote,
        signature: &Signature,
        key: &PublicKey,
    ) -> Result<VerificationResult, Error> {
        let bytes = vote.body(self.chain).signing_bytes().map_err(Error::from_source)?;
        Ok(check(key, &bytes, signature))
    }

    async fn verify_signed_proposal(
        &self,
        proposal: &Proposal,
        signature: &Signature,
        key: &PublicKey,
    ) -> Result<VerificationResult, Error> {
        let bytes = proposal.body(self.chain).signing_bytes().map_err(Error::from_source)?;
        Ok(check(key, &bytes, signature))
    }

    async fn verify_signed_vote_extension(
        &self,
        _scope: &VoteExtensionScope<CairnContext>,
        extension: &NoExtension,
        _signature: &Signature,
        _key: &PublicKey,
    ) -> Result<VerificationResult, Error> {
        match *extension {}
    }

    async fn verify_validator_proof(&self, proof: &ValidatorProof<CairnContext>) -> Result<VerificationResult, Error> {
        let Ok(bytes) = <[u8; 32]>::try_from(proof.public_key.as_slice()) else {
            return Ok(VerificationResult::Invalid);
        };
        if self.validators.as_ref().is_some_and(|v| !v.contains(&bytes)) {
            BAD_SIGNATURES.fetch_add(1, Ordering::Relaxed);
            return Ok(VerificationResult::Invalid);
        }
        let Ok(key) = PublicKey::from_bytes(bytes) else { return Ok(VerificationResult::Invalid) };
        Ok(check(&key, &proof_bytes(&proof.public_key, &proof.peer_id)?, &proof.signature))
    }
}
