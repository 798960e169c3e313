//! The bcs codec for every message Malachite asks cairn to encode: consensus messages,
//! proposal streams, liveness certificates, validator proofs, WAL entries and sync
//! traffic. Each engine type is mirrored by a plain wire type, so the bytes on the wire
//! are cairn's own, canonical, and decoded with size limits like any untrusted input.

use arc_malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use arc_malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use arc_malachitebft_app_channel::app::types::PeerId;
use arc_malachitebft_app_channel::app::types::codec::{Codec, HasEncodedLen};
use arc_malachitebft_app_channel::app::types::core::{
    ExtendedCommitCertificate, ExtendedCommitSignature, NilOrVal, PolkaCertificate, PolkaSignature, Round,
    RoundCertificate, RoundCertificateType, RoundSignature, SignedMessage, ValidatorProof, Validity, VoteType,
};
use arc_malachitebft_app_channel::app::types::sync::{RawDecidedValue, Request, Response, Status};
use arc_malachitebft_signing_ed25519::Signature as ConsensusSignature;
use arc_malachitebft_sync as msync;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cairn_proto::encoding::{MAX_MESSAGE_LEN, decode, encode};
use cairn_proto::transaction::Block;
use cairn_proto::{Hash32, KeyId, Signature};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::context::{Address, BlockId, BlockValue, CairnContext, Height, Proposal, ProposalPart, Vote};

type Ctx = CairnContext;

/// Largest sync response accepted (a batch of decided blocks with certificates).
pub const MAX_SYNC_RESPONSE: usize = 64 << 20;

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Not a canonical encoding of the expected message, or too long.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A field that cairn does not use (vote extensions) was present.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

/// cairn's codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct CairnCodec;

fn malformed(e: impl std::fmt::Display) -> CodecError {
    CodecError::Malformed(e.to_string())
}

fn round_out(r: Round) -> Option<u32> {
    r.as_u32()
}

fn round_in(r: Option<u32>) -> Round {
    r.map_or(Round::Nil, Round::new)
}

fn sig_out(s: &ConsensusSignature) -> Signature {
    Signature(s.to_bytes())
}

fn sig_in(s: Signature) -> ConsensusSignature {
    ConsensusSignature::from_bytes(s.0)
}

fn kind_out(t: VoteType) -> u8 {
    match t {
        VoteType::Prevote => 0,
        VoteType::Precommit => 1,
    }
}

fn kind_in(k: u8) -> Result<VoteType, CodecError> {
    match k {
        0 => Ok(VoteType::Prevote),
        1 => Ok(VoteType::Precommit),
        _ => Err(malformed("unknown vote type")),
    }
}

fn value_out(v: &NilOrVal<BlockId>) -> Option<Hash32> {
    match v {
        NilOrVal::Nil => None,
        NilOrVal::Val(id) => Some(id.0),
    }
}

fn value_in(v: Option<Hash32>) -> NilOrVal<BlockId> {
    v.map_or(NilOrVal::Nil, |h| NilOrVal::Val(BlockId(h)))
}

#[derive(Serialize, Deserialize)]
struct WireVote {
    kind: u8,
    height: u64,
    round: Option<u32>,
    value: Option<Hash32>,
    voter: KeyId,
    signature: Signature,
}

impl WireVote {
    fn from_signed(v: &SignedMessage<Ctx, Vote>) -> Self {
        Self {
            kind: kind_out(v.message.vote_type),
            height: v.message.height.0,
            round: round_out(v.message.round),
            value: value_out(&v.message.value),
            voter: v.message.voter.0,
            signature: sig_out(&v.signature),
        }
    }
    fn into_signed(self) -> Result<SignedMessage<Ctx, Vote>, CodecError> {
        let vote = Vote {
            vote_type: kind_in(self.kind)?,
            height: Height(self.height),
            round: round_in(self.round),
            value: value_in(self.value),
            voter: Address(self.voter),
        };
        Ok(SignedMessage::new(vote, sig_in(self.signature)))
    }
}

#[derive(Serialize, Deserialize)]
struct WireProposal {
    height: u64,
    round: Option<u32>,
    block: Block,
    pol_round: Option<u32>,
    proposer: KeyId,
    signature: Signature,
}

#[derive(Serialize, Deserialize)]
enum WireConsensus {
    Vote(WireVote),
    Proposal(WireProposal),
}

#[derive(Serialize, Deserialize)]
struct WirePart {
    height: u64,
    round: Option<u32>,
    pol_round: Option<u32>,
    proposer: KeyId,
    block: Block,
}

#[derive(Serialize, Deserialize)]
struct WirePolka {
    height: u64,
    round: Option<u32>,
    value: Hash32,
    signatures: Vec<(KeyId, Signature)>,
}

#[derive(Serialize, Deserialize)]
struct WireRoundCertificate {
    height: u64,
    round: Option<u32>,
    precommit: bool,
    signatures: Vec<(u8, Option<Hash32>, KeyId, Signature)>,
}

#[derive(Serialize, Deserialize)]
enum WireLiveness {
    Vote(WireVote),
    Polka(WirePolka),
    Round(WireRoundCertificate),
}

#[derive(Serialize, Deserialize)]
struct WireStream {
    #[serde(with = "serde_bytes")]
    stream_id: Vec<u8>,
    sequence: u64,
    part: Option<WirePart>,
}

#[derive(Serialize, Deserialize)]
struct WireProof {
    #[serde(with = "serde_bytes")]
    public_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    peer_id: Vec<u8>,
    signature: Signature,
}

#[derive(Serialize, Deserialize)]
struct WireProposed {
    height: u64,
    round: Option<u32>,
    valid_round: Option<u32>,
    proposer: KeyId,
    block: Block,
    valid: bool,
}

#[derive(Serialize, Deserialize)]
struct WireStatus {
    #[serde(with = "serde_bytes")]
    peer_id: Vec<u8>,
    tip: u64,
    min: u64,
}

#[derive(Serialize, Deserialize)]
struct WireCertificate {
    height: u64,
    round: Option<u32>,
    value: Hash32,
    signatures: Vec<(KeyId, Signature)>,
}

#[derive(Serialize, Deserialize)]
enum WireRequest {
    Values { first: u64, last: u64 },
}

#[derive(Serialize, Deserialize)]
enum WireResponse {
    Values { start: u64, values: Vec<(serde_bytes::ByteBuf, WireCertificate)> },
}

fn polka_in(p: WirePolka) -> PolkaCertificate<Ctx> {
    PolkaCertificate {
        height: Height(p.height),
        round: round_in(p.round),
        value_id: BlockId(p.value),
        polka_signatures: p
            .signatures
            .into_iter()
            .map(|(a, s)| PolkaSignature { address: Address(a), signature: sig_in(s) })
            .collect(),
    }
}

fn polka_out(p: &PolkaCertificate<Ctx>) -> WirePolka {
    WirePolka {
        height: p.height.0,
        round: round_out(p.round),
        value: p.value_id.0,
        signatures: p.polka_signatures.iter().map(|s| (s.address.0, sig_out(&s.signature))).collect(),
    }
}

fn block_value(block: Block) -> Result<BlockValue, CodecError> {
    BlockValue::new(block).map_err(malformed)
}

fn certificate_out(c: &ExtendedCommitCertificate<Ctx>) -> Result<WireCertificate, CodecError> {
    let signatures = c
        .commit_signatures
        .iter()
        .map(|s| match s.extension {
            None => Ok((s.address.0, sig_out(&s.signature))),
            Some(_) => Err(CodecError::Unsupported("vote extensions")),
        })
        .collect::<Result<_, _>>()?;
    Ok(WireCertificate { height: c.height.0, round: round_out(c.round), value: c.value_id.0, signatures })
}

fn certificate_in(w: WireCertificate) -> ExtendedCommitCertificate<Ctx> {
    ExtendedCommitCertificate {
        height: Height(w.height),
        round: round_in(w.round),
        value_id: BlockId(w.value),
        commit_signatures: w
            .signatures
            .into_iter()
            .map(|(a, s)| ExtendedCommitSignature { address: Address(a), signature: sig_in(s), extension: None })
            .collect(),
    }
}

fn enc<T: Serialize>(w: &T) -> Result<Bytes, CodecError> {
    encode(w).map(Bytes::from).map_err(malformed)
}

/// Messages from the network or the WAL that did not decode, since the process started.
static MALFORMED: AtomicU64 = AtomicU64::new(0);

/// How many received messages were refused as malformed since the process started.
pub fn malformed_count() -> u64 {
    MALFORMED.load(Ordering::Relaxed)
}

fn dec<T: Serialize + DeserializeOwned>(bytes: &Bytes, limit: usize) -> Result<T, CodecError> {
    decode(bytes, limit).map_err(|e| {
        MALFORMED.fetch_add(1, Ordering::Relaxed);
        malformed(e)
    })
}

impl Codec<ProposalPart> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<ProposalPart, CodecError> {
        part_in(dec(&bytes, MAX_MESSAGE_LEN)?)
    }
    fn encode(&self, p: &ProposalPart) -> Result<Bytes, CodecError> {
        enc(&part_out(p))
    }
}

fn part_out(p: &ProposalPart) -> WirePart {
    WirePart {
        height: p.height.0,
        round: round_out(p.round),
        pol_round: round_out(p.pol_round),
        proposer: p.proposer.0,
        block: p.value.block().clone(),
    }
}

fn part_in(w: WirePart) -> Result<ProposalPart, CodecError> {
    Ok(ProposalPart {
        height: Height(w.height),
        round: round_in(w.round),
        pol_round: round_in(w.pol_round),
        proposer: Address(w.proposer),
        value: block_value(w.block)?,
    })
}

impl Codec<SignedConsensusMsg<Ctx>> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<SignedConsensusMsg<Ctx>, CodecError> {
        Ok(match dec::<WireConsensus>(&bytes, MAX_MESSAGE_LEN)? {
            WireConsensus::Vote(v) => SignedConsensusMsg::Vote(v.into_signed()?),
            WireConsensus::Proposal(p) => {
                let proposal = Proposal {
                    height: Height(p.height),
                    round: round_in(p.round),
                    value: block_value(p.block)?,
                    pol_round: round_in(p.pol_round),
                    proposer: Address(p.proposer),
                };
                SignedConsensusMsg::Proposal(SignedMessage::new(proposal, sig_in(p.signature)))
            }
        })
    }
    fn encode(&self, msg: &SignedConsensusMsg<Ctx>) -> Result<Bytes, CodecError> {
        enc(&match msg {
            SignedConsensusMsg::Vote(v) => WireConsensus::Vote(WireVote::from_signed(v)),
            SignedConsensusMsg::Proposal(p) => WireConsensus::Proposal(WireProposal {
                height: p.message.height.0,
                round: round_out(p.message.round),
                block: p.message.value.block().clone(),
                pol_round: round_out(p.message.pol_round),
                proposer: p.message.proposer.0,
                signature: sig_out(&p.signature),
            }),
        })
    }
}

impl Codec<LivenessMsg<Ctx>> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<LivenessMsg<Ctx>, CodecError> {
        Ok(match dec::<WireLiveness>(&bytes, MAX_MESSAGE_LEN)? {
            WireLiveness::Vote(v) => LivenessMsg::Vote(v.into_signed()?),
            WireLiveness::Polka(p) => LivenessMsg::PolkaCertificate(polka_in(p)),
            WireLiveness::Round(r) => LivenessMsg::SkipRoundCertificate(RoundCertificate {
                height: Height(r.height),
                round: round_in(r.round),
                cert_type: if r.precommit { RoundCertificateType::Precommit } else { RoundCertificateType::Skip },
                round_signatures: r
                    .signatures
                    .into_iter()
                    .map(|(k, v, a, s)| {
                        Ok(RoundSignature {
                            vote_type: kind_in(k)?,
                            value_id: value_in(v),
                            address: Address(a),
                            signature: sig_in(s),
                        })
                    })
                    .collect::<Result<_, CodecError>>()?,
            }),
        })
    }
    fn encode(&self, msg: &LivenessMsg<Ctx>) -> Result<Bytes, CodecError> {
        enc(&match msg {
            LivenessMsg::Vote(v) => WireLiveness::Vote(WireVote::from_signed(v)),
            LivenessMsg::PolkaCertificate(p) => WireLiveness::Polka(polka_out(p)),
            LivenessMsg::SkipRoundCertificate(r) => WireLiveness::Round(WireRoundCertificate {
                height: r.height.0,
                round: round_out(r.round),
                precommit: matches!(r.cert_type, RoundCertificateType::Precommit),
                signatures: r
                    .round_signatures
                    .iter()
                    .map(|s| (kind_out(s.vote_type), value_out(&s.value_id), s.address.0, sig_out(&s.signature)))
                    .collect(),
            }),
        })
    }
}

impl Codec<StreamMessage<ProposalPart>> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<StreamMessage<ProposalPart>, CodecError> {
        let w: WireStream = dec(&bytes, MAX_MESSAGE_LEN)?;
        let content = match w.part {
            Some(p) => StreamContent::Data(part_in(p)?),
            None => StreamContent::Fin,
        };
        Ok(StreamMessage::new(StreamId::new(Bytes::from(w.stream_id)), w.sequence, content))
    }
    fn encode(&self, msg: &StreamMessage<ProposalPart>) -> Result<Bytes, CodecError> {
        let part = match &msg.content {
            StreamContent::Data(p) => Some(part_out(p)),
            StreamContent::Fin => None,
        };
        enc(&WireStream { stream_id: msg.stream_id.to_bytes().to_vec(), sequence: msg.sequence, part })
    }
}

impl Codec<ValidatorProof<Ctx>> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<ValidatorProof<Ctx>, CodecError> {
        let w: WireProof = dec(&bytes, 4096)?;
        Ok(ValidatorProof::new(w.public_key, w.peer_id, sig_in(w.signature)))
    }
    fn encode(&self, p: &ValidatorProof<Ctx>) -> Result<Bytes, CodecError> {
        enc(&WireProof {
            public_key: p.public_key.clone(),
            peer_id: p.peer_id.clone(),
            signature: sig_out(&p.signature),
        })
    }
}

impl Codec<ProposedValue<Ctx>> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<ProposedValue<Ctx>, CodecError> {
        let w: WireProposed = dec(&bytes, MAX_MESSAGE_LEN)?;
        Ok(ProposedValue {
            height: Height(w.height),
            round: round_in(w.round),
            valid_round: round_in(w.valid_round),
            proposer: Address(w.proposer),
            value: block_value(w.block)?,
            validity: Validity::from_bool(w.valid),
        })
    }
    fn encode(&self, v: &ProposedValue<Ctx>) -> Result<Bytes, CodecError> {
        enc(&WireProposed {
            height: v.height.0,
            round: round_out(v.round),
            valid_round: round_out(v.valid_round),
            proposer: v.proposer.0,
            block: v.value.block().clone(),
            valid: v.validity.is_valid(),
        })
    }
}

impl Codec<PolkaCertificate<Ctx>> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<PolkaCertificate<Ctx>, CodecError> {
        Ok(polka_in(dec(&bytes, MAX_MESSAGE_LEN)?))
    }
    fn encode(&self, p: &PolkaCertificate<Ctx>) -> Result<Bytes, CodecError> {
        enc(&polka_out(p))
    }
}

impl Codec<Status<Ctx>> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<Status<Ctx>, CodecError> {
        let w: WireStatus = dec(&bytes, 4096)?;
        let peer_id = PeerId::from_bytes(&w.peer_id).map_err(malformed)?;
        Ok(Status { peer_id, tip_height: Height(w.tip), history_min_height: Height(w.min) })
    }
    fn encode(&self, s: &Status<Ctx>) -> Result<Bytes, CodecError> {
        enc(&WireStatus { peer_id: s.peer_id.to_bytes(), tip: s.tip_height.0, min: s.history_min_height.0 })
    }
}

impl Codec<Request<Ctx>> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<Request<Ctx>, CodecError> {
        let WireRequest::Values { first, last } = dec(&bytes, 4096)?;
        Ok(Request::ValueRequest(msync::ValueRequest::new(Height(first)..=Height(last))))
    }
    fn encode(&self, r: &Request<Ctx>) -> Result<Bytes, CodecError> {
        let Request::ValueRequest(v) = r;
        enc(&WireRequest::Values { first: v.range.start().0, last: v.range.end().0 })
    }
}

impl Codec<Response<Ctx>> for CairnCodec {
    type Error = CodecError;
    fn decode(&self, bytes: Bytes) -> Result<Response<Ctx>, CodecError> {
        let WireResponse::Values { start, values } = dec(&bytes, MAX_SYNC_RESPONSE)?;
        let values = values
            .into_iter()
            .map(|(b, c)| RawDecidedValue::new(Bytes::from(b.into_vec()), certificate_in(c)))
            .collect();
        Ok(Response::ValueResponse(msync::ValueResponse::new(Height(start), values)))
    }
    fn encode(&self, r: &Response<Ctx>) -> Result<Bytes, CodecError> {
        let Response::ValueResponse(v) = r;
        let values = v
            .values
            .iter()
            .map(|d| Ok((serde_bytes::ByteBuf::from(d.value_bytes.to_vec()), certificate_out(&d.certificate)?)))
            .collect::<Result<_, CodecError>>()?;
        enc(&WireResponse::Values { start: v.start_height.0, values })
    }
}

impl HasEncodedLen<Response<Ctx>> for CairnCodec {
    fn encoded_len(&self, r: &Response<Ctx>) -> Result<usize, CodecError> {
        Codec::<Response<Ctx>>::encode(self, r).map(|b| b.len())
    }
}

/// Encodes a decided block for sync (`RawDecidedValue::value_bytes`).
pub fn encode_block(block: &Block) -> Result<Bytes, CodecError> {
    enc(block)
}

/// Decodes a decided block received through sync.
pub fn decode_block(bytes: &Bytes) -> Result<BlockValue, CodecError> {
    block_value(dec(bytes, MAX_MESSAGE_LEN)?)
}
