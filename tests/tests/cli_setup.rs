//! Setting up a consortium with the real binaries: node keys, member keys, genesis.

// Test code: a failed expectation ends the test with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use cairn_proto::genesis::Genesis;
use cairn_tests::{field, run, run_ok};

#[test]
fn four_nodes_and_a_gateway_make_a_valid_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).display().to_string();

    let mut validators = Vec::new();
    for i in 0..4 {
        let out = run_ok("cairn-node", &["init", "--data-dir", &path(&format!("node{i}"))]);
        let key = field(&out, "public key").unwrap().to_string();
        let peer = field(&out, "peer id").unwrap();
        assert!(peer.starts_with("12D3KooW"), "ed25519 peer ids start with 12D3KooW: {peer}");
        validators.push(key);
    }
    let admin = run_ok("cairn", &["keygen", "--out", &path("admin.key")]);
    let gateway = run_ok("cairn", &["keygen", "--out", &path("gateway.key")]);
    let (admin, gateway) = (field(&admin, "public key").unwrap(), field(&gateway, "public key").unwrap());

    let mut args = vec!["genesis".to_string(), "--chain-id".into(), "busan-health".into()];
    args.extend([
        "--time".into(),
        "2026-11-22T09:00:00+09:00".into(),
        "--organisation".into(),
        format!("busan-city={admin}"),
    ]);
    for v in &validators {
        args.extend(["--validator".into(), format!("busan-city={v}")]);
    }
    args.extend(["--gateway".into(), format!("busan-city={gateway}"), "--out".into(), path("genesis.toml")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_ok("cairn-node", &args);

    let text = std::fs::read_to_string(path("genesis.toml")).unwrap();
    let genesis = Genesis::from_toml(&text).unwrap();
    assert_eq!(field(&out, "genesis hash").unwrap(), genesis.hash().unwrap().to_string());
    assert_eq!(genesis.genesis_time_ms, 1_795_305_600_000, "09:00+09:00 is midnight UTC");
    let keys: Vec<String> = genesis.membership.validators.iter().map(|v| v.public_key.to_string()).collect();
    assert_eq!(keys, validators);
    assert_eq!(genesis.membership.members[0].public_key.to_string(), gateway);

    // The same genesis cannot be written over.
    let again = run("cairn-node", &args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn init_refuses_to_replace_a_node_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node").display().to_string();
    run_ok("cairn-node", &["init", "--data-dir", &data]);
    let before = std::fs::read(dir.path().join("node/node.key")).unwrap();
    let out = run("cairn-node", &["init", "--data-dir", &data]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to replace"));
    assert_eq!(std::fs::read(dir.path().join("node/node.key")).unwrap(), before, "key unchanged");
}

#[test]
fn bad_genesis_input_names_the_problem_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("genesis.toml").display().to_string();
    let key = field(&run_ok("cairn", &["keygen", "--out", &dir.path().join("k").display().to_string()]), "public key")
        .unwrap()
        .to_string();
    let key2 =
        field(&run_ok("cairn", &["keygen", "--out", &dir.path().join("k2").display().to_string()]), "public key")
            .unwrap()
            .to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--validator".into(), format!("nobody={key2}")], "validators[0].organisation"),
        (vec!["--validator".into(), format!("city={key}")], "validators[0].public_key"),
        (vec!["--validator".into(), "city=zz".into()], "is not a public key"),
    ];
    for (extra, expect) in cases {
        let mut args: Vec<String> = ["genesis", "--chain-id", "dev", "--organisation"].map(String::from).to_vec();
        args.push(format!("city={key}"));
        args.extend(extra);
        args.extend(["--out".into(), out_file.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run("cairn-node", &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expect), "expected {expect:?} in {stderr}");
        assert!(!dir.path().join("genesis.toml").exists(), "nothing written");
    }
}
