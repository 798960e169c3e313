//! The patient's export (ADR 018; docs/access.md "Export"): fetching it, and verifying it
//! offline against the genesis file — the validator's signature over every entry's exact
//! bytes, then each item's proof against the chain.

use std::collections::HashMap;

use cairn_proto::access::AccessAction;
use cairn_proto::consent::{Document, DocumentKind, Subject};
use cairn_proto::erasure::ErasureCertificate;
use cairn_proto::export::{
    ERASURE_URL, ExportError, SIGNATURE_URL, SignedExportManifest, binary_data, export_error, item_hash,
};
use cairn_proto::genesis::Genesis;
use cairn_proto::receipt::AnchorReceipt;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::gateway::{Gateway, GatewayError};

impl Gateway {
    /// The export of `subject` (the caller must be bound to it): the bundle's JSON bytes.
    pub fn export(&self, subject: &Subject) -> Result<Vec<u8>, GatewayError> {
        let body = serde_json::to_vec(subject).map_err(|e| GatewayError::Local(e.to_string()))?;
        Ok(self.call("POST", "/v1/export", "application/json", &[], &body)?.1)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle<'a> {
    resource_type: String,
    #[serde(borrow)]
    entry: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    full_url: String,
    #[serde(borrow)]
    resource: &'a RawValue,
}

/// What an export holds, once verified.
#[derive(Debug, Clone)]
pub struct VerifiedExport {
    /// Readings (each with a verified anchor receipt).
    pub readings: usize,
    /// Consent-layer documents (each with verified signatures).
    pub documents: usize,
    /// Access-log entries (each with a verified proof).
    pub disclosures: usize,
    /// Erasure certificates of the subject's erased records (each verified).
    pub erasures: usize,
    /// Records the subject's log names as erased whose certificate the export does not
    /// hold yet (custodians still erasing when exported: export again later).
    pub erasures_pending: usize,
    /// Readings and access-log entries not yet committed on chain when exported (no
    /// proof yet: export again later to get one); the validator's signature covers them.
    pub pending: usize,
    /// The validator that signed the export.
    pub node: cairn_proto::KeyId,
}

fn proof_of(entries: &HashMap<&str, &RawValue>, url: &str) -> Result<Vec<u8>, ExportError> {
    let proof_url = url.replacen("urn:cairn:", "urn:cairn:proof:", 1);
    let raw = entries.get(proof_url.as_str()).ok_or_else(|| export_error(url, "no proof entry"))?;
    binary_data(raw.get()).map_err(|e| export_error(&proof_url, e))
}

/// Verifies an export offline; `progress(done, total)` is told after each item.
///
/// # Errors
/// The first entry that does not verify, by its URL.
pub fn verify_export(
    genesis: &Genesis,
    text: &[u8],
    mut progress: impl FnMut(usize, usize),
) -> Result<VerifiedExport, ExportError> {
    let bundle: Bundle = serde_json::from_slice(text).map_err(|e| export_error("bundle", e.to_string()))?;
    if bundle.resource_type != "Bundle" {
        return Err(export_error("bundle", "not a FHIR Bundle"));
    }
    let chain = genesis.hash().map_err(|e| export_error("genesis", e.to_string()))?;
    let (last, items) = bundle.entry.split_last().ok_or_else(|| export_error("bundle", "no entry"))?;
    if last.full_url != SIGNATURE_URL {
        return Err(export_error(SIGNATURE_URL, "the last entry is not the export's signature"));
    }
    let signed: SignedExportManifest =
        serde_json::from_slice(&binary_data(last.resource.get()).map_err(|e| export_error(SIGNATURE_URL, e))?)
            .map_err(|e| export_error(SIGNATURE_URL, e.to_string()))?;
    signed.verify(genesis)?;
    // Every entry is one the validator signed, byte for byte, in order.
    let mut listed = signed.manifest.items.iter();
    let mut by_url: HashMap<&str, &RawValue> = HashMap::new();
    for e in items {
        let Some(item) = listed.next() else { return Err(export_error(&e.full_url, "not in the signed manifest")) };
        if item.url != e.full_url {
            return Err(export_error(&e.full_url, format!("the signed manifest names {} here", item.url)));
        }
        if item.hash != item_hash(e.resource.get().as_bytes()) {
            return Err(export_error(&e.full_url, "its bytes are not what the validator signed"));
        }
        if by_url.insert(e.full_url.as_str(), e.resource).is_some() {
            return Err(export_error(&e.full_url, "twice in the bundle"));
        }
    }
    if let Some(missing) = listed.next() {
        return Err(export_error(&missing.url, "signed, but missing from the bundle"));
    }
    // Each item's proof against the chain.
    let mut out = VerifiedExport {
        readings: 0,
        documents: 0,
        disclosures: 0,
        erasures: 0,
        erasures_pending: 0,
        pending: 0,
        node: signed.manifest.node,
    };
    // Every record an erase event of the log names, by (request hash, record id).
    let mut erased: Vec<String> = Vec::new();
    let total = items.iter().filter(|e| !e.full_url.starts_with("urn:cairn:proof:")).count();
    let mut done = 0;
    for e in items.iter().filter(|e| !e.full_url.starts_with("urn:cairn:proof:")) {
        let url = e.full_url.as_str();
        let has_proof = by_url.contains_key(url.replacen("urn:cairn:", "urn:cairn:proof:", 1).as_str());
        if url.starts_with("urn:cairn:record:") && !has_proof {
            out.pending += 1;
        } else if let Some(rid) = url.strip_prefix("urn:cairn:record:") {
            let receipt: AnchorReceipt = serde_json::from_slice(&proof_of(&by_url, url)?)
                .map_err(|err| export_error(url, format!("its proof is not an anchor receipt: {err}")))?;
            if receipt.rid.to_string() != rid {
                return Err(export_error(url, "its receipt is for another record"));
            }
            receipt.verify(genesis).map_err(|err| export_error(url, err.to_string()))?;
            out.readings += 1;
        } else if url.starts_with("urn:cairn:document:") {
            let doc: Document = serde_json::from_slice(&proof_of(&by_url, url)?)
                .map_err(|err| export_error(url, format!("its proof is not a signed document: {err}")))?;
            doc.verify_signatures(&chain).map_err(|err| export_error(url, err.to_string()))?;
            let bytes = match doc.kind {
                DocumentKind::Consent => e.resource.get().as_bytes().to_vec(),
                _ => binary_data(e.resource.get()).map_err(|err| export_error(url, err))?,
            };
            if bytes != doc.json.as_bytes() {
                return Err(export_error(url, "the resource is not the document its parties signed"));
            }
            out.documents += 1;
        } else if let Some(handle) = url.strip_prefix("urn:cairn:audit:") {
            let d: cairn_proto::access::Disclosure = serde_json::from_slice(&proof_of(&by_url, url)?)
                .map_err(|err| export_error(url, format!("its proof is not an access entry: {err}")))?;
            if d.entry.handle.to_string() != handle {
                return Err(export_error(url, "its proof is for another entry"));
            }
            if d.receipt.is_none() {
                out.pending += 1;
            } else {
                d.verify(genesis).map_err(|err| export_error(url, err.to_string()))?;
                out.disclosures += 1;
            }
            if let AccessAction::Erase { request, .. } = d.entry.event.action {
                erased.extend(d.entry.event.records.iter().map(|rid| format!("{ERASURE_URL}{request}:{rid}")));
            }
        } else if let Some(names) = url.strip_prefix(ERASURE_URL) {
            let c: ErasureCertificate =
                serde_json::from_slice(&binary_data(e.resource.get()).map_err(|err| export_error(url, err))?)
                    .map_err(|err| export_error(url, format!("not an erasure certificate: {err}")))?;
            if names != format!("{}:{}", c.request_hash, c.record.rid) {
                return Err(export_error(url, "the certificate is for another request or record"));
            }
            c.verify(genesis).map_err(|err| export_error(url, err.to_string()))?;
            out.erasures += 1;
        } else {
            return Err(export_error(url, "an entry of no known kind"));
        }
        done += 1;
        progress(done, total);
    }
    out.erasures_pending = erased.iter().filter(|url| !by_url.contains_key(url.as_str())).count();
    // A certificate no erase event of the subject's log names is not theirs to hold.
    if let Some(stray) =
        items.iter().map(|e| e.full_url.as_str()).find(|u| u.starts_with(ERASURE_URL) && !erased.iter().any(|x| x == u))
    {
        return Err(export_error(stray, "no erasure in the subject's access log names this record"));
    }
    Ok(out)
}
