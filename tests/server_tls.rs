//! Trust: pins, roots, no trust, mutual TLS; a failed handshake leaves the server up.

// Tests change one config field at a time from the defaults, which reads clearer here.
#![allow(clippy::field_reassign_with_default)]

mod common;

use agentic_flow_quic::{
    parse_fingerprint, ErrorCode, Identity, Message, QuicClient, QuicServer, TransportConfig,
    DEV_CERT_NAMES,
};
use common::*;

#[tokio::test]
async fn a_dial_without_any_trust_setting_fails_with_tls() {
    let server = server(Recorder::default());
    let client = QuicClient::new(TransportConfig::default()).unwrap();
    let err = client
        .request(server.local_addr(), Message::binary("task", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Tls, "{err}");
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_wrong_pin_fails_with_tls_and_the_server_keeps_accepting() {
    let server = server(Recorder::default());
    let stranger = Identity::generate_self_signed(&DEV_CERT_NAMES).unwrap();
    let mut config = TransportConfig::default();
    config
        .trust
        .pins
        .push(parse_fingerprint(&stranger.fingerprint()).unwrap());
    let client = QuicClient::new(config).unwrap();
    let err = client
        .request(server.local_addr(), Message::binary("task", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Tls, "{err}");
    assert!(err.to_string().contains("pinned"), "{err}");
    let good = client_for(&server);
    good.request(server.local_addr(), Message::binary("task", vec![]))
        .await
        .unwrap();
    for c in [client, good] {
        c.close().await;
    }
    server.close().await;
}

#[tokio::test]
async fn a_root_certificate_verifies_the_server_and_its_name() {
    let identity = Identity::generate_self_signed(&DEV_CERT_NAMES).unwrap();
    let mut config = TransportConfig::default();
    config.identity = Some(identity.clone());
    let server = server_with(config, Recorder::default());
    let mut trusting = TransportConfig::default();
    trusting.trust.roots = identity.chain().to_vec();
    let client = QuicClient::new(trusting.clone()).unwrap();
    client
        .request(server.local_addr(), Message::binary("task", vec![]))
        .await
        .unwrap();

    trusting.server_name = "other.example".into();
    let wrong_name = QuicClient::new(trusting).unwrap();
    let err = wrong_name
        .request(server.local_addr(), Message::binary("task", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Tls, "{err}");
    for c in [client, wrong_name] {
        c.close().await;
    }
    server.close().await;
}

#[tokio::test]
async fn mutual_tls_admits_pinned_clients_only_and_reports_their_fingerprint() {
    let admitted = Identity::generate_self_signed(&DEV_CERT_NAMES).unwrap();
    let recorder = Recorder::default();
    let mut config = TransportConfig::default();
    config.require_client_cert = true;
    config
        .trust
        .pins
        .push(parse_fingerprint(&admitted.fingerprint()).unwrap());
    let server: QuicServer = server_with(config, recorder.clone());

    let mut good = trusting(&server);
    good.identity = Some(admitted.clone());
    let good = QuicClient::new(good).unwrap();
    good.request(server.local_addr(), Message::binary("task", vec![]))
        .await
        .unwrap();
    let peer = recorder.peers.lock().unwrap()[0].clone();
    assert_eq!(
        peer.fingerprint.as_deref(),
        Some(admitted.fingerprint().as_str())
    );

    let stranger = client_for(&server);
    let err = stranger
        .request(server.local_addr(), Message::binary("task", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Tls, "{err}");
    for c in [good, stranger] {
        c.close().await;
    }
    server.close().await;
}
