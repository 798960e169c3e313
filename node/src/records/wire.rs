//! The messages of `/cairn/req/1`, cairn's request-response protocol between custodians
//! (bcs, one length-delimited frame each way; framing in `net::codec`). The variants'
//! order is the wire format: add new ones at the end, never reorder.
//!
//! [`super::Records::serve`] answers every request; the swarm only carries them.

use std::time::Duration;

use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};

use super::claims::ClaimAnswer;
use super::consent::DocumentQuery;
use super::erasure::{EraseAnswer, EraseOrder};
use super::read::ReadAnswer;
use crate::vault::{Replica, SubjectRef};
use cairn_proto::consent::Document;

/// The protocol id (version 1).
pub const REQUEST_PROTOCOL: &str = "/cairn/req/1";

/// A request to a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// The peer's chain and height.
    Status,
    /// Store these sealed records: the peer is one of their custodians.
    Replicate(Vec<Replica>),
    /// A record, for the gateway that wrote it.
    Read {
        /// The record.
        rid: RecordId,
        /// The gateway asking (authenticated by the node that forwards).
        gateway: KeyId,
    },
    /// The records of a subject held here, with receipts, without their content (the
    /// peer is resolving an erasure request).
    Subject(SubjectRef),
    /// Erase these records (the peer coordinates the erasure) and answer with receipts.
    Erase(Vec<EraseOrder>),
    /// Place (`on`) or lift a legal hold on records held here.
    Hold {
        /// The records.
        rids: Vec<RecordId>,
        /// Place or lift.
        on: bool,
    },
    /// Claim an idempotency key for a request (`claims`).
    Claim {
        /// Claim id (`claims::claim_id`).
        id: Hash32,
        /// Hash of the request's query and body.
        request: Hash32,
        /// The node that will store it.
        holder: KeyId,
    },
    /// Settle a claim with its answer, or release it (`None`).
    Settle {
        /// Claim id.
        id: Hash32,
        /// Hash of the request.
        request: Hash32,
        /// The node that stored it.
        holder: KeyId,
        /// The answer (JSON).
        answer: Option<Vec<u8>>,
    },
    /// The consent-layer documents held here about a subject (ADR 017).
    Documents(DocumentQuery),
    /// The subject's access-log keys held here (ADR 018).
    LogKeys(cairn_proto::consent::Subject),
    /// The access-log entries this peer logged under these log keys, with receipts.
    AccessEntries(Vec<[u8; 32]>),
    /// The certificates of these records under the erasure request with this hash, which
    /// this peer coordinated (for a subject's export; ADR 018).
    ErasureCertificates(Hash32, Vec<RecordId>),
}

impl Request {
    /// The one timeout of this request, from handing it to the network to its answer;
    /// past it the ask fails as `AskError::NotDelivered`. Replicating (a group of up to
    /// 20,000 readings, stored durably by the peer) and reading a record for a gateway
    /// get [`LONG_ASK`]; the erasure and hold traffic, which a coordinator repeats every
    /// round, and the status get [`SHORT_ASK`].
    pub fn timeout(&self) -> Duration {
        match self {
            Request::Replicate(_) | Request::Read { .. } => LONG_ASK,
            Request::Status
            | Request::Subject(_)
            | Request::Erase(_)
            | Request::Hold { .. }
            | Request::Claim { .. }
            | Request::Settle { .. }
            | Request::Documents(_)
            | Request::LogKeys(_)
            | Request::AccessEntries(_)
            | Request::ErasureCertificates(..) => SHORT_ASK,
        }
    }
}

/// Timeout of replication and reads: 30 s.
pub const LONG_ASK: Duration = Duration::from_secs(30);
/// Timeout of status, subject, erase and hold requests: 10 s.
pub const SHORT_ASK: Duration = Duration::from_secs(10);

/// An answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// Replicas stored durably.
    Stored {
        /// How many.
        count: u64,
    },
    /// A record with this custodian's receipt for it.
    Record(Box<ReadAnswer>),
    /// No such record here (or not for this gateway).
    NotFound,
    /// A subject's records held here (content left out).
    Records(Vec<ReadAnswer>),
    /// One answer per erase order, in order.
    Erased(Vec<EraseAnswer>),
    /// Holds placed or lifted.
    Held,
    /// Chain, last decided height and its header hash.
    Status {
        /// Genesis hash.
        chain: Hash32,
        /// Last decided height.
        height: u64,
        /// Its header hash.
        last_hash: Hash32,
    },
    /// The answer to a claim.
    Claim(ClaimAnswer),
    /// A claim settled or released.
    Settled,
    /// The request could not be answered (the peer's reason; it never names a record
    /// or a subject in clear beyond what the request itself named).
    Error(String),
    /// Consent-layer documents held here, by id.
    Documents(Vec<(RecordId, Document)>),
    /// Access-log keys held here, by record id.
    LogKeys(Vec<(RecordId, [u8; 32])>),
    /// Access-log entries, this peer's own.
    AccessEntries(Vec<super::access::LoggedEntry>),
    /// Certificates of the records asked for, those certified so far (none if this peer
    /// did not coordinate the request).
    ErasureCertificates(Vec<cairn_proto::erasure::ErasureCertificate>),
}
