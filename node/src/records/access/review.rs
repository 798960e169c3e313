//! `review.redb`: the break-glass declarations this node took, each waiting for an
//! operator's verdict (reviewed or unjustified). A row names the declaration's document
//! id, the organisation and the times — no subject, no person.

use std::path::Path;
use std::sync::Arc;

use cairn_proto::KeyId;
use cairn_proto::encoding::encode;
use cairn_proto::record::RecordId;
use cairn_proto::version::{Versioned, decode_versioned};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::records::StoreError;

const REVIEWS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("break_glass_reviews");

/// An operator's verdict on a break-glass declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The emergency and the reads were justified.
    Reviewed,
    /// They were not: the organisation answers for it under its agreement.
    Unjustified,
}

/// A closed review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// The verdict.
    pub verdict: Verdict,
    /// The operator key that closed it.
    pub by: KeyId,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// The operator's note.
    pub note: String,
}

/// One declaration on the review list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    version: u8,
    /// The declaration (its document id).
    pub declaration: RecordId,
    /// The organisation that declared.
    pub organisation: String,
    /// The purpose declared (`ETREAT`, `BTG`).
    pub purpose: String,
    /// When this node took it, Unix milliseconds.
    pub declared_ms: u64,
    /// When its time box ends, Unix milliseconds.
    pub ends_ms: u64,
    /// When the review is due, Unix milliseconds.
    pub due_ms: u64,
    /// The verdict, once given.
    pub closed: Option<Closed>,
}

impl Versioned for Review {
    const VERSION: u8 = 1;
    fn version(&self) -> u8 {
        self.version
    }
}

impl Review {
    /// A new, open review.
    pub fn open(
        declaration: RecordId,
        organisation: String,
        purpose: String,
        declared_ms: u64,
        ends_ms: u64,
        due_ms: u64,
    ) -> Self {
        Self { version: 1, declaration, organisation, purpose, declared_ms, ends_ms, due_ms, closed: None }
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new("review list", e)
}

/// The review list (redb; calls block: run them off the async workers).
#[derive(Clone)]
pub struct ReviewStore {
    db: Arc<redb::Database>,
}

impl std::fmt::Debug for ReviewStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReviewStore")
    }
}

/// Why a review cannot be closed.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// No declaration with this id was taken here.
    #[error("no break-glass declaration {0} on this node's review list")]
    NotFound(RecordId),
    /// It was closed already.
    #[error("the review of {0} was closed already")]
    Closed(RecordId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReviewStore {
    /// Opens or creates the store.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = redb::Database::create(path)
            .map_err(|e| StoreError::new("review list", format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(REVIEWS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Puts a declaration on the list (durably); one already there is kept as it is.
    pub fn add(&self, review: &Review) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(REVIEWS).map_err(db_err)?;
            if t.get(review.declaration.as_bytes()).map_err(db_err)?.is_none() {
                t.insert(review.declaration.as_bytes(), encode(review).map_err(db_err)?.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// Every review, open and closed, by declaration id.
    pub fn all(&self) -> Result<Vec<Review>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(REVIEWS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(decode_versioned(v.value(), 64 * 1024).map_err(db_err)?);
        }
        Ok(out)
    }

    /// Closes the review of `declaration` with `closed`.
    pub fn close(&self, declaration: RecordId, closed: Closed) -> Result<Review, CloseError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let review = {
            let mut t = txn.open_table(REVIEWS).map_err(db_err)?;
            let mut review: Review = match t.get(declaration.as_bytes()).map_err(db_err)? {
                Some(v) => decode_versioned(v.value(), 64 * 1024).map_err(db_err)?,
                None => return Err(CloseError::NotFound(declaration)),
            };
            if review.closed.is_some() {
                return Err(CloseError::Closed(declaration));
            }
            review.closed = Some(closed);
            t.insert(declaration.as_bytes(), encode(&review).map_err(db_err)?.as_slice()).map_err(db_err)?;
            review
        };
        txn.commit().map_err(db_err)?;
        Ok(review)
    }
}
