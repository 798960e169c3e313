//! What real gateways send, through the `cairn` command to four validators (issue 14):
//! indented Bundles, a byte-order mark, the PHD IG Bundles, decimals whose precision
//! matters, CSV west of UTC — each read back byte for byte as it was in the file; keys
//! twice, impossible dates and backward periods refused by name; two wearers in
//! contained `#p1` filed apart, so that one's consent withdrawal erases only theirs; and
//! the CLI's conventions (data on stdout, a closed pipe, exit codes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn_client::gateway::{Erase, Gateway, GatewayError};
use cairn_tests::cluster::Cluster;
use serde_json::Value;

fn field_case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/tests/field-cases").join(name)
}

fn vector(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/tests/vectors/fhir").join(name)
}

/// `cairn submit FILE` as gateway `key`; returns the stored lines, or the exit code and
/// standard error.
fn submit(c: &Cluster, key: &Path, file: &Path) -> Result<Vec<Value>, (i32, String)> {
    let out_file = c.dir.path().join(format!("{}.stored", file.file_name().unwrap().to_string_lossy()));
    let out = cairn_tests::run(
        "cairn",
        &[
            "submit",
            "--node",
            &c.urls[1],
            "--key",
            key.to_str().unwrap(),
            "--purpose",
            "TREAT",
            "--retention-days",
            "30",
            "--batch",
            "10",
            "--out",
            out_file.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    if !out.status.success() {
        return Err((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(std::fs::read_to_string(out_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

/// `cairn get [--resource] RID`: (exit code, stdout, stderr).
fn get(c: &Cluster, key: &Path, rid: &str, extra: &[&str]) -> (i32, Vec<u8>, String) {
    let mut args = vec!["get", "--node", &c.urls[2], "--key", key.to_str().unwrap(), "--purpose", "TREAT"];
    args.extend_from_slice(extra);
    args.push(rid);
    let out = cairn_tests::run("cairn", &args);
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The `resource` of each Observation entry of a Bundle file, as its bytes in the file.
fn bundle_entries(path: &Path) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Entry<'a> {
        #[serde(borrow)]
        resource: &'a serde_json::value::RawValue,
    }
    #[derive(serde::Deserialize)]
    struct Bundle<'a> {
        #[serde(borrow)]
        entry: Vec<Entry<'a>>,
    }
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.trim_start_matches('\u{feff}');
    let b: Bundle<'_> = serde_json::from_str(text).unwrap();
    b.entry
        .iter()
        .map(|e| e.resource.get())
        .filter(|r| serde_json::from_str::<Value>(r).unwrap()["resourceType"] == "Observation")
        .map(str::to_string)
        .collect()
}

#[test]
fn real_files_read_back_as_sent_and_wearers_are_filed_apart() {
    let c = Cluster::start(4, 24900, 200);
    c.wait_ready();
    let (key_file, key) = c.register_gateway("shoe-hub");

    // Bundles as IGs and exporters write them: every Observation entry back byte for byte.
    for file in [
        field_case("pretty-bundle.json"),
        field_case("bom-bundle.json"),
        vector("phd-ig/bundles/bundle-example-1.json"),
        vector("phd-ig/bundles/bundle-continuousnonin.json"),
    ] {
        let stored = submit(&c, &key_file, &file).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
        let entries = bundle_entries(&file);
        assert_eq!(stored.len(), entries.len(), "{}", file.display());
        for (s, sent) in stored.iter().zip(&entries) {
            let (code, out, err) = get(&c, &key_file, s["rid"].as_str().unwrap(), &["--resource"]);
            assert_eq!(code, 0, "{err}");
            assert_eq!(String::from_utf8(out).unwrap(), *sent, "{}", file.display());
        }
    }
    // JSON lines whose decimals carry precision, and CSV west of UTC.
    let decimals = field_case("decimal-precision.jsonl");
    let stored = submit(&c, &key_file, &decimals).unwrap();
    let (_, out, _) = get(&c, &key_file, stored[0]["rid"].as_str().unwrap(), &["--resource"]);
    let line = std::fs::read_to_string(&decimals).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), line.trim_end(), "1.50 and 1.00 come back as sent");
    let stored = submit(&c, &key_file, &field_case("csv-negative-offset.csv")).unwrap();
    assert_eq!(stored.len(), 2);
    let (_, out, _) = get(&c, &key_file, stored[1]["rid"].as_str().unwrap(), &["--resource"]);
    let day: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(day["code"]["coding"][0]["code"], "41950-7");
    assert_eq!(day["effectivePeriod"]["start"], "2026-11-21T00:00:00-08:00");

    // Refused whole, naming what is wrong; exit code 1.
    let (code, err) = submit(&c, &key_file, &field_case("duplicate-subject-key.jsonl")).unwrap_err();
    assert!(code == 1 && err.contains("\"subject\"") && err.contains("twice"), "{code} {err}");
    let (code, err) = submit(&c, &key_file, &field_case("csv-bad-dates.csv")).unwrap_err();
    assert!(code == 1 && err.contains("line 3") && err.contains("2026-02-30"), "{code} {err}");

    // Two wearers in contained `#p1`: filed apart, each under their identifier.
    let stored = submit(&c, &key_file, &field_case("contained-subject.jsonl")).unwrap();
    let gw = Gateway::new(&c.urls[0], key.clone());
    let subjects: Vec<Value> = stored
        .iter()
        .map(|s| gw.record(&s["rid"].as_str().unwrap().parse().unwrap(), "TREAT").unwrap()["record"]["subject"].clone())
        .collect();
    assert_eq!(
        subjects,
        ["Patient?identifier=urn:example:shoe-owner|W-0701", "Patient?identifier=urn:example:shoe-owner|W-0702"]
    );
    match gw.erase(&Erase::Subject("#p1".into()), Some("consent_withdrawn")) {
        Err(GatewayError::Refused { status: 400, code, .. }) => assert_eq!(code, "bad_subject"),
        other => panic!("expected 400 bad_subject, got {other:?}"),
    }
    // One wearer withdraws consent: only that wearer's reading is erased.
    let first: cairn_proto::record::RecordId = stored[0]["rid"].as_str().unwrap().parse().unwrap();
    let second: cairn_proto::record::RecordId = stored[1]["rid"].as_str().unwrap().parse().unwrap();
    gw.receipts(&[first, second], 30_000).unwrap();
    let id = gw
        .erase(&Erase::Subject("Patient?identifier=urn:example:shoe-owner|W-0701".into()), Some("consent_withdrawn"))
        .unwrap();
    let status = gw.erasure(&id).unwrap();
    let records: Vec<&str> = status["records"].as_array().unwrap().iter().map(|r| r["rid"].as_str().unwrap()).collect();
    assert_eq!(records, [first.to_string()], "{status}");
    assert!(gw.record(&second, "TREAT").is_ok(), "the other wearer's reading stays");

    // CLI conventions: stdout is the node's answer and nothing else, checks on stderr.
    let rid = stored[1]["rid"].as_str().unwrap();
    let genesis = c.genesis_path();
    // The CLI asks node 2, which anchors its copy in its own batch: the receipt waited for
    // above was node 0's, so wait (long-poll) for node 2's too.
    Gateway::new(&c.urls[2], key.clone()).receipts(&[second], 30_000).unwrap();
    let (code, out, err) = get(&c, &key_file, rid, &["--genesis", genesis.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(answer["record"]["rid"], rid);
    assert!(err.contains("ok: "), "{err}");
    // A reader that goes away: the command ends quietly.
    let mut child = Command::new(cairn_tests::binary("cairn"))
        .args(["get", "--node", &c.urls[2], "--key", key_file.to_str().unwrap(), "--purpose", "TREAT", rid])
        .env("CAIRN_CA", c.dir.path().join("dev/ca.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{:?} {err}", out.status);
    // Exit codes: 1 refused, 2 usage.
    let (code, _, err) = get(&c, &key_file, &"0".repeat(32), &[]);
    assert_eq!(code, 1, "{err}");
    let out = cairn_tests::run("cairn", &["get", "--node", &c.urls[2], rid]);
    assert_eq!(out.status.code(), Some(2));
}
