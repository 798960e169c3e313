//! `cairn-node`: parse arguments and run the chosen command.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use cairn_node::identity::NodeIdentity;
use cairn_node::run::config::Timing;
use cairn_node::setup::{GenesisSpec, MemberArg, build_genesis, parse_member_arg};
use cairn_proto::genesis::parse_time;
use cairn_proto::membership::Role;
use clap::{Parser, Subcommand};
use cmd::dev::Hosts;

mod cmd;

/// mimalloc instead of glibc's malloc: allocation took ≈ 20 % of node CPU under load
/// (issue 17; ADR 022).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "cairn-node", version, about = "Run a cairn consortium node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory and the node's key; print its public key and peer id.
    Init {
        /// Data directory to create.
        #[arg(long, default_value = "cairn-data")]
        data_dir: PathBuf,
    },
    /// Build a genesis file from member public keys (hex).
    Genesis {
        /// Name of the chain (a-z, 0-9, '-').
        #[arg(long)]
        chain_id: String,
        /// Start time, RFC 3339 (default: now).
        #[arg(long)]
        time: Option<String>,
        /// An organisation and one admin key: NAME=KEY (repeat the name for more keys).
        #[arg(long = "organisation", value_name = "NAME=KEY", required = true, value_parser = parse_member_arg)]
        organisations: Vec<MemberArg>,
        /// A validator: ORG=KEY or ORG=KEY:POWER.
        #[arg(long = "validator", value_name = "ORG=KEY[:POWER]", required = true, value_parser = parse_member_arg)]
        validators: Vec<MemberArg>,
        /// A gateway key: ORG=KEY.
        #[arg(long = "gateway", value_name = "ORG=KEY", value_parser = parse_member_arg)]
        gateways: Vec<MemberArg>,
        /// An accessor key: ORG=KEY.
        #[arg(long = "accessor", value_name = "ORG=KEY", value_parser = parse_member_arg)]
        accessors: Vec<MemberArg>,
        /// A regulator key: ORG=KEY.
        #[arg(long = "regulator", value_name = "ORG=KEY", value_parser = parse_member_arg)]
        regulators: Vec<MemberArg>,
        /// A purpose of use reads may name (v3 PurposeOfUse code, e.g. TREAT); repeat
        /// for each. Default: CAREMGT, ETREAT, FAMRQT, HRESCH, PATRQT, PUBHLTH,
        /// TREAT.
        #[arg(long = "purpose", value_name = "CODE")]
        purposes: Vec<String>,
        /// Organisations whose admins must sign a change of the purposes (default: a
        /// majority).
        #[arg(long)]
        change_quorum: Option<u32>,
        /// File to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a validator from its configuration file.
    Run {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Audit a stopped node's data directory.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Start a working consortium on this machine: keys, genesis, configuration and data
    /// under one directory, endpoints printed. Running it again resumes it.
    Dev {
        /// Directory for everything the consortium needs.
        #[arg(long, default_value = "cairn-dev")]
        dir: PathBuf,
        /// Number of validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// First port (consensus base, p2p base+100, HTTP base+200).
        #[arg(long, default_value_t = 26000)]
        base_port: u16,
        /// One IP address per validator, comma-separated (for containers); every node
        /// then listens on all interfaces on fixed ports.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Target time between blocks, milliseconds.
        #[arg(long, default_value_t = 500)]
        block_interval_ms: u64,
        /// Longest time without a block while idle, milliseconds (0: an empty block
        /// every interval); `timing.idle_block_ms`, ADR 019.
        #[arg(long, default_value_t = 60_000)]
        idle_block_ms: u64,
        /// Only write the layout; start nothing.
        #[arg(long)]
        init_only: bool,
        /// Also run a simulated smart-shoe gateway that submits readings every 2 s and
        /// verifies their receipts offline.
        #[arg(long, conflicts_with = "init_only")]
        demo: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Look through the vault, ledger, indexes and logs for anything that still links a
    /// record this node erased; report what was scanned and found (exit 1 if anything).
    Residue {
        /// The node's configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    cairn_node::harden::refuse_core_dumps().context("refusing core dumps")?;
    match Cli::parse().command {
        Command::Init { data_dir } => init(data_dir),
        Command::Genesis {
            chain_id,
            time,
            organisations,
            validators,
            gateways,
            accessors,
            regulators,
            purposes,
            change_quorum,
            out,
        } => {
            let genesis_time_ms = match time {
                Some(t) => parse_time(&t)?,
                None => cairn_proto::time::now_ms(),
            };
            let members = [(Role::Gateway, gateways), (Role::Accessor, accessors), (Role::Regulator, regulators)]
                .into_iter()
                .flat_map(|(role, args)| args.into_iter().map(move |a| (role, a)))
                .collect();
            let purposes = (!purposes.is_empty()).then_some(purposes);
            let spec =
                GenesisSpec { chain_id, genesis_time_ms, organisations, validators, members, purposes, change_quorum };
            genesis(&spec, out)
        }
        Command::Run { config } => {
            init_logging();
            let file = cairn_node::run::config::NodeFile::load(&config)?;
            Ok(runtime()?.block_on(cairn_node::run::run(file))?)
        }
        Command::Audit { what: AuditCommand::Residue { config } } => {
            let file = cairn_node::run::config::NodeFile::load(&config)?;
            let report = cairn_node::audit::residue(&file.data_dir, |path, bytes| {
                eprintln!("scanning {} ({bytes} bytes)", path.display());
            })?;
            println!("data directory: {}", file.data_dir.display());
            println!("records this node erased as a custodian: {}", report.erased_here);
            println!("record ids certified erased by erasures this node coordinated: {}", report.erased_ids);
            println!("live records in the vault: {}", report.live_records);
            println!("vault: {}", report.vault);
            println!(
                "scanned {} files, {} bytes, for the erased record ids (raw and hex)",
                report.files.len(),
                report.bytes()
            );
            println!("access log: {}", report.access_log);
            for (path, why) in &report.skipped {
                println!("file not searched: {} ({why})", path.display());
            }
            println!(
                "not searched: subject references (the node keeps none after a request: it only hashes it) and \
                 record leaves (on chain by design; without the destroyed commitment secret a leaf links to nothing)"
            );
            if report.findings.is_empty() {
                println!("found: nothing");
            } else {
                for f in &report.findings {
                    println!("found: {f}");
                }
                anyhow::bail!("{} residue findings", report.findings.len());
            }
            Ok(())
        }
        Command::Dev { dir, validators, base_port, hosts, block_interval_ms, idle_block_ms, init_only, demo } => {
            let hosts = if hosts.is_empty() { Hosts::Local { base_port } } else { Hosts::Each(hosts) };
            let timing = Timing { block_interval_ms, idle_block_ms, ..Timing::default() };
            let layout = cmd::dev::prepare(&dir, validators, &hosts, timing)?;
            if init_only {
                for c in &layout.configs {
                    println!("{}", c.display());
                }
                return Ok(());
            }
            let exe = std::env::current_exe().context("locating cairn-node")?;
            runtime()?.block_on(cmd::dev::run_children(&exe, &layout, demo))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn,arc_malachitebft=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).init();
}

fn init(data_dir: PathBuf) -> anyhow::Result<()> {
    let id = NodeIdentity::create(&data_dir)?;
    println!("created {}", data_dir.join(cairn_node::identity::KEY_FILE).display());
    println!("public key: {}", id.public_key());
    println!("key id:     {}", id.public_key().key_id());
    println!("peer id:    {}", id.peer_id()?);
    Ok(())
}

fn genesis(spec: &GenesisSpec, out: PathBuf) -> anyhow::Result<()> {
    let genesis = build_genesis(spec).context("invalid genesis")?;
    let text = genesis.to_toml()?;
    if out.exists() {
        bail!("{} already exists; refusing to overwrite a genesis file", out.display());
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&out)
        .with_context(|| format!("creating {}", out.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    println!("genesis hash: {}", genesis.hash()?);
    println!(
        "{} organisations, {} validators, {} other member keys",
        genesis.membership.organisations.len(),
        genesis.membership.validators.len(),
        genesis.membership.members.len()
    );
    Ok(())
}
