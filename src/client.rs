//! [`QuicClient`]: requests and one-way messages to peers over pooled connections.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::TransportConfig;
use crate::endpoint::{self, Endpoint};
use crate::error::Error;
use crate::handler::{FrameHandler, Handler, NoHandler, Peer};
use crate::message::Message;
use crate::stats::{ConnectionStats, PoolStats};

/// A client: dials peers and talks to them over one pooled connection per (address,
/// server name).
///
/// `Clone` is cheap (an `Arc`); clones share the socket and the pool. Concurrent first
/// uses of an address share one handshake; a connection that closes (idle timeout,
/// loss, peer close) leaves the pool and the next use dials again.
///
/// Call [`QuicClient::close`] when done: background tasks hold the socket until then.
#[derive(Clone)]
pub struct QuicClient {
    pub(crate) endpoint: Arc<Endpoint>,
}

impl std::fmt::Debug for QuicClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicClient")
            .field("local_addr", &self.endpoint.local_addr())
            .finish()
    }
}

impl QuicClient {
    /// A dial-only client. Messages peers push to it wait for [`QuicClient::receive`];
    /// requests peers send to it are answered with an error.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidArg`] when the UDP socket cannot be bound or TLS setup fails.
    pub fn new(config: TransportConfig) -> Result<Self, Error> {
        Self::with_handler(config, NoHandler)
    }

    /// A dial-only client whose incoming pushes and requests go to `handler`.
    ///
    /// # Errors
    /// As [`QuicClient::new`].
    pub fn with_handler(config: TransportConfig, handler: impl Handler) -> Result<Self, Error> {
        let endpoint = Endpoint::bind(config, Arc::new(handler), None, false)?;
        Ok(QuicClient { endpoint })
    }

    /// [`QuicClient::with_handler`] whose handler takes requests as frames.
    #[cfg_attr(not(feature = "node"), allow(dead_code))] // used by the Node binding
    pub(crate) fn with_frame_handler(
        config: TransportConfig,
        handler: impl Handler + FrameHandler,
    ) -> Result<Self, Error> {
        let (handler, frames) = endpoint::frame_handlers(handler);
        let endpoint = Endpoint::bind(config, handler, frames, false)?;
        Ok(QuicClient { endpoint })
    }

    /// Opens (or reuses) the pooled connection to `addr`, so that the first request does
    /// not pay for the handshake.
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::Tls`] or [`Error::Closed`].
    pub async fn connect(&self, addr: SocketAddr) -> Result<(), Error> {
        self.endpoint
            .connection(addr)
            .await
            .map(|_| ())
            .map_err(|e| self.endpoint.closed_or(e))
    }

    /// Closes this client's connections with `addr`: the one it dialled and one `addr`
    /// opened to it (once its handshake is done; a connection still in its handshake is
    /// not affected). One-way messages queued for `addr` before the call are delivered
    /// first: written on that connection, and read by the peer before it closes (at most
    /// [`crate::CLOSE_GRACE`] in all, as at [`QuicClient::close`]). Requests still
    /// waiting for a reply on it fail with [`Error::ConnectionLost`]. Later calls to
    /// `addr` dial again and resume the TLS session (in 0-RTT with `zero_rtt`); a request
    /// started just before this call may too, if it had not reached the connection yet.
    /// Returns whether there was a connection to close.
    ///
    /// # Errors
    /// [`Error::Closed`] once the client is closed.
    ///
    /// Cancel-safe: the disconnect goes on if the future is dropped.
    pub async fn disconnect(&self, addr: SocketAddr) -> Result<bool, Error> {
        self.endpoint.disconnect(addr).await
    }

    /// Sends `request` to `addr` and returns the reply, within the configured
    /// `request_timeout`. The reply travels on the request's own stream.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] before anything is sent; [`Error::Connect`],
    /// [`Error::Tls`], [`Error::Timeout`], [`Error::ConnectionLost`], [`Error::Remote`]
    /// (the peer's handler failed), [`Error::Closed`].
    ///
    /// Cancel-safe: dropping the future resets the request's stream.
    pub async fn request(&self, addr: SocketAddr, request: Message) -> Result<Message, Error> {
        self.endpoint.request(addr, request, None).await
    }

    /// [`QuicClient::request`] with its own deadline.
    ///
    /// # Errors
    /// As [`QuicClient::request`].
    pub async fn request_with_timeout(
        &self,
        addr: SocketAddr,
        request: Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        self.endpoint.request(addr, request, Some(timeout)).await
    }

    /// Sends a one-way message. It is queued when this is called (not when the future is
    /// first polled), so messages of one channel arrive in call order; the future
    /// resolves when QUIC has taken the message, so awaiting it gives backpressure.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] (nothing queued), [`Error::Connect`], [`Error::Tls`],
    /// [`Error::ConnectionLost`], [`Error::Closed`].
    pub fn send(
        &self,
        addr: SocketAddr,
        message: Message,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.endpoint.send(addr, vec![message])
    }

    /// Sends several one-way messages in order, with one enqueue for all of them.
    ///
    /// # Errors
    /// As [`QuicClient::send`]; nothing is queued when one message is too large.
    pub fn send_batch(
        &self,
        addr: SocketAddr,
        messages: Vec<Message>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.endpoint.send(addr, messages)
    }

    /// The next queued one-way message, optionally only from `from` and/or on `channel`.
    /// Messages reach this queue when the handler does not take them.
    ///
    /// # Errors
    /// [`Error::Closed`] once the client is closed.
    ///
    /// Cancel-safe.
    pub async fn receive(
        &self,
        from: Option<SocketAddr>,
        channel: Option<&str>,
    ) -> Result<(Message, Peer), Error> {
        self.endpoint.receive(from, channel).await
    }

    /// The local socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// `sha256/…` of this side's certificate, for peers to pin.
    pub fn fingerprint(&self) -> String {
        self.endpoint.identity.fingerprint()
    }

    /// Pool counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.endpoint.pool_stats()
    }

    /// Per-connection statistics, read from quinn.
    pub fn connection_stats(&self) -> Vec<ConnectionStats> {
        self.endpoint.connection_stats()
    }

    /// Fails every pending call with [`Error::Closed`], closes all connections and frees
    /// the socket. Calling it again is harmless.
    ///
    /// A transport on a port it was given (`listen`) or that accepts returns once the
    /// socket is freed, so the port can be bound again at once. A dial-only transport on
    /// an ephemeral port returns once every peer was sent the close; the socket drains
    /// in the background (at most [`CLOSE_GRACE`](crate::CLOSE_GRACE)).
    pub async fn close(&self) {
        self.endpoint.close().await
    }
}
