//! Agreement certificates offline (sandbox condition ⑧, docs/formats/agreement-certificate.md):
//! a genuine certificate verifies with the library and with `cairn verify-agreement`;
//! every single-bit change of its bytes is refused; a signature by someone who is not a
//! party, or a missing party, is refused naming why; the JSON form is read as strictly as
//! the bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use cairn_proto::consent::{AgreementCertificate, DocumentError};
use cairn_proto::encoding::encode;
use cairn_proto::version::decode_versioned;
use cairn_tests::{run, run_ok};
use common::agreement::{document, example, parties};
use common::erasure::keypair;

#[test]
fn a_genuine_certificate_verifies_offline_and_says_what_it_cannot_prove() {
    let (g, cert) = example();
    let checks = cert.verify(&g).unwrap();
    assert!(checks.iter().any(|c| c.contains("all parties, no one else")), "{checks:#?}");
    assert!(checks.iter().any(|c| c.contains("ConsentEvents batch")), "{checks:#?}");

    let dir = tempfile::tempdir().unwrap();
    let gpath = common::write_toml(dir.path(), &g);
    let path = common::write_json(dir.path(), "agreement.json", &cert);
    let out = run_ok("cairn", &["verify-agreement", "--genesis", &gpath, &path]);
    assert!(out.contains("ok: agreement text"), "{out}");
    assert!(out.contains("not established: This certificate cannot prove that the patient and family keys"), "{out}");
    let out = run_ok("cairn", &["agreement", "verify", "--genesis", &gpath, &path]);
    assert!(out.contains("ok: commitment"), "{out}");
}

#[test]
fn flipping_any_bit_of_the_certificate_is_refused() {
    let (g, cert) = example();
    let bytes = encode(&cert).unwrap();
    let mut accepted = Vec::new();
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        if let Ok(c) = decode_versioned::<AgreementCertificate>(&b, 1 << 20)
            && c.verify(&g).is_ok()
        {
            accepted.push(i);
        }
    }
    assert!(accepted.is_empty(), "bits whose flip still verifies: {accepted:?} of {}", bytes.len() * 8);
}

#[test]
fn a_non_party_signature_or_a_missing_party_is_refused_naming_why() {
    let (g, cert) = example();
    let (institution, patient, _family) = parties();
    let stranger = keypair([23; 32]);

    // A fourth, valid signature by someone who is not a party.
    let mut c = cert.clone();
    c.document.sign(&g.hash().unwrap(), &stranger).unwrap();
    match c.verify(&g) {
        Err(DocumentError::Signature { key, reason, .. }) => {
            assert_eq!(key, stranger.public().key_id());
            assert!(reason.contains("not a party"), "{reason}");
        }
        other => panic!("expected a refusal of the stranger's signature: {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let gpath = common::write_toml(dir.path(), &g);
    let path = common::write_json(dir.path(), "stranger.json", &c);
    let out = run("cairn", &["verify-agreement", "--genesis", &gpath, &path]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a party to the agreement"), "{out:?}");

    // Signed by two of three: not executed, naming who is missing.
    let mut c = cert.clone();
    c.document = document(&g, &[&institution, &patient]);
    match c.verify(&g) {
        Err(DocumentError::Unsigned(who)) => assert!(who.starts_with("family member 0 (MTH, key "), "{who}"),
        other => panic!("expected the family member named as unsigned: {other:?}"),
    }

    // The institution signing with a key that is not its organisation's.
    let mut c = cert.clone();
    let impostor = keypair([24; 32]);
    c.document.json = c.document.json.replace(&institution.public().to_string(), &impostor.public().to_string());
    assert!(matches!(c.verify(&g), Err(DocumentError::Invalid { field, .. }) if field == "institution.key"));
}

#[test]
fn the_json_form_is_read_as_strictly_as_the_bytes() {
    let (g, cert) = example();
    let json = serde_json::to_string(&cert).unwrap();
    assert!(serde_json::from_str::<AgreementCertificate>(&json).unwrap().verify(&g).is_ok());
    let leaf = cert.receipt.leaf.to_string();
    assert!(leaf.bytes().any(|b| b.is_ascii_lowercase()), "{leaf}");
    let upper = json.replace(&leaf, &leaf.to_uppercase());
    assert_ne!(upper, json);
    assert!(serde_json::from_str::<AgreementCertificate>(&upper).is_err(), "upper-case hex is not the format");
    let extra = json.replacen("{\"version\":1,", "{\"version\":1,\"note\":\"x\",", 1);
    assert!(serde_json::from_str::<AgreementCertificate>(&extra).is_err(), "unknown fields are refused");
    let mut v2 = cert.clone();
    v2.version = 2;
    assert!(v2.verify(&g).is_err());
    let mut r2 = cert.clone();
    r2.receipt.version = 2;
    assert!(r2.verify(&g).is_err());
}
