//! The bodies of cairn's fuzz targets (docs/fuzzing.md): one function per decoder of
//! untrusted bytes, each feeding the bytes to the decoder the node or the `cairn` command
//! uses and checking a property where one exists. A property that fails panics, which
//! libFuzzer reports as a crash.
//!
//! The binaries under `fuzz_targets/` wrap these for `cargo fuzz` (feature `libfuzzer`);
//! `tests/corpus.rs` replays every input kept under `corpus/<target>/` through them in
//! the ordinary test suite, so a crash once found stays a test.
//!
//! Properties:
//! - bcs types (transactions, blocks, `/cairn/req/1` messages): what decodes is canonical,
//!   so encoding it again gives the same bytes;
//! - consensus and sync messages: what the codec decodes, it encodes back to the same
//!   bytes;
//! - signatures: a batch commitment or a signed request that verifies under the fixture's
//!   key is exactly what that key signs (ed25519 is deterministic and the strict rules
//!   refuse other encodings), so nothing the fuzzer invents is accepted;
//! - receipts, erasure and agreement certificates: the only ones that verify against the
//!   synthetic chain's genesis are those its validators certified (the worked examples of
//!   `tests/tests/common`), however the fuzzer changes them;
//! - key files render back to the same seed; a genesis file that loads writes out and
//!   loads again as the same genesis (same hash);
//! - the FHIR intake keeps every accepted resource byte for byte as a slice of the body;
//! - every Observation the smart-shoe CSV reader produces is one the node's intake accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::OnceLock;

use arc_malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use arc_malachitebft_app_channel::app::streaming::StreamMessage;
use arc_malachitebft_app_channel::app::types::codec::Codec;
use arc_malachitebft_app_channel::app::types::core::{PolkaCertificate, ValidatorProof};
use arc_malachitebft_app_channel::app::types::sync::{Request, Response, Status};
use bytes::Bytes;
use cairn_node::consensus::codec::CairnCodec;
use cairn_node::consensus::context::{CairnContext, ProposalPart};
use cairn_node::records::fhir::{self, Format};
use cairn_proto::Keypair;
use cairn_proto::encoding::{decode, encode};
use cairn_proto::genesis::Genesis;
use cairn_proto::signed::SignedBody as _;
use cairn_proto::transaction::{Block, Transaction};

/// Largest input the targets take whole (the decoders' own limits are larger).
const LIMIT: usize = 1 << 20;

/// The key whose signatures the corpus holds (validator 0 of `cairn_node::testing`).
fn known_key() -> &'static Keypair {
    static KEY: OnceLock<Keypair> = OnceLock::new();
    KEY.get_or_init(|| cairn_node::testing::validator(0))
}

/// The synthetic chain of the offline-verification tests (`tests/tests/common`): its
/// worked erasure and agreement certificates are the only ones that verify against their
/// genesis, since their validators' keys sign nothing else.
#[path = "../../tests/tests/common/mod.rs"]
mod common;

struct Examples {
    erasure: (Genesis, cairn_proto::erasure::ErasureCertificate),
    agreement: (Genesis, cairn_proto::consent::AgreementCertificate),
}

fn examples() -> &'static Examples {
    static EXAMPLES: OnceLock<Examples> = OnceLock::new();
    EXAMPLES.get_or_init(|| Examples { erasure: common::erasure::example(), agreement: common::agreement::example() })
}

/// A transaction (mempool gossip, `POST /v1/transactions`, block bodies).
pub fn transaction(data: &[u8]) {
    let Ok(tx) = decode::<Transaction>(data, LIMIT) else { return };
    assert_eq!(encode(&tx).unwrap(), data, "decode accepted a non-canonical transaction");
    let _ = tx.id();
    if let Transaction::BatchCommit(signed) = &tx {
        let key = known_key();
        if signed.verify(&key.public()).is_ok() {
            let ours = signed.body.clone().sign(key).unwrap();
            assert_eq!(ours.signature, signed.signature, "a signature the key did not make verified");
        }
    }
}

/// A block (proposal parts, sync responses, the block store).
pub fn block(data: &[u8]) {
    let Ok(block) = decode::<Block>(data, LIMIT) else { return };
    assert_eq!(encode(&block).unwrap(), data, "decode accepted a non-canonical block");
    let _ = Block::compute_body_hash(&block.transactions);
    let _ = block.header.hash();
    let _ = cairn_node::consensus::codec::decode_block(&Bytes::copy_from_slice(data));
}

fn codec_roundtrip<T>(bytes: &[u8])
where
    CairnCodec: Codec<T>,
{
    let codec = CairnCodec;
    let Ok(message) = Codec::<T>::decode(&codec, Bytes::copy_from_slice(bytes)) else { return };
    let again = Codec::<T>::encode(&codec, &message).expect("a decoded message encodes");
    assert_eq!(again.as_ref(), bytes, "the codec decoded what it does not encode back");
}

/// Consensus and sync messages from peers: the first byte picks the message type.
pub fn consensus(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else { return };
    type Ctx = CairnContext;
    match kind % 10 {
        0 => codec_roundtrip::<SignedConsensusMsg<Ctx>>(bytes),
        1 => codec_roundtrip::<ProposalPart>(bytes),
        2 => codec_roundtrip::<LivenessMsg<Ctx>>(bytes),
        3 => codec_roundtrip::<StreamMessage<ProposalPart>>(bytes),
        4 => codec_roundtrip::<ValidatorProof<Ctx>>(bytes),
        5 => codec_roundtrip::<ProposedValue<Ctx>>(bytes),
        6 => codec_roundtrip::<PolkaCertificate<Ctx>>(bytes),
        7 => codec_roundtrip::<Status<Ctx>>(bytes),
        8 => codec_roundtrip::<Request<Ctx>>(bytes),
        _ => codec_roundtrip::<Response<Ctx>>(bytes),
    }
}

/// `/cairn/req/1` requests and responses between validators: the first byte picks which.
pub fn wire(data: &[u8]) {
    use cairn_node::records::wire;
    let Some((&kind, bytes)) = data.split_first() else { return };
    if kind % 2 == 0 {
        if let Ok(m) = decode::<wire::Request>(bytes, cairn_node::net::codec::MAX_MESSAGE) {
            assert_eq!(encode(&m).unwrap(), bytes);
        }
    } else if let Ok(m) = decode::<wire::Response>(bytes, cairn_node::net::codec::MAX_MESSAGE) {
        assert_eq!(encode(&m).unwrap(), bytes);
    }
}

/// An anchor receipt as a gateway or a regulator holds it (JSON), or its bcs bytes.
pub fn receipt(data: &[u8]) {
    use cairn_proto::receipt::AnchorReceipt;
    let parsed = serde_json::from_slice::<AnchorReceipt>(data)
        .ok()
        .or_else(|| cairn_proto::version::decode_versioned::<AnchorReceipt>(data, LIMIT).ok());
    let (genesis, certificate) = &examples().erasure;
    if let Some(r) = parsed
        && r.verify(genesis).is_ok()
    {
        assert_eq!(&r, &certificate.record, "a receipt nobody issued verified");
    }
}

/// An erasure certificate as `cairn verify-erasure` reads it: JSON or its bcs bytes.
pub fn erasure_certificate(data: &[u8]) {
    use cairn_proto::erasure::ErasureCertificate;
    let parsed = serde_json::from_slice::<ErasureCertificate>(data)
        .ok()
        .or_else(|| cairn_proto::version::decode_versioned::<ErasureCertificate>(data, LIMIT).ok());
    let (genesis, certificate) = &examples().erasure;
    if let Some(c) = parsed
        && c.verify(genesis).is_ok()
    {
        assert_eq!(&c, certificate, "an erasure certificate nobody issued verified");
    }
}

/// An agreement certificate as `cairn verify-agreement` reads it (JSON).
pub fn agreement_certificate(data: &[u8]) {
    let (genesis, certificate) = &examples().agreement;
    if let Ok(c) = serde_json::from_slice::<cairn_proto::consent::AgreementCertificate>(data)
        && c.verify(genesis).is_ok()
    {
        assert_eq!(&c, certificate, "an agreement certificate nobody issued verified");
    }
}

/// A consent-layer document as a node takes it, and the FHIR `Consent` inside.
pub fn consent_document(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = cairn_client::consent::DocumentFile::parse(text);
    let _ = cairn_node::records::consent::fhir::parse(text);
    let _ = fhir::check_unique_keys(data);
    if let Ok(doc) = serde_json::from_slice::<cairn_proto::consent::Document>(data) {
        let _ = doc.verify_signatures(&cairn_proto::Hash32([0; 32]));
    }
}

/// A key file (`node.key`, `gw.key`).
pub fn keyfile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(seed) = cairn_proto::keyfile::parse(text) {
        let again = cairn_proto::keyfile::parse(&cairn_proto::keyfile::render(&seed)).unwrap();
        assert_eq!(again.expose(), seed.expose(), "a key file does not render back to its seed");
    }
}

/// A genesis file (TOML).
pub fn genesis(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(g) = Genesis::from_toml(text) {
        let written = g.to_toml().expect("a loaded genesis writes out");
        let again = Genesis::from_toml(&written).expect("a written genesis loads");
        assert_eq!(again.hash().unwrap(), g.hash().unwrap(), "a genesis changed through TOML");
    }
}

/// The ingest body (`POST /v1/readings`): the first byte picks JSON lines or a Bundle.
pub fn fhir_intake(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else { return };
    let format = if kind % 2 == 0 { Format::JsonLines } else { Format::Bundle };
    if let Ok(Ok(readings)) = fhir::parse(body, format, 64 * 1024) {
        for r in readings {
            assert!(contains(body, &r.resource), "an accepted resource is not the bytes sent");
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A smart-shoe CSV export: every Observation it becomes is accepted by the node.
pub fn shoe_csv(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(observations) = cairn_client::csv::to_observations(text) else { return };
    for o in observations {
        match fhir::parse(o.as_bytes(), Format::JsonLines, 64 * 1024) {
            Ok(Ok(readings)) => assert_eq!(readings.len(), 1),
            other => panic!("the CSV reader made an Observation the node refuses: {other:?}\n{o}"),
        }
    }
}

/// The signing headers of a request (`x-cairn-*`), then the statement they sign: lines
/// `name: value` up to an empty line, then `METHOD PATH?QUERY`, then the body.
pub fn signed_request(data: &[u8]) {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    use cairn_proto::request::RequestToSign;
    let mut headers = HeaderMap::new();
    let mut rest = data;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let (line, tail) = rest.split_at(end);
        rest = &tail[1..];
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let Ok(parsed) = cairn_node::api::auth::parse_headers(&headers) else { return };
    let (target, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let target = String::from_utf8_lossy(target);
    let (method, uri) = target.split_once(' ').unwrap_or(("POST", "/v1/readings"));
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let key = known_key();
    let statement = RequestToSign::new(
        cairn_proto::Hash32([1; 32]),
        key.public().key_id(),
        method,
        path,
        query,
        body,
        parsed.key,
        parsed.timestamp_ms,
        parsed.nonce,
    );
    // The headers the statement renders parse back to what was read.
    let mut again = HeaderMap::new();
    for (name, value) in statement.headers(&parsed.signature) {
        again.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    assert_eq!(cairn_node::api::auth::parse_headers(&again).unwrap(), parsed, "signing headers do not round-trip");
    if statement.verify(&key.public(), &parsed.signature).is_ok() {
        assert_eq!(statement.sign(key).unwrap(), parsed.signature, "a signature the key did not make verified");
    }
}

/// Seed inputs for every target: real examples of what each decoder is meant to take
/// (`cargo run -p cairn-fuzz --example seeds` writes them under `corpus/`).
pub fn seeds(vectors: &std::path::Path) -> Vec<(&'static str, String, Vec<u8>)> {
    use arc_malachitebft_app_channel::app::types::core::Round;
    use cairn_node::consensus::context::{Address, BlockValue, Height};
    use cairn_proto::ledger::BatchKind;
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let key = known_key();
    for seq in 0..2 {
        let tx = cairn_node::testing::batch(key, BatchKind::Anchors, seq, 64);
        out.push(("transaction", format!("batch-{seq}"), encode(&tx).unwrap()));
    }
    let genesis = common::genesis();
    let mut state = cairn_node::ledger::LedgerState::from_genesis(&genesis, Default::default()).unwrap();
    let proposer = common::erasure::keypair(common::SEEDS[0]).public().key_id();
    let (block, _) = state.propose(vec![common::batch(0)], genesis.genesis_time_ms + 1, proposer).unwrap();
    out.push(("block", "one-batch".into(), encode(&block).unwrap()));
    let part = ProposalPart {
        height: Height(1),
        round: Round::new(0),
        pol_round: Round::Nil,
        proposer: Address(proposer),
        value: BlockValue::new(block).unwrap(),
    };
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&Codec::<ProposalPart>::encode(&CairnCodec, &part).unwrap());
    out.push(("consensus", "proposal-part".into(), bytes));
    let mut status = vec![0u8];
    status.extend(encode(&cairn_node::records::wire::Request::Status).unwrap());
    out.push(("wire", "status".into(), status));
    let ex = examples();
    out.push(("receipt", "worked-example".into(), serde_json::to_vec_pretty(&ex.erasure.1.record).unwrap()));
    out.push(("erasure_certificate", "worked-example".into(), serde_json::to_vec_pretty(&ex.erasure.1).unwrap()));
    out.push(("agreement_certificate", "worked-example".into(), serde_json::to_vec_pretty(&ex.agreement.1).unwrap()));
    out.push(("consent_document", "agreement".into(), serde_json::to_vec_pretty(&ex.agreement.1.document).unwrap()));
    out.push(("consent_document", "agreement-terms".into(), ex.agreement.1.document.json.clone().into_bytes()));
    let seed = cairn_node::testing::seed(1);
    out.push(("keyfile", "seed-1".into(), cairn_proto::keyfile::render(&seed).as_bytes().to_vec()));
    out.push(("genesis", "synthetic".into(), genesis.to_toml().unwrap().into_bytes()));
    let csv = format!(
        "{}\r\n\"Patient/1\",2026-11-21T10:00:00+09:00,2026-11-21T10:05:00+09:00,500,101.50,1.30\r\n",
        cairn_client::csv::HEADER
    );
    out.push(("shoe_csv", "one-row".into(), csv.into_bytes()));
    // Published FHIR vectors and field cases, as JSON lines (0) or Bundles (1).
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut stack = vec![vectors.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read(&path) else { continue };
        if name.ends_with(".csv") {
            out.push(("shoe_csv", name, text));
        } else if name.ends_with(".jsonl") {
            out.push(("fhir_intake", name, [&[0u8][..], &text].concat()));
        } else if name.ends_with(".json") {
            let bundle = text.windows(8).any(|w| w == b"\"Bundle\"");
            let body = if bundle {
                text
            } else {
                serde_json::from_slice::<serde_json::Value>(&text).map(|v| v.to_string().into_bytes()).unwrap_or(text)
            };
            out.push(("fhir_intake", name, [&[u8::from(bundle)][..], &body].concat()));
        }
    }
    let statement = cairn_proto::request::RequestToSign::new(
        cairn_proto::Hash32([1; 32]),
        key.public().key_id(),
        "POST",
        "/v1/readings",
        "purpose=TREAT&retention_days=30",
        b"{}",
        key.public().key_id(),
        1_764_000_000_000,
        [7; 16],
    );
    let mut request = String::new();
    for (name, value) in statement.headers(&statement.sign(key).unwrap()) {
        request.push_str(&format!("{name}: {value}\n"));
    }
    request.push_str("\nPOST /v1/readings?purpose=TREAT&retention_days=30\n{}");
    out.push(("signed_request", "readings".into(), request.into_bytes()));
    out
}
