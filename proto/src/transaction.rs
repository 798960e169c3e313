//! What validators order: transactions and blocks. A transaction is a node's signed batch
//! commitment or an organisation admin's signed membership change; nothing else can reach
//! the chain, and neither carries anything about a person (DESIGN.md §3).

use serde::{Deserialize, Serialize};

use crate::encoding::{EncodeError, encode};
use crate::hash::{Hash32, domain, hash_parts};
use crate::identity::{KeyId, PublicKey};
use crate::ledger::{BlockHeader, SignedBatchCommit, body_hash};
use crate::membership::Role;
use crate::signed::{Signed, SignedBody};
use crate::version::versioned;

/// A change to the consortium's gateway, accessor and regulator keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a key with a role, vouched for by the admin's organisation.
    Register {
        /// Role of the key.
        role: Role,
        /// The key.
        public_key: PublicKey,
    },
    /// Removes a key of the admin's organisation.
    Revoke {
        /// The key.
        public_key: PublicKey,
    },
}

/// A membership change as an admin signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipChangeBody {
    /// Format version (1).
    pub version: u8,
    /// Genesis hash of the chain (a change for another chain never applies here).
    pub chain: Hash32,
    /// Key id of the signing admin; the organisation is the admin's.
    pub admin: KeyId,
    /// The admin's sequence number, from 0 without gaps (replays are stale).
    pub nonce: u64,
    /// The change.
    pub change: MembershipChange,
}

/// A membership change with the admin's signature (under `cairn/sig/membership/v1`).
pub type SignedMembershipChange = Signed<MembershipChangeBody>;

versioned!(MembershipChangeBody = 1);

impl SignedBody for MembershipChangeBody {
    const DOMAIN: &'static str = domain::SIG_MEMBERSHIP;
    fn signer(&self) -> KeyId {
        self.admin
    }
}

/// Something validators order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transaction {
    /// A node's batch commitment.
    BatchCommit(SignedBatchCommit),
    /// An admin's membership change.
    Membership(SignedMembershipChange),
    /// A change of the purpose policy signed by a quorum of organisation admins.
    PolicyChange(crate::policy::PolicyChange),
}

impl Transaction {
    /// `blake3("cairn/tx/v1" || bcs(tx))`: what the mempool deduplicates on.
    pub fn id(&self) -> Result<Hash32, EncodeError> {
        Ok(hash_parts(domain::TX, &[&encode(self)?]))
    }
}

/// A decided block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    /// Header (what the commit certificate's votes are about).
    pub header: BlockHeader,
    /// Transactions, in order.
    pub transactions: Vec<Transaction>,
}

impl Block {
    /// Hash of the transactions as the header's `body_hash` must state it.
    pub fn compute_body_hash(transactions: &[Transaction]) -> Result<Hash32, EncodeError> {
        Ok(body_hash(&encode(transactions)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, SecretSeed};

    #[test]
    fn membership_change_signature_binds_every_field() {
        let admin = Keypair::from_seed(&SecretSeed::from_bytes([1; 32]));
        let gateway = Keypair::from_seed(&SecretSeed::from_bytes([2; 32])).public();
        let body = MembershipChangeBody {
            version: 1,
            chain: Hash32([9; 32]),
            admin: admin.public().key_id(),
            nonce: 0,
            change: MembershipChange::Register { role: Role::Gateway, public_key: gateway },
        };
        let signed = body.sign(&admin).unwrap();
        signed.verify(&admin.public()).unwrap();
        let mut replayed = signed.clone();
        replayed.body.nonce = 1;
        assert!(replayed.verify(&admin.public()).is_err());
        let mut other_chain = signed.clone();
        other_chain.body.chain = Hash32([8; 32]);
        assert!(other_chain.verify(&admin.public()).is_err());
        let tx = Transaction::Membership(signed);
        assert_ne!(tx.id().unwrap(), Transaction::Membership(replayed).id().unwrap());
    }
}
