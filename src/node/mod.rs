//! The Node.js binding: `NativeTransport`, the raw class under the JS `QuicTransport`.
//!
//! This layer only converts values and errors; all behaviour lives in the core. The hot
//! paths cross the boundary in batches: JS submits every request, send and reply of a
//! tick as one Buffer of commands (`commands.rs`), copied once on the JS thread; Rust
//! hands replies, completions and incoming traffic back as one Buffer of events per JS
//! callback (`events.rs`). No JS-owned memory is ever dropped on a tokio thread (that
//! crashed an earlier quinn binding for Node).

mod commands;
mod error;
mod events;
mod exit_hook;
mod handler;
mod message;
mod options;
mod payload;
mod wake;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use napi::bindgen_prelude::{
    within_runtime_if_available, BufferSlice, FnArgs, Function, PromiseRaw, Unknown,
};
use napi::Env;
use napi_derive::napi;
use tokio::sync::oneshot;

use self::commands::{Command, Commands};
use self::error::{to_js, IntoJs};
use self::events::{Batch, Events};
use self::exit_hook::ExitHook;
use self::handler::{JsHandler, SharedHandler};
use self::message::JsIncoming;
use self::options::JsTransportOptions;
use self::payload::Payload;
use crate::codec::FrameKind;
use crate::config::{parse_peer_address, TransportConfig, TransportOptions};
use crate::error::Error;
use crate::handler::BoxFuture;
use crate::outbox::OutgoingFrame;
use crate::request_group::{GroupRequest, RequestGroup};
use crate::{QuicClient, QuicServer};

/// Resolved peer addresses kept per transport (names such as `localhost` are resolved
/// once, not on every call).
const ADDRESS_CACHE: usize = 4096;

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
    pub mtu: u32,
    pub zero_rtt: bool,
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

/// How many transports' endpoints are in memory, closed or not. A diagnostic for tests:
/// a transport that was closed and collected is freed whole.
#[napi(catch_unwind)]
pub fn endpoints_in_memory() -> u32 {
    crate::endpoint::in_memory() as u32
}

/// The raw transport. Use `QuicTransport` from the package instead.
#[napi]
pub struct NativeTransport {
    client: QuicClient,
    handler: Arc<JsHandler>,
    events: Arc<Events>,
    listening: Option<SocketAddr>,
    /// Requests JS may abort, by token (`cancel(token)`).
    cancels: Cancels,
    addresses: Mutex<HashMap<String, SocketAddr>>,
    /// Closes the transport if the JS environment ends first; removed by `close()`.
    exit_hook: std::cell::RefCell<Option<ExitHook>>,
}

#[napi]
impl NativeTransport {
    /// Binds the socket (and listens when `options.listen` is set). `onEvents` receives
    /// every event as a batch Buffer, and the batch's detached payloads (see `events.rs`).
    #[napi(
        factory,
        catch_unwind,
        // Detached payloads arrive as Buffers (`payload.rs`).
        ts_args_type = "options: JsTransportOptions, onEvents: (arg0: Buffer, arg1?: Array<Buffer> | undefined | null) => unknown"
    )]
    // The callback's type is spelled out, as `events::EventArgs` is.
    #[allow(clippy::type_complexity)]
    pub fn create(
        env: Env,
        options: JsTransportOptions,
        on_events: Function<'_, FnArgs<(Batch, Option<Vec<Payload>>)>, Unknown<'static>>,
    ) -> napi::Result<Self> {
        let config = TransportConfig::try_from(TransportOptions::from(options)).into_js()?;
        let events = Arc::new(Events::new(on_events)?);
        let handler = Arc::new(JsHandler::new(events.clone(), config.request_timeout));
        let shared = SharedHandler(handler.clone());
        let (client, listening) = within_runtime_if_available(|| {
            handler.start_sweeper();
            if config.listen.is_some() {
                let server = QuicServer::bind_frames(config, shared)?;
                Ok::<_, Error>((server.client(), Some(server.local_addr())))
            } else {
                Ok((QuicClient::with_frame_handler(config, shared)?, None))
            }
        })
        .into_js()?;
        let exit_hook = ExitHook::register(
            &env,
            Arc::downgrade(&client.endpoint),
            Arc::downgrade(&events),
        )?;
        Ok(NativeTransport {
            client,
            handler,
            events,
            listening,
            cancels: Arc::default(),
            addresses: Mutex::default(),
            exit_hook: std::cell::RefCell::new(Some(exit_hook)),
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

    /// The configured `maxMessageBytes`.
    #[napi(getter, catch_unwind)]
    pub fn max_message_bytes(&self) -> f64 {
        self.client.endpoint.config.max_message_bytes as f64
    }

    /// Whether JS handles requests and messages (else requests fail and messages queue
    /// for `receive`).
    #[napi(catch_unwind)]
    pub fn set_handlers(&self, requests: bool, messages: bool) {
        self.handler.set_wants(requests, messages);
    }

    /// Carries out a batch of commands (see `commands.rs`), with the payloads of its
    /// DETACHED commands in order. Outcomes arrive as events.
    ///
    /// Requests start in the order JS made them, in one group per timeout
    /// (`request_group.rs`), each group where its first request was.
    ///
    /// # Errors
    /// Throws `[ERR_PROTOCOL]` when the batch does not parse; then none of its requests
    /// and replies ran, and JS fails all its calls (sends before the bad command may have
    /// been queued already).
    #[napi(catch_unwind)]
    pub fn submit(&self, batch: &[u8], detached: Option<Vec<BufferSlice>>) -> napi::Result<()> {
        let commands = commands(
            batch,
            detached,
            self.client.endpoint.config.max_message_bytes,
        );
        within_runtime_if_available(|| {
            // Consecutive sends to one address are queued together, in order.
            let mut sends: Option<(SocketAddr, Vec<OutgoingFrame>)> = None;
            // The address of the previous command, as written and resolved: a batch's
            // commands mostly go to one peer.
            let mut last: Option<(Bytes, SocketAddr)> = None;
            let mut resolve = |raw: Bytes| -> Result<SocketAddr, Error> {
                if let Some((seen, addr)) = &last {
                    if *seen == raw {
                        return Ok(*addr);
                    }
                }
                let text =
                    std::str::from_utf8(&raw).map_err(|_| Error::invalid("addr", "not UTF-8"))?;
                let addr = self.resolve(text)?;
                last = Some((raw, addr));
                Ok(addr)
            };
            // Replies to write and request groups to start, in order, on the runtime.
            let mut work: Vec<BoxFuture<()>> = Vec::new();
            // Requests to start, by timeout (a batch's requests mostly share one), and
            // where in `work` each group goes.
            let mut groups: Vec<(RequestGroup, usize)> = Vec::new();
            for command in commands {
                let command = match command {
                    Ok(command) => command,
                    Err(e) => {
                        // None of the batch's requests starts: their abort handles go.
                        let mut cancels = lock(&self.cancels);
                        for token in groups.iter().flat_map(|(group, _)| group.abortable()) {
                            cancels.remove(&token);
                        }
                        return Err(to_js(e));
                    }
                };
                match command {
                    Command::Request {
                        token,
                        cancellable,
                        timeout_ms,
                        addr,
                        frame,
                    } => {
                        let prepared = resolve(addr).and_then(|a| frame.map(|f| (a, f)));
                        match prepared {
                            Ok((addr, frame)) => {
                                let timeout = (timeout_ms > 0)
                                    .then(|| Duration::from_millis(timeout_ms as u64));
                                let at = groups
                                    .iter()
                                    .position(|(g, _)| g.timeout == timeout)
                                    .unwrap_or_else(|| {
                                        groups.push((RequestGroup::new(timeout), work.len()));
                                        groups.len() - 1
                                    });
                                groups[at].0.push(GroupRequest {
                                    token,
                                    addr,
                                    head: frame.head,
                                    payload: frame.payload,
                                    abort: cancellable.then(|| self.abort_handle(token)),
                                });
                            }
                            Err(e) => self.events.failed(token, &e),
                        }
                    }
                    Command::Send { token, addr, frame } => {
                        let prepared = resolve(addr).and_then(|a| frame.map(|f| (a, f)));
                        match prepared {
                            Ok((addr, frame)) => {
                                if sends.as_ref().is_some_and(|(a, _)| *a != addr) {
                                    self.flush_sends(sends.take());
                                }
                                let events = self.events.clone();
                                let outgoing = OutgoingFrame {
                                    // Empty for the default channel (the outbox's key).
                                    channel: frame.channel,
                                    head: frame.head,
                                    payload: frame.payload,
                                    done: Box::new(move |result| events.sent(token, result)),
                                };
                                sends
                                    .get_or_insert_with(|| (addr, Vec::new()))
                                    .1
                                    .push(outgoing);
                            }
                            Err(e) => self.events.failed(token, &e),
                        }
                    }
                    Command::Respond { token, frame } => {
                        let handler = self.handler.clone();
                        work.push(match frame {
                            // Written as JS wrote it (with the request's id).
                            Ok(f) if f.kind == FrameKind::Response => {
                                Box::pin(
                                    async move { handler.respond_frame(token, f.head, f.payload) },
                                )
                            }
                            failed => {
                                let reply = Err(match failed {
                                    Ok(f) => String::from_utf8_lossy(&f.payload).into_owned(),
                                    Err(e) => e.to_string(),
                                });
                                Box::pin(async move { handler.respond(token, reply) })
                            }
                        });
                    }
                }
            }
            self.flush_sends(sends);
            // From the last, so that the places of the earlier ones stay where they were.
            for (group, at) in groups.into_iter().rev() {
                let events = self.events.clone();
                let cancels = self.cancels.clone();
                let report = move |token, abortable, reply| {
                    if abortable {
                        lock(&cancels).remove(&token);
                    }
                    events.reply_frame(token, reply);
                };
                let started = group.run(self.client.endpoint.clone(), report);
                work.insert(at, Box::pin(started));
            }
            self.run(work);
            Ok(())
        })
    }

    /// Diagnostic for `bench/boundary.mjs`: answers every command of a batch at once,
    /// without the network (a request gets its own frame back as the reply; a send is
    /// reported sent), so the cost of crossing the boundary can be measured on its own.
    #[napi(catch_unwind)]
    pub fn loopback(&self, batch: &[u8], detached: Option<Vec<BufferSlice>>) -> napi::Result<()> {
        for command in commands(batch, detached, u64::MAX) {
            match command.map_err(to_js)? {
                Command::Request { token, frame, .. } => self
                    .events
                    .reply(token, frame.and_then(|f| f.into_message())),
                Command::Send { token, .. } => self.events.sent(token, Ok(())),
                Command::Respond { .. } => {}
            }
        }
        Ok(())
    }

    /// Aborts the request started with `token` (no-op if it already settled).
    #[napi(catch_unwind)]
    pub fn cancel(&self, token: u32) {
        let cancel = lock(&self.cancels).remove(&token);
        if let Some(cancel) = cancel {
            let _ = cancel.send(());
        }
    }

    #[napi(catch_unwind)]
    pub fn connect<'e>(&self, env: &'e Env, addr: String) -> napi::Result<PromiseRaw<'e, ()>> {
        let client = self.client.clone();
        let addr = self.resolve(&addr);
        env.spawn_future(async move { client.connect(addr.into_js()?).await.into_js() })
    }

    #[napi(catch_unwind)]
    pub fn disconnect<'e>(&self, env: &'e Env, addr: String) -> napi::Result<PromiseRaw<'e, bool>> {
        let client = self.client.clone();
        let addr = self.resolve(&addr);
        env.spawn_future(async move { client.disconnect(addr.into_js()?).await.into_js() })
    }

    #[napi(catch_unwind)]
    pub fn receive<'e>(
        &self,
        env: &'e Env,
        addr: Option<String>,
        stream_id: Option<String>,
    ) -> napi::Result<PromiseRaw<'e, JsIncoming>> {
        let from = addr.map(|a| self.resolve(&a)).transpose();
        let client = self.client.clone();
        env.spawn_future(async move {
            let from = from.into_js()?;
            let (message, peer) = client.receive(from, stream_id.as_deref()).await.into_js()?;
            Ok(JsIncoming::new(message, &peer))
        })
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
                    mtu: c.mtu as u32,
                    zero_rtt: c.zero_rtt,
                })
                .collect(),
        }
    }

    /// Closes everything; pending calls fail with `ERR_CLOSED`. Idempotent.
    #[napi(catch_unwind)]
    pub fn close<'e>(&self, env: &'e Env) -> napi::Result<PromiseRaw<'e, ()>> {
        drop(self.exit_hook.borrow_mut().take());
        let client = self.client.clone();
        let handler = self.handler.clone();
        let events = self.events.clone();
        let cancels = self.cancels.clone();
        env.spawn_future(async move {
            handler.set_wants(false, false);
            client.close().await;
            handler.abandon_all();
            events.close();
            lock(&cancels).clear();
            Ok(())
        })
    }
}

/// The commands of a submitted batch. Copies the batch and each detached payload once:
/// what JS passed may change as soon as the call returns.
fn commands(batch: &[u8], detached: Option<Vec<BufferSlice>>, limit: u64) -> Commands {
    let detached = detached
        .unwrap_or_default()
        .iter()
        .map(|payload| crate::buffer::copy(payload))
        .collect();
    Commands::new(Bytes::copy_from_slice(batch), detached, limit)
}

impl NativeTransport {
    fn resolve(&self, addr: &str) -> Result<SocketAddr, Error> {
        let mut cache = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(resolved) = cache.get(addr) {
            return Ok(*resolved);
        }
        let resolved = parse_peer_address("addr", addr)?;
        if cache.len() >= ADDRESS_CACHE {
            cache.clear();
        }
        cache.insert(addr.to_owned(), resolved);
        Ok(resolved)
    }

    /// Starts `work` on the runtime, all of it in one task's turn: each piece is polled
    /// once there and goes on in a task of its own only if unfinished.
    ///
    /// Writing to a QUIC stream wakes quinn's connection driver. From the JS thread, that
    /// wake-up can switch the core to the runtime's thread after every write, so that each
    /// reply leaves in a datagram (and a `sendmsg`) of its own; and from a task of its own
    /// per write, the runtime runs the woken driver straight after each task. Done in one
    /// turn of one task, a batch's writes are all made before the driver runs once.
    ///
    /// A single piece (one request, or one group of them, as with one request in
    /// flight) is that task itself, its first poll made in one turn: a task less to make
    /// and run than polling it from another.
    fn run(&self, mut work: Vec<BoxFuture<()>>) {
        let tasks = self.client.endpoint.tasks.clone();
        if work.len() == 1 {
            if let Some(mut piece) = work.pop() {
                let mut first = true;
                tasks.spawn(std::future::poll_fn(move |cx| {
                    if std::mem::take(&mut first) {
                        crate::connection::in_one_turn(|| piece.as_mut().poll(cx))
                    } else {
                        piece.as_mut().poll(cx)
                    }
                }));
            }
        } else if !work.is_empty() {
            tasks.clone().spawn(async move {
                crate::connection::in_one_turn(|| {
                    for piece in work {
                        crate::reply::spawn_polled(&tasks, piece);
                    }
                })
            });
        }
    }

    /// Where `cancel(token)` aborts a request from.
    fn abort_handle(&self, token: u32) -> oneshot::Receiver<()> {
        let (abort, aborted) = oneshot::channel();
        lock(&self.cancels).insert(token, abort);
        aborted
    }

    fn flush_sends(&self, sends: Option<(SocketAddr, Vec<OutgoingFrame>)>) {
        if let Some((addr, frames)) = sends {
            let endpoint = &self.client.endpoint;
            if endpoint.is_closed() {
                for frame in frames {
                    (frame.done)(Err(Error::Closed));
                }
            } else {
                endpoint.outbox.enqueue(endpoint, addr, frames);
            }
        }
    }
}

/// Requests JS may abort, by token.
type Cancels = Arc<Mutex<HashMap<u32, oneshot::Sender<()>>>>;

fn lock(cancels: &Cancels) -> MutexGuard<'_, HashMap<u32, oneshot::Sender<()>>> {
    cancels.lock().unwrap_or_else(|e| e.into_inner())
}
