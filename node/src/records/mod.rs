//! The record lifecycle (DESIGN.md §4): readings in, custody at every custodian, anchoring
//! of leaves in padded batches, receipts and reading back.

pub mod anchor;
pub mod custody;
pub mod erasure;
pub mod fhir;
pub mod ingest;
pub mod receipts;
