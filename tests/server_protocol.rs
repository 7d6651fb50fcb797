//! A peer that breaks the framing gets a protocol error on its stream; nobody else notices.

// Tests change one config field at a time from the defaults, which reads clearer here.
#![allow(clippy::field_reassign_with_default)]

mod common;

use std::sync::Arc;

use agentic_flow_quic::{ErrorCode, Message, ALPN};
use common::*;

/// A raw quinn client that skips certificate checks, to speak bad frames.
fn raw_client() -> quinn::Endpoint {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

#[tokio::test]
async fn garbage_on_a_request_stream_gets_a_protocol_error_frame() {
    let server = server(Recorder::default());
    let raw = raw_client();
    let conn = raw
        .connect(server.local_addr(), "localhost")
        .unwrap()
        .await
        .unwrap();

    for garbage in [
        &b"\x09\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"[..],
        b"\x01\x01\x00",
        b"\x01\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    ] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(garbage).await.unwrap();
        send.finish().unwrap();
        let (kind, reply) = agentic_flow_quic::read_frame(&mut recv, 1 << 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kind, agentic_flow_quic::FrameKind::Error);
        assert_eq!(
            reply.kind,
            ErrorCode::Protocol.as_str(),
            "{:?}",
            String::from_utf8_lossy(&reply.payload)
        );
    }
    // A frame that claims to be 4 GiB is refused by size without being read.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"\x01\x01\x00\x00\x00\x00\x00\x10\xff\xff\xff\xff")
        .await
        .unwrap();
    let (_, reply) = agentic_flow_quic::read_frame(&mut recv, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.kind, ErrorCode::MessageTooLarge.as_str());

    // Garbage on a channel stream: the stream is stopped; the connection lives on.
    let mut uni = conn.open_uni().await.unwrap();
    uni.write_all(b"\x01\x02\x00\x00garbage-garbage")
        .await
        .unwrap();
    let _ = uni.finish();

    // Other peers, and this connection, are unaffected.
    let client = client_for(&server);
    client
        .request(server.local_addr(), Message::binary("task", vec![5]))
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let frame = agentic_flow_quic::encode_to_vec(
        agentic_flow_quic::FrameKind::Request,
        &Message::binary("task", vec![9]).with_id("x"),
        1 << 20,
    )
    .unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let (kind, reply) = agentic_flow_quic::read_frame(&mut recv, 1 << 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kind, agentic_flow_quic::FrameKind::Response);
    assert_eq!(&reply.payload[..], &[9]);
    client.close().await;
    raw.close(0u32.into(), b"");
    server.close().await;
}
