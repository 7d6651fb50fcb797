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

struct Outgoing {
    head: Bytes,
    payload: Bytes,
    done: oneshot::Sender<Result<(), Error>>,
}

/// The writers, by (peer, channel).
#[derive(Default)]
pub(crate) struct Outbox {
    writers: Mutex<HashMap<Key, mpsc::UnboundedSender<Outgoing>>>,
}

/// Resolves when QUIC has taken every message of one `send`/`send_batch` call.
pub(crate) type Queued = Vec<oneshot::Receiver<Result<(), Error>>>;

impl Outbox {
    /// Encodes and queues `messages` for `addr`, in order.
    ///
    /// # Errors
    /// Nothing is queued when any message is invalid or too large.
    pub(crate) fn enqueue(
        &self,
        endpoint: &Arc<Endpoint>,
        addr: SocketAddr,
        messages: Vec<Message>,
    ) -> Result<Queued, Error> {
        let limit = endpoint.config.max_message_bytes;
        let mut encoded = Vec::with_capacity(messages.len());
        for mut message in messages {
            message.ensure_id();
            let (head, payload) = codec::encode(FrameKind::Message, &message, limit)?;
            encoded.push((message.channel_name().to_owned(), head, payload));
        }
        let mut waits = Vec::with_capacity(encoded.len());
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        for (channel, head, payload) in encoded {
            let (done, wait) = oneshot::channel();
            let key = (addr, channel);
            let writer = writers.entry(key.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                endpoint
                    .tasks
                    .spawn(run_writer(endpoint.clone(), key.clone(), rx));
                tx
            });
            // A writer only exits after removing itself under this lock, or at shutdown,
            // when the failed send drops `done` and the caller sees `Closed`.
            let _ = writer.send(Outgoing {
                head,
                payload,
                done,
            });
            waits.push(wait);
        }
        Ok(waits)
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
        let written = tokio::select! {
            written = write_batch(&endpoint, key.0, &mut stream, &batch) => written,
            _ = endpoint.closed() => Err(Error::Closed),
        };
        if written.is_err() {
            stream = None;
        }
        let written = written.map_err(|e| endpoint.closed_or(e));
        for outgoing in batch.drain(..) {
            let _ = outgoing.done.send(written.clone());
        }
    }
    if let Some((_, mut send)) = stream {
        let _ = send.finish();
    }
    rx.close();
    while let Ok(outgoing) = rx.try_recv() {
        let _ = outgoing.done.send(Err(Error::Closed));
    }
}

async fn write_batch(
    endpoint: &Arc<Endpoint>,
    addr: SocketAddr,
    stream: &mut Option<(Arc<Conn>, quinn::SendStream)>,
    batch: &[Outgoing],
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
    let mut chunks: Vec<Bytes> = Vec::with_capacity(batch.len() * 2);
    for outgoing in batch {
        chunks.push(outgoing.head.clone());
        if !outgoing.payload.is_empty() {
            chunks.push(outgoing.payload.clone());
        }
    }
    send.write_all_chunks(&mut chunks)
        .await
        .map_err(|e| conn.explain(crate::connection::write_error(e)))
}
