//! Kill-loop soak (issue 18, `docs/reliability.md`): SIGKILLs of random validators and
//! network partitions while gateways submit readings and erasures run; then every
//! promise is checked.
//!
//! `cargo bench -p cairn-tests --bench soak -- [KILLS] [GATEWAYS] [PARTITION_EVERY]`
//! (defaults 1000, 3, 20). Needs root: the four validators run in network namespaces
//! (`cairn_tests::netns`) so that partitions can cut them apart.
//!
//! While it runs:
//! - the chaos loop kills a random validator with SIGKILL every 0.3–1.2 s and restarts
//!   it 0–0.5 s later; every `PARTITION_EVERY` kills it heals the network or cuts it
//!   (one validator from the other three, or two from two) — a partition outlives several
//!   kills;
//! - `GATEWAYS` gateways each submit two readings per request to a random node, retrying
//!   with the same idempotency key at other nodes; a reading is *acknowledged* when a
//!   node answered 200;
//! - an eraser asks, every 2 s, to erase 1–3 acknowledged readings at a random node.
//!
//! At the end the network is healed, every node runs, and the soak counts as a loss:
//! an acknowledged reading that no node serves byte for byte, that has no receipt
//! verifying offline against the genesis, or that one of its custodians says (signed,
//! live challenge) it does not hold; an accepted erasure without a certificate that
//! verifies, or whose record a custodian still holds or a node still serves
//! (half-erased); a height at which two nodes hold different blocks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::gateway::{BodyFormat, Erase, Gateway, GatewayError};
use cairn_client::http;
use cairn_proto::erasure::SignedChallengeAnswer;
use cairn_proto::genesis::Genesis;
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, KeyId, Keypair};
use cairn_tests::bench;
use cairn_tests::cluster::Cluster;
use cairn_tests::fixtures::{observation, random_fill, random_hex};
use cairn_tests::netns::Network;

/// A uniformly drawn number below `n`.
fn below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    random_fill(&mut b);
    u64::from_le_bytes(b) % n.max(1)
}

fn pause(lo_ms: u64, hi_ms: u64) {
    std::thread::sleep(Duration::from_millis(lo_ms + below(hi_ms - lo_ms + 1)));
}

/// `call`'s answer, trying again (up to 20 times, 0.5 s apart) while it fails.
fn retry<T>(mut call: impl FnMut() -> Result<T, GatewayError>) -> T {
    for _ in 0..19 {
        match call() {
            Ok(t) => return t,
            Err(e) => eprintln!("retrying after: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    call().unwrap()
}

/// An acknowledged reading.
#[derive(Clone)]
struct Acked {
    rid: RecordId,
    leaf: Hash32,
    line: String,
    custodians: Vec<KeyId>,
    gateway: usize,
}

/// An erasure request a node accepted.
struct Accepted {
    id: String,
    gateway: usize,
    node: usize,
    rids: Vec<RecordId>,
}

#[derive(Default)]
struct Shared {
    acked: Mutex<Vec<Acked>>,
    erasures: Mutex<Vec<Accepted>>,
    /// Records whose erasure request had no clear answer (the node may or may not have
    /// stored it): they must end whole or erased everywhere, not half.
    uncertain: Mutex<HashSet<RecordId>>,
    picked: Mutex<HashSet<RecordId>>,
    unacknowledged: AtomicU64,
    refusals: Mutex<BTreeMap<String, u64>>,
    stop: AtomicBool,
}

impl Shared {
    fn refused(&self, e: &GatewayError) {
        let what = match e {
            GatewayError::Refused { status, code, .. } => format!("{status} {code}"),
            GatewayError::Http(_) => "transport".into(),
            other => format!("{other}"),
        };
        *self.refusals.lock().unwrap().entry(what).or_default() += 1;
    }
}

/// One gateway: two readings per request to a random node, the same idempotency key
/// at up to eight attempts.
fn gateway_loop(g: usize, gateways: Vec<Gateway>, shared: Arc<Shared>) {
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        let lines: Vec<String> = (0..2)
            .map(|k| observation(&format!("Patient/soak-{g}-{}", below(50)), seq * 2 + k, &random_hex(8)))
            .collect();
        let body = lines.join("\n") + "\n";
        let key = random_hex(16);
        let mut acked = None;
        for _ in 0..8 {
            let node = below(gateways.len() as u64) as usize;
            match gateways[node].submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, Some(&key)) {
                Ok(s) => {
                    acked = Some(s);
                    break;
                }
                Err(e) => {
                    shared.refused(&e);
                    if !e.retryable() {
                        break;
                    }
                    pause(50, 250);
                }
            }
        }
        match acked {
            Some(s) => {
                let mut list = shared.acked.lock().unwrap();
                for (r, line) in s.records.iter().zip(lines) {
                    list.push(Acked { rid: r.rid, leaf: r.leaf, line, custodians: s.custodians.clone(), gateway: g });
                }
            }
            None => {
                shared.unacknowledged.fetch_add(lines.len() as u64, Ordering::Relaxed);
            }
        }
        pause(50, 150);
    }
}

/// Every 2 s, asks to erase 1–3 acknowledged readings of one gateway.
fn eraser_loop(gateways: Vec<Vec<Gateway>>, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(2));
        let g = below(gateways.len() as u64) as usize;
        let rids: Vec<RecordId> = {
            let acked = shared.acked.lock().unwrap();
            let mut picked = shared.picked.lock().unwrap();
            let mine: Vec<&Acked> = acked.iter().filter(|a| a.gateway == g && !picked.contains(&a.rid)).collect();
            let n = (1 + below(3) as usize).min(mine.len());
            let chosen: Vec<RecordId> = (0..n).map(|_| mine[below(mine.len() as u64) as usize].rid).collect();
            let chosen: Vec<RecordId> = chosen.into_iter().collect::<HashSet<_>>().into_iter().collect();
            picked.extend(chosen.iter().copied());
            chosen
        };
        if rids.is_empty() {
            continue;
        }
        let mut outcome = None;
        let mut unclear = false;
        for _ in 0..8 {
            let node = below(gateways[g].len() as u64) as usize;
            match gateways[g][node].erase(&Erase::Records(rids.clone()), None) {
                Ok(id) => {
                    outcome = Some((id, node));
                    break;
                }
                Err(GatewayError::Refused { status: 409, code, body, .. }) if code == "already_erasing" => {
                    // An earlier attempt was stored after all.
                    let id = body["request"].as_str().unwrap_or_default().to_string();
                    outcome = Some((id, node));
                    break;
                }
                Err(e) => {
                    shared.refused(&e);
                    unclear |= matches!(e, GatewayError::Http(_));
                    if !e.retryable() {
                        break;
                    }
                    pause(100, 400);
                }
            }
        }
        match outcome {
            Some((id, node)) => shared.erasures.lock().unwrap().push(Accepted { id, gateway: g, node, rids }),
            None if unclear => shared.uncertain.lock().unwrap().extend(rids),
            None => {}
        }
    }
}

/// Whether the custodian at `url` holds the record, from its signed live answer; `None`
/// when it gives none that verifies.
fn holds(genesis: &Genesis, url: &str, rid: &RecordId, leaf: &Hash32) -> Option<bool> {
    let mut nonce = [0u8; 16];
    random_fill(&mut nonce);
    let body = serde_json::json!({"rid": rid, "leaf": leaf, "nonce": hex::encode(nonce)}).to_string();
    let (status, bytes) = http::post(&format!("{url}/v1/challenges"), "application/json", body.as_bytes()).ok()?;
    if status != 200 {
        return None;
    }
    let answer: SignedChallengeAnswer = serde_json::from_slice(&bytes).ok()?;
    let key = genesis.membership.validator(&answer.body.custodian)?;
    answer.verify(&key.public_key).ok()?;
    (answer.body.nonce == nonce && answer.body.rid == *rid).then_some(answer.body.holds)
}

/// Cuts the network one of three ways: one validator off, or two from two.
fn cut(net: &Network) -> String {
    match below(3) {
        0 | 1 => {
            let v = below(4) as usize;
            net.partition(&[v]);
            format!("v{v} | rest")
        }
        _ => {
            let a = below(4) as usize;
            let b = (a + 1 + below(3) as usize) % 4;
            net.partition(&[a, b]);
            format!("v{a} v{b} | rest")
        }
    }
}

fn main() {
    let args = bench::args();
    let kills: u64 = bench::arg(&args, 0, 1000);
    let n_gateways: usize = bench::arg(&args, 1, 3);
    let partition_every: u64 = bench::arg(&args, 2, 20);
    eprintln!("soak: {kills} kills, {n_gateways} gateways, the network cut or healed every {partition_every} kills");

    let net = Network::create("cairnsoak", 78, 4);
    let mut c = Cluster::layout_in(&net, 200);
    c.start_all();
    c.wait_ready();
    let genesis = c.genesis();
    let keys: Vec<Keypair> = (0..n_gateways).map(|g| c.register_gateway(&format!("gw{g}")).1).collect();
    let urls = c.urls.clone();
    let clients = |key: &Keypair| urls.iter().map(|u| Gateway::new(u, key.clone())).collect::<Vec<_>>();
    let shared = Arc::new(Shared::default());
    let mut workers = Vec::new();
    for (g, key) in keys.iter().enumerate() {
        let (gws, shared) = (clients(key), shared.clone());
        workers.push(std::thread::spawn(move || gateway_loop(g, gws, shared)));
    }
    let erasing: Vec<Vec<Gateway>> = keys.iter().map(clients).collect();
    let s = shared.clone();
    workers.push(std::thread::spawn(move || eraser_loop(erasing, s)));

    let start = Instant::now();
    let (mut partitions, mut cut_now) = (Vec::new(), false);
    for k in 1..=kills {
        pause(300, 1200);
        let victim = below(4) as usize;
        c.kill(victim);
        pause(0, 500);
        c.start_node(victim);
        if k % partition_every == 0 {
            if cut_now {
                net.heal();
            } else {
                partitions.push(cut(&net));
            }
            cut_now = !cut_now;
        }
        if k % 50 == 0 {
            let acked = shared.acked.lock().unwrap().len();
            let erasures = shared.erasures.lock().unwrap().len();
            eprintln!(
                "[{:>6.0}s] {k}/{kills} kills, {} partitions, {acked} readings acknowledged, {erasures} erasures accepted",
                start.elapsed().as_secs_f64(),
                partitions.len()
            );
        }
    }
    net.heal();
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let chaos = start.elapsed();
    eprintln!("chaos over after {:.0} s; checking", chaos.as_secs_f64());
    c.wait_for("every node to answer again", Duration::from_secs(120), |c| (0..4).all(|i| c.height(i).is_some()));
    c.wait_ready();

    let acked = shared.acked.lock().unwrap().clone();
    let erasures = std::mem::take(&mut *shared.erasures.lock().unwrap());
    let uncertain = shared.uncertain.lock().unwrap().clone();
    let erased: HashSet<RecordId> = erasures.iter().flat_map(|e| e.rids.iter().copied()).collect();
    let url_of = |id: &KeyId| c.urls[c.index_of(id)].clone();
    let mut losses: Vec<String> = Vec::new();

    // Every accepted erasure ends with certificates that verify, and no custodian holds
    // its records (a certificate exists only once every custodian erased).
    let mut certificates = 0;
    for (k, e) in erasures.iter().enumerate() {
        if k % 50 == 0 {
            eprintln!("checking erasures: {k} of {}", erasures.len());
        }
        let gws = clients(&keys[e.gateway]);
        let gw = &gws[e.node];
        let deadline = Instant::now() + Duration::from_secs(300);
        let certs = loop {
            match gw.certificates(&e.id) {
                Ok(Some(certs)) => break Some(certs),
                _ if Instant::now() > deadline => break None,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let Some(certs) = certs else {
            losses.push(format!("erasure {} has no certificate after 5 minutes", e.id));
            continue;
        };
        for cert in &certs {
            certificates += 1;
            if let Err(why) = cert.verify(&genesis) {
                losses.push(format!("erasure {}: certificate does not verify: {why}", e.id));
            }
            if let Err(why) = cairn_client::live::challenge(&genesis, cert, &c.urls) {
                losses.push(format!("half-erased {}: {why}", cert.record.rid));
            }
        }
        for rid in &e.rids {
            for (node, gw) in gws.iter().enumerate() {
                match gw.record_bytes(rid, "TREAT") {
                    Err(GatewayError::Refused { status: 404 | 410, .. }) => {}
                    other => {
                        losses.push(format!("half-erased {rid}: node {node} answered {:?}", other.map(|b| b.len())))
                    }
                }
            }
        }
    }

    // Every other acknowledged reading: a verifying receipt, served byte for byte, held
    // by each of its custodians. Readings whose erasure had no clear answer must be
    // whole or gone everywhere.
    let kept: Vec<&Acked> = acked.iter().filter(|a| !erased.contains(&a.rid)).collect();
    let (mut verified, mut read, mut held, mut unclear_gone) = (0u64, 0u64, 0u64, 0u64);
    for (g, key) in keys.iter().enumerate() {
        let gws = clients(key);
        let mine: Vec<&&Acked> = kept.iter().filter(|a| a.gateway == g).collect();
        for (k, chunk) in mine.chunks(100).enumerate() {
            if k % 20 == 0 {
                eprintln!("checking gateway {g}'s readings: {} of {}", k * 100, mine.len());
            }
            let rids: Vec<RecordId> = chunk.iter().map(|a| a.rid).collect();
            let receipts = retry(|| gws[below(4) as usize].receipts(&rids, 30_000));
            for (a, r) in chunk.iter().zip(receipts) {
                let whole = uncertain.contains(&a.rid).then(|| gws[0].record_bytes(&a.rid, "TREAT").is_ok());
                if whole == Some(false) {
                    // Erased after all: it must be gone at every custodian.
                    unclear_gone += 1;
                    for id in &a.custodians {
                        if holds(&genesis, &url_of(id), &a.rid, &a.leaf) != Some(false) {
                            losses.push(format!("half-erased {} (erasure answer lost): {id} holds it", a.rid));
                        }
                    }
                    continue;
                }
                match r.map(|r| cairn_client::verify::verify_receipt(&genesis, &r).map(|_| r.rid == a.rid)) {
                    Some(Ok(true)) => verified += 1,
                    other => losses.push(format!("{}: receipt {other:?}", a.rid)),
                }
                match gws[below(4) as usize].record_bytes(&a.rid, "TREAT") {
                    Ok(b) if b.windows(a.line.len()).any(|w| w == a.line.as_bytes()) => read += 1,
                    other => losses.push(format!("{}: read {:?}", a.rid, other.map(|b| b.len()))),
                }
                for id in &a.custodians {
                    match holds(&genesis, &url_of(id), &a.rid, &a.leaf) {
                        Some(true) => held += 1,
                        other => losses.push(format!("{}: custodian {id} does not say it holds it: {other:?}", a.rid)),
                    }
                }
            }
        }
    }

    // The chain: the same block at every height on every node.
    let mut heights = 0;
    c.wait_for("every node at the same height", Duration::from_secs(120), |c| {
        let h: Vec<Option<u64>> = (0..4).map(|i| c.height(i)).collect();
        h.iter().all(|x| x.is_some() && *x == h[0])
    });
    let top = c.height(0).unwrap();
    eprintln!("comparing blocks at {top} heights on 4 nodes");
    for h in 1..=top {
        let blocks: Vec<Option<Hash32>> = (0..4)
            .map(|i| {
                http::get_json::<cairn_proto::consensus::CertifiedBlock>(&format!("{}/v1/blocks/{h}", c.urls[i]))
                    .ok()
                    .map(|b| cairn_proto::hash::blake3(&cairn_proto::encoding::encode(&b.block).unwrap()))
            })
            .collect();
        if blocks.iter().any(|b| *b != blocks[0]) {
            losses.push(format!("height {h}: nodes disagree {blocks:?}"));
        }
        heights += u64::from(blocks[0].is_some());
    }

    let refusals = shared.refusals.lock().unwrap().clone();
    println!("| figure | value |\n|---|---|");
    println!("| chaos phase | {:.0} s |", chaos.as_secs_f64());
    println!("| SIGKILLs of validators (each restarted) | {kills} |");
    println!("| partitions (one off, or two from two) | {} |", partitions.len());
    println!("| readings acknowledged (200) | {} |", acked.len());
    println!(
        "| readings not acknowledged (gave up after 8 attempts) | {} |",
        shared.unacknowledged.load(Ordering::Relaxed)
    );
    println!(
        "| erasure requests accepted / records / certificates | {} / {} / {certificates} |",
        erasures.len(),
        erased.len()
    );
    println!("| erasures with an unclear answer that took effect | {unclear_gone} of {} records |", uncertain.len());
    println!(
        "| kept readings: receipts verified / read byte for byte / custodian copies held | {verified} / {read} / {held} |"
    );
    println!("| heights compared on 4 nodes | {heights} (top {top}) |");
    println!("| losses | {} |", losses.len());
    eprintln!("refusals and transport errors seen by the clients: {refusals:?}");
    for l in losses.iter().take(50) {
        eprintln!("LOSS: {l}");
    }
    assert!(losses.is_empty(), "{} losses", losses.len());
}
