//! `cairn`: the command for gateways, accessors and regulators.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cairn_client::verify::{Checks, verify_block, verify_checkpoint, verify_log_consistency};
use cairn_proto::Hash32;
use cairn_proto::consensus::{CertifiedBlock, CertifiedHeader};
use cairn_proto::genesis::Genesis;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cairn", version, about = "Use and verify a cairn consortium ledger")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 key file; print its public key and key id.
    Keygen {
        /// Key file to create (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Fetch a node's latest certified checkpoint and verify it against the genesis file;
    /// with --since, also verify that its log extends an older checkpoint's.
    Checkpoint {
        /// The node's HTTP address, e.g. http://127.0.0.1:26200.
        #[arg(long)]
        node: String,
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// An older checkpoint (JSON) the new one must extend.
        #[arg(long)]
        since: Option<PathBuf>,
        /// Write the verified checkpoint here (JSON).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a certified block (JSON) offline against a genesis file.
    VerifyBlock {
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The certified block, as a node serves it (JSON).
        block: PathBuf,
    },
    /// Verify offline that a newer checkpoint's log extends an older one's.
    VerifyConsistency {
        /// The chain's genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The older certified header (JSON).
        #[arg(long)]
        old: PathBuf,
        /// The newer certified header (JSON).
        #[arg(long)]
        new: PathBuf,
        /// The consistency proof: a JSON list of hex hashes.
        #[arg(long)]
        proof: PathBuf,
    },
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not the expected JSON document", path.display()))
}

fn read_genesis(path: &Path) -> anyhow::Result<Genesis> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Genesis::from_toml(&text).with_context(|| format!("{}", path.display()))
}

fn report(checks: &Checks, limits: &str) {
    for c in checks {
        println!("ok: {c}");
    }
    println!("not established: {limits}");
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { out } => {
            let public = cairn_client::keys::generate(&out)?;
            println!("wrote {}", out.display());
            println!("public key: {public}");
            println!("key id:     {}", public.key_id());
        }
        Command::Checkpoint { node, genesis, since, out } => {
            let genesis = read_genesis(&genesis)?;
            let base = node.trim_end_matches('/');
            let new: CertifiedHeader = cairn_client::http::get_json(&format!("{base}/v1/checkpoint"))?;
            let checks = match since {
                None => verify_checkpoint(&genesis, &new)?,
                Some(old) => {
                    let old: CertifiedHeader = read_json(&old)?;
                    let url =
                        format!("{base}/v1/log/consistency?from={}&to={}", old.header.log_size, new.header.log_size);
                    let proof: Vec<Hash32> = cairn_client::http::get_json(&url)?;
                    verify_log_consistency(&genesis, &old, &new, &proof)?
                }
            };
            println!(
                "checkpoint: height {}, log size {}, log root {}",
                new.header.height, new.header.log_size, new.header.log_root
            );
            report(
                &checks,
                "that the node showed you its newest block: a checkpoint proves what was decided, not that nothing was decided since",
            );
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&new)?)
                    .with_context(|| format!("writing {}", out.display()))?;
                println!("wrote {}", out.display());
            }
        }
        Command::VerifyBlock { genesis, block } => {
            let genesis = read_genesis(&genesis)?;
            let block: CertifiedBlock = read_json(&block)?;
            report(
                &verify_block(&genesis, &block)?,
                "anything about individual records: a block holds batch roots only, and a record needs its receipt",
            );
        }
        Command::VerifyConsistency { genesis, old, new, proof } => {
            let genesis = read_genesis(&genesis)?;
            let (old, new): (CertifiedHeader, CertifiedHeader) = (read_json(&old)?, read_json(&new)?);
            let proof: Vec<Hash32> = read_json(&proof)?;
            report(
                &verify_log_consistency(&genesis, &old, &new, &proof)?,
                "anything about blocks after the newer checkpoint",
            );
        }
    }
    Ok(())
}
