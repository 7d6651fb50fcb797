//! What a transport does with incoming requests and messages: [`Handler`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::codec::WireFrame;
use crate::message::Message;
use crate::reply::Responder;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Who sent a request or message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's address as seen from here. A listener can reply to it, or push to it with
    /// `send`, over the connection the peer opened.
    pub address: SocketAddr,
    /// `sha256/…` of the certificate the peer presented, if any (mutual TLS).
    pub fingerprint: Option<Arc<str>>,
}

/// Receives what peers send. Implementations must be cheap to call: each call runs on the
/// connection's task, and a slow [`Handler::message`] slows that channel (backpressure).
pub trait Handler: Send + Sync + 'static {
    /// Answers a request. `Ok` is the reply (its id is set to the request's); `Err` is
    /// sent back as a remote error with this text.
    fn request(&self, request: Message, peer: Peer) -> BoxFuture<Result<Message, String>>;

    /// Answers a request through `responder` instead of by returning the reply, for
    /// handlers that answer from elsewhere (another thread, a queue, out of order). The
    /// transport answers the requester with a remote error when the returned future has
    /// not completed within the request timeout; a handler that keeps the responder past
    /// its future bounds the wait itself. A responder dropped unanswered answers with a
    /// remote error too.
    ///
    /// The default calls [`Handler::request`] and responds with its outcome.
    fn answer(&self, request: Message, peer: Peer, responder: Responder) -> BoxFuture<()> {
        let reply = self.request(request, peer);
        Box::pin(async move {
            responder.respond(reply.await);
        })
    }

    /// Takes a one-way message. Messages of one channel are delivered in order, one at a
    /// time: the next is read once the returned future completes.
    fn message(&self, message: Message, peer: Peer) -> BoxFuture<()>;

    /// Whether [`Handler::message`] takes one-way messages now. When it returns false,
    /// messages are queued for [`crate::QuicClient::receive`] instead.
    fn wants_messages(&self) -> bool {
        true
    }
}

/// A handler that takes each request as the frame it arrived in, rather than decoded
/// into a [`Message`]: the Node binding, which hands requests to JS as frames, so a
/// request is neither decoded nor encoded again on its way through (the replies JS
/// writes go back the same way: [`Responder::answer_frame`]). A transport made with one
/// calls it instead of [`Handler::answer`]. It must hand the request on at once: no
/// task waits for it, and `responder` is all that answers the requester.
pub(crate) trait FrameHandler: Send + Sync + 'static {
    /// Takes a Request frame (its fields checked) from `peer`.
    fn answer_frame(&self, request: WireFrame, peer: Peer, responder: Responder);
}

/// A handler that answers no requests and leaves every message to `receive`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHandler;

impl Handler for NoHandler {
    fn request(&self, _request: Message, _peer: Peer) -> BoxFuture<Result<Message, String>> {
        Box::pin(async { Err("this peer does not handle requests".to_owned()) })
    }

    fn message(&self, _message: Message, _peer: Peer) -> BoxFuture<()> {
        Box::pin(async {})
    }

    fn wants_messages(&self) -> bool {
        false
    }
}
