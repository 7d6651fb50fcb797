//! Incoming one-way messages that wait to be pulled with `receive`: [`Inbox`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::error::Error;
use crate::handler::Peer;
use crate::message::Message;

/// Messages queued per (peer, channel) before that channel's stream stops being read.
/// QUIC flow control then slows the sender, so memory stays bounded.
pub const INBOX_CAPACITY_PER_CHANNEL: usize = 1024;

/// A bounded queue of received messages, filtered on the way out.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(Message, Peer)>,
    per_channel: HashMap<(SocketAddr, String), usize>,
    closed: bool,
}

impl Inbox {
    /// Queues a message; waits while its channel already has
    /// [`INBOX_CAPACITY_PER_CHANNEL`] waiting.
    pub(crate) async fn push(&self, message: Message, peer: Peer) -> Result<(), Error> {
        let key = (peer.address, message.channel_name().to_owned());
        let mut item = Some((message, peer));
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.closed {
                    return Err(Error::Closed);
                }
                let count = state.per_channel.entry(key.clone()).or_default();
                if *count < INBOX_CAPACITY_PER_CHANNEL {
                    *count += 1;
                    if let Some(item) = item.take() {
                        state.queue.push_back(item);
                    }
                    drop(state);
                    self.changed.notify_waiters();
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// The oldest message matching the filters, waiting for one if none is queued.
    ///
    /// Cancel-safe: a message is taken only when the future completes.
    pub(crate) async fn receive(
        &self,
        from: Option<SocketAddr>,
        channel: Option<&str>,
    ) -> Result<(Message, Peer), Error> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let found = state.queue.iter().position(|(message, peer)| {
                    from.is_none_or(|a| a == peer.address)
                        && channel.is_none_or(|c| c == message.channel_name())
                });
                if let Some(index) = found {
                    let (message, peer) = state.queue.remove(index).expect("index from position");
                    let key = (peer.address, message.channel_name().to_owned());
                    if let Some(count) = state.per_channel.get_mut(&key) {
                        *count -= 1;
                        if *count == 0 {
                            state.per_channel.remove(&key);
                        }
                    }
                    drop(state);
                    self.changed.notify_waiters();
                    return Ok((message, peer));
                }
                if state.closed {
                    return Err(Error::Closed);
                }
            }
            notified.await;
        }
    }

    /// Number of queued messages.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue
            .len()
    }

    /// Fails every waiting and future `receive` with [`Error::Closed`] and drops the queue.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        state.queue.clear();
        state.per_channel.clear();
        drop(state);
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn peer(port: u16) -> Peer {
        Peer {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            fingerprint: None,
        }
    }

    #[tokio::test]
    async fn filters_by_peer_and_channel_in_order() {
        let inbox = Inbox::default();
        inbox
            .push(Message::binary("a", vec![1]).with_channel("x"), peer(1))
            .await
            .unwrap();
        inbox
            .push(Message::binary("b", vec![2]).with_channel("y"), peer(2))
            .await
            .unwrap();
        inbox
            .push(Message::binary("c", vec![3]).with_channel("x"), peer(2))
            .await
            .unwrap();
        let (m, _) = inbox
            .receive(Some(peer(2).address), Some("x"))
            .await
            .unwrap();
        assert_eq!(m.kind, "c");
        let (m, _) = inbox.receive(None, None).await.unwrap();
        assert_eq!(m.kind, "a");
        let (m, p) = inbox.receive(None, Some("y")).await.unwrap();
        assert_eq!((m.kind.as_str(), p.address.port()), ("b", 2));
        assert_eq!(inbox.len(), 0);
    }

    #[tokio::test]
    async fn a_full_channel_waits_and_close_wakes_everyone() {
        let inbox = Arc::new(Inbox::default());
        for _ in 0..INBOX_CAPACITY_PER_CHANNEL {
            inbox
                .push(Message::binary("m", vec![]), peer(1))
                .await
                .unwrap();
        }
        let pusher = {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.push(Message::binary("late", vec![]), peer(1)).await })
        };
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished());
        inbox.receive(None, None).await.unwrap();
        pusher.await.unwrap().unwrap();
        let waiter = {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.receive(Some(peer(9).address), None).await })
        };
        tokio::task::yield_now().await;
        inbox.close();
        assert_eq!(waiter.await.unwrap().unwrap_err(), Error::Closed);
    }
}
