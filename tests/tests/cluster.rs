//! A 4-validator consortium as real processes: agreement, certificates that verify
//! offline, a crash and catch-up, intruders, and a tampered block store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::time::Duration;

use cairn_client::verify::verify_block;
use cairn_proto::encoding::encode;
use cairn_proto::{Keypair, SecretSeed};
use cairn_tests::cluster::{Cluster, batch};

const MINUTE: Duration = Duration::from_secs(60);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every node has the same block hash at every height up to `top`, every certificate
/// verifies offline, and heights are contiguous. Returns the number of committed txs.
fn assert_agreement(c: &Cluster, nodes: &[usize], top: u64) -> usize {
    let genesis = c.genesis();
    let mut txs = 0;
    for h in 1..=top {
        let blocks: Vec<_> = nodes.iter().map(|i| c.block(*i, h)).collect();
        let hashes: HashSet<_> = blocks.iter().map(|b| b.block.header.hash().unwrap()).collect();
        assert_eq!(hashes.len(), 1, "nodes disagree at height {h}");
        for b in &blocks {
            verify_block(&genesis, b).unwrap_or_else(|e| panic!("certificate of height {h} does not verify: {e}"));
        }
        txs += blocks[0].block.transactions.len();
    }
    txs
}

#[test]
fn four_processes_finalize_agree_and_certify() {
    let c = Cluster::start(4, 27000, 200);
    let keys: Vec<Keypair> = (0..4).map(|i| c.key(i)).collect();
    // Each node's batches go to a different node than its own: gossip must carry them.
    // Two waves, the second sent after the first is committed: at least two heights.
    for wave in [0..5, 5..10] {
        let committed = 4.0 * wave.end as f64;
        for seq in wave {
            for (k, key) in keys.iter().enumerate() {
                let (status, body) = c.submit((k + 1) % 4, &batch(key, seq));
                assert_eq!(status, 202, "{body}");
            }
        }
        c.wait_for(&format!("{committed} batches committed"), 2 * MINUTE, |c| {
            (0..4).all(|i| c.metric(i, "cairn_committed_txs_total").unwrap_or(0.0) >= committed)
        });
    }
    let top = (0..4).map(|i| c.height(i).unwrap()).min().unwrap();
    assert!(top >= 2, "two waves, two heights at least: {top}");
    let txs = assert_agreement(&c, &[0, 1, 2, 3], top);
    assert_eq!(txs, 40, "every batch committed exactly once");
    let cp = c.checkpoint(0);
    assert!(cp.header.log_size >= 40);

    // Each committed batch is proven in the certified log by the node's inclusion proof,
    // checked offline by the client library; a proof for another batch's position fails.
    let genesis_doc = c.genesis();
    // Node 2 may be a block behind node 0's checkpoint.
    c.wait_for("node 2 at the checkpoint's height", MINUTE, |c| c.height(2).is_some_and(|h| h >= cp.header.height));
    let mut commits = Vec::new();
    for h in 1..=cp.header.height {
        for tx in c.block(2, h).block.transactions {
            if let cairn_proto::transaction::Transaction::BatchCommit(s) = tx {
                commits.push(s.body);
            }
        }
    }
    assert_eq!(commits.len(), 40);
    for commit in &commits {
        let leaf = cairn_node::ledger::state::log_leaf(commit).unwrap();
        let url = format!("{}/v1/log/inclusion?leaf={}&size={}", c.urls[3], hex(&leaf), cp.header.log_size);
        let answer: serde_json::Value = cairn_client::http::get_json(&url).unwrap();
        let index = answer["index"].as_u64().unwrap();
        let proof: Vec<cairn_proto::Hash32> = serde_json::from_value(answer["proof"].clone()).unwrap();
        cairn_client::verify::verify_batch_in_log(&genesis_doc, &cp, commit, index, &proof).unwrap();
        let wrong = if index == 0 { 1 } else { index - 1 };
        assert!(cairn_client::verify::verify_batch_in_log(&genesis_doc, &cp, commit, wrong, &proof).is_err());
    }

    // The CLI fetches and verifies the checkpoint, and a block.
    let genesis = c.genesis_path();
    let out =
        cairn_tests::run_ok("cairn", &["checkpoint", "--node", &c.urls[1], "--genesis", genesis.to_str().unwrap()]);
    assert!(out.contains("ok: header of height"), "{out}");
    // An organisation admin registers a gateway key, then revokes it; a replay of the
    // registration is stale. The node applies changes in order.
    let admin = cairn_client::keys::load(&c.dir.path().join("dev/admins/org0/node.key")).unwrap();
    let gateway = Keypair::from_seed(&SecretSeed::from_bytes([5; 32])).public();
    let chain = genesis_doc.hash().unwrap();
    let change = |nonce, change| {
        use cairn_proto::signed::SignedBody as _;
        use cairn_proto::transaction::{MembershipChangeBody, Transaction};
        let body = MembershipChangeBody { version: 1, chain, admin: admin.public().key_id(), nonce, change };
        Transaction::Membership(body.sign(&admin).unwrap())
    };
    let register = change(
        0,
        cairn_proto::transaction::MembershipChange::Register {
            role: cairn_proto::membership::Role::Gateway,
            public_key: gateway,
        },
    );
    let revoke = change(1, cairn_proto::transaction::MembershipChange::Revoke { public_key: gateway });
    assert_eq!(c.submit(2, &register).0, 202);
    assert_eq!(c.submit(3, &revoke).0, 202);
    c.wait_for("both membership changes committed", MINUTE, |c| {
        c.metric(0, "cairn_committed_txs_total").unwrap_or(0.0) >= 42.0
    });
    let (status, body) = c.submit(1, &register);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("stale"), "{body}");

    // A later checkpoint's log extends the saved one (consistency proof from the node).
    let saved = c.dir.path().join("checkpoint.json");
    cairn_tests::run_ok(
        "cairn",
        &["checkpoint", "--node", &c.urls[0], "--genesis", genesis.to_str().unwrap(), "--out", saved.to_str().unwrap()],
    );
    for (k, key) in keys.iter().enumerate() {
        let (status, body) = c.submit(k, &batch(key, 10));
        assert_eq!(status, 202, "{body}");
    }
    c.wait_for("4 more batches committed everywhere", 2 * MINUTE, |c| {
        (0..4).all(|i| c.metric(i, "cairn_committed_txs_total").unwrap_or(0.0) >= 46.0)
    });
    let top = (0..4).map(|i| c.height(i).unwrap()).min().unwrap();
    assert_eq!(assert_agreement(&c, &[0, 1, 2, 3], top), 46, "40 + 2 membership changes + 4 batches");
    let out = cairn_tests::run_ok(
        "cairn",
        &[
            "checkpoint",
            "--node",
            &c.urls[1],
            "--genesis",
            genesis.to_str().unwrap(),
            "--since",
            saved.to_str().unwrap(),
        ],
    );
    assert!(out.contains("is a prefix of the log"), "{out}");

    let file = c.dir.path().join("block1.json");
    std::fs::write(&file, serde_json::to_string(&c.block(2, 1)).unwrap()).unwrap();
    cairn_tests::run_ok("cairn", &["verify-block", "--genesis", genesis.to_str().unwrap(), file.to_str().unwrap()]);
}

#[test]
fn a_killed_node_catches_up_and_no_block_is_lost() {
    let mut c = Cluster::start(4, 27300, 200);
    let keys: Vec<Keypair> = (0..4).map(|i| c.key(i)).collect();
    c.wait_for("first block everywhere", MINUTE, |c| (0..4).all(|i| c.height(i).unwrap_or(0) >= 1));
    let mut seq = 0u64;
    let mut submit_round = |c: &Cluster, to: &[usize]| {
        for key in &keys[..3] {
            let (status, body) = c.submit(to[seq as usize % to.len()], &batch(key, seq));
            assert_eq!(status, 202, "{body}");
        }
        seq += 1;
    };
    for _ in 0..5 {
        submit_round(&c, &[0, 1, 2, 3]);
    }
    c.kill(3);
    let at_kill = (0..3).map(|i| c.height(i).unwrap()).max().unwrap();
    // The three others keep finalizing while transactions flow.
    for _ in 0..10 {
        submit_round(&c, &[0, 1, 2]);
    }
    c.wait_for("three nodes finalize 5 more blocks", 2 * MINUTE, |c| {
        (0..3).all(|i| c.height(i).unwrap_or(0) >= at_kill + 5)
    });
    c.start_node(3);
    c.wait_for("the restarted node to answer", MINUTE, |c| c.height(3).is_some());
    for _ in 0..5 {
        submit_round(&c, &[0, 1, 2, 3]);
    }
    c.wait_for("the restarted node catches up", 2 * MINUTE, |c| {
        let lead = (0..3).filter_map(|i| c.height(i)).min().unwrap_or(0);
        c.height(3).unwrap_or(0) >= lead && lead > at_kill + 5
    });
    c.wait_for("all 60 batches committed on every node", 2 * MINUTE, |c| (0..4).all(|i| c.log_size(i) >= 60));
    let top = (0..4).map(|i| c.height(i).unwrap()).min().unwrap();
    let txs = assert_agreement(&c, &[0, 1, 2, 3], top);
    assert_eq!(txs, 60, "every submitted batch committed once, none lost");
}

#[test]
fn intruders_and_bad_transactions_are_refused_and_counted() {
    let c = Cluster::start(4, 27600, 200);
    c.wait_for("first block", MINUTE, |c| c.height(0).unwrap_or(0) >= 1);
    let outsider = Keypair::from_seed(&SecretSeed::from_bytes([7; 32]));
    let insider = c.key(1);

    // A batch signed by a key that is not in genesis.
    let (status, body) = c.submit(0, &batch(&outsider, 0));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_transaction") && body.contains("not a validator"), "{body}");
    // A validator's batch with someone else's signature.
    let mut forged = batch(&insider, 0);
    if let cairn_proto::transaction::Transaction::BatchCommit(s) = &mut forged {
        s.signature = match batch(&outsider, 0) {
            cairn_proto::transaction::Transaction::BatchCommit(o) => o.signature,
            _ => unreachable!(),
        };
    }
    let (status, body) = c.submit(0, &forged);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad signature"), "{body}");
    // Bytes that are no transaction, and a truncated one.
    let (status, body) = c.post_tx_bytes(0, b"\xff\x00garbage");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed_transaction"), "{body}");
    let good = encode(&batch(&insider, 0)).unwrap();
    let (status, _) = c.post_tx_bytes(0, &good[..good.len() - 1]);
    assert_eq!(status, 400);
    assert!(c.metric(0, "cairn_rejected_txs_total").unwrap() >= 4.0);

    // A peer whose key is not in genesis cannot hold a connection to cairn's protocol.
    let before = c.metric(0, "cairn_refused_connections_total").unwrap();
    outsider_dials("/ip4/127.0.0.1/tcp/27700".parse().unwrap());
    c.wait_for("the outsider's connection to be refused and counted", MINUTE, |c| {
        c.metric(0, "cairn_refused_connections_total").unwrap_or(0.0) > before
    });

    // The node keeps going: the good transaction is still accepted and committed.
    let h = c.height(0).unwrap();
    let (status, body) = c.submit(0, &batch(&insider, 0));
    assert_eq!(status, 202, "{body}");
    // The same transaction again, while it waits, is a duplicate.
    let (status, body) = c.submit(0, &batch(&insider, 0));
    assert!(status == 409 || body.contains("stale"), "{status} {body}");
    c.wait_for("the good batch committed", MINUTE, |c| {
        c.metric(0, "cairn_committed_txs_total").unwrap_or(0.0) >= 1.0 && c.height(0).unwrap_or(0) > h
    });
    // Once committed, it is stale everywhere.
    c.wait_for("the batch committed on node 2", MINUTE, |c| {
        c.metric(2, "cairn_committed_txs_total").unwrap_or(0.0) >= 1.0
    });
    let (status, body) = c.submit(2, &batch(&insider, 0));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("stale"), "{body}");
}

/// Dials `addr` with a fresh identity and returns once the connection is closed or
/// refused (or after 20 s).
fn outsider_dials(addr: libp2p::Multiaddr) {
    use libp2p::futures::StreamExt as _;
    use libp2p::swarm::SwarmEvent;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.dial(addr).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionClosed { .. } | SwarmEvent::OutgoingConnectionError { .. } => return,
                    _ => {}
                }
            }
        })
        .await;
    });
}

/// Starts validator `i` expecting it to refuse; returns its error output.
fn start_fails(c: &Cluster, i: usize) -> String {
    let mut child = std::process::Command::new(cairn_tests::binary("cairn-node"))
        .args(["run", "--config", c.configs[i].to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > MINUTE {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("a tampered node started and kept running: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "a tampered node started");
    eprintln!("[{:>6.1}s] validator {i} refused to start", start.elapsed().as_secs_f64());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_tampered_block_store_refuses_to_start_naming_the_height() {
    let mut c = Cluster::start(4, 27900, 200);
    c.wait_for("height 3 on nodes 1 and 2", MINUTE, |c| c.height(1).unwrap_or(0) >= 3 && c.height(2).unwrap_or(0) >= 3);
    c.kill(1);
    c.kill(2);
    let t = std::time::Instant::now();

    // One byte of the stored block at height 2 changed through the database itself (as
    // someone with write access to the store would): replay refuses it and names height 2.
    use redb::ReadableDatabase as _;
    let blocks = redb::TableDefinition::<u64, &[u8]>::new("blocks");
    {
        let db = redb::Database::create(c.data_dir(1).join("blocks.redb")).unwrap();
        let mut value = {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(blocks).unwrap();
            table.get(2).unwrap().unwrap().value().to_vec()
        };
        let middle = value.len() / 2;
        value[middle] ^= 0x01;
        let txn = db.begin_write().unwrap();
        txn.open_table(blocks).unwrap().insert(2, value.as_slice()).unwrap();
        txn.commit().unwrap();
    }
    eprintln!("[{:>6.1}s] one byte of block 2 changed in validator 1's store", t.elapsed().as_secs_f64());
    let err = start_fails(&c, 1);
    assert!(err.contains("tampered with at height 2"), "the error names the height: {err}");

    // One byte of the file changed behind the database's back: redb's page checksums
    // catch it when it repairs the store after the crash, and the node refuses to start.
    let header = encode(&c.block(0, 2).block.header).unwrap();
    let path = c.data_dir(2).join("blocks.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let hits: Vec<usize> =
        bytes.windows(header.len()).enumerate().filter(|(_, w)| *w == header.as_slice()).map(|(i, _)| i).collect();
    assert!(!hits.is_empty(), "block 2 is in the file");
    // (Pages are copied on write, so older copies may remain; change every copy so that
    // the live one is changed too.)
    for at in hits {
        bytes[at + 50] ^= 0x01;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = start_fails(&c, 2);
    assert!(err.contains("block store") && err.contains("corrupt"), "a clear error: {err}");
}

/// An idle consortium stores no empty heights until `idle_block_ms` has passed (proposers
/// hold back empty blocks and rounds lapse), and the first reading after the quiet spell
/// is anchored at once: its proposer was waiting for it (ADR 019).
#[test]
fn an_idle_chain_stores_nothing_and_wakes_for_the_first_reading() {
    use cairn_client::gateway::{BodyFormat, Gateway};
    let mut c = Cluster::layout(4, 29600, 200);
    c.edit_configs(&format!("idle_block_ms = {}", Cluster::IDLE_BLOCK_MS), "idle_block_ms = 600000");
    c.start_all();
    c.wait_ready();
    let (_, key) = c.register_gateway("idle");
    let lapsed = |c: &Cluster| (0..4).map(|i| c.metric(i, "cairn_idle_rounds_total").unwrap_or(0.0)).sum::<f64>();
    c.wait_for("four lapsed rounds", MINUTE, |c| lapsed(c) >= 4.0);
    let quiet: Vec<u64> = (0..4).map(|i| c.height(i).unwrap()).collect();
    let before = lapsed(&c);
    c.wait_for("four more lapsed rounds", MINUTE, |c| lapsed(c) >= before + 4.0);
    let now: Vec<u64> = (0..4).map(|i| c.height(i).unwrap()).collect();
    assert_eq!(now, quiet, "an idle chain stored heights");
    let gateway = Gateway::new(&c.urls[1], key);
    let sent = std::time::Instant::now();
    let body = cairn_tests::fixtures::observation("Patient/idle", 1, "quiet");
    let answer = gateway.submit(body.as_bytes(), BodyFormat::JsonLines, "TREAT", 30, None).unwrap();
    let receipt = gateway.receipt(&answer.records[0].rid, 30_000).unwrap().expect("a receipt");
    receipt.verify(&c.genesis()).unwrap();
    // Far below the 10-minute heartbeat: a waiting proposer took the anchor at once.
    let waited = sent.elapsed();
    assert!(waited < Duration::from_secs(15), "the first reading after a quiet spell waited {waited:?}");
    let top = quiet.iter().max().unwrap();
    c.wait_for("the reading's block everywhere", MINUTE, |c| (0..4).all(|i| c.height(i).unwrap_or(0) > *top));
}
