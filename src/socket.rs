//! The UDP socket under a quinn endpoint, with buffers sized for bursts.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Send and receive buffer asked of the OS (it may grant less: Linux caps it at
/// `net.core.rmem_max` / `wmem_max`). The 208 KiB default overflowed under bulk and
/// high-rate loopback benchmarks, and every dropped datagram costs a retransmission.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Binds a UDP socket at `addr`; an IPv6 wildcard is made dual-stack where possible.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Not fatal: some hosts forbid dual-stack sockets; IPv6 peers still work.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a smaller buffer only costs speed.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A quinn endpoint on a socket from [`bind`].
pub(crate) fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        bind(addr)?,
        std::sync::Arc::new(quinn::TokioRuntime),
    )
}
