//! One-way messages: ordering per channel, independent channels, pushes to dial-only
//! clients, and pulling with `receive`.

// Tests change one config field at a time from the defaults, which reads clearer here.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::time::Duration;

use agentic_flow_quic::{Message, QuicClient};
use common::*;

/// The payloads that arrived on `channel`, in order.
fn payloads_on(recorder: &Recorder, channel: &str) -> Vec<bytes::Bytes> {
    recorder
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, _)| m.channel_name() == channel)
        .map(|(m, _)| m.payload.clone())
        .collect()
}

/// A server whose `bulk` channel is stuck in its handler for 200 ms per message.
fn slow_bulk() -> Recorder {
    Recorder {
        slow_channel: Some(("bulk".into(), Duration::from_millis(200))),
        ..Recorder::default()
    }
}

#[tokio::test]
async fn a_thousand_messages_arrive_in_order_while_another_channel_is_busy() {
    let recorder = slow_bulk();
    let server = server(recorder.clone());
    let client = client_for(&server);
    let addr = server.local_addr();
    // The bulk channel is stuck in its handler for 200 ms per message.
    let bulk: Vec<_> = (0..20)
        .map(|i| {
            client.send(
                addr,
                Message::binary("status", vec![i; 1000]).with_channel("bulk"),
            )
        })
        .collect();
    let ordered: Vec<_> = (0..1000u32)
        .map(|i| {
            client.send(
                addr,
                Message::binary("task", i.to_be_bytes().to_vec()).with_channel("jobs"),
            )
        })
        .collect();
    for sent in ordered {
        sent.await.unwrap();
    }
    let arrived = |channel: &str| payloads_on(&recorder, channel);
    assert!(eventually(Duration::from_secs(10), || arrived("jobs").len() == 1000).await);
    let jobs = arrived("jobs");
    for (i, payload) in jobs.iter().enumerate() {
        assert_eq!(
            &payload[..],
            &(i as u32).to_be_bytes()[..],
            "message {i} out of order"
        );
    }
    let bulk_done = arrived("bulk").len();
    assert!(
        bulk_done < 20,
        "the bulk channel was still busy ({bulk_done} of 20 done)"
    );
    drop(bulk);
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn one_batch_across_channels_keeps_them_independent_and_each_in_order() {
    let recorder = slow_bulk();
    let server = server(recorder.clone());
    let client = client_for(&server);
    let addr = server.local_addr();
    // One call whose channel changes at every message: bulk (stuck 200 ms in the
    // handler per message), the default channel unnamed, and by its name.
    let batch = (0..300u32)
        .map(|i| {
            let message = Message::binary("task", i.to_be_bytes().to_vec());
            match i % 3 {
                0 => message.with_channel("bulk"),
                1 => message,
                _ => message.with_channel(agentic_flow_quic::DEFAULT_CHANNEL),
            }
        })
        .collect();
    client.send_batch(addr, batch).await.unwrap();
    let arrived = |channel: &str| {
        payloads_on(&recorder, channel)
            .iter()
            .map(|p| u32::from_be_bytes(p[..].try_into().unwrap()))
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(10), || arrived("default").len() == 200).await);
    // Named or not, the default channel is one stream, in the order of the batch.
    let expected: Vec<u32> = (0..300).filter(|i| i % 3 != 0).collect();
    assert_eq!(arrived("default"), expected);
    let bulk_done = arrived("bulk").len();
    assert!(
        bulk_done < 100,
        "the default channel waited for the bulk channel ({bulk_done} of 100 done)"
    );
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_listener_pushes_to_a_dial_only_client_over_its_connection() {
    let recorder = Recorder::default();
    let server = server(recorder.clone());
    let client = client_for(&server);
    let addr = server.local_addr();
    client
        .request(addr, Message::binary("task", vec![1]))
        .await
        .unwrap();
    let peer = recorder.peers.lock().unwrap()[0].clone();
    assert_eq!(
        peer.address,
        client.connection_stats()[0]
            .remote_address
            .to_string()
            .parse::<std::net::SocketAddr>()
            .map(|_| peer.address)
            .unwrap()
    );

    // The server's client half sends to the peer's address: no new connection is made.
    let pusher = server.client();
    pusher
        .send(
            peer.address,
            Message::json("coordination", "{\"go\":true}").with_channel("ctl"),
        )
        .await
        .unwrap();
    let (message, from) = tokio::time::timeout(
        Duration::from_secs(5),
        client.receive(Some(addr), Some("ctl")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&message.payload[..], b"{\"go\":true}");
    assert_eq!(from.address, addr);
    assert_eq!(
        pusher.pool_stats().created,
        0,
        "the push reused the inbound connection"
    );
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn send_batch_keeps_order_and_refuses_an_oversized_member_whole() {
    let recorder = Recorder::default();
    let server = server(recorder.clone());
    let mut config = trusting(&server);
    config.max_message_bytes = 100;
    let client = QuicClient::new(config).unwrap();
    let addr = server.local_addr();
    let batch: Vec<Message> = (0..50u8)
        .map(|i| Message::binary("task", vec![i]))
        .collect();
    client.send_batch(addr, batch).await.unwrap();
    let bad = vec![
        Message::binary("task", vec![1]),
        Message::binary("task", vec![0; 500]),
    ];
    let err = client.send_batch(addr, bad).await.unwrap_err();
    assert_eq!(err.code(), agentic_flow_quic::ErrorCode::MessageTooLarge);
    assert!(
        eventually(Duration::from_secs(5), || recorder
            .messages
            .lock()
            .unwrap()
            .len()
            == 50)
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got: Vec<u8> = recorder
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|(m, _)| m.payload[0])
        .collect();
    assert_eq!(
        got,
        (0..50u8).collect::<Vec<_>>(),
        "nothing of the refused batch was sent"
    );
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn order_holds_when_an_idle_channel_stream_is_replaced_by_a_new_one() {
    // The receiver is slow, so the sender's idle stream is retired (after the 300 ms idle
    // timeout) while the receiver still has its messages; the next messages travel on a
    // new stream and must wait for the old one.
    let recorder = Recorder {
        slow_channel: Some(("jobs".into(), Duration::from_millis(150))),
        ..Recorder::default()
    };
    let mut config = agentic_flow_quic::TransportConfig::default();
    config.max_idle_timeout = Duration::from_millis(300);
    config.keep_alive = Some(Duration::from_millis(50));
    let server = server_with(config.clone(), recorder.clone());
    let mut client_config = trusting(&server);
    client_config.max_idle_timeout = config.max_idle_timeout;
    client_config.keep_alive = config.keep_alive;
    let client = QuicClient::new(client_config).unwrap();
    let addr = server.local_addr();
    for i in 0..6u8 {
        client
            .send(addr, Message::binary("task", vec![i]).with_channel("jobs"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 6..12u8 {
        client
            .send(addr, Message::binary("task", vec![i]).with_channel("jobs"))
            .await
            .unwrap();
    }
    let payloads = || {
        recorder
            .messages
            .lock()
            .unwrap()
            .iter()
            .map(|(m, _)| m.payload[0])
            .collect::<Vec<u8>>()
    };
    assert!(eventually(Duration::from_secs(10), || payloads().len() == 12).await);
    assert_eq!(payloads(), (0..12u8).collect::<Vec<_>>());
    let streams = client.connection_stats()[0].streams_opened;
    assert!(
        streams >= 2,
        "the idle stream was replaced ({streams} streams opened)"
    );
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn pushing_to_an_agent_that_left_gives_connection_lost() {
    let recorder = Recorder::default();
    let server = server(recorder.clone());
    let client = client_for(&server);
    client
        .request(server.local_addr(), Message::binary("task", vec![]))
        .await
        .unwrap();
    let agent = recorder.peers.lock().unwrap()[0].address;
    client.close().await;
    let pusher = server.client();
    assert!(
        eventually(Duration::from_secs(3), || pusher
            .connection_stats()
            .is_empty())
        .await
    );
    let err = pusher
        .send(agent, Message::binary("coordination", vec![]))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        agentic_flow_quic::ErrorCode::ConnectionLost,
        "{err}"
    );
    assert!(err.to_string().contains("disconnected"), "{err}");
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_right_after_sends_still_delivers_them() {
    let recorder = Recorder::default();
    let server = server(recorder.clone());
    let client = client_for(&server);
    let addr = server.local_addr();
    let sends: Vec<_> = (0..20_000u32)
        .map(|i| client.send(addr, Message::binary("task", i.to_be_bytes().repeat(256))))
        .collect();
    for sent in sends {
        sent.await.unwrap();
    }
    client.close().await;
    assert!(
        eventually(Duration::from_secs(10), || recorder
            .messages
            .lock()
            .unwrap()
            .len()
            == 20_000)
        .await,
        "received {} of 20000",
        recorder.messages.lock().unwrap().len()
    );
    server.close().await;
}
