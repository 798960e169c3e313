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

pub(super) struct Fixture {
    pub(super) state: Arc<ApiState>,
    _sim: Sim,
    pub(super) dir: tempfile::TempDir,
}

/// The largest body the fixture's node accepts, bytes.
const LIMIT: usize = 1 << 20;

pub(super) async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    fixture_in(dir).await
}

/// A node whose API stores its nonces in `dir` (so a second fixture over the same
/// directory is the same node restarted).
async fn fixture_in(dir: tempfile::TempDir) -> Fixture {
    let sim = Sim::start(1, 1).await;
    let genesis = sim.ledger.genesis().clone();
    let state = LedgerState::from_genesis(&genesis, LedgerLimits::default()).unwrap();
    let store = BlockStore::open(&dir.path().join("blocks.redb")).unwrap();
    let chain = Chain::new(genesis, state, store, 10, tokio::sync::mpsc::channel(16).0, Default::default()).unwrap();
    let limits =
        Limits { max_pending_readings: 1000, max_batch_readings: 100, max_body_bytes: LIMIT, request_skew_ms: 300_000 };
    let nonces = Arc::new(super::nonces::NonceStore::open(&dir.path().join("nonces.redb"), 0).unwrap());
    Fixture { state: ApiState::new(chain, sim.nodes[0].clone(), limits, nonces), _sim: sim, dir }
}

/// A request with `body` (and `content-type`, if given); signed by the sim's gateway
/// for this node with a nonce at a time (Unix ms) when `signing` gives them.
fn request(
    f: &Fixture,
    method: Method,
    uri: &str,
    body: &[u8],
    content_type: Option<&str>,
    signing: Option<([u8; 16], u64)>,
) -> Request<Body> {
    let mut req = Request::builder().method(method.clone()).uri(uri).header("host", "node.test");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some((nonce, now)) = signing {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let key = gateway();
        let (chain, me) = (f.state.chain_hash, f.state.records.me);
        let statement =
            RequestToSign::new(chain, me, method.as_str(), path, query, body, key.public().key_id(), now, nonce);
        for (k, v) in statement.headers(&statement.sign(&key).unwrap()) {
            req = req.header(k, v);
        }
    }
    req.body(Body::from(body.to_vec())).unwrap()
}

/// Status, content type and body of an answer.
type Answer = (StatusCode, String, Vec<u8>);

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
pub(super) async fn send(f: &Fixture, method: Method, uri: &str, body: &[u8], signed: bool) -> Answer {
    let nonce = signed.then(|| {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).unwrap();
        (nonce, crate::clock::now_ms())
    });
    exchange(f, request(f, method, uri, body, None, nonce)).await
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
    ("/v1/identity", "get"),
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
    ("/v1/policy", "get"),
    ("/v1/documents", "post"),
    ("/v1/documents/search", "post"),
    ("/v1/documents/{id}", "get"),
    ("/v1/documents/{id}/receipt", "get"),
    ("/v1/documents/{id}/certificate", "get"),
    ("/v1/access/records", "get"),
    ("/v1/disclosures", "post"),
    ("/v1/export", "post"),
    ("/v1/access-log", "get"),
    ("/v1/reviews", "get"),
    ("/v1/reviews/{id}", "post"),
    ("/v1/access/records/{rid}", "get"),
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
    let big = vec![b'x'; LIMIT + 1];
    let answer = send(&f, Method::POST, "/v1/readings?purpose=TREAT&retention_days=1", &big, true).await;
    assert_eq!(answer.0, StatusCode::PAYLOAD_TOO_LARGE);
    check(&doc, "/v1/readings", "post", &answer);
    // Unsigned, it is refused from its headers: the body is never read.
    let answer = send(&f, Method::POST, "/v1/readings?purpose=TREAT&retention_days=1", &big, false).await;
    assert_eq!(answer.0, StatusCode::UNAUTHORIZED);
    check(&doc, "/v1/readings", "post", &answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_gateway_requests_reach_their_handlers_and_replays_are_refused() {
    let f = fixture().await;
    let doc = document();
    let uri = "/v1/readings?purpose=TREAT&retention_days=30";
    let body = br#"{"resourceType":"Observation","status":"final","code":{"text":"steps"},"subject":{"reference":"Patient/1"},"valueQuantity":{"value":1.50}}"#;
    let signing = Some(([7; 16], crate::clock::now_ms()));
    let stored = exchange(&f, request(&f, Method::POST, uri, body, Some("application/x-ndjson"), signing)).await;
    assert_eq!(stored.0, StatusCode::OK, "{}", String::from_utf8_lossy(&stored.2));
    check(&doc, "/v1/readings", "post", &stored);
    let stored: Value = serde_json::from_slice(&stored.2).unwrap();
    assert_eq!(stored["count"], 1);
    let rid = stored["records"][0]["rid"].as_str().unwrap().to_string();
    // The same signed request again, byte for byte: refused.
    let (status, _, answer) =
        exchange(&f, request(&f, Method::POST, uri, body, Some("application/x-ndjson"), signing)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(serde_json::from_slice::<Value>(&answer).unwrap()["code"], "replayed_request");
    // The record reads back, its resource as stored.
    let (status, _, body) = send(&f, Method::GET, &format!("/v1/records/{rid}?purpose=TREAT"), b"", true).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains(r#""valueQuantity":{"value":1.50}"#), "{text}");
}

pub(super) fn code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap()["code"].as_str().unwrap_or_default().to_string()
}

/// The `record.resource` of a read, as the bytes the node sent.
fn served_resource(answer: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        record: Record<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        resource: &'a serde_json::value::RawValue,
    }
    serde_json::from_slice::<Answer<'_>>(answer).unwrap().record.resource.get().to_string()
}

/// Stores `body` and reads every record back; returns the served resources in order.
async fn round_trip(f: &Fixture, body: &[u8], content_type: &str) -> Result<Vec<String>, Value> {
    let uri = "/v1/readings?purpose=TREAT&retention_days=30";
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).unwrap();
    let signing = Some((nonce, crate::clock::now_ms()));
    let (status, _, answer) = exchange(f, request(f, Method::POST, uri, body, Some(content_type), signing)).await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    if status != StatusCode::OK {
        return Err(answer);
    }
    let mut out = Vec::new();
    for r in answer["records"].as_array().unwrap() {
        let rid = r["rid"].as_str().unwrap();
        let (status, _, read) = send(f, Method::GET, &format!("/v1/records/{rid}?purpose=TREAT"), b"", true).await;
        assert_eq!(status, StatusCode::OK);
        out.push(served_resource(&read));
    }
    Ok(out)
}

fn vectors() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/fhir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_observation_and_bundle_entry_reads_back_byte_for_byte() {
    let f = fixture().await;
    let decimals = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/field-cases/decimal-precision.jsonl"),
    )
    .unwrap();
    let back = round_trip(&f, &decimals, "application/x-ndjson").await.unwrap();
    assert_eq!(back, [std::str::from_utf8(&decimals).unwrap().trim_end()]);
    let mut compared = 0;
    for dir in ["phd-ig/observations", "r4-core/observations"] {
        for entry in std::fs::read_dir(vectors().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.trim_end();
            let body = format!(r#"{{"resourceType":"Bundle","type":"collection","entry":[{{"resource":{text}}}]}}"#);
            match round_trip(&f, body.as_bytes(), "application/fhir+json").await {
                Ok(back) => {
                    assert_eq!(back, [text], "{}", path.display());
                    compared += 1;
                }
                // Refused by the subject rule (Observation-decimal has no subject).
                Err(e) => assert_eq!(e["code"], "invalid_fhir", "{}: {e}", path.display()),
            }
        }
    }
    // Every one but the published example without a subject.
    assert_eq!(compared, 19 + 26);
    let mut entries = 0;
    for dir in ["phd-ig/bundles", "r4-core/bundles"] {
        for entry in std::fs::read_dir(vectors().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let body = std::fs::read(&path).unwrap();
            let raw: Value = serde_json::from_slice(&body).unwrap();
            let Ok(back) = round_trip(&f, &body, "application/fhir+json").await else { continue };
            let observations = raw["entry"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["resource"]["resourceType"] == "Observation")
                .count();
            assert_eq!(back.len(), observations, "{}", path.display());
            let text = std::str::from_utf8(&body).unwrap();
            for resource in &back {
                assert!(text.contains(resource.as_str()), "{}: an entry came back changed", path.display());
                entries += 1;
            }
        }
    }
    assert_eq!(entries, 47 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_good_once_at_the_node_it_was_signed_for_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nonces = dir.path().join("nonces.redb");
    let f = fixture_in(dir).await;
    let uri = "/v1/readings?purpose=TREAT&retention_days=30";
    let body = br#"{"resourceType":"Observation","status":"final","code":{"text":"steps"},"subject":{"reference":"Patient/1"}}"#;
    let key = gateway();
    let signed_for = |chain, node, nonce: [u8; 16], version: Option<&str>| {
        let statement = RequestToSign::new(
            chain,
            node,
            "POST",
            "/v1/readings",
            uri.split_once('?').unwrap().1,
            body,
            key.public().key_id(),
            crate::clock::now_ms(),
            nonce,
        );
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("host", "node.test")
            .header("content-type", "application/x-ndjson");
        for (k, v) in statement.headers(&statement.sign(&key).unwrap()) {
            if k == cairn_proto::request::HEADER_VERSION {
                if let Some(v) = version {
                    req = req.header(k, v);
                }
                continue;
            }
            req = req.header(k, v);
        }
        req.body(Body::from(body.to_vec())).unwrap()
    };
    let (chain, me) = (f.state.chain_hash, f.state.records.me);
    // Signed for another node, or another chain: refused here.
    let elsewhere = cairn_proto::KeyId([9; 16]);
    let (status, _, answer) = exchange(&f, signed_for(chain, elsewhere, [1; 16], Some("2"))).await;
    assert_eq!((status, code(&answer)), (StatusCode::UNAUTHORIZED, "bad_signature".into()));
    let other_chain = cairn_proto::hash::blake3(b"another chain");
    let (status, _, answer) = exchange(&f, signed_for(other_chain, me, [2; 16], Some("2"))).await;
    assert_eq!((status, code(&answer)), (StatusCode::UNAUTHORIZED, "bad_signature".into()));
    // Format 1 (no version header) is refused by name, and so is an unknown format.
    let (status, _, answer) = exchange(&f, signed_for(chain, me, [3; 16], None)).await;
    assert_eq!((status, code(&answer)), (StatusCode::UNAUTHORIZED, "old_signature_version".into()));
    let (status, _, answer) = exchange(&f, signed_for(chain, me, [4; 16], Some("7"))).await;
    assert_eq!((status, code(&answer)), (StatusCode::UNAUTHORIZED, "unsupported_signature_version".into()));
    // A captured hold release, replayed at another node, fails there the same way.
    let release = |node| {
        let body = br#"{"subject":"Patient/1"}"#;
        let statement = RequestToSign::new(
            chain,
            node,
            "POST",
            "/v1/holds/release",
            "",
            body,
            key.public().key_id(),
            crate::clock::now_ms(),
            [6; 16],
        );
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/v1/holds/release")
            .header("host", "n")
            .header("content-type", "application/json");
        for (k, v) in statement.headers(&statement.sign(&key).unwrap()) {
            req = req.header(k, v);
        }
        req.body(Body::from(body.to_vec())).unwrap()
    };
    let (status, _, answer) = exchange(&f, release(elsewhere)).await;
    assert_eq!((status, code(&answer)), (StatusCode::UNAUTHORIZED, "bad_signature".into()));
    // The node proves the identity a request must name with its validator key.
    let (status, _, answer) =
        send(&f, Method::GET, &format!("/v1/identity?nonce={}", "ab".repeat(16)), b"", false).await;
    assert_eq!(status, StatusCode::OK);
    let id: Value = serde_json::from_slice(&answer).unwrap();
    let public: cairn_proto::PublicKey = id["public_key"].as_str().unwrap().parse().unwrap();
    let signature: cairn_proto::identity::Signature = id["signature"].as_str().unwrap().parse().unwrap();
    assert_eq!(public.key_id(), me);
    let statement = cairn_proto::request::identity_statement(&chain, &me, &[0xab; 16]);
    public.verify(cairn_proto::hash::domain::SIG_IDENTITY, &statement, &signature).unwrap();
    let other = cairn_proto::request::identity_statement(&chain, &me, &[0xac; 16]);
    assert!(public.verify(cairn_proto::hash::domain::SIG_IDENTITY, &other, &signature).is_err());
    // Signed for this node: stored once.
    let (status, _, answer) = exchange(&f, signed_for(chain, me, [5; 16], Some("2"))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer));
    // The node restarts: the nonce is still known.
    let Fixture { state, _sim, dir } = f;
    let (chain_state, records, limits) = (state.chain.clone(), state.records.clone(), state.limits);
    let metrics = state.metrics.clone();
    drop(state);
    let reopened = Arc::new(super::nonces::NonceStore::open(&nonces, crate::clock::now_ms()).unwrap());
    let f = Fixture { state: ApiState::new(chain_state, records, limits, reopened), _sim, dir };
    let (status, _, answer) = exchange(&f, signed_for(chain, me, [5; 16], Some("2"))).await;
    assert_eq!((status, code(&answer)), (StatusCode::UNAUTHORIZED, "replayed_request".into()));
    assert_eq!(metrics.readings.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_content_coding_are_checked_and_gzip_counts_decompressed_bytes() {
    use std::io::Write as _;
    let f = fixture().await;
    let uri = "/v1/readings?purpose=TREAT&retention_days=30";
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/field-cases/decimal-precision.jsonl"),
    )
    .unwrap();
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let signed = |bytes: &[u8], signed_over: &[u8], coding: Option<&str>, host: &[&str]| {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).unwrap();
        let key = gateway();
        let statement = RequestToSign::new(
            f.state.chain_hash,
            f.state.records.me,
            "POST",
            "/v1/readings",
            uri.split_once('?').unwrap().1,
            signed_over,
            key.public().key_id(),
            crate::clock::now_ms(),
            nonce,
        );
        let mut req = Request::builder().method(Method::POST).uri(uri).header("content-type", "application/x-ndjson");
        for h in host {
            req = req.header("host", *h);
        }
        if let Some(c) = coding {
            req = req.header("content-encoding", c);
        }
        for (k, v) in statement.headers(&statement.sign(&key).unwrap()) {
            req = req.header(k, v);
        }
        req.body(Body::from(bytes.to_vec())).unwrap()
    };
    // gzip: decompressed, signed over what was compressed, stored as the plain bytes.
    let (status, _, answer) = exchange(&f, signed(&gzip(&body), &body, Some("gzip"), &["n"])).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer));
    let rid = serde_json::from_slice::<Value>(&answer).unwrap()["records"][0]["rid"].as_str().unwrap().to_string();
    let (_, _, read) = send(&f, Method::GET, &format!("/v1/records/{rid}?purpose=TREAT"), b"", true).await;
    assert_eq!(served_resource(&read), std::str::from_utf8(&body).unwrap().trim_end());
    // gzip under its other names, or with `identity` beside it: decompressed too.
    for coding in ["x-gzip", "GZIP", "identity, gzip"] {
        let (status, _, answer) = exchange(&f, signed(&gzip(&body), &body, Some(coding), &["n"])).await;
        assert_eq!(status, StatusCode::OK, "{coding}: {}", String::from_utf8_lossy(&answer));
    }
    // Another coding, or gzip twice: 415 naming it; nothing is read.
    for coding in ["br", "gzip, br", "deflate", "zstd", "gzip, gzip"] {
        let (status, _, answer) = exchange(&f, signed(&body, &body, Some(coding), &["n"])).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding".into()),
            "{coding}"
        );
        let named = if coding == "gzip, gzip" { "more than once" } else { coding.rsplit(", ").next().unwrap() };
        assert!(String::from_utf8_lossy(&answer).contains(named), "{coding}");
    }
    // Not gzip at all, and a small body that inflates past the limit.
    let (status, _, answer) = exchange(&f, signed(b"not gzip", &body, Some("gzip"), &["n"])).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "bad_body".into()));
    let bomb = gzip(&vec![b' '; LIMIT + 1]);
    assert!(bomb.len() < LIMIT / 100);
    let (status, _, answer) = exchange(&f, signed(&bomb, &vec![b' '; LIMIT + 1], Some("gzip"), &["n"])).await;
    assert_eq!((status, code(&answer)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into()));
    // No Host, two Hosts.
    for hosts in [&[][..], &["a", "b"][..]] {
        let (status, _, answer) = exchange(&f, signed(&body, &body, None, hosts)).await;
        assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "bad_host".into()), "{hosts:?}");
    }
    assert_eq!(f.state.metrics.readings.load(std::sync::atomic::Ordering::Relaxed), 4, "only the gzip requests stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_twice_is_refused_with_its_path_and_nothing_is_stored() {
    let f = fixture().await;
    let uri = "/v1/readings?purpose=TREAT&retention_days=30";
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/field-cases/duplicate-subject-key.jsonl"),
    )
    .unwrap();
    let (status, _, answer) = exchange(
        &f,
        request(&f, Method::POST, uri, &body, Some("application/x-ndjson"), Some(([6; 16], crate::clock::now_ms()))),
    )
    .await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        (status, answer["items"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("subject")),
        "{answer}"
    );
    let bundle = br#"{"resourceType":"Bundle","entry":[],"entry":[]}"#;
    let (status, _, answer) = exchange(
        &f,
        request(&f, Method::POST, uri, bundle, Some("application/fhir+json"), Some(([7; 16], crate::clock::now_ms()))),
    )
    .await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        (status, answer["code"].as_str(), answer["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("duplicate_key"), Some("entry"))
    );
    assert_eq!(f.state.metrics.readings.load(std::sync::atomic::Ordering::Relaxed), 0);
}
