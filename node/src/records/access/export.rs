//! The patient's export (ADR 018; docs/access.md "Export"): every reading of the subject
//! (byte for byte, with its anchor receipt), every consent-layer document (with its
//! signatures), every access-log entry (with its proof), the certificate of every erased
//! record whose erasure the subject's log names (it proves itself), in one FHIR `Bundle`, signed by
//! this validator over the exact bytes of every entry (`cairn_proto::export`). The export
//! itself is an access event, logged before the answer.

use std::collections::BTreeSet;

use cairn_proto::access::{AccessAction, AccessEvent, Accessor, Disclosure, Outcome};
use cairn_proto::consent::{DocumentKind, Subject};
use cairn_proto::export::{ERASURE_URL, ExportItem, ExportManifest, SIGNATURE_URL, binary, item_hash};
use cairn_proto::record::RecordId;
use cairn_proto::{KeyId, PublicKey};
use serde::Serialize;
use serde_json::value::RawValue;

use super::audit_event::audit_event;
use crate::records::consent::{ConsentError, DocumentQuery};
use crate::records::wire::{Request, Response};
use crate::records::{Records, RecordsError};

#[derive(Serialize)]
struct Link {
    relation: &'static str,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    full_url: String,
    resource: Box<RawValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    link: Vec<Link>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    resource_type: &'static str,
    r#type: &'static str,
    timestamp: String,
    entry: Vec<Entry>,
}

fn raw(v: &impl Serialize) -> Result<Box<RawValue>, RecordsError> {
    serde_json::value::to_raw_value(v).map_err(|e| RecordsError::Fatal(e.to_string()))
}

fn raw_text(text: String) -> Result<Box<RawValue>, RecordsError> {
    RawValue::from_string(text).map_err(|e| RecordsError::Fatal(e.to_string()))
}

/// An item and its proof entry.
fn pair(entries: &mut Vec<Entry>, url: String, resource: Box<RawValue>, proof: Option<Box<RawValue>>) {
    let proof_url = url.replacen("urn:cairn:", "urn:cairn:proof:", 1);
    let link = proof.as_ref().map(|_| Link { relation: "proof", url: proof_url.clone() }).into_iter().collect();
    entries.push(Entry { full_url: url, resource, link });
    if let Some(p) = proof {
        entries.push(Entry { full_url: proof_url, resource: p, link: Vec::new() });
    }
}

/// What an export holds, counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exported {
    /// Readings.
    pub readings: usize,
    /// Documents.
    pub documents: usize,
    /// Access-log entries.
    pub disclosures: usize,
    /// Erasure certificates of erased records.
    pub erasures: usize,
}

impl Records {
    /// The export of `subject` for `caller` (a key bound to it), as the bundle's JSON text.
    pub async fn export(
        &self,
        subject: &Subject,
        caller: &PublicKey,
        now_ms: u64,
    ) -> Result<(String, Exported), ConsentError> {
        let set = self.gather(DocumentQuery::Subject(subject.clone())).await?;
        if set.role_of(caller).is_none() {
            return Err(ConsentError::NotFound(RecordId([0; 16])));
        }
        let mut entries = Vec::new();
        let mut counted = Exported::default();
        // Readings, wherever they are held, byte for byte, with a receipt.
        let sref = super::super::consent::subject_ref(subject);
        let mut rids: BTreeSet<RecordId> = BTreeSet::new();
        for a in self.subject_here(sref.clone()).await? {
            if a.record.kind.is_reading() {
                rids.insert(a.record.rid);
            }
        }
        let peers: Vec<KeyId> = self.validators.iter().filter(|k| **k != self.me).copied().collect();
        for answer in
            futures::future::join_all(peers.iter().map(|p| self.ask(*p, Request::Subject(sref.clone())))).await
        {
            if let Ok(Response::Records(list)) = answer {
                rids.extend(list.into_iter().filter(|a| a.record.kind.is_reading()).map(|a| a.record.rid));
            }
        }
        for rid in &rids {
            let (answer, _) = match self.read_anywhere(*rid, subject.gateway).await {
                Ok(found) => found,
                Err(RecordsError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let proof = answer
                .receipt
                .as_ref()
                .map(|r| raw(&binary(&serde_json::to_vec(r).unwrap_or_default())))
                .transpose()?;
            pair(&mut entries, format!("urn:cairn:record:{rid}"), raw_text(answer.record.resource)?, proof);
            counted.readings += 1;
        }
        // Documents: a FHIR Consent as given; the others as Binary. The proof is the
        // signed document (its signatures verify against the chain).
        for d in &set.docs {
            let resource = match d.document.kind {
                DocumentKind::Consent => raw_text(d.document.json.clone())?,
                _ => raw(&binary(d.document.json.as_bytes()))?,
            };
            let signed = serde_json::to_vec(&d.document).map_err(|e| RecordsError::Fatal(e.to_string()))?;
            pair(&mut entries, format!("urn:cairn:document:{}", d.id), resource, Some(raw(&binary(&signed))?));
            counted.documents += 1;
        }
        // The access log, with proofs.
        let (log, _missing) = self.disclosures(subject).await?;
        let mut erasures = Vec::new();
        for e in log {
            let Some(entry) = e.entry else { continue };
            if let AccessAction::Erase { request, .. } = entry.event.action {
                erasures.push((e.node, request, entry.event.records.clone()));
            }
            let event = raw(&audit_event(&e.handle, &entry.event))?;
            let d = Disclosure { entry, receipt: e.receipt };
            let proof = serde_json::to_vec(&d).map_err(|e| RecordsError::Fatal(e.to_string()))?;
            pair(&mut entries, format!("urn:cairn:audit:{}", e.handle), event, Some(raw(&binary(&proof))?));
            counted.disclosures += 1;
        }
        // The certificates of the subject's erased records, from the validator that
        // coordinated each request (its erase event names the request's hash). A request
        // whose custodians are still erasing has none yet.
        // Only the records the event names: a request may cover other subjects' records.
        let mut exported: BTreeSet<(cairn_proto::Hash32, RecordId)> = BTreeSet::new();
        for (node, request, rids) in erasures {
            let certificates = if node == self.me {
                self.erasures.store.certificates_of(&request, &rids).map_err(RecordsError::from)?
            } else {
                match self.ask(node, Request::ErasureCertificates(request, rids.clone())).await {
                    Ok(Response::ErasureCertificates(list)) => list,
                    _ => Vec::new(),
                }
            };
            for c in certificates.into_iter().filter(|c| c.request_hash == request && rids.contains(&c.record.rid)) {
                if !exported.insert((request, c.record.rid)) {
                    continue;
                }
                let bytes = serde_json::to_vec(&c).map_err(|e| RecordsError::Fatal(e.to_string()))?;
                let url = format!("{ERASURE_URL}{request}:{}", c.record.rid);
                pair(&mut entries, url, raw(&binary(&bytes))?, None);
                counted.erasures += 1;
            }
        }
        // The export is itself an access event, logged before the answer.
        let event = AccessEvent {
            version: 1,
            recorded_ms: now_ms,
            node: self.me,
            action: AccessAction::Export,
            outcome: Outcome::Granted,
            purpose: "PATRQT".into(),
            accessor: Accessor::Patient { key: caller.key_id() },
            basis: None,
            records: rids.iter().copied().collect(),
            withheld: 0,
            reason: None,
            justification: None,
            trace: vec!["the patient's own export (right of access)".into()],
        };
        self.log_access(subject, event).await?;
        let items = entries
            .iter()
            .map(|e| ExportItem { url: e.full_url.clone(), hash: item_hash(e.resource.get().as_bytes()) })
            .collect();
        let manifest =
            ExportManifest { version: 1, chain: self.ledger.chain(), node: self.me, created_ms: now_ms, items };
        let signed = self.erasures.sign_export(manifest).map_err(|e| RecordsError::Fatal(e.to_string()))?;
        let signed = serde_json::to_vec(&signed).map_err(|e| RecordsError::Fatal(e.to_string()))?;
        entries.push(Entry { full_url: SIGNATURE_URL.into(), resource: raw(&binary(&signed))?, link: Vec::new() });
        let timestamp = i64::try_from(now_ms)
            .ok()
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map_or_else(String::new, |t| t.to_string());
        let bundle = Bundle { resource_type: "Bundle", r#type: "collection", timestamp, entry: entries };
        let text = serde_json::to_string(&bundle).map_err(|e| RecordsError::Fatal(e.to_string()))?;
        Ok((text, counted))
    }
}
