//! Criterion benchmarks of the Rust core on loopback.
//!
//! `cargo bench --no-default-features --bench core` (CI compiles them with `--no-run`).

use std::time::Duration;

use agentic_flow_quic::{
    decode, encode_to_vec, parse_fingerprint, BoxFuture, FrameKind, Handler, Message, Peer,
    QuicClient, QuicServer, TransportConfig,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

struct Echo;

impl Handler for Echo {
    fn request(&self, request: Message, _peer: Peer) -> BoxFuture<Result<Message, String>> {
        Box::pin(async move { Ok(Message::binary("result", request.payload)) })
    }
    fn message(&self, _message: Message, _peer: Peer) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn pair(rt: &tokio::runtime::Runtime) -> (QuicServer, QuicClient) {
    rt.block_on(async {
        let server = QuicServer::bind(TransportConfig::default(), Echo).expect("bind");
        let mut config = TransportConfig::default();
        config
            .trust
            .pins
            .push(parse_fingerprint(&server.fingerprint()).expect("pin"));
        let client = QuicClient::new(config).expect("client");
        client.connect(server.local_addr()).await.expect("connect");
        (server, client)
    })
}

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in [64usize, 1024, 65536] {
        let message = Message::binary("task", vec![7u8; size])
            .with_id("id-1")
            .with_channel("jobs");
        let encoded = encode_to_vec(FrameKind::Request, &message, u64::MAX).expect("encode");
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("encode", format!("size_{size}")),
            &message,
            |b, m| b.iter(|| encode_to_vec(FrameKind::Request, m, u64::MAX).expect("encode")),
        );
        group.bench_with_input(
            BenchmarkId::new("decode", format!("size_{size}")),
            &encoded,
            |b, e| b.iter(|| decode(e, u64::MAX).expect("decode")),
        );
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let (server, client) = pair(&rt);
    let addr = server.local_addr();
    let mut group = c.benchmark_group("request");
    group.measurement_time(Duration::from_secs(3));
    for size in [64usize, 1024, 65536] {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(
            BenchmarkId::new("round_trip", format!("size_{size}")),
            |b| {
                b.to_async(&rt).iter(|| {
                    let client = client.clone();
                    async move {
                        client
                            .request(addr, Message::binary("task", vec![1u8; size]))
                            .await
                            .expect("reply")
                    }
                })
            },
        );
    }
    group.finish();
    rt.block_on(async {
        client.close().await;
        server.close().await;
    });
}

fn handshake(c: &mut Criterion) {
    let rt = runtime();
    let (server, _) = pair(&rt);
    let pin = parse_fingerprint(&server.fingerprint()).expect("pin");
    let mut group = c.benchmark_group("connect");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("handshake", |b| {
        b.to_async(&rt).iter(|| {
            let addr = server.local_addr();
            async move {
                let mut config = TransportConfig::default();
                config.trust.pins.push(pin);
                let client = QuicClient::new(config).expect("client");
                client.connect(addr).await.expect("connect");
                client.close().await;
            }
        })
    });
    group.finish();
}

criterion_group!(benches, frames, round_trip, handshake);
criterion_main!(benches);
