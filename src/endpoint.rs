//! The state a client and a server share: the UDP socket (quinn endpoint), the config,
//! the pool, the queues and the handler. [`crate::QuicClient`] and [`crate::QuicServer`]
//! are handles to one [`Endpoint`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::codec::{self, FrameKind};
use crate::config::TransportConfig;
use crate::connection::{self, app_code, Conn};
use crate::dialling::Dialling;
use crate::error::Error;
use crate::handler::{FrameHandler, Handler, Peer};
use crate::inbox::Inbox;
use crate::message::Message;
use crate::outbox::{self, Outbox};
use crate::pool::{Pool, PoolKey};
use crate::reply::Responder;
use crate::socket;
use crate::stats::{ConnectionStats, PoolStats};
use crate::tls::{self, Identity};

/// How long `close` waits for connections to finish closing before it frees the socket
/// anyway: quinn's `wait_idle` can otherwise wait a long time for an unreachable peer.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct Endpoint {
    /// Taken at `close`, so that dropping it frees the UDP socket even while handles to
    /// this struct remain.
    quic: Mutex<Option<quinn::Endpoint>>,
    local_addr: SocketAddr,
    pub(crate) config: TransportConfig,
    pub(crate) identity: Identity,
    /// `config.server_name`, shared by every pool key.
    server_name: Arc<str>,
    /// `None` when no trust is configured (dialling fails).
    dialling: Option<Dialling>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) outbox: Outbox,
    pub(crate) inbox: Inbox,
    handler: Arc<dyn Handler>,
    /// Takes requests as frames, in `handler`'s place, when set.
    frames: Option<Arc<dyn FrameHandler>>,
    shutdown: watch::Sender<bool>,
    /// The OS chose the port and nobody can connect to it (a dial-only transport), so
    /// `close` need not wait for the socket to be freed.
    ephemeral_port: bool,
    /// Every task that holds connections or streams; `close` waits for them to end.
    pub(crate) tasks: TaskTracker,
    /// The channel writers; `close` lets them deliver what was sent before it.
    pub(crate) writers: TaskTracker,
}

/// Endpoints in memory, closed or not (a diagnostic: tests check that closed
/// transports are freed).
static IN_MEMORY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many endpoints are in memory, closed or not.
#[cfg_attr(not(feature = "node"), allow(dead_code))] // read by the Node binding's tests
pub(crate) fn in_memory() -> usize {
    IN_MEMORY.load(std::sync::atomic::Ordering::Relaxed)
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        IN_MEMORY.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A handler that takes requests as frames, as the two handlers an endpoint keeps
/// (one allocation shared by both).
#[cfg_attr(not(feature = "node"), allow(dead_code))] // used by the Node binding
pub(crate) fn frame_handlers<H: Handler + FrameHandler>(
    handler: H,
) -> (Arc<dyn Handler>, Option<Arc<dyn FrameHandler>>) {
    let handler = Arc::new(handler);
    let frames: Arc<dyn FrameHandler> = handler.clone();
    (handler, Some(frames))
}

impl Endpoint {
    /// Binds the socket. With `accept`, the endpoint accepts connections on
    /// `config.listen` (127.0.0.1:0 when unset); without, it only dials, from `listen`
    /// when set or else from an ephemeral port.
    pub(crate) fn bind(
        config: TransportConfig,
        handler: Arc<dyn Handler>,
        frames: Option<Arc<dyn FrameHandler>>,
        accept: bool,
    ) -> Result<Arc<Self>, Error> {
        let identity = match &config.identity {
            Some(identity) => identity.clone(),
            None => Identity::generate_self_signed(&tls::DEV_CERT_NAMES)?,
        };
        let transport = Arc::new(quic_transport(&config)?);
        let dialling = tls::client_crypto(&identity, &config.trust, config.zero_rtt)?
            .map(|tls| Dialling::new(tls, transport.clone()))
            .transpose()?;
        let quic = if accept {
            let crypto = tls::server_crypto(
                &identity,
                &config.trust,
                config.require_client_cert,
                config.zero_rtt,
            )?;
            let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            server.transport_config(transport);
            let addr = config
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
            socket::endpoint(addr, Some(server))
                .map_err(|e| Error::invalid("listen", format!("cannot listen on {addr}: {e}")))?
        } else {
            let bound = match config.listen {
                Some(addr) => socket::endpoint(addr, None),
                // A dual-stack socket reaches IPv4 and IPv6 peers; fall back to IPv4 where
                // the host has no IPv6.
                None => socket::endpoint(SocketAddr::from(([0u16; 8], 0)), None)
                    .or_else(|_| socket::endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), None)),
            };
            bound.map_err(|e| Error::invalid("listen", format!("cannot bind a UDP socket: {e}")))?
        };
        let local_addr = quic
            .local_addr()
            .map_err(|e| Error::invalid("listen", format!("the socket has no address: {e}")))?;
        let ephemeral_port = !accept && config.listen.is_none();
        IN_MEMORY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Arc::new(Endpoint {
            ephemeral_port,
            server_name: Arc::from(config.server_name.as_str()),
            quic: Mutex::new(Some(quic)),
            local_addr,
            config,
            identity,
            dialling,
            pool: Arc::default(),
            outbox: Outbox::default(),
            inbox: Inbox::default(),
            handler,
            frames,
            shutdown: watch::channel(false).0,
            tasks: TaskTracker::new(),
            writers: TaskTracker::new(),
        }))
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The quinn endpoint, until `close` takes it.
    fn socket(&self) -> Result<quinn::Endpoint, Error> {
        self.quic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::Closed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Completes once `close` has begun.
    pub(crate) async fn closed(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// `Closed` instead of whatever failed because the transport is closing.
    pub(crate) fn closed_or(&self, error: Error) -> Error {
        if self.is_closed() {
            Error::Closed
        } else {
            error
        }
    }

    /// The connection to `addr`: an inbound one the peer opened, a pooled one, or a new
    /// one (one handshake however many callers wait for it).
    pub(crate) async fn connection(self: &Arc<Self>, addr: SocketAddr) -> Result<Arc<Conn>, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let key = PoolKey {
            addr,
            server_name: self.server_name.clone(),
        };
        let this = self.clone();
        let dial_key = key.clone();
        let dialled = self
            .pool
            .get(&key, &self.tasks, move || this.dial(dial_key))
            .await;
        dialled.map_err(|e| match e {
            // A listener pushing to an agent that has gone: the agent's address is not a
            // listener, so dialling it back fails; say what happened instead.
            e @ (Error::Connect { .. } | Error::Tls(_)) if self.pool.recently_departed(addr) => {
                Error::ConnectionLost(format!(
                    "{addr} had connected to this transport and has disconnected; dialling it back failed: {e}"
                ))
            }
            e => e,
        })
    }

    async fn dial(self: Arc<Self>, key: PoolKey) -> Result<Arc<Conn>, Error> {
        let addr = key.addr;
        let client_config = self
            .dialling
            .as_ref()
            .ok_or_else(|| {
                Error::Tls(format!(
                    "no way to verify {addr}: set tls.ca, tls.pinnedFingerprints or tls.insecureSkipVerify"
                ))
            })?
            .for_peer(addr)?;
        let connect_error = |reason: String| Error::Connect {
            addr: addr.to_string(),
            reason,
        };
        let connecting = self
            .socket()?
            .connect_with(client_config, addr, &key.server_name)
            .map_err(|e| connect_error(e.to_string()))?;
        // With 0-RTT and a session from an earlier connection to this server, the
        // connection is usable at once: requests leave with the first packet.
        let connecting = match self.config.zero_rtt {
            true => match connecting.into_0rtt() {
                Ok((quic, accepted)) => {
                    let conn = Conn::new_early(
                        quic,
                        true,
                        self.config.max_concurrent_streams,
                        accepted,
                        self.config.connect_timeout,
                    );
                    return Ok(self.drive(key, conn));
                }
                Err(connecting) => connecting,
            },
            false => connecting,
        };
        let timeout = self.config.connect_timeout;
        let quic = tokio::select! {
            outcome = tokio::time::timeout(timeout, connecting) => match outcome {
                Ok(Ok(quic)) => quic,
                Ok(Err(e)) => {
                    return Err(match connection::connection_error(e) {
                        e @ (Error::Tls(_) | Error::Closed) => e,
                        other => connect_error(other.to_string()),
                    })
                }
                Err(_) => {
                    return Err(connect_error(format!(
                        "no handshake within {} ms",
                        timeout.as_millis()
                    )))
                }
            },
            _ = self.closed() => return Err(Error::Closed),
        };
        let conn = Conn::new(quic, true, self.config.max_concurrent_streams);
        Ok(self.drive(key, conn))
    }

    /// Serves what the peer opens on a dialled connection, until it ends and leaves the
    /// pool.
    fn drive(self: Arc<Self>, key: PoolKey, conn: Arc<Conn>) -> Arc<Conn> {
        let endpoint = self.clone();
        let driven = conn.clone();
        self.tasks.spawn(async move {
            connection::serve(endpoint.clone(), driven.clone()).await;
            endpoint.pool.remove(&key, &driven);
        });
        conn
    }

    /// Accepts connections until the endpoint closes. A failed handshake or a
    /// misbehaving peer ends only its own connection.
    pub(crate) async fn accept_loop(self: Arc<Self>) {
        let Ok(socket) = self.socket() else { return };
        while let Some(incoming) = socket.accept().await {
            let endpoint = self.clone();
            self.tasks.spawn(async move {
                let Ok(connecting) = incoming.accept() else {
                    return;
                };
                // Bounded by the idle timeout, not the connect timeout: the client counts
                // itself connected once it has sent its last handshake message, so a
                // listener that gave up while that message was still on its way (lost
                // and resent, on a lossy path) would fail the client's first requests.
                let wait = endpoint
                    .config
                    .max_idle_timeout
                    .max(endpoint.config.connect_timeout);
                // With 0-RTT, requests that came with the client's first packet are
                // answered at once, before the handshake ends; not with client
                // certificates, which handlers see only once it has ended.
                let early = endpoint.config.zero_rtt && !endpoint.config.require_client_cert;
                let connecting = match early {
                    true => match connecting.into_0rtt() {
                        Ok((quic, accepted)) => {
                            let conn = Conn::new_early(
                                quic,
                                false,
                                endpoint.config.max_concurrent_streams,
                                accepted,
                                wait,
                            );
                            // Pushes to this address use the connection only once the
                            // handshake has shown the peer is there: a first packet
                            // with a forged source address must not take them over.
                            let registered = async {
                                if conn.zero_rtt_taken().await {
                                    endpoint.pool.add_inbound(conn.clone());
                                }
                            };
                            tokio::join!(
                                connection::serve(endpoint.clone(), conn.clone()),
                                registered
                            );
                            endpoint.pool.remove_inbound(&conn);
                            return;
                        }
                        Err(connecting) => connecting,
                    },
                    false => connecting,
                };
                let Ok(Ok(quic)) = tokio::time::timeout(wait, connecting).await else {
                    return;
                };
                let conn = Conn::new(quic, false, endpoint.config.max_concurrent_streams);
                endpoint.pool.add_inbound(conn.clone());
                connection::serve(endpoint.clone(), conn.clone()).await;
                endpoint.pool.remove_inbound(&conn);
            });
        }
    }

    /// Sends a request and waits for its reply.
    pub(crate) async fn request(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut message: Message,
        timeout: Option<Duration>,
    ) -> Result<Message, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        message.ensure_id();
        let limit = self.config.max_message_bytes;
        let (head, payload) = codec::encode(FrameKind::Request, &message, limit)?;
        self.request_encoded(addr, head, payload, timeout)
            .await?
            .into_message()
    }

    /// [`Endpoint::request`] for a request frame encoded already (its size checked); the
    /// reply as it was read.
    pub(crate) async fn request_encoded(
        self: &Arc<Self>,
        addr: SocketAddr,
        head: bytes::Bytes,
        payload: bytes::Bytes,
        timeout: Option<Duration>,
    ) -> Result<codec::WireFrame, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let deadline = timeout.unwrap_or(self.config.request_timeout);
        tokio::select! {
            outcome = tokio::time::timeout(deadline, self.exchange_encoded(addr, head, payload)) => {
                outcome.unwrap_or_else(|_| Err(request_timeout(deadline)))
            }
            _ = self.closed() => Err(Error::Closed),
        }
    }

    /// [`Endpoint::request_encoded`] without its deadline and its watch for the close: for
    /// a caller that keeps one of each for many requests.
    pub(crate) async fn exchange_encoded(
        self: &Arc<Self>,
        addr: SocketAddr,
        head: bytes::Bytes,
        payload: bytes::Bytes,
    ) -> Result<codec::WireFrame, Error> {
        let exchange = async {
            let conn = self.connection(addr).await?;
            conn.request(head, payload, self.config.max_message_bytes)
                .await
        };
        exchange.await.map_err(|e| self.closed_or(e))
    }

    /// Queues one-way messages for `addr`; the future resolves when QUIC took them all.
    pub(crate) fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        messages: Vec<Message>,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        let queued = if self.is_closed() {
            Err(Error::Closed)
        } else {
            outbox::encode_all(messages, self.config.max_message_bytes).map(|frames| {
                let (frames, waits) = outbox::with_oneshots(frames);
                self.outbox.enqueue(self, addr, frames);
                waits
            })
        };
        async move { outbox::settle(queued?).await }
    }

    pub(crate) async fn receive(
        &self,
        from: Option<SocketAddr>,
        channel: Option<&str>,
    ) -> Result<(Message, Peer), Error> {
        self.inbox.receive(from, channel).await
    }

    /// The handler that takes requests as frames, in [`Endpoint::answer`]'s place, if
    /// there is one.
    pub(crate) fn frame_handler(&self) -> Option<&dyn FrameHandler> {
        self.frames.as_deref()
    }

    /// Hands a request to the handler, which answers through `responder`.
    pub(crate) fn answer(
        &self,
        request: Message,
        peer: Peer,
        responder: Responder,
    ) -> crate::handler::BoxFuture<()> {
        self.handler.answer(request, peer, responder)
    }

    /// Hands a one-way message to the handler, or queues it for `receive`.
    pub(crate) async fn deliver(&self, message: Message, peer: Peer) -> Result<(), Error> {
        if self.handler.wants_messages() {
            self.handler.message(message, peer).await;
            Ok(())
        } else {
            self.inbox.push(message, peer).await
        }
    }

    pub(crate) fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    pub(crate) fn connection_stats(&self) -> Vec<ConnectionStats> {
        self.pool.connections().iter().map(|c| c.stats()).collect()
    }

    /// Closes the connections with `addr`; whether there was one. First the writers of
    /// `addr`'s channels write what is queued and finish their streams, on the pooled
    /// connection; then the connections leave the pool (the next use dials again), each
    /// peer confirms it has read every channel stream ([`Conn::disconnect`]), and they
    /// close. All bounded by [`CLOSE_GRACE`] in all, and done on a task of the
    /// endpoint's, so that a caller that stops waiting does not leave it half done.
    pub(crate) async fn disconnect(self: &Arc<Self>, addr: SocketAddr) -> Result<bool, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let endpoint = self.clone();
        let done = self.tasks.spawn(async move {
            let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
            let writers = endpoint.outbox.detach(addr);
            let _ = tokio::time::timeout_at(deadline, futures_join(writers.into_iter())).await;
            let connections = endpoint.pool.take(addr);
            let grace = deadline.saturating_duration_since(tokio::time::Instant::now());
            futures_join(connections.iter().map(|conn| conn.disconnect(grace))).await;
            !connections.is_empty()
        });
        done.await.map_err(|_| Error::Closed)
    }

    /// Fails everything pending with `Closed`, closes every connection and frees the
    /// socket. Waits at most [`CLOSE_GRACE`] for peers to acknowledge. Idempotent.
    pub(crate) async fn close(&self) {
        self.shutdown.send_replace(true);
        self.inbox.close();
        self.outbox.clear();
        // One-way messages sent before close() are delivered first: the writers finish
        // their streams, then each peer confirms it has read them (all bounded).
        self.writers.close();
        let goodbyes = async {
            self.writers.wait().await;
            let connections = self.pool.connections();
            let said = connections.iter().map(|conn| conn.say_goodbye());
            futures_join(said).await;
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, goodbyes).await;
        let socket = self.quic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(socket) = socket {
            // For a dial-only transport: what each connection had sent before the close.
            let open: Vec<_> = match self.ephemeral_port {
                true => self.pool.connections(),
                false => Vec::new(),
            }
            .into_iter()
            .map(|conn| {
                let before = conn.datagrams_sent();
                (conn, before)
            })
            .collect();
            socket.close(app_code::CLOSED.into(), b"transport closed");
            self.tasks.close();
            if self.ephemeral_port {
                // Nobody waits for this port to be free again, so close() returns once
                // every peer has been sent the close, and the rest of draining (three
                // probe timeouts, about 20 ms on loopback, in which a peer that missed
                // the close is told again) goes on in the background, still bounded.
                let sent = async {
                    for attempt in 0u32.. {
                        if open.iter().all(|(conn, before)| conn.close_sent(*before)) {
                            return;
                        }
                        if attempt < 16 {
                            tokio::task::yield_now().await;
                        } else {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, sent).await;
                drop(open);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CLOSE_GRACE, socket.wait_idle()).await;
                });
                self.pool.clear();
                let _ = tokio::time::timeout(CLOSE_GRACE, self.tasks.wait()).await;
                return;
            }
            let drained = async {
                socket.wait_idle().await;
                self.pool.clear();
                drop(socket);
                self.tasks.wait().await;
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, drained).await;
            self.pool.clear();
            // quinn's own driver tasks notice the last handle is gone and drop the socket
            // the next time they run; give them that turn before returning.
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Runs futures concurrently to completion (a small stand-in for `join_all`).
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Streams a peer may open at first: [`INITIAL_STREAMS`], or the configured maximum if
/// that is lower.
pub(crate) fn initial_stream_allowance(max: u32) -> u32 {
    INITIAL_STREAMS.min(max)
}

#[cfg(test)]
impl Endpoint {
    /// Marks the endpoint as closing, as `close` does first, without the rest of it.
    pub(crate) fn begin_closing(&self) {
        self.shutdown.send_replace(true);
    }
}

/// The error of a request not answered within `deadline`.
pub(crate) fn request_timeout(deadline: Duration) -> Error {
    Error::Timeout {
        what: "request",
        ms: deadline.as_millis() as u64,
    }
}

/// The initial per-connection stream allowance (each direction). Chosen so that an idle
/// connection costs little memory (quinn preallocates per allowed stream) while a burst
/// reaches the configured maximum after a few fourfold steps.
pub const INITIAL_STREAMS: u32 = 8;

/// The longest the peer may wait before acknowledging a packet, asked for with QUIC's
/// acknowledgement frequency extension (quinn's default is 25 ms; a peer without the
/// extension ignores the request). The delay is part of every probe timeout, so it sets
/// how fast a lost packet at the end of a burst is noticed, and how long closing drains.
/// In `npm run bench`, going from 25 to 5 ms cut the 1% loss rtt p99 by about three
/// quarters (README, Performance).
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(5);

fn quic_transport(config: &TransportConfig) -> Result<quinn::TransportConfig, Error> {
    let mut transport = quinn::TransportConfig::default();
    // quinn keeps state for every stream the peer may open, so a connection starts with a
    // small allowance that grows towards `max_concurrent_streams` as it is used
    // (`Conn::stream_accepted`); idle connections stay small.
    let streams = quinn::VarInt::from_u32(initial_stream_allowance(config.max_concurrent_streams));
    transport.max_concurrent_bidi_streams(streams);
    transport.max_concurrent_uni_streams(streams);
    let idle = quinn::IdleTimeout::try_from(config.max_idle_timeout)
        .map_err(|_| Error::invalid("maxIdleTimeoutMs", "too large for QUIC"))?;
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(config.keep_alive);
    transport.initial_rtt(config.initial_rtt);
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.max_ack_delay(Some(MAX_ACK_DELAY));
    transport.ack_frequency_config(Some(acks));
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::trusting;
    use crate::{Message, NoHandler, QuicClient, QuicServer};

    #[tokio::test]
    async fn peers_are_asked_to_acknowledge_within_max_ack_delay() {
        let server = QuicServer::bind(TransportConfig::default(), NoHandler).unwrap();
        let client = QuicClient::new(trusting(&server.fingerprint())).unwrap();
        // Any exchange will do (this one is refused: the server has no handler).
        let _ = client
            .request(server.local_addr(), Message::binary("task", vec![]))
            .await;
        let connections = client.endpoint.pool.connections();
        let sent = connections[0].quic.stats().frame_tx.ack_frequency;
        assert!(sent >= 1, "no ACK_FREQUENCY frame was sent");
        client.close().await;
        server.close().await;
    }
}
