//! Every input kept under `fuzz/corpus/<target>/` (the seeds and whatever the fuzzer
//! found worth keeping, crashes included once fixed) goes through its target's body, with
//! its properties, in the ordinary test suite: a crash once found stays a test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 13] = [
    ("transaction", cairn_fuzz::transaction),
    ("block", cairn_fuzz::block),
    ("consensus", cairn_fuzz::consensus),
    ("wire", cairn_fuzz::wire),
    ("receipt", cairn_fuzz::receipt),
    ("erasure_certificate", cairn_fuzz::erasure_certificate),
    ("agreement_certificate", cairn_fuzz::agreement_certificate),
    ("consent_document", cairn_fuzz::consent_document),
    ("keyfile", cairn_fuzz::keyfile),
    ("genesis", cairn_fuzz::genesis),
    ("fhir_intake", cairn_fuzz::fhir_intake),
    ("shoe_csv", cairn_fuzz::shoe_csv),
    ("signed_request", cairn_fuzz::signed_request),
];

#[test]
fn every_kept_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo run -p cairn-fuzz --example seeds`)", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{name} has no corpus");
        for path in inputs {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} fails its target", path.display());
        }
    }
}

#[test]
fn every_target_has_a_binary_and_a_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name} is not a [[bin]] of fuzz/Cargo.toml");
        assert!(dir.join("fuzz_targets").join(format!("{name}.rs")).exists());
        assert!(dir.join("corpus").join(name).is_dir(), "{name} has no corpus directory");
    }
    let bins = manifest.matches("[[bin]]").count();
    assert_eq!(bins, TARGETS.len(), "every binary is replayed here");
}
