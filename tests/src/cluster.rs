//! A consortium of `cairn-node run` processes built from `cairn-node dev --init-only`.

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
    /// The network namespace each validator runs in (`ip netns exec`), when laid out
    /// with [`Cluster::layout_in`]; empty: all on this machine's loopback.
    pub netns: Vec<String>,
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
        let urls = (0..n).map(|i| format!("https://127.0.0.1:{}", base_port + 200 + i as u16)).collect();
        Self::lay_out(n, &["--base-port".into(), base_port.to_string()], urls, block_interval_ms)
    }

    /// Writes a layout of one validator in each namespace of `net` (`cairn-node dev
    /// --hosts`: its own address, the same ports), to be run with `ip netns exec`;
    /// starts none.
    pub fn layout_in(net: &super::netns::Network, block_interval_ms: u64) -> Cluster {
        let hosts = net.hosts();
        let urls = hosts.iter().map(|h| format!("https://{h}:8080")).collect();
        let mut c = Self::lay_out(hosts.len(), &["--hosts".into(), hosts.join(",")], urls, block_interval_ms);
        c.netns = net.namespaces();
        c
    }

    fn lay_out(n: usize, placement: &[String], urls: Vec<String>, block_interval_ms: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("dev");
        let (n_arg, interval, idle) = (n.to_string(), block_interval_ms.to_string(), Self::IDLE_BLOCK_MS.to_string());
        let mut args = vec!["dev", "--init-only", "--dir", d.to_str().unwrap(), "--validators", &n_arg];
        args.extend(placement.iter().map(String::as_str));
        args.extend(["--block-interval-ms", &interval, "--idle-block-ms", &idle]);
        let out = super::run_ok("cairn-node", &args);
        let configs: Vec<PathBuf> = out.lines().map(PathBuf::from).collect();
        assert_eq!(configs.len(), n, "{out}");
        // The nodes serve HTTPS with certificates of the consortium's dev CA.
        let ca = d.join("ca.pem");
        http::trust_ca_file(&ca).unwrap();
        *super::CA.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ca);
        Cluster {
            dir,
            configs,
            urls,
            env: Vec::new(),
            node_binary: None,
            netns: Vec::new(),
            children: (0..n).map(|_| None).collect(),
        }
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
        // `ip netns exec` execs the node in place: the child's pid is the node's.
        let mut command = match self.netns.get(i) {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let child = command
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
        http::get_json::<CertifiedHeader>(&format!("{}/v1/checkpoint", self.urls[i])).map_or(0, |h| h.header.log_size)
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
            c.urls.iter().all(|u| http::request("GET", &format!("{u}/readyz"), "", &[]).is_ok_and(|(s, _)| s == 200))
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
