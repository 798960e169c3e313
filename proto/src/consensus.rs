//! What validators sign in consensus, and the commit certificate a regulator checks
//! offline. Malachite drives the protocol; these are cairn's byte formats for its votes
//! and proposals, so that a certificate verifies from the genesis file alone.
//!
//! Rule set: consensus signatures are checked with ZIP-215 ([`Rules::Zip215`]) — the
//! rule Malachite's ed25519 scheme applies — by nodes and offline verifiers alike.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::batch::{BatchItem, verify_batch};
use crate::encoding::{EncodeError, encode};
use crate::hash::{Hash32, domain};
use crate::identity::{KeyId, PublicKey, Rules, Signature, signing_bytes};
use crate::membership::Validator;
use crate::version::versioned;

/// Prevote or precommit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    /// First-round vote.
    Prevote,
    /// Second-round vote; a quorum of these decides a block.
    Precommit,
}

/// The signed content of a vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    /// Format version (1).
    pub version: u8,
    /// Genesis hash: a vote for another chain never counts here.
    pub chain: Hash32,
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// Hash of the block header voted for, or `None` for nil.
    pub value: Option<Hash32>,
    /// Key id of the voting validator.
    pub voter: KeyId,
}

/// The signed content of a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalBody {
    /// Format version (1).
    pub version: u8,
    /// Genesis hash.
    pub chain: Hash32,
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// Hash of the proposed block header.
    pub value: Hash32,
    /// Proof-of-lock round, if any.
    pub pol_round: Option<u32>,
    /// Key id of the proposer.
    pub proposer: KeyId,
}

versioned!(VoteBody = 1, ProposalBody = 1);

impl VoteBody {
    /// The exact bytes a validator signs: `"cairn/sig/vote/v1" || bcs(body)`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(signing_bytes(domain::SIG_VOTE, &encode(self)?))
    }
}

impl ProposalBody {
    /// The exact bytes a proposer signs: `"cairn/sig/proposal/v1" || bcs(body)`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(signing_bytes(domain::SIG_PROPOSAL, &encode(self)?))
    }
}

/// Proof that a block was decided: precommits for it from validators holding more than
/// two thirds of the voting power.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitCertificate {
    /// Format version (1).
    pub version: u8,
    /// Height decided.
    pub height: u64,
    /// Round in which it was decided.
    pub round: u32,
    /// Hash of the decided block header.
    pub value: Hash32,
    /// Precommit signatures, by validator key id, ascending, one per validator.
    pub signatures: Vec<(KeyId, Signature)>,
}

versioned!(CommitCertificate = 1);

/// Why a certificate does not prove its block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// A block header version other than 1.
    #[error("unknown block header version {0} (this build reads 1)")]
    HeaderVersion(u8),
    /// It certifies another height or block.
    #[error("certificate is for height {height} and block {value}, not the block in question")]
    WrongBlock {
        /// Its height.
        height: u64,
        /// Its block hash.
        value: Hash32,
    },
    /// A signer is not a validator of the chain.
    #[error("signature {index} is by {signer}, who is not a validator")]
    NotAValidator {
        /// Position in the certificate.
        index: usize,
        /// Signer's key id.
        signer: KeyId,
    },
    /// Signers are repeated or out of order.
    #[error("signers must be distinct and ascending")]
    Unordered,
    /// A certificate format this verifier does not know.
    #[error("unknown certificate version {0}")]
    Version(u8),
    /// A signature does not verify (ZIP-215).
    #[error("signature {index} by {signer} does not verify")]
    BadSignature {
        /// Position in the certificate.
        index: usize,
        /// Signer's key id.
        signer: KeyId,
    },
    /// The valid signatures hold no more than two thirds of the voting power.
    #[error("signers hold {signed} of {total} voting power; more than two thirds is needed")]
    NoQuorum {
        /// Power that signed.
        signed: u64,
        /// Total power.
        total: u64,
    },
    /// The certificate cannot be encoded.
    #[error("encoding: {0}")]
    Encoding(String),
}

impl CommitCertificate {
    /// Checks that this certificate decides block `value` at `height` on chain `chain`
    /// with the given validator set. Every signature must verify (a stored certificate
    /// with one bad signature has been altered) and the signers must hold more than two
    /// thirds of the voting power. Signatures are batch-verified under ZIP-215.
    pub fn verify(
        &self,
        chain: &Hash32,
        height: u64,
        value: &Hash32,
        validators: &[Validator],
    ) -> Result<(), CertificateError> {
        if self.version != 1 {
            return Err(CertificateError::Version(self.version));
        }
        if self.height != height || self.value != *value {
            return Err(CertificateError::WrongBlock { height: self.height, value: self.value });
        }
        let mut seen = BTreeSet::new();
        let mut keys: Vec<PublicKey> = Vec::with_capacity(self.signatures.len());
        let mut signed: u64 = 0;
        for (index, (signer, _)) in self.signatures.iter().enumerate() {
            if !seen.insert(*signer) || seen.last() != Some(signer) {
                return Err(CertificateError::Unordered);
            }
            let v = validators
                .iter()
                .find(|v| v.public_key.key_id() == *signer)
                .ok_or(CertificateError::NotAValidator { index, signer: *signer })?;
            keys.push(v.public_key);
            signed = signed.saturating_add(v.voting_power);
        }
        let bodies: Vec<Vec<u8>> = self
            .signatures
            .iter()
            .map(|(voter, _)| {
                VoteBody {
                    version: 1,
                    chain: *chain,
                    kind: VoteKind::Precommit,
                    height: self.height,
                    round: self.round,
                    value: Some(self.value),
                    voter: *voter,
                }
                .signing_bytes()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| CertificateError::Encoding(e.to_string()))?;
        let items: Vec<BatchItem<'_>> = (0..self.signatures.len())
            .filter_map(|i| {
                Some(BatchItem { key: keys.get(i)?, signed: bodies.get(i)?, signature: &self.signatures.get(i)?.1 })
            })
            .collect();
        if let Err(e) = verify_batch(Rules::Zip215, &items) {
            let index = e.bad.first().map_or(0, |b| b.0);
            let signer = self.signatures.get(index).map_or(KeyId([0; 16]), |s| s.0);
            return Err(CertificateError::BadSignature { index, signer });
        }
        let total: u64 = validators.iter().map(|v| v.voting_power).sum();
        if u128::from(signed) * 3 <= u128::from(total) * 2 {
            return Err(CertificateError::NoQuorum { signed, total });
        }
        Ok(())
    }
}

/// A block header with its commit certificate: a checkpoint a regulator can keep and
/// later hold the ledger to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifiedHeader {
    /// The header.
    pub header: crate::ledger::BlockHeader,
    /// Its commit certificate.
    pub certificate: CommitCertificate,
}

impl CertifiedHeader {
    /// Checks the certificate against the validators and that it is for this header on
    /// chain `chain`.
    pub fn verify(&self, chain: &Hash32, validators: &[Validator]) -> Result<(), CertificateError> {
        if self.header.version != 1 {
            return Err(CertificateError::HeaderVersion(self.header.version));
        }
        if self.header.chain != *chain {
            return Err(CertificateError::WrongBlock { height: self.header.height, value: self.certificate.value });
        }
        let hash = self.header.hash().map_err(|e| CertificateError::Encoding(e.to_string()))?;
        self.certificate.verify(chain, self.header.height, &hash, validators)
    }
}

/// A decided block with its commit certificate, as a node serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifiedBlock {
    /// The block.
    pub block: crate::transaction::Block,
    /// Its commit certificate.
    pub certificate: CommitCertificate,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, SecretSeed};

    /// Validator seeds `[1; 32]`, `[2; 32]`, ... and the validator set they make.
    fn validators(n: u8) -> (Vec<[u8; 32]>, Vec<Validator>) {
        let seeds: Vec<[u8; 32]> = (1..=n).map(|b| [b; 32]).collect();
        let set = seeds
            .iter()
            .map(|s| Validator {
                organisation: "o".into(),
                public_key: Keypair::from_seed(&SecretSeed::from_bytes(*s)).public(),
                voting_power: 1,
            })
            .collect();
        (seeds, set)
    }

    /// Precommits signed the way Malachite's ed25519 signer signs (ed25519-consensus).
    fn certificate(seeds: &[[u8; 32]], chain: Hash32, value: Hash32) -> CommitCertificate {
        let mut signatures: Vec<_> = seeds
            .iter()
            .map(|seed| {
                let voter = Keypair::from_seed(&SecretSeed::from_bytes(*seed)).public().key_id();
                let body = VoteBody {
                    version: 1,
                    chain,
                    kind: VoteKind::Precommit,
                    height: 7,
                    round: 0,
                    value: Some(value),
                    voter,
                };
                let sig = ed25519_consensus::SigningKey::from(*seed).sign(&body.signing_bytes().unwrap());
                (voter, Signature(sig.to_bytes()))
            })
            .collect();
        signatures.sort_by_key(|s| s.0);
        CommitCertificate { version: 1, height: 7, round: 0, value, signatures }
    }

    #[test]
    fn three_of_four_decide_and_two_do_not() {
        let (keys, set) = validators(4);
        let (chain, value) = (Hash32([1; 32]), Hash32([2; 32]));
        let cert = certificate(&keys[..3], chain, value);
        cert.verify(&chain, 7, &value, &set).unwrap();
        let two = certificate(&keys[..2], chain, value);
        assert_eq!(two.verify(&chain, 7, &value, &set), Err(CertificateError::NoQuorum { signed: 2, total: 4 }));
    }

    #[test]
    fn any_alteration_is_refused_with_a_reason() {
        let (keys, set) = validators(4);
        let (chain, value) = (Hash32([1; 32]), Hash32([2; 32]));
        let cert = certificate(&keys, chain, value);
        assert!(matches!(cert.verify(&chain, 8, &value, &set), Err(CertificateError::WrongBlock { .. })));
        assert!(matches!(cert.verify(&Hash32([9; 32]), 7, &value, &set), Err(CertificateError::BadSignature { .. })));
        let mut bad = cert.clone();
        bad.signatures[2].1.0[0] ^= 1;
        assert!(matches!(bad.verify(&chain, 7, &value, &set), Err(CertificateError::BadSignature { index: 2, .. })));
        let mut dup = cert.clone();
        dup.signatures[1] = dup.signatures[0];
        assert_eq!(dup.verify(&chain, 7, &value, &set), Err(CertificateError::Unordered));
        let (_, others) = validators(5);
        let outsider = certificate(&[[5; 32]], chain, value);
        assert!(matches!(outsider.verify(&chain, 7, &value, &set), Err(CertificateError::NotAValidator { .. })));
        outsider.verify(&chain, 7, &value, &others).unwrap_err();
    }
}
