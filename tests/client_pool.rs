//! The connection pool: shared handshakes, eviction, re-dialling, statistics.

// Tests change one config field at a time from the defaults, which reads clearer here.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::time::Duration;

use agentic_flow_quic::{Message, QuicClient, QuicServer, TransportConfig};
use common::*;

/// A request that must succeed.
async fn task(client: &QuicClient, addr: std::net::SocketAddr) {
    client
        .request(addr, Message::binary("task", vec![]))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hundred_concurrent_first_requests_share_one_connection() {
    let server = server(Recorder::default());
    let client = client_for(&server);
    let addr = server.local_addr();
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .request(addr, Message::binary("task", vec![i as u8]))
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let stats = client.pool_stats();
    assert_eq!(stats.created, 1, "{stats:?}");
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert_eq!(stats.hits, 99, "{stats:?}");
    assert_eq!(stats.idle + stats.active, 1);
    let connections = client.connection_stats();
    assert_eq!(connections.len(), 1);
    assert_eq!(connections[0].remote_address, addr);
    assert!(connections[0].streams_opened >= 100);
    assert!(connections[0].bytes_sent > 0 && connections[0].bytes_received > 0);
    assert!(connections[0].rtt_ms > 0.0);
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn an_idle_connection_is_evicted_and_the_next_use_dials_again() {
    let mut config = TransportConfig::default();
    config.max_idle_timeout = Duration::from_millis(200);
    let server = server_with(config, Recorder::default());
    let mut client_config = trusting(&server);
    client_config.max_idle_timeout = Duration::from_millis(200);
    let client = QuicClient::new(client_config).unwrap();
    task(&client, server.local_addr()).await;
    assert!(
        eventually(Duration::from_secs(3), || client.pool_stats().closed == 1).await,
        "{:?}",
        client.pool_stats()
    );
    let stats = client.pool_stats();
    assert_eq!((stats.active, stats.idle), (0, 0));
    task(&client, server.local_addr()).await;
    assert_eq!(client.pool_stats().created, 2);
    assert_eq!(client.pool_stats().misses, 2);
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn keep_alive_holds_an_idle_connection_open() {
    let mut config = TransportConfig::default();
    config.max_idle_timeout = Duration::from_millis(200);
    let server = server_with(config, Recorder::default());
    let mut client_config = trusting(&server);
    client_config.max_idle_timeout = Duration::from_millis(200);
    client_config.keep_alive = Some(Duration::from_millis(50));
    let client = QuicClient::new(client_config).unwrap();
    client.connect(server.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stats = client.pool_stats();
    assert_eq!((stats.closed, stats.idle), (0, 1), "{stats:?}");
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_lost_connection_leaves_the_pool_and_is_redialled() {
    let server = server(Recorder::default());
    let addr = server.local_addr();
    let client = client_for(&server);
    task(&client, addr).await;
    server.close().await;
    assert!(eventually(Duration::from_secs(3), || client.pool_stats().closed == 1).await);

    // A new server on the same port, with a new certificate the client trusts.
    let mut config = TransportConfig::default();
    config.listen = Some(addr);
    config.identity = None;
    let again = QuicServer::bind(config, Recorder::default()).unwrap();
    let mut trusting_both = trusting(&again);
    trusting_both.trust.insecure_skip_verify = true;
    let other = QuicClient::new(trusting_both).unwrap();
    other
        .request(addr, Message::binary("task", vec![]))
        .await
        .unwrap();
    // The first client re-dials too (it pins the old certificate, so TLS now refuses).
    let err = client
        .request(addr, Message::binary("task", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), agentic_flow_quic::ErrorCode::Tls, "{err}");
    assert_eq!(client.pool_stats().misses, 2);
    for c in [client, other] {
        c.close().await;
    }
    again.close().await;
}

#[tokio::test]
async fn connection_stats_report_the_path_mtu_that_discovery_found() {
    let server = server(Recorder::default());
    let client = client_for(&server);
    task(&client, server.local_addr()).await;
    let mtu = || client.connection_stats().first().map_or(0, |c| c.mtu);
    // quinn starts at 1200 bytes and probes upwards after the handshake; loopback
    // carries far larger datagrams, so discovery raises it.
    assert!(
        eventually(Duration::from_secs(5), || mtu() > 1200).await,
        "mtu stayed at {}",
        mtu()
    );
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn disconnect_closes_the_connection_and_the_next_use_dials_again() {
    let server = server(Recorder::default());
    let addr = server.local_addr();
    let client = client_for(&server);
    assert!(
        !client.disconnect(addr).await.unwrap(),
        "nothing to close before the first use"
    );
    task(&client, addr).await;
    assert!(client.disconnect(addr).await.unwrap());
    assert!(client.connection_stats().is_empty());
    assert!(!client.disconnect(addr).await.unwrap(), "closed already");
    // The server sees the connection close.
    assert!(
        eventually(Duration::from_secs(3), || server
            .client()
            .connection_stats()
            .is_empty())
        .await
    );
    task(&client, addr).await;
    let stats = client.pool_stats();
    assert_eq!((stats.created, stats.misses), (2, 2), "{stats:?}");
    assert!(eventually(Duration::from_secs(3), || client.pool_stats().closed == 1).await);
    client.close().await;
    let err = client.disconnect(addr).await.unwrap_err();
    assert_eq!(err.code(), agentic_flow_quic::ErrorCode::Closed, "{err}");
    server.close().await;
}

#[tokio::test]
async fn a_request_in_flight_when_its_connection_is_disconnected_fails_as_lost() {
    let recorder = Recorder::default();
    let server = server(recorder.clone());
    let addr = server.local_addr();
    let client = client_for(&server);
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .request(addr, Message::binary("sleep", b"5000".to_vec()))
                .await
        })
    };
    assert!(
        eventually(Duration::from_secs(3), || recorder
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1)
        .await
    );
    assert!(client.disconnect(addr).await.unwrap());
    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(
        err.code(),
        agentic_flow_quic::ErrorCode::ConnectionLost,
        "{err}"
    );
    assert!(err.to_string().contains("disconnect()"), "{err}");
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn one_way_messages_sent_before_disconnect_are_delivered() {
    let recorder = Recorder {
        slow_channel: Some(("slow".into(), Duration::from_millis(20))),
        ..Recorder::default()
    };
    let server = server(recorder.clone());
    let addr = server.local_addr();
    let client = client_for(&server);
    for i in 0..10u8 {
        client
            .send(addr, Message::binary("note", vec![i]).with_channel("slow"))
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    assert!(client.disconnect(addr).await.unwrap());
    assert_eq!(recorder.messages.lock().unwrap().len(), 10);
    // Delivered because the peer confirmed it had read them, not because the grace
    // period ran out: the channel's stream was finished first.
    assert!(
        started.elapsed() < agentic_flow_quic::CLOSE_GRACE / 2,
        "{:?}",
        started.elapsed()
    );
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_message_sent_just_before_disconnect_goes_on_the_connection_it_closes() {
    let recorder = Recorder::default();
    let server = server(recorder.clone());
    let addr = server.local_addr();
    let client = client_for(&server);
    client.connect(addr).await.unwrap();
    // Queued when called; not yet written when disconnect() starts.
    let sent = client.send(addr, Message::binary("note", b"last".to_vec()));
    let started = std::time::Instant::now();
    assert!(client.disconnect(addr).await.unwrap());
    assert!(
        started.elapsed() < agentic_flow_quic::CLOSE_GRACE / 2,
        "{:?}",
        started.elapsed()
    );
    sent.await.unwrap();
    assert_eq!(recorder.messages.lock().unwrap().len(), 1);
    assert!(client.connection_stats().is_empty(), "no new connection");
    assert_eq!(client.pool_stats().created, 1);
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_disconnect_whose_caller_stops_waiting_still_closes_the_connection() {
    let server = server(Recorder::default());
    let addr = server.local_addr();
    let client = client_for(&server);
    // A channel stream, so that the disconnect has a goodbye to wait for.
    client
        .send(addr, Message::binary("note", vec![1]))
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_micros(1), client.disconnect(addr)).await;
    assert!(
        eventually(Duration::from_secs(3), || server
            .client()
            .connection_stats()
            .is_empty())
        .await,
        "the server still has the connection"
    );
    assert!(client.connection_stats().is_empty());
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_listener_disconnects_a_peer_that_dialled_it() {
    let server = server(Recorder::default());
    let addr = server.local_addr();
    let client = client_for(&server);
    task(&client, addr).await;
    let listener = server.client();
    assert!(
        eventually(Duration::from_secs(3), || listener.connection_stats().len()
            == 1)
        .await
    );
    let peer = listener.connection_stats()[0].remote_address;
    assert!(listener.disconnect(peer).await.unwrap());
    assert!(listener.connection_stats().is_empty());
    // The client's pooled connection closes with it, and its next request dials again.
    assert!(
        eventually(Duration::from_secs(3), || client
            .connection_stats()
            .is_empty())
        .await
    );
    task(&client, addr).await;
    assert_eq!(client.pool_stats().created, 2);
    client.close().await;
    server.close().await;
}
