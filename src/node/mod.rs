//! The Node.js binding: `NativeTransport`, the raw class under the JS `QuicTransport`.
//!
//! This layer only converts values and errors; all behaviour lives in the core. Every
//! method that takes bytes copies them on the JS thread and returns at once; the work
//! runs on napi's tokio runtime and settles the returned promise.

mod error;
mod handler;
mod message;
mod options;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{within_runtime_if_available, Function, PromiseRaw, Unknown};
use napi::Env;
use napi_derive::napi;
use tokio::sync::oneshot;

use self::error::{to_js, IntoJs};
use self::handler::{JsHandler, SharedHandler};
use self::message::{outgoing, JsIncoming, JsOutgoing};
use self::options::JsTransportOptions;
use crate::config::{self, parse_peer_address, TransportConfig, TransportOptions};
use crate::error::Error;
use crate::message::Message;
use crate::{QuicClient, QuicServer};

/// `{ host, port }` of a listener.
#[napi(object)]
pub struct JsAddress {
    pub host: String,
    pub port: u32,
}

/// Pool counters (u64 counters as JS numbers; exact below 2^53).
#[napi(object)]
pub struct JsPoolStats {
    pub active: f64,
    pub idle: f64,
    pub created: f64,
    pub closed: f64,
    pub hits: f64,
    pub misses: f64,
}

/// One open connection, as quinn reports it.
#[napi(object)]
pub struct JsConnectionStats {
    pub remote_address: String,
    pub outbound: bool,
    pub rtt_ms: f64,
    pub congestion_window: f64,
    pub bytes_sent: f64,
    pub bytes_received: f64,
    pub lost_packets: f64,
    pub streams_opened: f64,
}

/// `getStats()`.
#[napi(object)]
pub struct JsStats {
    pub pool: JsPoolStats,
    pub connections: Vec<JsConnectionStats>,
}

/// A certificate and key in PEM, with the certificate's fingerprint.
#[napi(object)]
pub struct JsCertificate {
    pub cert: String,
    pub key: String,
    pub fingerprint: String,
}

/// Generates a self-signed ECDSA P-256 certificate for `names` (default: localhost,
/// 127.0.0.1, ::1), for development and for pinning.
#[napi(catch_unwind)]
pub fn generate_certificate(names: Option<Vec<String>>) -> napi::Result<JsCertificate> {
    let names = names.unwrap_or_else(|| {
        crate::tls::DEV_CERT_NAMES
            .iter()
            .map(|n| n.to_string())
            .collect()
    });
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let identity = crate::tls::Identity::generate_self_signed(&names).into_js()?;
    Ok(JsCertificate {
        cert: identity.cert_pem(),
        key: identity.key_pem(),
        fingerprint: identity.fingerprint(),
    })
}

/// The raw transport. Use `QuicTransport` from the package instead.
#[napi]
pub struct NativeTransport {
    client: QuicClient,
    handler: Arc<JsHandler>,
    listening: Option<SocketAddr>,
    cancels: Arc<Mutex<HashMap<u32, oneshot::Sender<()>>>>,
    next_cancel: AtomicU32,
}

#[napi]
impl NativeTransport {
    /// Binds the socket (and listens when `options.listen` is set). `onRequests` and
    /// `onMessages` receive arrays of incoming events.
    #[napi(factory, catch_unwind)]
    pub fn create(
        env: Env,
        options: JsTransportOptions,
        on_requests: Function<'_, Vec<JsIncoming>, Unknown<'static>>,
        on_messages: Function<'_, Vec<JsIncoming>, Unknown<'static>>,
    ) -> napi::Result<Self> {
        let config = TransportConfig::try_from(TransportOptions::from(options)).into_js()?;
        let handler = Arc::new(JsHandler::new(on_requests, on_messages)?);
        let shared = SharedHandler(handler.clone());
        let (client, listening) = within_runtime_if_available(|| {
            if config.listen.is_some() {
                let server = QuicServer::bind(config, shared)?;
                Ok::<_, Error>((server.client(), Some(server.local_addr())))
            } else {
                Ok((QuicClient::with_handler(config, shared)?, None))
            }
        })
        .into_js()?;
        // A worker thread that ends without `close()` must not leave the socket open.
        let closing = client.clone();
        env.add_env_cleanup_hook(closing, |client| {
            napi::bindgen_prelude::spawn(async move { client.close().await });
        })?;
        Ok(NativeTransport {
            client,
            handler,
            listening,
            cancels: Arc::default(),
            next_cancel: AtomicU32::new(1),
        })
    }

    /// The listening address, or null for a dial-only transport.
    #[napi(getter, catch_unwind)]
    pub fn address(&self) -> Option<JsAddress> {
        self.listening.map(|a| JsAddress {
            host: a.ip().to_string(),
            port: a.port() as u32,
        })
    }

    /// `sha256/…` of this transport's certificate.
    #[napi(getter, catch_unwind)]
    pub fn fingerprint(&self) -> String {
        self.client.fingerprint()
    }

    /// Whether JS handles requests and messages (else requests fail and messages queue
    /// for `receive`).
    #[napi(catch_unwind)]
    pub fn set_handlers(&self, requests: bool, messages: bool) {
        self.handler.set_wants(requests, messages);
    }

    /// A token for `request(…, cancelToken)`; `cancel(token)` aborts that request.
    #[napi(catch_unwind)]
    pub fn cancel_token(&self) -> u32 {
        self.next_cancel.fetch_add(1, Ordering::Relaxed)
    }

    /// Aborts the request started with `token` (no-op if it already settled).
    #[napi(catch_unwind)]
    pub fn cancel(&self, token: u32) {
        let cancel = self
            .cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        if let Some(cancel) = cancel {
            let _ = cancel.send(());
        }
    }

    #[napi(catch_unwind)]
    pub fn connect<'e>(&self, env: &'e Env, addr: String) -> napi::Result<PromiseRaw<'e, ()>> {
        let client = self.client.clone();
        env.spawn_future(async move {
            let addr = parse_peer_address("addr", &addr).into_js()?;
            client.connect(addr).await.into_js()
        })
    }

    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn request<'e>(
        &self,
        env: &'e Env,
        addr: String,
        id: Option<String>,
        kind: String,
        stream_id: Option<String>,
        text: Option<String>,
        data: Option<&[u8]>,
        metadata: Option<String>,
        timeout_ms: Option<f64>,
        cancel_token: Option<u32>,
    ) -> napi::Result<PromiseRaw<'e, JsIncoming>> {
        let prepared = (|| {
            let addr = parse_peer_address("addr", &addr)?;
            let timeout = config::duration("timeoutMs", timeout_ms)?;
            let message = outgoing(id, kind, stream_id, text, data, metadata)?;
            Ok::<_, Error>((addr, timeout, message))
        })();
        let cancelled = cancel_token.map(|token| {
            let (tx, rx) = oneshot::channel();
            self.cancels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token, tx);
            (token, rx)
        });
        let client = self.client.clone();
        let cancels = self.cancels.clone();
        env.spawn_future(async move {
            let (addr, timeout, message) = prepared.into_js()?;
            let exchange = async {
                match timeout {
                    Some(t) => client.request_with_timeout(addr, message, t).await,
                    None => client.request(addr, message).await,
                }
            };
            let reply = match cancelled {
                Some((token, rx)) => {
                    let reply = tokio::select! {
                        reply = exchange => reply,
                        Ok(()) = rx => Err(Error::Aborted),
                    };
                    cancels
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&token);
                    reply
                }
                None => exchange.await,
            };
            reply.map(|m| JsIncoming::new(m, None, None)).map_err(to_js)
        })
    }

    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn send<'e>(
        &self,
        env: &'e Env,
        addr: String,
        id: Option<String>,
        kind: String,
        stream_id: Option<String>,
        text: Option<String>,
        data: Option<&[u8]>,
        metadata: Option<String>,
    ) -> napi::Result<PromiseRaw<'e, ()>> {
        let sent = parse_peer_address("addr", &addr).and_then(|addr| {
            let message = outgoing(id, kind, stream_id, text, data, metadata)?;
            // Queued here, on the JS thread, so messages keep the order of the calls.
            Ok(within_runtime_if_available(|| {
                self.client.send(addr, message)
            }))
        });
        env.spawn_future(async move { sent.into_js()?.await.into_js() })
    }

    #[napi(catch_unwind)]
    pub fn send_batch<'e>(
        &self,
        env: &'e Env,
        addr: String,
        messages: Vec<JsOutgoing>,
    ) -> napi::Result<PromiseRaw<'e, ()>> {
        let sent = parse_peer_address("addr", &addr).and_then(|addr| {
            let messages = messages
                .into_iter()
                .map(Message::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(within_runtime_if_available(|| {
                self.client.send_batch(addr, messages)
            }))
        });
        env.spawn_future(async move { sent.into_js()?.await.into_js() })
    }

    #[napi(catch_unwind)]
    pub fn receive<'e>(
        &self,
        env: &'e Env,
        addr: Option<String>,
        stream_id: Option<String>,
    ) -> napi::Result<PromiseRaw<'e, JsIncoming>> {
        let from = addr.map(|a| parse_peer_address("addr", &a)).transpose();
        let client = self.client.clone();
        env.spawn_future(async move {
            let from = from.into_js()?;
            let (message, peer) = client.receive(from, stream_id.as_deref()).await.into_js()?;
            Ok(JsIncoming::new(message, Some(&peer), None))
        })
    }

    /// Answers the request `token`: a reply (`error` absent) or a failure (`error`).
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn respond(
        &self,
        token: u32,
        kind: String,
        text: Option<String>,
        data: Option<&[u8]>,
        metadata: Option<String>,
        error: Option<String>,
    ) -> napi::Result<()> {
        let reply = match error {
            Some(error) => Err(error),
            None => Ok(outgoing(None, kind, None, text, data, metadata).into_js()?),
        };
        self.handler.respond(token, reply);
        Ok(())
    }

    #[napi(catch_unwind)]
    pub fn stats(&self) -> JsStats {
        let pool = self.client.pool_stats();
        JsStats {
            pool: JsPoolStats {
                active: pool.active as f64,
                idle: pool.idle as f64,
                created: pool.created as f64,
                closed: pool.closed as f64,
                hits: pool.hits as f64,
                misses: pool.misses as f64,
            },
            connections: self
                .client
                .connection_stats()
                .into_iter()
                .map(|c| JsConnectionStats {
                    remote_address: c.remote_address.to_string(),
                    outbound: c.outbound,
                    rtt_ms: c.rtt_ms,
                    congestion_window: c.congestion_window as f64,
                    bytes_sent: c.bytes_sent as f64,
                    bytes_received: c.bytes_received as f64,
                    lost_packets: c.lost_packets as f64,
                    streams_opened: c.streams_opened as f64,
                })
                .collect(),
        }
    }

    /// Closes everything; pending calls reject with `ERR_CLOSED`. Idempotent.
    #[napi(catch_unwind)]
    pub fn close<'e>(&self, env: &'e Env) -> napi::Result<PromiseRaw<'e, ()>> {
        let client = self.client.clone();
        let handler = self.handler.clone();
        let cancels = self.cancels.clone();
        env.spawn_future(async move {
            handler.set_wants(false, false);
            client.close().await;
            handler.abandon_all();
            cancels.lock().unwrap_or_else(|e| e.into_inner()).clear();
            Ok(())
        })
    }
}
