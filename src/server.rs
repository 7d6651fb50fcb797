//! [`QuicServer`]: accepts connections and dispatches requests and messages to a handler.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::client::QuicClient;
use crate::config::TransportConfig;
use crate::endpoint::{self, Endpoint};
use crate::error::Error;
use crate::handler::{FrameHandler, Handler};

/// A listener. Each accepted connection is served on its own tasks: requests (one
/// bidirectional stream each) concurrently, messages of one channel in order. A failed
/// handshake or a misbehaving peer never ends the accept loop.
pub struct QuicServer {
    endpoint: Arc<Endpoint>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for QuicServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl QuicServer {
    /// Listens on `config.listen` (127.0.0.1 on a free port when unset) and starts
    /// accepting. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidArg`] when the address cannot be bound or the TLS setup fails.
    pub fn bind(config: TransportConfig, handler: impl Handler) -> Result<Self, Error> {
        Ok(Self::start(Endpoint::bind(
            config,
            Arc::new(handler),
            None,
            true,
        )?))
    }

    /// [`QuicServer::bind`] whose handler takes requests as frames.
    #[cfg_attr(not(feature = "node"), allow(dead_code))] // used by the Node binding
    pub(crate) fn bind_frames(
        config: TransportConfig,
        handler: impl Handler + FrameHandler,
    ) -> Result<Self, Error> {
        let (handler, frames) = endpoint::frame_handlers(handler);
        Ok(Self::start(Endpoint::bind(config, handler, frames, true)?))
    }

    fn start(endpoint: Arc<Endpoint>) -> Self {
        let local_addr = endpoint.local_addr();
        endpoint.tasks.spawn(endpoint.clone().accept_loop());
        QuicServer {
            endpoint,
            local_addr,
        }
    }

    /// The address it listens on (with the port the OS chose when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `sha256/…` of the server's certificate, for clients to pin.
    pub fn fingerprint(&self) -> String {
        self.endpoint.identity.fingerprint()
    }

    /// The server's certificate in PEM, for clients to trust as a root.
    pub fn cert_pem(&self) -> String {
        self.endpoint.identity.cert_pem()
    }

    /// A client on the same socket. It dials from the listening port and reaches peers
    /// that dialled this server over their own connections (`send` to a peer's address
    /// pushes to it).
    pub fn client(&self) -> QuicClient {
        QuicClient {
            endpoint: self.endpoint.clone(),
        }
    }

    /// Closes every connection and the socket; see [`QuicClient::close`].
    pub async fn close(&self) {
        self.endpoint.close().await
    }
}
