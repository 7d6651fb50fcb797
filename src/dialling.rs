//! [`Dialling`]: the client configuration a dial uses.
//!
//! rustls keeps the session tickets servers give it in a cache keyed by server name, and
//! offers one to the next server of that name. Peers here mostly share one name (the
//! default `localhost`, with pinned fingerprints), so with 0-RTT a ticket from peer A
//! would go, with early data, to peer B, which could replay that first flight to A: A
//! issued the ticket and has not seen it used, so it would take the early data and run
//! requests meant for B. So with 0-RTT each peer address gets a session cache of its
//! own, and a ticket goes back only to the address that issued it. Without 0-RTT one
//! configuration serves every dial (a ticket offered to the wrong peer only fails to
//! resume).
//!
//! Sessions are also per transport (each has its own configurations), so a session is
//! resumed only with the trust it was verified with and the identity it was made by.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::error::Error;

/// Peer addresses whose sessions are kept at most, with 0-RTT; past it they are all
/// forgotten (the next dial to each makes a full handshake).
const PEERS: usize = 4096;

/// Sessions kept per peer address: rustls is given two tickets per connection and uses
/// one per resumption.
const SESSIONS_PER_PEER: usize = 4;

pub(crate) struct Dialling {
    tls: Arc<rustls::ClientConfig>,
    transport: Arc<quinn::TransportConfig>,
    /// Without 0-RTT, the one configuration.
    shared: Option<quinn::ClientConfig>,
    per_peer: Mutex<HashMap<SocketAddr, quinn::ClientConfig>>,
}

impl Dialling {
    pub(crate) fn new(
        tls: rustls::ClientConfig,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<Self, Error> {
        let shared = match tls.enable_early_data {
            true => None,
            false => Some(build(tls.clone(), &transport)?),
        };
        Ok(Dialling {
            tls: Arc::new(tls),
            transport,
            shared,
            per_peer: Mutex::default(),
        })
    }

    /// The configuration for dialling `addr`.
    pub(crate) fn for_peer(&self, addr: SocketAddr) -> Result<quinn::ClientConfig, Error> {
        if let Some(shared) = &self.shared {
            return Ok(shared.clone());
        }
        let mut per_peer = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = per_peer.get(&addr) {
            return Ok(config.clone());
        }
        let mut tls = (*self.tls).clone();
        tls.resumption = rustls::client::Resumption::store(Arc::new(
            rustls::client::ClientSessionMemoryCache::new(SESSIONS_PER_PEER),
        ));
        let config = build(tls, &self.transport)?;
        if per_peer.len() >= PEERS {
            per_peer.clear();
        }
        per_peer.insert(addr, config.clone());
        Ok(config)
    }
}

fn build(
    tls: rustls::ClientConfig,
    transport: &Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, Error> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport.clone());
    Ok(config)
}
