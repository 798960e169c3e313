//! Who belongs to the consortium: organisations and their admin keys, validators, and
//! the gateway, accessor and regulator keys each organisation vouches for.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::identity::{KeyId, PublicKey};

/// What a non-validator key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submits readings.
    Gateway,
    /// Reads records under consent and purpose.
    Accessor,
    /// Verifies erasures and ledger integrity.
    Regulator,
}

/// A member organisation (a city, a hospital, a device maker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Short unique name: lowercase letters, digits and `-`.
    pub name: String,
    /// Keys that may sign membership changes for this organisation.
    pub admin_keys: Vec<PublicKey>,
}

/// A consensus validator, run by an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    /// Organisation that runs it.
    pub organisation: String,
    /// Its key (the same key signs its consensus votes and its cairn messages).
    pub public_key: PublicKey,
    /// Voting power, at least 1.
    pub voting_power: u64,
}

/// A gateway, accessor or regulator key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberKey {
    /// Organisation that vouches for it.
    pub organisation: String,
    /// What it may do.
    pub role: Role,
    /// The key.
    pub public_key: PublicKey,
}

/// The consortium at one point of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// Organisations.
    pub organisations: Vec<Organisation>,
    /// Validators.
    pub validators: Vec<Validator>,
    /// Gateway, accessor and regulator keys.
    pub members: Vec<MemberKey>,
}

/// A field that breaks the rules, named by its path (e.g. `validators[2].public_key`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {problem}")]
pub struct FieldError {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { field: field.into(), problem: problem.into() }
    }
}

/// Checks a short name: 1..=64 of `a-z`, `0-9`, `-`.
/// Whether `name` is a valid organisation or chain name: 1 to 64 of `a-z`, `0-9`, `-`.
pub fn is_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    !name.is_empty() && name.len() <= 64 && name.chars().all(ok_char)
}

pub(crate) fn check_name(field: &str, name: &str) -> Result<(), FieldError> {
    if !is_name(name) {
        return Err(FieldError::new(field, format!("{name:?} must be 1 to 64 of a-z, 0-9 and '-'")));
    }
    Ok(())
}

impl Membership {
    /// Checks every rule; the error names the first offending field.
    ///
    /// Rules: at least one organisation and one validator; unique organisation names;
    /// every organisation has an admin key; every reference names an existing
    /// organisation; every key is a valid prime-order point; no key appears twice
    /// anywhere (one key, one duty); voting powers are at least 1 and their sum fits.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.organisations.is_empty() {
            return Err(FieldError::new("organisations", "at least one organisation is required"));
        }
        if self.validators.is_empty() {
            return Err(FieldError::new("validators", "at least one validator is required"));
        }
        let mut seen_keys: HashMap<PublicKey, String> = HashMap::new();
        let mut check_key = |field: String, key: &PublicKey| -> Result<(), FieldError> {
            key.validate().map_err(|e| FieldError::new(&field, e.to_string()))?;
            if let Some(first) = seen_keys.insert(*key, field.clone()) {
                return Err(FieldError::new(field, format!("key already used at `{first}`")));
            }
            Ok(())
        };
        let mut orgs: HashMap<&str, usize> = HashMap::new();
        for (i, org) in self.organisations.iter().enumerate() {
            let field = format!("organisations[{i}]");
            check_name(&format!("{field}.name"), &org.name)?;
            if let Some(j) = orgs.insert(&org.name, i) {
                return Err(FieldError::new(format!("{field}.name"), format!("same name as organisations[{j}]")));
            }
            if org.admin_keys.is_empty() {
                return Err(FieldError::new(format!("{field}.admin_keys"), "at least one admin key is required"));
            }
            for (k, key) in org.admin_keys.iter().enumerate() {
                check_key(format!("{field}.admin_keys[{k}]"), key)?;
            }
        }
        let known_org = |field: String, name: &str| match orgs.contains_key(name) {
            true => Ok(()),
            false => Err(FieldError::new(field, format!("no organisation is named {name:?}"))),
        };
        let mut total: u64 = 0;
        for (i, v) in self.validators.iter().enumerate() {
            let field = format!("validators[{i}]");
            known_org(format!("{field}.organisation"), &v.organisation)?;
            check_key(format!("{field}.public_key"), &v.public_key)?;
            if v.voting_power == 0 {
                return Err(FieldError::new(format!("{field}.voting_power"), "must be at least 1"));
            }
            total = total
                .checked_add(v.voting_power)
                .filter(|t| *t <= i64::MAX as u64)
                .ok_or_else(|| FieldError::new(format!("{field}.voting_power"), "total voting power overflows"))?;
        }
        for (i, m) in self.members.iter().enumerate() {
            let field = format!("members[{i}]");
            known_org(format!("{field}.organisation"), &m.organisation)?;
            check_key(format!("{field}.public_key"), &m.public_key)?;
        }
        Ok(())
    }

    /// The validator with this key id.
    pub fn validator(&self, id: &KeyId) -> Option<&Validator> {
        self.validators.iter().find(|v| v.public_key.key_id() == *id)
    }

    /// The gateway, accessor or regulator key with this key id.
    pub fn member(&self, id: &KeyId) -> Option<&MemberKey> {
        self.members.iter().find(|m| m.public_key.key_id() == *id)
    }

    /// The organisation whose admin key has this key id.
    pub fn admin_of(&self, id: &KeyId) -> Option<&Organisation> {
        self.organisations.iter().find(|o| o.admin_keys.iter().any(|k| k.key_id() == *id))
    }
}
