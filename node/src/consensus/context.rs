//! cairn's implementation of Malachite's `Context`: what a height, an address, a
//! validator, a value, a proposal and a vote are.

use std::fmt;
use std::sync::Arc;

use arc_malachitebft_app_channel::app::types::core::{
    self as core, LinearTimeouts, NilOrVal, Round, SignedExtension, VoteType, VotingPower,
};
use arc_malachitebft_signing_ed25519::{Ed25519, PublicKey as ConsensusKey};
use cairn_proto::consensus::{ProposalBody, VoteBody, VoteKind};
use cairn_proto::encoding::EncodeError;
use cairn_proto::membership::Membership;
use cairn_proto::transaction::Block;
use cairn_proto::{Hash32, KeyId};

/// A validator's address: the key id of its public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub KeyId);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl core::Address for Address {}

/// A block height (the first block is height 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl core::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }
    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }
    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A block's id: the hash of its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub Hash32);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The value consensus decides: a block, with its id computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockValue {
    id: BlockId,
    block: Arc<Block>,
}

impl BlockValue {
    /// Wraps a block.
    pub fn new(block: Block) -> Result<Self, EncodeError> {
        Ok(Self { id: BlockId(block.header.hash()?), block: Arc::new(block) })
    }
    /// The block.
    pub fn block(&self) -> &Block {
        &self.block
    }
    /// Its id (the header hash).
    pub fn block_id(&self) -> BlockId {
        self.id
    }
}

impl PartialOrd for BlockValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BlockValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl core::Value for BlockValue {
    type Id = BlockId;
    fn id(&self) -> BlockId {
        self.id
    }
}

/// A validator as consensus sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Address (key id).
    pub address: Address,
    /// Consensus public key (the node's one public key).
    pub public_key: ConsensusKey,
    /// Voting power.
    pub voting_power: VotingPower,
}

impl core::Validator<CairnContext> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }
    fn public_key(&self) -> &ConsensusKey {
        &self.public_key
    }
    fn voting_power(&self) -> VotingPower {
        self.voting_power
    }
}

/// The validator set, ordered by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Arc<Vec<Validator>>,
}

/// A membership that cannot serve as a validator set.
#[derive(Debug, thiserror::Error)]
pub enum BadValidatorSet {
    /// A key that is not a valid consensus key.
    #[error("validator {0} has an invalid consensus key")]
    Key(KeyId),
    /// No validators.
    #[error("the validator set is empty")]
    Empty,
}

impl ValidatorSet {
    /// The validators of a membership.
    pub fn from_membership(m: &Membership) -> Result<Self, BadValidatorSet> {
        let mut validators = m
            .validators
            .iter()
            .map(|v| {
                let id = v.public_key.key_id();
                let public_key = ConsensusKey::from_bytes(v.public_key.0).map_err(|_| BadValidatorSet::Key(id))?;
                Ok(Validator { address: Address(id), public_key, voting_power: v.voting_power })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if validators.is_empty() {
            return Err(BadValidatorSet::Empty);
        }
        validators.sort_by_key(|v| v.address);
        Ok(Self { validators: Arc::new(validators) })
    }

    /// The validators, by address.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }
}

impl core::ValidatorSet<CairnContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }
    fn total_voting_power(&self) -> VotingPower {
        self.validators.iter().map(|v| v.voting_power).sum()
    }
    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.validators.binary_search_by_key(address, |v| v.address).ok().and_then(|i| self.validators.get(i))
    }
    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// A proposal of a block for a height and round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The proposed block.
    pub value: BlockValue,
    /// Proof-of-lock round.
    pub pol_round: Round,
    /// Proposer.
    pub proposer: Address,
}

impl Proposal {
    /// What the proposer signs.
    pub fn body(&self, chain: Hash32) -> ProposalBody {
        ProposalBody {
            version: 1,
            chain,
            height: self.height.0,
            round: self.round.as_u32().unwrap_or(0),
            value: self.value.id.0,
            pol_round: self.pol_round.as_u32(),
            proposer: self.proposer.0,
        }
    }
}

impl core::Proposal<CairnContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &BlockValue {
        &self.value
    }
    fn take_value(self) -> BlockValue {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// A part of a streamed proposal. cairn blocks are small (bounded by the ledger limits),
/// so a proposal travels as one part carrying the whole block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalPart {
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// Proof-of-lock round of the proposal this part belongs to.
    pub pol_round: Round,
    /// Proposer.
    pub proposer: Address,
    /// The block.
    pub value: BlockValue,
}

impl core::ProposalPart<CairnContext> for ProposalPart {
    fn is_first(&self) -> bool {
        true
    }
    fn is_last(&self) -> bool {
        true
    }
}

/// Vote extensions are not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoExtension {}

impl core::Extension for NoExtension {
    fn size_bytes(&self) -> usize {
        0
    }
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// Prevote or precommit.
    pub vote_type: VoteType,
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// Block voted for, or nil.
    pub value: NilOrVal<BlockId>,
    /// Voter.
    pub voter: Address,
}

impl Vote {
    /// What the voter signs.
    pub fn body(&self, chain: Hash32) -> VoteBody {
        VoteBody {
            version: 1,
            chain,
            kind: match self.vote_type {
                VoteType::Prevote => VoteKind::Prevote,
                VoteType::Precommit => VoteKind::Precommit,
            },
            height: self.height.0,
            round: self.round.as_u32().unwrap_or(0),
            value: match &self.value {
                NilOrVal::Nil => None,
                NilOrVal::Val(id) => Some(id.0),
            },
            voter: self.voter.0,
        }
    }
}

impl core::Vote<CairnContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<BlockId> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<BlockId> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.vote_type
    }
    fn validator_address(&self) -> &Address {
        &self.voter
    }
    fn extension(&self) -> Option<&SignedExtension<CairnContext>> {
        None
    }
    fn take_extension(&mut self) -> Option<SignedExtension<CairnContext>> {
        None
    }
    fn extend(self, _extension: SignedExtension<CairnContext>) -> Self {
        self
    }
}

/// cairn's consensus context: which chain, so every signature is bound to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CairnContext {
    /// Genesis hash.
    pub chain: Hash32,
}

impl core::Context for CairnContext {
    type Address = Address;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = LinearTimeouts;
    type Value = BlockValue;
    type Vote = Vote;
    type Extension = NoExtension;
    type SigningScheme = Ed25519;

    /// Round-robin over the validators by address, shifted by height and round.
    #[allow(clippy::indexing_slicing)] // index < len, and a ValidatorSet is never empty
    fn select_proposer<'a>(&self, set: &'a ValidatorSet, height: Height, round: Round) -> &'a Validator {
        let n = set.validators.len() as u64;
        let r = round.as_u32().map_or(0, u64::from);
        &set.validators[(height.0.wrapping_add(r) % n) as usize]
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockValue,
        pol_round: Round,
        address: Address,
    ) -> Proposal {
        Proposal { height, round, value, pol_round, proposer: address }
    }

    fn new_prevote(&self, height: Height, round: Round, value_id: NilOrVal<BlockId>, address: Address) -> Vote {
        Vote { vote_type: VoteType::Prevote, height, round, value: value_id, voter: address }
    }

    fn new_precommit(&self, height: Height, round: Round, value_id: NilOrVal<BlockId>, address: Address) -> Vote {
        Vote { vote_type: VoteType::Precommit, height, round, value: value_id, voter: address }
    }
}
