//! Assembling proofs of anchoring: an [`AnchorReceipt`] for a record whose leaf this node
//! committed, and where a committed batch stands in the global log ([`InLog`]), shared
//! with erasure receipts.

use cairn_proto::Hash32;
use cairn_proto::consensus::CertifiedHeader;
use cairn_proto::ledger::BatchKind;
use cairn_proto::receipt::AnchorReceipt;

use super::anchor::Location;
use super::read::RecordView;
use super::{Records, RecordsError};
use crate::ledger::state::log_leaf;

/// Where a committed batch is in the global log, and the block that certifies it.
#[derive(Debug)]
pub struct InLog {
    /// Position of the batch commitment in the log.
    pub log_index: u64,
    /// Its inclusion proof at the block's log size.
    pub log_proof: Vec<Hash32>,
    /// The committing block's certified header.
    pub block: CertifiedHeader,
}

impl Records {
    /// The log position and certified block of the batch at `loc` (`None` if this node
    /// does not have them yet).
    pub fn in_log(&self, loc: &Location) -> Result<Option<InLog>, RecordsError> {
        let Some(cb) = self.ledger.certified_block(loc.height)? else { return Ok(None) };
        let header = cb.block.header;
        let leaf = log_leaf(&loc.commit.body).map_err(|e| RecordsError::Fatal(e.to_string()))?;
        let Some((log_index, log_proof)) = self.ledger.log_inclusion(&Hash32(leaf), header.log_size)? else {
            return Ok(None);
        };
        Ok(Some(InLog { log_index, log_proof, block: CertifiedHeader { header, certificate: cb.certificate } }))
    }

    /// The receipt for a record whose leaf this node anchored at `loc`.
    pub fn assemble(&self, view: &RecordView, loc: Location) -> Result<Option<AnchorReceipt>, RecordsError> {
        if loc.commit.body.kind != BatchKind::Anchors {
            return Ok(None);
        }
        let Some(InLog { log_index, log_proof, block }) = self.in_log(&loc)? else { return Ok(None) };
        Ok(Some(AnchorReceipt {
            version: 1,
            rid: view.rid,
            manifest: view.manifest.clone(),
            commitment: view.commitment,
            leaf: view.leaf,
            batch: loc.commit,
            leaf_index: loc.index,
            batch_proof: loc.proof,
            log_index,
            log_proof,
            block,
        }))
    }

    /// Receipts for several records read here (`None` while a leaf is not yet committed).
    pub async fn receipts_for(&self, views: &[RecordView]) -> Result<Vec<Option<AnchorReceipt>>, RecordsError> {
        let locations = self.anchors.locate(views.iter().map(|v| v.leaf).collect()).await;
        views
            .iter()
            .zip(locations)
            .map(|(v, loc)| match loc {
                Some(loc) => self.assemble(v, loc),
                None => Ok(None),
            })
            .collect()
    }
}
