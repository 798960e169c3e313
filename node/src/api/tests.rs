//! The API against its OpenAPI document, in process (no socket): every documented route
//! is served, with every method it does not document answered 405; every answer is one
//! the document lists for that operation, errors with the JSON `Error` body — also for
//! the framework's own rejections (unparsable path, query, body; unknown route).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use cairn_proto::request::RequestToSign;
use serde_json::Value;
use tower::ServiceExt as _;

use super::{ApiState, Limits, router};
use crate::chain::Chain;
use crate::ledger::state::{LedgerLimits, LedgerState};
use crate::ledger::store::BlockStore;
use crate::records::ports::LedgerView as _;
use crate::records::sim::{Sim, gateway};

struct Fixture {
    state: Arc<ApiState>,
    _sim: Sim,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let sim = Sim::start(1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let genesis = sim.ledger.genesis().clone();
    let state = LedgerState::from_genesis(&genesis, LedgerLimits::default()).unwrap();
    let store = BlockStore::open(&dir.path().join("blocks.redb")).unwrap();
    let chain = Chain::new(genesis, state, store, 10, tokio::sync::mpsc::channel(16).0, Default::default()).unwrap();
    let limits = Limits {
        max_pending_readings: 100,
        max_batch_readings: 10,
        max_body_bytes: 1 << 16,
        request_skew_ms: 300_000,
        idempotency_keys: 10,
    };
    Fixture { state: ApiState::new(chain, sim.nodes[0].clone(), limits), _sim: sim, _dir: dir }
}

/// A request with `body` (and `content-type`, if given); signed by the sim's gateway
/// with a nonce at a time (Unix ms) when `signing` gives them.
fn request(
    method: Method,
    uri: &str,
    body: &[u8],
    content_type: Option<&str>,
    signing: Option<([u8; 16], u64)>,
) -> Request<Body> {
    let mut req = Request::builder().method(method.clone()).uri(uri);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some((nonce, now)) = signing {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let key = gateway();
        let statement = RequestToSign::new(method.as_str(), path, query, body, key.public().key_id(), now, nonce);
        for (k, v) in statement.headers(&statement.sign(&key).unwrap()) {
            req = req.header(k, v);
        }
    }
    req.body(Body::from(body.to_vec())).unwrap()
}

/// Serves `req`; returns status, content type and body.
async fn exchange(f: &Fixture, req: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let answer = router(f.state.clone()).oneshot(req).await.unwrap();
    let status = answer.status();
    let content_type =
        answer.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let bytes = axum::body::to_bytes(answer.into_body(), usize::MAX).await.unwrap();
    (status, content_type, bytes.to_vec())
}

/// Sends a request, signed by the sim's gateway (with a fresh nonce) when `signed`.
async fn send(f: &Fixture, method: Method, uri: &str, body: &[u8], signed: bool) -> (StatusCode, String, Vec<u8>) {
    let nonce = signed.then(|| {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).unwrap();
        (nonce, crate::clock::now_ms())
    });
    exchange(f, request(method, uri, body, None, nonce)).await
}

fn document() -> Value {
    serde_json::to_value(super::openapi::document()).unwrap()
}

/// Checks that `status` is documented for the operation and that an error is the JSON
/// `Error` body.
fn check(doc: &Value, path: &str, method: &str, (status, content_type, body): &(StatusCode, String, Vec<u8>)) {
    let responses = &doc["paths"][path][method]["responses"];
    assert!(
        responses.get(status.as_str()).is_some(),
        "{method} {path} answered {status}, which the document does not list: {}",
        String::from_utf8_lossy(body)
    );
    let documented = &responses[status.as_str()]["content"];
    let schema = documented.as_object().and_then(|c| c.values().next()).map(|m| m["schema"].to_string());
    if schema.as_deref() == Some(r##"{"$ref":"#/components/schemas/ErrorBody"}"##) {
        assert!(content_type.starts_with("application/json"), "{method} {path} {status}: {content_type}");
        let v: Value = serde_json::from_slice(body).unwrap();
        assert!(v["code"].is_string() && v["message"].is_string(), "{method} {path} {status}: {v}");
    } else if status.as_u16() >= 400 {
        assert!(content_type.starts_with("application/json"), "{method} {path} {status}: {content_type}");
    }
}

/// The operations the node serves: this list is the API's surface, and the document
/// must hold exactly these.
const OPERATIONS: &[(&str, &str)] = &[
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/v1/openapi.json", "get"),
    ("/v1/transactions", "post"),
    ("/v1/blocks/{height}", "get"),
    ("/v1/checkpoint", "get"),
    ("/v1/checkpoints/{height}", "get"),
    ("/v1/log/inclusion", "get"),
    ("/v1/log/consistency", "get"),
    ("/v1/admins/{key_id}", "get"),
    ("/v1/readings", "post"),
    ("/v1/records/{rid}", "get"),
    ("/v1/records/{rid}/receipt", "get"),
    ("/v1/receipts", "post"),
    ("/v1/erasures", "post"),
    ("/v1/erasures", "get"),
    ("/v1/erasures/{id}", "get"),
    ("/v1/erasures/{id}/certificate", "get"),
    ("/v1/holds", "post"),
    ("/v1/holds/release", "post"),
    ("/v1/challenges", "post"),
];

fn concrete(path: &str) -> String {
    path.replace("{height}", "1")
        .replace("{key_id}", &"a".repeat(32))
        .replace("{rid}", &"b".repeat(32))
        .replace("{id}", &"c".repeat(32))
}

#[test]
fn the_document_lists_exactly_the_served_operations_each_with_schemas() {
    let doc = document();
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            listed.insert((path.clone(), method.clone()));
            for (status, response) in op["responses"].as_object().unwrap() {
                let content = &response["content"];
                assert!(content.is_object(), "{method} {path} {status} has no content schema");
                for (_, media) in content.as_object().unwrap() {
                    assert!(media["schema"].is_object(), "{method} {path} {status}: no schema");
                }
            }
            if let Some(body) = op.get("requestBody") {
                for (_, media) in body["content"].as_object().unwrap() {
                    assert!(media["schema"].is_object(), "{method} {path}: request body without schema");
                }
            }
        }
    }
    let expected: BTreeSet<_> = OPERATIONS.iter().map(|(p, m)| (p.to_string(), m.to_string())).collect();
    assert_eq!(listed, expected);
    // Every reference resolves.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref to {name}");
    }
    // Integers that callers send have bounds; hex path parameters have a pattern.
    let rid = &doc["paths"]["/v1/records/{rid}"]["get"]["parameters"][0]["schema"];
    assert_eq!(rid["pattern"], "^[0-9a-f]{32}$");
    let days = doc["paths"]["/v1/readings"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "retention_days")
        .unwrap();
    assert_eq!((days["schema"]["minimum"].as_f64(), days["schema"]["maximum"].as_f64()), (Some(1.0), Some(36500.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_documented_and_every_error_is_the_json_error_body() {
    let f = fixture().await;
    let doc = document();
    let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH];
    for (path, method) in OPERATIONS {
        let uri = concrete(path);
        let m: Method = method.to_uppercase().parse().unwrap();
        for signed in [false, true] {
            let answer = send(&f, m.clone(), &uri, b"{}", signed).await;
            check(&doc, path, method, &answer);
        }
        // Every method the path does not document: 405 with the JSON error body.
        for other in &methods {
            if doc["paths"][*path].get(other.as_str().to_lowercase()).is_some() {
                continue;
            }
            let (status, content_type, body) = send(&f, other.clone(), &uri, b"", false).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{other} {path}");
            assert!(content_type.starts_with("application/json"), "{other} {path}");
            assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["code"], "method_not_allowed");
        }
    }
    // The framework's own rejections: JSON errors the document lists.
    for (path, method, uri) in [
        ("/v1/blocks/{height}", "get", "/v1/blocks/not-a-number"),
        ("/v1/checkpoints/{height}", "get", "/v1/checkpoints/99999999999999999999999"),
        ("/v1/log/consistency", "get", "/v1/log/consistency?from=x&to=2"),
        ("/v1/log/consistency", "get", "/v1/log/consistency"),
        ("/v1/log/inclusion", "get", "/v1/log/inclusion?size=1"),
        ("/v1/records/{rid}", "get", "/v1/records/zz?purpose=TREAT&purpose=CAREMGT"),
    ] {
        let answer = send(&f, Method::GET, uri, b"", false).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{uri}: {}", String::from_utf8_lossy(&answer.2));
        check(&doc, path, method, &answer);
    }
    let (status, content_type, body) = send(&f, Method::GET, "/v1/nothing-here", b"", false).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(content_type.starts_with("application/json"));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["code"], "not_found");
    // A body past the limit of the signed routes.
    let big = vec![b'x'; (1 << 16) + 1];
    let answer = send(&f, Method::POST, "/v1/readings?purpose=TREAT&retention_days=1", &big, false).await;
    assert_eq!(answer.0, StatusCode::PAYLOAD_TOO_LARGE);
    check(&doc, "/v1/readings", "post", &answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_gateway_requests_reach_their_handlers_and_replays_are_refused() {
    let f = fixture().await;
    let doc = document();
    let uri = "/v1/readings?purpose=TREAT&retention_days=30";
    let body = br#"{"resourceType":"Observation","status":"final","code":{"text":"steps"},"subject":{"reference":"Patient/1"},"valueQuantity":{"value":1.50}}"#;
    let signing = Some(([7; 16], crate::clock::now_ms()));
    let stored = exchange(&f, request(Method::POST, uri, body, Some("application/x-ndjson"), signing)).await;
    assert_eq!(stored.0, StatusCode::OK, "{}", String::from_utf8_lossy(&stored.2));
    check(&doc, "/v1/readings", "post", &stored);
    let stored: Value = serde_json::from_slice(&stored.2).unwrap();
    assert_eq!(stored["count"], 1);
    let rid = stored["records"][0]["rid"].as_str().unwrap().to_string();
    // The same signed request again, byte for byte: refused.
    let (status, _, answer) =
        exchange(&f, request(Method::POST, uri, body, Some("application/x-ndjson"), signing)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(serde_json::from_slice::<Value>(&answer).unwrap()["code"], "replayed_request");
    // The record reads back, its resource as stored.
    let (status, _, body) = send(&f, Method::GET, &format!("/v1/records/{rid}?purpose=TREAT"), b"", true).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains(r#""valueQuantity":{"value":1.50}"#), "{text}");
}
