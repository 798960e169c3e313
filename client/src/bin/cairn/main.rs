//! `cairn`: the command for gateways, accessors and regulators.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use cairn_client::gateway::{Erase, GatewayError};
use cairn_client::verify::{verify_block, verify_checkpoint, verify_log_consistency, verify_receipt};
use cairn_proto::Hash32;
use cairn_proto::consensus::{CertifiedBlock, CertifiedHeader};
use cairn_proto::genesis::Genesis;
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::record::RecordId;
use clap::Parser;

mod access;
mod agreement;
mod args;
mod consent;
mod erase;
mod progress;
mod submit;

use args::{Cli, Command, InputFormat};
use erase::wait_for_certificates;
use submit::{SubmitOptions, load_readings, submit};

/// Trusts `--ca` (or `CAIRN_CA`) and the `ca.pem` beside any `--genesis` file given.
fn trust(ca: Option<&Path>) -> anyhow::Result<()> {
    if let Some(ca) = ca {
        cairn_client::http::trust_ca_file(ca)?;
    }
    let args: Vec<String> = std::env::args().collect();
    let mut genesis: Vec<PathBuf> = args
        .windows(2)
        .filter(|w| w.first().is_some_and(|a| a == "--genesis"))
        .filter_map(|w| w.get(1).map(PathBuf::from))
        .collect();
    genesis.extend(args.iter().filter_map(|a| a.strip_prefix("--genesis=")).map(PathBuf::from));
    for g in genesis {
        let beside = g.parent().unwrap_or(Path::new(".")).join("ca.pem");
        if beside.exists() {
            cairn_client::http::trust_ca_file(&beside)?;
        }
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not the expected JSON document", path.display()))
}

fn read_genesis(path: &Path) -> anyhow::Result<Genesis> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Genesis::from_toml(&text).with_context(|| format!("{}", path.display()))
}

/// An erasure certificate from JSON or from hex of its bcs bytes (whitespace ignored).
fn parse_certificate(text: &str) -> anyhow::Result<cairn_proto::erasure::ErasureCertificate> {
    let text = text.trim();
    if text.starts_with('{') {
        return serde_json::from_str(text).context("not an erasure certificate in JSON");
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = hex::decode(&compact).context("neither JSON nor hex")?;
    cairn_proto::version::decode_versioned(&bytes, 16 << 20)
        .map_err(|e| anyhow::anyhow!("not a bcs erasure certificate: {e}"))
}

/// Writes the verdict of a verify command: its output (standard output).
fn report(checks: &[String], limits: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for c in checks {
        writeln!(out, "ok: {c}")?;
    }
    writeln!(out, "not established: {limits}")
}

/// A command line that is wrong in a way clap cannot see (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Exit codes (docs/gateway.md): 0 done (also when standard output was closed early,
/// e.g. by `head`), 1 refused or failed (a node's refusal, a check that failed, a bad
/// file), 2 usage (clap's own).
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `e` is a write to a closed pipe (the reader went away: end quietly).
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use std::io::Write as _;
    trust(cli.ca.as_deref())?;
    match cli.command {
        Command::Submit { gateway, purpose, retention_days, format, batch, parallel, out, input } => {
            let gateway = gateway.connect()?;
            let readings = load_readings(input.as_deref(), format)?;
            let options = SubmitOptions { purpose, retention_days, batch, parallel };
            let mut sink = output(out.as_deref())?;
            let summary = submit(&gateway, &readings, &options, &mut sink)?;
            eprintln!("{summary}");
            if summary.failed > 0 {
                anyhow::bail!("{} readings were not stored", summary.failed);
            }
        }
        Command::Get { gateway, purpose, genesis, resource, rid } => {
            let gateway = gateway.connect()?;
            let rid: RecordId = rid.parse().map_err(|e| anyhow::anyhow!("record id {rid:?}: {e}"))?;
            let raw = gateway.record_bytes(&rid, &purpose)?;
            // The data, exactly as the node sent it: the resource inside is the stored bytes.
            let mut stdout = std::io::stdout().lock();
            if resource {
                #[derive(serde::Deserialize)]
                struct Answer<'a> {
                    #[serde(borrow)]
                    record: Record<'a>,
                }
                #[derive(serde::Deserialize)]
                struct Record<'a> {
                    #[serde(borrow)]
                    resource: &'a serde_json::value::RawValue,
                }
                let a: Answer<'_> = serde_json::from_slice(&raw).context("the node's answer")?;
                // Exactly the submitted bytes: no line end added.
                stdout.write_all(a.record.resource.get().as_bytes())?;
            } else {
                stdout.write_all(&raw)?;
                stdout.write_all(b"\n")?;
            }
            stdout.flush()?;
            let answer: serde_json::Value = serde_json::from_slice(&raw).context("the node's answer")?;
            if let Some(g) = genesis {
                let genesis = read_genesis(&g)?;
                let receipt: Option<AnchorReceipt> =
                    serde_json::from_value(answer.get("receipt").cloned().unwrap_or_default())?;
                let receipt =
                    receipt.ok_or_else(|| anyhow::anyhow!("the record is not anchored yet; try again shortly"))?;
                if receipt.rid != rid
                    || answer.pointer("/record/leaf").and_then(|v| v.as_str()) != Some(&receipt.leaf.to_string())
                {
                    anyhow::bail!("the receipt is not for this record");
                }
                // The data went to standard output; the check's result goes to standard error.
                for c in verify_receipt(&genesis, &receipt)? {
                    eprintln!("ok: {c}");
                }
                eprintln!(
                    "not established: that the resource shown is the one committed: C is a keyed hash of the ciphertext, which stays with the custodians"
                );
            }
        }
        Command::Receipt { gateway, from, wait_ms, out, rids } => {
            let gateway = gateway.connect()?;
            let mut ids: Vec<RecordId> = Vec::new();
            for r in &rids {
                ids.push(r.parse().map_err(|e| anyhow::anyhow!("record id {r:?}: {e}"))?);
            }
            if let Some(from) = from {
                let text = std::fs::read_to_string(&from).with_context(|| format!("reading {}", from.display()))?;
                for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    let v: serde_json::Value =
                        serde_json::from_str(line).with_context(|| format!("{} line {}", from.display(), i + 1))?;
                    let rid = v
                        .get("rid")
                        .and_then(|r| r.as_str())
                        .ok_or_else(|| anyhow::anyhow!("{} line {}: no \"rid\"", from.display(), i + 1))?;
                    ids.push(rid.parse().map_err(|e| anyhow::anyhow!("{} line {}: {e}", from.display(), i + 1))?);
                }
            }
            let mut sink = output(out.as_deref())?;
            let (mut done, mut pending) = (0usize, 0usize);
            let bar = progress::bar(ids.len() as u64, "receipts");
            for chunk in ids.chunks(1000) {
                let got = with_retries(|| gateway.receipts(chunk, wait_ms))?;
                for r in got {
                    match r {
                        Some(r) => {
                            writeln!(sink, "{}", serde_json::to_string(&r)?)?;
                            done += 1;
                        }
                        None => pending += 1,
                    }
                }
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            sink.flush()?;
            eprintln!("{done} receipts fetched, {pending} not yet anchored");
            if pending > 0 {
                anyhow::bail!("{pending} records are not anchored yet");
            }
        }
        Command::Register { node, genesis, admin_key, role, key_file, public_key } => {
            let genesis = read_genesis(&genesis)?;
            let admin = cairn_client::keys::load(&admin_key)?;
            let role: cairn_proto::membership::Role = serde_json::from_value(serde_json::json!(role))
                .map_err(|_| anyhow::anyhow!("--role {role:?}: gateway, accessor or regulator"))?;
            let key = match (key_file, public_key) {
                (Some(f), None) => cairn_client::keys::load(&f)?.public(),
                (None, Some(hex)) => hex.parse().map_err(|e| anyhow::anyhow!("--public-key: {e}"))?,
                _ => return Err(Usage("give --key-file or --public-key".into()).into()),
            };
            cairn_client::admin::register(&node, &genesis, &admin, role, key)?;
            eprintln!("registered {key} (key id {}) as {role:?}", key.key_id());
        }
        Command::VerifyReceipt { genesis, receipts } => {
            let genesis = read_genesis(&genesis)?;
            let text = std::fs::read_to_string(&receipts).with_context(|| format!("reading {}", receipts.display()))?;
            let parsed: Vec<AnchorReceipt> = match serde_json::from_str::<AnchorReceipt>(&text) {
                Ok(one) => vec![one],
                Err(_) => text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| {
                        serde_json::from_str(l).with_context(|| format!("{} line {}", receipts.display(), i + 1))
                    })
                    .collect::<anyhow::Result<_>>()?,
            };
            let limits = "that the content matches C (that needs the commitment secret, held by the custodians), or that the record still exists";
            if let [one] = parsed.as_slice() {
                report(&verify_receipt(&genesis, one)?, limits)?;
            } else {
                for (i, r) in parsed.iter().enumerate() {
                    verify_receipt(&genesis, r).with_context(|| format!("receipt {} (record {})", i + 1, r.rid))?;
                }
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "ok: {} receipts verified: each leaf is in its custodian's signed batch, each batch in a certified log",
                    parsed.len()
                )?;
                writeln!(out, "not established: {limits}")?;
            }
        }
        Command::Hold { gateway, subject, release, rids } => {
            let gateway = gateway.connect()?;
            let what = scope(subject, &rids)?;
            let n = with_retries(|| gateway.hold(&what, !release))?;
            eprintln!("{} {n} records at every custodian", if release { "released" } else { "held" });
        }
        Command::Erase { gateway, subject, trigger, replaced_by, out, wait_s, genesis, rids } => {
            let gateway = gateway.connect()?;
            let what = scope(subject, &rids)?;
            let id = match (trigger.as_str(), replaced_by, &what) {
                ("rectified", Some(new), Erase::Records(old)) if old.len() == 1 => {
                    let new: RecordId = new.parse().map_err(|_| Usage("--replaced-by is a record id".into()))?;
                    let old = old.first().copied().ok_or_else(|| Usage("one record id".into()))?;
                    with_retries(|| gateway.rectify(&old, &new))?
                }
                ("rectified", _, _) => {
                    return Err(Usage("--trigger rectified takes one record id and --replaced-by".into()).into());
                }
                (_, Some(_), _) => return Err(Usage("--replaced-by goes with --trigger rectified".into()).into()),
                _ => with_retries(|| gateway.erase(&what, Some(&trigger)))?,
            };
            writeln!(std::io::stdout().lock(), "{id}")?;
            eprintln!("erasure request {id} accepted");
            if let Some(out) = out {
                let genesis = genesis.as_deref().map(read_genesis).transpose()?;
                let certificates = wait_for_certificates(&gateway, &id, wait_s)?;
                std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
                for cert in &certificates {
                    let file = out.join(format!("{}.json", cert.record.rid));
                    std::fs::write(&file, serde_json::to_string_pretty(cert)?)
                        .with_context(|| format!("writing {}", file.display()))?;
                    if let Some(g) = &genesis {
                        cert.verify(g).map_err(|e| anyhow::anyhow!("{}: does not verify: {e}", file.display()))?;
                    }
                }
                let verified = if genesis.is_some() { ", each verified offline" } else { "" };
                eprintln!("{} certificates written to {}{verified}", certificates.len(), out.display());
            }
        }
        Command::VerifyErasure { genesis, live, certificate } => {
            let genesis = read_genesis(&genesis)?;
            let text =
                std::fs::read_to_string(&certificate).with_context(|| format!("reading {}", certificate.display()))?;
            let cert = parse_certificate(&text).with_context(|| format!("{}", certificate.display()))?;
            let mut checks =
                cert.verify(&genesis).map_err(|e| anyhow::anyhow!("the certificate does not verify: {e}"))?;
            if !live.is_empty() {
                checks.extend(
                    cairn_client::live::challenge(&genesis, &cert, &live)
                        .map_err(|e| anyhow::anyhow!("live challenge failed: {e}"))?,
                );
            }
            report(&checks, cairn_proto::erasure::CANNOT_PROVE)?;
        }
        Command::Bind(a) => consent::bind(a.signer, a.subject, a.person, a.representative)?,
        Command::Consent(c) => consent::consent(c)?,
        Command::Family(c) => consent::family(c)?,
        Command::Agreement(c) => agreement::agreement(c)?,
        Command::Access { signer, purpose, basis, resource, rid } => {
            consent::access(signer, purpose, basis, rid, resource)?
        }
        Command::Policy(c) => consent::policy(c)?,
        Command::Disclosures { signer, subject, genesis } => access::disclosures(signer, subject, genesis)?,
        Command::Restriction(c) => access::restriction(c)?,
        Command::Export { signer, subject, out } => access::export(signer, subject, out)?,
        Command::VerifyExport { genesis, export } => access::verify_export(&genesis, &export)?,
        Command::BreakGlass { signer, subject, organisation, purpose, justification, minutes } => {
            access::break_glass(signer, subject, organisation, purpose, justification, minutes)?
        }
        Command::Review(c) => access::review(c)?,
        Command::AccessLog { signer, from_day, to_day } => access::access_log(signer, from_day, to_day)?,
        Command::VerifyAgreement { genesis, certificate } => agreement::verify_agreement(&genesis, &certificate)?,
        Command::KeyInfo { key } => {
            let public = cairn_client::keys::load(&key)?.public();
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "public key: {public}")?;
            writeln!(stdout, "key id:     {}", public.key_id())?;
        }
        Command::Keygen { out } => {
            let public = cairn_client::keys::generate(&out)?;
            eprintln!("wrote {}", out.display());
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "public key: {public}")?;
            writeln!(stdout, "key id:     {}", public.key_id())?;
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
            eprintln!(
                "checkpoint: height {}, log size {}, log root {}",
                new.header.height, new.header.log_size, new.header.log_root
            );
            report(
                &checks,
                "that the node showed you its newest block: a checkpoint proves what was decided, not that nothing was decided since",
            )?;
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&new)?)
                    .with_context(|| format!("writing {}", out.display()))?;
                eprintln!("wrote {}", out.display());
            }
        }
        Command::VerifyBlock { genesis, block } => {
            let genesis = read_genesis(&genesis)?;
            let block: CertifiedBlock = read_json(&block)?;
            report(
                &verify_block(&genesis, &block)?,
                "anything about individual records: a block holds batch roots only, and a record needs its receipt",
            )?;
        }
        Command::VerifyConsistency { genesis, old, new, proof } => {
            let genesis = read_genesis(&genesis)?;
            let (old, new): (CertifiedHeader, CertifiedHeader) = (read_json(&old)?, read_json(&new)?);
            let proof: Vec<Hash32> = read_json(&proof)?;
            report(
                &verify_log_consistency(&genesis, &old, &new, &proof)?,
                "anything about blocks after the newer checkpoint",
            )?;
        }
    }
    Ok(())
}

/// Where output goes: a file or standard output.
fn output(path: Option<&Path>) -> anyhow::Result<Box<dyn std::io::Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}

/// Records by id, or a subject.
fn scope(subject: Option<String>, rids: &[String]) -> anyhow::Result<Erase> {
    Ok(match subject {
        Some(s) => Erase::Subject(s),
        None if rids.is_empty() => return Err(Usage("name record ids or --subject".into()).into()),
        None => Erase::Records(
            rids.iter()
                .map(|r| r.parse().map_err(|e| anyhow::anyhow!("record id {r:?}: {e}")))
                .collect::<anyhow::Result<_>>()?,
        ),
    })
}

/// Runs `call` again while it fails with a retryable error (busy, unavailable, network,
/// a batch with the same idempotency key still being stored), waiting 0.2 s, 0.4 s, ...
/// up to 5 s between tries, for up to 150 s in all: longer than a node may hold an
/// abandoned idempotency claim (`records::claims::CLAIM_TTL`, 120 s).
fn with_retries<T>(mut call: impl FnMut() -> Result<T, GatewayError>) -> Result<T, GatewayError> {
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match call() {
            Err(e) if e.retryable() && started.elapsed() + wait < std::time::Duration::from_secs(150) => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
