//! Counters a transport reports: [`PoolStats`] and [`ConnectionStats`].

use std::net::SocketAddr;

/// Statistics of the client connection pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open pooled connections with at least one request or message in flight.
    pub active: u64,
    /// Open pooled connections with nothing in flight.
    pub idle: u64,
    /// Connections the pool has established since start.
    pub created: u64,
    /// Pooled connections that have closed since start (idle timeout, loss, peer close).
    pub closed: u64,
    /// Connection look-ups served by an open or in-progress connection: each request
    /// is one, and a one-way channel is one when its stream opens.
    pub hits: u64,
    /// Connection look-ups that had to dial.
    pub misses: u64,
}

/// Statistics of one open connection, read from quinn.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionStats {
    /// The peer's address.
    pub remote_address: SocketAddr,
    /// Whether this side dialled (true) or accepted (false) the connection.
    pub outbound: bool,
    /// Smoothed round-trip time in milliseconds.
    pub rtt_ms: f64,
    /// Congestion window in bytes.
    pub congestion_window: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Streams this side opened on the connection.
    pub streams_opened: u64,
    /// The largest UDP payload this side currently sends on the path, in bytes: 1200 at
    /// first, raised by quinn's MTU discovery (up to 1452) as probes get through.
    pub mtu: u16,
    /// Requests went in 0-RTT on this connection and were taken: for a dialled one, its
    /// first requests left with its first packet; for an accepted one, the peer's did and
    /// were answered before the handshake ended (`zero_rtt` on both sides).
    pub zero_rtt: bool,
}
