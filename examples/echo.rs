//! A server that answers every request with its payload, and a client that asks it once.
//!
//! Run: `cargo run --release --no-default-features --example echo`

use agentic_flow_quic::{
    parse_fingerprint, BoxFuture, Handler, Message, Peer, QuicClient, QuicServer, TransportConfig,
};

/// Replies with the request's payload; prints one-way messages.
struct Echo;

impl Handler for Echo {
    fn request(&self, request: Message, peer: Peer) -> BoxFuture<Result<Message, String>> {
        println!("server: {} from {}", request.kind, peer.address);
        Box::pin(async move { Ok(Message::binary("result", request.payload)) })
    }

    fn message(&self, message: Message, _peer: Peer) -> BoxFuture<()> {
        println!(
            "server: one-way {} on channel {}",
            message.kind,
            message.channel_name()
        );
        Box::pin(async {})
    }
}

#[tokio::main]
async fn main() -> Result<(), agentic_flow_quic::Error> {
    // A listener on a free loopback port, with a generated self-signed certificate.
    let server = QuicServer::bind(TransportConfig::default(), Echo)?;
    println!(
        "server: listening on {} as {}",
        server.local_addr(),
        server.fingerprint()
    );

    // The client trusts exactly that certificate.
    let mut config = TransportConfig::default();
    config
        .trust
        .pins
        .push(parse_fingerprint(&server.fingerprint())?);
    let client = QuicClient::new(config)?;

    let reply = client
        .request(
            server.local_addr(),
            Message::json("task", r#"{"question":42}"#),
        )
        .await?;
    println!(
        "client: reply {} = {}",
        reply.kind,
        String::from_utf8_lossy(&reply.payload)
    );

    client
        .send(
            server.local_addr(),
            Message::binary("heartbeat", vec![]).with_channel("health"),
        )
        .await?;
    println!("client: pool {:?}", client.pool_stats());

    client.close().await;
    server.close().await;
    Ok(())
}
