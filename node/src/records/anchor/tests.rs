//! When batches are built: aimed at the next proposal while heights follow one another,
//! on the interval tick while none is expected (ADR 011, "When a batch is built").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use cairn_proto::ledger::BatchKind;
use cairn_proto::transaction::Transaction;

use super::{Aim, BUILD_LEAD};
use crate::records::sim::{Sim, gateway};

#[test]
fn the_tick_builds_only_while_no_proposal_is_expected() {
    let now = Instant::now();
    let mut aim = Aim::default();
    assert!(aim.tick_builds(now), "before any height has started");
    assert_eq!(aim.due, None);

    let next = now + Duration::from_millis(200);
    aim.expect(Some(next));
    assert_eq!(aim.due, Some(tokio::time::Instant::from_std(next - BUILD_LEAD)));
    assert!(!aim.tick_builds(now), "a build is aimed at the next proposal");
    assert!(!aim.tick_builds(next), "the next height may be starting late by a little");
    assert!(aim.tick_builds(next + BUILD_LEAD), "no height started since: an idle chain");

    // A proposal expected sooner than the lead: build at once.
    let soon = now + BUILD_LEAD / 2;
    aim.expect(Some(soon));
    assert!(aim.due.is_some_and(|due| due <= tokio::time::Instant::from_std(now)), "due already");
}

/// Batch commitments of `kind` from node 0 decided so far.
fn commits_of_node0(sim: &Sim, kind: BatchKind) -> usize {
    let me = sim.id(0);
    (1..=crate::records::ports::LedgerView::height(&*sim.ledger))
        .filter_map(|h| crate::records::ports::LedgerView::block(&*sim.ledger, h).unwrap())
        .flat_map(|b| b.transactions)
        .filter(|tx| matches!(tx, Transaction::BatchCommit(c) if c.body.node == me && c.body.kind == kind))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_heights_follow_one_another_leaves_are_batched_once_just_before_the_next_proposal() {
    let sim = Sim::start(4, 2).await;
    let g = gateway().public().key_id();
    // A height has started; the next one is expected in 3 s. The batchers' tick (5 ms
    // in the simulation) would have committed these readings within milliseconds.
    let next = Instant::now() + Duration::from_secs(3);
    sim.ledger.announce_proposal(next);
    let first = sim.ingest(0, &gateway(), "Patient/aim-1", 3).await.unwrap();
    let second = sim.ingest(0, &gateway(), "Patient/aim-2", 2).await.unwrap();
    assert!(Instant::now() < next - BUILD_LEAD, "the readings were stored before the build");
    let rids: Vec<_> = first.iter().chain(&second).map(|r| r.rid).collect();
    sim.until("every reading anchored", async || {
        for rid in &rids {
            if sim.nodes[0].read_here(*rid, g).await.unwrap().receipt.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(Instant::now() >= next - BUILD_LEAD, "anchored before the build aimed at the next proposal");
    assert_eq!(commits_of_node0(&sim, BatchKind::Anchors), 1, "one batch for the height, not one per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_expected_proposal_is_past_the_tick_batches_at_once() {
    let sim = Sim::start(4, 2).await;
    let g = gateway().public().key_id();
    // The last height started long ago and no other has: an idle chain, whose proposer
    // proposes as soon as a commitment arrives (ADR 019). Nothing is aimed at, so only
    // the tick can batch these readings.
    sim.ledger.announce_proposal(Instant::now() - Duration::from_secs(5));
    let stored = sim.ingest(0, &gateway(), "Patient/idle", 1).await.unwrap();
    let rid = stored[0].rid;
    sim.until("anchored by the tick", async || sim.nodes[0].read_here(rid, g).await.unwrap().receipt.is_some()).await;
    // And a second reading later still is batched by the tick too, not held back.
    let stored = sim.ingest(0, &gateway(), "Patient/idle", 1).await.unwrap();
    let rid = stored[0].rid;
    sim.until("anchored by the tick", async || sim.nodes[0].read_here(rid, g).await.unwrap().receipt.is_some()).await;
    assert_eq!(commits_of_node0(&sim, BatchKind::Anchors), 2);
}
