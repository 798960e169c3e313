//! An executed three-party agreement committed on the synthetic chain, and its certificate.

use cairn_node::ledger::state::log_leaf;
use cairn_proto::consensus::CertifiedBlock;
use cairn_proto::consent::{
    Agreement, AgreementCertificate, BreachNotice, Document, DocumentKind, DocumentReceipt, FamilyMember, Institution,
    Period, Subject, event_commitment, event_leaf,
};
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::BatchKind;
use cairn_proto::record::RecordId;
use cairn_proto::transaction::Transaction;
use cairn_proto::{Hash32, Keypair};

use super::erasure::{batch_of, keypair};
use super::{SEEDS, certify, genesis, header};

/// The parties: the institution (the "city" organisation's admin key), the patient and
/// one family member.
pub fn parties() -> (Keypair, Keypair, Keypair) {
    (keypair(cairn_node::testing::ADMIN_SEED), keypair([21; 32]), keypair([22; 32]))
}

/// The agreement's JSON.
pub fn terms() -> String {
    let (institution, patient, family) = parties();
    let a = Agreement {
        text_hash: cairn_proto::hash::blake3(b"The full contract text, as the parties read it."),
        institution: Institution { organisation: "city".into(), key: institution.public() },
        patient: patient.public(),
        family: vec![FamilyMember { key: family.public(), relationship: "MTH".into() }],
        purposes: vec!["FAMRQT".into(), "TREAT".into()],
        categories: vec!["*".into()],
        retention_days: 365,
        liability: "The institution is liable for any leak or breach of this contract.".into(),
        breach_notice: BreachNotice { within_hours: 72, duties: "Tell the patient and family in writing.".into() },
        period: Period { start_ms: 1_000, end_ms: 10_000_000_000_000 },
        replaces: None,
    };
    serde_json::to_string_pretty(&a).unwrap()
}

/// The document signed by `signers`.
pub fn document(g: &Genesis, signers: &[&Keypair]) -> Document {
    let mut doc = Document {
        kind: DocumentKind::Agreement,
        subject: Subject { gateway: keypair([7; 32]).public().key_id(), reference: "Patient/123".into() },
        json: terms(),
        signatures: Vec::new(),
    };
    for k in signers {
        doc.sign(&g.hash().unwrap(), k).unwrap();
    }
    doc
}

/// The certificate of the agreement executed by all three parties, committed by
/// validator 1 in a `ConsentEvents` batch at height 1.
pub fn example() -> (Genesis, AgreementCertificate) {
    let g = genesis();
    let (i, p, f) = parties();
    let doc = document(&g, &[&i, &p, &f]);
    let id = RecordId([0x44; 16]);
    let salt = Hash32([0x55; 32]);
    let commitment = event_commitment(&salt.0, &g.hash().unwrap(), &id, &doc).unwrap();
    let leaf = event_leaf(&id, &commitment);
    let node = keypair(SEEDS[0]);
    let (batch, batch_proof) = batch_of(&node, BatchKind::ConsentEvents, leaf, 3, 0x60);
    let mut state =
        cairn_node::ledger::LedgerState::from_genesis(&g, cairn_node::ledger::LedgerLimits::default()).unwrap();
    let proposer = keypair(SEEDS[2]).public().key_id();
    let (block, rejected) = state.propose(vec![Transaction::BatchCommit(batch.clone())], 10_000, proposer).unwrap();
    assert!(rejected.is_empty());
    state.apply(&block).unwrap();
    let certified = CertifiedBlock { certificate: certify(&g, &block, 3), block };
    let log_index = state.find_leaf(&log_leaf(&batch.body).unwrap()).unwrap();
    let log_proof =
        state.log_inclusion(log_index, certified.block.header.log_size).unwrap().into_iter().map(Hash32).collect();
    let receipt = DocumentReceipt {
        version: 1,
        id,
        commitment,
        leaf,
        batch,
        leaf_index: 3,
        batch_proof,
        log_index,
        log_proof,
        block: header(&certified),
    };
    (g, AgreementCertificate { version: 1, document: doc, salt, receipt })
}
