//! cairn's own peer network, beside Malachite's consensus network and on the same node
//! key: transaction gossip (`/cairn/tx/1`, so any node's transactions reach the proposer)
//! and the request-response protocol `/cairn/req/1`, whose messages and answers belong
//! to the record layer (`records::wire`, `Records::serve`). This module only carries
//! them, in the shape of rust-libp2p's file-sharing example: a cloneable [`PeerClient`]
//! sends commands, each with a `oneshot` for its answer, to the one [`EventLoop`] that
//! owns the `Swarm`.
//!
//! Only genesis validators' peer ids may connect; every other connection is closed as
//! soon as the peer's identity is known (after the Noise handshake) and counted.

pub mod codec;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use libp2p::futures::StreamExt as _;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, allow_block_list, gossipsub, noise, request_response, tcp, yamux};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use cairn_proto::KeyId;
use cairn_proto::encoding::{decode, encode};
use cairn_proto::genesis::Genesis;
use cairn_proto::transaction::Transaction;

use crate::chain::Chain;
use crate::records::Records;
use crate::records::ports::{AskError, Peers};
use crate::records::wire::{REQUEST_PROTOCOL, Request, Response};
use codec::{MAX_MESSAGE, WireCodec};

/// The gossip topic for transactions.
pub const TX_TOPIC: &str = "/cairn/tx/1";
/// The longest a `/cairn/req/1` stream may stay open, either way: the longest of the
/// requests' own timeouts (`Request::timeout`), so that a peer's answer is never cut
/// before its asker gives up.
pub const STREAM_TIMEOUT: Duration = crate::records::wire::LONG_ASK;
/// Most transactions in one gossip message.
const GOSSIP_BATCH: usize = 2_000;
/// Commands waiting for the event loop.
const COMMANDS: usize = 4_096;

/// Errors of starting the network.
#[derive(Debug, thiserror::Error)]
#[error("p2p: {0}")]
pub struct NetError(String);

fn net_err(e: impl std::fmt::Display) -> NetError {
    NetError(e.to_string())
}

/// A command to the event loop.
#[derive(Debug)]
enum Command {
    /// Send `request` to `peer`; answer on `reply`.
    Ask { peer: PeerId, request: Request, reply: oneshot::Sender<Result<Response, String>> },
}

/// The handle the record layer asks peers through ([`Peers`]); cloneable.
#[derive(Debug, Clone)]
pub struct PeerClient {
    commands: mpsc::Sender<Command>,
    connected: watch::Receiver<HashSet<KeyId>>,
    /// Genesis validators: key id and peer id.
    validators: Arc<Vec<(KeyId, PeerId)>>,
}

#[async_trait::async_trait]
impl Peers for PeerClient {
    fn connected(&self) -> HashSet<KeyId> {
        self.connected.borrow().clone()
    }

    async fn ask(&self, to: KeyId, request: Request) -> Result<Response, AskError> {
        let Some(peer) = self.validators.iter().find(|(k, _)| *k == to).map(|(_, p)| *p) else {
            return Err(AskError::NotDelivered(format!("{to} is not a genesis validator")));
        };
        let request_timeout = request.timeout();
        let (reply, rx) = oneshot::channel();
        let sent = async {
            self.commands
                .send(Command::Ask { peer, request, reply })
                .await
                .map_err(|_| AskError::NotDelivered("the p2p event loop has stopped".into()))?;
            rx.await
                .map_err(|_| AskError::NotDelivered("the p2p event loop dropped the request".into()))?
                .map_err(AskError::NotDelivered)
        };
        let timeout = request_timeout;
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(AskError::NotDelivered(format!("no answer within {} s", timeout.as_secs()))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Response::Error(why))) => Err(AskError::Refused(why)),
            Ok(Ok(answer)) => Ok(answer),
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    gossipsub: gossipsub::Behaviour,
    requests: request_response::Behaviour<WireCodec>,
}

/// Peer ids of the genesis validators, in genesis order.
pub fn genesis_peer_ids(genesis: &Genesis) -> Vec<PeerId> {
    genesis_validators(genesis).into_iter().map(|(_, p)| p).collect()
}

/// Key ids and peer ids of the genesis validators, in genesis order.
pub fn genesis_validators(genesis: &Genesis) -> Vec<(KeyId, PeerId)> {
    genesis
        .membership
        .validators
        .iter()
        .filter_map(|v| {
            let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&v.public_key.0).ok()?;
            Some((v.public_key.key_id(), libp2p::identity::PublicKey::from(key).to_peer_id()))
        })
        .collect()
}

/// The one task that owns the swarm.
pub struct EventLoop {
    swarm: libp2p::Swarm<Behaviour>,
    me: PeerId,
    peers: Vec<Multiaddr>,
    topic: gossipsub::IdentTopic,
    commands: mpsc::Receiver<Command>,
    connected_tx: watch::Sender<HashSet<KeyId>>,
    validators: Arc<Vec<(KeyId, PeerId)>>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").field("me", &self.me).finish_non_exhaustive()
    }
}

/// Builds the swarm, listening on `listen` and keeping `peers` dialled; returns the
/// client handle and the event loop to run.
pub fn new(
    genesis: &Genesis,
    keypair: libp2p::identity::Keypair,
    listen: Multiaddr,
    peers: Vec<Multiaddr>,
) -> Result<(PeerClient, EventLoop), NetError> {
    let me = keypair.public().to_peer_id();
    let validators = Arc::new(genesis_validators(genesis));
    let allowed: Vec<PeerId> = validators.iter().map(|(_, p)| *p).collect();
    let topic = gossipsub::IdentTopic::new(TX_TOPIC);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(net_err)?
        .with_behaviour(|key| {
            let mut allow = allow_block_list::Behaviour::default();
            for p in &allowed {
                allow.allow_peer(*p);
            }
            let config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(MAX_MESSAGE)
                .validation_mode(gossipsub::ValidationMode::Strict)
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
                })
                .heartbeat_interval(Duration::from_millis(500))
                .build()
                .map_err(|e| e.to_string())?;
            let gossipsub = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)?;
            let requests = request_response::Behaviour::with_codec(
                WireCodec,
                [(StreamProtocol::new(REQUEST_PROTOCOL), request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(STREAM_TIMEOUT),
            );
            Ok(Behaviour { allow, gossipsub, requests })
        })
        .map_err(|e| NetError(format!("building the p2p swarm: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm.behaviour_mut().gossipsub.subscribe(&topic).map_err(net_err)?;
    swarm.listen_on(listen.clone()).map_err(net_err)?;
    info!(%me, %listen, "cairn p2p listening");
    let (commands_tx, commands) = mpsc::channel(COMMANDS);
    let (connected_tx, connected) = watch::channel(HashSet::new());
    let client = PeerClient { commands: commands_tx, connected, validators: validators.clone() };
    Ok((client, EventLoop { swarm, me, peers, topic, commands, connected_tx, validators }))
}

impl EventLoop {
    fn key_of(&self, peer: &PeerId) -> Option<KeyId> {
        self.validators.iter().find(|(_, p)| p == peer).map(|(k, _)| *k)
    }

    /// Runs the swarm until the process ends. Transactions sent on `outgoing` are
    /// gossiped; gossiped transactions are admitted to `chain`'s mempool; requests from
    /// peers are answered by `records` (each in its own task).
    pub async fn run(
        mut self,
        chain: Arc<Chain>,
        records: Arc<Records>,
        mut outgoing: mpsc::Receiver<Transaction>,
    ) -> Result<(), NetError> {
        let metrics = chain.metrics.clone();
        let mut redial = tokio::time::interval(Duration::from_secs(2));
        let mut connected: HashSet<PeerId> = HashSet::new();
        let mut waiting: HashMap<request_response::OutboundRequestId, oneshot::Sender<Result<Response, String>>> =
            HashMap::new();
        let (answers_tx, mut answers) = mpsc::channel::<(request_response::ResponseChannel<Response>, Response)>(1024);
        loop {
            tokio::select! {
                Some(command) = self.commands.recv() => match command {
                    Command::Ask { peer, request, reply } => {
                        let id = self.swarm.behaviour_mut().requests.send_request(&peer, request);
                        waiting.insert(id, reply);
                    }
                },
                Some((channel, response)) = answers.recv() => {
                    let _ = self.swarm.behaviour_mut().requests.send_response(channel, response);
                }
                _ = redial.tick() => {
                    for addr in &self.peers {
                        let target = addr.iter().find_map(|p| match p {
                            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                            _ => None,
                        });
                        if target.is_some_and(|t| !connected.contains(&t) && t != self.me) {
                            let _ = self.swarm.dial(addr.clone());
                        }
                    }
                }
                Some(first) = outgoing.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < GOSSIP_BATCH {
                        match outgoing.try_recv() {
                            Ok(tx) => batch.push(tx),
                            Err(_) => break,
                        }
                    }
                    match encode(&batch) {
                        Ok(bytes) => {
                            if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), bytes) {
                                debug!("gossip of {} transactions not sent: {e}", batch.len());
                            }
                        }
                        Err(e) => warn!("cannot encode transactions for gossip: {e}"),
                    }
                }
                event = self.swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
                        match decode::<Vec<Transaction>>(&message.data, MAX_MESSAGE) {
                            Ok(txs) => {
                                for tx in txs {
                                    let _ = chain.submit(tx, false);
                                }
                            }
                            Err(e) => {
                                metrics.rejected_txs.fetch_add(1, Relaxed);
                                warn!("malformed transaction gossip from {:?}: {e}", message.source);
                            }
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Requests(request_response::Event::Message {
                        peer, message: request_response::Message::Request { request, channel, .. }, ..
                    })) => {
                        let Some(from) = self.key_of(&peer) else {
                            // The allow list admits only validators; this cannot happen.
                            let _ = self.swarm.behaviour_mut().requests.send_response(
                                channel, Response::Error("not a genesis validator".into()));
                            continue;
                        };
                        let (records, answers) = (records.clone(), answers_tx.clone());
                        tokio::spawn(async move {
                            let response = records.serve(from, request).await;
                            let _ = answers.send((channel, response)).await;
                        });
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Requests(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response }, ..
                    })) => {
                        if let Some(reply) = waiting.remove(&request_id) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Requests(request_response::Event::OutboundFailure {
                        request_id, error, ..
                    })) => {
                        if let Some(reply) = waiting.remove(&request_id) {
                            let _ = reply.send(Err(error.to_string()));
                        }
                    }
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        connected.insert(peer_id);
                        self.publish_connected(&connected, &metrics);
                        debug!(%peer_id, "p2p peer connected");
                    }
                    SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                        connected.remove(&peer_id);
                        self.publish_connected(&connected, &metrics);
                    }
                    SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                        if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                            metrics.refused_connections.fetch_add(1, Relaxed);
                            warn!(%send_back_addr, "refused a connection from a peer that is not a genesis validator");
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn publish_connected(&self, connected: &HashSet<PeerId>, metrics: &crate::metrics::Metrics) {
        metrics.peers.store(connected.len() as u64, Relaxed);
        let keys = connected.iter().filter_map(|p| self.key_of(p)).collect();
        self.connected_tx.send_replace(keys);
    }
}
