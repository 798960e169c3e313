//! The genesis file: a human-editable TOML document that fixes the chain id, its start
//! time and the founding membership. Its identity is the hash of its canonical (bcs)
//! form, so reformatting the TOML does not change the chain.

use serde::{Deserialize, Serialize};
use toml::value::{Date, Datetime, Offset, Time};

use crate::encoding::{EncodeError, encode};
use crate::hash::{Hash32, domain, hash_parts};
use crate::membership::{FieldError, MemberKey, Membership, Organisation, Validator, check_name};
use crate::policy::PurposePolicy;
use crate::version::versioned;

/// A validated genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Format version (2: with the purpose policy).
    pub version: u8,
    /// Name of the chain: 1..=64 of `a-z`, `0-9`, `-`.
    pub chain_id: String,
    /// Start of the chain, Unix milliseconds (UTC).
    pub genesis_time_ms: u64,
    /// Founding membership.
    pub membership: Membership,
    /// The purpose policy (sandbox condition ⑥; [`crate::policy`]).
    pub policy: PurposePolicy,
}

versioned!(Genesis = 2);

/// Why a genesis file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// Not TOML, or a field of the wrong type (the message gives line and column).
    #[error("genesis file is not valid: {0}")]
    Syntax(String),
    /// A field breaks a rule.
    #[error("genesis field {0}")]
    Field(#[from] FieldError),
}

/// The TOML shape of the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    version: u8,
    chain_id: String,
    genesis_time: Datetime,
    organisations: Vec<Organisation>,
    validators: Vec<Validator>,
    #[serde(default)]
    members: Vec<MemberKey>,
    policy: PurposePolicy,
}

impl Genesis {
    /// Parses and validates a genesis file.
    pub fn from_toml(text: &str) -> Result<Self, GenesisError> {
        let file: GenesisFile = toml::from_str(text).map_err(|e| GenesisError::Syntax(e.to_string()))?;
        let genesis = Genesis {
            version: file.version,
            chain_id: file.chain_id,
            genesis_time_ms: unix_ms(&file.genesis_time)?,
            membership: Membership {
                organisations: file.organisations,
                validators: file.validators,
                members: file.members,
            },
            policy: PurposePolicy::new(file.policy.purposes, file.policy.change_quorum),
        };
        genesis.validate()?;
        Ok(genesis)
    }

    /// Checks every rule; the error names the offending field.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.version != 2 {
            let hint = if self.version == 1 { ": version 1 has no purpose policy; add a [policy] table" } else { "" };
            return Err(FieldError::new(
                "version",
                format!("unknown version {} (this build reads 2){hint}", self.version),
            ));
        }
        check_name("chain_id", &self.chain_id)?;
        self.membership.validate()?;
        self.policy.validate(&self.membership)
    }

    /// Writes the genesis as TOML.
    pub fn to_toml(&self) -> Result<String, GenesisError> {
        let file = GenesisFile {
            version: self.version,
            chain_id: self.chain_id.clone(),
            genesis_time: datetime(self.genesis_time_ms),
            organisations: self.membership.organisations.clone(),
            validators: self.membership.validators.clone(),
            members: self.membership.members.clone(),
            policy: self.policy.clone(),
        };
        toml::to_string_pretty(&file).map_err(|e| GenesisError::Syntax(e.to_string()))
    }

    /// `blake3("cairn/genesis/v1" || bcs(genesis))`: the chain's identity.
    pub fn hash(&self) -> Result<Hash32, EncodeError> {
        Ok(hash_parts(domain::GENESIS, &[&encode(self)?]))
    }
}

/// Parses an RFC 3339 date-time with an offset (`2026-11-22T09:30:00+09:00`) into Unix
/// milliseconds, the way the genesis file's `genesis_time` is read.
pub fn parse_time(text: &str) -> Result<u64, FieldError> {
    let t: Datetime = text
        .parse()
        .map_err(|e| FieldError::new("genesis_time", format!("{text:?} is not an RFC 3339 date-time: {e}")))?;
    unix_ms(&t)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn unix_ms(t: &Datetime) -> Result<u64, FieldError> {
    let bad = |p: &str| FieldError::new("genesis_time", p.to_string());
    let (Some(date), Some(time), Some(offset)) = (t.date, t.time, t.offset) else {
        return Err(bad("must be a full date and time with an offset, e.g. 2026-11-22T00:00:00Z"));
    };
    let days = days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day));
    let secs = days * 86_400
        + i64::from(time.hour) * 3_600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0))
        - match offset {
            Offset::Z => 0,
            Offset::Custom { minutes } => i64::from(minutes) * 60,
        };
    let ms = secs * 1_000 + i64::from(time.nanosecond.unwrap_or(0) / 1_000_000);
    u64::try_from(ms).map_err(|_| bad("must not be before 1970-01-01T00:00:00Z"))
}

fn datetime(ms: u64) -> Datetime {
    let secs = (ms / 1_000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let millis = (ms % 1_000) as u32;
    Datetime {
        date: Some(Date { year: y as u16, month: m as u8, day: d as u8 }),
        time: Some(Time {
            hour: (rem / 3_600) as u8,
            minute: (rem % 3_600 / 60) as u8,
            second: Some((rem % 60) as u8),
            nanosecond: (millis > 0).then_some(millis * 1_000_000),
        }),
        offset: Some(Offset::Z),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, SecretSeed};

    fn key(b: u8) -> String {
        Keypair::from_seed(&SecretSeed::from_bytes([b; 32])).public().to_string()
    }

    fn sample() -> String {
        format!(
            r#"
version = 2
chain_id = "busan-health"
genesis_time = 2026-11-22T09:30:00+09:00

[[organisations]]
name = "busan-city"
admin_keys = ["{a}"]

[[organisations]]
name = "hospital"
admin_keys = ["{b}"]

[[validators]]
organisation = "busan-city"
public_key = "{v1}"
voting_power = 1

[[validators]]
organisation = "hospital"
public_key = "{v2}"
voting_power = 1

[[members]]
organisation = "busan-city"
role = "gateway"
public_key = "{g}"

[policy]
purposes = ["TREAT", "PUBHLTH", "FAMRQT"]
change_quorum = 2
"#,
            a = key(1),
            b = key(2),
            v1 = key(3),
            v2 = key(4),
            g = key(5)
        )
    }

    #[test]
    fn parses_validates_and_round_trips() {
        let g = Genesis::from_toml(&sample()).unwrap();
        assert_eq!(g.genesis_time_ms, 1_795_307_400_000, "09:30+09:00 is 00:30Z");
        assert_eq!(g.membership.validators.len(), 2);
        assert_eq!(g.policy.purposes, ["FAMRQT", "PUBHLTH", "TREAT"], "sorted on reading");
        let again = Genesis::from_toml(&g.to_toml().unwrap()).unwrap();
        assert_eq!(again, g);
        assert_eq!(again.hash().unwrap(), g.hash().unwrap());
    }

    #[test]
    fn errors_name_the_offending_field() {
        let cases = [
            (
                sample().replace("organisation = \"hospital\"\npublic_key", "organisation = \"nobody\"\npublic_key"),
                "validators[1].organisation",
            ),
            (
                sample().replace(&format!("public_key = \"{}\"", key(5)), &format!("public_key = \"{}\"", key(3))),
                "members[0].public_key",
            ),
            (
                sample().replace("voting_power = 1\n\n[[validators]]", "voting_power = 0\n\n[[validators]]"),
                "validators[0].voting_power",
            ),
            (sample().replace("busan-health", "Busan Health"), "chain_id"),
            (sample().replace("version = 2", "version = 3"), "version"),
            (sample().replace("version = 2", "version = 1"), "version"),
            (sample().replace("\"FAMRQT\"", "\"HMARKT\""), "policy.purposes[0]"),
            (sample().replace("change_quorum = 2", "change_quorum = 3"), "policy.change_quorum"),
            (sample().replace("2026-11-22T09:30:00+09:00", "2026-11-22"), "genesis_time"),
        ];
        for (text, field) in cases {
            match Genesis::from_toml(&text) {
                Err(GenesisError::Field(e)) => assert_eq!(e.field, field, "{e}"),
                other => panic!("expected an error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_key_and_unknown_field_are_syntax_errors_with_position() {
        let text = sample().replace(&key(5), "zz");
        let GenesisError::Syntax(msg) = Genesis::from_toml(&text).unwrap_err() else { panic!() };
        assert!(msg.contains("line"), "{msg}");
        let text = sample() + "\nsurprise = 1\n";
        assert!(matches!(Genesis::from_toml(&text), Err(GenesisError::Syntax(m)) if m.contains("surprise")));
    }

    #[test]
    fn parse_time_reads_offsets() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000);
        assert_eq!(parse_time("1970-01-01T09:00:00.5+09:00").unwrap(), 500);
        assert!(parse_time("1969-12-31T23:59:59Z").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1, 0, 59, 365, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
