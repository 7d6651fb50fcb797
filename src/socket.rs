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
    hold_gro_on();
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

/// Keeps Linux's UDP receive offload (GRO) switched on for the life of the process.
///
/// The kernel turns GRO support on with system-wide switches (static keys, one each for
/// IPv4 and IPv6) when the first socket asks for GRO, and off when the last such socket
/// closes; each switch rewrites kernel code on every CPU, interrupting them all. quinn
/// asks for GRO on every socket it is given, and on a probe socket it opens and closes
/// each time, so a process that creates transports one after another flipped the IPv6
/// switch three times per `create()` and once more per `close()`: 28% of the CPU time
/// of `create()` + `close()` in a loop (`perf record`: `smp_call_function_many_cond`
/// and `native_write_msr` under `static_key_slow_inc` / `static_key_slow_dec`). One
/// unbound IPv6 UDP socket with GRO, never closed, holds both switches on; it has no
/// port and receives nothing. Best effort: without it only speed is lost.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn hold_gro_on() {
    static HOLDER: std::sync::OnceLock<Option<Socket>> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| {
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).ok()?;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket, and a pointer to an int of the size passed.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::SOL_UDP,
                libc::UDP_GRO,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        (set == 0).then_some(socket)
    });
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn hold_gro_on() {}
