//! QUIC transport for AI agents.
//!
//! Agents exchange [`Message`]s: requests with replies, and one-way messages on ordered
//! channels. A [`QuicServer`] accepts connections and hands what arrives to a
//! [`Handler`]; a [`QuicClient`] dials peers and keeps one pooled connection per peer,
//! on which every request gets its own QUIC stream (so a lost packet delays only its
//! own request) and every channel its own ordered stream.
//!
//! TLS 1.3 is always on. A dial verifies the server by root certificates, by pinned
//! certificate fingerprints, or, for development only, not at all; with none of these
//! configured it fails with [`ErrorCode::Tls`].
//!
//! ```no_run
//! use agentic_flow_quic::{BoxFuture, Handler, Message, Peer, QuicClient, QuicServer, TransportConfig};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn request(&self, request: Message, _peer: Peer) -> BoxFuture<Result<Message, String>> {
//!         Box::pin(async move { Ok(Message::binary("result", request.payload)) })
//!     }
//!     fn message(&self, _message: Message, _peer: Peer) -> BoxFuture<()> {
//!         Box::pin(async {})
//!     }
//! }
//!
//! # async fn demo() -> Result<(), agentic_flow_quic::Error> {
//! let server = QuicServer::bind(TransportConfig::default(), Echo)?;
//! let mut config = TransportConfig::default();
//! config.trust.pins.push(agentic_flow_quic::parse_fingerprint(&server.fingerprint())?);
//! let client = QuicClient::new(config)?;
//! let reply = client.request(server.local_addr(), Message::binary("task", &b"hi"[..])).await?;
//! assert_eq!(&reply.payload[..], b"hi");
//! client.close().await;
//! server.close().await;
//! # Ok(()) }
//! ```
//!
//! The wire format is specified in `PROTOCOL.md`.

mod buffer;
mod client;
mod codec;
mod config;
mod connection;
mod dialling;
mod endpoint;
mod error;
mod handler;
mod inbox;
mod message;
mod outbox;
mod pool;
mod reply;
// Used by the Node binding; built and tested without it too.
#[cfg_attr(not(feature = "node"), allow(dead_code))]
mod request_group;
mod server;
mod socket;
mod stats;
mod tls;

#[cfg(feature = "node")]
mod node;

pub use client::QuicClient;
pub use codec::{
    decode, encode, encode_to_vec, read_frame, FrameKind, HEADER_LEN, PROTOCOL_VERSION,
};
pub use config::{
    parse_peer_address, ListenOptions, TlsOptions, TransportConfig, TransportOptions,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_INITIAL_RTT, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_IDLE_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SERVER_NAME, MAX_INITIAL_RTT, MAX_MESSAGE_BYTES_LIMIT,
};
pub use connection::app_code;
pub use endpoint::{CLOSE_GRACE, INITIAL_STREAMS, MAX_ACK_DELAY};
pub use error::{Error, ErrorCode};
pub use handler::{BoxFuture, Handler, NoHandler, Peer};
pub use inbox::INBOX_CAPACITY_PER_CHANNEL;
pub use message::{Encoding, Message, DEFAULT_CHANNEL};
pub use reply::Responder;
pub use server::QuicServer;
pub use socket::SOCKET_BUFFER_BYTES;
pub use stats::{ConnectionStats, PoolStats};
pub use tls::{fingerprint, parse_fingerprint, Identity, Trust, ALPN, DEV_CERT_NAMES};
