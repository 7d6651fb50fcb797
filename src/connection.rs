//! One live QUIC connection to a peer ([`Conn`]), what it serves, and how quinn's errors
//! become this crate's.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use quinn::{ConnectionError, WriteError};
use tokio::sync::Semaphore;

use crate::codec::{self, FrameKind};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::handler::Peer;
use crate::message::Message;
use crate::reply::{spawn_polled, Responder};
use crate::stats::ConnectionStats;
use crate::tls::fingerprint;

/// Application error codes used to close streams and connections (see PROTOCOL.md).
pub mod app_code {
    /// Normal close.
    pub const CLOSED: u32 = 0;
    /// The peer broke the framing rules.
    pub const PROTOCOL: u32 = 1;
    /// A frame exceeded the receiver's `max_message_bytes`.
    pub const TOO_LARGE: u32 = 2;
    /// The sender gave up on the stream (timeout, abort).
    pub const CANCELLED: u32 = 3;
}

/// A peer that opens its whole stream allowance within this long is given four times
/// more ([`Conn::burst_window`]). A requester making one request after another on
/// loopback (about 110 µs apart in `npm run bench`'s `rtt`: 32 streams in 3.5 ms, 128 in
/// 14 ms) reaches an allowance of 512 with it, where quinn's updates of the allowance
/// come every 65th request rather than every 5th: `bash bench/cpu.sh quic rtt seconds=3`
/// counted 2.26 UDP datagrams per round trip in two runs against 2.66 and 2.69 with a
/// 1 ms window (connect and warm-up included), and each side took 5-10% less CPU time.
/// An allowance costs quinn a few bytes per stream until the streams are used.
pub(crate) const STEADY_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// A live connection and what this side keeps about it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) quic: quinn::Connection,
    /// The peer's address as seen from here.
    pub(crate) address: std::net::SocketAddr,
    /// The peer certificate's fingerprint, once known: from the start, or for a
    /// connection that began in 0-RTT once its handshake is done.
    fingerprint: std::sync::OnceLock<Arc<str>>,
    pub(crate) outbound: bool,
    /// How the connection's 0-RTT went ([`ZeroRtt`]); `None` for one whose handshake
    /// was done before it was used.
    early: Option<tokio::sync::watch::Receiver<ZeroRtt>>,
    /// An accepted connection took a request before its handshake ended; a dialled
    /// one opened a request's stream in 0-RTT (taken if the server accepted it).
    zero_rtt_used: std::sync::atomic::AtomicBool,
    /// Limits the requests this side has in flight on the connection.
    streams: Semaphore,
    in_flight: AtomicUsize,
    streams_opened: AtomicU64,
    /// Channel streams this side opened, and the peer's channel streams accepted and
    /// still being read: what a goodbye waits for.
    channels_opened: AtomicU64,
    channels_accepted: AtomicU64,
    channels_reading: AtomicUsize,
    channels_changed: tokio::sync::Notify,
    /// Closed by [`Conn::disconnect`]: what fails on it then says so.
    disconnected: std::sync::atomic::AtomicBool,
    /// Requests the peer has in flight here, and the stream allowances it was given
    /// (grown towards `max_streams` as they are used).
    requests_open: AtomicUsize,
    request_allowance: Mutex<Allowance>,
    channel_allowance: Mutex<Allowance>,
    max_streams: u32,
    /// One lock per incoming channel name, held by the stream delivering it.
    channel_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Requests waiting for the connection's writer task ([`write_requests`]), started
    /// when the first request is queued, on the runtime the connection was made on.
    writes: Arc<Writes>,
    runtime: Option<tokio::runtime::Handle>,
    me: std::sync::Weak<Conn>,
}

/// The streams of one kind a peer may have open, and its use of them since the
/// allowance was last raised or last used up.
#[derive(Debug)]
struct Allowance {
    granted: u64,
    /// Streams opened since then, and when the first of them was.
    opened: u64,
    since: std::time::Instant,
}

impl Allowance {
    fn new(max_streams: u32) -> Self {
        Allowance {
            granted: crate::endpoint::initial_stream_allowance(max_streams) as u64,
            opened: 0,
            since: std::time::Instant::now(),
        }
    }
}

/// Marks one operation in flight on a connection while alive.
pub(crate) struct InFlight<'a>(&'a Conn);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a connection that began in 0-RTT is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ZeroRtt {
    /// The handshake is under way; requests sent now travel in 0-RTT.
    Pending,
    /// Done, and the server took the 0-RTT data (for an accepted connection: done).
    Accepted,
    /// Done, and the server refused the 0-RTT data, so it never saw it; or the
    /// connection was lost before the handshake ended.
    Rejected,
    /// Not done within this long: the connection was closed, and its requests fail
    /// with [`Error::Connect`], as a dial would.
    GaveUp(std::time::Duration),
}

impl Conn {
    /// A connection whose handshake is done.
    pub(crate) fn new(quic: quinn::Connection, outbound: bool, max_streams: u32) -> Arc<Self> {
        let conn = Self::build(quic, outbound, max_streams, None);
        conn.learn_fingerprint();
        conn
    }

    /// A connection in 0-RTT: usable now, its handshake ending when `accepted` does
    /// (with whether the server took the 0-RTT data; meaningless on the server's side).
    /// A handshake that has not ended within `deadline` closes the connection, and its
    /// requests fail with [`Error::Connect`].
    pub(crate) fn new_early(
        quic: quinn::Connection,
        outbound: bool,
        max_streams: u32,
        accepted: quinn::ZeroRttAccepted,
        deadline: std::time::Duration,
    ) -> Arc<Self> {
        let (tx, rx) = tokio::sync::watch::channel(ZeroRtt::Pending);
        let conn = Self::build(quic, outbound, max_streams, Some(rx));
        let me = Arc::downgrade(&conn);
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(deadline, accepted).await;
            let Some(conn) = me.upgrade() else { return };
            let state = match outcome {
                // quinn (0.11) reports false on an accepted connection even once its
                // handshake is done (only a client learns whether its early data was
                // taken): there the handshake ended if the connection is still open.
                Ok(taken) if taken || (!outbound && conn.quic.close_reason().is_none()) => {
                    ZeroRtt::Accepted
                }
                Ok(_) => ZeroRtt::Rejected,
                Err(_) => ZeroRtt::GaveUp(deadline),
            };
            conn.learn_fingerprint();
            // Said before closing, so that the requests failing then are explained.
            let _ = tx.send(state);
            if let ZeroRtt::GaveUp(_) = state {
                conn.quic.close(app_code::CLOSED.into(), b"no handshake");
            }
        });
        conn
    }

    /// Records the peer certificate's fingerprint, if the handshake has shown one.
    fn learn_fingerprint(&self) {
        let leaf = self
            .quic
            .peer_identity()
            .and_then(|id| {
                id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| chain.first().map(|leaf| Arc::from(fingerprint(leaf))));
        if let Some(leaf) = leaf {
            let _ = self.fingerprint.set(leaf);
        }
    }

    /// The peer, as handlers see it.
    pub(crate) fn peer(&self) -> Peer {
        Peer {
            address: self.address,
            fingerprint: self.fingerprint.get().cloned(),
        }
    }

    /// Waits for the end of a 0-RTT connection's handshake: false if the server refused
    /// the 0-RTT data (or the connection was lost first). True at once for a connection
    /// that did not begin in 0-RTT.
    pub(crate) async fn zero_rtt_taken(&self) -> bool {
        let Some(early) = &self.early else {
            return true;
        };
        let mut early = early.clone();
        let outcome = early.wait_for(|state| *state != ZeroRtt::Pending).await;
        matches!(outcome.as_deref(), Ok(ZeroRtt::Accepted))
    }

    fn build(
        quic: quinn::Connection,
        outbound: bool,
        max_streams: u32,
        early: Option<tokio::sync::watch::Receiver<ZeroRtt>>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Conn {
            me: me.clone(),
            address: crate::config::canonical(quic.remote_address()),
            fingerprint: std::sync::OnceLock::new(),
            early,
            zero_rtt_used: std::sync::atomic::AtomicBool::new(false),
            disconnected: std::sync::atomic::AtomicBool::new(false),
            quic,
            outbound,
            streams: Semaphore::new(max_streams as usize),
            in_flight: AtomicUsize::new(0),
            streams_opened: AtomicU64::new(0),
            channels_opened: AtomicU64::new(0),
            channels_accepted: AtomicU64::new(0),
            channels_reading: AtomicUsize::new(0),
            channels_changed: tokio::sync::Notify::new(),
            requests_open: AtomicUsize::new(0),
            request_allowance: Mutex::new(Allowance::new(max_streams)),
            channel_allowance: Mutex::new(Allowance::new(max_streams)),
            max_streams,
            channel_turns: Mutex::default(),
            writes: Arc::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        self.quic.close_reason().is_none()
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Sends `request` on a new bidirectional stream and reads the reply from it.
    ///
    /// Waits for a free stream when `max_concurrent_streams` requests are in flight.
    /// Cancel-safe in effect: dropping the future resets the stream.
    pub(crate) async fn request(
        &self,
        head: bytes::Bytes,
        payload: bytes::Bytes,
        limit: u64,
    ) -> Result<codec::WireFrame, Error> {
        let mut early = false;
        // Kept for a second try only where there can be one.
        let again = self
            .early
            .is_some()
            .then(|| (head.clone(), payload.clone()));
        let outcome = match (self.exchange(head, payload, limit, &mut early).await, again) {
            // Sent in 0-RTT, which the server refused: it never saw the request, which
            // goes again now that the handshake is done.
            (Err(_), Some((head, payload))) if early && !self.zero_rtt_taken().await => {
                self.exchange(head, payload, limit, &mut early).await
            }
            (outcome, _) => outcome,
        };
        outcome.map_err(|e| self.explain(e))
    }

    /// A lost stream says little; the connection's close reason says why (a client
    /// certificate the server rejected after the handshake, an idle timeout, …), or for
    /// a connection that began in 0-RTT, a handshake that did not end in time.
    pub(crate) fn explain(&self, error: Error) -> Error {
        if let Error::ConnectionLost(_) | Error::Closed = error {
            if self.was_disconnected() {
                return Error::ConnectionLost(format!(
                    "the connection with {} was closed by disconnect()",
                    self.address
                ));
            }
        }
        let gave_up = self.early.as_ref().map(|early| *early.borrow());
        if let (Error::ConnectionLost(_) | Error::Closed, Some(ZeroRtt::GaveUp(after))) =
            (&error, gave_up)
        {
            return Error::Connect {
                addr: self.address.to_string(),
                reason: format!("no handshake within {} ms", after.as_millis()),
            };
        }
        match (error, self.quic.close_reason()) {
            (Error::ConnectionLost(_), Some(reason)) => connection_error(reason),
            (error, _) => error,
        }
    }

    /// One try of [`Conn::request`]; `early` is set when the stream was opened in 0-RTT.
    async fn exchange(
        &self,
        head: bytes::Bytes,
        payload: bytes::Bytes,
        limit: u64,
        early: &mut bool,
    ) -> Result<codec::WireFrame, Error> {
        let _in_flight = self.in_flight();
        let _permit = self.streams.acquire().await.map_err(|_| Error::Closed)?;
        // A request alone on the connection, or one of a batch its caller starts in one
        // turn ([`in_one_turn`]), is written here and now; with others in flight, by the
        // writer, all together (see `write_requests`).
        let alone = self.in_flight.load(Ordering::Relaxed) <= 1;
        let (mut stream, mut rest) = if alone || IN_ONE_TURN.get() {
            self.open_and_write([head, payload]).await?
        } else {
            let (opened, opening) = tokio::sync::oneshot::channel();
            let first = self.writes.queue(QueuedRequest {
                chunks: [head, payload],
                opened,
            });
            if first {
                let writer = write_requests(self.me.clone(), self.writes.clone());
                match &self.runtime {
                    Some(runtime) => drop(runtime.spawn(writer)),
                    None => drop(tokio::spawn(writer)),
                }
            }
            opening.await.map_err(|_| {
                Error::ConnectionLost(
                    "the runtime that writes this connection's requests has shut down".into(),
                )
            })??
        };
        *early = stream.recv.is_0rtt();
        if *early {
            self.zero_rtt_used.store(true, Ordering::Relaxed);
        }
        if rest.iter().any(|chunk| !chunk.is_empty()) {
            match stream.send.write_all_chunks(&mut rest).await {
                Ok(()) => {
                    let _ = stream.send.finish();
                }
                // The peer stopped reading, most likely to refuse the request (too large);
                // its reason is in the reply.
                Err(WriteError::Stopped(_)) => {}
                Err(e) => return Err(write_error(e)),
            }
        }
        let read = async {
            let reply = codec::read_wire_frame(&mut stream.recv, limit).await?;
            // Reading the end of the stream spares quinn a STOP_SENDING for unread data.
            codec::expect_end(&mut stream.recv).await?;
            Ok(reply)
        };
        let reply = match read.await {
            Ok(reply) => reply,
            Err(e) => {
                match e {
                    Error::MessageTooLarge { .. } => stream.abandon(app_code::TOO_LARGE),
                    Error::Protocol(_) => stream.abandon(app_code::PROTOCOL),
                    _ => {}
                }
                return Err(e);
            }
        };
        stream.settled = true;
        match reply {
            Some(frame) if frame.kind == FrameKind::Response => Ok(frame),
            Some(frame) if frame.kind == FrameKind::Error => {
                let message = frame.into_message()?;
                Err(Error::from_remote(
                    &message.kind,
                    String::from_utf8_lossy(&message.payload).into_owned(),
                ))
            }
            Some(frame) => Err(Error::Protocol(format!(
                "expected a reply, got a {:?} frame",
                frame.kind
            ))),
            None => Err(Error::Protocol(
                "the peer closed the stream without a reply".into(),
            )),
        }
    }

    /// Opens a request's stream and writes as much of it as flow control takes now,
    /// finishing the stream if that is all of it; returns what is left to write.
    async fn open_and_write(
        &self,
        mut chunks: [bytes::Bytes; 2],
    ) -> Result<(RequestStream, [bytes::Bytes; 2]), Error> {
        let (send, recv) = self.quic.open_bi().await.map_err(connection_error)?;
        self.streams_opened.fetch_add(1, Ordering::Relaxed);
        let mut stream = RequestStream {
            send,
            recv,
            settled: false,
        };
        // Polled once: what is written leaves the chunks (quinn takes it from them); the
        // requester's own write of the rest registers its waker.
        let written = {
            let write = std::pin::pin!(stream.send.write_all_chunks(&mut chunks));
            write.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        };
        if let std::task::Poll::Ready(Ok(())) = written {
            let _ = stream.send.finish();
        }
        Ok((stream, chunks))
    }

    fn channel_turn(&self, channel: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.channel_turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(channel.to_owned()).or_default().clone()
    }

    /// Forgets a channel's lock once no stream holds or waits for it.
    fn release_channel_turn(&self, channel: &str) {
        let mut turns = self.channel_turns.lock().unwrap_or_else(|e| e.into_inner());
        if turns
            .get(channel)
            .is_some_and(|turn| Arc::strong_count(turn) == 1)
        {
            turns.remove(channel);
        }
    }

    /// Opens a unidirectional stream for a channel.
    pub(crate) async fn open_channel(&self) -> Result<quinn::SendStream, Error> {
        // Not in 0-RTT: one-way messages the server refused would be lost, as nothing
        // answers them.
        self.zero_rtt_taken().await;
        let stream = self
            .quic
            .open_uni()
            .await
            .map_err(|e| self.explain(connection_error(e)))?;
        self.streams_opened.fetch_add(1, Ordering::Relaxed);
        self.channels_opened.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// Counts a stream the peer opened, `open` of its kind being served now, and raises
    /// the peer's allowance of that kind (×4, up to `max_streams`) when it runs short:
    /// when `open` reaches three quarters of it (slow handlers), or when the peer opened
    /// as many streams as the allowance within one [`Conn::burst_window`]. The second
    /// rule is the one that matters for fast handlers: quinn frees a stream's slot only
    /// once the reply is acknowledged, about a round trip after it was answered, so a
    /// peer can be held at its allowance while few of its requests are open here
    /// (`examples/bench_peer.rs`, 64 requests in flight: 37,000 requests/s held at 8
    /// streams, 137,000 with this rule).
    fn stream_accepted(&self, open: usize, allowance: &Mutex<Allowance>, bidi: bool) {
        let grown = {
            let mut state = allowance.lock().unwrap_or_else(|e| e.into_inner());
            let granted = state.granted;
            if granted >= self.max_streams as u64 {
                return;
            }
            state.opened += 1;
            if state.opened == 1 {
                state.since = std::time::Instant::now();
            }
            let busy = (open as u64) * 4 >= granted * 3;
            let cycled = state.opened >= granted;
            let burst = cycled && state.since.elapsed() <= self.burst_window();
            if cycled {
                state.opened = 0;
            }
            if !(busy || burst) {
                return;
            }
            state.granted = (granted * 4).min(self.max_streams as u64);
            state.opened = 0;
            state.granted
        };
        let count = quinn::VarInt::from_u64(grown).unwrap_or(quinn::VarInt::MAX);
        if bidi {
            self.quic.set_max_concurrent_bi_streams(count);
        } else {
            self.quic.set_max_concurrent_uni_streams(count);
        }
    }

    /// Within how long a peer that opens its whole allowance is given more: two round
    /// trips, and at least [`STEADY_WINDOW`].
    ///
    /// Two round trips for a peer held at its allowance: a stream's slot comes back only
    /// a round trip after the stream was opened (the reply's way there and its
    /// acknowledgement's way back), so such a peer opens a whole allowance at once as
    /// slots come back together.
    ///
    /// [`STEADY_WINDOW`] for a peer making one request after another, which is never
    /// held: quinn tells a peer it may open more streams each time more than an eighth of
    /// its allowance has been used, and the update leaves in a datagram of its own when
    /// no reply is on its way out at that moment, which the peer acknowledges in another.
    /// At the allowance of 32 that a 1 ms window let such a peer reach, that was a pair
    /// of extra datagrams every fifth request, each waking the other side.
    fn burst_window(&self) -> std::time::Duration {
        (self.quic.rtt() * 2).max(STEADY_WINDOW)
    }

    /// Before closing: tells the peer how many channel streams this side opened and
    /// waits until it has read them all, so that closing loses no one-way message the
    /// peer's QUIC stack had acknowledged but its application had not read yet.
    pub(crate) async fn say_goodbye(&self) -> Result<(), Error> {
        let opened = self.channels_opened.load(Ordering::Relaxed);
        if opened == 0 {
            return Ok(());
        }
        let goodbye = Message::binary("goodbye", opened.to_be_bytes().to_vec());
        let (head, payload) = codec::encode(FrameKind::Goodbye, &goodbye, u64::MAX)?;
        self.request(head, payload, 1024).await.map(|_| ())
    }

    /// Whether [`Conn::disconnect`] closed it (rather than the peer, or a timeout).
    pub(crate) fn was_disconnected(&self) -> bool {
        self.disconnected.load(Ordering::Acquire)
    }

    /// Closes the connection once the peer has read the one-way messages sent on it
    /// ([`Conn::say_goodbye`], waiting at most `grace`); requests still in flight on it
    /// fail with [`Error::ConnectionLost`].
    pub(crate) async fn disconnect(&self, grace: std::time::Duration) {
        let _ = tokio::time::timeout(grace, self.say_goodbye()).await;
        self.disconnected.store(true, Ordering::Release);
        self.quic.close(app_code::CLOSED.into(), b"disconnected");
    }

    /// Completes once `count` peer channel streams were accepted and all are read.
    async fn channels_drained(&self, count: u64) {
        loop {
            let changed = self.channels_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.channels_accepted.load(Ordering::Acquire) >= count
                && self.channels_reading.load(Ordering::Acquire) == 0
            {
                return;
            }
            changed.await;
        }
    }

    /// Datagrams sent so far (see [`Conn::close_sent`]).
    pub(crate) fn datagrams_sent(&self) -> u64 {
        self.quic.stats().udp_tx.datagrams
    }

    /// After this side closed the connection, whether the peer has been sent the close:
    /// a datagram went out after `before` ([`Conn::datagrams_sent`] just before closing;
    /// once closed, quinn's next datagram carries the close).
    pub(crate) fn close_sent(&self, before: u64) -> bool {
        match self.quic.close_reason() {
            Some(quinn::ConnectionError::LocallyClosed) => self.datagrams_sent() > before,
            // Not closed yet: quinn hands an endpoint's close to each connection.
            None => false,
            // Closed another way (by the peer, a timeout, a reset): nothing to send.
            Some(_) => true,
        }
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        let stats = self.quic.stats();
        ConnectionStats {
            remote_address: self.address,
            outbound: self.outbound,
            rtt_ms: stats.path.rtt.as_secs_f64() * 1000.0,
            congestion_window: stats.path.cwnd,
            bytes_sent: stats.udp_tx.bytes,
            bytes_received: stats.udp_rx.bytes,
            lost_packets: stats.path.lost_packets,
            streams_opened: self.streams_opened.load(Ordering::Relaxed),
            mtu: stats.path.current_mtu,
            zero_rtt: self.zero_rtt_used.load(Ordering::Relaxed)
                && self
                    .early
                    .as_ref()
                    .is_some_and(|early| *early.borrow() == ZeroRtt::Accepted),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The writer task ends once it sees the connection gone.
        self.writes.ready.notify_one();
    }
}

/// Requests waiting to be opened and written by the connection's writer task.
#[derive(Debug, Default)]
struct Writes {
    queue: Mutex<Vec<QueuedRequest>>,
    ready: tokio::sync::Notify,
    /// The writer task was started (idle connections, and those that never have two
    /// requests in flight, have none).
    started: std::sync::atomic::AtomicBool,
    /// The writer's turns that wrote something, and the requests they wrote.
    turns: AtomicU64,
    written: AtomicU64,
}

impl Writes {
    /// Queues `request` for the writer; true the first time, when the writer must be
    /// started.
    fn queue(&self, request: QueuedRequest) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request);
        self.ready.notify_one();
        !self.started.swap(true, Ordering::AcqRel)
    }
}

/// A request for the writer: its frame, and where its opened stream goes.
#[derive(Debug)]
struct QueuedRequest {
    chunks: [bytes::Bytes; 2],
    opened: tokio::sync::oneshot::Sender<Result<(RequestStream, [bytes::Bytes; 2]), Error>>,
}

thread_local! {
    static IN_ONE_TURN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `start`, which starts many requests in one turn of one task (polling each
/// once, as the Node binding does with a batch from JS): their writes are made right
/// away, rather than handed to the connection's writer, since they already leave
/// together.
#[cfg(feature = "node")]
pub(crate) fn in_one_turn<T>(start: impl FnOnce() -> T) -> T {
    /// Puts the flag back however `start` ends.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_ONE_TURN.set(self.0);
        }
    }
    let _restore = Restore(IN_ONE_TURN.replace(true));
    start()
}

/// Opens and writes requests for `conn`, each batch of them in one turn, until the
/// `Conn` is dropped.
///
/// Writing to a stream wakes quinn's connection driver, and on tokio's multi-thread
/// runtime the woken driver runs right after the task that woke it: requests written by
/// many tasks, each in its own turn, left in a datagram each (2.0-2.1 UDP datagrams per
/// request at 64 in flight, `bash bench/core-runtime.sh`). The writer first lets every
/// task that is ready run (and queue its request), then writes all that are queued, so
/// that quinn sends them together.
///
/// The writer's [`Stopped`] guard is made before its future is, so that however the
/// future ends, even dropped before it first ran (spawned on a runtime that has shut
/// down), what is still queued fails at once rather than at its timeout.
fn write_requests(
    conn: std::sync::Weak<Conn>,
    writes: Arc<Writes>,
) -> impl Future<Output = ()> + Send + 'static {
    let stopped = Stopped(writes.clone());
    async move {
        let _stopped = stopped;
        write_queued(conn, writes).await
    }
}

/// Ends a connection's writer: what is still queued fails (its requesters' channels are
/// dropped), and the next request queued starts a new writer.
struct Stopped(Arc<Writes>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let mut queue = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.0.started.store(false, Ordering::Release);
        drop(std::mem::take(&mut *queue));
    }
}

/// The writer's loop (see [`write_requests`]).
async fn write_queued(conn: std::sync::Weak<Conn>, writes: Arc<Writes>) {
    loop {
        writes.ready.notified().await;
        tokio::task::yield_now().await;
        let batch = std::mem::take(&mut *writes.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(conn) = conn.upgrade() else { return };
        if !batch.is_empty() {
            writes.turns.fetch_add(1, Ordering::Relaxed);
            writes
                .written
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        for QueuedRequest { chunks, mut opened } in batch {
            // A requester that gave up gets no stream, and does not hold up the others
            // while the peer's stream allowance is used up.
            let written = tokio::select! {
                biased;
                () = opened.closed() => continue,
                written = conn.open_and_write(chunks) => written,
            };
            // A requester that gave up just now drops the stream, which resets it.
            let _ = opened.send(written);
        }
    }
}

/// A request's streams. Dropped before the reply was read (timeout, abort, close), it
/// resets the request and stops the reply with [`app_code::CANCELLED`], so the peer
/// stops working on it.
#[derive(Debug)]
struct RequestStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    settled: bool,
}

impl RequestStream {
    fn abandon(&mut self, code: u32) {
        let _ = self.send.reset(code.into());
        let _ = self.recv.stop(code.into());
        self.settled = true;
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.settled {
            self.abandon(app_code::CANCELLED);
        }
    }
}

/// Serves what a peer opens on `conn` until the connection ends: requests on
/// bidirectional streams, channels on unidirectional ones.
pub(crate) async fn serve(endpoint: Arc<Endpoint>, conn: Arc<Conn>) {
    let requests = {
        let endpoint = endpoint.clone();
        let conn = conn.clone();
        async move {
            while let Ok((send, recv)) = conn.quic.accept_bi().await {
                if recv.is_0rtt() {
                    conn.zero_rtt_used.store(true, Ordering::Relaxed);
                }
                let open = conn.requests_open.fetch_add(1, Ordering::Relaxed) + 1;
                conn.stream_accepted(open, &conn.request_allowance, true);
                let open = OpenRequest(conn.clone());
                // A request that has arrived whole is read and handed to the handler
                // right here; only one still arriving, or a handler still working, gets
                // a task of its own.
                spawn_polled(
                    &endpoint.tasks,
                    serve_request(endpoint.clone(), conn.clone(), send, recv, open),
                );
            }
        }
    };
    let channels = async {
        while let Ok(recv) = conn.quic.accept_uni().await {
            let reading = conn.channels_reading.fetch_add(1, Ordering::AcqRel) + 1;
            conn.stream_accepted(reading, &conn.channel_allowance, false);
            conn.channels_accepted.fetch_add(1, Ordering::AcqRel);
            conn.channels_changed.notify_waiters();
            endpoint
                .tasks
                .spawn(serve_channel(endpoint.clone(), conn.clone(), recv));
        }
    };
    tokio::join!(requests, channels);
}

/// Counts a request of the peer's as open (towards its stream allowance) while alive:
/// until it is answered (the reply handed to QUIC) or abandoned.
#[derive(Debug)]
pub(crate) struct OpenRequest(Arc<Conn>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.requests_open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_request(
    endpoint: Arc<Endpoint>,
    conn: Arc<Conn>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    open: OpenRequest,
) {
    let limit = endpoint.config.max_message_bytes;
    // A requester that never finishes its stream gets no more than the request timeout.
    let read = async {
        let frame = codec::read_wire_frame(&mut recv, limit).await?;
        if frame
            .as_ref()
            .is_some_and(|f| matches!(f.kind, FrameKind::Request | FrameKind::Goodbye))
        {
            codec::expect_end(&mut recv).await?;
        }
        Ok(frame)
    };
    let Ok(read) = tokio::time::timeout(endpoint.config.request_timeout, read).await else {
        let _ = recv.stop(app_code::CANCELLED.into());
        return;
    };
    let request = match read {
        Ok(Some(frame)) if frame.kind == FrameKind::Request => Ok(frame),
        Ok(Some(goodbye)) if goodbye.kind == FrameKind::Goodbye => {
            let count = <[u8; 8]>::try_from(&goodbye.payload[..]).map(u64::from_be_bytes);
            let reply = match count {
                Ok(count) => {
                    let wait = conn.channels_drained(count);
                    tokio::select! {
                        _ = tokio::time::timeout(endpoint.config.request_timeout, wait) => {}
                        // The closer gave up waiting.
                        _ = send.stopped() => return,
                    }
                    codec::encode(FrameKind::Response, &Message::default(), u64::MAX)
                }
                Err(_) => Err(Error::Protocol("a goodbye carries an 8-byte count".into())),
            };
            let frame = reply.or_else(|error| {
                let message =
                    Message::binary(error.code().as_str(), error.wire_text().into_bytes());
                codec::encode(FrameKind::Error, &message, u64::MAX)
            });
            if let Ok((head, payload)) = frame {
                if send.write_all_chunks(&mut [head, payload]).await.is_ok() {
                    let _ = send.finish();
                }
            }
            return;
        }
        Ok(Some(frame)) => Err((
            frame.id().to_owned(),
            Error::Protocol(format!(
                "expected a request on a bidirectional stream, got {:?}",
                frame.kind
            )),
        )),
        Ok(None) => return,
        Err(e @ (Error::MessageTooLarge { .. } | Error::Protocol(_))) => Err((String::new(), e)),
        Err(_) => return,
    };
    let (id, request) = match request {
        Ok(request) => (request.id().to_owned(), Ok(request)),
        Err((id, error)) => {
            let code = match error {
                Error::MessageTooLarge { .. } => app_code::TOO_LARGE,
                _ => app_code::PROTOCOL,
            };
            let _ = recv.stop(code.into());
            (id, Err(error))
        }
    };
    // A handler that takes requests as frames (the Node binding's) has it at once, and
    // nothing waits for it: no `stopped` future is made (one costs two locks of the
    // connection's state, to make and to drop).
    if let Some(frames) = endpoint.frame_handler() {
        let responder = Responder::new(send, id, limit, endpoint.tasks.clone(), open);
        match request {
            Ok(request) => frames.answer_frame(request, conn.peer(), responder),
            Err(error) => {
                responder.answer(Err(error));
            }
        }
        return;
    }
    let stopped = send.stopped();
    let responder = Responder::new(send, id, limit, endpoint.tasks.clone(), open);
    let request = match request.and_then(codec::WireFrame::into_message) {
        Ok(request) => request,
        Err(error) => {
            responder.answer(Err(error));
            return;
        }
    };
    // A handler that answers at once completes here at the first poll, before the other
    // branches cost anything. One that never answers is answered by the responder's drop.
    let answered = endpoint.answer(request, conn.peer(), responder.clone());
    tokio::select! {
        biased;
        _ = answered => {}
        // The requester gave up (timeout, abort): stop waiting for the handler.
        _ = stopped => {}
        _ = tokio::time::sleep(endpoint.config.request_timeout) => {
            responder.answer(Err(Error::Remote(format!(
                "handler did not answer within {} ms",
                endpoint.config.request_timeout.as_millis()
            ))));
        }
    }
}

/// Reads one channel stream. Frames on a stream must all name one channel. While it
/// delivers, the stream holds that channel's turn, so a later stream of the same
/// channel (the sender opens one after retiring an idle stream) waits until this one
/// is done: order holds across streams too.
async fn serve_channel(endpoint: Arc<Endpoint>, conn: Arc<Conn>, mut recv: quinn::RecvStream) {
    let limit = endpoint.config.max_message_bytes;
    let mut turn: Option<(String, tokio::sync::OwnedMutexGuard<()>)> = None;
    let stop = loop {
        let message = match codec::read_frame(&mut recv, limit).await {
            Ok(Some((FrameKind::Message, message))) => message,
            Ok(Some(_)) | Err(Error::Protocol(_)) => break Some(app_code::PROTOCOL),
            Err(Error::MessageTooLarge { .. }) => break Some(app_code::TOO_LARGE),
            Ok(None) | Err(_) => break None,
        };
        match &turn {
            None => {
                let name = message.channel_name().to_owned();
                let guard = conn.channel_turn(&name).lock_owned().await;
                turn = Some((name, guard));
            }
            Some((name, _)) if name != message.channel_name() => break Some(app_code::PROTOCOL),
            Some(_) => {}
        }
        if endpoint.deliver(message, conn.peer()).await.is_err() {
            break None;
        }
    };
    if let Some(code) = stop {
        let _ = recv.stop(code.into());
    }
    if let Some((name, guard)) = turn {
        drop(guard);
        conn.release_channel_turn(&name);
    }
    conn.channels_reading.fetch_sub(1, Ordering::AcqRel);
    conn.channels_changed.notify_waiters();
}

/// Maps a quinn connection error to this crate's error.
pub(crate) fn connection_error(error: ConnectionError) -> Error {
    match error {
        ConnectionError::LocallyClosed => Error::Closed,
        ConnectionError::TransportError(ref e) if is_crypto(e.code) => Error::Tls(e.to_string()),
        ConnectionError::ConnectionClosed(ref c) if is_crypto(c.error_code) => {
            Error::Tls(format!("the peer rejected the handshake: {c}"))
        }
        ConnectionError::TimedOut => {
            Error::ConnectionLost("idle timeout: no answer from the peer".into())
        }
        ConnectionError::ApplicationClosed(c) => Error::ConnectionLost(format!(
            "closed by the peer ({})",
            String::from_utf8_lossy(&c.reason)
        )),
        other => Error::ConnectionLost(other.to_string()),
    }
}

fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

pub(crate) fn write_error(error: WriteError) -> Error {
    match error {
        WriteError::ConnectionLost(e) => connection_error(e),
        WriteError::Stopped(code) if code == app_code::TOO_LARGE.into() => {
            Error::RefusedByPeer("the peer refused a message on this stream as too large".into())
        }
        WriteError::Stopped(code) if code == app_code::PROTOCOL.into() => {
            Error::Protocol("the peer refused a malformed frame on this stream".into())
        }
        WriteError::Stopped(code) => {
            Error::ConnectionLost(format!("the peer stopped the stream ({code})"))
        }
        other => Error::ConnectionLost(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::trusting;
    use crate::{BoxFuture, Handler, Peer, INITIAL_STREAMS};
    use crate::{Message, QuicClient, QuicServer, TransportConfig};
    use std::sync::atomic::Ordering;

    /// Answers at once: requests are never open here for long.
    struct Echo;

    impl Handler for Echo {
        fn request(&self, request: Message, _peer: Peer) -> BoxFuture<Result<Message, String>> {
            Box::pin(async move { Ok(request) })
        }

        fn message(&self, _message: Message, _peer: Peer) -> BoxFuture<()> {
            Box::pin(async {})
        }
    }

    #[test]
    fn a_writer_that_never_runs_still_fails_what_is_queued() {
        use super::{write_requests, QueuedRequest, Writes};
        // Spawned on a runtime that has shut down, the writer is dropped unpolled.
        let gone = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = gone.handle().clone();
        drop(gone);
        let writes = std::sync::Arc::<Writes>::default();
        let (opened, mut opening) = tokio::sync::oneshot::channel();
        let chunks = [bytes::Bytes::new(), bytes::Bytes::new()];
        assert!(
            writes.queue(QueuedRequest { chunks, opened }),
            "the first starts a writer"
        );
        drop(handle.spawn(write_requests(std::sync::Weak::new(), writes.clone())));
        assert!(
            matches!(
                opening.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed)
            ),
            "the queued request still waits"
        );
        assert!(writes.queue.lock().unwrap().is_empty());
        // And the next request queued starts a new writer.
        let (opened, _opening) = tokio::sync::oneshot::channel();
        let chunks = [bytes::Bytes::new(), bytes::Bytes::new()];
        assert!(writes.queue(QueuedRequest { chunks, opened }));
    }

    /// How many requests the writer wrote per turn, for 64 tasks making 2,048 requests
    /// (the server runs on a runtime and a thread of its own).
    async fn requests_per_turn() -> f64 {
        let (ready, listening) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = QuicServer::bind(TransportConfig::default(), Echo).unwrap();
                ready
                    .send((server.local_addr(), server.fingerprint()))
                    .unwrap();
                let _ = stopped.await;
                server.close().await;
            })
        });
        let (addr, fingerprint) = listening.recv().unwrap();
        let client = QuicClient::new(trusting(&fingerprint)).unwrap();
        client.connect(addr).await.unwrap();
        let conn = client.endpoint.pool.connections()[0].clone();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    for _ in 0..32 {
                        let reply = client.request(addr, Message::binary("echo", vec![7; 1024]));
                        assert_eq!(reply.await.unwrap().payload.len(), 1024);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let turns = conn.writes.turns.load(Ordering::Relaxed);
        let written = conn.writes.written.load(Ordering::Relaxed);
        drop(conn);
        client.close().await;
        stop.send(()).unwrap();
        serving.join().unwrap();
        written as f64 / turns.max(1) as f64
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn requests_from_many_tasks_are_written_together_on_a_multi_thread_runtime() {
        // There, a task's stream write has quinn's driver run right after the task, so
        // that each request written by its own task left in a datagram of its own (in
        // `bash bench/core-runtime.sh`, 2.0 datagrams per request against 0.5 now).
        let per_turn = requests_per_turn().await;
        assert!(per_turn >= 4.0, "{per_turn} requests per turn");
    }

    #[tokio::test]
    async fn requests_from_many_tasks_are_written_together_on_a_current_thread_runtime() {
        let per_turn = requests_per_turn().await;
        assert!(per_turn >= 4.0, "{per_turn} requests per turn");
    }

    #[tokio::test]
    async fn a_peer_held_at_its_stream_allowance_by_a_fast_handler_is_given_more() {
        let server = QuicServer::bind(TransportConfig::default(), Echo).unwrap();
        let client = QuicClient::new(trusting(&server.fingerprint())).unwrap();
        let addr = server.local_addr();
        client.connect(addr).await.unwrap();
        // 64 requests in flight, a few rounds of them.
        for _ in 0..4 {
            let calls = (0..64u8).map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let reply = client
                        .request(addr, Message::binary("echo", vec![i; 32]))
                        .await;
                    assert_eq!(reply.unwrap().payload, vec![i; 32]);
                })
            });
            for call in calls.collect::<Vec<_>>() {
                call.await.unwrap();
            }
        }
        let inbound = server.client().endpoint.pool.connections();
        let granted = inbound[0].request_allowance.lock().unwrap().granted;
        assert!(
            granted >= 64,
            "the allowance grew from {INITIAL_STREAMS} to cover 64 requests in flight (it is {granted})"
        );
        client.close().await;
        server.close().await;
    }

    #[tokio::test]
    async fn a_peer_making_one_request_after_another_is_given_a_larger_allowance() {
        let server = QuicServer::bind(TransportConfig::default(), Echo).unwrap();
        let client = QuicClient::new(trusting(&server.fingerprint())).unwrap();
        let addr = server.local_addr();
        client.connect(addr).await.unwrap();
        // 0 until the server has taken the connection in.
        let granted = || match server.client().endpoint.pool.connections().first() {
            Some(conn) => conn.request_allowance.lock().unwrap().granted,
            None => 0,
        };
        // Requests at least 250 µs apart (the thread sleeps between them), as from a
        // requester a network round trip away: 8 of them never fit in a window of 1 ms
        // (what this window was, at most, on loopback), 32 fit in STEADY_WINDOW.
        let started = std::time::Instant::now();
        let mut made = 0;
        while granted() < 128
            && made < 2000
            && started.elapsed() < std::time::Duration::from_secs(20)
        {
            std::thread::sleep(std::time::Duration::from_micros(250));
            let reply = client
                .request(addr, Message::binary("echo", vec![1; 32]))
                .await;
            assert_eq!(reply.unwrap().payload, vec![1; 32]);
            made += 1;
        }
        assert!(
            granted() >= 128,
            "after {made} requests one at a time the allowance is {}",
            granted()
        );
        client.close().await;
        server.close().await;
    }
}
