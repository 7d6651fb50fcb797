//! Options, parsed once into an immutable [`TransportConfig`].
//!
//! [`TransportOptions`] mirrors the Node options object field for field (all optional,
//! loosely typed); `TransportConfig::try_from` turns it into a typed config and is the
//! only place options are checked. A bad option fails there with its name.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::tls::{Identity, Trust};

/// Default for [`TransportConfig::server_name`].
pub const DEFAULT_SERVER_NAME: &str = "localhost";
/// Default for [`TransportConfig::connect_timeout`]: long enough for a cross-continent
/// handshake with a lost packet, short enough to notice a dead peer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`TransportConfig::initial_rtt`]: what Chromium's QUIC assumes. RFC 9002
/// suggests 333 ms, which puts the first retransmission of a lost handshake packet a
/// second after it was sent, and leaves only two retransmissions within the 5 s connect
/// timeout (README, Performance: new connections under 20% packet loss).
pub const DEFAULT_INITIAL_RTT: Duration = Duration::from_millis(100);
/// The largest [`TransportConfig::initial_rtt`] accepted (a satellite path's RTT is
/// about 600 ms).
pub const MAX_INITIAL_RTT: Duration = Duration::from_secs(10);
/// Default for [`TransportConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`TransportConfig::max_idle_timeout`].
pub const DEFAULT_MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`TransportConfig::max_concurrent_streams`]: ten times quinn's default of
/// 100, which agent swarms were seen to hit in other QUIC bindings.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1000;
/// Default for [`TransportConfig::max_message_bytes`]: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
/// The largest `max_message_bytes` the framing can carry (payload length is a u32).
pub const MAX_MESSAGE_BYTES_LIMIT: u64 = u32::MAX as u64;

/// The typed, checked configuration of a transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Where to listen; `None` for a transport that only dials.
    pub listen: Option<SocketAddr>,
    /// This transport's certificate and key; generated (self-signed) when `None`.
    pub identity: Option<Identity>,
    /// How to verify peers.
    pub trust: Trust,
    /// Whether a listener demands and verifies a client certificate (mutual TLS).
    pub require_client_cert: bool,
    /// The name the dialled server's certificate must carry.
    pub server_name: String,
    /// Deadline for establishing a connection this side dials. A listener waits for an
    /// accepted handshake up to `max_idle_timeout` (or this, if longer).
    pub connect_timeout: Duration,
    /// The round-trip time assumed until one is measured: it sets when a lost handshake
    /// packet is first sent again (three times this), and every later retry doubles it.
    pub initial_rtt: Duration,
    /// Default deadline for a request and its reply.
    pub request_timeout: Duration,
    /// A connection with no traffic for this long is closed (and leaves the pool).
    pub max_idle_timeout: Duration,
    /// Send keep-alive packets this often, so idle connections stay open.
    pub keep_alive: Option<Duration>,
    /// Streams in flight per connection and direction; past it requests wait.
    pub max_concurrent_streams: u32,
    /// Largest message (fields plus payload) sent or accepted.
    pub max_message_bytes: u64,
    /// 0-RTT: a dial to a server this transport has been connected to before sends its
    /// first requests with its first packet, and a listener answers such requests
    /// before the handshake ends. Both sides must enable it. See `zeroRtt` in
    /// `index.d.ts` for what it costs (a request sent in 0-RTT can be replayed).
    pub zero_rtt: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            listen: None,
            identity: None,
            trust: Trust::default(),
            require_client_cert: false,
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            initial_rtt: DEFAULT_INITIAL_RTT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_idle_timeout: DEFAULT_MAX_IDLE_TIMEOUT,
            keep_alive: None,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            zero_rtt: false,
        }
    }
}

/// Loosely typed options, as a JS caller gives them. All fields are optional.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// `listen`: where to accept connections.
    pub listen: Option<ListenOptions>,
    /// `tls`: identity and trust.
    pub tls: Option<TlsOptions>,
    /// `serverName`.
    pub server_name: Option<String>,
    /// `connectTimeoutMs`.
    pub connect_timeout_ms: Option<f64>,
    /// `initialRttMs`.
    pub initial_rtt_ms: Option<f64>,
    /// `requestTimeoutMs`.
    pub request_timeout_ms: Option<f64>,
    /// `maxIdleTimeoutMs`.
    pub max_idle_timeout_ms: Option<f64>,
    /// `keepAliveMs`.
    pub keep_alive_ms: Option<f64>,
    /// `maxConcurrentStreams`.
    pub max_concurrent_streams: Option<f64>,
    /// `maxMessageBytes`.
    pub max_message_bytes: Option<f64>,
    /// `zeroRtt`.
    pub zero_rtt: Option<bool>,
}

/// `listen` options.
#[derive(Debug, Clone, Default)]
pub struct ListenOptions {
    /// `listen.host`, default `127.0.0.1`.
    pub host: Option<String>,
    /// `listen.port`, default 0 (any free port).
    pub port: Option<f64>,
}

/// `tls` options. PEM may be given inline or as a file path.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `tls.cert`: PEM certificate chain.
    pub cert: Option<Vec<u8>>,
    /// `tls.key`: PEM private key.
    pub key: Option<Vec<u8>>,
    /// `tls.certPath`.
    pub cert_path: Option<PathBuf>,
    /// `tls.keyPath`.
    pub key_path: Option<PathBuf>,
    /// `tls.ca`: PEM root certificates to verify peers with.
    pub ca: Option<Vec<u8>>,
    /// `tls.caPath`.
    pub ca_path: Option<PathBuf>,
    /// `tls.pinnedFingerprints`: `sha256/<base64>` of accepted peer certificates.
    pub pinned_fingerprints: Option<Vec<String>>,
    /// `tls.insecureSkipVerify`: accept any peer certificate (development only).
    pub insecure_skip_verify: Option<bool>,
    /// `tls.requireClientCert`: mutual TLS on the listener.
    pub require_client_cert: Option<bool>,
}

impl TryFrom<TransportOptions> for TransportConfig {
    type Error = Error;

    fn try_from(options: TransportOptions) -> Result<Self, Error> {
        let defaults = TransportConfig::default();
        let listen = options.listen.map(parse_listen).transpose()?;
        let tls = options.tls.unwrap_or_default();
        let identity = Identity::from_options(&tls)?;
        let trust = Trust::from_options(&tls)?;
        let require_client_cert = tls.require_client_cert.unwrap_or(false);
        if require_client_cert && !trust.is_configured() {
            return Err(Error::invalid(
                "tls.requireClientCert",
                "needs tls.ca, tls.caPath, tls.pinnedFingerprints or tls.insecureSkipVerify to verify clients with",
            ));
        }
        let server_name = match options.server_name {
            Some(name) if name.is_empty() => {
                return Err(Error::invalid("serverName", "must not be empty"))
            }
            Some(name) => {
                rustls::pki_types::ServerName::try_from(name.as_str())
                    .map_err(|e| Error::invalid("serverName", e.to_string()))?;
                name
            }
            None => defaults.server_name,
        };
        let max_message_bytes = match options.max_message_bytes {
            Some(n) => whole_number("maxMessageBytes", n, 1, MAX_MESSAGE_BYTES_LIMIT)?,
            None => defaults.max_message_bytes,
        };
        let max_concurrent_streams = match options.max_concurrent_streams {
            Some(n) => whole_number("maxConcurrentStreams", n, 1, 1 << 20)? as u32,
            None => defaults.max_concurrent_streams,
        };
        Ok(TransportConfig {
            listen,
            identity,
            trust,
            require_client_cert,
            server_name,
            connect_timeout: duration("connectTimeoutMs", options.connect_timeout_ms)?
                .unwrap_or(defaults.connect_timeout),
            initial_rtt: match duration("initialRttMs", options.initial_rtt_ms)? {
                // Longer would all but turn off the handshake's retransmissions.
                Some(rtt) if rtt > MAX_INITIAL_RTT => {
                    return Err(Error::invalid(
                        "initialRttMs",
                        format!("must be at most {} ms", MAX_INITIAL_RTT.as_millis()),
                    ))
                }
                rtt => rtt.unwrap_or(defaults.initial_rtt),
            },
            request_timeout: duration("requestTimeoutMs", options.request_timeout_ms)?
                .unwrap_or(defaults.request_timeout),
            max_idle_timeout: duration("maxIdleTimeoutMs", options.max_idle_timeout_ms)?
                .unwrap_or(defaults.max_idle_timeout),
            keep_alive: duration("keepAliveMs", options.keep_alive_ms)?,
            max_concurrent_streams,
            max_message_bytes,
            zero_rtt: options.zero_rtt.unwrap_or(false),
        })
    }
}

fn parse_listen(listen: ListenOptions) -> Result<SocketAddr, Error> {
    let host = listen.host.unwrap_or_else(|| "127.0.0.1".to_owned());
    let port = match listen.port {
        Some(p) => whole_number("listen.port", p, 0, u16::MAX as u64)? as u16,
        None => 0,
    };
    resolve("listen.host", &host, port)
}

/// Resolves `host` (an IP literal or a name such as `localhost`) with `port`.
pub(crate) fn resolve(name: &str, host: &str, port: u16) -> Result<SocketAddr, Error> {
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = trimmed.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::invalid(name, format!("cannot resolve {host:?}: {e}")))?;
    // Prefer IPv4: `localhost` resolves to both, and loopback peers usually listen on v4.
    let all: Vec<SocketAddr> = addrs.by_ref().collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| Error::invalid(name, format!("{host:?} resolves to no address")))
}

/// `addr` with an IPv4-mapped IPv6 address turned into plain IPv4, so that one peer has
/// one address whichever socket family saw it.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Parses a peer address `host:port` (`[v6]:port` for IPv6).
///
/// # Errors
/// [`Error::InvalidArg`] naming `name` when it is not of that form or does not resolve.
pub fn parse_peer_address(name: &str, addr: &str) -> Result<SocketAddr, Error> {
    if let Ok(parsed) = addr.parse::<SocketAddr>() {
        return Ok(canonical(parsed));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| Error::invalid(name, format!("{addr:?} is not of the form host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| Error::invalid(name, format!("{addr:?} has no valid port")))?;
    if host.is_empty() {
        return Err(Error::invalid(name, format!("{addr:?} has no host")));
    }
    resolve(name, host, port).map(canonical)
}

fn whole_number(name: &str, value: f64, min: u64, max: u64) -> Result<u64, Error> {
    if !value.is_finite() || value.fract() != 0.0 || value < min as f64 || value > max as f64 {
        return Err(Error::invalid(
            name,
            format!("{value} is not a whole number from {min} to {max}"),
        ));
    }
    Ok(value as u64)
}

/// A duration in milliseconds: finite, positive, at most a day.
pub(crate) fn duration(name: &str, ms: Option<f64>) -> Result<Option<Duration>, Error> {
    let Some(ms) = ms else { return Ok(None) };
    const DAY_MS: f64 = 86_400_000.0;
    if !ms.is_finite() || ms <= 0.0 || ms > DAY_MS {
        return Err(Error::invalid(
            name,
            format!("{ms} is not a number of milliseconds above 0 and at most {DAY_MS}"),
        ));
    }
    Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
}

/// For tests in this crate: a default config that trusts only the certificate with this
/// `sha256/…` fingerprint.
#[cfg(test)]
pub(crate) fn trusting(fingerprint: &str) -> TransportConfig {
    let mut config = TransportConfig::default();
    config
        .trust
        .pins
        .push(crate::parse_fingerprint(fingerprint).unwrap());
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let config = TransportConfig::try_from(TransportOptions::default()).unwrap();
        assert_eq!(config.listen, None);
        assert_eq!(config.max_concurrent_streams, 1000);
        assert_eq!(config.initial_rtt, DEFAULT_INITIAL_RTT);
        let too_long = TransportConfig::try_from(TransportOptions {
            initial_rtt_ms: Some(10_001.0),
            ..TransportOptions::default()
        });
        assert!(
            matches!(&too_long, Err(Error::InvalidArg { name, .. }) if name == "initialRttMs"),
            "{too_long:?}"
        );
        assert_eq!(config.max_message_bytes, 16 << 20);
        assert_eq!(config.server_name, "localhost");
    }

    #[test]
    fn bad_options_name_themselves() {
        let cases: Vec<(TransportOptions, &str)> = vec![
            (
                TransportOptions {
                    connect_timeout_ms: Some(-1.0),
                    ..Default::default()
                },
                "connectTimeoutMs",
            ),
            (
                TransportOptions {
                    max_concurrent_streams: Some(0.5),
                    ..Default::default()
                },
                "maxConcurrentStreams",
            ),
            (
                TransportOptions {
                    max_message_bytes: Some(f64::NAN),
                    ..Default::default()
                },
                "maxMessageBytes",
            ),
            (
                TransportOptions {
                    listen: Some(ListenOptions {
                        port: Some(70000.0),
                        host: None,
                    }),
                    ..Default::default()
                },
                "listen.port",
            ),
            (
                TransportOptions {
                    server_name: Some(String::new()),
                    ..Default::default()
                },
                "serverName",
            ),
        ];
        for (options, name) in cases {
            match TransportConfig::try_from(options) {
                Err(Error::InvalidArg { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name}: expected InvalidArg, got {other:?}"),
            }
        }
    }

    #[test]
    fn peer_addresses_parse() {
        assert_eq!(
            parse_peer_address("addr", "127.0.0.1:80").unwrap().port(),
            80
        );
        assert!(parse_peer_address("addr", "[::1]:81").unwrap().is_ipv6());
        assert_eq!(
            parse_peer_address("addr", "localhost:82").unwrap().port(),
            82
        );
        for bad in ["nope", "host:", ":80", "127.0.0.1:99999"] {
            assert!(parse_peer_address("addr", bad).is_err(), "{bad}");
        }
    }
}
