//! One-way messages: ordering per channel, independent channels, pushes to dial-only
//! clients, and pulling with `receive`.

// Tests change one config field at a time from the defaults, which reads clearer here.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::time::Duration;

use agentic_flow_quic::{Message, QuicClient};
use common::*;

#[tokio::test]
async fn a_thousand_messages_arrive_in_order_while_another_channel_is_busy() {
    let recorder = Recorder {
        slow_channel: Some(("bulk".into(), Duration::from_millis(200))),
        ..Recorder::default()
    };
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
    let arrived = |channel: &str| {
        recorder
            .messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m.channel_name() == channel)
            .map(|(m, _)| m.payload.clone())
            .collect::<Vec<_>>()
    };
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
