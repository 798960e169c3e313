//! cairn's own peer protocol, beside Malachite's consensus network and on the same node
//! key: transaction gossip (so any node's transactions reach the proposer) and a versioned
//! request-response protocol that carries custody traffic (replicas, reads). Only genesis validators'
//! peer ids may connect; every other connection is closed as soon as the peer's identity
//! is known (after the Noise handshake) and counted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use libp2p::futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, allow_block_list, gossipsub, noise, request_response, tcp, yamux};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use cairn_proto::encoding::{decode, encode};
use cairn_proto::record::RecordId;
use cairn_proto::transaction::Transaction;
use cairn_proto::{Hash32, KeyId};

use super::Shared;
use crate::records::erasure::{EraseAnswer, EraseOrder};
use crate::records::ingest::ReadAnswer;
use crate::vault::{Replica, SubjectRef};

/// The gossip topic for transactions.
pub const TX_TOPIC: &str = "/cairn/tx/1";
/// The request-response protocol (version 1).
pub const REQUEST_PROTOCOL: &str = "/cairn/req/1";
/// Largest gossip message or request/response.
const MAX_MESSAGE: usize = 8 << 20;
/// Most transactions in one gossip message.
const GOSSIP_BATCH: usize = 2_000;

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
}

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
    /// The request could not be answered.
    Error(String),
}

/// A request this node sends, with where to put the answer.
#[derive(Debug)]
pub struct Outbound {
    /// Peer.
    pub peer: PeerId,
    /// Request.
    pub request: Request,
    /// Answer, or why there is none.
    pub reply: oneshot::Sender<Result<Response, String>>,
}

/// Length-delimited bcs framing for the request-response protocol.
#[derive(Debug, Clone, Default)]
pub struct WireCodec;

async fn read_frame<T: libp2p::futures::AsyncRead + Unpin + Send, M: Serialize + serde::de::DeserializeOwned>(
    io: &mut T,
) -> std::io::Result<M> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes is too long")));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    decode(&buf, MAX_MESSAGE).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

async fn write_frame<T: libp2p::futures::AsyncWrite + Unpin + Send, M: Serialize>(
    io: &mut T,
    msg: &M,
) -> std::io::Result<()> {
    let bytes = encode(msg).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too long"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    io.close().await
}

#[async_trait::async_trait]
impl request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Request>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }
    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Response>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }
    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Request) -> std::io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }
    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Response) -> std::io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    gossipsub: gossipsub::Behaviour,
    requests: request_response::Behaviour<WireCodec>,
}

/// Peer ids of the genesis validators.
pub fn genesis_peer_ids(genesis: &cairn_proto::genesis::Genesis) -> Vec<PeerId> {
    genesis
        .membership
        .validators
        .iter()
        .filter_map(|v| libp2p::identity::ed25519::PublicKey::try_from_bytes(&v.public_key.0).ok())
        .map(|k| libp2p::identity::PublicKey::from(k).to_peer_id())
        .collect()
}

/// Runs the swarm until the process ends. Transactions sent on `outgoing` are gossiped;
/// gossiped transactions are admitted to the mempool.
pub async fn run(
    shared: Arc<Shared>,
    keypair: libp2p::identity::Keypair,
    listen: Multiaddr,
    peers: Vec<Multiaddr>,
    mut outgoing: mpsc::Receiver<Transaction>,
    mut outbound: mpsc::Receiver<Outbound>,
    connected_tx: watch::Sender<HashSet<PeerId>>,
) -> anyhow::Result<()> {
    let me = keypair.public().to_peer_id();
    let allowed = genesis_peer_ids(&shared.genesis);
    let topic = gossipsub::IdentTopic::new(TX_TOPIC);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
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
                request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
            );
            Ok(Behaviour { allow, gossipsub, requests })
        })
        .map_err(|e| anyhow::anyhow!("building the p2p swarm: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm.behaviour_mut().gossipsub.subscribe(&topic)?;
    swarm.listen_on(listen.clone())?;
    info!(%me, %listen, "cairn p2p listening");

    let mut redial = tokio::time::interval(Duration::from_secs(2));
    let mut connected: HashSet<PeerId> = HashSet::new();
    let mut waiting: HashMap<request_response::OutboundRequestId, oneshot::Sender<Result<Response, String>>> =
        HashMap::new();
    let (answers_tx, mut answers) = mpsc::channel::<(request_response::ResponseChannel<Response>, Response)>(1024);
    loop {
        tokio::select! {
            Some(out) = outbound.recv() => {
                let id = swarm.behaviour_mut().requests.send_request(&out.peer, out.request);
                waiting.insert(id, out.reply);
            }
            Some((channel, response)) = answers.recv() => {
                let _ = swarm.behaviour_mut().requests.send_response(channel, response);
            }
            _ = redial.tick() => {
                for addr in &peers {
                    let target = addr.iter().find_map(|p| match p {
                        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                        _ => None,
                    });
                    if target.is_some_and(|t| !connected.contains(&t) && t != me) {
                        let _ = swarm.dial(addr.clone());
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
                        if let Err(e) = swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes) {
                            debug!("gossip of {} transactions not sent: {e}", batch.len());
                        }
                    }
                    Err(e) => warn!("cannot encode transactions for gossip: {e}"),
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
                    match decode::<Vec<Transaction>>(&message.data, MAX_MESSAGE) {
                        Ok(txs) => {
                            for tx in txs {
                                let _ = shared.submit(tx, false);
                            }
                        }
                        Err(e) => {
                            shared.metrics.rejected_txs.fetch_add(1, Relaxed);
                            warn!("malformed transaction gossip from {:?}: {e}", message.source);
                        }
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Requests(request_response::Event::Message {
                    peer, message: request_response::Message::Request { request, channel, .. }, ..
                })) => match request {
                    Request::Status => {
                        let response = {
                            let ledger = shared.ledger();
                            Response::Status { chain: shared.chain, height: ledger.height(), last_hash: ledger.last_hash() }
                        };
                        let _ = swarm.behaviour_mut().requests.send_response(channel, response);
                    }
                    Request::Replicate(replicas) => {
                        let (shared, answers) = (shared.clone(), answers_tx.clone());
                        tokio::spawn(async move {
                            let response = shared.records.accept_replicas(peer, replicas).await;
                            let _ = answers.send((channel, response)).await;
                        });
                    }
                    Request::Read { rid, gateway } => {
                        let (shared, answers) = (shared.clone(), answers_tx.clone());
                        tokio::spawn(async move {
                            let response = match crate::records::receipts::read_here(&shared, rid, gateway).await {
                                Ok(answer) => Response::Record(Box::new(answer)),
                                Err(crate::records::ingest::RecordsError::NotFound(_)) => Response::NotFound,
                                Err(e) => Response::Error(e.to_string()),
                            };
                            let _ = answers.send((channel, response)).await;
                        });
                    }
                    Request::Subject(subject) => {
                        let (shared, answers) = (shared.clone(), answers_tx.clone());
                        tokio::spawn(async move {
                            let response = match crate::records::erasure::subject_here(&shared, subject).await {
                                Ok(list) => Response::Records(list),
                                Err(e) => Response::Error(e.to_string()),
                            };
                            let _ = answers.send((channel, response)).await;
                        });
                    }
                    Request::Hold { rids, on } => {
                        // A redb commit syncs: kept off the swarm's loop.
                        let (shared, answers) = (shared.clone(), answers_tx.clone());
                        tokio::task::spawn_blocking(move || {
                            let now = super::auth::now_ms();
                            let response = match shared.records.erasures.store.set_holds(&rids, on, now) {
                                Ok(()) => Response::Held,
                                Err(e) => Response::Error(e.to_string()),
                            };
                            let _ = answers.blocking_send((channel, response));
                        });
                    }
                    Request::Erase(orders) => {
                        let (shared, answers) = (shared.clone(), answers_tx.clone());
                        tokio::spawn(async move {
                            let response = Response::Erased(crate::records::erasure::erase_here(&shared, orders).await);
                            let _ = answers.send((channel, response)).await;
                        });
                    }
                },
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
                    shared.metrics.peers.store(connected.len() as u64, Relaxed);
                    connected_tx.send_replace(connected.clone());
                    debug!(%peer_id, "p2p peer connected");
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    connected.remove(&peer_id);
                    shared.metrics.peers.store(connected.len() as u64, Relaxed);
                    connected_tx.send_replace(connected.clone());
                }
                SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
                    if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                        shared.metrics.refused_connections.fetch_add(1, Relaxed);
                        warn!(%send_back_addr, "refused a connection from a peer that is not a genesis validator");
                    }
                }
                _ => {}
            }
        }
    }
}
