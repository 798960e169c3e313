//! Smart-shoe readings in CSV, converted to FHIR R4 Observations.
//!
//! Columns (header line required, in this order):
//! `subject,start,end,steps,cadence_spm,speed_mps` — `subject` is the gateway's local
//! reference (e.g. `Patient/123`), `start`/`end` RFC 3339 times, `steps` a whole number,
//! the last two optional (empty) decimals. Each row becomes one Observation coded LOINC
//! 55423-8 (number of steps in unspecified time, pedometer) — or 41950-7 (number of steps
//! in 24 hours) when `start`..`end` is exactly one day — with an `effectivePeriod`, the
//! step count as `valueQuantity`, and cadence (steps/min) and gait speed (m/s) as
//! components coded in cairn's own code system (`urn:cairn:gait`) until the consortium
//! settles on LOINC codes for them.

use serde_json::{Value, json};

/// A row that cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CsvError {
    /// Line number, from 1.
    pub line: usize,
    /// Why.
    pub message: String,
}

/// The header line the converter expects.
pub const HEADER: &str = "subject,start,end,steps,cadence_spm,speed_mps";

fn day_long(start: &str, end: &str) -> bool {
    // Same time of day on consecutive dates, e.g. 2026-11-21T00:00:00Z..2026-11-22T00:00:00Z.
    let (Some((sd, st)), Some((ed, et))) = (start.split_once('T'), end.split_once('T')) else { return false };
    let date = |d: &str| -> Option<(i32, u32, u32)> {
        let mut it = d.split('-');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (date(sd), date(ed)) {
        (Some((y1, m1, d1)), Some((y2, m2, d2))) => st == et && y1 == y2 && m1 == m2 && d2 == d1 + 1,
        _ => false,
    }
}

fn time(value: &str, line: usize, column: &str) -> Result<String, CsvError> {
    let ok =
        value.len() >= 20 && value.as_bytes().get(10) == Some(&b'T') && (value.ends_with('Z') || value.contains('+'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(CsvError { line, message: format!("{column}: {value:?} is not an RFC 3339 time") })
    }
}

fn component(code: &str, display: &str, value: f64, unit: &str, ucum: &str) -> Value {
    json!({
        "code": {"coding": [{"system": "urn:cairn:gait", "code": code, "display": display}], "text": display},
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": ucum}
    })
}

/// Converts CSV text to one Observation (JSON text) per row.
pub fn to_observations(text: &str) -> Result<Vec<String>, CsvError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, h)) if h.trim() == HEADER => {}
        Some((i, h)) => return Err(CsvError { line: i + 1, message: format!("header {h:?}; expected {HEADER:?}") }),
        None => return Ok(Vec::new()),
    }
    let mut out = Vec::new();
    for (i, row) in lines {
        let line = i + 1;
        let cols: Vec<&str> = row.split(',').map(str::trim).collect();
        let [subject, start, end, steps, cadence, speed] = cols.as_slice() else {
            return Err(CsvError { line, message: format!("{} columns; expected 6", cols.len()) });
        };
        if subject.is_empty() {
            return Err(CsvError { line, message: "subject is empty".into() });
        }
        let (start, end) = (time(start, line, "start")?, time(end, line, "end")?);
        let steps: u64 =
            steps.parse().map_err(|_| CsvError { line, message: format!("steps: {steps:?} is not a whole number") })?;
        let (code, display) = if day_long(&start, &end) {
            ("41950-7", "Number of steps in 24 hour Measured")
        } else {
            ("55423-8", "Number of steps in unspecified time Pedometer")
        };
        let mut obs = json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "activity"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": subject},
            "effectivePeriod": {"start": start, "end": end},
            "valueQuantity": {"value": steps, "unit": "steps", "system": "http://unitsofmeasure.org", "code": "{steps}"}
        });
        let mut components = Vec::new();
        for (v, name, code, display, unit, ucum) in [
            (cadence, "cadence_spm", "cadence", "Walking cadence", "steps/min", "{steps}/min"),
            (speed, "speed_mps", "gait-speed", "Gait speed", "m/s", "m/s"),
        ] {
            if !v.is_empty() {
                let value: f64 = v
                    .parse()
                    .ok()
                    .filter(|x: &f64| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| CsvError { line, message: format!("{name}: {v:?} is not a non-negative number") })?;
                components.push(component(code, display, value, unit, ucum));
            }
        }
        if !components.is_empty()
            && let Some(map) = obs.as_object_mut()
        {
            map.insert("component".into(), Value::Array(components));
        }
        out.push(obs.to_string());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_coded_observations() {
        let text = format!(
            "{HEADER}\nPatient/1,2026-11-21T00:00:00Z,2026-11-22T00:00:00Z,8123,,\nPatient/2,2026-11-22T10:00:00Z,2026-11-22T10:05:00Z,512,102.4,1.31\n"
        );
        let obs: Vec<Value> =
            to_observations(&text).unwrap().iter().map(|o| serde_json::from_str(o).unwrap()).collect();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0]["code"]["coding"][0]["code"], "41950-7");
        assert_eq!(obs[0]["valueQuantity"]["value"], 8123);
        assert!(obs[0].get("component").is_none());
        assert_eq!(obs[1]["code"]["coding"][0]["code"], "55423-8");
        assert_eq!(obs[1]["subject"]["reference"], "Patient/2");
        assert_eq!(obs[1]["component"][0]["valueQuantity"]["value"], 102.4);
        assert_eq!(obs[1]["component"][1]["valueQuantity"]["unit"], "m/s");
    }

    #[test]
    fn bad_rows_name_their_line_and_column() {
        let bad = |row: &str| to_observations(&format!("{HEADER}\n{row}")).unwrap_err();
        assert_eq!(
            bad("Patient/1,2026-11-21,2026-11-22T00:00:00Z,1,,").message,
            "start: \"2026-11-21\" is not an RFC 3339 time"
        );
        assert!(bad("Patient/1,2026-11-21T00:00:00Z,2026-11-22T00:00:00Z,x,,").message.starts_with("steps"));
        assert!(bad("Patient/1,2026-11-21T00:00:00Z,2026-11-22T00:00:00Z,1,-3,").message.starts_with("cadence_spm"));
        assert_eq!(bad("a,b").line, 2);
        assert_eq!(to_observations("wrong,header\n").unwrap_err().line, 1);
    }
}
