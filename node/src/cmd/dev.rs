//! `cairn-node dev`: a working consortium of validators on this machine, with keys,
//! genesis, configuration and data under one directory. The layout is also what the
//! multi-process and Docker tests start from (`--init-only`).
//!
//! ```text
//! DIR/genesis.toml
//! DIR/admins/orgN/node.key      organisation N's admin key
//! DIR/vN/node.key               validator N's key
//! DIR/vN/node.toml              its configuration (data_dir = ".")
//! DIR/vN/node.log               its log (when started by `cairn-node dev`)
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cairn_proto::genesis::Genesis;

use cairn_node::identity::NodeIdentity;
use cairn_node::run::config::{CustodySection, HttpSection, MempoolSection, NetSection, NodeFile, Timing};
use cairn_node::setup::{GenesisSpec, MemberArg, build_genesis};
use cairn_proto::time::now_ms;

/// Where validators listen.
#[derive(Debug, Clone)]
pub enum Hosts {
    /// All on 127.0.0.1, ports offset by the validator's index.
    Local {
        /// First port of the range.
        base_port: u16,
    },
    /// One host (IP address) per validator, listening on all interfaces, same ports.
    Each(Vec<String>),
}

/// Ports used by validator `i`: consensus, p2p, HTTP.
pub fn ports(hosts: &Hosts, i: usize) -> (u16, u16, u16) {
    match hosts {
        Hosts::Local { base_port } => {
            let i = i as u16;
            (base_port + i, base_port + 100 + i, base_port + 200 + i)
        }
        Hosts::Each(_) => (26000, 26100, 8080),
    }
}

fn host(hosts: &Hosts, i: usize) -> String {
    match hosts {
        Hosts::Local { .. } => "127.0.0.1".into(),
        Hosts::Each(h) => h.get(i).cloned().unwrap_or_default(),
    }
}

/// What `prepare` made.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The directory.
    pub dir: PathBuf,
    /// Configuration file of each validator.
    pub configs: Vec<PathBuf>,
    /// HTTP base URL of each validator (as seen from this machine for local layouts).
    pub http: Vec<String>,
}

/// The consortium CA's certificate, beside the genesis file: `cairn` trusts it when given
/// `--genesis` (or `--ca`).
pub const CA_FILE: &str = "ca.pem";
/// A validator's API certificate and key, relative to its configuration file.
const TLS_CERT: &str = "tls/node.pem";
const TLS_KEY: &str = "tls/node.key";

/// Makes a CA for the dev consortium (its certificate in `ca.pem`; its key is not kept)
/// and, for each validator, an API certificate for its host and `localhost` signed by it
/// (ECDSA P-256, rcgen).
fn make_tls(dir: &Path, n: usize, hosts: &Hosts) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let ca_key = KeyPair::generate().context("making the dev CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "cairn dev consortium CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).context("signing the dev CA")?;
    for i in 0..n {
        let mut names = vec![host(hosts, i), "localhost".to_string()];
        names.dedup();
        let key = KeyPair::generate().context("making a node's TLS key")?;
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, format!("cairn dev validator v{i}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca_cert, &ca_key).context("signing a node's certificate")?;
        let tls = dir.join(format!("v{i}")).join("tls");
        std::fs::create_dir_all(&tls).with_context(|| format!("creating {}", tls.display()))?;
        std::fs::write(tls.join("node.pem"), cert.pem()).with_context(|| format!("writing {}", tls.display()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(tls.join("node.key"))
            .with_context(|| format!("writing {}", tls.display()))?;
        f.write_all(key.serialize_pem().as_bytes())?;
    }
    std::fs::write(dir.join(CA_FILE), ca_cert.pem()).with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

fn config_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("v{i}")).join("node.toml")
}

/// Creates keys, genesis and configurations for `n` validators under `dir`, or reuses
/// what an earlier run created there.
pub fn prepare(dir: &Path, n: usize, hosts: &Hosts, timing: Timing) -> anyhow::Result<Layout> {
    if n == 0 || n > 50 {
        anyhow::bail!("a dev consortium has 1 to 50 validators, not {n}");
    }
    if let Hosts::Each(h) = hosts
        && h.len() != n
    {
        anyhow::bail!("{} hosts given for {n} validators", h.len());
    }
    let genesis_path = dir.join("genesis.toml");
    let http: Vec<String> = (0..n)
        .map(|i| {
            let (_, _, port) = ports(hosts, i);
            format!("https://{}:{port}", host(hosts, i))
        })
        .collect();
    if genesis_path.exists() {
        let text =
            std::fs::read_to_string(&genesis_path).with_context(|| format!("reading {}", genesis_path.display()))?;
        if let Err(e) = Genesis::from_toml(&text) {
            anyhow::bail!(
                "{} was made by another version of cairn and cannot be used ({e}); remove {} to start a new dev \
                 consortium",
                genesis_path.display(),
                dir.display()
            );
        }
        let configs: Vec<PathBuf> = (0..n).map(|i| config_path(dir, i)).collect();
        if let Some(missing) = configs.iter().find(|c| !c.exists()) {
            anyhow::bail!(
                "{} exists but {} does not; remove the directory to start over",
                genesis_path.display(),
                missing.display()
            );
        }
        if !dir.join(CA_FILE).exists() {
            // A consortium made before the API served TLS: give it certificates.
            make_tls(dir, n, hosts)?;
            for path in &configs {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let mut file: NodeFile = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
                file.http.tls_cert = Some(PathBuf::from(TLS_CERT));
                file.http.tls_key = Some(PathBuf::from(TLS_KEY));
                file.http.plaintext = false;
                std::fs::write(path, toml::to_string(&file)?).with_context(|| format!("writing {}", path.display()))?;
            }
        }
        return Ok(Layout { dir: dir.to_path_buf(), configs, http });
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut spec = GenesisSpec { chain_id: "cairn-dev".into(), genesis_time_ms: now_ms(), ..GenesisSpec::default() };
    let mut ids = Vec::new();
    for i in 0..n {
        let org = format!("org{i}");
        let admin = NodeIdentity::create(&dir.join("admins").join(&org))?;
        spec.organisations.push(MemberArg { organisation: org.clone(), key: admin.public_key(), power: None });
        let node = NodeIdentity::create(&dir.join(format!("v{i}")))?;
        spec.validators.push(MemberArg { organisation: org, key: node.public_key(), power: Some(1) });
        ids.push(node);
    }
    let genesis: Genesis = build_genesis(&spec).context("building the dev genesis")?;
    make_tls(dir, n, hosts)?;
    let peer_ids = ids.iter().map(NodeIdentity::peer_id).collect::<Result<Vec<_>, _>>()?;
    // Every other validator's address on one of its ports (consensus or p2p), pinned by peer id.
    let peers = |i: usize, port: fn((u16, u16, u16)) -> u16| -> Vec<String> {
        (0..n)
            .filter(|j| *j != i)
            .filter_map(|j| peer_ids.get(j).map(|peer| (j, peer)))
            .map(|(j, peer)| format!("/ip4/{}/tcp/{}/p2p/{peer}", host(hosts, j), port(ports(hosts, j))))
            .collect()
    };
    let mut configs = Vec::new();
    for i in 0..n {
        let listen_host = match hosts {
            Hosts::Local { .. } => "127.0.0.1",
            Hosts::Each(_) => "0.0.0.0",
        };
        let (cport, pport, hport) = ports(hosts, i);
        let file = NodeFile {
            moniker: format!("v{i}"),
            data_dir: PathBuf::from("."),
            genesis: PathBuf::from("../genesis.toml"),
            consensus: NetSection { listen: format!("/ip4/{listen_host}/tcp/{cport}"), peers: peers(i, |p| p.0) },
            p2p: NetSection { listen: format!("/ip4/{listen_host}/tcp/{pport}"), peers: peers(i, |p| p.1) },
            http: HttpSection {
                listen: format!("{listen_host}:{hport}").parse().context("HTTP listen address")?,
                tls_cert: Some(PathBuf::from(TLS_CERT)),
                tls_key: Some(PathBuf::from(TLS_KEY)),
                plaintext: false,
            },
            timing,
            mempool: MempoolSection::default(),
            custody: CustodySection::default(),
            access: Default::default(),
        };
        let path = config_path(dir, i);
        std::fs::write(&path, toml::to_string(&file)?).with_context(|| format!("writing {}", path.display()))?;
        configs.push(path);
    }
    std::fs::write(&genesis_path, genesis.to_toml()?).with_context(|| format!("writing {}", genesis_path.display()))?;
    Ok(Layout { dir: dir.to_path_buf(), configs, http })
}

/// Starts every validator of `layout` as a child process of `exe` and waits for Ctrl-C or
/// for one of them to exit; then stops the others.
pub async fn run_children(exe: &Path, layout: &Layout, demo: bool) -> anyhow::Result<()> {
    let mut children = Vec::new();
    for (i, config) in layout.configs.iter().enumerate() {
        let log_path = config.with_file_name("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = tokio::process::Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting validator {i}"))?;
        children.push(child);
    }
    println!("cairn dev consortium: {} validators under {}", layout.configs.len(), layout.dir.display());
    println!("genesis: {}", layout.dir.join("genesis.toml").display());
    for (i, url) in layout.http.iter().enumerate() {
        println!(
            "v{i}: {url}  (health {url}/healthz, metrics {url}/metrics, log {})",
            layout.configs.get(i).map(|c| c.with_file_name("node.log").display().to_string()).unwrap_or_default()
        );
    }
    println!(
        "try: cairn checkpoint --node {} --genesis {}",
        layout.http.first().cloned().unwrap_or_default(),
        layout.dir.join("genesis.toml").display()
    );
    println!("Ctrl-C stops the consortium; running `cairn-node dev` again resumes it.");
    // Each child is owned by a task; dropping the set aborts the tasks, and dropping a
    // child kills it (kill_on_drop).
    let mut set = tokio::task::JoinSet::new();
    for (i, mut child) in children.into_iter().enumerate() {
        set.spawn(async move { (i, child.wait().await) });
    }
    // Ctrl-C or SIGTERM (`kill`, a service manager) stops every validator.
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("listening for SIGTERM")?;
    let feeder = async {
        if demo && let Err(e) = super::demo::run(layout.clone()).await {
            println!("demo stopped: {e:#}");
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = feeder => {}
        _ = tokio::signal::ctrl_c() => println!("stopping"),
        _ = term.recv() => println!("stopping"),
        Some(Ok((index, status))) = set.join_next() => {
            anyhow::bail!("validator {index} exited ({status:?}); see its node.log");
        }
    }
    Ok(())
}
