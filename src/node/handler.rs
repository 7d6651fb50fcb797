//! [`JsHandler`]: the core's handler, answered by JS through [`Events`].
//!
//! An incoming request becomes a REQUEST event with a token; its responder waits in
//! `pending` until JS answers it with a RESPOND command (the replies of one submitted
//! batch are written in one turn of one runtime task, `NativeTransport::run`, so they
//! leave together) or until the request timeout, which a sweeper enforces for all
//! pending requests at once. A one-way message becomes a MESSAGE event (bounded by
//! [`super::events::MESSAGE_ROOM_KIB`], so a slow JS thread slows the senders).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::events::Events;
use bytes::Bytes;

use crate::codec::{self, FrameKind, WireFrame};
use crate::handler::{BoxFuture, FrameHandler, Handler, Peer};
use crate::message::Message;
use crate::reply::Responder;

pub(crate) type Reply = Result<Message, String>;

/// How often the sweeper looks for requests JS has not answered in time, as a fraction
/// of the request timeout: a late handler is answered for at most an eighth of the
/// timeout after its deadline.
const SWEEPS_PER_TIMEOUT: u32 = 8;

pub(crate) struct JsHandler {
    events: Arc<Events>,
    wants_requests: AtomicBool,
    wants_messages: AtomicBool,
    /// Requests waiting for JS: where the reply goes, and until when JS may answer.
    pending: Mutex<HashMap<u32, (Responder, Instant)>>,
    next_token: AtomicU32,
    request_timeout: Duration,
    /// Set at close: the sweeper stops.
    closed: AtomicBool,
}

impl JsHandler {
    pub(crate) fn new(events: Arc<Events>, request_timeout: Duration) -> Self {
        JsHandler {
            events,
            wants_requests: AtomicBool::new(false),
            wants_messages: AtomicBool::new(false),
            pending: Mutex::default(),
            next_token: AtomicU32::new(1),
            request_timeout,
            closed: AtomicBool::new(false),
        }
    }

    /// Starts the task that answers requests JS left unanswered past the request
    /// timeout. It ends at close, or when the handler is dropped. Call within a tokio
    /// runtime.
    pub(crate) fn start_sweeper(self: &Arc<Self>) {
        let handler = Arc::downgrade(self);
        let period = (self.request_timeout / SWEEPS_PER_TIMEOUT).max(Duration::from_millis(10));
        tokio::spawn(sweep(handler, period));
    }

    pub(crate) fn set_wants(&self, requests: bool, messages: bool) {
        self.wants_requests.store(requests, Ordering::Relaxed);
        self.wants_messages.store(messages, Ordering::Relaxed);
    }

    /// JS answered the request `token`: writes the reply (call on the runtime).
    /// Unknown tokens (timed out already) are ignored.
    pub(crate) fn respond(&self, token: u32, reply: Reply) {
        if let Some(responder) = self.waiting(token) {
            responder.respond(reply);
        }
    }

    /// [`JsHandler::respond`] with the reply as JS wrote it: a Response frame (its
    /// fields checked), which goes out as it is when it has the request's id.
    pub(crate) fn respond_frame(&self, token: u32, head: Bytes, payload: Bytes) {
        if let Some(responder) = self.waiting(token) {
            responder.answer_frame(head, payload);
        }
    }

    /// The responder of request `token`, taken out of `pending` (`None` once it timed
    /// out).
    fn waiting(&self, token: u32) -> Option<Responder> {
        self.lock().remove(&token).map(|(responder, _)| responder)
    }

    /// Fails every request waiting for JS (at close). Call on the runtime.
    pub(crate) fn abandon_all(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let pending = std::mem::take(&mut *self.lock());
        for (responder, _) in pending.into_values() {
            responder.respond(Err(
                "the transport closed before the handler answered".to_owned()
            ));
        }
    }

    /// Answers the requests whose deadline has passed.
    fn expire(&self, now: Instant) {
        let expired: Vec<Responder> = self
            .lock()
            .extract_if(|_, (_, deadline)| *deadline <= now)
            .map(|(_, (responder, _))| responder)
            .collect();
        for responder in expired {
            responder.respond(Err(format!(
                "handler did not answer within {} ms",
                self.request_timeout.as_millis()
            )));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (Responder, Instant)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn sweep(handler: Weak<JsHandler>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(handler) = handler
            .upgrade()
            .filter(|h| !h.closed.load(Ordering::Relaxed))
        else {
            return;
        };
        handler.expire(Instant::now());
    }
}

/// The core handler: a shared [`JsHandler`].
#[derive(Clone)]
pub(crate) struct SharedHandler(pub(crate) Arc<JsHandler>);

impl Handler for SharedHandler {
    fn request(&self, _request: Message, _peer: Peer) -> BoxFuture<Reply> {
        // Requests go through `answer`; this is what a caller of `request` would get.
        Box::pin(async { Err("requests are answered through Handler::answer".to_owned()) })
    }

    /// Hands the request to JS as a frame. The transport never calls this (it calls
    /// [`FrameHandler::answer_frame`]); it is here for a caller holding a `Message`.
    fn answer(&self, request: Message, peer: Peer, responder: Responder) -> BoxFuture<()> {
        match codec::encode(FrameKind::Request, &request, u64::MAX) {
            Ok((head, payload)) => {
                let frame = WireFrame {
                    kind: FrameKind::Request,
                    head,
                    payload,
                };
                self.answer_frame(frame, peer, responder);
            }
            Err(e) => {
                responder.respond(Err(e.to_string()));
            }
        }
        Box::pin(std::future::ready(()))
    }

    fn message(&self, message: Message, peer: Peer) -> BoxFuture<()> {
        let handler = self.0.clone();
        Box::pin(async move {
            // Fails only when closing; the message is then dropped with everything else.
            let _ = handler.events.message(message, &peer).await;
        })
    }

    fn wants_messages(&self) -> bool {
        self.0.wants_messages.load(Ordering::Relaxed)
    }
}

impl FrameHandler for SharedHandler {
    /// Hands the request to JS as it came; the responder waits in `pending`.
    fn answer_frame(&self, request: WireFrame, peer: Peer, responder: Responder) {
        let handler = &self.0;
        if !handler.wants_requests.load(Ordering::Relaxed) {
            responder.respond(Err(
                "this peer has no request handler (onRequest)".to_owned()
            ));
            return;
        }
        let token = handler.next_token.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + handler.request_timeout;
        handler.lock().insert(token, (responder, deadline));
        handler.events.request(token, request, &peer);
    }
}
