//! Vault tests: one contract suite over sled and memory, the forensic canary scan, the
//! coercive adversary, and crash safety under SIGKILL and at every fault point.

// Test code: a failed expectation ends the test with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub(crate) mod adversary;
mod contract;
mod crash;
mod durability;
mod forensic;

use cairn_proto::KeyId;
use cairn_proto::record::{ContentType, Manifest};

use super::crypto::fill_random;
use super::{NewRecord, SubjectRef};

/// Random bytes.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill_random(&mut b).unwrap();
    b
}

/// A reading whose payload carries `canary` (FHIR-shaped JSON, about 256 bytes).
pub fn reading(canary: &str, subject: Option<&str>) -> NewRecord {
    let payload = format!(
        r#"{{"resourceType":"Observation","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"41950-7"}}]}},"valueQuantity":{{"value":8123,"unit":"steps"}},"note":"{canary}","effectiveDateTime":"2026-11-22T10:00:00Z"}}"#
    );
    NewRecord {
        gateway: KeyId([7; 16]),
        content_type: ContentType::FhirObservationJson,
        purpose: "TREAT".into(),
        received_at_ms: 1_000,
        retain_until_ms: 2_000,
        subject: subject.map(|s| SubjectRef { gateway: KeyId([7; 16]), local: s.to_string() }),
        manifest: Manifest::new(vec![KeyId([1; 16]), KeyId([2; 16])]).unwrap(),
        payload: payload.into_bytes(),
    }
}

/// A fresh canary string (32 hex characters).
pub fn canary() -> String {
    hex::encode(random::<16>())
}
