//! [`Events`]: everything Rust tells JS, batched into one Buffer per JS callback.
//!
//! Replies, failures, send completions, incoming requests and incoming messages are
//! appended to a pending batch. The first append wakes the flusher task, which yields
//! once, so that the runtime first runs every task already woken (the other streams of
//! the datagrams just read), and then wakes the JS thread ([`JsWake`]); the JS thread
//! takes whatever has accumulated by the time it runs. So under load one crossing
//! carries many events, and when idle each event crosses at once. (A threadsafe call
//! per event cost a syscall and a thread switch each: in profiles of the `rps`
//! benchmark, the server's runtime spent 4.5% of its process's time in
//! `napi_call_threadsafe_function`.)
//!
//! Records (big-endian), parsed by `index.js`:
//! ```text
//! PEER     6 | idx u32 | addr_len u16 | addr | fp_len u16 | fp   (defines idx for this batch)
//! REPLY    1 | token u32 | frame
//! FAILED   2 | token u32 | code_len u16 | code | msg_len u32 | msg
//! SENT     3 | token u32
//! REQUEST  4 | token u32 | peer idx u32 | frame
//! MESSAGE  5 | peer idx u32 | frame
//! ```
//! Frames are wire frames (PROTOCOL.md). A payload of [`DETACH_PAYLOAD_BYTES`] or more
//! is not copied into the batch: its record's code has the [`DETACHED`] bit set, its
//! frame stops after the fields (the header still gives the payload's length), and the
//! payload is the batch's next detached Buffer, handed to JS without a copy. (A 64 MiB
//! echo copied each payload twice more on the way through the batch.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, FnArgs, Function, ToNapiValue, Unknown};
use napi::sys;
use tokio::sync::{Notify, Semaphore};

use super::payload::Payload;
use super::wake::JsWake;

use crate::codec::{self, FrameKind, WireFrame};
use crate::error::Error;
use crate::handler::Peer;
use crate::message::Message;

const PEER: u8 = 6;
const REPLY: u8 = 1;
const FAILED: u8 = 2;
const SENT: u8 = 3;
const REQUEST: u8 = 4;
const MESSAGE: u8 = 5;

/// Set in a record's code when its frame's payload is a detached Buffer.
pub(crate) const DETACHED: u8 = 0x80;

/// Payloads this large or larger travel as Buffers of their own rather than inside the
/// batch: past this size a copy costs more than creating a Buffer.
pub const DETACH_PAYLOAD_BYTES: usize = 64 * 1024;

/// Incoming one-way message bytes (in KiB) waiting in batches JS has not taken yet.
/// Past it, channel readers wait, and QUIC flow control slows the senders.
pub const MESSAGE_ROOM_KIB: usize = 64 * 1024;

/// The most a new event batch reserves up front, in bytes (a batch grows past it as
/// needed). Reserving the previous batch's size removed reallocations that were 1% of
/// the server's instructions in the `rps` benchmark (callgrind).
const BATCH_CAPACITY_HINT: usize = 1 << 20;

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// The payloads of the DETACHED records in `buf`, in order.
    detached: Vec<Vec<u8>>,
    peers: HashMap<SocketAddr, u32>,
    scheduled: bool,
    /// Room taken by messages in `buf`, given back when JS takes the batch.
    held_kib: usize,
}

struct Shared {
    pending: Mutex<Pending>,
    room: Semaphore,
    /// Wakes the flusher: a batch was started.
    started: Notify,
    closed: std::sync::atomic::AtomicBool,
}

/// What JS receives: the batch, and its detached payloads (if any).
pub(crate) type EventArgs = FnArgs<(Batch, Option<Vec<Payload>>)>;

/// Batches smaller than this are copied into a Buffer of V8's own; larger ones become an
/// external Buffer over their memory. Making an external Buffer (with the finalizer that
/// frees its memory) cost about 4,800 instructions per batch, a third of what the JS
/// thread spent on crossings at 1 request in flight (`bash bench/callgrind.sh client
/// quic 10000 64 1`); a copy of a few KiB costs far less.
const COPY_BATCH_BELOW: usize = 16 * 1024;

/// An event batch on its way to JS as a Buffer.
pub struct Batch(pub(crate) Vec<u8>);

impl ToNapiValue for Batch {
    unsafe fn to_napi_value(env: sys::napi_env, batch: Self) -> napi::Result<sys::napi_value> {
        let bytes = batch.0;
        if !bytes.is_empty() && bytes.len() < COPY_BATCH_BELOW {
            let mut value = std::ptr::null_mut();
            let mut data = std::ptr::null_mut();
            // SAFETY: copies `bytes` (alive for the call) into a new Buffer.
            let status = unsafe {
                sys::napi_create_buffer_copy(
                    env,
                    bytes.len(),
                    bytes.as_ptr().cast(),
                    &mut data,
                    &mut value,
                )
            };
            if status == sys::Status::napi_ok {
                return Ok(value);
            }
        }
        // SAFETY: forwarded as received.
        unsafe { Buffer::to_napi_value(env, Buffer::from(bytes)) }
    }
}

pub(crate) struct Events {
    shared: Arc<Shared>,
    /// Wakes the JS thread; the flusher ends it ([`JsWake::finish`]) at close.
    wake: JsWake,
    /// The JS thread: events raised there (failures found while parsing a submitted
    /// batch) wake it straight away rather than through the flusher, which would cost a
    /// wake-up of the runtime's thread and back.
    js_thread: std::thread::ThreadId,
}

impl Events {
    /// `on_events(batch, detached)` is called on the JS thread with each batch.
    pub(crate) fn new(on_events: Function<'_, EventArgs, Unknown<'static>>) -> napi::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            room: Semaphore::new(MESSAGE_ROOM_KIB),
            started: Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let taking = shared.clone();
        let wake = JsWake::new(on_events, Box::new(move || take(&taking)))?;
        napi::bindgen_prelude::spawn(flush(shared.clone(), wake.clone()));
        Ok(Events {
            shared,
            wake,
            js_thread: std::thread::current().id(),
        })
    }

    /// Appends a record; schedules a JS call if none is pending.
    fn push(&self, held_kib: usize, write: impl FnOnce(&mut Pending)) {
        let schedule = {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            write(&mut pending);
            pending.held_kib += held_kib;
            !std::mem::replace(&mut pending.scheduled, true)
        };
        if schedule {
            if std::thread::current().id() == self.js_thread {
                self.wake.wake();
            } else {
                self.shared.started.notify_one();
            }
        }
    }

    pub(crate) fn reply(&self, token: u32, result: Result<Message, Error>) {
        match result {
            Ok(message) => match codec::encode(FrameKind::Response, &message, u64::MAX) {
                Ok((head, payload)) => {
                    drop(message);
                    self.push(0, |p| {
                        put_record(p, REPLY, &token.to_be_bytes(), &head, payload);
                    })
                }
                Err(e) => self.failed(token, &e),
            },
            Err(e) => self.failed(token, &e),
        }
    }

    /// A reply as it was read from its stream (a Response frame), or why there is none.
    pub(crate) fn reply_frame(&self, token: u32, result: Result<WireFrame, Error>) {
        match result {
            Ok(frame) => self.push(0, |p| {
                put_record(p, REPLY, &token.to_be_bytes(), &frame.head, frame.payload);
            }),
            Err(e) => self.failed(token, &e),
        }
    }

    pub(crate) fn failed(&self, token: u32, error: &Error) {
        let code = error.code().as_str();
        let text = error.to_string();
        self.push(0, |p| {
            p.buf.push(FAILED);
            p.buf.extend_from_slice(&token.to_be_bytes());
            p.buf.extend_from_slice(&(code.len() as u16).to_be_bytes());
            p.buf.extend_from_slice(code.as_bytes());
            p.buf.extend_from_slice(&(text.len() as u32).to_be_bytes());
            p.buf.extend_from_slice(text.as_bytes());
        });
    }

    pub(crate) fn sent(&self, token: u32, result: Result<(), Error>) {
        match result {
            Ok(()) => self.push(0, |p| {
                p.buf.push(SENT);
                p.buf.extend_from_slice(&token.to_be_bytes());
            }),
            Err(e) => self.failed(token, &e),
        }
    }

    /// An incoming request (a Request frame as it came), answered later by
    /// `respond(token)`.
    pub(crate) fn request(&self, token: u32, request: WireFrame, peer: &Peer) {
        self.push(0, |p| {
            let idx = peer_index(p, peer);
            let mut prefix = [0u8; 8];
            prefix[..4].copy_from_slice(&token.to_be_bytes());
            prefix[4..].copy_from_slice(&idx.to_be_bytes());
            put_record(p, REQUEST, &prefix, &request.head, request.payload);
        });
    }

    /// An incoming one-way message; waits while [`MESSAGE_ROOM_KIB`] are queued for JS.
    pub(crate) async fn message(&self, message: Message, peer: &Peer) -> Result<(), Error> {
        let (head, payload) = codec::encode(FrameKind::Message, &message, u64::MAX)?;
        drop(message);
        let kib = (head.len() + payload.len())
            .div_ceil(1024)
            .clamp(1, MESSAGE_ROOM_KIB);
        self.shared
            .room
            .acquire_many(kib as u32)
            .await
            .map_err(|_| Error::Closed)?
            .forget();
        self.push(kib, |p| {
            let idx = peer_index(p, peer);
            put_record(p, MESSAGE, &idx.to_be_bytes(), &head, payload);
        });
        Ok(())
    }

    /// At once, on the JS thread, as its environment ends: closes, and stops waking JS.
    pub(crate) fn close_now(&self) {
        self.close();
        self.wake.close_now();
    }

    /// Wakes readers waiting for room, and ends the flusher once it has delivered what
    /// is pending (at close).
    pub(crate) fn close(&self) {
        self.shared.room.close();
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.started.notify_one();
    }
}

/// What is pending for JS, taken on the JS thread (`None` when nothing is).
fn take(shared: &Shared) -> Option<EventArgs> {
    let (buf, detached, held) = {
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !std::mem::replace(&mut pending.scheduled, false) {
            return None;
        }
        pending.peers.clear();
        // The next batch starts with room for one like this (up to a bound), rather
        // than growing from empty by reallocations.
        let room = pending.buf.len().min(BATCH_CAPACITY_HINT);
        (
            std::mem::replace(&mut pending.buf, Vec::with_capacity(room)),
            std::mem::take(&mut pending.detached),
            std::mem::take(&mut pending.held_kib),
        )
    };
    shared.room.add_permits(held);
    let detached = (!detached.is_empty()).then(|| detached.into_iter().map(Payload).collect());
    Some(FnArgs::from((Batch(buf), detached)))
}

/// Wakes JS for each started batch, after letting the tasks already woken add their
/// events; ends at [`Events::close`], once what is pending is delivered.
async fn flush(shared: Arc<Shared>, wake: JsWake) {
    loop {
        shared.started.notified().await;
        tokio::task::yield_now().await;
        let scheduled = shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .scheduled;
        if scheduled {
            wake.wake();
        }
        if shared.closed.load(std::sync::atomic::Ordering::Acquire) {
            wake.finish();
            return;
        }
    }
}

/// Appends a record: `code`, `prefix` (its fixed fields), then the frame, with the
/// payload inline or, from [`DETACH_PAYLOAD_BYTES`] on, detached. A payload nothing else
/// shares becomes the detached Buffer without a copy.
fn put_record(pending: &mut Pending, code: u8, prefix: &[u8], head: &Bytes, payload: Bytes) {
    let detach = payload.len() >= DETACH_PAYLOAD_BYTES;
    let buf = &mut pending.buf;
    buf.push(if detach { code | DETACHED } else { code });
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(head);
    if detach {
        pending.detached.push(Vec::from(payload));
    } else {
        buf.extend_from_slice(&payload);
    }
}

/// The batch-local index of `peer`, writing its PEER record on first use.
fn peer_index(pending: &mut Pending, peer: &Peer) -> u32 {
    if let Some(idx) = pending.peers.get(&peer.address) {
        return *idx;
    }
    let idx = pending.peers.len() as u32;
    pending.peers.insert(peer.address, idx);
    let address = peer.address.to_string();
    let fingerprint = peer.fingerprint.as_deref().unwrap_or_default();
    let buf = &mut pending.buf;
    buf.push(PEER);
    buf.extend_from_slice(&idx.to_be_bytes());
    buf.extend_from_slice(&(address.len() as u16).to_be_bytes());
    buf.extend_from_slice(address.as_bytes());
    buf.extend_from_slice(&(fingerprint.len() as u16).to_be_bytes());
    buf.extend_from_slice(fingerprint.as_bytes());
    idx
}
