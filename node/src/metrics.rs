//! Node metrics, served in the Prometheus text format at `/metrics`: one set of atomic
//! counters and gauges shared by the chain, the network and the API; the record layer
//! keeps its own (`records::Counters`) and they are rendered together.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::consensus::{codec, signing};

/// Counters and gauges of one node.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Whether the consensus engine is running.
    pub healthy: AtomicBool,
    /// Height of the last decided block.
    pub height: AtomicU64,
    /// Current consensus round.
    pub round: AtomicU64,
    /// Connected peers on cairn's own protocol.
    pub peers: AtomicU64,
    /// Connected peers on the consensus network.
    pub consensus_peers: AtomicU64,
    /// Transactions waiting.
    pub mempool: AtomicU64,
    /// Milliseconds between the last two decided blocks.
    pub block_interval_ms: AtomicU64,
    /// Blocks decided since start.
    pub blocks: AtomicU64,
    /// Transactions committed since start.
    pub committed_txs: AtomicU64,
    /// Transactions accepted into the mempool.
    pub accepted_txs: AtomicU64,
    /// Transactions refused as invalid (bad signature, unknown signer, stale, malformed).
    pub rejected_txs: AtomicU64,
    /// Transactions refused as duplicates.
    pub duplicate_txs: AtomicU64,
    /// Proposed blocks found invalid.
    pub invalid_proposals: AtomicU64,
    /// Rounds in which this node, as proposer with nothing to commit, held its empty
    /// block back so that the round lapsed and no empty height was stored (ADR 019).
    pub idle_rounds: AtomicU64,
    /// Connections refused because the peer is not a genesis validator.
    pub refused_connections: AtomicU64,
    /// Readings acknowledged (stored at every custodian) by this node as home custodian.
    pub readings: AtomicU64,
    /// Requests answered 429 because the ingest queue was full.
    pub busy_refusals: AtomicU64,
}

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

impl Metrics {
    /// The Prometheus text exposition.
    /// `records` are the record layer's counters (`records::Counters`).
    pub fn render(&self, records: &crate::records::Counters) -> String {
        let mut s = String::new();
        let g = |a: &AtomicU64| a.load(Relaxed);
        line(&mut s, "cairn_height", "gauge", "Height of the last decided block.", g(&self.height));
        line(&mut s, "cairn_round", "gauge", "Current consensus round.", g(&self.round));
        line(&mut s, "cairn_peers", "gauge", "Connected peers on cairn's protocol.", g(&self.peers));
        line(&mut s, "cairn_consensus_peers", "gauge", "Connected consensus peers.", g(&self.consensus_peers));
        line(&mut s, "cairn_mempool_size", "gauge", "Transactions waiting for a block.", g(&self.mempool));
        let interval = g(&self.block_interval_ms) as f64 / 1000.0;
        let _ = writeln!(
            s,
            "# HELP cairn_block_time_seconds Time between the last two decided blocks.\n# TYPE cairn_block_time_seconds gauge\ncairn_block_time_seconds {interval}"
        );
        line(
            &mut s,
            "cairn_idle_rounds_total",
            "counter",
            "Rounds this node let lapse as proposer because nothing waited to be committed.",
            g(&self.idle_rounds),
        );
        line(&mut s, "cairn_readings_total", "counter", "Readings acknowledged as home custodian.", g(&self.readings));
        line(
            &mut s,
            "cairn_retention_sweeps_total",
            "counter",
            "Retention sweeps completed.",
            g(&records.retention_sweeps),
        );
        line(
            &mut s,
            "cairn_records_erased_total",
            "counter",
            "Records erased in this node's vault.",
            g(&records.records_erased),
        );
        line(
            &mut s,
            "cairn_erasure_certificates_total",
            "counter",
            "Erasure certificates assembled and verified as coordinator.",
            g(&records.erasure_certificates),
        );
        line(
            &mut s,
            "cairn_erasure_events_unlogged_total",
            "counter",
            "Erasures accepted whose event could not be written in the subject's access log.",
            g(&records.erasure_events_unlogged),
        );
        line(
            &mut s,
            "cairn_consent_documents_total",
            "counter",
            "Consent-layer documents (bindings, consents, grants, agreements, revocations) taken by this node.",
            g(&records.documents),
        );
        line(
            &mut s,
            "cairn_access_permitted_total",
            "counter",
            "Reads through a consent or grant permitted by this node.",
            g(&records.access_permitted),
        );
        line(
            &mut s,
            "cairn_access_refused_total",
            "counter",
            "Reads through a consent or grant refused by this node.",
            g(&records.access_refused),
        );
        line(
            &mut s,
            "cairn_break_glass_reads_total",
            "counter",
            "Reads under a break-glass declaration answered by this node (each logged, flagged and reviewed).",
            g(&records.break_glass_reads),
        );
        line(
            &mut s,
            "cairn_break_glass_reviews_open",
            "gauge",
            "Break-glass declarations taken by this node whose review is not closed.",
            g(&records.reviews_open),
        );
        line(
            &mut s,
            "cairn_break_glass_reviews_overdue",
            "gauge",
            "Open break-glass reviews past their due time (access.review_minutes).",
            g(&records.reviews_overdue),
        );
        line(
            &mut s,
            "cairn_busy_refusals_total",
            "counter",
            "Requests answered 429 (ingest queue full).",
            g(&self.busy_refusals),
        );
        line(&mut s, "cairn_blocks_total", "counter", "Blocks decided since start.", g(&self.blocks));
        line(
            &mut s,
            "cairn_committed_txs_total",
            "counter",
            "Transactions committed since start.",
            g(&self.committed_txs),
        );
        line(
            &mut s,
            "cairn_accepted_txs_total",
            "counter",
            "Transactions admitted to the mempool.",
            g(&self.accepted_txs),
        );
        line(&mut s, "cairn_rejected_txs_total", "counter", "Transactions refused as invalid.", g(&self.rejected_txs));
        line(
            &mut s,
            "cairn_duplicate_txs_total",
            "counter",
            "Transactions refused as duplicates.",
            g(&self.duplicate_txs),
        );
        line(
            &mut s,
            "cairn_invalid_proposals_total",
            "counter",
            "Proposed blocks found invalid.",
            g(&self.invalid_proposals),
        );
        line(
            &mut s,
            "cairn_bad_consensus_signatures_total",
            "counter",
            "Votes, proposals and validator proofs whose signature did not verify or whose signer is not a genesis validator.",
            signing::bad_signature_count(),
        );
        line(
            &mut s,
            "cairn_malformed_messages_total",
            "counter",
            "Consensus and sync messages that did not decode.",
            codec::malformed_count(),
        );
        line(
            &mut s,
            "cairn_refused_connections_total",
            "counter",
            "Connections refused because the peer is not a genesis validator.",
            g(&self.refused_connections),
        );
        s
    }
}
