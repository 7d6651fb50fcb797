//! 0-RTT (`TransportConfig::zero_rtt`): a reconnect's first requests leave with its first
//! packet; refused 0-RTT data is sent again; one-way messages never travel in 0-RTT.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use agentic_flow_quic::{Identity, Message, QuicClient, QuicServer, TransportConfig};
use common::{eventually, trusting, Recorder};

/// Connections idle this long close, so that the next request dials again.
const IDLE: Duration = Duration::from_millis(300);

fn config(zero_rtt: bool) -> TransportConfig {
    TransportConfig {
        zero_rtt,
        max_idle_timeout: IDLE,
        ..TransportConfig::default()
    }
}

fn server(zero_rtt: bool, handler: Recorder) -> QuicServer {
    QuicServer::bind(config(zero_rtt), handler).unwrap()
}

fn client_config_for(server: &QuicServer) -> TransportConfig {
    TransportConfig {
        zero_rtt: true,
        max_idle_timeout: IDLE,
        ..trusting(server)
    }
}

fn client_for(server: &QuicServer) -> QuicClient {
    QuicClient::new(client_config_for(server)).unwrap()
}

/// Waits until the client's connection has closed for idleness.
async fn until_idle(client: &QuicClient) {
    assert!(
        eventually(Duration::from_secs(10), || client
            .connection_stats()
            .is_empty())
        .await,
        "the idle connection did not close"
    );
}

async fn echo(client: &QuicClient, addr: std::net::SocketAddr, text: &str) {
    let reply = client
        .request(addr, Message::binary("echo", text.as_bytes().to_vec()))
        .await
        .unwrap();
    assert_eq!(&reply.payload[..], text.as_bytes());
}

/// Whether the client's one connection took requests in 0-RTT (false while it has
/// none, or several).
fn zero_rtt(client: &QuicClient) -> bool {
    match &client.connection_stats()[..] {
        [one] => one.zero_rtt,
        _ => false,
    }
}

/// Whether `recorder` gets one one-way message within 5 s.
async fn one_message_arrives(recorder: &Recorder) -> bool {
    eventually(Duration::from_secs(5), || {
        recorder.messages.lock().unwrap().len() == 1
    })
    .await
}

/// A UDP socket on `addr`, once the listener that had it has let it go.
async fn bind_when_free(addr: std::net::SocketAddr) -> std::net::UdpSocket {
    for _ in 0..100 {
        if let Ok(socket) = std::net::UdpSocket::bind(addr) {
            return socket;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{addr} stayed in use")
}

#[tokio::test]
async fn a_reconnect_sends_its_first_requests_in_0rtt() {
    let server = server(true, Recorder::default());
    let addr = server.local_addr();
    let client = client_for(&server);
    echo(&client, addr, "first").await;
    assert!(
        !zero_rtt(&client),
        "a first connection has no session to resume"
    );
    // Several requests at once, in the first flight. They go in 0-RTT only if written
    // before the server's first answer is read, which a loaded machine can delay: a few
    // reconnects are allowed for one to show it.
    let mut used = false;
    for _ in 0..5 {
        until_idle(&client).await;
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { echo(&client, addr, &format!("again {i}")).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        // Read once the handshake is done (the replies may come first).
        used = eventually(Duration::from_millis(150), || zero_rtt(&client)).await;
        if used {
            break;
        }
    }
    assert!(used, "no reconnect used 0-RTT");
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn after_disconnect_the_next_request_resumes_in_0rtt() {
    let server = server(true, Recorder::default());
    let addr = server.local_addr();
    let client = client_for(&server);
    echo(&client, addr, "first").await;
    let mut used = false;
    for _ in 0..5 {
        // The session tickets come after the handshake's end; give them time to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(client.disconnect(addr).await.unwrap());
        echo(&client, addr, "again").await;
        used = eventually(Duration::from_millis(150), || zero_rtt(&client)).await;
        if used {
            break;
        }
    }
    assert!(used, "no reconnect after disconnect() used 0-RTT");
    client.close().await;
    server.close().await;
}

#[tokio::test]
async fn without_0rtt_on_the_server_a_reconnect_makes_a_full_handshake() {
    let server = server(false, Recorder::default());
    let addr = server.local_addr();
    let client = client_for(&server);
    echo(&client, addr, "first").await;
    until_idle(&client).await;
    echo(&client, addr, "again").await;
    assert!(!zero_rtt(&client));
    client.close().await;
    server.close().await;
}

/// A listener on `addr` (any free port if `None`) with `identity`: each one binds with
/// a session cache of its own, so it refuses 0-RTT data resuming another's sessions.
fn server_as(
    identity: &Identity,
    addr: Option<std::net::SocketAddr>,
    handler: Recorder,
) -> QuicServer {
    QuicServer::bind(
        TransportConfig {
            identity: Some(identity.clone()),
            listen: addr,
            ..config(true)
        },
        handler,
    )
    .unwrap()
}

/// A client holding a session of a listener that has closed, and a new listener on the
/// same port with the same certificate, which never issued that session.
async fn server_without_the_session(recorder: Recorder) -> (QuicClient, QuicServer) {
    let identity = Identity::generate_self_signed(&["localhost"]).unwrap();
    let first = server_as(&identity, None, Recorder::default());
    let addr = first.local_addr();
    let client = client_for(&first);
    echo(&client, addr, "first").await;
    first.close().await;
    until_idle(&client).await;
    (client, server_as(&identity, Some(addr), recorder))
}

#[tokio::test]
async fn a_request_the_server_refused_in_0rtt_goes_again_once() {
    let recorder = Recorder::default();
    let (client, second) = server_without_the_session(recorder.clone()).await;
    let addr = second.local_addr();
    echo(&client, addr, "retried").await;
    assert!(
        !zero_rtt(&client),
        "the server took 0-RTT data it cannot have"
    );
    assert_eq!(
        recorder.completed.load(Ordering::SeqCst),
        1,
        "the handler ran once"
    );
    client.close().await;
    second.close().await;
}

#[tokio::test]
async fn a_one_way_message_is_not_lost_with_refused_0rtt_data() {
    let recorder = Recorder::default();
    let (client, second) = server_without_the_session(recorder.clone()).await;
    let addr = second.local_addr();
    // Sent while the reconnect is in 0-RTT: it waits for the handshake instead.
    client
        .send(addr, Message::binary("note", &b"kept"[..]))
        .await
        .unwrap();
    assert!(
        one_message_arrives(&recorder).await,
        "the one-way message was lost"
    );
    client.close().await;
    second.close().await;
}

#[tokio::test]
async fn a_0rtt_reconnect_to_a_server_that_has_gone_fails_to_connect_in_time() {
    let server = server(true, Recorder::default());
    let addr = server.local_addr();
    // Well below the idle timeout, which would otherwise end the handshake first.
    let connect_timeout = Duration::from_millis(100);
    let client = QuicClient::new(TransportConfig {
        connect_timeout,
        ..client_config_for(&server)
    })
    .unwrap();
    echo(&client, addr, "first").await;
    server.close().await;
    until_idle(&client).await;
    // The port swallows what it is sent: no handshake, no error.
    let _silent = bind_when_free(addr).await;
    let started = std::time::Instant::now();
    let (request, send) = tokio::join!(
        client.request(addr, Message::binary("echo", &b"lost"[..])),
        client.send(addr, Message::binary("note", &b"lost"[..])),
    );
    for outcome in [request.map(|_| ()), send] {
        assert!(
            matches!(outcome, Err(agentic_flow_quic::Error::Connect { .. })),
            "{outcome:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    client.close().await;
}

#[tokio::test]
async fn a_listener_with_0rtt_can_push_to_the_agents_connected_to_it() {
    let recorder = Recorder::default();
    let server = server(true, recorder.clone());
    let addr = server.local_addr();
    let agent = QuicClient::with_handler(client_config_for(&server), recorder.clone()).unwrap();
    echo(&agent, addr, "hello").await;
    let peer = recorder.peers.lock().unwrap()[0].address;
    let pusher = server.client();
    assert!(
        eventually(Duration::from_secs(2), || pusher.connection_stats().len()
            == 1)
        .await,
        "the listener lists the agent's connection"
    );
    pusher
        .send(peer, Message::binary("note", &b"pushed"[..]))
        .await
        .unwrap();
    assert!(
        one_message_arrives(&recorder).await,
        "the push did not arrive"
    );
    // On a reconnect in 0-RTT, the listener's connection says so too.
    let mut seen = false;
    for _ in 0..5 {
        until_idle(&agent).await;
        echo(&agent, addr, "again").await;
        seen = eventually(Duration::from_millis(150), || {
            pusher.connection_stats().iter().any(|c| c.zero_rtt)
        })
        .await;
        if seen {
            break;
        }
    }
    assert!(
        seen,
        "no accepted connection showed a request taken in 0-RTT"
    );
    agent.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_session_is_offered_only_to_the_address_that_issued_it() {
    // The client holds a session of A. Were it offered to another address B, B could
    // pass the first flight, early data and all, on to A, which would run it.
    let recorder = Recorder::default();
    let a = server(true, recorder.clone());
    let client = QuicClient::new(TransportConfig {
        connect_timeout: Duration::from_millis(200),
        ..client_config_for(&a)
    })
    .unwrap();
    echo(&client, a.local_addr(), "for A").await;
    let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = relay.local_addr().unwrap();
    relay
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let to = a.local_addr();
    let relaying = std::thread::spawn(move || {
        let (mut buf, started) = ([0u8; 2048], std::time::Instant::now());
        while started.elapsed() < Duration::from_secs(1) {
            if let Ok((n, from)) = relay.recv_from(&mut buf) {
                if from != to {
                    let _ = relay.send_to(&buf[..n], to);
                }
            }
        }
    });
    let outcome = client
        .request(b, Message::binary("echo", &b"for B"[..]))
        .await;
    assert!(outcome.is_err(), "{outcome:?}");
    relaying.join().unwrap();
    assert_eq!(
        recorder.completed.load(Ordering::SeqCst),
        1,
        "A ran a request sent to B"
    );
    client.close().await;
    a.close().await;
}
