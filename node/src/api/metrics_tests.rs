//! `/metrics` in process: per-route request counts and latency histograms, refusals by
//! their error code, queue depths and store sizes, in the OpenMetrics text format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use axum::http::{Method, StatusCode};

use super::tests::{code, fixture, send};

/// The value of the sample named exactly `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn requests_are_counted_by_route_and_refusals_by_their_code() {
    let f = fixture().await;
    f.state.metrics.data_dir.set(f.dir.path().to_path_buf()).unwrap();
    for _ in 0..3 {
        assert_eq!(send(&f, Method::GET, "/v1/identity", b"", false).await.0, StatusCode::OK);
    }
    let (status, _, body) = send(&f, Method::GET, "/no/such/route", b"", false).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unmatched = code(&body);
    let (strange, _, strange_body) =
        send(&f, Method::from_bytes(b"FOOBAR").unwrap(), "/no/such/route", b"", false).await;
    assert!(strange.is_client_error(), "{strange}");
    let (unsigned_status, _, body) = send(&f, Method::POST, "/v1/readings", b"{}", false).await;
    assert!(unsigned_status.is_client_error(), "{unsigned_status}");
    let unsigned = code(&body);
    assert!(!unsigned.is_empty());

    let (status, content_type, body) = send(&f, Method::GET, "/metrics", b"", false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");

    let healthz = r#"{route="/v1/identity",method="GET",status="200"}"#;
    assert_eq!(sample(&text, &format!("cairn_http_requests_total{healthz}")), Some(3.0), "{text}");
    let latency = r#"cairn_http_request_duration_seconds_count{route="/v1/identity",method="GET"}"#;
    assert_eq!(sample(&text, latency), Some(3.0));
    let le_inf = r#"cairn_http_request_duration_seconds_bucket{le="+Inf",route="/v1/identity",method="GET"}"#;
    assert_eq!(sample(&text, le_inf), Some(3.0), "{text}");
    let unknown = r#"cairn_http_requests_total{route="unmatched",method="GET",status="404"}"#;
    assert_eq!(sample(&text, unknown), Some(1.0), "{text}");
    // Refusals are counted by status and code, whatever the method.
    let same = strange == StatusCode::NOT_FOUND && code(&strange_body) == unmatched;
    let expected = if same { 2.0 } else { 1.0 };
    assert_eq!(
        sample(&text, &format!(r#"cairn_http_refusals_total{{status="404",code="{unmatched}"}}"#)),
        Some(expected)
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"cairn_http_refusals_total{{status="{}",code="{unsigned}"}}"#, unsigned_status.as_u16())
        ),
        Some(1.0),
        "{text}"
    );
    // Any method a stranger invents is counted as `other`, so labels stay bounded.
    assert!(text.contains(r#"cairn_http_requests_total{route="unmatched",method="other",status=""#), "{text}");
    assert!(!text.contains("FOOBAR"));
    // Successes are not refusals.
    assert!(!text.contains(r#"cairn_http_refusals_total{status="200""#));

    // Queue depths of every batcher, the erasure jobs, and the stores on disk.
    for kind in ["anchors", "consent_events", "access_events", "erasure_receipts"] {
        assert_eq!(sample(&text, &format!(r#"cairn_anchor_pending_leaves{{name="{kind}"}}"#)), Some(0.0), "{kind}");
        assert_eq!(sample(&text, &format!(r#"cairn_anchor_inflight_batches{{name="{kind}"}}"#)), Some(0.0), "{kind}");
    }
    assert_eq!(sample(&text, "cairn_erasure_jobs_open"), Some(0.0));
    assert_eq!(sample(&text, "cairn_erasure_jobs_overdue"), Some(0.0));
    for store in ["blocks", "nonces"] {
        let bytes = sample(&text, &format!(r#"cairn_store_bytes{{name="{store}"}}"#)).unwrap();
        let on_disk = std::fs::metadata(f.dir.path().join(format!("{store}.redb"))).unwrap().len();
        assert_eq!(bytes, on_disk as f64, "{store}");
    }
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_served() {
    let f = fixture().await;
    f.state.metrics.data_dir.set(f.dir.path().to_path_buf()).unwrap();
    let (_, _, body) = send(&f, Method::GET, "/metrics", b"", false).await;
    let text = String::from_utf8(body).unwrap();
    let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let docker = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker");
    for file in ["prometheus/alerts.yml", "prometheus/alerts.test.yml", "grafana/cairn.json"] {
        let used = std::fs::read_to_string(docker.join(file)).unwrap();
        let mut names: Vec<&str> = used
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("cairn_"))
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() > 5, "{file} names cairn's metrics");
        for name in names {
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|base| families.contains(base))
                .unwrap_or(name);
            assert!(families.contains(&family), "{file} uses {name}, which /metrics does not serve");
        }
    }
}
