//! The four validators of `docker-compose.yml` in containers: `docker kill` one, then
//! cut another off the network (a minority partition); the majority keeps finalizing,
//! the isolated node catches up after reconnecting, and all agree. Then Debian's
//! Prometheus scrapes the four with `docker/prometheus/` and evaluates its alert rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_client::http;
use cairn_client::verify::verify_block;
use cairn_proto::consensus::CertifiedBlock;
use cairn_proto::genesis::Genesis;

const PROJECT: &str = "cairntest";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker-compose` (v1) or `docker compose` (v2), whichever exists.
fn compose() -> Command {
    let v1 = Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success());
    let mut c = if v1 {
        Command::new("docker-compose")
    } else {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    };
    c.current_dir(repo()).args(["-p", PROJECT, "-f", "docker-compose.yml"]);
    c
}

struct Down;
impl Drop for Down {
    fn drop(&mut self) {
        let _ = compose().args(["down", "-v", "--remove-orphans"]).output();
    }
}

fn url(i: usize) -> String {
    format!("https://172.28.0.1{i}:8080")
}

fn height(i: usize) -> Option<u64> {
    let (status, body) = http::request("GET", &format!("{}/metrics", url(i)), "text/plain", &[]).ok()?;
    if status != 200 {
        return None;
    }
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("cairn_height ").and_then(|v| v.trim().parse().ok()))
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(180) {
            let logs = compose()
                .args(["logs", "--tail", "20"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            panic!(
                "timed out waiting for {what}; heights {:?}\n{}",
                (0..4).map(height).collect::<Vec<_>>(),
                logs.unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn container(service: &str) -> String {
    sh(compose().args(["ps", "-q", service]))
}

fn majority_advances(live: &[usize], by: u64) {
    let from = live.iter().filter_map(|i| height(*i)).max().unwrap_or(0);
    wait_for(&format!("nodes {live:?} to finalize {by} more blocks"), || {
        live.iter().all(|i| height(*i).unwrap_or(0) >= from + by)
    });
}

#[test]
fn docker_majority_survives_a_kill_and_a_partition() {
    if !Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
        println!("SKIPPED: no Docker engine here (`docker info` failed); CI machines have one");
        return;
    }
    let binary = cairn_tests::binary("cairn-node");
    println!("{}", sh(Command::new(repo().join("docker/build-image.sh")).arg(&binary)));
    let _ = compose().args(["down", "-v", "--remove-orphans"]).output();
    let _down = Down;
    // The test waits for heights of an idle chain: its layout decides an empty block at
    // least every second (the compose file keeps the 60 s default; ADR 019). The `init`
    // service of `up` then reuses this layout.
    sh(compose().args([
        "run",
        "--rm",
        "-T",
        "init",
        "dev",
        "--init-only",
        "--dir",
        "/cairn",
        "--hosts",
        "172.28.0.10,172.28.0.11,172.28.0.12,172.28.0.13",
        "--idle-block-ms",
        "1000",
    ]));
    sh(compose().args(["up", "-d"]));
    // The nodes serve HTTPS with certificates of the CA the init service made.
    let ca_file = std::env::temp_dir().join(format!("{PROJECT}-ca.pem"));
    wait_for("the consortium's CA certificate", || {
        compose()
            .args(["exec", "-T", "v0", "cat", "/cairn/ca.pem"])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty() && std::fs::write(&ca_file, &o.stdout).is_ok())
    });
    http::trust_ca_file(&ca_file).unwrap();
    wait_for("every validator to finalize 2 blocks", || (0..4).all(|i| height(i).unwrap_or(0) >= 2));

    // docker kill one validator: the other three keep finalizing; restarted, it catches up.
    let v3 = container("v3");
    sh(Command::new("docker").args(["kill", &v3]));
    majority_advances(&[0, 1, 2], 3);
    sh(Command::new("docker").args(["start", &v3]));
    wait_for("v3 to catch up", || height(3).unwrap_or(0) >= height(0).unwrap_or(u64::MAX));

    // Cut another off the network: the majority keeps finalizing, the isolated one stalls.
    let v2 = container("v2");
    let network = sh(Command::new("docker").args([
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={PROJECT}"),
    ]));
    sh(Command::new("docker").args(["network", "disconnect", &network, &v2]));
    majority_advances(&[0, 1, 3], 3);
    sh(Command::new("docker").args(["network", "connect", "--ip", "172.28.0.12", &network, &v2]));
    wait_for("v2 to catch up after reconnecting", || height(2).unwrap_or(0) >= height(0).unwrap_or(u64::MAX));

    // All agree at every height, and every certificate verifies offline.
    let genesis_text = sh(compose().args(["exec", "-T", "v0", "cat", "/cairn/genesis.toml"]));
    let genesis = Genesis::from_toml(&genesis_text).unwrap();
    let top = (0..4).filter_map(height).min().unwrap();
    for h in 1..=top {
        let blocks: Vec<CertifiedBlock> =
            (0..4).map(|i| http::get_json(&format!("{}/v1/blocks/{h}", url(i))).unwrap()).collect();
        let hashes: HashSet<_> = blocks.iter().map(|b| b.block.header.hash().unwrap()).collect();
        assert_eq!(hashes.len(), 1, "validators disagree at height {h}");
        verify_block(&genesis, &blocks[0]).unwrap();
    }
    println!("4 validators agree on {top} blocks after a kill and a partition");

    // Debian's Prometheus, with docker/prometheus/ as an operator uses it (the CA copied
    // beside the configuration), scrapes all four validators and loads the alert rules.
    let prom = tempfile::tempdir().unwrap();
    for f in ["prometheus.yml", "alerts.yml"] {
        std::fs::copy(repo().join("docker/prometheus").join(f), prom.path().join(f)).unwrap();
    }
    std::fs::copy(&ca_file, prom.path().join("ca.pem")).unwrap();
    let log = std::fs::File::create(prom.path().join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", prom.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", prom.path().join("data").display()))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian's `prometheus` package; .ci/run installs it)");
    let _prometheus = KillOnDrop(child);
    let api = |path: &str| http::get_json::<serde_json::Value>(&format!("http://{PROMETHEUS}/api/v1/{path}")).ok();
    wait_for("Prometheus to scrape all four validators", || {
        api("targets").is_some_and(|t| {
            let targets = t["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            targets.len() == 4 && targets.iter().all(|t| t["health"] == "up")
        })
    });
    wait_for("every alert rule to be evaluated without error", || {
        api("rules").is_some_and(|r| {
            let rules: Vec<serde_json::Value> = r["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            rules.len() == 13 && rules.iter().all(|r| r["health"] == "ok")
        })
    });
    let heights = api("query?query=cairn_height").unwrap();
    assert_eq!(heights["data"]["result"].as_array().map(Vec::len), Some(4), "{heights}");
    let requests = api("query?query=sum(cairn_http_requests_total)").unwrap();
    let answered: f64 = requests["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(answered > 0.0, "the scrapes themselves are counted: {requests}");
    println!("Prometheus scraped 4 validators and evaluated 13 alert rules");
}

/// Where the test's Prometheus listens.
const PROMETHEUS: &str = "127.0.0.1:29995";

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
