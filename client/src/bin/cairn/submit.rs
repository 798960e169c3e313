//! `cairn submit`: readings from a file or standard input (JSON lines, a FHIR Bundle or
//! smart-shoe CSV), sent in batches by parallel workers, one line of record ids and
//! leaves per stored reading on the output.

use std::path::Path;

use anyhow::Context as _;
use cairn_client::gateway::{BodyFormat, Gateway, GatewayError};

use super::{InputFormat, with_retries};

/// Reads the input as Observation JSON texts.
pub fn load_readings(input: Option<&Path>, format: InputFormat) -> anyhow::Result<Vec<String>> {
    let (text, name) = match input {
        None => (std::io::read_to_string(std::io::stdin()).context("reading standard input")?, "-".to_string()),
        Some(p) if p == Path::new("-") => {
            (std::io::read_to_string(std::io::stdin()).context("reading standard input")?, "-".to_string())
        }
        Some(p) => {
            (std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?, p.display().to_string())
        }
    };
    let format = match format {
        InputFormat::Auto if name.ends_with(".csv") => InputFormat::Csv,
        InputFormat::Auto if name.ends_with(".json") => InputFormat::Bundle,
        InputFormat::Auto => InputFormat::Jsonl,
        f => f,
    };
    Ok(match format {
        InputFormat::Csv => cairn_client::csv::to_observations(&text).with_context(|| name.clone())?,
        InputFormat::Bundle => {
            #[derive(serde::Deserialize)]
            struct Entry {
                resource: Box<serde_json::value::RawValue>,
            }
            #[derive(serde::Deserialize)]
            struct Bundle {
                #[serde(default)]
                entry: Vec<Entry>,
            }
            let b: Bundle = serde_json::from_str(&text).with_context(|| format!("{name} is not a FHIR Bundle"))?;
            b.entry.into_iter().map(|e| e.resource.get().to_string()).collect()
        }
        _ => text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect(),
    })
}

/// How `cairn submit` sends.
pub struct SubmitOptions {
    /// Purpose-of-use code.
    pub purpose: String,
    /// Retention, days.
    pub retention_days: u32,
    /// Readings per request.
    pub batch: usize,
    /// Requests in flight.
    pub parallel: usize,
}

/// What a submission did.
pub struct Summary {
    stored: usize,
    /// Readings not stored.
    pub failed: usize,
    requests: usize,
    seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stored {} readings in {} requests in {:.1} s ({:.0} readings/s); {} failed",
            self.stored,
            self.requests,
            self.seconds,
            self.stored as f64 / self.seconds.max(1e-9),
            self.failed
        )
    }
}

pub fn submit(
    gateway: &Gateway,
    readings: &[String],
    o: &SubmitOptions,
    sink: &mut dyn std::io::Write,
) -> anyhow::Result<Summary> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    if o.batch == 0 || o.parallel == 0 {
        anyhow::bail!("--batch and --parallel must be at least 1");
    }
    let started = std::time::Instant::now();
    let mut run_id = [0u8; 8];
    getrandom::fill(&mut run_id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let run_id: String = run_id.iter().map(|b| format!("{b:02x}")).collect();
    let chunks: Vec<&[String]> = readings.chunks(o.batch).collect();
    let next = AtomicUsize::new(0);
    let stored = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<cairn_client::gateway::Submitted, GatewayError>)>();
    let mut results: Vec<Option<Result<cairn_client::gateway::Submitted, GatewayError>>> =
        (0..chunks.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        for _ in 0..o.parallel.min(chunks.len().max(1)) {
            let tx = tx.clone();
            let (chunks, next, stored, run_id) = (&chunks, &next, &stored, &run_id);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(chunk) = chunks.get(i) else { return };
                    let body = chunk.join("\n");
                    let key = format!("{run_id}-{i}");
                    let r = with_retries(|| {
                        gateway.submit(body.as_bytes(), BodyFormat::JsonLines, &o.purpose, o.retention_days, Some(&key))
                    });
                    if let Ok(s) = &r {
                        stored.fetch_add(s.count, Relaxed);
                    }
                    if tx.send((i, r)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut last = std::time::Instant::now();
        for (i, r) in rx {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
            if last.elapsed() > std::time::Duration::from_millis(250) {
                last = std::time::Instant::now();
                let done = stored.load(Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                eprint!("\r{done}/{} readings stored ({rate:.0}/s)", readings.len());
            }
        }
    });
    eprint!("\r");
    let mut summary = Summary { stored: 0, failed: 0, requests: chunks.len(), seconds: 0.0 };
    for (i, r) in results.into_iter().enumerate() {
        let base = i * o.batch;
        match r {
            Some(Ok(s)) => {
                for (j, rec) in s.records.iter().enumerate() {
                    writeln!(sink, "{}", serde_json::json!({"index": base + j, "rid": rec.rid, "leaf": rec.leaf}))?;
                }
                summary.stored += s.records.len();
            }
            Some(Err(e)) => {
                let n = chunks.get(i).map_or(0, |c| c.len());
                eprintln!("readings {base}..{}: {e}", base + n);
                if let GatewayError::Refused { body, .. } = &e
                    && let Some(items) = body.get("items").and_then(|v| v.as_array())
                {
                    for item in items.iter().take(20) {
                        eprintln!(
                            "  reading {}: {} {}",
                            base + item["index"].as_u64().unwrap_or(0) as usize,
                            item["field"],
                            item["message"]
                        );
                    }
                }
                summary.failed += n;
            }
            None => summary.failed += chunks.get(i).map_or(0, |c| c.len()),
        }
    }
    sink.flush()?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
