//! Helpers shared by the integration tests: a loopback server with a scriptable handler.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentic_flow_quic::{
    parse_fingerprint, BoxFuture, Handler, Message, Peer, QuicClient, QuicServer, TransportConfig,
};

/// Echoes requests (`fail` → error, `sleep` → waits payload-as-ms first), records
/// messages, and counts concurrent requests.
#[derive(Default, Clone)]
pub struct Recorder {
    pub messages: Arc<Mutex<Vec<(Message, Peer)>>>,
    pub in_flight: Arc<AtomicUsize>,
    /// Requests whose handler ran to its end.
    pub completed: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    pub peers: Arc<Mutex<Vec<Peer>>>,
    /// Per-message delay for one channel, to make it busy.
    pub slow_channel: Option<(String, Duration)>,
}

impl Handler for Recorder {
    fn request(&self, request: Message, peer: Peer) -> BoxFuture<Result<Message, String>> {
        let me = self.clone();
        Box::pin(async move {
            me.peers.lock().unwrap().push(peer);
            let now = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            me.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let outcome = match request.kind.as_str() {
                "fail" => Err(format!(
                    "handler refused: {}",
                    String::from_utf8_lossy(&request.payload)
                )),
                "sleep" => {
                    let ms: u64 = String::from_utf8_lossy(&request.payload).parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(Message::binary("result", request.payload))
                }
                "big-reply" => Ok(Message::binary("result", vec![7u8; 4096])),
                _ => {
                    // Yield so that concurrent requests overlap in the handler.
                    tokio::task::yield_now().await;
                    let mut reply = request.clone();
                    reply.kind = "result".into();
                    Ok(reply)
                }
            };
            me.in_flight.fetch_sub(1, Ordering::SeqCst);
            me.completed.fetch_add(1, Ordering::SeqCst);
            outcome
        })
    }

    fn message(&self, message: Message, peer: Peer) -> BoxFuture<()> {
        let me = self.clone();
        Box::pin(async move {
            if let Some((channel, delay)) = &me.slow_channel {
                if message.channel_name() == channel {
                    tokio::time::sleep(*delay).await;
                }
            }
            me.messages.lock().unwrap().push((message, peer));
        })
    }
}

pub fn server_with(config: TransportConfig, handler: Recorder) -> QuicServer {
    QuicServer::bind(config, handler).expect("bind")
}

pub fn server(handler: Recorder) -> QuicServer {
    server_with(TransportConfig::default(), handler)
}

/// A client config that trusts `server` by its pinned fingerprint.
pub fn trusting(server: &QuicServer) -> TransportConfig {
    let mut config = TransportConfig::default();
    config
        .trust
        .pins
        .push(parse_fingerprint(&server.fingerprint()).unwrap());
    config
}

pub fn client_for(server: &QuicServer) -> QuicClient {
    QuicClient::new(trusting(server)).expect("client")
}

/// Waits until `check` holds, for at most `limit`.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
