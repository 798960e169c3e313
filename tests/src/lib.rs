//! Helpers for cairn's end-to-end tests: find the built binaries and run them.

// Test support code: a failed expectation ends the test with a panic.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

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
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from).unwrap_or_default();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // A benchmark runs from target/release: build the binaries there too.
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(cargo);
        // Cargo hands this test its package's CARGO_PKG_*, CARGO_MANIFEST_* (...) variables;
        // build scripts that watch them (ring's) would run again in this inner build and
        // rebuild everything above them. The inner build sees what the outer one saw.
        for (name, _) in std::env::vars_os() {
            let leaked = name.to_str().is_some_and(|n| {
                ["CARGO_PKG_", "CARGO_MANIFEST_"].iter().any(|p| n.starts_with(p))
                    || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"]
                        .contains(&n)
            });
            if leaked {
                build.env_remove(name);
            }
        }
        let status = build
            .args(["build", "--quiet", "--workspace", "--bins", "--tests"])
            .args(release.then_some("--release"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the cairn binaries failed");
    });
    profile_dir.join(name)
}

/// Builds `cairn-node` in release with `features` and copies it beside the other
/// binaries as `name` (for benchmarks that compare builds in one run); call it before
/// the first [`binary`], which then builds the ordinary `cairn-node` again.
pub fn node_variant(features: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).map(PathBuf::from).unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    for (var, _) in std::env::vars_os() {
        if var.to_str().is_some_and(|n| n.starts_with("CARGO_PKG_") || n.starts_with("CARGO_MANIFEST_")) {
            build.env_remove(var);
        }
    }
    let status = build
        .args(["build", "--quiet", "--release", "-p", "cairn-node", "--bin", "cairn-node", "--features", features])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building cairn-node with {features} failed");
    let to = profile_dir.join(name);
    std::fs::copy(profile_dir.join("cairn-node"), &to).unwrap();
    to
}

/// The CA certificate of the last consortium laid out by this process (`ca.pem`), passed
/// to every `cairn` run as `CAIRN_CA`.
static CA: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Runs a binary with arguments and returns its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    let mut command = Command::new(binary(name));
    if let Some(ca) = CA.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
        command.env("CAIRN_CA", ca);
    }
    command.args(args).output().unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
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

pub mod cluster;
pub mod netns;

/// Test data: unguessable values, FHIR Observations, and a byte scanner for files.
pub mod fixtures {
    use std::path::{Path, PathBuf};

    /// `n` random bytes as hex.
    pub fn random_hex(n: usize) -> String {
        let mut b = vec![0u8; n];
        random_fill(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Distinct, unguessable test values: blake3 of the time, the process and a counter.
    pub fn random_fill(buf: &mut [u8]) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = format!(
            "{:?}-{}-{}",
            std::time::SystemTime::now(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut out = blake3::Hasher::new();
        out.update(seed.as_bytes());
        out.finalize_xof().fill(buf);
    }

    /// An Observation of `subject` (a plain reference such as `Patient/1`) carrying
    /// `canary` (letters, digits, `-`) in a note.
    pub fn observation(subject: &str, steps: u64, canary: &str) -> String {
        format!(
            r#"{{"resourceType":"Observation","status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"55423-8"}}]}},"subject":{{"reference":"{subject}"}},"effectivePeriod":{{"start":"2026-11-22T10:00:00Z","end":"2026-11-22T10:05:00Z"}},"valueQuantity":{{"value":{steps},"unit":"steps"}},"note":[{{"text":"{canary}"}}]}}"#
        )
    }

    /// Every file under `dir`, recursively.
    pub fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Where any needle occurs in any named haystack: `"name: needle"` per hit, and the
    /// bytes scanned.
    pub fn scan(haystacks: &[(String, Vec<u8>)], needles: &[Vec<u8>]) -> (Vec<String>, usize) {
        // Needles grouped by length: one pass of windows per length, a set lookup each.
        let mut by_len: std::collections::BTreeMap<usize, std::collections::HashSet<&[u8]>> = Default::default();
        for n in needles {
            by_len.entry(n.len()).or_default().insert(n.as_slice());
        }
        let mut hits = Vec::new();
        let mut scanned = 0usize;
        for (name, hay) in haystacks {
            scanned += hay.len();
            for (len, set) in &by_len {
                for w in hay.windows(*len) {
                    if set.contains(w) {
                        hits.push(format!("{name}: {}", String::from_utf8_lossy(w)));
                    }
                }
            }
        }
        (hits, scanned)
    }
}

/// What the benchmark binaries share: positional arguments and percentiles.
pub mod bench {
    use std::str::FromStr;
    use std::time::Duration;

    /// The positional arguments (cargo's own `--bench` flag left out).
    pub fn args() -> Vec<String> {
        std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect()
    }

    /// Positional argument `i`, or `default` when absent; one that does not parse ends the
    /// benchmark with the argument named.
    pub fn arg<T: FromStr>(args: &[String], i: usize, default: T) -> T {
        match args.get(i) {
            None => default,
            Some(a) => a.parse().unwrap_or_else(|_| panic!("argument {} ({a:?}) is not a number", i + 1)),
        }
    }

    /// CPU time (user + system, in µs) that process `pid` has used, from
    /// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks of `getconf CLK_TCK`).
    pub fn cpu_us(pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces: count fields after its ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks * 1_000_000 / clock_ticks())
    }

    /// Clock ticks per second (`getconf CLK_TCK`; 100 where it cannot be asked).
    fn clock_ticks() -> u64 {
        static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *TCK.get_or_init(|| {
            std::process::Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .ok()
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                .unwrap_or(100)
        })
    }

    /// The summed CPU time of a set of processes over an interval, and, where `perf stat`
    /// can count them on this machine, the instructions they retired in it.
    #[derive(Debug)]
    pub struct CpuMeter {
        pids: Vec<u32>,
        start_us: u64,
        perf: Option<std::process::Child>,
    }

    impl CpuMeter {
        /// Starts measuring `pids` now.
        pub fn start(pids: &[u32]) -> CpuMeter {
            let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            let perf = std::process::Command::new("perf")
                .args(["stat", "-x", ",", "-e", "instructions:u,instructions:k", "-p", &list])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .ok();
            let start_us = pids.iter().filter_map(|p| cpu_us(*p)).sum();
            CpuMeter { pids: pids.to_vec(), start_us, perf }
        }

        /// µs of CPU used since the start, and the instructions retired (None where
        /// `perf` is missing or the machine has no hardware counters, as in most VMs).
        pub fn stop(self) -> (u64, Option<u64>) {
            let used = self.pids.iter().filter_map(|p| cpu_us(*p)).sum::<u64>().saturating_sub(self.start_us);
            let instructions = self.perf.and_then(|child| {
                let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
                let out = child.wait_with_output().ok()?;
                let text = String::from_utf8_lossy(&out.stderr);
                let counts: Vec<u64> = text
                    .lines()
                    .filter(|l| l.contains("instructions"))
                    .filter_map(|l| l.split(',').next()?.trim().parse().ok())
                    .collect();
                (!counts.is_empty()).then(|| counts.iter().sum())
            });
            (used, instructions)
        }
    }

    /// Rates of the five fifths of a run: `times` are the instants at which each of a
    /// run's equal-sized units (requests) completed, `per_unit` readings each; a fifth's
    /// rate is its readings over the time from the previous fifth's end (or `start`).
    pub fn fifth_rates(start: std::time::Instant, times: &mut [std::time::Instant], per_unit: usize) -> Vec<f64> {
        times.sort();
        let n = times.len();
        let mut from = start;
        let mut rates = Vec::new();
        for k in 1..=5 {
            let (lo, hi) = ((k - 1) * n / 5, k * n / 5);
            let Some(end) = hi.checked_sub(1).and_then(|i| times.get(i)) else { continue };
            let secs = end.duration_since(from).as_secs_f64().max(1e-9);
            rates.push(((hi - lo) * per_unit) as f64 / secs);
            from = *end;
        }
        rates
    }

    /// The `p` quantile (0 to 1) of sorted durations, in milliseconds.
    pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
        let i = ((sorted.len() as f64 - 1.0) * p) as usize;
        sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
}
