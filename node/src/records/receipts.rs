//! Assembling an anchor receipt from this node's anchor store, block store and ledger.

use cairn_proto::consensus::CertifiedHeader;
use cairn_proto::ledger::BatchKind;
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, KeyId};

use super::anchor::Location;
use super::ingest::{ReadAnswer, RecordView, RecordsError};
use crate::ledger::state::log_leaf;
use crate::run::Shared;
use crate::run::p2p::{Request, Response};

/// The receipt for a record whose leaf this node anchored at `loc`.
pub fn assemble(shared: &Shared, view: &RecordView, loc: Location) -> anyhow::Result<Option<AnchorReceipt>> {
    if loc.commit.body.kind != BatchKind::Anchors {
        return Ok(None);
    }
    let Some(InLog { log_index, log_proof, block }) = in_log(shared, &loc)? else { return Ok(None) };
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

/// The log position and certified block of the batch at `loc` (`None` if this node does
/// not have them yet).
pub fn in_log(shared: &Shared, loc: &Location) -> anyhow::Result<Option<InLog>> {
    let Some(cb) = shared.certified_block(loc.height)? else { return Ok(None) };
    let header = cb.block.header;
    let (log_index, log_proof) = {
        let ledger = shared.ledger();
        let Some(index) = ledger.find_leaf(&log_leaf(&loc.commit.body)?) else { return Ok(None) };
        (index, ledger.log_inclusion(index, header.log_size)?)
    };
    Ok(Some(InLog {
        log_index,
        log_proof: log_proof.into_iter().map(Hash32).collect(),
        block: CertifiedHeader { header, certificate: cb.certificate },
    }))
}

/// Receipts for several records read here (`None` while a leaf is not yet committed).
pub async fn for_views(shared: &Shared, views: &[RecordView]) -> anyhow::Result<Vec<Option<AnchorReceipt>>> {
    let locations = shared.records.anchors.locate(views.iter().map(|v| v.leaf).collect()).await;
    views
        .iter()
        .zip(locations)
        .map(|(v, loc)| match loc {
            Some(loc) => assemble(shared, v, loc),
            None => Ok(None),
        })
        .collect()
}

/// A record held here, with this node's receipt for it.
pub async fn read_here(shared: &Shared, rid: RecordId, gateway: KeyId) -> Result<ReadAnswer, RecordsError> {
    let record = shared.records.read_local(rid, gateway).await?;
    let receipt = for_views(shared, std::slice::from_ref(&record))
        .await
        .map_err(|e| RecordsError::Unavailable(e.to_string()))?
        .pop()
        .flatten();
    Ok(ReadAnswer { record, receipt })
}

/// A record from this node or, if it is not a custodian, from a connected custodian.
pub async fn read_anywhere(shared: &Shared, rid: RecordId, gateway: KeyId) -> Result<(ReadAnswer, bool), RecordsError> {
    match read_here(shared, rid, gateway).await {
        Err(RecordsError::NotFound(_)) => {}
        other => return other.map(|a| (a, true)),
    }
    let peers: Vec<_> = shared.records.connected.borrow().iter().copied().collect();
    for peer in peers {
        if let Ok(Response::Record(answer)) = shared.records.ask(peer, Request::Read { rid, gateway }).await {
            return Ok((*answer, false));
        }
    }
    Err(RecordsError::NotFound(rid))
}
