//! Schema-driven API testing (issue 18): schemathesis generates requests from the node's
//! OpenAPI document (`GET /v1/openapi.json`) and sends them to a running consortium of
//! four validators, each request signed by `tests/schemathesis/hooks.py`. It passes when
//! no answer is a server error (5xx), every answer's status, content type, headers and
//! body conform to the document, every refusal carries the documented error body, and no
//! signed request is refused for its signature.
//!
//! Each caller role runs against another node, so all four nodes answer: a gateway
//! (node 0), an accessor (node 1), a regulator (node 2) and a gateway of another
//! organisation that wrote nothing (node 3). The chain first holds readings and a receipt, so listing routes answer with
//! real content too. `CAIRN_SCHEMATHESIS_EXAMPLES` bounds the examples per operation (CI:
//! 10); `CAIRN_SCHEMATHESIS_REPORT` names a directory for the reports (default
//! `target/schemathesis-report`). The last full run's report: `docs/api-testing.md`.
//!
//! schemathesis comes from PyPI, pinned in `tests/schemathesis/requirements.txt`;
//! `tests/schemathesis/install` (run by `.ci/run`) puts it in `target/schemathesis-venv`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_client::gateway::{BodyFormat, Gateway};
use cairn_tests::cluster::Cluster;
use cairn_tests::fixtures::{observation, random_hex};
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The schemathesis command: `CAIRN_SCHEMATHESIS`, else the virtual environment
/// `tests/schemathesis/install` makes.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let venv = workspace().join("target/schemathesis-venv/bin/schemathesis");
    assert!(
        venv.exists(),
        "{} is missing: run tests/schemathesis/install (.ci/run does), or set CAIRN_SCHEMATHESIS",
        venv.display()
    );
    venv
}

#[test]
fn generated_requests_get_documented_answers_and_never_a_server_error() {
    let examples = std::env::var("CAIRN_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".into());
    let reports = std::env::var_os("CAIRN_SCHEMATHESIS_REPORT")
        .map_or_else(|| workspace().join("target/schemathesis-report"), PathBuf::from);
    std::fs::create_dir_all(&reports).unwrap();
    let command = schemathesis();

    let mut c = Cluster::layout(4, 22000, 100);
    c.start_all();
    c.wait_ready();
    let (gateway_file, gateway_key) = c.register_gateway("shoe");
    let (accessor_file, _) = c.register("hospital-reader", 1, "accessor");
    let (regulator_file, _) = c.register("privacy-officer", 2, "regulator");
    let (other_gateway_file, _) = c.register("city-gateway", 3, "gateway");

    // Some content for the listing routes to answer with.
    let gateway = Gateway::new(&c.urls[0], gateway_key);
    let subject = format!("Patient/s-{}", random_hex(8));
    let body: String = (0..3).map(|k| observation(&subject, 100 + k, &random_hex(8)) + "\n").collect();
    let stored = gateway.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None).unwrap();
    let rid = stored.records.first().unwrap().rid;
    c.wait_for("a receipt for the first reading", Duration::from_secs(60), |_| {
        gateway.receipt(&rid, 0).is_ok_and(|r| r.is_some())
    });

    let ca = c.dir.path().join("dev/ca.pem");
    // The operations that need a signature ("METHOD /path", as schemathesis names them).
    let doc: Value = cairn_client::http::get_json(&format!("{}/v1/openapi.json", c.urls[0])).unwrap();
    let mut signed = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                signed.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(signed.len() > 20, "{signed:?}");
    let hooks = workspace().join("tests/schemathesis");
    let callers = [("gateway", &gateway_file), ("accessor", &accessor_file), ("regulator", &regulator_file)];
    let callers = callers.into_iter().chain([("another organisation's gateway", &other_gateway_file)]);
    let (mut summaries, mut signed_ok_total) = (Vec::new(), 0);
    for (i, (role, key)) in callers.enumerate() {
        let node = &c.urls[i];
        let report = reports.join(role.replace([' ', '\''], "-"));
        eprintln!("schemathesis as {role} against {node}, {examples} examples per operation");
        let out = Command::new(&command)
            .current_dir(&hooks)
            .env("PYTHONPATH", &hooks)
            .env("SCHEMATHESIS_HOOKS", "hooks")
            .env("CAIRN_NODE", node)
            .env("CAIRN_KEY", key)
            .env("CAIRN_CA", &ca)
            .env("CAIRN_TALLY", report.join("tally.json"))
            .args(["run", &format!("{node}/v1/openapi.json"), "--url", node])
            .arg("--tls-verify")
            .arg(&ca)
            // Every check but two that do not fit a signed API (docs/api-testing.md):
            // `ignored_auth` sends a placeholder signature the hook replaces with a valid
            // one; `positive_data_acceptance` expects every request the schemas allow to be
            // accepted, while the document describes shapes, not every rule (from ≤ to,
            // a Bundle's entries, a bcs transaction).
            .args(["--checks", "all", "--exclude-checks", "ignored_auth,positive_data_acceptance"])
            // Receipts are long-polled for up to 30 s (`wait_ms`).
            .args(["--max-response-time", "45", "--request-timeout", "60"])
            .args(["--max-examples", &examples, "--workers", "1"])
            .args(["--report", "junit,json", "--report-dir"])
            .arg(&report)
            .args(["--no-color", "--output-truncate", "false"])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", command.display()));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        std::fs::create_dir_all(&report).unwrap();
        std::fs::write(report.join("output.txt"), &text).unwrap();
        assert!(out.status.success(), "schemathesis as {role} found failures:\n{text}");
        let tally: Value = serde_json::from_slice(&std::fs::read(report.join("tally.json")).unwrap()).unwrap();
        let answers = tally["answers"].as_object().unwrap();
        let count = |pick: &dyn Fn(&str, u16) -> bool| -> u64 {
            let statuses = answers.iter().flat_map(|(op, by)| by.as_object().unwrap().iter().map(move |s| (op, s)));
            statuses.filter(|(op, (st, _))| pick(op, st.parse().unwrap())).map(|(_, (_, n))| n.as_u64().unwrap()).sum()
        };
        let total = count(&|_, _| true);
        // The cairn checks saw every answer (a signed request refused with 401 fails
        // `cairn_signature_accepted`), and the hook signed requests.
        assert!(total > 0, "as {role}: no answers");
        for check in ["cairn_error_body", "cairn_signature_accepted"] {
            assert!(
                tally["checked"][check].as_u64().unwrap_or(0) >= total,
                "as {role}: {check} saw fewer than {total}"
            );
        }
        assert!(tally["signed"].as_u64().unwrap() > 0, "as {role}: nothing was signed");
        let signed_ok = count(&|op, st| signed.contains(op) && (200..300).contains(&st));
        signed_ok_total += signed_ok;
        let server_errors = count(&|_, st| st >= 500);
        assert_eq!(server_errors, 0, "as {role}: server errors: {answers:?}");
        let refused = count(&|_, st| (400..500).contains(&st));
        summaries.push(format!(
            "| {role} | node {i} | {total} | {} | {signed_ok} | {refused} | {server_errors} |",
            count(&|_, st| (200..300).contains(&st))
        ));
    }
    // Every node still answers after the run.
    c.wait_for("every node to answer after the run", Duration::from_secs(30), |c| {
        (0..4).all(|i| c.height(i).is_some())
    });
    // Signed routes answered with success too, not only refusals (the gateway's reads of
    // its own records and receipts, its erasure list).
    assert!(signed_ok_total > 0, "no signed route answered 2xx");
    let table = format!(
        "| caller | node | answers | 2xx | 2xx on signed routes | 4xx (error body checked) | 5xx |\n|---|---|---|---|---|---|---|\n{}\n",
        summaries.join("\n")
    );
    std::fs::write(reports.join("summary.md"), &table).unwrap();
    eprintln!("{table}");
}
