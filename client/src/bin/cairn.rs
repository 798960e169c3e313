//! `cairn`: the command for gateways, accessors and regulators.

use std::path::PathBuf;

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { out } => {
            let public = cairn_client::keys::generate(&out)?;
            println!("wrote {}", out.display());
            println!("public key: {public}");
            println!("key id:     {}", public.key_id());
        }
    }
    Ok(())
}
