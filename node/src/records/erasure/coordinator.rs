//! The coordinator: the loop around the pure bookkeeping of [`Job`]. Each round it reads
//! the open jobs, sends every order [`Job::due`] names (to this node's own custodian part
//! directly, to connected peers over `/cairn/req/1`), takes the answers in with
//! [`Job::absorb`], keeps only certificates that verify, and stores what changed. Rounds
//! run on every decided block, on a new job, and every [`ROUND`] while jobs are open;
//! the retention sweep runs every `retention_sweep`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;
use tracing::{info, warn};

use super::custodian::erase_here;
use super::job::{Due, EraseAnswer, Job, Pacing, ROUND};
use super::retention::{TEST_CLOCK_ENV, retention_clock, sweep_retention};
use crate::records::ports::AskError;
use crate::records::wire::{Request, Response};
use crate::records::{Records, RecordsError};

/// Drives every open job until its certificates exist, and sweeps for expired records.
/// Returns only on a fatal failure (a store).
pub async fn run_coordinator(records: Arc<Records>) -> Result<(), RecordsError> {
    let mut decided = records.ledger.decided();
    if std::env::var_os(TEST_CLOCK_ENV).is_some() {
        warn!("{TEST_CLOCK_ENV} is set: retention is judged by a test clock");
    }
    let sweep_every = records.settings.retention_sweep;
    let mut next_sweep = Instant::now();
    let mut pacing = Pacing::default();
    loop {
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + sweep_every;
            match sweep_retention(&records, retention_clock()).await {
                Ok(jobs) => {
                    for job in jobs {
                        info!(id = %job.id_hex(), records = job.records.len(), "retention expired: erasure started");
                    }
                }
                // Tried again at the next sweep; a fatal vault failure stops the node anyway.
                Err(e) => warn!("retention sweep failed: {}", e.for_log()),
            }
        }
        let open = round(&records, &mut pacing).await?;
        // A job created during the round left a permit in `wake`: the next round sees it.
        if open {
            tokio::select! {
                _ = records.erasures.wake.notified() => {}
                _ = decided.changed() => {}
                _ = tokio::time::sleep(ROUND) => {}
            }
        } else {
            tokio::select! {
                _ = records.erasures.wake.notified() => {}
                _ = tokio::time::sleep_until(next_sweep) => {}
            }
        }
    }
}

/// One round over every open job; returns whether any job is still open.
pub async fn round(records: &Records, pacing: &mut Pacing) -> Result<bool, RecordsError> {
    let jobs = records.erasures.store.open_jobs()?;
    pacing.retain(|id| jobs.iter().any(|j| j.id == *id));
    let mut open = false;
    for mut job in jobs {
        let changed = advance(records, &mut job, pacing).await;
        open |= !job.complete();
        if changed {
            records.erasures.store.put_job(&job)?;
            if job.complete() {
                let n = job.records.len();
                records.counters.erasure_certificates.fetch_add(n as u64, Relaxed);
                info!(id = %job.id_hex(), records = n, "erasure certified");
            }
        }
    }
    Ok(open)
}

/// Sends one message of orders; `None` if the custodian is not connected (not asked).
async fn send(records: &Records, due: &Due) -> Option<Vec<EraseAnswer>> {
    let n = due.orders.len();
    if due.custodian == records.me {
        return Some(erase_here(records, due.orders.clone()).await);
    }
    if !records.peers.connected().contains(&due.custodian) {
        return None;
    }
    let asked = records.ask(due.custodian, Request::Erase(due.orders.clone())).await;
    let refused = |why: String| vec![EraseAnswer::Refused(why); n];
    Some(match asked {
        Ok(Response::Erased(a)) if a.len() == n => a,
        Ok(_) => refused("unreachable: answered with something else than one answer per order".into()),
        Err(AskError::Refused(e)) => refused(format!("refused: {e}")),
        Err(e @ AskError::NotDelivered(_)) => refused(format!("unreachable: {e}")),
    })
}

/// One round of a job: sends what is due, absorbs the answers, drops a certificate that
/// does not verify. Returns whether the job changed.
async fn advance(records: &Records, job: &mut Job, pacing: &mut Pacing) -> bool {
    let due = job.due(pacing, Instant::now());
    let asks = due.iter().map(|d| async move { (d, send(records, d).await) });
    let answered = futures::future::join_all(asks).await;
    let mut changed = false;
    for (due, answers) in answered {
        pacing.note((job.id, due.custodian), answers.as_deref(), Instant::now());
        let answers =
            answers.unwrap_or_else(|| vec![EraseAnswer::Refused("unreachable: not connected".into()); due.slots.len()]);
        changed |= job.absorb(due, answers);
    }
    for e in job.drop_unverifiable(records.ledger.genesis()) {
        warn!(id = %job.id_hex(), "an assembled erasure certificate does not verify ({e}); asking again");
    }
    changed
}
