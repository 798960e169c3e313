//! Retention (DESIGN.md §7): every record has a wall-clock retention period; when it
//! runs out, the first custodian of its manifest starts its erasure on its own (trigger
//! `RetentionExpired`), unless a legal hold keeps it.

use std::collections::BTreeMap;

use cairn_proto::KeyId;
use cairn_proto::erasure::{ErasureScope, ErasureTrigger};
use cairn_proto::record::RecordId;
use tracing::{debug, warn};

use super::MAX_RECORDS;
use super::accept::create;
use super::job::Job;
use crate::clock::now_ms;
use crate::records::read::{ReadAnswer, RecordView};
use crate::records::{Records, RecordsError};

/// Records read per vault command by the retention sweep.
const SWEEP_PAGE: usize = 1_000;

/// The clock retention is judged by: the system clock, or, for tests, the Unix
/// milliseconds written in the file named by `CAIRN_TEST_CLOCK_FILE`.
pub fn retention_clock() -> u64 {
    if let Ok(path) = std::env::var(TEST_CLOCK_ENV)
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(ms) = text.trim().parse()
    {
        return ms;
    }
    now_ms()
}

/// Environment variable naming a file that holds the retention clock (tests only).
pub const TEST_CLOCK_ENV: &str = "CAIRN_TEST_CLOCK_FILE";

/// Starts erasure of the records whose retention ran out: those this node sweeps for (it
/// is the first custodian of their manifest), not under legal hold, anchored, and not
/// already in an open job. One job per gateway.
pub async fn sweep_retention(records: &Records, clock_ms: u64) -> Result<Vec<Job>, RecordsError> {
    let er = &records.erasures;
    let busy: std::collections::HashSet<RecordId> =
        er.store.open_jobs()?.iter().flat_map(|j| j.records.iter().map(|r| r.anchor.rid)).collect();
    let mut by_gateway: BTreeMap<KeyId, Vec<RecordView>> = BTreeMap::new();
    let (mut held, mut collected) = (0usize, 0usize);
    // A page at a time, in order of end of retention: the vault opens only expired
    // records and serves readings between pages. At most MAX_RECORDS per sweep; the rest
    // waits for the next one.
    let mut cursor = None;
    loop {
        let (page, next) = records.vault.expired(clock_ms, cursor, SWEEP_PAGE).await?;
        for r in page {
            if r.manifest.custodians.first() != Some(&records.me) || busy.contains(&r.header.rid) {
                continue;
            }
            if er.store.held(&r.header.rid)? {
                held += 1;
                continue;
            }
            by_gateway.entry(r.header.gateway).or_default().push(RecordView::without_content(&r));
            collected += 1;
        }
        match next {
            Some(c) if collected < MAX_RECORDS => cursor = Some(c),
            _ => break,
        }
    }
    if held > 0 {
        debug!(held, "records past retention kept under legal hold");
    }
    records.counters.retention_sweeps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Consents, grants and agreements whose period ended: their expiry events on chain.
    records.commit_expiries(clock_ms).await?;
    // Access-log entries past the log's own retention lose their event (ADR 018).
    let expired = records.access.log.expire(clock_ms).await.map_err(RecordsError::from)?;
    if expired > 0 {
        debug!(expired, "access-log entries past retention");
    }
    let mut jobs = Vec::new();
    for (gateway, mut views) in by_gateway {
        views.truncate(MAX_RECORDS);
        let receipts = records.receipts_for(&views).await?;
        let found: Vec<ReadAnswer> = views
            .into_iter()
            .zip(receipts)
            .filter(|(_, receipt)| receipt.is_some())
            // Held records were left out above.
            .map(|(record, receipt)| ReadAnswer { record, receipt, held: false })
            .collect();
        if found.is_empty() {
            continue;
        }
        let scope = ErasureScope::Records(found.iter().map(|a| a.record.rid).collect());
        let now = now_ms();
        match create(records, records.me, gateway, scope, ErasureTrigger::RetentionExpired, now, found).await {
            Ok(job) => jobs.push(job),
            Err(e) => warn!("retention erasure not started: {}", e.for_log()),
        }
    }
    Ok(jobs)
}
