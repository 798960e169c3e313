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
use cairn_proto::encoding::encode;
use cairn_proto::genesis::Genesis;
use cairn_proto::membership::Role;
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::request::RequestToSign;
use cairn_proto::signed::SignedBody as _;
use cairn_proto::transaction::{MembershipChange, MembershipChangeBody, Transaction};
use cairn_proto::{Keypair, SecretSeed, keyfile};

use super::dev::Layout;
use cairn_proto::time::now_ms;

/// The HTTP agent (`ureq`, ADR 020) trusting the dev consortium's CA (`ca.pem`) for the
/// nodes' HTTPS.
static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();

fn trust(ca: &Path) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = Vec::new();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).with_context(|| ca.display().to_string())? {
        let cert = cert.with_context(|| ca.display().to_string())?;
        roots.push(ureq::tls::Certificate::from_der(&cert).to_owned());
    }
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .tls_config(tls)
        .build()
        .new_agent();
    let _ = AGENT.set(agent);
    Ok(())
}

/// One request to `base` (on a blocking thread: `ureq` is synchronous); returns status
/// and body.
async fn exchange(
    base: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let agent = AGENT.get().cloned().context("the dev CA is not loaded")?;
    let url = format!("{}{target}", base.trim_end_matches('/'));
    let mut request = ureq::http::Request::builder().method(method).uri(&url);
    for (k, v) in headers {
        request = request.header(*k, v.as_str());
    }
    let (body, url_for_errors) = (body.to_vec(), url.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<(u16, Vec<u8>)> {
        let mut answer = if body.is_empty() { agent.run(request.body(())?) } else { agent.run(request.body(body)?) }
            .with_context(|| format!("talking to {url}"))?;
        let status = answer.status().as_u16();
        let bytes = answer.body_mut().with_config().limit(64 << 20).read_to_vec()?;
        Ok((status, bytes))
    })
    .await
    .with_context(|| format!("talking to {url_for_errors}"))?
}

/// A request signed by the demo gateway.
async fn signed(
    base: &str,
    key: &Keypair,
    method: &str,
    target: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    // What the request is bound to: this chain and this node, proven by the node's
    // validator key (ADR 015).
    #[derive(serde::Deserialize)]
    struct Identity {
        chain: cairn_proto::Hash32,
        node: cairn_proto::KeyId,
        public_key: cairn_proto::PublicKey,
        signature: cairn_proto::identity::Signature,
    }
    let (status, answer) =
        exchange(base, "GET", &format!("/v1/identity?nonce={}", hex::encode(nonce)), &[], b"").await?;
    anyhow::ensure!(status == 200, "{base}/v1/identity answered {status}");
    let to: Identity = serde_json::from_slice(&answer).context("the node's identity")?;
    let proof = cairn_proto::request::identity_statement(&to.chain, &to.node, &nonce);
    anyhow::ensure!(
        to.public_key.key_id() == to.node
            && to.public_key.verify(cairn_proto::hash::domain::SIG_IDENTITY, &proof, &to.signature).is_ok(),
        "{base} did not prove it is validator {}",
        to.node
    );
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let statement =
        RequestToSign::new(to.chain, to.node, method, path, query, body, key.public().key_id(), now_ms(), nonce);
    let signature = statement.sign(key)?;
    let mut headers: Vec<(&str, String)> = statement.headers(&signature).into_iter().collect();
    headers.push(("content-type", content_type.to_string()));
    // A person's key (the demo patient) is registered nowhere: the node learns it here.
    headers.push(("x-cairn-public-key", key.public().to_string()));
    exchange(base, method, target, &headers, body).await
}

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

async fn admin_nonce(base: &str, admin: &Keypair) -> anyhow::Result<u64> {
    let (status, body) = exchange(base, "GET", &format!("/v1/admins/{}", admin.public().key_id()), &[], b"").await?;
    anyhow::ensure!(status == 200, "admin lookup answered {status}");
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v.get("next_nonce").and_then(serde_json::Value::as_u64).context("no next_nonce")
}

/// Registers `member` with `role` unless it already is.
async fn register(base: &str, genesis: &Genesis, admin: &Keypair, member: &Keypair, role: Role) -> anyhow::Result<()> {
    let id = member.public().key_id();
    if genesis.membership.members.iter().any(|m| m.public_key.key_id() == id) {
        return Ok(());
    }
    let nonce = admin_nonce(base, admin).await?;
    let body = MembershipChangeBody {
        version: 1,
        chain: genesis.hash()?,
        admin: admin.public().key_id(),
        nonce,
        change: MembershipChange::Register { role, public_key: member.public() },
    };
    let tx = encode(&Transaction::Membership(body.sign(admin)?))?;
    let (status, answer) = exchange(base, "POST", "/v1/transactions", &[], &tx).await?;
    let text = String::from_utf8_lossy(&answer);
    if status != 202 {
        // A second run finds the key registered already.
        anyhow::ensure!(text.contains("already in use"), "registering a demo key: {status} {text}");
        return Ok(());
    }
    for _ in 0..300 {
        if admin_nonce(base, admin).await? > nonce {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the demo key's registration was not committed within 30 s")
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

/// Feeds the consortium until the process stops.
pub async fn run(layout: Layout) -> anyhow::Result<()> {
    let genesis_path = layout.dir.join("genesis.toml");
    let genesis = Genesis::from_toml(&std::fs::read_to_string(&genesis_path)?)?;
    let base = layout.http.first().cloned().context("no validator")?;
    trust(&layout.dir.join(super::dev::CA_FILE))?;
    println!("demo: waiting for the consortium to be ready ...");
    loop {
        if let Ok((200, _)) = exchange(&base, "GET", "/readyz", &[], b"").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let admin_text = std::fs::read_to_string(layout.dir.join("admins/org0/node.key"))?;
    let admin = Keypair::from_seed(&keyfile::parse(&admin_text)?);
    let key_path = layout.dir.join("demo/gateway.key");
    let gateway = load_or_create_key(&key_path)?;
    register(&base, &genesis, &admin, &gateway, Role::Gateway).await?;
    println!("demo: smart-shoe gateway {} registered (key {})", gateway.public().key_id(), key_path.display());
    let receipts_path = layout.dir.join("demo/receipts.jsonl");
    let mut receipts_file = std::fs::OpenOptions::new().create(true).append(true).open(&receipts_path)?;
    println!(
        "demo: receipts go to {}; verify them yourself with: cairn verify-receipt --genesis {} {}",
        receipts_path.display(),
        genesis_path.display(),
        receipts_path.display()
    );
    let mut tick = 0u64;
    loop {
        let node = layout.http.get(tick as usize % layout.http.len()).cloned().unwrap_or_else(|| base.clone());
        let body: Vec<String> = (0..20).map(|i| reading(i % 5, tick)).collect();
        let target = "/v1/readings?purpose=TREAT&retention_days=30";
        match signed(&node, &gateway, "POST", target, "application/x-ndjson", body.join("\n").as_bytes()).await {
            Ok((200, answer)) => {
                let v: serde_json::Value = serde_json::from_slice(&answer)?;
                let rids: Vec<serde_json::Value> = v
                    .get("records")
                    .and_then(|r| r.as_array())
                    .map(|r| r.iter().filter_map(|x| x.get("rid").cloned()).collect())
                    .unwrap_or_default();
                println!(
                    "demo: {} readings stored by {node} at custodians {}",
                    rids.len(),
                    v.get("custodians").unwrap_or(&serde_json::Value::Null)
                );
                let ask = serde_json::to_vec(&serde_json::json!({"rids": rids, "wait_ms": 10_000}))?;
                let (status, answer) =
                    signed(&node, &gateway, "POST", "/v1/receipts", "application/json", &ask).await?;
                anyhow::ensure!(status == 200, "receipts: {status} {}", String::from_utf8_lossy(&answer));
                let v: serde_json::Value = serde_json::from_slice(&answer)?;
                let list: Vec<Option<AnchorReceipt>> =
                    serde_json::from_value(v.get("receipts").cloned().unwrap_or_default())?;
                let (mut ok, mut pending) = (0, 0);
                let mut last = None;
                for r in list {
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
            Ok((status, answer)) => println!("demo: {node} answered {status}: {}", String::from_utf8_lossy(&answer)),
            Err(e) => println!("demo: {node}: {e:#}"),
        }
        if tick == 0
            && let Err(e) = consent_demo(&layout, &genesis, &gateway).await
        {
            println!("demo: the consent demo failed: {e:#}");
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Gives a consent-layer document signed by `signers` through `base`, the request signed
/// by the first signer; returns the status and body.
async fn give(
    base: &str,
    genesis: &Genesis,
    kind: cairn_proto::consent::DocumentKind,
    subject: &cairn_proto::consent::Subject,
    json: String,
    signers: &[&Keypair],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut doc = cairn_proto::consent::Document { kind, subject: subject.clone(), json, signatures: Vec::new() };
    for k in signers {
        doc.sign(&genesis.hash()?, k)?;
    }
    let body = format!(
        r#"{{"kind":{},"subject":{},"resource":{},"signatures":{}}}"#,
        serde_json::to_string(&doc.kind)?,
        serde_json::to_string(&doc.subject)?,
        doc.json,
        serde_json::to_string(&doc.signatures)?
    );
    let first = signers.first().context("a document has a signer")?;
    signed(base, first, "POST", "/v1/documents", "application/json", body.as_bytes()).await
}

/// Once per run: the hospital (organisation 1) reads wearer 0's readings with the
/// wearer's consent for TREAT, and is refused for HMARKT (not a public-service purpose).
async fn consent_demo(layout: &Layout, genesis: &Genesis, gateway: &Keypair) -> anyhow::Result<()> {
    use cairn_proto::consent::{DocumentKind, PersonRole, Subject, SubjectBinding};
    let base = layout.http.first().cloned().context("no validator")?;
    let other = layout.http.get(1).cloned().unwrap_or_else(|| base.clone());
    let admin1 = layout.dir.join("admins/org1/node.key");
    let Ok(text) = std::fs::read_to_string(&admin1) else {
        println!("demo: no organisation 1 in this consortium; the consent demo needs two organisations");
        return Ok(());
    };
    let hospital = load_or_create_key(&layout.dir.join("demo/hospital.key"))?;
    register(&base, genesis, &Keypair::from_seed(&keyfile::parse(&text)?), &hospital, Role::Accessor).await?;
    let patient = load_or_create_key(&layout.dir.join("demo/patient.key"))?;
    let subject = Subject { gateway: gateway.public().key_id(), reference: "Patient/demo-wearer-0".into() };
    let binding = SubjectBinding { key: patient.public(), role: PersonRole::Patient, issued_ms: now_ms() };
    let (status, answer) =
        give(&base, genesis, DocumentKind::SubjectBinding, &subject, serde_json::to_string(&binding)?, &[gateway])
            .await?;
    anyhow::ensure!(
        status == 201 || String::from_utf8_lossy(&answer).contains("already_bound"),
        "binding the wearer's key: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    let now = now_ms() / 1000;
    let consent = serde_json::json!({
        "resourceType": "Consent",
        "status": "active",
        "patient": {"reference": subject.reference},
        "provision": {
            "type": "permit",
            "period": {"start": rfc3339(now - 60), "end": rfc3339(now + 365 * 86_400)},
            "actor": [{
                "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                "reference": {"reference": "Organization/org1"}
            }],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]
        }
    });
    let (status, answer) =
        give(&base, genesis, DocumentKind::Consent, &subject, serde_json::to_string_pretty(&consent)?, &[&patient])
            .await?;
    anyhow::ensure!(status == 201, "the wearer's consent: {status} {}", String::from_utf8_lossy(&answer));
    let id = serde_json::from_slice::<serde_json::Value>(&answer)?
        .get("id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .context("the consent's id")?;
    println!("demo: wearer 0 consented (FHIR Consent {id}) to organisation org1 reading for TREAT");
    let read = |purpose: &'static str| {
        let (other, hospital, id) = (other.clone(), hospital.clone(), id.clone());
        async move {
            let target = format!("/v1/access/records?purpose={purpose}&basis={id}");
            signed(&other, &hospital, "GET", &target, "application/json", b"").await
        }
    };
    let (status, answer) = read("TREAT").await?;
    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    match v.get("records").and_then(|r| r.as_array()) {
        Some(records) if status == 200 => {
            println!("demo: the hospital read {} readings of wearer 0 at {other} for TREAT (consented)", records.len())
        }
        _ => println!("demo: the consented read answered {status}: {}", String::from_utf8_lossy(&answer)),
    }
    let (status, answer) = read("HMARKT").await?;
    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    println!(
        "demo: the hospital's read for HMARKT (marketing) was refused: {status} {}",
        v.get("code").and_then(|c| c.as_str()).unwrap_or("?")
    );
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
