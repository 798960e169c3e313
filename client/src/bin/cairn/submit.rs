//! `cairn submit`: readings from a file or standard input (JSON lines, a FHIR Bundle or
//! smart-shoe CSV), sent in batches by parallel workers, one line of record ids and
//! leaves per stored reading on the output.

use std::path::Path;

use anyhow::Context as _;
use cairn_client::gateway::{BodyFormat, Gateway, GatewayError};

use super::{InputFormat, with_retries};

/// Readings as loaded from a file, ready to be sent in batches.
pub struct Loaded {
    /// How batches are sent.
    pub format: BodyFormat,
    /// One Observation per item: a JSON line, or a Bundle entry (`{"fullUrl","resource"}`)
    /// whose resource keeps the bytes it had in the file.
    pub items: Vec<String>,
    /// Per item, the other Bundle entries it refers to (indexes into `context`).
    refers_to: Vec<Vec<usize>>,
    /// Bundle entries that are not Observations but that an Observation refers to (its
    /// subject, device, …): sent along with every batch that needs them.
    context: Vec<String>,
}

impl Loaded {
    /// The body of the batch holding items `range`, and how many referenced entries come
    /// before its Observations (the node's item indexes count them).
    fn body(&self, range: std::ops::Range<usize>) -> (String, usize) {
        let items = self.items.get(range.clone()).unwrap_or_default();
        match self.format {
            BodyFormat::JsonLines => (items.join("\n"), 0),
            BodyFormat::Bundle => {
                let mut needed: Vec<usize> =
                    self.refers_to.get(range).unwrap_or_default().iter().flatten().copied().collect();
                needed.sort_unstable();
                needed.dedup();
                let entries: Vec<&str> = needed
                    .iter()
                    .filter_map(|&i| self.context.get(i))
                    .map(String::as_str)
                    .chain(items.iter().map(String::as_str))
                    .collect();
                let body = format!(
                    "{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[{}]}}",
                    entries.join(",")
                );
                (body, needed.len())
            }
        }
    }
}

/// Every `reference` string in a JSON value.
fn references(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(r) if k == "reference" => out.push(r.clone()),
                    _ => references(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// Splits a FHIR Bundle into its Observation entries, each kept as the bytes it has in
/// the file (indentation included), and the entries they refer to.
fn split_bundle(text: &str, name: &str) -> anyhow::Result<Loaded> {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry<'a> {
        full_url: Option<String>,
        #[serde(borrow)]
        resource: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Bundle<'a> {
        resource_type: String,
        #[serde(default, borrow)]
        entry: Vec<Entry<'a>>,
    }
    let b: Bundle<'_> = serde_json::from_str(text).with_context(|| format!("{name} is not a FHIR Bundle"))?;
    anyhow::ensure!(b.resource_type == "Bundle", "{name}: resourceType is {:?}, not \"Bundle\"", b.resource_type);
    let entry_json = |e: &Entry<'_>, raw: &RawValue| -> anyhow::Result<String> {
        Ok(match &e.full_url {
            Some(url) => format!("{{\"fullUrl\":{},\"resource\":{}}}", serde_json::to_string(url)?, raw.get()),
            None => format!("{{\"resource\":{}}}", raw.get()),
        })
    };
    let mut loaded = Loaded { format: BodyFormat::Bundle, items: vec![], refers_to: vec![], context: vec![] };
    let mut by_url: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut others = Vec::new();
    for (i, e) in b.entry.iter().enumerate() {
        let raw = e.resource.ok_or_else(|| anyhow::anyhow!("{name}: entry {i} has no resource"))?;
        let value: serde_json::Value = serde_json::from_str(raw.get()).with_context(|| format!("{name}: entry {i}"))?;
        if value.get("resourceType").and_then(|t| t.as_str()) == Some("Observation") {
            let mut refs = Vec::new();
            references(&value, &mut refs);
            loaded.items.push(entry_json(e, raw)?);
            loaded.refers_to.push(Vec::new());
            others.push(refs);
        } else if let Some(url) = &e.full_url {
            by_url.insert(url.clone(), loaded.context.len());
            loaded.context.push(entry_json(e, raw)?);
        }
    }
    for (slot, refs) in loaded.refers_to.iter_mut().zip(&others) {
        slot.extend(refs.iter().filter_map(|r| by_url.get(r)).copied());
    }
    Ok(loaded)
}

/// Reads the input: JSON lines, a FHIR Bundle (pretty-printed or not) or smart-shoe CSV.
/// A UTF-8 byte-order mark at the start is skipped.
pub fn load_readings(input: Option<&Path>, format: InputFormat) -> anyhow::Result<Loaded> {
    let (text, name) = match input {
        None => (std::io::read_to_string(std::io::stdin()).context("reading standard input")?, "-".to_string()),
        Some(p) if p == Path::new("-") => {
            (std::io::read_to_string(std::io::stdin()).context("reading standard input")?, "-".to_string())
        }
        Some(p) => {
            (std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?, p.display().to_string())
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let format = match format {
        InputFormat::Auto if name.ends_with(".csv") => InputFormat::Csv,
        InputFormat::Auto if name.ends_with(".json") => InputFormat::Bundle,
        // Standard input or another name: a whole-document Bundle, else JSON lines.
        InputFormat::Auto
            if serde_json::from_str::<serde_json::Value>(text)
                .is_ok_and(|v| v.get("resourceType").and_then(|t| t.as_str()) == Some("Bundle")) =>
        {
            InputFormat::Bundle
        }
        InputFormat::Auto => InputFormat::Jsonl,
        f => f,
    };
    let lines = |items: Vec<String>| Loaded {
        format: BodyFormat::JsonLines,
        refers_to: vec![Vec::new(); items.len()],
        items,
        context: vec![],
    };
    Ok(match format {
        InputFormat::Csv => lines(cairn_client::csv::to_observations(text).with_context(|| name.clone())?),
        InputFormat::Bundle => split_bundle(text, &name)?,
        _ => lines(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()),
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
    readings: &Loaded,
    o: &SubmitOptions,
    sink: &mut dyn std::io::Write,
) -> anyhow::Result<Summary> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    if o.batch == 0 || o.parallel == 0 {
        return Err(super::Usage("--batch and --parallel must be at least 1".into()).into());
    }
    let started = std::time::Instant::now();
    let mut run_id = [0u8; 8];
    getrandom::fill(&mut run_id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let run_id: String = run_id.iter().map(|b| format!("{b:02x}")).collect();
    let chunks: Vec<std::ops::Range<usize>> =
        (0..readings.items.len()).step_by(o.batch).map(|s| s..(s + o.batch).min(readings.items.len())).collect();
    let next = AtomicUsize::new(0);
    let stored = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<cairn_client::gateway::Submitted, GatewayError>)>();
    let mut results: Vec<Option<Result<cairn_client::gateway::Submitted, GatewayError>>> =
        (0..chunks.len()).map(|_| None).collect();
    let bar = crate::progress::bar(readings.items.len() as u64, "readings stored");
    std::thread::scope(|scope| {
        for _ in 0..o.parallel.min(chunks.len().max(1)) {
            let tx = tx.clone();
            let (chunks, next, stored, run_id) = (&chunks, &next, &stored, &run_id);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(chunk) = chunks.get(i) else { return };
                    let (body, _) = readings.body(chunk.clone());
                    let key = format!("{run_id}-{i}");
                    let r = with_retries(|| {
                        gateway.submit(body.as_bytes(), readings.format, &o.purpose, o.retention_days, Some(&key))
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
        for (i, r) in rx {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
            bar.set_position(stored.load(Relaxed) as u64);
        }
    });
    bar.finish_and_clear();
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
                let n = chunks.get(i).map_or(0, ExactSizeIterator::len);
                eprintln!("readings {base}..{}: {e}", base + n);
                if let GatewayError::Refused { body, .. } = &e
                    && let Some(items) = body.get("items").and_then(|v| v.as_array())
                {
                    let (_, referenced) = readings.body(chunks.get(i).cloned().unwrap_or_default());
                    for item in items.iter().take(20) {
                        let index = item["index"].as_u64().unwrap_or(0) as usize;
                        let which = match index.checked_sub(referenced) {
                            Some(j) => format!("reading {}", base + j),
                            None => format!("an entry reading {base}.. refer to"),
                        };
                        eprintln!("  {which}: {} {}", item["field"], item["message"]);
                    }
                }
                summary.failed += n;
            }
            None => summary.failed += chunks.get(i).map_or(0, ExactSizeIterator::len),
        }
    }
    sink.flush()?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
