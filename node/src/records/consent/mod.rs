//! Consent, purpose and access (DESIGN.md §7, sandbox conditions ⑥ ⑦ ⑧; ADR 017;
//! docs/consent.md).
//!
//! Consent-layer documents (`cairn_proto::consent`) are vault records of kind
//! `ContentType::ConsentDocument`, filed under the subject they are about, so that they
//! are encrypted like readings, anchored like readings (their record leaves) and erased
//! with the subject. They are stored at **every reachable validator — at least n − f**
//! (all but the faults the consortium tolerates), and each read decision gathers the
//! subject's documents from this node and **at least f other validators**: any n − f
//! validators and any f + 1 share one, so a revocation stored anywhere is seen by every
//! decision taken after its 201, at every node. The node that took a document also
//! commits its event leaf in a `ConsentEvents` batch; the party gets a
//! [`DocumentReceipt`] (and, for an agreement, an [`AgreementCertificate`]).
//!
//! Each node keeps an index of the documents it holds (in memory, built from the vault
//! at first use and kept up to date as documents are stored or erased).

mod check;
mod index;

pub use self::index::Documents;
pub mod decide;
pub mod fhir;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use cairn_proto::consent::{Document, DocumentReceipt, Subject, event_commitment, event_leaf};
use cairn_proto::record::{ContentType, Manifest, RecordId};
use cairn_proto::version::{Versioned, decode_versioned};
use cairn_proto::{Hash32, KeyId, PublicKey};
use serde::{Deserialize, Serialize};

use self::decide::{Doc, DocSet, Permit, Refusal, Terms};
use super::read::{ReadAnswer, RecordView};
use super::wire::{Request, Response};
use super::{Records, RecordsError};
use crate::vault::{NewRecord, StoredRecord, SubjectRef};

/// A document as a vault keeps it (the payload of its record, bcs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDocument {
    version: u8,
    /// The document as signed.
    pub document: Document,
    /// The salt of its event commitment.
    pub salt: Hash32,
    /// When the taking node received it, Unix milliseconds.
    pub received_ms: u64,
    /// The node that took it (and commits its event leaf).
    pub home: KeyId,
}

impl Versioned for StoredDocument {
    const VERSION: u8 = 1;
    fn version(&self) -> u8 {
        self.version
    }
}

/// How far in the future a revocation's `at_ms` may be (clock skew), milliseconds.
const REVOCATION_SKEW_MS: u64 = 5 * 60_000;

/// Largest stored document, bytes.
const STORED_LIMIT: usize = 256 * 1024;

/// Where a subject's documents are filed in the vault.
pub fn subject_ref(s: &Subject) -> SubjectRef {
    SubjectRef { gateway: s.gateway, local: s.reference.clone() }
}

/// The subject a vault subject reference names.
pub fn subject_of(s: &SubjectRef) -> Subject {
    Subject { gateway: s.gateway, reference: s.local.clone() }
}

/// A refusal as the API answers it: HTTP status class, reason code, message.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// The document is malformed (422): field and problem.
    #[error("`{field}`: {problem}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// Refused by a rule (403): reason code and message.
    #[error("{message}")]
    Refused {
        /// Reason code.
        code: &'static str,
        /// In words.
        message: String,
        /// Documents and rules used.
        trace: Vec<String>,
    },
    /// No such document, or not one this caller may see (404).
    #[error("no document {0} that this key may see")]
    NotFound(RecordId),
    /// The receipt is at the node that took the document (409).
    #[error("document {id} was taken by the node with key id {node} (\"taken_by\" when it was given): ask that node")]
    TakenElsewhere {
        /// The document.
        id: RecordId,
        /// The node that took it.
        node: KeyId,
    },
    /// Not enough validators answered to decide safely (503).
    #[error("{0}")]
    Unavailable(String),
    /// A store failed.
    #[error(transparent)]
    Records(#[from] RecordsError),
}

impl From<Refusal> for ConsentError {
    fn from(r: Refusal) -> Self {
        ConsentError::Refused { code: r.code, message: r.message, trace: r.trace }
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConsentError {
    ConsentError::Invalid { field: field.into(), problem: problem.into() }
}

fn refused(code: &'static str, message: impl Into<String>) -> ConsentError {
    ConsentError::Refused { code, message: message.into(), trace: Vec::new() }
}

/// Reads a stored document from a record's payload; `None` for other records.
pub fn stored_document(kind: ContentType, payload: &[u8]) -> Option<StoredDocument> {
    (kind == ContentType::ConsentDocument).then(|| decode_versioned(payload, STORED_LIMIT).ok()).flatten()
}

impl Records {
    /// Event leaves of the documents this node took: each one's "given" leaf (with
    /// `given`) and, for those whose period ended by `now_ms`, its "expired" leaf. At
    /// start all of them are queued again (the batcher skips what it committed already);
    /// each retention sweep queues the expiries.
    pub async fn document_event_leaves(&self, now_ms: u64, given: bool) -> Result<Vec<Hash32>, RecordsError> {
        let index = self.index().await?;
        let chain = self.ledger.chain();
        let fatal = |e: cairn_proto::encoding::EncodeError| RecordsError::Fatal(e.to_string());
        let mut out = Vec::new();
        for docs in index.by_subject.values() {
            for (id, d) in docs.iter().filter(|(_, d)| d.home == self.me) {
                if given {
                    let c = event_commitment(&d.salt.0, &chain, id, &d.document).map_err(fatal)?;
                    out.push(event_leaf(id, &c));
                }
                if document_end(&d.document).is_some_and(|end| end <= now_ms) {
                    let c =
                        cairn_proto::consent::expiry_commitment(&d.salt.0, &chain, id, &d.document).map_err(fatal)?;
                    out.push(event_leaf(id, &c));
                }
            }
        }
        Ok(out)
    }

    /// Commits the expiry events of documents whose period ended (run with the
    /// retention sweep).
    pub async fn commit_expiries(&self, now_ms: u64) -> Result<(), RecordsError> {
        let leaves = self.document_event_leaves(now_ms, false).await?;
        self.consents.add(leaves).await;
        Ok(())
    }

    /// Validators a decision must hear from besides this one: f = ⌊(n − 1) / 3⌋.
    pub(crate) fn faults(&self) -> usize {
        (self.validators.len().saturating_sub(1)) / 3
    }

    /// The subject's documents from this node and at least f other validators
    /// (signatures checked, terms read; documents that fail either are left out).
    pub async fn gather(&self, query: DocumentQuery) -> Result<DocSet, ConsentError> {
        // A document id names its subject only through whoever holds it: learn the subject
        // (here, or from the peers' valid copies), then gather by subject from f + 1
        // validators, so a faulty peer cannot choose which of the subject's documents a
        // decision sees.
        let subject = match query {
            DocumentQuery::Subject(s) => s,
            DocumentQuery::Containing(id) => {
                let here = self.documents_here(&DocumentQuery::Containing(id)).await?;
                match here.into_iter().find(|(i, _)| *i == id) {
                    Some((_, d)) => d.subject,
                    None => {
                        let round = self.union(DocumentQuery::Containing(id)).await?;
                        let chain = self.ledger.chain();
                        let found = round
                            .into_iter()
                            .find(|(i, d)| *i == id && d.verify_signatures(&chain).is_ok() && Terms::read(d).is_ok());
                        match found {
                            Some((_, d)) => d.subject,
                            None => return Ok(DocSet::default()),
                        }
                    }
                }
            }
        };
        let chain = self.ledger.chain();
        let mut docs: Vec<Doc> = Vec::new();
        // Documents about another subject (from a faulty peer), whose signatures or terms
        // do not hold, or that reuse an id already taken by a valid document, are left out.
        for (id, document) in self.union(DocumentQuery::Subject(subject.clone())).await? {
            if document.subject != subject || docs.iter().any(|d| d.id == id) {
                continue;
            }
            if document.verify_signatures(&chain).is_err() {
                continue;
            }
            if let Ok(terms) = Terms::read(&document) {
                docs.push(Doc { id, document, terms });
            }
        }
        Ok(DocSet { docs })
    }

    /// What this node and the other validators hold for `query`, this node's first; an
    /// error when fewer than f others answer.
    async fn union(&self, query: DocumentQuery) -> Result<Vec<(RecordId, Document)>, ConsentError> {
        let mut all = self.documents_here(&query).await?;
        let peers: Vec<KeyId> = self.validators.iter().filter(|k| **k != self.me).copied().collect();
        let asks = peers.iter().map(|p| self.ask(*p, Request::Documents(query.clone())));
        let mut answered = 0;
        for answer in futures::future::join_all(asks).await {
            if let Ok(Response::Documents(list)) = answer {
                answered += 1;
                all.extend(list);
            }
        }
        let f = self.faults();
        if answered < f {
            return Err(ConsentError::Unavailable(format!(
                "{answered} other validators answered; a consent decision needs {f} (a revocation stored at n − f \
                 validators must be seen)"
            )));
        }
        Ok(all)
    }

    /// Takes a document: checks its signatures and terms against the subject's documents,
    /// the ledger's membership and policy; stores it at every reachable validator (at
    /// least n − f) and queues its event leaf. Returns its id; a document already held
    /// (same JSON and signatures) returns the id it has.
    pub async fn submit_document(
        &self,
        caller: &PublicKey,
        doc: Document,
        now_ms: u64,
    ) -> Result<RecordId, ConsentError> {
        let chain = self.ledger.chain();
        let signers = doc.verify_signatures(&chain).map_err(|e| invalid("signatures", e.to_string()))?;
        if !signers.contains(caller) {
            return Err(refused("not_a_signer", "the request must be signed by one of the document's signers"));
        }
        let terms = Terms::read(&doc).map_err(|(field, problem)| invalid(field, problem))?;
        let set = self.gather(DocumentQuery::Subject(doc.subject.clone())).await?;
        // The same document again (its signatures in any order) is the document held.
        if let Some(same) = set.copy_of(&doc) {
            return Ok(same.id);
        }
        self.check_new(&set, &doc, &terms, now_ms)?;
        let custodians = self.document_custodians()?;
        let manifest = Manifest::new(custodians.clone()).map_err(|e| RecordsError::Unavailable(e.to_string()))?;
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|e| RecordsError::Fatal(format!("no randomness: {e}")))?;
        let stored = StoredDocument {
            version: 1,
            document: doc.clone(),
            salt: Hash32(salt),
            received_ms: now_ms,
            home: self.me,
        };
        let payload = cairn_proto::encoding::encode(&stored).map_err(|e| invalid("document", e.to_string()))?;
        let record = NewRecord {
            gateway: doc.subject.gateway,
            content_type: ContentType::ConsentDocument,
            purpose: "CONSENT".into(),
            received_at_ms: now_ms,
            retain_until_ms: u64::MAX,
            subject: Some(subject_ref(&doc.subject)),
            manifest,
            payload,
        };
        let put = self.seal_and_replicate(&custodians, vec![record]).await?;
        let id = put.first().map(|p| p.rid).ok_or_else(|| RecordsError::Fatal("the vault stored nothing".into()))?;
        let c = event_commitment(&salt, &chain, &id, &doc).map_err(|e| RecordsError::Fatal(e.to_string()))?;
        self.consents.add(vec![event_leaf(&id, &c)]).await;
        self.documents_stored(vec![(id, stored)]).await?;
        self.counters.documents.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Terms::BreakGlass(b) = &terms {
            let due = now_ms.saturating_add(self.settings.review_ms);
            let review = super::access::review::Review::open(
                id,
                b.organisation.clone(),
                b.purpose.clone(),
                now_ms,
                b.period.end_ms,
                due,
            );
            self.open_review(review).await?;
        }
        Ok(id)
    }

    /// Every reachable validator, at least n − f of them.
    pub(crate) fn document_custodians(&self) -> Result<Vec<KeyId>, RecordsError> {
        let connected = self.peers.connected();
        let mut chosen = vec![self.me];
        chosen.extend(self.validators.iter().filter(|k| **k != self.me && connected.contains(k)));
        let need = self.validators.len() - self.faults();
        if chosen.len() < need {
            return Err(RecordsError::Unavailable(format!(
                "{} of the {need} validators a consent document must reach are reachable",
                chosen.len()
            )));
        }
        Ok(chosen)
    }

    /// One record of `subject` under `permit`: 404 if it is not the subject's reading,
    /// 403 if the permit does not cover it.
    pub async fn access_record(
        &self,
        subject: &Subject,
        permit: &Permit,
        rid: RecordId,
    ) -> Result<ReadAnswer, ConsentError> {
        let (answer, _) = self.read_anywhere(rid, subject.gateway).await.map_err(|e| match e {
            RecordsError::NotFound(rid) => ConsentError::NotFound(rid),
            e => ConsentError::Records(e),
        })?;
        let r = &answer.record;
        if r.kind != ContentType::FhirObservationJson || r.subject.as_deref() != Some(subject.reference.as_str()) {
            return Err(ConsentError::NotFound(rid));
        }
        let terms = observation_terms(r);
        // Fail closed: a record whose category or time cannot be read is withheld when the
        // permit depends on them.
        if (!terms.codes_known && permit.depends_on_categories()) || (!terms.time_known && permit.depends_on_time()) {
            return Err(refused(
                "record_terms_unreadable",
                "the record's category or time cannot be read, and the permit depends on it",
            ));
        }
        permit.record(&terms.codes, terms.time_ms)?;
        Ok(answer)
    }

    /// Every reading of `subject` (at this node and every validator) that `permit`
    /// covers, with content; and how many were withheld.
    pub async fn access_records(
        &self,
        subject: &Subject,
        permit: &Permit,
    ) -> Result<(Vec<ReadAnswer>, usize), ConsentError> {
        let sref = subject_ref(subject);
        let mut rids: BTreeMap<RecordId, ()> = BTreeMap::new();
        for a in self.subject_here(sref.clone()).await? {
            if a.record.kind == ContentType::FhirObservationJson {
                rids.insert(a.record.rid, ());
            }
        }
        let peers: Vec<KeyId> = self.validators.iter().filter(|k| **k != self.me).copied().collect();
        for answer in
            futures::future::join_all(peers.iter().map(|p| self.ask(*p, Request::Subject(sref.clone())))).await
        {
            if let Ok(Response::Records(list)) = answer {
                rids.extend(
                    list.into_iter()
                        .filter(|a| a.record.kind == ContentType::FhirObservationJson)
                        .map(|a| (a.record.rid, ())),
                );
            }
        }
        let (mut out, mut withheld) = (Vec::new(), 0);
        for rid in rids.into_keys() {
            match self.access_record(subject, permit, rid).await {
                Ok(a) => out.push(a),
                Err(ConsentError::Refused { .. }) => withheld += 1,
                Err(ConsentError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((out, withheld))
    }

    /// The receipt of document `id`'s event, if this node took it and it is committed;
    /// `caller` must be a signer of the document or its gateway.
    pub async fn document_receipt(
        &self,
        caller: &KeyId,
        id: RecordId,
    ) -> Result<Option<(DocumentReceipt, StoredDocument)>, ConsentError> {
        let stored = {
            let index = self.index().await?;
            let s = index.subject_of.get(&id).and_then(|s| index.by_subject.get(s)).and_then(|m| m.get(&id)).cloned();
            s.filter(|d| {
                d.document.subject.gateway == *caller || d.document.signatures.iter().any(|s| s.key.key_id() == *caller)
            })
            .ok_or(ConsentError::NotFound(id))?
        };
        if stored.home != self.me {
            return Err(ConsentError::TakenElsewhere { id, node: stored.home });
        }
        let c = event_commitment(&stored.salt.0, &self.ledger.chain(), &id, &stored.document)
            .map_err(|e| RecordsError::Fatal(e.to_string()))?;
        let leaf = event_leaf(&id, &c);
        let Some(loc) = self.consents.locate(vec![leaf]).await.pop().flatten() else { return Ok(None) };
        let Some(in_log) = self.in_log(&loc)? else { return Ok(None) };
        Ok(Some((
            DocumentReceipt {
                version: 1,
                id,
                commitment: c,
                leaf,
                batch: loc.commit,
                leaf_index: loc.index,
                batch_proof: loc.proof,
                log_index: in_log.log_index,
                log_proof: in_log.log_proof,
                block: in_log.block,
            },
            stored,
        )))
    }
}

/// How a document query names the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocumentQuery {
    /// By subject.
    Subject(Subject),
    /// The subject of the document with this id.
    Containing(RecordId),
}

/// What a decision needs to know of a reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingTerms {
    /// `Observation.code` codings as `system|code`.
    pub codes: Vec<String>,
    /// Whether `codes` were read (false: the resource did not have the expected shape).
    pub codes_known: bool,
    /// The reading's time: `effectiveDateTime`, `effectiveInstant` or
    /// `effectivePeriod.start` when it has a time and an offset; else when it was received.
    pub time_ms: u64,
    /// Whether `time_ms` is the reading's own time (false: the time it was received).
    pub time_known: bool,
}

/// The terms of a reading (its resource as stored).
pub fn observation_terms(r: &RecordView) -> ReadingTerms {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Obs {
        code: Option<Concept>,
        effective_date_time: Option<String>,
        effective_instant: Option<String>,
        effective_period: Option<EffectivePeriod>,
    }
    #[derive(Deserialize)]
    struct EffectivePeriod {
        start: Option<String>,
    }
    #[derive(Deserialize)]
    struct Concept {
        #[serde(default)]
        coding: Vec<Coding>,
    }
    #[derive(Deserialize)]
    struct Coding {
        system: Option<String>,
        code: Option<String>,
    }
    let unknown = ReadingTerms { codes: Vec::new(), codes_known: false, time_ms: r.received_at_ms, time_known: false };
    let Ok(o) = serde_json::from_str::<Obs>(&r.resource) else { return unknown };
    let codes: Vec<String> = o
        .code
        .map(|c| c.coding.into_iter().filter_map(|c| Some(format!("{}|{}", c.system?, c.code?))).collect())
        .unwrap_or_default();
    let time = o
        .effective_date_time
        .or(o.effective_instant)
        .or(o.effective_period.and_then(|p| p.start))
        .and_then(|t| fhir::instant_ms("effective", &t).ok());
    ReadingTerms {
        codes_known: !codes.is_empty(),
        codes,
        time_ms: time.unwrap_or(r.received_at_ms),
        time_known: time.is_some(),
    }
}

/// When a document's period ends (consents, grants, agreements), Unix milliseconds.
fn document_end(doc: &Document) -> Option<u64> {
    match Terms::read(doc).ok()? {
        Terms::Consent(c) => Some(c.period.end_ms),
        Terms::Grant(g) => Some(g.period.end_ms),
        Terms::Agreement(a) => Some(a.period.end_ms),
        Terms::BreakGlass(b) => Some(b.period.end_ms),
        Terms::Binding(_) | Terms::Revocation(_) | Terms::Restriction(_) => None,
    }
}

/// The subject of a stored record, if it is a document.
pub fn document_subject(r: &StoredRecord) -> Option<Subject> {
    r.subject.as_ref().filter(|_| r.header.content_type == ContentType::ConsentDocument).map(subject_of)
}
