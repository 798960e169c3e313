//! Erasure certificates offline (DESIGN.md §8, docs/formats/erasure-certificate.md): a
//! certificate built on a synthetic certified chain verifies with the library and with
//! `cairn verify-erasure`; every kind of tampering is refused with its own reason; and the
//! worked example published in the format spec is exactly this certificate and verifies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use cairn_proto::Hash32;
use cairn_proto::encoding::encode;
use cairn_proto::erasure::{CertificateError, ErasureCertificate, ErasureReceipt, ErasureTrigger};
use cairn_proto::signed::SignedBody as _;
use cairn_proto::version::decode_versioned;
use cairn_tests::{run, run_ok};
use common::SEEDS;
use common::erasure::{example, example_with_manifest_version, keypair};

fn refused(g: &cairn_proto::genesis::Genesis, cert: &ErasureCertificate) -> CertificateError {
    cert.verify(g).expect_err("a tampered certificate verified")
}

#[test]
fn a_certificate_verifies_offline_and_says_what_it_cannot_prove() {
    let (g, cert) = example();
    let checks = cert.verify(&g).unwrap();
    assert!(checks.iter().any(|c| c.contains("every custodian of the manifest (2)")), "{checks:#?}");

    let dir = tempfile::tempdir().unwrap();
    let gpath = dir.path().join("genesis.toml");
    std::fs::write(&gpath, g.to_toml().unwrap()).unwrap();
    let gpath = gpath.to_str().unwrap();
    let json = dir.path().join("cert.json");
    std::fs::write(&json, serde_json::to_string_pretty(&cert).unwrap()).unwrap();
    let out = run_ok("cairn", &["verify-erasure", "--genesis", gpath, json.to_str().unwrap()]);
    assert_eq!(out.matches("signed that it erased leaf").count(), 2, "{out}");
    assert!(out.contains("not established: A certificate cannot prove that no copy was made"), "{out}");

    // A certificate missing a receipt is refused by the CLI with the reason.
    let mut short = cert.clone();
    short.erasures.pop();
    std::fs::write(&json, serde_json::to_string(&short).unwrap()).unwrap();
    let out = run("cairn", &["verify-erasure", "--genesis", gpath, json.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no erasure receipt from custodian"));
}

#[test]
fn every_kind_of_tampering_is_refused_with_its_reason() {
    let (g, cert) = example();
    let (a, b) = (cert.erasures[0].clone(), cert.erasures[1].clone());

    let mut c = cert.clone();
    c.erasures.pop();
    assert!(matches!(refused(&g, &c), CertificateError::MissingReceipt(k) if k == b.receipt.body.custodian));

    // A receipt from a validator that is not a custodian (validator 4, properly signed).
    let outsider = keypair(SEEDS[3]);
    let mut c = cert.clone();
    let mut body = a.receipt.body.clone();
    body.custodian = outsider.public().key_id();
    c.erasures[1].receipt = body.sign(&outsider).unwrap();
    assert!(matches!(refused(&g, &c), CertificateError::NotCustodian(k) if k == outsider.public().key_id()));

    let mut c = cert.clone();
    c.erasures.swap(0, 1);
    assert!(matches!(refused(&g, &c), CertificateError::Order(_)));

    let mut c = cert.clone();
    c.erasures[1] = a.clone();
    assert!(matches!(refused(&g, &c), CertificateError::Order(_)));

    // Re-signed by the wrong key.
    let mut c = cert.clone();
    c.erasures[0].receipt = a.receipt.body.clone().sign(&keypair(SEEDS[3])).unwrap();
    assert!(matches!(refused(&g, &c), CertificateError::Signature(_)));

    // Pointing to another leaf: the record section of another record.
    let mut c = cert.clone();
    c.record.leaf = Hash32([0x99; 32]);
    assert!(matches!(refused(&g, &c), CertificateError::Record(_)));
    let mut c = cert.clone();
    let who = keypair(SEEDS[0]);
    let idx = c.erasures.iter().position(|e| e.receipt.body.custodian == who.public().key_id()).unwrap();
    let mut body = c.erasures[idx].receipt.body.clone();
    body.record_leaf = Hash32([0x99; 32]);
    c.erasures[idx].receipt = body.sign(&who).unwrap();
    assert!(matches!(refused(&g, &c), CertificateError::OtherLeaf { .. }));

    // Another request or trigger.
    let mut c = cert.clone();
    c.request_hash = Hash32([0x01; 32]);
    assert!(matches!(refused(&g, &c), CertificateError::OtherRequest(_)));
    let mut c = cert.clone();
    c.trigger = ErasureTrigger::RetentionExpired;
    assert!(matches!(refused(&g, &c), CertificateError::OtherRequest(_)));

    // Times the custodians did not sign are refused; times they signed must be in order:
    // the request after the anchoring, the deadline after the request, the erasure
    // before the deadline and before its receipt's block.
    let mut c = cert.clone();
    c.deadline_ms += 1;
    assert!(matches!(refused(&g, &c), CertificateError::OtherRequest(_)));
    let resign = |c: &mut ErasureCertificate, change: &dyn Fn(&mut ErasureReceipt)| {
        for e in &mut c.erasures {
            let mut body = e.receipt.body.clone();
            change(&mut body);
            let seed = SEEDS.iter().find(|s| keypair(**s).public().key_id() == body.custodian).unwrap();
            e.receipt = body.sign(&keypair(*seed)).unwrap();
        }
        c.requested_at_ms = c.erasures[0].receipt.body.requested_at_ms;
        c.deadline_ms = c.erasures[0].receipt.body.deadline_ms;
    };
    let mut c = cert.clone();
    resign(&mut c, &|r| r.requested_at_ms = 5_000);
    assert!(matches!(refused(&g, &c), CertificateError::Times(m) if m.contains("before the record's anchoring")));
    let mut c = cert.clone();
    resign(&mut c, &|r| r.deadline_ms = r.requested_at_ms - 1);
    assert!(matches!(refused(&g, &c), CertificateError::Times(m) if m.contains("deadline is before")));
    let mut c = cert.clone();
    resign(&mut c, &|r| r.deadline_ms = 20_999);
    assert!(matches!(refused(&g, &c), CertificateError::Times(m) if m.contains("after the deadline")));
    let mut c = cert.clone();
    resign(&mut c, &|r| r.erased_at_ms = 23_000);
    assert!(matches!(refused(&g, &c), CertificateError::Committed { .. } | CertificateError::Times(_)));

    // A receipt not in the batch it names, or a batch not in the certified log.
    let mut c = cert.clone();
    c.erasures[0].leaf_index += 1;
    assert!(matches!(refused(&g, &c), CertificateError::Committed { .. }));
    let mut c = cert.clone();
    c.erasures[1].log_index ^= 1;
    assert!(matches!(refused(&g, &c), CertificateError::Committed { .. }));

    // A forged block certificate: a signature changed, or only two signers.
    let mut c = cert.clone();
    c.erasures[0].block.certificate.signatures[0].1.0[7] ^= 1;
    assert!(matches!(
        refused(&g, &c),
        CertificateError::Committed { source: cairn_proto::receipt::ReceiptError::Certificate { .. }, .. }
    ));
    let mut c = cert.clone();
    c.record.block.certificate.signatures.pop();
    assert!(matches!(
        refused(&g, &c),
        CertificateError::Record(cairn_proto::receipt::ReceiptError::Certificate { .. })
    ));
    // The same receipt in a batch of another node.
    let mut c = cert.clone();
    c.erasures[0].batch = b.batch.clone();
    assert!(matches!(refused(&g, &c), CertificateError::BatchOwner { .. }));
}

#[test]
fn flipping_any_bit_of_the_certificate_is_refused() {
    let (g, cert) = example();
    let bytes = encode(&cert).unwrap();
    let mut accepted = Vec::new();
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        if let Ok(c) = decode_versioned::<ErasureCertificate>(&b, 1 << 20)
            && c.verify(&g).is_ok()
        {
            accepted.push(i);
        }
    }
    assert!(accepted.is_empty(), "bits whose flip still verifies: {accepted:?} of {}", bytes.len() * 8);
}

/// The hex between the markers of the format spec.
fn published_example() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/formats/erasure-certificate.md"))
        .unwrap();
    let start = doc.find("<!-- example:begin -->").expect("begin marker") + "<!-- example:begin -->".len();
    let end = doc.find("<!-- example:end -->").expect("end marker");
    doc[start..end].chars().filter(|c| c.is_ascii_hexdigit()).collect()
}

#[test]
fn the_worked_example_of_the_format_spec_is_this_certificate_and_verifies() {
    let (g, cert) = example();
    let hex_now = hex::encode(encode(&cert).unwrap());
    if std::env::var_os("CAIRN_WRITE_EXAMPLE").is_some() {
        let lines: Vec<&str> = hex_now.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        std::fs::write("/tmp/erasure-example.hex", lines.join("\n")).unwrap();
    }
    let genesis_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/formats/erasure-example-genesis.toml");
    if std::env::var_os("CAIRN_WRITE_EXAMPLE").is_some() {
        std::fs::write(genesis_file, g.to_toml().unwrap()).unwrap();
    }
    let shipped = cairn_proto::genesis::Genesis::from_toml(&std::fs::read_to_string(genesis_file).unwrap()).unwrap();
    assert_eq!(shipped, g, "docs/formats/erasure-example-genesis.toml is not the example's genesis");
    let published = published_example();
    assert_eq!(
        published, hex_now,
        "the spec's example is not what the code builds (CAIRN_WRITE_EXAMPLE=1 writes it to /tmp)"
    );
    // And the published bytes verify with the shipped verifier.
    let dir = tempfile::tempdir().unwrap();
    let hexfile = dir.path().join("example.hex");
    std::fs::write(&hexfile, &published).unwrap();
    let out = run_ok("cairn", &["verify-erasure", "--genesis", genesis_file, hexfile.to_str().unwrap()]);
    assert!(out.contains("every custodian of the manifest (2) erased the record"), "{out}");
}

#[test]
fn the_verifier_accepts_exactly_what_the_spec_defines() {
    // A certificate whose manifest says version 2, consistently re-derived and re-signed.
    let (g, v2) = example_with_manifest_version(2);
    let e = v2.verify(&g).expect_err("a manifest of version 2 verified");
    assert!(e.to_string().contains("unknown manifest version 2"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let gpath = common::write_toml(dir.path(), &g);
    let path = common::write_json(dir.path(), "v2.json", &v2);
    let out = run("cairn", &["verify-erasure", "--genesis", &gpath, &path]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown manifest version 2"), "{out:?}");

    // The JSON form: upper-case hex and unknown members are refused, as by the CLI.
    let (_, cert) = example();
    let json = serde_json::to_string(&cert).unwrap();
    let leaf = cert.record.leaf.to_string();
    assert!(leaf.bytes().any(|b| b.is_ascii_lowercase()));
    for bad in
        [json.replace(&leaf, &leaf.to_uppercase()), json.replacen("{\"version\":1,", "{\"version\":1,\"note\":1,", 1)]
    {
        assert_ne!(bad, json);
        assert!(serde_json::from_str::<ErasureCertificate>(&bad).is_err());
        std::fs::write(dir.path().join("bad.json"), &bad).unwrap();
        let out = run("cairn", &["verify-erasure", "--genesis", &gpath, dir.path().join("bad.json").to_str().unwrap()]);
        assert!(!out.status.success(), "{bad}");
    }
}
