//! Requests and replies through `QuicClient` against a loopback `QuicServer`.

// Tests change one config field at a time from the defaults, which reads clearer here.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use agentic_flow_quic::{Encoding, ErrorCode, Message, QuicClient, TransportConfig};
use bytes::Bytes;
use common::*;

#[tokio::test]
async fn a_reply_comes_back_byte_exact_on_the_requests_stream() {
    let server = server(Recorder::default());
    let client = client_for(&server);
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let mut request = Message::binary("task", payload.clone())
        .with_id("req-1")
        .with_channel("jobs");
    request.metadata = Some(Bytes::from_static(b"{\"priority\":1}"));
    let reply = client.request(server.local_addr(), request).await.unwrap();
    assert_eq!(reply.payload, payload);
    assert_eq!(reply.id, "req-1");
    assert_eq!(reply.kind, "result");
    assert_eq!(reply.metadata.as_deref(), Some(&b"{\"priority\":1}"[..]));

    let json = client
        .request(server.local_addr(), Message::json("task", "{\"a\":1}"))
        .await
        .unwrap();
    assert_eq!(json.encoding, Encoding::Json);
    assert!(!json.id.is_empty(), "an id is generated when absent");
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_failing_handler_gives_a_remote_error_with_its_text() {
    let server = server(Recorder::default());
    let client = client_for(&server);
    let err = client
        .request(
            server.local_addr(),
            Message::binary("fail", &b"no capacity"[..]),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Remote);
    assert_eq!(
        err.to_string(),
        "remote handler failed: handler refused: no capacity"
    );
    // The connection is fine afterwards.
    client
        .request(server.local_addr(), Message::binary("task", vec![1]))
        .await
        .unwrap();
    server.close().await;
    client.close().await;
}

#[tokio::test]
async fn a_slow_handler_times_out_and_later_requests_still_work() {
    let recorder = Recorder::default();
    let server = server(recorder.clone());
    let client = client_for(&server);
    let err = client
        .request_with_timeout(
            server.local_addr(),
            Message::binary("sleep", &b"2000"[..]),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    client
        .request(server.local_addr(), Message::binary("task", vec![2]))
        .await
        .unwrap();
    // The abandoned request's stream was stopped, so the server dropped its handler
    // instead of running it to the end.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        recorder.completed.load(Ordering::SeqCst),
        1,
        "only the second request completed"
    );
    server.close().await;
    client.close().await;
}

#[tokio::test]
async fn oversized_messages_are_refused_and_the_connection_survives() {
    let mut config = TransportConfig::default();
    config.max_message_bytes = 1024;
    let server = server_with(config, Recorder::default());
    let addr = server.local_addr();

    // Refused locally by the client's own limit, before anything is sent.
    let mut small = trusting(&server);
    small.max_message_bytes = 2048;
    let client = QuicClient::new(small).unwrap();
    let err = client
        .request(addr, Message::binary("task", vec![0; 4096]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MessageTooLarge);
    client
        .request(addr, Message::binary("task", vec![0; 10]))
        .await
        .unwrap();

    // Refused by the server's smaller limit: the error comes back on the same stream.
    let err = client
        .request(addr, Message::binary("task", vec![0; 1500]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MessageTooLarge, "{err}");
    client
        .request(addr, Message::binary("task", vec![0; 10]))
        .await
        .unwrap();

    // A reply over the client's limit.
    let mut tiny = trusting(&server);
    tiny.max_message_bytes = 1000;
    let picky = QuicClient::new(tiny).unwrap();
    let err = picky
        .request(addr, Message::binary("big-reply", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MessageTooLarge, "{err}");
    assert_eq!(client.pool_stats().created, 1);
    for c in [client, picky] {
        c.close().await;
    }
    server.close().await;
}

#[tokio::test]
async fn five_thousand_requests_over_a_hundred_streams_all_come_back() {
    let recorder = Recorder::default();
    let mut config = TransportConfig::default();
    config.max_concurrent_streams = 100;
    let server = server_with(config, recorder.clone());
    let mut client_config = trusting(&server);
    client_config.max_concurrent_streams = 100;
    let client = QuicClient::new(client_config).unwrap();
    let addr = server.local_addr();
    let calls = (0..5000u32).map(|i| {
        let client = client.clone();
        async move {
            let payload = i.to_be_bytes().repeat(16);
            let reply = client
                .request(addr, Message::binary("task", payload.clone()))
                .await?;
            assert_eq!(reply.payload, payload);
            Ok::<_, agentic_flow_quic::Error>(())
        }
    });
    let outcomes = tokio::time::timeout(Duration::from_secs(60), futures_join_all(calls))
        .await
        .unwrap();
    assert!(
        outcomes.iter().all(|o| o.is_ok()),
        "{:?}",
        outcomes.iter().find(|o| o.is_err())
    );
    let max = recorder.max_in_flight.load(Ordering::SeqCst);
    assert!(
        max <= 100,
        "at most 100 requests in the handler at once, saw {max}"
    );
    assert!(
        max > agentic_flow_quic::INITIAL_STREAMS as usize,
        "the stream allowance grew past its initial {} (saw {max})",
        agentic_flow_quic::INITIAL_STREAMS
    );
    client.close().await;
    server.close().await;
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_port_with_no_listener_gives_connect_within_the_timeout() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    drop(socket);
    let mut config = TransportConfig::default();
    config.trust.insecure_skip_verify = true;
    config.connect_timeout = Duration::from_millis(300);
    let client = QuicClient::new(config).unwrap();
    let start = std::time::Instant::now();
    let err = client
        .request(addr, Message::binary("task", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Connect, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    client.close().await;
}

/// What a relay does with the client's `n`th datagram (from 0): pass it on after this
/// long, or drop it (None).
type Uplink = fn(usize) -> Option<Duration>;

/// Relays datagrams between a client and `server`; the client's go as `uplink` says,
/// the server's go straight back. A client from a new address takes over (the count
/// starts again); datagrams from earlier clients (still closing) are dropped.
async fn relay(server: std::net::SocketAddr, uplink: Uplink) -> std::net::SocketAddr {
    let relay = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = relay.local_addr().unwrap();
    tokio::spawn(async move {
        let mut client: Option<std::net::SocketAddr> = None;
        let mut earlier = std::collections::HashSet::new();
        let mut sent = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = relay.recv_from(&mut buf).await else {
                return;
            };
            let datagram = buf[..n].to_vec();
            if from == server {
                if let Some(client) = client {
                    let _ = relay.send_to(&datagram, client).await;
                }
                continue;
            }
            if client != Some(from) {
                if earlier.contains(&from) {
                    continue;
                }
                if let Some(previous) = client.replace(from) {
                    earlier.insert(previous);
                }
                sent = 0;
            }
            sent += 1;
            if let Some(delay) = uplink(sent - 1) {
                let relay = relay.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = relay.send_to(&datagram, server).await;
                });
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_listener_waits_for_a_slow_handshake_the_client_already_finished() {
    // The listener's own connect timeout is short; the client's handshake ends before its
    // last message reaches the listener. The listener must not give up on it at its
    // connect timeout (the client counts itself connected), only at its idle timeout.
    let mut config = TransportConfig::default();
    config.connect_timeout = Duration::from_millis(200);
    let server = server_with(config, Recorder::default());
    // Every datagram of the client's after its first takes 600 ms.
    let relay = relay(server.local_addr(), |n| {
        Some(Duration::from_millis(if n == 0 { 0 } else { 600 }))
    })
    .await;
    let client = client_for(&server);
    client.connect(relay).await.unwrap();
    let reply = client
        .request(relay, Message::binary("task", &b"late"[..]))
        .await
        .unwrap();
    assert_eq!(reply.payload, Bytes::from_static(b"late"));
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn initial_rtt_sets_when_a_lost_first_handshake_packet_is_sent_again() {
    let server = server(Recorder::default());
    // The client's first datagram (its first Initial) is lost; the rest get through.
    let relay = relay(server.local_addr(), |n| (n > 0).then_some(Duration::ZERO)).await;
    let mut connect_times = Vec::new();
    for initial_rtt in [20, 400] {
        let mut config = trusting(&server);
        config.initial_rtt = Duration::from_millis(initial_rtt);
        let client = QuicClient::new(config).unwrap();
        let start = std::time::Instant::now();
        client.connect(relay).await.unwrap();
        connect_times.push(start.elapsed());
        client.close().await;
    }
    // quinn sends a lost handshake packet again after three times the initial RTT.
    assert!(
        connect_times[0] < Duration::from_millis(600),
        "{connect_times:?}"
    );
    assert!(
        connect_times[1] >= Duration::from_millis(1000),
        "{connect_times:?}"
    );
    server.close().await;
}

#[tokio::test]
async fn close_settles_every_call_in_flight_with_closed() {
    let server = server(Recorder::default());
    let client = client_for(&server);
    let addr = server.local_addr();
    client.connect(addr).await.unwrap();
    let pending: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .request(addr, Message::binary("sleep", &b"5000"[..]))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.receive(None, None).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    tokio::time::timeout(Duration::from_secs(5), client.close())
        .await
        .expect("close is bounded");
    for call in pending {
        assert_eq!(call.await.unwrap().unwrap_err().code(), ErrorCode::Closed);
    }
    assert_eq!(waiter.await.unwrap().unwrap_err().code(), ErrorCode::Closed);
    let after = client
        .request(addr, Message::binary("task", vec![]))
        .await
        .unwrap_err();
    assert_eq!(after.code(), ErrorCode::Closed);
    client.close().await; // twice is harmless
    server.close().await;
}

/// Answers requests of type "drop" by dropping the responder, the rest at once.
struct DroppingHandler;

impl agentic_flow_quic::Handler for DroppingHandler {
    fn request(
        &self,
        request: Message,
        _peer: agentic_flow_quic::Peer,
    ) -> agentic_flow_quic::BoxFuture<Result<Message, String>> {
        Box::pin(async move { Ok(Message::binary("result", request.payload)) })
    }

    fn answer(
        &self,
        request: Message,
        peer: agentic_flow_quic::Peer,
        responder: agentic_flow_quic::Responder,
    ) -> agentic_flow_quic::BoxFuture<()> {
        if request.kind == "drop" {
            drop(responder);
            return Box::pin(async {});
        }
        let reply = self.request(request, peer);
        Box::pin(async move {
            responder.respond(reply.await);
        })
    }

    fn message(
        &self,
        _message: Message,
        _peer: agentic_flow_quic::Peer,
    ) -> agentic_flow_quic::BoxFuture<()> {
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_responder_dropped_unanswered_answers_with_a_remote_error() {
    let server =
        agentic_flow_quic::QuicServer::bind(TransportConfig::default(), DroppingHandler).unwrap();
    let client = client_for(&server);
    let err = client
        .request(server.local_addr(), Message::binary("drop", vec![1]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Remote);
    assert!(err.to_string().contains("without answering"), "{err}");
    let reply = client
        .request(server.local_addr(), Message::binary("task", vec![2]))
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], &[2]);
    client.close().await;
    server.close().await;
}
