//! The OpenAPI 3.1 document, generated from the handlers' types with `utoipa` (ADR 014):
//! every route is registered through [`routes`], which builds the router and the
//! document from the same list, so a route cannot be served without being documented.
//! Formats defined in `cairn-proto` (receipts, certificates, blocks) are named schemas
//! of JSON objects pointing to their specification in `docs/formats/`; `cairn-proto`
//! stays free of API dependencies.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ErrorBody, ItemError};
use super::{ApiState, access, consent, erasures, gateway, ledger};

macro_rules! format_schema {
    ($doc:ident, $name:literal, $description:literal, [$($required:literal),*]) => {
        #[doc = concat!("The schema of `", $name, "`: ", $description)]
        #[derive(Debug)]
        pub struct $doc;
        impl PartialSchema for $doc {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some($description))
                    $(.required($required))*
                    .into()
            }
        }
        impl ToSchema for $doc {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

format_schema!(
    AnchorReceiptDoc,
    "AnchorReceipt",
    "proof that a record's leaf is committed on chain, verifiable offline from the genesis file (docs/formats/receipt.md; cairn_proto::receipt::AnchorReceipt)",
    [
        "version",
        "rid",
        "manifest",
        "commitment",
        "leaf",
        "batch",
        "leaf_index",
        "batch_proof",
        "log_index",
        "log_proof",
        "block"
    ]
);
format_schema!(
    ErasureCertificateDoc,
    "ErasureCertificate",
    "proof that one record was erased at every custodian, verifiable offline (docs/formats/erasure-certificate.md)",
    ["version", "trigger", "request_hash", "requested_at_ms", "deadline_ms", "record", "erasures"]
);
format_schema!(
    ChallengeAnswerDoc,
    "SignedChallengeAnswer",
    "a custodian's signed answer to a live challenge: whether it holds the record now (docs/formats/erasure-certificate.md, live challenge)",
    ["body", "signature"]
);
format_schema!(
    CertifiedBlockDoc,
    "CertifiedBlock",
    "a decided block with its commit certificate (cairn_proto::consensus::CertifiedBlock; `cairn verify-block`)",
    ["block", "certificate"]
);
format_schema!(
    CertifiedHeaderDoc,
    "CertifiedHeader",
    "a block header with its commit certificate: a checkpoint (cairn_proto::consensus::CertifiedHeader)",
    ["header", "certificate"]
);

format_schema!(
    DocumentReceiptDoc,
    "DocumentReceipt",
    "proof that a consent event's leaf is committed on chain, verifiable offline (cairn_proto::consent::DocumentReceipt; docs/formats/agreement-certificate.md)",
    ["version", "id", "commitment", "leaf", "batch", "leaf_index", "batch_proof", "log_index", "log_proof", "block"]
);
format_schema!(
    AgreementCertificateDoc,
    "AgreementCertificate",
    "an executed three-party agreement with the proof of its commitment, verifiable offline (docs/formats/agreement-certificate.md)",
    ["version", "document", "salt", "receipt"]
);

format_schema!(
    AccessEntryDoc,
    "AccessEntry",
    "an access event with its handle and commitment salt (cairn_proto::access::AccessEntry; docs/access.md)",
    ["version", "handle", "salt", "event"]
);
format_schema!(
    AccessReceiptDoc,
    "AccessReceipt",
    "proof that an access event's leaf is committed on chain, verifiable offline (cairn_proto::access::AccessReceipt; docs/access.md)",
    [
        "version",
        "handle",
        "commitment",
        "leaf",
        "batch",
        "leaf_index",
        "batch_proof",
        "log_index",
        "log_proof",
        "block"
    ]
);

/// The request signature (DESIGN.md §9, `cairn_proto::request`).
struct Signature;

impl Modify for Signature {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "cairnSignature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-cairn-signature",
                "ed25519 signature (128 hex digits) over \"cairn/sig/request/v2\" || bcs(RequestToSign{version 2, \
                 chain (genesis hash), audience (the node's key id, GET /v1/identity), method, path, raw query, \
                 blake3(body as sent), key id, timestamp ms, nonce}); also send x-cairn-signature-version, x-cairn-key, \
                 x-cairn-timestamp and x-cairn-nonce (ADR 015; tests/schemathesis/hooks.py signs in Python)",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "cairn node API", version = "1", description = "A cairn consortium node: readings in, records, receipts, erasure certificates and ledger proofs out."),
    components(schemas(ErrorBody, ItemError)),
    modifiers(&Signature)
)]
struct ApiDoc;

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "node",
    responses((status = 200, body = Object, description = "this OpenAPI document")))]
async fn openapi_json() -> Json<Document> {
    Json(document())
}

fn router_and_document() -> (Router<Arc<ApiState>>, Document) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ledger::healthz))
        .routes(routes!(ledger::readyz))
        .routes(routes!(ledger::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(ledger::submit))
        .routes(routes!(ledger::block))
        .routes(routes!(ledger::checkpoint))
        .routes(routes!(ledger::checkpoint_at))
        .routes(routes!(ledger::inclusion))
        .routes(routes!(ledger::consistency))
        .routes(routes!(ledger::admin))
        .routes(routes!(ledger::identity))
        .routes(routes!(gateway::readings))
        .routes(routes!(gateway::record))
        .routes(routes!(gateway::receipt))
        .routes(routes!(gateway::receipts))
        .routes(routes!(erasures::erasures, erasures::erasure_list))
        .routes(routes!(erasures::erasure_status))
        .routes(routes!(erasures::erasure_certificate))
        .routes(routes!(erasures::place_holds))
        .routes(routes!(erasures::release_holds))
        .routes(routes!(erasures::challenge))
        .routes(routes!(consent::policy))
        .routes(routes!(consent::submit))
        .routes(routes!(consent::search))
        .routes(routes!(consent::document))
        .routes(routes!(consent::receipt))
        .routes(routes!(consent::certificate))
        .routes(routes!(consent::access_list))
        .routes(routes!(consent::access_record))
        .routes(routes!(access::disclosures))
        .routes(routes!(access::export))
        .routes(routes!(access::access_log))
        .routes(routes!(access::reviews))
        .routes(routes!(access::close_review))
        .split_for_parts()
}

/// Every route the node serves, before its state and fallbacks are added.
pub fn routes() -> Router<Arc<ApiState>> {
    router_and_document().0
}

/// The OpenAPI document of every route [`routes`] serves (built once).
pub fn document() -> Document {
    static DOCUMENT: std::sync::OnceLock<Document> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| complete(router_and_document().1)).clone()
}

/// The answers every signed route may give before its handler runs: a header it
/// cannot read (400), a bad or replayed signature or an unknown key (401), the wrong
/// role (403), a stalled body (408), a body past the limit (413), a content coding
/// other than gzip (415), the replay window full (429), a store failure (500).
const SIGNED_ROUTE_ERRORS: [&str; 8] = ["400", "401", "403", "408", "413", "415", "429", "500"];
/// The answers every route may give before its handler runs: no or two `Host` headers
/// (400), a content coding other than gzip (415).
const EVERY_ROUTE_ERRORS: [&str; 2] = ["400", "415"];

/// Adds what the handlers' annotations leave to one place: the errors every signed route
/// shares, and a description for every response (OpenAPI requires one).
fn complete(mut doc: Document) -> Document {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
    let error = || {
        ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name(<ErrorBody as ToSchema>::name())))).build()
    };
    let header = |name: &str, schema: ObjectBuilder, description: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(description))
            .schema(Some(schema))
            .build()
    };
    let hex =
        |digits: usize| ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!("^[0-9a-f]{{{digits}}}$")));
    // The signature itself is the `cairnSignature` security scheme; these go with it.
    let signing_headers = [
        header(cairn_proto::request::HEADER_KEY, hex(32), "the caller's key id"),
        header(
            cairn_proto::request::HEADER_TIMESTAMP,
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)),
            "Unix milliseconds; within the node's allowed skew",
        ),
        header(cairn_proto::request::HEADER_NONCE, hex(32), "random, never used twice"),
        header(
            cairn_proto::request::HEADER_VERSION,
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["2"])),
            "the signature format (2: bound to the chain and the node, ADR 015)",
        ),
    ];
    let retry_after = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0))))
        .description(Some("seconds to wait before retrying"))
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
        for op in operations.into_iter().flatten() {
            let signed = op.security.as_ref().is_some_and(|s| !s.is_empty());
            if signed {
                op.parameters.get_or_insert_with(Vec::new).extend(signing_headers.iter().cloned().map(RefOr::T));
                for code in SIGNED_ROUTE_ERRORS {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| ResponseBuilder::new().content("application/json", error()).build().into());
                }
            }
            for code in EVERY_ROUTE_ERRORS {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| ResponseBuilder::new().content("application/json", error()).build().into());
            }
            for (code, response) in &mut op.responses.responses {
                if let RefOr::T(r) = response
                    && code == "429"
                {
                    r.headers.insert("Retry-After".into(), RefOr::T(retry_after.clone()));
                }
                if let RefOr::T(r) = response
                    && r.description.is_empty()
                {
                    let reason = code.parse::<u16>().ok().and_then(|c| axum::http::StatusCode::from_u16(c).ok());
                    let reason = reason.and_then(|s| s.canonical_reason()).unwrap_or("answer");
                    r.description = if code.starts_with(['4', '5']) {
                        format!("{reason}: the JSON error body; `code` says which")
                    } else {
                        reason.to_string()
                    };
                }
            }
        }
    }
    doc
}
