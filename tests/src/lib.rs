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

/// A consortium of `cairn-node run` processes built from `cairn-node dev --init-only`.
pub mod cluster {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use cairn_client::http;
    use cairn_proto::consensus::{CertifiedBlock, CertifiedHeader};
    use cairn_proto::encoding::encode;
    use cairn_proto::genesis::Genesis;
    use cairn_proto::ledger::{BatchCommit, BatchKind};
    use cairn_proto::signed::SignedBody as _;
    use cairn_proto::transaction::Transaction;
    use cairn_proto::{Hash32, Keypair};

    /// Running validators under a temporary directory.
    #[allow(missing_debug_implementations)] // holds child processes
    pub struct Cluster {
        /// The directory (kept until the cluster is dropped).
        pub dir: tempfile::TempDir,
        /// Each validator's configuration file.
        pub configs: Vec<PathBuf>,
        /// Each validator's HTTP base URL.
        pub urls: Vec<String>,
        /// Environment variables set for every node process.
        pub env: Vec<(String, String)>,
        /// The node binary to run (default: the workspace's `cairn-node`).
        pub node_binary: Option<PathBuf>,
        children: Vec<Option<Child>>,
    }

    impl Cluster {
        /// Writes a layout of `n` validators on ports from `base_port` and starts them all.
        pub fn start(n: usize, base_port: u16, block_interval_ms: u64) -> Cluster {
            Self::start_with(n, base_port, block_interval_ms, 2)
        }

        /// As [`Cluster::start`], with `replication` custodians per record.
        pub fn start_with(n: usize, base_port: u16, block_interval_ms: u64, replication: usize) -> Cluster {
            let mut c = Self::layout(n, base_port, block_interval_ms);
            if replication != 2 {
                c.edit_configs("replication = 2", &format!("replication = {replication}"));
            }
            c.start_all();
            c
        }

        /// Longest time without a block while idle in test layouts (`timing.idle_block_ms`):
        /// tests that wait for heights of an idle chain see about one a second.
        pub const IDLE_BLOCK_MS: u64 = 1_000;

        /// Writes a layout of `n` validators on ports from `base_port`; starts none.
        pub fn layout(n: usize, base_port: u16, block_interval_ms: u64) -> Cluster {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().join("dev");
            let out = super::run_ok(
                "cairn-node",
                &[
                    "dev",
                    "--init-only",
                    "--dir",
                    d.to_str().unwrap(),
                    "--validators",
                    &n.to_string(),
                    "--base-port",
                    &base_port.to_string(),
                    "--block-interval-ms",
                    &block_interval_ms.to_string(),
                    "--idle-block-ms",
                    &Self::IDLE_BLOCK_MS.to_string(),
                ],
            );
            let configs: Vec<PathBuf> = out.lines().map(PathBuf::from).collect();
            assert_eq!(configs.len(), n, "{out}");
            let urls = (0..n).map(|i| format!("https://127.0.0.1:{}", base_port + 200 + i as u16)).collect();
            // The nodes serve HTTPS with certificates of the consortium's dev CA.
            let ca = d.join("ca.pem");
            http::trust_ca_file(&ca).unwrap();
            *super::CA.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ca);
            Cluster { dir, configs, urls, env: Vec::new(), node_binary: None, children: (0..n).map(|_| None).collect() }
        }

        /// Makes the nodes serve plain HTTP instead of HTTPS (`[http] plaintext = true`),
        /// as behind an operator's TLS terminator; call before starting them.
        pub fn use_plaintext(&mut self) {
            self.edit_configs("tls_cert = \"tls/node.pem\"", "plaintext = true");
            self.edit_configs("tls_key = \"tls/node.key\"\n", "");
            for url in &mut self.urls {
                *url = url.replace("https://", "http://");
            }
        }

        /// Replaces `from` (which must occur) by `to` in every node's configuration file.
        pub fn edit_configs(&self, from: &str, to: &str) {
            for config in &self.configs {
                let text = std::fs::read_to_string(config).unwrap();
                assert!(text.contains(from), "{}: no {from:?}", config.display());
                std::fs::write(config, text.replace(from, to)).unwrap();
            }
        }

        /// Starts every node and waits until each answers HTTP.
        pub fn start_all(&mut self) {
            let n = self.configs.len();
            for i in 0..n {
                self.start_node(i);
            }
            self.wait_for("every node to answer HTTP", std::time::Duration::from_secs(60), |c| {
                (0..n).all(|i| c.height(i).is_some())
            });
        }

        /// The genesis file.
        pub fn genesis_path(&self) -> PathBuf {
            self.dir.path().join("dev").join("genesis.toml")
        }

        /// The genesis.
        pub fn genesis(&self) -> Genesis {
            Genesis::from_toml(&std::fs::read_to_string(self.genesis_path()).unwrap()).unwrap()
        }

        /// Validator `i`'s data directory.
        pub fn data_dir(&self, i: usize) -> &Path {
            self.configs[i].parent().unwrap()
        }

        /// Validator `i`'s key.
        pub fn key(&self, i: usize) -> Keypair {
            cairn_client::keys::load(&self.data_dir(i).join("node.key")).unwrap()
        }

        /// Starts (or restarts) validator `i`, its output appended to `node.log`.
        /// The process id of node `i`, if it runs.
        pub fn pid(&self, i: usize) -> Option<u32> {
            self.children.get(i).and_then(Option::as_ref).map(Child::id)
        }

        /// Starts node `i` (its output goes to `node.log` in its data directory).
        pub fn start_node(&mut self, i: usize) {
            let log =
                std::fs::OpenOptions::new().create(true).append(true).open(self.data_dir(i).join("node.log")).unwrap();
            let binary = self.node_binary.clone().unwrap_or_else(|| super::binary("cairn-node"));
            let child = Command::new(binary)
                .arg("run")
                .arg("--config")
                .arg(&self.configs[i])
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap();
            self.children[i] = Some(child);
        }

        /// Kills validator `i` with SIGKILL and reaps it.
        pub fn kill(&mut self, i: usize) {
            if let Some(mut c) = self.children[i].take() {
                c.kill().unwrap();
                c.wait().unwrap();
            }
        }

        /// Validator `i`'s log so far.
        pub fn log(&self, i: usize) -> String {
            std::fs::read_to_string(self.data_dir(i).join("node.log")).unwrap_or_default()
        }

        /// A metric of validator `i`, if it answers.
        pub fn metric(&self, i: usize, name: &str) -> Option<f64> {
            let (status, body) = http::request("GET", &format!("{}/metrics", self.urls[i]), "text/plain", &[]).ok()?;
            if status != 200 {
                return None;
            }
            String::from_utf8_lossy(&body).lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                if k == name { v.trim().parse().ok() } else { None }
            })
        }

        /// Validator `i`'s decided height, if it answers.
        pub fn height(&self, i: usize) -> Option<u64> {
            self.metric(i, "cairn_height").map(|h| h as u64)
        }

        /// Waits until `cond` holds, checking every 100 ms; panics with `what` and the
        /// logs after `timeout`.
        pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Self) -> bool) {
            let start = Instant::now();
            while !cond(self) {
                if start.elapsed() > timeout {
                    let logs: Vec<String> = (0..self.configs.len())
                        .map(|i| {
                            let log = self.log(i);
                            let tail: Vec<&str> = log.lines().rev().take(30).collect();
                            format!(
                                "--- v{i} (height {:?}) ---\n{}",
                                self.height(i),
                                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                            )
                        })
                        .collect();
                    panic!("timed out after {timeout:?} waiting for {what}\n{}", logs.join("\n"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("[{:>6.1}s] {what}", start.elapsed().as_secs_f64());
        }

        /// The certified block at `height` from validator `i`.
        pub fn block(&self, i: usize, height: u64) -> CertifiedBlock {
            http::get_json(&format!("{}/v1/blocks/{height}", self.urls[i])).unwrap()
        }

        /// The latest checkpoint of validator `i`.
        pub fn checkpoint(&self, i: usize) -> CertifiedHeader {
            http::get_json(&format!("{}/v1/checkpoint", self.urls[i])).unwrap()
        }

        /// The log size at validator `i`'s latest block (0 if it does not answer).
        pub fn log_size(&self, i: usize) -> u64 {
            http::get_json::<CertifiedHeader>(&format!("{}/v1/checkpoint", self.urls[i]))
                .map_or(0, |h| h.header.log_size)
        }

        /// Posts raw bytes as a transaction to validator `i`; returns status and body.
        pub fn post_tx_bytes(&self, i: usize, bytes: &[u8]) -> (u16, String) {
            let (s, b) =
                http::post(&format!("{}/v1/transactions", self.urls[i]), "application/octet-stream", bytes).unwrap();
            (s, String::from_utf8_lossy(&b).into_owned())
        }

        /// Waits until every node answers `/readyz` with 200 (consensus runs and enough
        /// custodians are connected).
        pub fn wait_ready(&self) {
            self.wait_for("every node ready for readings", Duration::from_secs(60), |c| {
                c.urls
                    .iter()
                    .all(|u| http::request("GET", &format!("{u}/readyz"), "", &[]).is_ok_and(|(s, _)| s == 200))
            });
        }

        /// Creates a gateway key file, registers it through node 0 with organisation 0's
        /// admin key (the `cairn register` command) and returns the file and the key.
        pub fn register_gateway(&self, name: &str) -> (PathBuf, Keypair) {
            self.register(name, 0, "gateway")
        }

        /// Creates a key file, registers it with `role` for organisation `org` (`orgN`)
        /// through node 0 with that organisation's admin key, waits until every node has
        /// applied it, and returns the file and the key.
        pub fn register(&self, name: &str, org: usize, role: &str) -> (PathBuf, Keypair) {
            let key_file = self.dir.path().join(format!("{name}.key"));
            super::run_ok("cairn", &["keygen", "--out", key_file.to_str().unwrap()]);
            let admin = self.dir.path().join(format!("dev/admins/org{org}/node.key"));
            super::run_ok(
                "cairn",
                &[
                    "register",
                    "--node",
                    &self.urls[0],
                    "--genesis",
                    self.genesis_path().to_str().unwrap(),
                    "--admin-key",
                    admin.to_str().unwrap(),
                    "--role",
                    role,
                    "--key-file",
                    key_file.to_str().unwrap(),
                ],
            );
            // Node 0 applied the registration; wait until every node has reached its height.
            let h0 = self.height(0).unwrap();
            self.wait_for("every node to apply the registration", Duration::from_secs(30), |c| {
                (0..c.urls.len()).all(|i| c.height(i).is_some_and(|h| h >= h0))
            });
            let key = cairn_client::keys::load(&key_file).unwrap();
            (key_file, key)
        }

        /// The index of the validator with key id `id`.
        pub fn index_of(&self, id: &cairn_proto::KeyId) -> usize {
            (0..self.configs.len()).find(|i| self.key(*i).public().key_id() == *id).unwrap()
        }

        /// Posts a transaction to validator `i`.
        pub fn submit(&self, i: usize, tx: &Transaction) -> (u16, String) {
            self.post_tx_bytes(i, &encode(tx).unwrap())
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            for i in 0..self.children.len() {
                self.kill(i);
            }
        }
    }

    /// A batch commitment of `key`'s node with sequence `seq`, signed.
    pub fn batch(key: &Keypair, seq: u64) -> Transaction {
        let body = BatchCommit {
            version: 1,
            kind: BatchKind::Anchors,
            node: key.public().key_id(),
            root: Hash32(*blake3::hash(&[seq.to_be_bytes().as_slice(), &key.public().0].concat()).as_bytes()),
            size: 16,
            seq,
        };
        Transaction::BatchCommit(body.sign(key).unwrap())
    }
}

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
