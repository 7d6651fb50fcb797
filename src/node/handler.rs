//! [`JsHandler`]: the core's handler, answered by JS through [`Events`].
//!
//! An incoming request becomes a REQUEST event with a token and waits until JS answers
//! it with a RESPOND command; the replies of one submitted batch are written in one turn
//! of one runtime task (`NativeTransport::run`), so they leave together. A one-way
//! message becomes a MESSAGE event (bounded by [`super::events::MESSAGE_ROOM_KIB`], so a
//! slow JS thread slows the senders).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::events::Events;
use crate::handler::{BoxFuture, Handler, Peer};
use crate::message::Message;
use crate::reply::Responder;

pub(crate) type Reply = Result<Message, String>;

pub(crate) struct JsHandler {
    events: Arc<Events>,
    wants_requests: AtomicBool,
    wants_messages: AtomicBool,
    /// Requests waiting for JS: where the reply goes, and whom to tell it went.
    pending: Mutex<HashMap<u32, (Responder, oneshot::Sender<()>)>>,
    next_token: AtomicU32,
}

impl JsHandler {
    pub(crate) fn new(events: Arc<Events>) -> Self {
        JsHandler {
            events,
            wants_requests: AtomicBool::new(false),
            wants_messages: AtomicBool::new(false),
            pending: Mutex::default(),
            next_token: AtomicU32::new(1),
        }
    }

    pub(crate) fn set_wants(&self, requests: bool, messages: bool) {
        self.wants_requests.store(requests, Ordering::Relaxed);
        self.wants_messages.store(messages, Ordering::Relaxed);
    }

    /// JS answered the request `token`: writes the reply (call on the runtime).
    /// Unknown tokens (the requester gave up) are ignored.
    pub(crate) fn respond(&self, token: u32, reply: Reply) {
        let waiting = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        if let Some((responder, answered)) = waiting {
            responder.respond(reply);
            let _ = answered.send(());
        }
    }

    /// Fails every request waiting for JS (at close).
    pub(crate) fn abandon_all(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Removes a pending request when its future is dropped unanswered.
struct PendingGuard<'a> {
    handler: &'a JsHandler,
    token: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.handler
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.token);
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

    fn answer(&self, request: Message, peer: Peer, responder: Responder) -> BoxFuture<()> {
        let handler = self.0.clone();
        Box::pin(async move {
            if !handler.wants_requests.load(Ordering::Relaxed) {
                responder.respond(Err(
                    "this peer has no request handler (onRequest)".to_owned()
                ));
                return;
            }
            let token = handler.next_token.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            handler
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token, (responder.clone(), tx));
            let _guard = PendingGuard {
                handler: &handler,
                token,
            };
            if let Err(e) = handler.events.request(token, &request, &peer) {
                responder.respond(Err(e.to_string()));
                return;
            }
            if rx.await.is_err() {
                responder.respond(Err(
                    "the transport closed before the handler answered".to_owned()
                ));
            }
        })
    }

    fn message(&self, message: Message, peer: Peer) -> BoxFuture<()> {
        let handler = self.0.clone();
        Box::pin(async move {
            // Fails only when closing; the message is then dropped with everything else.
            let _ = handler.events.message(&message, &peer).await;
        })
    }

    fn wants_messages(&self) -> bool {
        self.0.wants_messages.load(Ordering::Relaxed)
    }
}
