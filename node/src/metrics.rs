//! Node metrics, served at `/metrics` in the OpenMetrics text format (ADR 020), encoded
//! by `prometheus-client`: the chain's and the network's atomic counters and gauges, the
//! record layer's (`records::Counters`), the HTTP API's per-route request counts, latency
//! histograms and refusals by error code, and the size of every store on disk.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::consensus::{codec, signing};

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
    /// The HTTP API's requests.
    pub http: HttpMetrics,
    /// The node's data directory, whose stores `/metrics` sizes.
    pub data_dir: OnceLock<PathBuf>,
}

/// Labels of an answered request: the route template (`/v1/records/{rid}`, or
/// `unmatched`), the method and the status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Answered {
    /// Route template.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status.
    pub status: u16,
}

/// Labels of a route: template and method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    /// Route template.
    pub route: String,
    /// HTTP method.
    pub method: String,
}

/// Labels of a refusal: status and the error body's `code`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Refusal {
    /// HTTP status (4xx or 5xx).
    pub status: u16,
    /// The `code` of the JSON error body (`unknown` when the answer had none).
    pub code: String,
}

/// One label naming a store, a queue or a batch kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Named {
    /// The name.
    pub name: String,
}

type LatencyFamily = Family<Route, Histogram, fn() -> Histogram>;

/// Request latency buckets: 1 ms to ≈ 33 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The HTTP API's request metrics, kept by [`track`].
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<Answered, Counter>,
    seconds: LatencyFamily,
    refusals: Family<Refusal, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            refusals: Family::default(),
        }
    }
}

/// The error code of a refusal, left in the answer's extensions by `ApiError` for
/// [`track`].
#[derive(Debug, Clone, Copy)]
pub struct RefusalCode(pub &'static str);

/// Route layer: copies the matched route template into the answer's extensions, where
/// [`track`] (outside the router, so it also sees refusals made before routing) finds it.
pub async fn tag_route(request: Request, next: Next) -> Response {
    let path = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(path) = path {
        response.extensions_mut().insert(path);
    }
    response
}

/// Outermost layer: counts every answer by route, method and status, observes its
/// latency (until the answer's head is ready; long-polls included), and counts refusals
/// by their error code.
pub async fn track(State(metrics): State<std::sync::Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // A stranger may send any method token: only the standard ones become labels.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m,
        _ => "other",
    }
    .to_owned();
    let response = next.run(request).await;
    let route = response.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let status = response.status().as_u16();
    let http = &metrics.http;
    http.seconds
        .get_or_create(&Route { route: route.clone(), method: method.clone() })
        .observe(started.elapsed().as_secs_f64());
    http.requests.get_or_create(&Answered { route, method, status }).inc();
    if status >= 400 {
        let code = response.extensions().get::<RefusalCode>().map_or("unknown", |c| c.0).to_owned();
        http.refusals.get_or_create(&Refusal { status, code }).inc();
    }
    response
}

/// Gauges of the record layer's queues, refreshed when `/metrics` is read.
#[derive(Debug, Default, Clone)]
pub struct Queues {
    /// Leaves waiting for a batch, by batch kind.
    pub anchor_pending: Vec<(String, u64)>,
    /// Batches submitted and not yet committed, by batch kind.
    pub anchor_inflight: Vec<(String, u64)>,
    /// Erasure jobs not yet complete.
    pub erasure_jobs_open: u64,
    /// Erasure jobs not complete past their deadline.
    pub erasure_jobs_overdue: u64,
}

/// Bytes on disk of each store in `dir`: every `*.redb` file by its stem, and the vault
/// (sled) directory as `vault`.
fn store_sizes(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "redb") {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            out.push((name, entry.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    let vault = dir.join(crate::run::VAULT_DIR);
    if vault.is_dir() {
        out.push(("vault".to_string(), tree_bytes(&vault)));
    }
    out.sort();
    out
}

fn tree_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Registers a gauge family holding `values` by name.
fn named_gauges(registry: &mut Registry, name: &str, help: &str, values: &[(String, u64)]) {
    let family = Family::<Named, Gauge>::default();
    for (n, v) in values {
        family.get_or_create(&Named { name: n.clone() }).set(i64::try_from(*v).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

impl Metrics {
    /// The OpenMetrics text exposition. `records` are the record layer's counters
    /// (`records::Counters`), `queues` its queue depths as read now.
    pub fn render(&self, records: &crate::records::Counters, queues: &Queues) -> String {
        let mut r = Registry::default();
        let g = |a: &AtomicU64| a.load(Relaxed);
        let gauge = |r: &mut Registry, name: &str, help: &str, v: u64| {
            r.register(name, help, ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)));
        };
        let counter = |r: &mut Registry, name: &str, help: &str, v: u64| r.register(name, help, ConstCounter::new(v));
        gauge(&mut r, "cairn_height", "Height of the last decided block.", g(&self.height));
        gauge(&mut r, "cairn_round", "Current consensus round.", g(&self.round));
        gauge(&mut r, "cairn_peers", "Connected peers on cairn's protocol.", g(&self.peers));
        gauge(&mut r, "cairn_consensus_peers", "Connected consensus peers.", g(&self.consensus_peers));
        gauge(&mut r, "cairn_mempool_size", "Transactions waiting for a block.", g(&self.mempool));
        r.register(
            "cairn_block_time_seconds",
            "Time between the last two decided blocks.",
            ConstGauge::new(g(&self.block_interval_ms) as f64 / 1000.0),
        );
        gauge(&mut r, "cairn_up", "1 while the consensus engine runs.", u64::from(self.healthy.load(Relaxed)));
        counter(
            &mut r,
            "cairn_idle_rounds",
            "Rounds this node let lapse as proposer because nothing waited to be committed.",
            g(&self.idle_rounds),
        );
        counter(&mut r, "cairn_readings", "Readings acknowledged as home custodian.", g(&self.readings));
        counter(&mut r, "cairn_retention_sweeps", "Retention sweeps completed.", g(&records.retention_sweeps));
        counter(&mut r, "cairn_records_erased", "Records erased in this node's vault.", g(&records.records_erased));
        counter(
            &mut r,
            "cairn_erasure_certificates",
            "Erasure certificates assembled and verified as coordinator.",
            g(&records.erasure_certificates),
        );
        counter(
            &mut r,
            "cairn_erasure_events_unlogged",
            "Erasures accepted whose event could not be written in the subject's access log.",
            g(&records.erasure_events_unlogged),
        );
        counter(
            &mut r,
            "cairn_consent_documents",
            "Consent-layer documents (bindings, consents, grants, agreements, revocations) taken by this node.",
            g(&records.documents),
        );
        counter(
            &mut r,
            "cairn_access_permitted",
            "Reads through a consent or grant permitted by this node.",
            g(&records.access_permitted),
        );
        counter(
            &mut r,
            "cairn_access_refused",
            "Reads through a consent or grant refused by this node.",
            g(&records.access_refused),
        );
        counter(
            &mut r,
            "cairn_break_glass_reads",
            "Reads under a break-glass declaration answered by this node (each logged, flagged and reviewed).",
            g(&records.break_glass_reads),
        );
        gauge(
            &mut r,
            "cairn_break_glass_reviews_open",
            "Break-glass declarations taken by this node whose review is not closed.",
            g(&records.reviews_open),
        );
        gauge(
            &mut r,
            "cairn_break_glass_reviews_overdue",
            "Open break-glass reviews past their due time (access.review_minutes).",
            g(&records.reviews_overdue),
        );
        counter(&mut r, "cairn_busy_refusals", "Requests answered 429 (ingest queue full).", g(&self.busy_refusals));
        counter(&mut r, "cairn_blocks", "Blocks decided since start.", g(&self.blocks));
        counter(&mut r, "cairn_committed_txs", "Transactions committed since start.", g(&self.committed_txs));
        counter(&mut r, "cairn_accepted_txs", "Transactions admitted to the mempool.", g(&self.accepted_txs));
        counter(&mut r, "cairn_rejected_txs", "Transactions refused as invalid.", g(&self.rejected_txs));
        counter(&mut r, "cairn_duplicate_txs", "Transactions refused as duplicates.", g(&self.duplicate_txs));
        counter(&mut r, "cairn_invalid_proposals", "Proposed blocks found invalid.", g(&self.invalid_proposals));
        counter(
            &mut r,
            "cairn_bad_consensus_signatures",
            "Votes, proposals and validator proofs whose signature did not verify or whose signer is not a genesis validator.",
            signing::bad_signature_count(),
        );
        counter(
            &mut r,
            "cairn_malformed_messages",
            "Consensus and sync messages that did not decode.",
            codec::malformed_count(),
        );
        counter(
            &mut r,
            "cairn_refused_connections",
            "Connections refused because the peer is not a genesis validator.",
            g(&self.refused_connections),
        );
        named_gauges(
            &mut r,
            "cairn_anchor_pending_leaves",
            "Leaves waiting for a batch, by batch kind.",
            &queues.anchor_pending,
        );
        named_gauges(
            &mut r,
            "cairn_anchor_inflight_batches",
            "Batch commitments submitted and not yet committed, by batch kind.",
            &queues.anchor_inflight,
        );
        gauge(&mut r, "cairn_erasure_jobs_open", "Erasure requests not yet certified.", queues.erasure_jobs_open);
        gauge(
            &mut r,
            "cairn_erasure_jobs_overdue",
            "Erasure requests not yet certified past their deadline.",
            queues.erasure_jobs_overdue,
        );
        if let Some(dir) = self.data_dir.get() {
            named_gauges(
                &mut r,
                "cairn_store_bytes",
                "Bytes on disk of each store (redb files, the sled vault).",
                &store_sizes(dir),
            );
        }
        r.register(
            "cairn_http_requests",
            "HTTP requests answered, by route, method and status.",
            self.http.requests.clone(),
        );
        r.register(
            "cairn_http_request_duration_seconds",
            "Time to answer an HTTP request (to the answer's head), by route and method.",
            self.http.seconds.clone(),
        );
        r.register(
            "cairn_http_refusals",
            "HTTP requests refused, by status and error code.",
            self.http.refusals.clone(),
        );
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &r);
        s
    }
}
