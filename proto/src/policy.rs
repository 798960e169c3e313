//! The consortium's purpose policy (DESIGN.md §7, sandbox condition ⑥): the purposes of
//! use for which records may be read at all, named in the genesis file and changed only
//! by a [`PolicyChange`] that admins of at least `change_quorum` distinct organisations
//! sign, committed on chain (`Transaction::PolicyChange`).
//!
//! Purposes are HL7 v3 `PurposeOfUse` codes (`http://terminology.hl7.org/CodeSystem/v3-ActReason`),
//! e.g. `TREAT`, `CAREMGT`, `PUBHLTH`, `ETREAT`, `FAMRQT`, `PATRQT`. Codes that serve no
//! public purpose ([`NEVER_PERMITTED`], e.g. `HMARKT`) cannot be put in a policy.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::encoding::encode;
use crate::hash::{Hash32, domain};
use crate::identity::{PublicKey, Signature};
use crate::membership::{FieldError, Membership};
use crate::version::versioned;

/// v3 PurposeOfUse codes that a consortium policy may never permit: marketing and
/// commercial uses serve no public purpose (sandbox condition ⑥).
pub const NEVER_PERMITTED: &[&str] = &["HMARKT", "HDIRECT", "COMMRCL", "CLMATTCH"];

/// The purposes a read may name, and how many organisations must agree to change them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposePolicy {
    /// Permitted v3 PurposeOfUse codes, strictly ascending (byte order) in the canonical
    /// form; the TOML file may list them in any order (they are sorted on reading).
    pub purposes: Vec<String>,
    /// Distinct organisations whose admins must sign a change (1 to the number of
    /// organisations).
    pub change_quorum: u32,
}

/// Whether `code` has the shape of a v3 PurposeOfUse code: 2 to 16 of `A-Z`.
pub fn is_purpose_code(code: &str) -> bool {
    (2..=16).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Checks a list of purposes: codes of the right shape, none never permitted, strictly
/// ascending, 1 to 64 of them.
pub fn check_purposes(field: &str, purposes: &[String]) -> Result<(), FieldError> {
    if purposes.is_empty() || purposes.len() > 64 {
        return Err(FieldError::new(field, "1 to 64 purposes are required"));
    }
    for (i, p) in purposes.iter().enumerate() {
        if !is_purpose_code(p) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!("{p:?} is not a v3 PurposeOfUse code (2 to 16 of A-Z)"),
            ));
        }
        if NEVER_PERMITTED.contains(&p.as_str()) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!("{p} serves no public purpose and cannot be permitted (sandbox condition 6)"),
            ));
        }
        if i.checked_sub(1).and_then(|j| purposes.get(j)).is_some_and(|prev| prev >= p) {
            return Err(FieldError::new(format!("{field}[{i}]"), "purposes must be sorted and without repeats"));
        }
    }
    Ok(())
}

impl PurposePolicy {
    /// A policy with `purposes` sorted and deduplicated.
    pub fn new(purposes: impl IntoIterator<Item = String>, change_quorum: u32) -> Self {
        let purposes: BTreeSet<String> = purposes.into_iter().collect();
        Self { purposes: purposes.into_iter().collect(), change_quorum }
    }

    /// The default for `cairn-node genesis` and `dev`: care, emergency care, public
    /// health, health research, and the patient's and family's own requests; a majority
    /// of `organisations` to change it.
    pub fn public_service(organisations: usize) -> Self {
        let codes = ["CAREMGT", "ETREAT", "FAMRQT", "HRESCH", "PATRQT", "PUBHLTH", "TREAT"];
        Self::new(codes.iter().map(|c| c.to_string()), (organisations / 2 + 1) as u32)
    }

    /// Checks the policy against the membership it belongs to.
    pub fn validate(&self, membership: &Membership) -> Result<(), FieldError> {
        check_purposes("policy.purposes", &self.purposes)?;
        let orgs = membership.organisations.len() as u32;
        if self.change_quorum == 0 || self.change_quorum > orgs {
            return Err(FieldError::new(
                "policy.change_quorum",
                format!("must be between 1 and the number of organisations ({orgs})"),
            ));
        }
        Ok(())
    }

    /// Whether reads for `purpose` are permitted.
    pub fn permits(&self, purpose: &str) -> bool {
        self.purposes.binary_search_by(|p| p.as_str().cmp(purpose)).is_ok()
    }
}

/// What the admins sign to replace the purpose list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChangeBody {
    /// Format version (1).
    pub version: u8,
    /// The chain (genesis hash).
    pub chain: Hash32,
    /// The policy version this change makes: the current one plus 1 (the genesis policy
    /// is version 0), so a change applies once and in order.
    pub policy_version: u64,
    /// The new permitted purposes, strictly ascending.
    pub purposes: Vec<String>,
}

versioned!(PolicyChangeBody = 1);

impl PolicyChangeBody {
    /// The bytes each admin signs under `cairn/sig/policy-change/v1`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, crate::encoding::EncodeError> {
        encode(self)
    }
}

/// One admin's signature of a [`PolicyChangeBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSignature {
    /// The admin's public key (an `admin_keys` entry of an organisation).
    pub admin: PublicKey,
    /// Ed25519 signature (strict rules) over `cairn/sig/policy-change/v1 || bcs(body)`.
    pub signature: Signature,
}

/// A change of the purpose policy with the admins' signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    /// What is changed.
    pub body: PolicyChangeBody,
    /// Admin signatures, one per admin key.
    pub signatures: Vec<AdminSignature>,
}

/// Why a policy change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The change is malformed.
    #[error("policy change: {0}")]
    Invalid(String),
    /// A signature is not by an admin or does not verify.
    #[error("policy change signature {index}: {reason}")]
    Signature {
        /// Position in `signatures`.
        index: usize,
        /// Why.
        reason: String,
    },
    /// Too few organisations signed.
    #[error("policy change signed by admins of {signed} organisation(s); the policy needs {needed}")]
    Quorum {
        /// Distinct organisations that signed.
        signed: usize,
        /// `change_quorum`.
        needed: u32,
    },
}

impl PolicyChange {
    /// Signs `body` with each admin key.
    pub fn sign(
        body: PolicyChangeBody,
        admins: &[&crate::identity::Keypair],
    ) -> Result<Self, crate::encoding::EncodeError> {
        let bytes = body.signing_bytes()?;
        let signatures = admins
            .iter()
            .map(|k| AdminSignature { admin: k.public(), signature: k.sign(domain::SIG_POLICY, &bytes) })
            .collect();
        Ok(Self { body, signatures })
    }

    /// Checks the change against the chain, the current policy version and quorum, and
    /// the membership: every signature by a distinct admin key and valid; admins of at
    /// least `quorum` distinct organisations. Returns the organisations that signed.
    pub fn verify(
        &self,
        chain: &Hash32,
        current_version: u64,
        quorum: u32,
        membership: &Membership,
    ) -> Result<Vec<String>, PolicyError> {
        let b = &self.body;
        if b.version != 1 {
            return Err(PolicyError::Invalid(format!("unknown version {} (this build reads 1)", b.version)));
        }
        if b.chain != *chain {
            return Err(PolicyError::Invalid("made for another chain".into()));
        }
        if b.policy_version != current_version.saturating_add(1) {
            return Err(PolicyError::Invalid(format!(
                "makes policy version {}, but the current version is {current_version}",
                b.policy_version
            )));
        }
        check_purposes("purposes", &b.purposes).map_err(|e| PolicyError::Invalid(e.to_string()))?;
        let bytes = b.signing_bytes().map_err(|e| PolicyError::Invalid(e.to_string()))?;
        let mut keys = BTreeSet::new();
        let mut orgs = BTreeSet::new();
        for (index, s) in self.signatures.iter().enumerate() {
            let bad = |reason: String| PolicyError::Signature { index, reason };
            let org = membership
                .admin_of(&s.admin.key_id())
                .ok_or_else(|| bad(format!("key {} is not an organisation admin", s.admin.key_id())))?;
            if !keys.insert(s.admin) {
                return Err(bad("the same admin signed twice".into()));
            }
            s.admin.verify(domain::SIG_POLICY, &bytes, &s.signature).map_err(|e| bad(e.to_string()))?;
            orgs.insert(org.name.clone());
        }
        if (orgs.len() as u32) < quorum {
            return Err(PolicyError::Quorum { signed: orgs.len(), needed: quorum });
        }
        Ok(orgs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, SecretSeed};
    use crate::membership::Organisation;

    fn key(b: u8) -> Keypair {
        Keypair::from_seed(&SecretSeed::from_bytes([b; 32]))
    }

    fn membership() -> Membership {
        let org = |name: &str, b: u8| Organisation { name: name.into(), admin_keys: vec![key(b).public()] };
        Membership { organisations: vec![org("city", 1), org("hospital", 2), org("maker", 3)], ..Default::default() }
    }

    fn body(version: u64) -> PolicyChangeBody {
        PolicyChangeBody {
            version: 1,
            chain: Hash32([7; 32]),
            policy_version: version,
            purposes: vec!["PUBHLTH".into(), "TREAT".into()],
        }
    }

    #[test]
    fn a_quorum_of_organisations_changes_the_policy_and_fewer_do_not() {
        let m = membership();
        let (a, b) = (key(1), key(2));
        let ok = PolicyChange::sign(body(1), &[&a, &b]).unwrap();
        assert_eq!(ok.verify(&Hash32([7; 32]), 0, 2, &m).unwrap(), vec!["city", "hospital"]);
        let one = PolicyChange::sign(body(1), &[&a]).unwrap();
        assert_eq!(one.verify(&Hash32([7; 32]), 0, 2, &m), Err(PolicyError::Quorum { signed: 1, needed: 2 }));
        let twice = PolicyChange { signatures: vec![ok.signatures[0].clone(), ok.signatures[0].clone()], ..ok.clone() };
        assert!(matches!(twice.verify(&Hash32([7; 32]), 0, 2, &m), Err(PolicyError::Signature { index: 1, .. })));
        let stranger = PolicyChange::sign(body(1), &[&a, &key(9)]).unwrap();
        assert!(matches!(stranger.verify(&Hash32([7; 32]), 0, 2, &m), Err(PolicyError::Signature { index: 1, .. })));
        assert!(ok.verify(&Hash32([7; 32]), 1, 2, &m).is_err(), "a replay of an applied change is refused");
        assert!(ok.verify(&Hash32([8; 32]), 0, 2, &m).is_err(), "another chain");
        let mut changed = ok.clone();
        changed.body.purposes.push("ZZTOP".into());
        assert!(matches!(changed.verify(&Hash32([7; 32]), 0, 2, &m), Err(PolicyError::Signature { index: 0, .. })));
    }

    #[test]
    fn commercial_purposes_and_unsorted_lists_cannot_be_permitted() {
        assert!(check_purposes("p", &["HMARKT".into()]).unwrap_err().problem.contains("public purpose"));
        assert!(check_purposes("p", &["TREAT".into(), "CAREMGT".into()]).is_err());
        assert!(check_purposes("p", &["treat".into()]).is_err());
        assert!(check_purposes("p", &[]).is_err());
        let p = PurposePolicy::public_service(3);
        assert!(p.permits("TREAT") && p.permits("HRESCH") && !p.permits("HMARKT") && !p.permits("HDIRECT"));
        assert_eq!(p.change_quorum, 2);
        p.validate(&membership()).unwrap();
    }
}
