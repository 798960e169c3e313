//! Organisation admins: register and revoke gateway, accessor and regulator keys through
//! a node (a signed membership change, ordered by consensus).

use std::time::{Duration, Instant};

use cairn_proto::encoding::encode;
use cairn_proto::genesis::Genesis;
use cairn_proto::membership::Role;
use cairn_proto::signed::SignedBody as _;
use cairn_proto::transaction::{MembershipChange, MembershipChangeBody, Transaction};
use cairn_proto::{Keypair, PublicKey};

use crate::http::{HttpError, get_json, post};

/// Why a change did not go through.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Transport or a refusal.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The node refused the transaction.
    #[error("the node refused the change ({status}): {body}")]
    Refused {
        /// Status.
        status: u16,
        /// The node's error.
        body: String,
    },
    /// Not committed in time.
    #[error("the change was not committed within {0:?}")]
    Timeout(Duration),
    /// A local problem.
    #[error("{0}")]
    Local(String),
}

fn next_nonce(node: &str, admin: &Keypair) -> Result<u64, AdminError> {
    let v: serde_json::Value = get_json(&format!("{node}/v1/admins/{}", admin.public().key_id()))?;
    v.get("next_nonce")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| AdminError::Local("the node's answer has no next_nonce".into()))
}

/// Submits a membership change signed by `admin` and waits until it is committed.
pub fn change(
    node: &str,
    genesis: &Genesis,
    admin: &Keypair,
    change: MembershipChange,
    timeout: Duration,
) -> Result<(), AdminError> {
    let node = node.trim_end_matches('/');
    let nonce = next_nonce(node, admin)?;
    let chain = genesis.hash().map_err(|e| AdminError::Local(e.to_string()))?;
    let body = MembershipChangeBody { version: 1, chain, admin: admin.public().key_id(), nonce, change };
    let tx = Transaction::Membership(body.sign(admin).map_err(|e| AdminError::Local(e.to_string()))?);
    let bytes = encode(&tx).map_err(|e| AdminError::Local(e.to_string()))?;
    let (status, answer) = post(&format!("{node}/v1/transactions"), "application/octet-stream", &bytes)?;
    if status != 202 {
        return Err(AdminError::Refused { status, body: String::from_utf8_lossy(&answer).into_owned() });
    }
    let started = Instant::now();
    while next_nonce(node, admin)? <= nonce {
        if started.elapsed() > timeout {
            return Err(AdminError::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Registers `key` with `role` for the admin's organisation and waits for the commit.
pub fn register(node: &str, genesis: &Genesis, admin: &Keypair, role: Role, key: PublicKey) -> Result<(), AdminError> {
    change(node, genesis, admin, MembershipChange::Register { role, public_key: key }, Duration::from_secs(60))
}

/// The purpose policy's version at `node` (0 = the genesis policy).
pub fn policy_version(node: &str) -> Result<u64, AdminError> {
    let v: serde_json::Value = get_json(&format!("{}/v1/policy", node.trim_end_matches('/')))?;
    v.get("version").and_then(serde_json::Value::as_u64).ok_or_else(|| AdminError::Local("no policy version".into()))
}

/// Replaces the purpose policy with `purposes`, signed by every key of `admins` (admins of
/// at least the policy's `change_quorum` organisations), and waits until it is committed.
/// Fewer organisations: the node refuses the transaction, naming the quorum.
pub fn change_policy(
    node: &str,
    genesis: &Genesis,
    admins: &[Keypair],
    purposes: Vec<String>,
    timeout: Duration,
) -> Result<u64, AdminError> {
    use cairn_proto::policy::{PolicyChange, PolicyChangeBody, PurposePolicy};
    let node = node.trim_end_matches('/');
    let current = policy_version(node)?;
    let chain = genesis.hash().map_err(|e| AdminError::Local(e.to_string()))?;
    let purposes = PurposePolicy::new(purposes, 1).purposes;
    let body = PolicyChangeBody { version: 1, chain, policy_version: current + 1, purposes };
    let signers: Vec<&Keypair> = admins.iter().collect();
    let change = PolicyChange::sign(body, &signers).map_err(|e| AdminError::Local(e.to_string()))?;
    let bytes = encode(&Transaction::PolicyChange(change)).map_err(|e| AdminError::Local(e.to_string()))?;
    let (status, answer) = post(&format!("{node}/v1/transactions"), "application/octet-stream", &bytes)?;
    if status != 202 {
        return Err(AdminError::Refused { status, body: String::from_utf8_lossy(&answer).into_owned() });
    }
    let started = Instant::now();
    while policy_version(node)? <= current {
        if started.elapsed() > timeout {
            return Err(AdminError::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(current + 1)
}
