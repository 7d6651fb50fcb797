//! [`JsHandler`]: the core's handler, answered by JS callbacks.
//!
//! Events reach JS through weak threadsafe functions (they never keep the process alive
//! by themselves; the JS layer decides that). A request waits for JS to call
//! `respond(token, …)`; one-way messages are queued to JS in order, at most
//! [`MAX_QUEUED_MESSAGES`] at a time, so a slow JS thread slows the senders.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Function, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::message::JsIncoming;
use crate::handler::{BoxFuture, Handler, Peer};
use crate::message::Message;

/// One-way messages handed to the JS queue but not yet delivered, per transport.
pub const MAX_QUEUED_MESSAGES: usize = 4096;

/// What a threadsafe call carries: events, and a slot released once JS has them.
pub(crate) struct Delivery {
    events: Vec<JsIncoming>,
    _slot: Option<OwnedSemaphorePermit>,
}

type EventFn = ThreadsafeFunction<Delivery, Unknown<'static>, Vec<JsIncoming>, Status, false, true>;

pub(crate) type Reply = Result<Message, String>;

pub(crate) struct JsHandler {
    on_requests: EventFn,
    on_messages: EventFn,
    wants_requests: AtomicBool,
    wants_messages: AtomicBool,
    pending: Mutex<HashMap<u32, oneshot::Sender<Reply>>>,
    next_token: AtomicU32,
    slots: Arc<Semaphore>,
}

impl JsHandler {
    pub(crate) fn new(
        on_requests: Function<'_, Vec<JsIncoming>, Unknown<'static>>,
        on_messages: Function<'_, Vec<JsIncoming>, Unknown<'static>>,
    ) -> napi::Result<Self> {
        let build = |f: Function<'_, Vec<JsIncoming>, Unknown<'static>>| {
            f.build_threadsafe_function::<Delivery>()
                .callee_handled::<false>()
                .weak::<true>()
                .build_callback(|ctx| Ok(ctx.value.events))
        };
        Ok(JsHandler {
            on_requests: build(on_requests)?,
            on_messages: build(on_messages)?,
            wants_requests: AtomicBool::new(false),
            wants_messages: AtomicBool::new(false),
            pending: Mutex::default(),
            next_token: AtomicU32::new(1),
            slots: Arc::new(Semaphore::new(MAX_QUEUED_MESSAGES)),
        })
    }

    pub(crate) fn set_wants(&self, requests: bool, messages: bool) {
        self.wants_requests.store(requests, Ordering::Relaxed);
        self.wants_messages.store(messages, Ordering::Relaxed);
    }

    /// JS answered the request `token`. Unknown tokens (the requester gave up) are ignored.
    pub(crate) fn respond(&self, token: u32, reply: Reply) {
        let waiting = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
        if let Some(waiting) = waiting {
            let _ = waiting.send(reply);
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
    fn request(&self, request: Message, peer: Peer) -> BoxFuture<Reply> {
        let handler = self.0.clone();
        Box::pin(async move {
            if !handler.wants_requests.load(Ordering::Relaxed) {
                return Err("this peer has no request handler (onRequest)".to_owned());
            }
            let token = handler.next_token.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            handler
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(token, tx);
            let _guard = PendingGuard {
                handler: &handler,
                token,
            };
            let event = JsIncoming::new(request, Some(&peer), Some(token));
            let status = handler.on_requests.call(
                Delivery {
                    events: vec![event],
                    _slot: None,
                },
                ThreadsafeFunctionCallMode::NonBlocking,
            );
            if status != Status::Ok {
                return Err(format!("the JS handler cannot be called ({status})"));
            }
            rx.await.unwrap_or_else(|_| {
                Err("the transport closed before the handler answered".to_owned())
            })
        })
    }

    fn message(&self, message: Message, peer: Peer) -> BoxFuture<()> {
        let handler = self.0.clone();
        Box::pin(async move {
            let Ok(slot) = handler.slots.clone().acquire_owned().await else {
                return;
            };
            let event = JsIncoming::new(message, Some(&peer), None);
            handler.on_messages.call(
                Delivery {
                    events: vec![event],
                    _slot: Some(slot),
                },
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        })
    }

    fn wants_messages(&self) -> bool {
        self.0.wants_messages.load(Ordering::Relaxed)
    }
}
