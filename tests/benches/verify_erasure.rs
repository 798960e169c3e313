//! Erasure certificates verified per second, against the raw ed25519 verification rate
//! measured in the same run (issue 6 benchmark, offline part).
//!
//! `cargo bench -p cairn-tests --bench verify_erasure -- [SECONDS]`
//!
//! The certificate is the worked example of docs/formats/erasure-certificate.md: two
//! custodians, so 14 signatures (3 batch commitments and 2 erasure receipts, strict rules;
//! 3 certified headers of 3 precommits, ZIP-215 batch verification), plus the Merkle
//! proofs and BCS encodings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cairn_proto::encoding::encode;
use cairn_proto::erasure::ErasureCertificate;
use cairn_proto::version::decode_versioned;

/// Runs `f` repeatedly for about `secs` seconds; returns calls per second.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = cairn_tests::bench::arg(&cairn_tests::bench::args(), 0, 3.0);
    let (genesis, cert) = common::erasure::example();
    let bytes = encode(&cert).unwrap();
    println!("verify-erasure bench: one certificate of {} bytes, {secs} s per measurement", bytes.len());

    let key = common::erasure::keypair([1; 32]);
    let message = [7u8; 130]; // about an encoded erasure receipt
    let domain = "cairn/sig/erasure-receipt/v1";
    let signature = key.sign(domain, &message);
    let public = key.public();
    let strict = rate(secs, || public.verify(domain, &message, &signature).unwrap());
    println!("  raw ed25519, strict rules: {strict:.0} signatures/s");
    let signed = cairn_proto::identity::signing_bytes(domain, &message);
    let zip215 = rate(secs, || public.verify_bytes(cairn_proto::identity::Rules::Zip215, &signed, &signature).unwrap());
    println!("  raw ed25519, ZIP-215 rules: {zip215:.0} signatures/s");

    let certs = rate(secs, || {
        let c: ErasureCertificate = decode_versioned(&bytes, 1 << 20).unwrap();
        c.verify(&genesis).unwrap();
    });
    println!("  decode + verify a certificate: {certs:.0} certificates/s");
    println!(
        "RESULT certificates_per_s={certs:.0} ed25519_strict_per_s={strict:.0} ed25519_zip215_per_s={zip215:.0} signatures_per_certificate=14 one_by_one_bound_certificates_per_s={:.0}",
        1.0 / (5.0 / strict + 9.0 / zip215)
    );
}
