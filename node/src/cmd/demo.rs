//! `cairn-node dev --demo`: a simulated smart-shoe gateway that feeds the dev consortium,
//! so a newcomer sees readings stored at their custodians, anchored, and receipts
//! verified offline against the genesis file, within a minute.
//!
//! It does what a real gateway does, over the public API: a key of its own, registered by
//! organisation 0's admin (a membership change), signed `POST /v1/readings` and
//! `POST /v1/receipts`, then `AnchorReceipt::verify` from the genesis file alone.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use cairn_client::gateway::{BodyFormat, Gateway};
use cairn_proto::genesis::Genesis;
use cairn_proto::membership::Role;
use cairn_proto::{Keypair, SecretSeed, keyfile};

use super::dev::Layout;
use cairn_proto::time::now_ms;

fn load_or_create_key(path: &Path) -> anyhow::Result<Keypair> {
    if path.exists() {
        let text = std::fs::read_to_string(path)?;
        return Ok(Keypair::from_seed(&keyfile::parse(&text).with_context(|| path.display().to_string())?));
    }
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let seed = SecretSeed::from_bytes(*bytes);
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(keyfile::render(&seed).as_bytes())?;
    f.sync_all()?;
    Ok(Keypair::from_seed(&seed))
}

/// Registers the gateway key unless it already is (a second run finds it registered).
fn register(base: &str, genesis: &Genesis, admin: &Keypair, gateway: &Keypair) -> anyhow::Result<()> {
    let id = gateway.public().key_id();
    if genesis.membership.members.iter().any(|m| m.public_key.key_id() == id) {
        return Ok(());
    }
    match cairn_client::admin::register(base, genesis, admin, Role::Gateway, gateway.public()) {
        Ok(()) => Ok(()),
        Err(cairn_client::admin::AdminError::Refused { body, .. }) if body.contains("already in use") => Ok(()),
        Err(e) => Err(e).context("registering the demo gateway"),
    }
}

/// Unix seconds as an RFC 3339 UTC time.
fn rfc3339(secs: u64) -> String {
    jiff::Timestamp::from_second(secs as i64).map(|t| t.to_string()).unwrap_or_default()
}

/// A simulated five-minute reading of one wearer's smart shoes.
fn reading(wearer: usize, tick: u64) -> String {
    let start = now_ms() / 1000;
    let steps = 400 + (tick * 37 + wearer as u64 * 101) % 300;
    serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "55423-8", "display": "Number of steps in unspecified time Pedometer"}]},
        "subject": {"reference": format!("Patient/demo-wearer-{wearer}")},
        "effectivePeriod": {"start": rfc3339(start - 300), "end": rfc3339(start)},
        "valueQuantity": {"value": steps, "unit": "steps"},
        "component": [
            {"code": {"text": "Walking cadence"}, "valueQuantity": {"value": 95 + (tick % 20), "unit": "steps/min"}},
            {"code": {"text": "Gait speed"}, "valueQuantity": {"value": 1.1 + (wearer as f64) / 10.0, "unit": "m/s"}}
        ]
    })
    .to_string()
}

/// Feeds the consortium until the process stops, on a thread of its own (the client is
/// `cairn-client`, the one every gateway uses, and blocking). The thread is detached, so
/// that Ctrl-C or SIGTERM ends the process without waiting for it.
pub async fn run(layout: Layout) -> anyhow::Result<()> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("demo".into())
        .spawn(move || {
            let _ = done.send(feed(&layout));
        })
        .context("starting the demo thread")?;
    result.await.context("the demo thread ended")?
}

fn feed(layout: &Layout) -> anyhow::Result<()> {
    let genesis_path = layout.dir.join("genesis.toml");
    let genesis = Genesis::from_toml(&std::fs::read_to_string(&genesis_path)?)?;
    cairn_client::http::trust_ca_file(&layout.dir.join(super::dev::CA_FILE))?;
    let base = layout.http.first().cloned().context("no validator")?;
    println!("demo: waiting for the consortium to be ready ...");
    while !matches!(cairn_client::http::request("GET", &format!("{base}/readyz"), "text/plain", b""), Ok((200, _))) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let admin_text = std::fs::read_to_string(layout.dir.join("admins/org0/node.key"))?;
    let admin = Keypair::from_seed(&keyfile::parse(&admin_text)?);
    let key_path = layout.dir.join("demo/gateway.key");
    let key = load_or_create_key(&key_path)?;
    register(&base, &genesis, &admin, &key)?;
    println!("demo: smart-shoe gateway {} registered (key {})", key.public().key_id(), key_path.display());
    let receipts_path = layout.dir.join("demo/receipts.jsonl");
    let mut receipts_file = std::fs::OpenOptions::new().create(true).append(true).open(&receipts_path)?;
    println!(
        "demo: receipts go to {}; verify them yourself with: cairn verify-receipt --genesis {} {}",
        receipts_path.display(),
        genesis_path.display(),
        receipts_path.display()
    );
    let gateways: Vec<Gateway> = layout.http.iter().map(|url| Gateway::new(url, key.clone())).collect();
    for tick in 0u64.. {
        let Some(gateway) = gateways.get(tick as usize % gateways.len()) else { break };
        let node = &gateway.node;
        let body: Vec<String> = (0..20).map(|i| reading(i % 5, tick)).collect();
        match gateway.submit(body.join("\n").as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None) {
            Ok(stored) => {
                let custodians: Vec<String> = stored.custodians.iter().map(ToString::to_string).collect();
                println!("demo: {} readings stored by {node} at custodians {custodians:?}", stored.count);
                let rids: Vec<_> = stored.records.iter().map(|r| r.rid).collect();
                let (mut ok, mut pending, mut last) = (0, 0, None);
                for r in gateway.receipts(&rids, 10_000)? {
                    match r {
                        Some(r) => {
                            r.verify(&genesis)
                                .map_err(|e| anyhow::anyhow!("receipt of {} does not verify: {e}", r.rid))?;
                            use std::io::Write as _;
                            writeln!(receipts_file, "{}", serde_json::to_string(&r)?)?;
                            ok += 1;
                            last = Some(r);
                        }
                        None => pending += 1,
                    }
                }
                if let Some(r) = last {
                    println!(
                        "demo: {ok} receipts verified offline (e.g. record {}: leaf {} of batch {} by {}, block {} signed by {} of {} validators){}",
                        r.rid,
                        r.leaf_index,
                        r.batch.body.seq,
                        r.batch.body.node,
                        r.block.header.height,
                        r.block.certificate.signatures.len(),
                        genesis.membership.validators.len(),
                        if pending > 0 { format!("; {pending} still pending") } else { String::new() }
                    );
                }
            }
            Err(e) => println!("demo: {node}: {e}"),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_356_245), "2026-11-22T14:04:05Z");
    }
}
