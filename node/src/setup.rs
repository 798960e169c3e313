//! Setup commands: turning command-line member lists into a validated genesis.

use cairn_proto::PublicKey;
use cairn_proto::genesis::Genesis;
use cairn_proto::membership::{FieldError, MemberKey, Membership, Organisation, Role, Validator};
use cairn_proto::policy::PurposePolicy;

/// One `ORG=PUBLIC_KEY[:POWER]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberArg {
    /// Organisation name.
    pub organisation: String,
    /// Public key.
    pub key: PublicKey,
    /// Voting power (validators only).
    pub power: Option<u64>,
}

/// Parses `ORG=PUBLIC_KEY` or `ORG=PUBLIC_KEY:POWER`.
pub fn parse_member_arg(arg: &str) -> Result<MemberArg, String> {
    let (organisation, rest) = arg.split_once('=').ok_or_else(|| format!("{arg:?} is not ORG=PUBLIC_KEY"))?;
    let (key, power) = match rest.split_once(':') {
        Some((key, power)) => {
            let power = power.parse().map_err(|_| format!("{power:?} is not a voting power"))?;
            (key, Some(power))
        }
        None => (rest, None),
    };
    let key = key.parse().map_err(|e| format!("{key:?} is not a public key: {e}"))?;
    Ok(MemberArg { organisation: organisation.to_string(), key, power })
}

/// Everything `cairn-node genesis` is told.
#[derive(Debug, Clone, Default)]
pub struct GenesisSpec {
    /// Chain name.
    pub chain_id: String,
    /// Start time, Unix milliseconds.
    pub genesis_time_ms: u64,
    /// `NAME=ADMIN_KEY`; a name given twice gets both keys.
    pub organisations: Vec<MemberArg>,
    /// `ORG=KEY[:POWER]`, power 1 by default.
    pub validators: Vec<MemberArg>,
    /// Gateway, accessor and regulator keys.
    pub members: Vec<(Role, MemberArg)>,
    /// Permitted purposes (v3 PurposeOfUse codes); `None` for
    /// [`PurposePolicy::public_service`].
    pub purposes: Option<Vec<String>>,
    /// Organisations whose admins must sign a policy change; `None` for a majority.
    pub change_quorum: Option<u32>,
}

/// Builds and validates a genesis; the error names the offending field.
pub fn build_genesis(spec: &GenesisSpec) -> Result<Genesis, FieldError> {
    let mut organisations: Vec<Organisation> = Vec::new();
    for arg in &spec.organisations {
        match organisations.iter_mut().find(|o| o.name == arg.organisation) {
            Some(org) => org.admin_keys.push(arg.key),
            None => organisations.push(Organisation { name: arg.organisation.clone(), admin_keys: vec![arg.key] }),
        }
    }
    let validators = spec
        .validators
        .iter()
        .map(|v| Validator {
            organisation: v.organisation.clone(),
            public_key: v.key,
            voting_power: v.power.unwrap_or(1),
        })
        .collect();
    let members = spec
        .members
        .iter()
        .map(|(role, m)| MemberKey { organisation: m.organisation.clone(), role: *role, public_key: m.key })
        .collect();
    let policy = match &spec.purposes {
        Some(purposes) => PurposePolicy::new(
            purposes.iter().cloned(),
            spec.change_quorum.unwrap_or(organisations.len() as u32 / 2 + 1),
        ),
        None => {
            let mut p = PurposePolicy::public_service(organisations.len());
            if let Some(q) = spec.change_quorum {
                p.change_quorum = q;
            }
            p
        }
    };
    let genesis = Genesis {
        version: 2,
        chain_id: spec.chain_id.clone(),
        genesis_time_ms: spec.genesis_time_ms,
        membership: Membership { organisations, validators, members },
        policy,
    };
    genesis.validate()?;
    Ok(genesis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::{Keypair, SecretSeed};

    fn key(b: u8) -> String {
        Keypair::from_seed(&SecretSeed::from_bytes([b; 32])).public().to_string()
    }

    #[test]
    fn parses_member_arguments() {
        let m = parse_member_arg(&format!("city={}:3", key(1))).unwrap();
        assert_eq!((m.organisation.as_str(), m.power), ("city", Some(3)));
        assert!(parse_member_arg("city").is_err());
        assert!(parse_member_arg("city=abc").is_err());
        assert!(parse_member_arg(&format!("city={}:many", key(1))).is_err());
    }

    #[test]
    fn builds_a_valid_genesis_and_names_bad_fields() {
        let arg = |s: String| parse_member_arg(&s).unwrap();
        let mut spec = GenesisSpec {
            chain_id: "dev".into(),
            genesis_time_ms: 0,
            organisations: vec![arg(format!("city={}", key(1))), arg(format!("city={}", key(2)))],
            validators: vec![arg(format!("city={}", key(3)))],
            members: vec![(Role::Gateway, arg(format!("city={}", key(4))))],
            purposes: None,
            change_quorum: None,
        };
        let g = build_genesis(&spec).unwrap();
        assert_eq!(g.membership.organisations[0].admin_keys.len(), 2);
        assert!(g.policy.permits("TREAT") && !g.policy.permits("HMARKT"));
        spec.purposes = Some(vec!["TREAT".into(), "HMARKT".into()]);
        assert_eq!(build_genesis(&spec).unwrap_err().field, "policy.purposes[0]");
        spec.purposes = None;
        spec.members.push((Role::Regulator, arg(format!("nobody={}", key(5)))));
        assert_eq!(build_genesis(&spec).unwrap_err().field, "members[1].organisation");
    }
}
