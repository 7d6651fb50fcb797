//! [`Responder`]: the stream a request's reply goes on, usable from any thread.

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_util::task::TaskTracker;

use crate::codec::{self, FrameKind};
use crate::connection::OpenRequest;
use crate::error::Error;
use crate::message::Message;

/// Where the reply to one request goes. [`Responder::respond`] writes it; the first
/// answer wins and later ones are ignored, as is an answer for a request whose requester
/// gave up or whose time ran out. When the last clone is dropped unanswered, the
/// requester gets a remote error saying so: a request is never left without an answer.
///
/// `respond` writes on the calling thread as far as QUIC flow control allows and
/// finishes in the background, so a thread that answers many requests in a row hands
/// them to quinn together, and quinn packs them into fewer datagrams than replies
/// written one by one from their own tasks.
#[derive(Debug, Clone)]
pub struct Responder(Arc<Slot>);

#[derive(Debug)]
struct Slot {
    stream: Mutex<Option<quinn::SendStream>>,
    /// Where a reply written from a drop (perhaps off the runtime) is finished.
    runtime: tokio::runtime::Handle,
    /// Keeps the request counted as open until it is answered.
    _open: OpenRequest,
    /// The request's id, given to the reply.
    id: String,
    /// This side's `max_message_bytes`: a larger reply is refused.
    limit: u64,
    tasks: TaskTracker,
}

impl Responder {
    /// Must be called within a tokio runtime.
    pub(crate) fn new(
        stream: quinn::SendStream,
        id: String,
        limit: u64,
        tasks: TaskTracker,
        open: OpenRequest,
    ) -> Self {
        Responder(Arc::new(Slot {
            stream: Mutex::new(Some(stream)),
            runtime: tokio::runtime::Handle::current(),
            _open: open,
            id,
            limit,
            tasks,
        }))
    }

    /// The id of the request being answered.
    pub fn request_id(&self) -> &str {
        &self.0.id
    }

    /// Answers the request: `Ok` is the reply (its id is set to the request's), `Err` is
    /// sent back as a remote error with this text. Returns false if the request was
    /// answered already. Must be called within a tokio runtime.
    pub fn respond(&self, outcome: Result<Message, String>) -> bool {
        self.answer(outcome.map_err(Error::Remote))
    }

    /// [`Responder::respond`] with any error (its code and text travel to the requester).
    pub(crate) fn answer(&self, outcome: Result<Message, Error>) -> bool {
        let Some(stream) = self.take() else {
            return false;
        };
        let frame = self.0.encode(outcome);
        spawn_polled(&self.0.tasks, write(stream, frame));
        true
    }

    /// Answers with a Response frame whose fields were checked (the Node binding's
    /// replies, which JS writes with the request's id): written as it is when it
    /// carries the request's id and is within the limit, and otherwise decoded and
    /// answered as [`Responder::respond`] does, which gives it the id or refuses it.
    #[cfg_attr(not(feature = "node"), allow(dead_code))] // used by the Node binding
    pub(crate) fn answer_frame(&self, head: Bytes, payload: Bytes) -> bool {
        debug_assert_eq!(head.get(1), Some(&(FrameKind::Response as u8)));
        let body = head.len().saturating_sub(codec::HEADER_LEN) + payload.len();
        let as_it_is =
            body as u64 <= self.0.limit && codec::head_id(&head) == Some(self.0.id.as_bytes());
        if !as_it_is {
            return self.answer(codec::head_message(&head, payload));
        }
        let Some(stream) = self.take() else {
            return false;
        };
        spawn_polled(&self.0.tasks, write(stream, Some((head, payload))));
        true
    }

    fn take(&self) -> Option<quinn::SendStream> {
        self.0
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Slot {
    /// The reply frame, or the error frame that replaces it.
    fn encode(&self, outcome: Result<Message, Error>) -> Option<(Bytes, Bytes)> {
        let id = &self.id;
        let outcome = outcome.and_then(|mut reply| {
            reply.id.clone_from(id);
            codec::encode(FrameKind::Response, &reply, self.limit).map_err(|e| match e {
                Error::MessageTooLarge { size, limit } => Error::RefusedByPeer(format!(
                    "the reply of {size} bytes exceeds the responder's limit of {limit} bytes"
                )),
                e => e,
            })
        });
        outcome
            .or_else(|error| {
                let mut message =
                    Message::binary(error.code().as_str(), error.wire_text().into_bytes());
                message.id.clone_from(id);
                codec::encode(FrameKind::Error, &message, u64::MAX)
            })
            .ok()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let stream = self
            .stream
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(stream) = stream {
            let frame = self.encode(Err(Error::Remote(
                "the handler finished without answering".into(),
            )));
            let _entered = self.runtime.enter();
            spawn_polled(&self.tasks, write(stream, frame));
        }
    }
}

async fn write(mut stream: quinn::SendStream, frame: Option<(Bytes, Bytes)>) {
    if let Some((head, payload)) = frame {
        if stream.write_all_chunks(&mut [head, payload]).await.is_ok() {
            let _ = stream.finish();
        }
    }
}

/// Polls `work` once on the calling thread and spawns it on `tasks` only if it is not
/// done.
///
/// Writing to a QUIC stream wakes quinn's connection driver. Work that each of many
/// tasks does in turn wakes the driver after each of them (tokio runs the woken driver
/// next), and every write leaves in a datagram of its own. Polled here, a caller that
/// starts many writes in a row finishes them all before the driver runs, so they leave
/// together. The spawned task polls again at once, re-registering every waker with
/// itself. Must be called within a tokio runtime.
pub(crate) fn spawn_polled(tasks: &TaskTracker, work: impl Future<Output = ()> + Send + 'static) {
    let mut work = Box::pin(work);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if work.as_mut().poll(&mut cx).is_pending() {
        tasks.spawn(work);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use crate::codec::{self, FrameKind, WireFrame};
    use crate::config::trusting;
    use crate::handler::{BoxFuture, FrameHandler, Handler, Peer};
    use crate::{ErrorCode, Message, QuicClient, QuicServer, Responder, TransportConfig};

    /// Answers each request with a Response frame of its own making: the request's
    /// payload, and the id the request's type asks for ("same": the request's, "other":
    /// another), or a payload over the server's limit ("big").
    struct Frames;

    impl FrameHandler for Frames {
        fn answer_frame(&self, request: WireFrame, _peer: Peer, responder: Responder) {
            let id = request.id().to_owned();
            let request = request.into_message().unwrap();
            let mut reply = Message::binary("response", request.payload.clone());
            reply.metadata = Some(bytes::Bytes::from_static(b"{\"m\":1}"));
            reply.id = match request.kind.as_str() {
                "other" => "not-the-request's".into(),
                _ => id,
            };
            if request.kind == "big" {
                reply.payload = vec![1u8; 4096].into();
            }
            let (head, payload) = codec::encode(FrameKind::Response, &reply, u64::MAX).unwrap();
            assert!(responder.answer_frame(head.clone(), payload.clone()));
            assert!(!responder.answer_frame(head, payload), "answered twice");
        }
    }

    impl Handler for Frames {
        fn request(&self, _request: Message, _peer: Peer) -> BoxFuture<Result<Message, String>> {
            Box::pin(async { Err("requests come as frames".to_owned()) })
        }

        fn message(&self, _message: Message, _peer: Peer) -> BoxFuture<()> {
            Box::pin(async {})
        }
    }

    async fn ask(
        client: &QuicClient,
        addr: SocketAddr,
        kind: &str,
    ) -> Result<Message, crate::Error> {
        let request = Message::binary(kind, b"ping".to_vec()).with_id(format!("id-{kind}"));
        client.request(addr, request).await
    }

    #[tokio::test]
    async fn a_reply_frame_goes_out_with_the_request_id_and_within_the_limit() {
        let config = TransportConfig {
            max_message_bytes: 1024,
            ..TransportConfig::default()
        };
        let server = QuicServer::bind_frames(config, Frames).unwrap();
        let client = QuicClient::new(trusting(&server.fingerprint())).unwrap();
        let addr = server.local_addr();
        for kind in ["same", "other"] {
            let reply = ask(&client, addr, kind).await.unwrap();
            assert_eq!(reply.id, format!("id-{kind}"), "{kind}");
            assert_eq!(&reply.payload[..], b"ping");
            assert_eq!(reply.metadata.as_deref(), Some(&b"{\"m\":1}"[..]));
        }
        let refused = match ask(&client, addr, "big").await {
            Ok(reply) => panic!("a reply of {} bytes got through", reply.payload.len()),
            Err(e) => e,
        };
        assert_eq!(refused.code(), ErrorCode::MessageTooLarge, "{refused}");
        assert!(
            refused.to_string().contains("responder's limit"),
            "{refused}"
        );
        client.close().await;
        server.close().await;
    }
}
