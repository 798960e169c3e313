//! The application side of Malachite's channel interface: builds blocks from the mempool
//! when this node proposes, validates the blocks others propose, persists every decided
//! block with its commit certificate before acknowledging it, and serves decided blocks
//! to lagging peers (sync). Malachite runs the protocol; this loop only answers it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arc_malachitebft_app_channel::app::consensus::ProposedValue;
use arc_malachitebft_app_channel::app::engine::host::{HeightParams, Next, SyncedValueOutcome};
use arc_malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use arc_malachitebft_app_channel::app::types::LocallyProposedValue;
use arc_malachitebft_app_channel::app::types::core::{
    CommitCertificate as EngineCertificate, ExtendedCommitCertificate, ExtendedCommitSignature, LinearTimeouts, Round,
    Validity,
};
use arc_malachitebft_app_channel::app::types::sync::RawDecidedValue;
use arc_malachitebft_app_channel::{AppMsg, Channels, NetworkMsg};
use arc_malachitebft_signing_ed25519::Signature as EngineSignature;
use bytes::Bytes;
use cairn_proto::Signature;
use cairn_proto::consensus::CommitCertificate;
use cairn_proto::encoding::encode;
use cairn_proto::version::decode_versioned;
use tracing::{debug, error, info, warn};

use super::NodeError;
use super::config::Timing;
use crate::chain::Chain;
use crate::consensus::codec::{decode_block, encode_block};
use crate::consensus::{Address, BlockId, BlockValue, CairnContext, Height, ProposalPart, ValidatorSet};

type Ctx = CairnContext;

/// Most decided blocks served in one sync answer.
const MAX_SYNC_BATCH: u64 = 50;
/// How long before its propose timeout a proposer with nothing to commit stops waiting
/// for a transaction: the others must receive a block it sends in time to prevote for it.
const HOLD_MARGIN: Duration = Duration::from_millis(300);
/// Most proposal parts kept for heights this node has not reached.
const MAX_PENDING_PARTS: usize = 64;

/// Converts an engine certificate into cairn's (signers ascending, as offline verifiers expect).
pub fn to_cairn_certificate(c: &EngineCertificate<Ctx>) -> CommitCertificate {
    let mut signatures: Vec<_> =
        c.commit_signatures.iter().map(|s| (s.address.0, Signature(s.signature.to_bytes()))).collect();
    signatures.sort_by_key(|(k, _)| *k);
    signatures.dedup_by_key(|(k, _)| *k);
    CommitCertificate {
        version: 1,
        height: c.height.0,
        round: c.round.as_u32().unwrap_or(0),
        value: c.value_id.0,
        signatures,
    }
}

fn to_engine_certificate(c: &CommitCertificate) -> ExtendedCommitCertificate<Ctx> {
    ExtendedCommitCertificate {
        height: Height(c.height),
        round: Round::new(c.round),
        value_id: BlockId(c.value),
        commit_signatures: c
            .signatures
            .iter()
            .map(|(k, s)| ExtendedCommitSignature {
                address: Address(*k),
                signature: EngineSignature::from_bytes(s.0),
                extension: None,
            })
            .collect(),
    }
}

fn stream_id(height: Height, round: Round) -> StreamId {
    let mut b = height.0.to_be_bytes().to_vec();
    b.extend_from_slice(&round.as_i64().to_be_bytes());
    StreamId::new(Bytes::from(b))
}

/// The application's state between messages.
#[allow(missing_debug_implementations)] // holds the shared state, which has its own Debug
pub struct App {
    chain: Arc<Chain>,
    me: Address,
    validators: ValidatorSet,
    timing: Timing,
    /// Blocks this node built, by height and round (a repeated GetValue gets the same one).
    built: HashMap<(u64, Round), BlockValue>,
    /// Every value seen for heights not yet decided, by id.
    values: HashMap<BlockId, BlockValue>,
    /// Proposed values per height and round (replayed to consensus after a restart of a round).
    undecided: HashMap<(u64, Round), Vec<ProposedValue<Ctx>>>,
    /// Parts for heights this node has not reached yet.
    pending: Vec<ProposalPart>,
    last_decided: Option<Instant>,
}

impl App {
    /// An application for validator `me`.
    pub fn new(chain: Arc<Chain>, me: Address, validators: ValidatorSet, timing: Timing) -> Self {
        Self {
            chain,
            me,
            validators,
            timing,
            built: HashMap::new(),
            values: HashMap::new(),
            undecided: HashMap::new(),
            pending: Vec::new(),
            last_decided: None,
        }
    }

    fn params(&self) -> HeightParams<Ctx> {
        let t = &self.timing;
        let timeouts = LinearTimeouts {
            propose: Duration::from_millis(t.propose_timeout_ms),
            prevote: Duration::from_millis(t.prevote_timeout_ms),
            precommit: Duration::from_millis(t.precommit_timeout_ms),
            ..LinearTimeouts::default()
        };
        HeightParams::new(self.validators.clone(), timeouts, Some(Duration::from_millis(t.block_interval_ms)))
    }

    fn next_height(&self) -> u64 {
        self.chain.ledger().height() + 1
    }

    /// Checks a proposed block against the ledger; counts and logs an invalid one.
    pub(crate) fn validate(&self, height: Height, proposer: Address, value: &BlockValue) -> Validity {
        let block = value.block();
        let result = if block.header.height != height.0 {
            Err(format!("block of height {} proposed for height {height}", block.header.height))
        } else if block.header.proposer != proposer.0 {
            Err(format!("block names proposer {}, the proposal {}", block.header.proposer, proposer))
        } else {
            self.chain.ledger_mut().validate(block).map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => Validity::Valid,
            Err(reason) => {
                self.chain.metrics.invalid_proposals.fetch_add(1, Relaxed);
                warn!(%height, %proposer, "refusing proposed block: {reason}");
                Validity::Invalid
            }
        }
    }

    fn accept_part(&mut self, part: ProposalPart) -> Option<ProposedValue<Ctx>> {
        let validity = self.validate(part.height, part.proposer, &part.value);
        let pv = ProposedValue {
            height: part.height,
            round: part.round,
            valid_round: part.pol_round,
            proposer: part.proposer,
            value: part.value.clone(),
            validity,
        };
        self.values.insert(part.value.block_id(), part.value);
        self.undecided.entry((part.height.0, part.round)).or_default().push(pv.clone());
        Some(pv)
    }

    fn publish(&self, channels: &Channels<Ctx>, part: ProposalPart) -> impl Future<Output = ()> + use<> {
        let id = stream_id(part.height, part.round);
        let network = channels.network.clone();
        async move {
            for msg in [
                StreamMessage::new(id.clone(), 0, StreamContent::Data(part)),
                StreamMessage::new(id, 1, StreamContent::Fin),
            ] {
                if let Err(e) = network.send(NetworkMsg::PublishProposalPart(msg)).await {
                    error!("cannot publish a proposal part: {e}");
                }
            }
        }
    }

    /// Persists and applies a decided block. Idempotent for heights already applied.
    fn commit(&mut self, certificate: &EngineCertificate<Ctx>) -> Result<(), String> {
        let height = certificate.height.0;
        if height <= self.chain.ledger().height() {
            return Ok(());
        }
        let value = self
            .values
            .get(&certificate.value_id)
            .cloned()
            .ok_or_else(|| format!("decided block of height {height} is unknown here"))?;
        let cert = to_cairn_certificate(certificate);
        cert.verify(&self.chain.chain, height, &certificate.value_id.0, &self.chain.genesis.membership.validators)
            .map_err(|e| format!("decided certificate does not verify: {e}"))?;
        let cert_bytes = encode(&cert).map_err(|e| e.to_string())?;
        let block = value.block();
        {
            let mut ledger = self.chain.ledger_mut();
            ledger.validate(block).map_err(|e| format!("decided block does not apply: {e}"))?;
            self.chain.store.append(block, &cert_bytes).map_err(|e| e.to_string())?;
            ledger.apply(block).map_err(|e| format!("decided block does not apply: {e}"))?;
            let mut mempool = self.chain.mempool();
            mempool.after_block(&ledger, &block.transactions);
            self.chain.metrics.mempool.store(mempool.len() as u64, Relaxed);
        }
        let m = &self.chain.metrics;
        m.height.store(height, Relaxed);
        m.blocks.fetch_add(1, Relaxed);
        m.committed_txs.fetch_add(block.transactions.len() as u64, Relaxed);
        let now = Instant::now();
        if let Some(prev) = self.last_decided.replace(now) {
            m.block_interval_ms.store(u64::try_from(now.duration_since(prev).as_millis()).unwrap_or(u64::MAX), Relaxed);
        }
        self.chain.notify_decided(height);
        self.built.retain(|(h, _), _| *h > height);
        self.undecided.retain(|(h, _), _| *h > height);
        self.values.retain(|_, v| v.block().header.height > height);
        self.pending.retain(|p| p.height.0 > height);
        info!(height, txs = block.transactions.len(), signers = cert.signatures.len(), "block decided and stored");
        Ok(())
    }

    fn decided_values(&self, start: u64, end: u64) -> Vec<RawDecidedValue<Ctx>> {
        let last = self.chain.ledger().height();
        let (start, end) = (start.max(1), end.min(last).min(start.max(1).saturating_add(MAX_SYNC_BATCH - 1)));
        let mut out = Vec::new();
        for h in start..=end {
            let Ok(Some((block, cert))) = self.chain.store.get(h) else { break };
            let Ok(cert) = decode_versioned::<CommitCertificate>(&cert, cairn_proto::encoding::MAX_MESSAGE_LEN) else {
                break;
            };
            let Ok(bytes) = encode_block(&block) else { break };
            out.push(RawDecidedValue::new(bytes, to_engine_certificate(&cert)));
        }
        out
    }

    /// Answers consensus until its channel closes.
    pub async fn run(mut self, mut channels: Channels<Ctx>) -> Result<(), NodeError> {
        while let Some(msg) = channels.consensus.recv().await {
            match msg {
                AppMsg::ConsensusReady { reply } => {
                    let start = self.next_height();
                    info!(height = start, "consensus ready; starting");
                    let _ = reply.send((Height(start), self.params()));
                }
                AppMsg::StartedRound { height, round, proposer, role, reply_value } => {
                    debug!(%height, %round, %proposer, ?role, "round started");
                    if round == Round::new(0) {
                        // Malachite starts the next height `target_time` after this one
                        // started (if this one is decided by then): its proposal is built
                        // then, and the batchers aim their batches at it.
                        let interval = Duration::from_millis(self.timing.block_interval_ms);
                        self.chain.expect_proposal_at(Instant::now() + interval);
                    }
                    self.chain.metrics.round.store(round.as_u32().map_or(0, u64::from), Relaxed);
                    let parts: Vec<_> = std::mem::take(&mut self.pending);
                    for part in parts {
                        if part.height == height {
                            self.accept_part(part);
                        } else if part.height > height {
                            self.pending.push(part);
                        }
                    }
                    let values = self.undecided.get(&(height.0, round)).cloned().unwrap_or_default();
                    let _ = reply_value.send(values);
                }
                AppMsg::GetValue { height, round, timeout, reply } => {
                    let (value, publish) = match self.built.get(&(height.0, round)) {
                        Some(v) => (v.clone(), true),
                        None => match self.proposal(height, timeout).await {
                            Ok(v) => v,
                            Err(e) => {
                                error!(%height, %round, "cannot build a block: {e}");
                                continue;
                            }
                        },
                    };
                    self.built.insert((height.0, round), value.clone());
                    self.values.insert(value.block_id(), value.clone());
                    let _ = reply.send(LocallyProposedValue::new(height, round, value.clone()));
                    if publish {
                        let part = ProposalPart { height, round, pol_round: Round::Nil, proposer: self.me, value };
                        self.publish(&channels, part).await;
                    } else {
                        // The others see no proposal, prevote nil and the round lapses:
                        // no empty height is stored (ADR 019).
                        self.chain.metrics.idle_rounds.fetch_add(1, Relaxed);
                        debug!(%height, %round, "nothing to commit: empty proposal held back");
                    }
                }
                AppMsg::ReceivedProposalPart { from, part, reply, .. } => {
                    let answer = match part.content {
                        StreamContent::Fin => None,
                        StreamContent::Data(p) => {
                            let next = self.next_height();
                            if p.height.0 < next {
                                None
                            } else if p.height.0 > next {
                                if self.pending.len() < MAX_PENDING_PARTS {
                                    self.pending.push(p);
                                }
                                None
                            } else {
                                debug!(%from, height = %p.height, round = %p.round, "proposal received");
                                self.accept_part(p)
                            }
                        }
                    };
                    let _ = reply.send(answer);
                }
                AppMsg::Decided { certificate, reply, .. } => {
                    if let Err(e) = self.commit(&certificate) {
                        error!(height = %certificate.height, "cannot commit the decided block: {e}");
                    }
                    let _ = reply.send(());
                }
                AppMsg::Finalized { certificate, reply, .. } => {
                    if let Err(e) = self.commit(&certificate) {
                        error!(height = %certificate.height, "cannot commit the decided block: {e}");
                    }
                    let applied = self.chain.ledger().height();
                    let next = if applied >= certificate.height.0 {
                        Next::Start(Height(applied + 1), self.params())
                    } else {
                        Next::Restart(certificate.height, self.params())
                    };
                    let _ = reply.send(next);
                }
                AppMsg::GetHistoryMinHeight { reply } => {
                    let _ = reply.send(Height(1));
                }
                AppMsg::GetDecidedValues { range, reply } => {
                    let _ = reply.send(self.decided_values(range.start().0, range.end().0));
                }
                AppMsg::ProcessSyncedValue { height, round, proposer, value_bytes, reply } => {
                    let outcome = match decode_block(&value_bytes) {
                        Err(e) => {
                            warn!(%height, "undecodable synced block: {e}");
                            SyncedValueOutcome::PeerFault
                        }
                        Ok(value) => {
                            let validity = if height.0 == self.next_height() {
                                self.validate(height, proposer, &value)
                            } else {
                                Validity::Invalid
                            };
                            self.values.insert(value.block_id(), value.clone());
                            SyncedValueOutcome::Verdict(ProposedValue {
                                height,
                                round,
                                valid_round: Round::Nil,
                                proposer,
                                value,
                                validity,
                            })
                        }
                    };
                    let _ = reply.send(outcome);
                }
                AppMsg::RestreamProposal { height, round, valid_round, address, value_id } => {
                    if let Some(value) = self.values.get(&value_id).cloned() {
                        let part = ProposalPart { height, round, pol_round: valid_round, proposer: address, value };
                        self.publish(&channels, part).await;
                    }
                }
                AppMsg::ExtendVote { reply, .. } => {
                    let _ = reply.send(None);
                }
                AppMsg::VerifyVoteExtensions { reply, .. } => {
                    // cairn uses no vote extensions, so there is never one to verify.
                    let _ = reply.send(Vec::new());
                }
            }
        }
        Err(NodeError::Fatal("the consensus engine stopped".into()))
    }

    /// The block to propose at `height` and whether to publish it (ADR 019). A block with
    /// transactions goes out at once. While the mempool holds nothing to commit, the
    /// proposer waits for a transaction until shortly before its propose `timeout`, and
    /// proposes the moment one is admitted (the first reading after a quiet spell is not
    /// held up); if none comes, an empty block is published only when `idle_block_ms` has
    /// passed since the last decided block, and otherwise held back so the round lapses.
    async fn proposal(&mut self, height: Height, timeout: Duration) -> Result<(BlockValue, bool), String> {
        let idle = Duration::from_millis(self.timing.idle_block_ms);
        let start = Instant::now();
        let hold_until = start + timeout.saturating_sub(HOLD_MARGIN).max(timeout / 2);
        loop {
            let value = self.build(height)?;
            if !value.block().transactions.is_empty() || idle.is_zero() {
                return Ok((value, true));
            }
            // A node that has decided nothing since it started proposes at once.
            let heartbeat = self.last_decided.map_or(start, |t| t + idle);
            let now = Instant::now();
            if now >= heartbeat {
                return Ok((value, true));
            }
            if now >= hold_until {
                return Ok((value, false));
            }
            let _ = tokio::time::timeout_at(heartbeat.min(hold_until).into(), self.chain.admitted()).await;
        }
    }

    fn build(&mut self, height: Height) -> Result<BlockValue, String> {
        let mut ledger = self.chain.ledger_mut();
        if ledger.height() + 1 != height.0 {
            return Err(format!("asked for height {height} while the ledger is at {}", ledger.height()));
        }
        let mut mempool = self.chain.mempool();
        let candidates = mempool.candidates(ledger.limits().max_block_txs * 2);
        let (block, rejected) =
            ledger.propose(candidates, crate::clock::now_ms(), self.me.0).map_err(|e| e.to_string())?;
        let dropped = mempool.drop_rejected(&rejected);
        if dropped > 0 {
            self.chain.metrics.rejected_txs.fetch_add(dropped as u64, Relaxed);
        }
        self.chain.metrics.mempool.store(mempool.len() as u64, Relaxed);
        BlockValue::new(block).map_err(|e| e.to_string())
    }
}
