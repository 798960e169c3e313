//! A read through a consent, a family grant or a break-glass declaration, from the
//! decision to the logged event: nothing is released before its event is durable.

use cairn_proto::Hash32;
use cairn_proto::access::{AccessAction, AccessEvent, Accessor, Outcome};
use cairn_proto::record::RecordId;

use super::super::Records;
use super::super::consent::decide::{self, Permit, Reader, Terms};
use super::super::consent::{ConsentError, DocumentQuery};
use super::super::read::ReadAnswer;

/// A read as the API hands it over.
#[derive(Debug, Clone)]
pub struct AccessRequest {
    /// Who reads, for the decision.
    pub reader: Reader,
    /// Who reads, for the log.
    pub accessor: Accessor,
    /// The declared v3 PurposeOfUse code.
    pub purpose: String,
    /// The document relied on.
    pub basis: RecordId,
    /// One record, or (`None`) every record the decision covers.
    pub rid: Option<RecordId>,
    /// The request's time, Unix milliseconds.
    pub now_ms: u64,
}

/// What a permitted read released, with the decision and its log entry.
#[derive(Debug)]
pub struct Released {
    /// The records, with content.
    pub records: Vec<ReadAnswer>,
    /// Records of the subject the permit does not cover.
    pub withheld: usize,
    /// The decision.
    pub permit: Permit,
    /// The access-log entry of this read.
    pub entry: Hash32,
}

impl Records {
    /// Decides `req`, fetches what the decision covers, logs the event (granted,
    /// refused or break-glass) durably, and only then returns the records.
    ///
    /// A refusal is logged whenever the basis names a subject this node can find; a
    /// basis that names no document of any subject is refused without an entry (there is
    /// no one to account to) and only counted.
    ///
    /// # Errors
    /// The refusal (403 with reason code and trace), 404 for a record that is not the
    /// subject's, 503 when too few validators answer; a failed log write is fatal and
    /// releases nothing.
    pub async fn access(&self, req: AccessRequest) -> Result<Released, ConsentError> {
        let set = self.gather(DocumentQuery::Containing(req.basis)).await?;
        let Some(basis_doc) = set.get(&req.basis) else {
            self.counters.access_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let code = if matches!(req.reader, Reader::Person(_)) { "no_grant" } else { "no_consent" };
            return Err(ConsentError::Refused {
                code,
                message: format!("no document {} that this key may rely on", req.basis),
                trace: Vec::new(),
            });
        };
        let subject = basis_doc.document.subject.clone();
        let justification = match &basis_doc.terms {
            Terms::BreakGlass(b) => Some(b.justification.clone()),
            _ => None,
        };
        let (policy, _) = self.ledger.policy();
        let chain = self.ledger.chain();
        let event =
            |outcome: Outcome, records: Vec<RecordId>, withheld: usize, reason: Option<&str>, trace: Vec<String>| {
                AccessEvent {
                    version: 1,
                    recorded_ms: req.now_ms,
                    node: self.me,
                    action: if req.rid.is_some() { AccessAction::Read } else { AccessAction::Search },
                    outcome,
                    purpose: req.purpose.clone(),
                    accessor: req.accessor.clone(),
                    basis: Some(req.basis),
                    records,
                    withheld: withheld as u64,
                    reason: reason.map(str::to_string),
                    justification: justification.clone().filter(|_| outcome == Outcome::BreakGlass),
                    trace,
                }
            };
        let permit = match decide::decide(&set, &policy, &chain, &req.reader, &req.purpose, &req.basis, req.now_ms) {
            Ok(p) => p,
            Err(r) => {
                self.log_access(&subject, event(Outcome::Refused, Vec::new(), 0, Some(r.code), r.trace.clone()))
                    .await?;
                return Err(r.into());
            }
        };
        let fetched = match req.rid {
            Some(rid) => self.access_record(&subject, &permit, rid).await.map(|a| (vec![a], 0)),
            None => self.access_records(&subject, &permit).await,
        };
        let (records, withheld) = match fetched {
            Ok(found) => found,
            Err(e) => {
                let (code, trace) = match &e {
                    ConsentError::Refused { code, trace, .. } => (*code, trace.clone()),
                    ConsentError::NotFound(_) => ("not_found", permit.trace.clone()),
                    // Nothing was decided about a record: no entry.
                    _ => return Err(e),
                };
                self.log_access(&subject, event(Outcome::Refused, Vec::new(), 0, Some(code), trace)).await?;
                return Err(e);
            }
        };
        let outcome = if permit.break_glass { Outcome::BreakGlass } else { Outcome::Granted };
        let rids = records.iter().map(|a| a.record.rid).collect();
        let entry = self.log_access(&subject, event(outcome, rids, withheld, None, permit.trace.clone())).await?;
        Ok(Released { records, withheld, permit, entry })
    }
}
