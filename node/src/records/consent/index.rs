//! The index of the consent-layer documents and access-log keys this node holds, by
//! subject (in memory only: built from the vault at first use, kept up to date as
//! records are stored or erased).

use std::collections::{BTreeMap, HashMap};

use cairn_proto::consent::{Document, Subject};
use cairn_proto::record::RecordId;
use tokio::sync::Mutex;

use super::{DocumentQuery, StoredDocument, stored_document, subject_of};
use crate::records::access::{DayKey, LogKey, stored_day_key, stored_log_key};
use crate::records::{Records, RecordsError};

#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) loaded: bool,
    pub(super) by_subject: HashMap<Subject, BTreeMap<RecordId, StoredDocument>>,
    /// Access-log keys (ADR 018), which live beside the documents.
    pub(super) log_keys: HashMap<Subject, BTreeMap<RecordId, LogKey>>,
    pub(super) subject_of: HashMap<RecordId, Subject>,
    /// This node's access-log day keys, by record id (ADR 018).
    pub(super) day_keys: HashMap<RecordId, DayKey>,
    /// The record id of each day's key.
    pub(super) day_key_of: BTreeMap<u32, RecordId>,
}

impl Index {
    fn insert(&mut self, id: RecordId, d: StoredDocument) {
        let subject = d.document.subject.clone();
        self.subject_of.insert(id, subject.clone());
        self.by_subject.entry(subject).or_default().insert(id, d);
    }
    fn insert_key(&mut self, id: RecordId, subject: Subject, key: LogKey) {
        self.subject_of.insert(id, subject.clone());
        self.log_keys.entry(subject).or_default().insert(id, key);
    }
    fn insert_day_key(&mut self, key: DayKey) {
        self.day_key_of.insert(key.day, key.rid);
        self.day_keys.insert(key.rid, key);
    }
    fn remove(&mut self, id: &RecordId) {
        if let Some(k) = self.day_keys.remove(id)
            && self.day_key_of.get(&k.day) == Some(id)
        {
            self.day_key_of.remove(&k.day);
        }
        if let Some(s) = self.subject_of.remove(id) {
            if let Some(m) = self.by_subject.get_mut(&s) {
                m.remove(id);
                if m.is_empty() {
                    self.by_subject.remove(&s);
                }
            }
            if let Some(m) = self.log_keys.get_mut(&s) {
                m.remove(id);
                if m.is_empty() {
                    self.log_keys.remove(&s);
                }
            }
        }
    }
}

/// The documents this node holds, indexed by subject (in memory only).
#[derive(Debug, Default)]
pub struct Documents {
    index: Mutex<Index>,
}

impl Records {
    /// The index, loaded from the vault on first use.
    pub(super) async fn index(&self) -> Result<tokio::sync::MutexGuard<'_, Index>, RecordsError> {
        let mut index = self.documents.index.lock().await;
        if !index.loaded {
            for r in self.vault.documents().await? {
                if let Some(d) = stored_document(r.header.content_type, &r.payload) {
                    index.insert(r.header.rid, d);
                } else if let (Some(k), Some(s)) = (stored_log_key(r.header.content_type, &r.payload), &r.subject) {
                    index.insert_key(r.header.rid, subject_of(s), k);
                } else if let Some(k) = stored_day_key(r.header.rid, r.header.content_type, &r.payload)
                    && r.header.gateway == self.me
                {
                    index.insert_day_key(k);
                }
            }
            index.loaded = true;
        }
        Ok(index)
    }

    /// Notes documents among records just stored here.
    pub(crate) async fn documents_stored(&self, stored: Vec<(RecordId, StoredDocument)>) -> Result<(), RecordsError> {
        if stored.is_empty() {
            return Ok(());
        }
        let mut index = self.index().await?;
        for (id, d) in stored {
            index.insert(id, d);
        }
        Ok(())
    }

    /// Notes an access-log key stored here.
    pub(crate) async fn log_key_stored(&self, id: RecordId, subject: Subject, key: LogKey) -> Result<(), RecordsError> {
        self.index().await?.insert_key(id, subject, key);
        Ok(())
    }

    /// The subject's access-log keys held here, by record id.
    pub(crate) async fn held_log_keys(&self, subject: &Subject) -> Result<Vec<(RecordId, LogKey)>, RecordsError> {
        let index = self.index().await?;
        Ok(index.log_keys.get(subject).map(|m| m.iter().map(|(i, k)| (*i, k.clone())).collect()).unwrap_or_default())
    }

    /// Notes this node's new access-log day key.
    pub(crate) async fn day_key_stored(&self, key: DayKey) -> Result<(), RecordsError> {
        self.index().await?.insert_day_key(key);
        Ok(())
    }

    /// This node's access-log key for `day`, if it was made and is not erased.
    pub(crate) async fn held_day_key(&self, day: u32) -> Result<Option<DayKey>, RecordsError> {
        let index = self.index().await?;
        Ok(index.day_key_of.get(&day).and_then(|rid| index.day_keys.get(rid)).cloned())
    }

    /// Every access-log day key of this node not erased, by record id.
    pub(crate) async fn held_day_keys(&self) -> Result<HashMap<RecordId, DayKey>, RecordsError> {
        Ok(self.index().await?.day_keys.clone())
    }

    /// Forgets documents and log keys among records just erased here.
    pub(crate) async fn documents_erased(&self, rids: &[RecordId]) {
        let mut index = self.documents.index.lock().await;
        for rid in rids {
            index.remove(rid);
        }
    }

    /// The documents held here about `subject`, or about the subject of document `id`.
    pub async fn documents_here(&self, query: &DocumentQuery) -> Result<Vec<(RecordId, Document)>, RecordsError> {
        let index = self.index().await?;
        let subject = match query {
            DocumentQuery::Subject(s) => Some(s.clone()),
            DocumentQuery::Containing(id) => index.subject_of.get(id).cloned(),
        };
        Ok(subject
            .and_then(|s| index.by_subject.get(&s))
            .map(|m| m.iter().map(|(id, d)| (*id, d.document.clone())).collect())
            .unwrap_or_default())
    }
}
