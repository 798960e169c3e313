//! The vault's index of live records by end of retention (issue 17): the retention sweep
//! asks for records whose period ended and the vault opens only those, not every record.
//!
//! A record's slot entry carries its `retain_until_ms` ([`Entry::Record`]), so the index
//! is rebuilt from the key tree at start without opening a record. Records written before
//! issue 17 (`Entry::LegacyRecord`) carry it only in their sealed metadata: each is read
//! once, a page per sweep, and remembered. The index lives in memory only; erased records
//! leave it when a sweep meets them.
//!
//! [`Entry::Record`]: super::keytree::Entry::Record

use std::collections::BTreeSet;

use cairn_proto::record::RecordId;

use super::StoredRecord;
use super::error::VaultError;
use super::kv::KvStore;
use super::root::RootStore;
use super::store::Vault;

/// Records written before issue 17 whose retention one call learns, at most.
const LEARN_PER_CALL: usize = 1_000;

/// Live records by `(retain_until_ms, rid)`, and those whose end is not known yet.
#[derive(Debug, Default)]
pub struct RetentionIndex {
    /// Records by end of retention (Unix ms) and id.
    pub by_end: BTreeSet<(u64, RecordId)>,
    /// Records written before issue 17, not read yet.
    pub unknown: Vec<RecordId>,
}

/// Where a page of expired records ended: the `(retain_until_ms, rid)` of its last one.
pub type ExpiredCursor = (u64, RecordId);

impl<K: KvStore, R: RootStore> Vault<K, R> {
    /// Up to `limit` live records whose retention ended at or before `now_ms`, after
    /// `after` in `(retain_until_ms, rid)` order, each read and opened; and the cursor to
    /// pass for the next page (`None`: no more). Only expired records are opened (plus up
    /// to 1,000 records from before issue 17 per call, once each).
    /// Errors: a record that does not open (`Fatal`).
    pub fn expired_page(
        &mut self,
        now_ms: u64,
        after: Option<ExpiredCursor>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, Option<ExpiredCursor>), VaultError> {
        self.learn_retention()?;
        let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut gone = Vec::new();
        let mut found = Vec::new();
        let mut last = None;
        for &(end, rid) in self.retention.by_end.range((from, std::ops::Bound::Unbounded)) {
            if end > now_ms || found.len() >= limit {
                break;
            }
            last = Some((end, rid));
            match self.get(&rid) {
                Ok(record) => found.push(record),
                Err(VaultError::NotFound(_)) => gone.push((end, rid)),
                Err(e) => return Err(e),
            }
        }
        for key in gone {
            self.retention.by_end.remove(&key);
        }
        let more = last.filter(|_| found.len() >= limit);
        Ok((found, more))
    }

    /// Test hook: forgets every record's end of retention, as for a vault written before
    /// issue 17.
    #[cfg(test)]
    pub fn forget_retention(&mut self) {
        let known = std::mem::take(&mut self.retention.by_end);
        self.retention.unknown.extend(known.into_iter().map(|(_, rid)| rid));
    }

    /// Reads the retention of up to [`LEARN_PER_CALL`] records written before issue 17.
    fn learn_retention(&mut self) -> Result<(), VaultError> {
        let take = self.retention.unknown.len().min(LEARN_PER_CALL);
        let batch: Vec<RecordId> = self.retention.unknown.drain(..take).collect();
        for rid in batch {
            match self.get(&rid) {
                Ok(record) => {
                    self.retention.by_end.insert((record.header.retain_until_ms, rid));
                }
                Err(VaultError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
