//! Helpers for cairn's end-to-end tests: find the built binaries and run them.

// Test support code: a failed expectation ends the test with a panic.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Path of a workspace binary, built beside the test executable (`target/<profile>/`).
///
/// cargo builds a package's binaries for that package's own tests only, so the first
/// call in each test process runs `cargo build --workspace --bins --tests` rather than
/// trust whatever an earlier build left there. `--tests` makes cargo resolve features
/// with dev-dependencies, exactly as the test build did, so the binaries reuse its
/// artifacts (about 10 s) instead of rebuilding the dependency tree with other features.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the cairn binaries failed");
    });
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from).unwrap_or_default();
    profile_dir.join(name)
}

/// Runs a binary with arguments and returns its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name)).args(args).output().unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// Runs a binary that must succeed; returns its stdout.
pub fn run_ok(name: &str, args: &[&str]) -> String {
    let out = run(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `label` on a line of command output (`public key: abcd` → `abcd`).
pub fn field<'a>(output: &'a str, label: &str) -> Option<&'a str> {
    output.lines().find_map(|l| l.strip_prefix(label)).map(|rest| rest.trim_start_matches(':').trim())
}
