//! The Prometheus configuration and alert rules in `docker/prometheus/` load in Debian's
//! Prometheus (`promtool check`), and each alert fires on the series that should raise it
//! and stays quiet on a healthy consortium (`promtool test rules alerts.test.yml`). The
//! Docker test scrapes the compose consortium with the same files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("docker/prometheus")
}

/// Runs `promtool ARGS` in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out =
        Command::new("promtool").args(args).current_dir(dir).output().unwrap_or_else(|e| {
            panic!("promtool: {e} (Debian's `prometheus` package provides it; .ci/run installs it)")
        });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_rules_load_and_every_alert_fires_when_it_should() {
    let dir = prometheus_dir();
    let rules = promtool(&dir, &["check", "rules", "alerts.yml"]);
    assert!(rules.contains("SUCCESS"), "{rules}");
    let tested = promtool(&dir, &["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test that expects it to fire.
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for name in alerts.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        let fired = tests.split("alertname: ").skip(1).any(|t| t.starts_with(name) && t.contains("exp_labels"));
        assert!(fired, "no unit test in alerts.test.yml expects {name} to fire");
    }
}

#[test]
fn the_scrape_configuration_loads_with_the_consortium_ca() {
    // The configuration names `ca.pem` beside it, as an operator copies it from the
    // init service; promtool checks that the file exists.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["prometheus.yml", "alerts.yml"] {
        std::fs::copy(prometheus_dir().join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("ca.pem"), "").unwrap();
    let checked = promtool(tmp.path(), &["check", "config", "prometheus.yml"]);
    assert!(checked.contains("SUCCESS: 1 rule files found"), "{checked}");
    let config = std::fs::read_to_string(tmp.path().join("prometheus.yml")).unwrap();
    for i in 10..14 {
        assert!(config.contains(&format!("\"172.28.0.{i}:8080\"")), "validator 172.28.0.{i} is scraped");
    }
}
