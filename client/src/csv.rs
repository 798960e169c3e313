//! Smart-shoe readings in CSV, converted to FHIR R4 Observations. The rules, with
//! their LOINC codes, are in `docs/smart-shoe-csv.md`.
//!
//! Columns (header line required, in this order):
//! `subject,start,end,steps,cadence_spm,speed_mps` — `subject` is the gateway's reference
//! for the wearer (e.g. `Patient/123`), `start`/`end` RFC 3339 date-times with `Z` or any
//! UTC offset (`-05:00`, `+09:00`), `steps` a whole number, the last two optional (empty)
//! non-negative decimals. Times are read with `jiff` (a date-time library): an
//! impossible date (`2026-02-30`) or an end not after its start is refused, naming the
//! line. Each row becomes one Observation coded LOINC 55423-8 (number of steps in
//! unspecified time, pedometer) — or 41950-7 (number of steps in 24 hours) when the
//! period is one whole day: exactly 24 hours, or local midnight to the next local
//! midnight (23 or 25 hours across a daylight-saving change) — with an
//! `effectivePeriod` holding the times as written, the step count as `valueQuantity`,
//! and cadence (steps/min) and gait speed (m/s) as components coded in cairn's own code
//! system (`urn:cairn:gait`) until the consortium settles on LOINC codes for them.

use jiff::civil::{DateTime, Time};
use jiff::fmt::temporal::{Pieces, PiecesOffset};
use jiff::tz::Offset;
use jiff::{Timestamp, ToSpan as _};
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

/// One instant as written: its local date-time and UTC offset.
#[derive(Debug, Clone, Copy)]
struct When {
    local: DateTime,
    at: Timestamp,
}

fn time(value: &str, line: usize, column: &str) -> Result<When, CsvError> {
    let bad =
        |why: String| CsvError { line, message: format!("{column}: {value:?} is not an RFC 3339 date-time: {why}") };
    let pieces = Pieces::parse(value).map_err(|e| bad(e.to_string()))?;
    let date = pieces.date();
    let clock = pieces.time().ok_or_else(|| bad("it has no time of day".into()))?;
    let offset: Offset = match pieces.offset() {
        Some(PiecesOffset::Zulu) => Offset::UTC,
        Some(PiecesOffset::Numeric(n)) => n.offset(),
        _ => return Err(bad("it has no UTC offset (Z or ±hh:mm)".into())),
    };
    if pieces.time_zone_annotation().is_some() {
        return Err(bad("a time zone annotation is not RFC 3339".into()));
    }
    let local = date.to_datetime(clock);
    let at = offset.to_timestamp(local).map_err(|e| bad(e.to_string()))?;
    Ok(When { local, at })
}

/// Whether `start..end` is one whole day: 24 hours, or local midnight to the next local
/// midnight with offsets at most an hour apart (a daylight-saving change: 23 or 25 hours).
fn whole_day(start: When, end: When) -> bool {
    let elapsed = end.at.as_second() - start.at.as_second();
    let midnight = Time::midnight();
    let next_day = start.local.date().checked_add(1.day()).ok();
    let local_day = start.local.time() == midnight
        && end.local.time() == midnight
        && next_day == Some(end.local.date())
        && (elapsed - 86_400).abs() <= 3_600;
    elapsed == 86_400 || local_day
}

/// A component as JSON text, its value kept as written (`1.30` stays `1.30`).
fn component(code: &str, display: &str, value: &str, unit: &str, ucum: &str) -> String {
    let coding = json!([{"system": "urn:cairn:gait", "code": code, "display": display}]);
    format!(
        r#"{{"code":{{"coding":{coding},"text":{}}},"valueQuantity":{{"value":{value},"unit":{},"system":"http://unitsofmeasure.org","code":{}}}}}"#,
        Value::from(display),
        Value::from(unit),
        Value::from(ucum)
    )
}

/// Whether `s` is a non-negative decimal as JSON writes it (`0`, `12`, `1.30`).
fn plain_decimal(s: &str) -> bool {
    // A reading's measure, not a document: at most 32 characters.
    if s.len() > 32 {
        return false;
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac) && (int == "0" || !int.starts_with('0'))
}

/// Whether `s` has the shape RFC 3339 and FHIR `dateTime` give a time with seconds:
/// `YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)` (jiff then checks the values).
fn rfc3339_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4) && at(4, b'-') && digits(5..7) && at(7, b'-') && digits(8..10) && at(10, b'T'))
        || !(digits(11..13) && at(13, b':') && digits(14..16) && at(16, b':') && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => i + 6 == b.len() && digits(i + 1..i + 3) && at(i + 3, b':') && digits(i + 4..i + 6),
        _ => false,
    }
}

/// Converts CSV text to one Observation (JSON text) per row. Fields may be quoted
/// (RFC 4180, read with the `csv` crate); a UTF-8 byte-order mark at the start is
/// skipped.
pub fn to_observations(text: &str) -> Result<Vec<String>, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let mut out = Vec::new();
    let mut header = true;
    for row in reader.records() {
        let row = row.map_err(|e| CsvError {
            line: e.position().map_or(0, |p| p.line() as usize),
            message: format!("not CSV: {e}"),
        })?;
        let line = row.position().map_or(0, |p| p.line() as usize);
        if row.iter().all(str::is_empty) {
            continue;
        }
        let cols: Vec<&str> = row.iter().collect();
        if header {
            if cols.join(",") != HEADER {
                return Err(CsvError { line, message: format!("header {:?}; expected {HEADER:?}", cols.join(",")) });
            }
            header = false;
            continue;
        }
        let [subject, start, end, steps, cadence, speed] = cols.as_slice() else {
            return Err(CsvError { line, message: format!("{} columns; expected 6", cols.len()) });
        };
        if subject.is_empty() {
            return Err(CsvError { line, message: "subject is empty".into() });
        }
        // The node files a reading under its subject or refuses it: the same rule here.
        let key =
            cairn_proto::subject::literal(subject).map_err(|m| CsvError { line, message: format!("subject: {m}") })?;
        if key.len() > cairn_proto::subject::MAX_SUBJECT {
            let max = cairn_proto::subject::MAX_SUBJECT;
            return Err(CsvError { line, message: format!("subject: {} bytes; at most {max}", key.len()) });
        }
        for (value, column) in [(start, "start"), (end, "end")] {
            if !rfc3339_shape(value) {
                return Err(CsvError {
                    line,
                    message: format!("{column}: {value:?} is not an RFC 3339 date-time (YYYY-MM-DDThh:mm:ss±hh:mm)"),
                });
            }
        }
        let (start_at, end_at) = (time(start, line, "start")?, time(end, line, "end")?);
        if end_at.at <= start_at.at {
            return Err(CsvError { line, message: format!("end {end} is not after start {start}") });
        }
        let steps: u64 =
            steps.parse().map_err(|_| CsvError { line, message: format!("steps: {steps:?} is not a whole number") })?;
        let (code, display) = if whole_day(start_at, end_at) {
            ("41950-7", "Number of steps in 24 hour Measured")
        } else {
            ("55423-8", "Number of steps in unspecified time Pedometer")
        };
        let mut components = Vec::new();
        for (v, name, code, display, unit, ucum) in [
            (cadence, "cadence_spm", "cadence", "Walking cadence", "steps/min", "{steps}/min"),
            (speed, "speed_mps", "gait-speed", "Gait speed", "m/s", "m/s"),
        ] {
            if !v.is_empty() {
                if !plain_decimal(v) {
                    return Err(CsvError { line, message: format!("{name}: {v:?} is not a non-negative number") });
                }
                components.push(component(code, display, v, unit, ucum));
            }
        }
        let head = json!({
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "activity"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": subject},
            "effectivePeriod": {"start": start, "end": end},
            "valueQuantity": {"value": steps, "unit": "steps", "system": "http://unitsofmeasure.org", "code": "{steps}"}
        })
        .to_string();
        out.push(match components.is_empty() {
            true => head,
            false => format!("{},\"component\":[{}]}}", head.strip_suffix('}').unwrap_or(&head), components.join(",")),
        });
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
    fn quoted_fields_are_read_and_decimals_keep_their_digits() {
        let text = format!(
            "{HEADER}\r\n\"Patient/1\",\"2026-11-21T10:00:00+09:00\",2026-11-21T10:05:00+09:00,500,\"101.50\",1.30\r\n"
        );
        let obs = to_observations(&text).unwrap();
        let v: Value = serde_json::from_str(&obs[0]).unwrap();
        assert_eq!(v["subject"]["reference"], "Patient/1");
        assert!(obs[0].contains(r#""value":101.50,"#) && obs[0].contains(r#""value":1.30,"#), "{}", obs[0]);
        for bad in ["-1", "1e3", "01.5", ".5", "1.", "NaN"] {
            let row = format!("{HEADER}\nPatient/1,2026-11-21T10:00:00Z,2026-11-21T10:05:00Z,1,{bad},");
            assert!(to_observations(&row).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_rows_name_their_line_and_column() {
        let bad = |row: &str| to_observations(&format!("{HEADER}\n{row}")).unwrap_err();
        assert!(bad("Patient/1,2026-11-21,2026-11-22T00:00:00Z,1,,").message.starts_with("start: \"2026-11-21\""));
        assert!(bad("Patient/1,2026-11-21T00:00:00Z,2026-11-22T00:00:00Z,x,,").message.starts_with("steps"));
        assert!(bad("Patient/1,2026-11-21T00:00:00Z,2026-11-22T00:00:00Z,1,-3,").message.starts_with("cadence_spm"));
        assert!(bad("Patient/1,2026-11-21T00:00:00,2026-11-22T00:00:00Z,1,,").message.contains("RFC 3339"));
        for not_rfc3339 in ["2026-11-21T10Z", "2026-11-21 10:00:00Z", "20261121T100000Z", "2026-11-21T10:00:00+0500"] {
            let row = format!("Patient/1,{not_rfc3339},2026-11-22T00:00:00Z,1,,");
            assert!(bad(&row).message.starts_with("start"), "{not_rfc3339}");
        }
        assert_eq!(bad("a,b").line, 2);
        assert_eq!(to_observations("wrong,header\n").unwrap_err().line, 1);
    }

    fn field_case(name: &str) -> String {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/tests/field-cases");
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn every_utc_offset_is_read_and_kept_as_written() {
        let obs: Vec<Value> = to_observations(&field_case("csv-negative-offset.csv"))
            .unwrap()
            .iter()
            .map(|o| serde_json::from_str(o).unwrap())
            .collect();
        assert_eq!(obs[0]["code"]["coding"][0]["code"], "55423-8");
        assert_eq!(obs[0]["effectivePeriod"]["start"], "2026-11-21T10:00:00-05:00");
        assert_eq!(obs[1]["code"]["coding"][0]["code"], "41950-7", "a whole local day west of UTC");
        for (start, end, code) in [
            ("2026-11-21T00:00:00+09:00", "2026-11-22T00:00:00+09:00", "41950-7"),
            ("2026-11-21T00:00:00+05:45", "2026-11-22T00:00:00+05:45", "41950-7"),
            ("2026-11-21T07:30:00Z", "2026-11-22T07:30:00Z", "41950-7"),
            // A local day across a daylight-saving change: 23 hours, midnight to midnight.
            ("2026-03-08T00:00:00-08:00", "2026-03-09T00:00:00-07:00", "41950-7"),
            ("2026-11-21T00:00:00Z", "2026-11-21T23:59:59Z", "55423-8"),
            // Midnight to midnight, but with offsets 3 hours apart: no daylight-saving change.
            ("2026-11-21T00:00:00+01:00", "2026-11-22T00:00:00+04:00", "55423-8"),
        ] {
            let o = to_observations(&format!("{HEADER}\nPatient/1,{start},{end},5,,")).unwrap();
            let o: Value = serde_json::from_str(&o[0]).unwrap();
            assert_eq!(o["code"]["coding"][0]["code"], code, "{start}..{end}");
        }
    }

    #[test]
    fn impossible_dates_and_backward_periods_are_refused_by_line() {
        let text = field_case("csv-bad-dates.csv");
        let first_row = text.lines().take(2).collect::<Vec<_>>().join("\n");
        let o: Value = serde_json::from_str(&to_observations(&first_row).unwrap()[0]).unwrap();
        assert_eq!(o["code"]["coding"][0]["code"], "41950-7", "a whole day across a month end");
        let e = to_observations(&text).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.starts_with("start: \"2026-02-30T00:00:00Z\""), "{}", e.message);
        let backwards = [text.lines().next().unwrap(), text.lines().nth(3).unwrap()].join("\n");
        let e = to_observations(&backwards).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("is not after start"), "{}", e.message);
        for bad in ["2026-13-01T00:00:00Z", "2026-11-31T00:00:00Z", "2027-02-29T00:00:00Z", "2026-11-21T24:00:01Z"] {
            let row = format!("{HEADER}\nPatient/1,{bad},2028-01-01T00:00:00Z,1,,");
            assert!(to_observations(&row).is_err(), "{bad}");
        }
        let bom = format!("\u{feff}{first_row}");
        assert_eq!(to_observations(&bom).unwrap().len(), 1);
    }

    #[test]
    fn subjects_the_node_would_refuse_are_refused_by_line() {
        for subject in ["Patient/fc-1Patient/fc-2", "Observation/1", "#p1", "urn:uuid:1", "Patient?name=x", "Patient/"]
        {
            let e = to_observations(&format!("{HEADER}\n{subject},2026-11-21T00:00:00Z,2026-11-22T00:00:00Z,1,,"))
                .unwrap_err();
            assert_eq!(e.line, 2, "{subject}");
            assert!(e.message.starts_with("subject: "), "{subject}: {}", e.message);
        }
        let long = format!("Patient/{}", "x".repeat(300));
        let e =
            to_observations(&format!("{HEADER}\n{long},2026-11-21T00:00:00Z,2026-11-22T00:00:00Z,1,,")).unwrap_err();
        assert!(e.message.contains("at most 256"), "{}", e.message);
        let wide = format!("{HEADER}\nPatient/1,2026-11-21T00:00:00Z,2026-11-22T00:00:00Z,1,{},", "1".repeat(40));
        assert!(to_observations(&wide).unwrap_err().message.starts_with("cadence_spm"));
        assert!(
            to_observations(&format!(
                "{HEADER}\nhttps://h.example/fhir/Patient/7/_history/2,2026-11-21T00:00:00Z,2026-11-22T00:00:00Z,1,,"
            ))
            .is_ok()
        );
    }
}
