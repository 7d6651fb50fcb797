//! Outgoing one-way messages: one ordered writer per (peer, channel).
//!
//! `send` enqueues synchronously, so messages leave in the order `send` was called even
//! before the connection exists. Each writer owns one unidirectional stream and writes
//! whatever has queued up in one go; channels have separate streams, so a busy channel
//! never holds up another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, FrameKind};
use crate::connection::Conn;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::message::Message;

/// Most messages written to a stream in one go: bounds the latency a large backlog adds
/// to the first of them.
const MAX_BATCH: usize = 256;

/// A channel's stream is finished after this long without messages (or the connection's
/// idle timeout, if shorter), returning its stream credit to the peer.
const CHANNEL_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

type Key = (SocketAddr, String);

/// Told how the writing of one message ended.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// One encoded message for a channel, and who to tell when QUIC has taken it.
pub(crate) struct OutgoingFrame {
    /// The channel's name; empty also names [`crate::DEFAULT_CHANNEL`].
    pub(crate) channel: String,
    pub(crate) head: Bytes,
    pub(crate) payload: Bytes,
    pub(crate) done: Completion,
}

struct Outgoing {
    head: Bytes,
    payload: Bytes,
    done: Completion,
}

/// The writers, by (peer, channel).
#[derive(Default)]
pub(crate) struct Outbox {
    writers: Mutex<HashMap<Key, Writer>>,
}

/// A channel's writer task: where its messages are queued, and its end.
struct Writer {
    queue: mpsc::UnboundedSender<Outgoing>,
    task: tokio::task::JoinHandle<()>,
}

/// Resolves when QUIC has taken every message of one `send`/`send_batch` call.
pub(crate) type Queued = Vec<oneshot::Receiver<Result<(), Error>>>;

/// Encodes messages as frames (ids filled in), or refuses all if one is invalid.
pub(crate) fn encode_all(
    messages: Vec<Message>,
    limit: u64,
) -> Result<Vec<(String, Bytes, Bytes)>, Error> {
    messages
        .into_iter()
        .map(|mut message| {
            message.ensure_id();
            let (head, payload) = codec::encode(FrameKind::Message, &message, limit)?;
            Ok((message.channel_name().to_owned(), head, payload))
        })
        .collect()
}

/// Gives each frame a oneshot completion, returning the receivers.
pub(crate) fn with_oneshots(frames: Vec<(String, Bytes, Bytes)>) -> (Vec<OutgoingFrame>, Queued) {
    frames
        .into_iter()
        .map(|(channel, head, payload)| {
            let (tx, rx) = oneshot::channel();
            let done: Completion = Box::new(move |result| {
                let _ = tx.send(result);
            });
            (
                OutgoingFrame {
                    channel,
                    head,
                    payload,
                    done,
                },
                rx,
            )
        })
        .unzip()
}

impl Outbox {
    /// Queues encoded frames for `addr`, in order. Synchronous, so the order of calls is
    /// the order on the wire.
    pub(crate) fn enqueue(
        &self,
        endpoint: &Arc<Endpoint>,
        addr: SocketAddr,
        frames: Vec<OutgoingFrame>,
    ) {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        // The previous frame's channel and queue: consecutive frames mostly share one.
        let mut last: Option<(String, mpsc::UnboundedSender<Outgoing>)> = None;
        for OutgoingFrame {
            channel,
            head,
            payload,
            done,
        } in frames
        {
            let name = match channel.is_empty() {
                true => crate::DEFAULT_CHANNEL,
                false => &channel,
            };
            let writer = match last.take() {
                Some((seen, writer)) if seen == name => (seen, writer),
                _ => {
                    let key = (addr, name.to_owned());
                    let writer = writers.entry(key.clone()).or_insert_with(|| {
                        let (queue, rx) = mpsc::unbounded_channel();
                        let task =
                            endpoint
                                .writers
                                .spawn(run_writer(endpoint.clone(), key.clone(), rx));
                        Writer { queue, task }
                    });
                    (key.1, writer.queue.clone())
                }
            };
            let writer = &last.insert(writer).1;
            // A writer only exits after removing itself under this lock, or at shutdown;
            // then the message comes back here and is failed as closed.
            if let Err(mpsc::error::SendError(outgoing)) = writer.send(Outgoing {
                head,
                payload,
                done,
            }) {
                (outgoing.done)(Err(Error::Closed));
            }
        }
    }

    /// Removes the writer for `key` if nothing is queued for it. Returns whether it did.
    fn retire(&self, key: &Key, rx: &mpsc::UnboundedReceiver<Outgoing>) -> bool {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if rx.is_empty() {
            writers.remove(key);
            true
        } else {
            false
        }
    }

    /// Lets the writers of `addr`'s channels go: each writes what is queued, finishes its
    /// stream and waits (bounded) for the peer to acknowledge it, then ends. Returns
    /// their tasks; a later message to `addr` starts a new writer.
    pub(crate) fn detach(&self, addr: SocketAddr) -> Vec<tokio::task::JoinHandle<()>> {
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<Key> = writers.keys().filter(|k| k.0 == addr).cloned().collect();
        keys.iter()
            .filter_map(|key| writers.remove(key))
            .map(|writer| writer.task)
            .collect()
    }

    /// Drops every writer's queue handle (at close).
    pub(crate) fn clear(&self) {
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Waits for every message of one call: the first error, or `Ok`.
pub(crate) async fn settle(waits: Queued) -> Result<(), Error> {
    let mut result = Ok(());
    for wait in waits {
        let outcome = wait.await.unwrap_or(Err(Error::Closed));
        if result.is_ok() {
            result = outcome;
        }
    }
    result
}

async fn run_writer(endpoint: Arc<Endpoint>, key: Key, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let mut stream: Option<(Arc<Conn>, quinn::SendStream)> = None;
    let idle = CHANNEL_IDLE.min(endpoint.config.max_idle_timeout);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle, rx.recv()) => next,
            _ = endpoint.closed() => break,
        };
        match next {
            Ok(Some(first)) => batch.push(first),
            Ok(None) => break,
            Err(_) => {
                if endpoint.outbox.retire(&key, &rx) {
                    break;
                }
                continue;
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let written = write_batch(&endpoint, key.0, &mut stream, chunks_of(&batch)).await;
        if written.is_err() {
            stream = None;
        }
        let written = written.map_err(|e| endpoint.closed_or(e));
        for outgoing in batch.drain(..) {
            (outgoing.done)(written.clone());
        }
    }
    // Retired or closing: what is queued already goes out on the open stream; then the
    // stream is finished, and the writer waits (bounded) until the peer has acknowledged
    // all of it, so `close()` right after `send()` loses nothing.
    rx.close();
    let rest: Vec<Outgoing> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    match stream {
        Some((conn, mut send)) if conn.is_open() => {
            if !rest.is_empty() {
                let written = send
                    .write_all_chunks(&mut chunks_of(&rest))
                    .await
                    .map_err(|e| conn.explain(crate::connection::write_error(e)));
                for outgoing in rest {
                    (outgoing.done)(written.clone());
                }
            }
            if send.finish().is_ok() {
                let _ = tokio::time::timeout(crate::endpoint::CLOSE_GRACE, send.stopped()).await;
            }
        }
        _ => {
            for outgoing in rest {
                (outgoing.done)(Err(Error::Closed));
            }
        }
    }
}

/// Payloads below this are copied into a shared chunk with their neighbours; larger ones
/// are written as chunks of their own, without a copy.
const COALESCE_BELOW: usize = 16 * 1024;

/// The chunks that carry `batch`: consecutive small frames are joined into one chunk.
/// quinn keeps every written chunk until it is acknowledged and walks that list for each
/// packet it builds, so thousands of small chunks in flight cost more than copying them:
/// in the `oneway` benchmark (a window of 4,096 1 KiB messages, two chunks each), quinn's
/// `write_stream_frames` was a quarter of the sender's samples
/// (`bash bench/profile.sh quic client oneway`).
fn chunks_of(batch: &[Outgoing]) -> Vec<Bytes> {
    let small = |o: &Outgoing| o.payload.len() < COALESCE_BELOW;
    let joined_len = batch
        .iter()
        .map(|o| o.head.len() + if small(o) { o.payload.len() } else { 0 })
        .sum();
    // One allocation for all the joined chunks: `split` hands out its filled part.
    let mut joined = bytes::BytesMut::with_capacity(joined_len);
    let mut chunks = Vec::new();
    for outgoing in batch {
        if small(outgoing) {
            joined.extend_from_slice(&outgoing.head);
            joined.extend_from_slice(&outgoing.payload);
        } else {
            joined.extend_from_slice(&outgoing.head);
            chunks.push(joined.split().freeze());
            chunks.push(outgoing.payload.clone());
        }
    }
    if !joined.is_empty() {
        chunks.push(joined.freeze());
    }
    chunks
}

async fn write_batch(
    endpoint: &Arc<Endpoint>,
    addr: SocketAddr,
    stream: &mut Option<(Arc<Conn>, quinn::SendStream)>,
    mut chunks: Vec<Bytes>,
) -> Result<(), Error> {
    if !matches!(stream, Some((conn, _)) if conn.is_open()) {
        let conn = endpoint.connection(addr).await?;
        let send = conn.open_channel().await?;
        *stream = Some((conn, send));
    }
    let Some((conn, send)) = stream.as_mut() else {
        return Err(Error::Closed); // not reached: the stream was opened just above
    };
    let _busy = conn.in_flight();
    send.write_all_chunks(&mut chunks)
        .await
        .map_err(|e| conn.explain(crate::connection::write_error(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(head: &[u8], payload: Vec<u8>) -> Outgoing {
        Outgoing {
            head: Bytes::copy_from_slice(head),
            payload: Bytes::from(payload),
            done: Box::new(|_| {}),
        }
    }

    #[test]
    fn small_frames_share_chunks_and_large_payloads_keep_their_own() {
        let large = vec![7u8; COALESCE_BELOW];
        let batch = vec![
            outgoing(b"h1", vec![1; 100]),
            outgoing(b"h2", vec![2; 200]),
            outgoing(b"h3", large.clone()),
            outgoing(b"h4", Vec::new()),
            outgoing(b"h5", vec![5; 10]),
        ];
        let chunks = chunks_of(&batch);
        // h1+p1+h2+p2+h3 | p3 (the caller's bytes, not a copy) | h4+h5+p5
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].as_ptr(), batch[2].payload.as_ptr());
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let expected: Vec<u8> = batch
            .iter()
            .flat_map(|o| o.head.iter().chain(o.payload.iter()).copied())
            .collect();
        assert_eq!(joined, expected);
    }
}
