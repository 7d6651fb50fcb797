//! Criterion benchmarks of the Rust core on loopback.
//!
//! `cargo bench --no-default-features --bench core` (CI compiles them with `--no-run`);
//! add `-- --quick` for a fast pass, or a filter such as `-- requests/`.
//!
//! Client and server share one multi-threaded runtime, so on a small machine they
//! compete for the same cores.

use std::time::{Duration, Instant};

use agentic_flow_quic::{
    decode, encode_to_vec, parse_fingerprint, BoxFuture, FrameKind, Handler, Message, Peer,
    QuicClient, QuicServer, TransportConfig,
};
use bytes::Bytes;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use tokio::task::JoinSet;

/// Both sides accept messages this large, so that the 64 MiB bulk echo fits.
const MAX_MESSAGE_BYTES: u64 = 128 << 20;

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
        let config = TransportConfig {
            max_message_bytes: MAX_MESSAGE_BYTES,
            ..TransportConfig::default()
        };
        let server = QuicServer::bind(config.clone(), Echo).expect("bind");
        let mut config = config;
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
    close(&rt, server, client);
}

/// Batches of `concurrency` requests in flight at once on one pooled connection.
fn concurrent_requests(c: &mut Criterion) {
    let rt = runtime();
    let (server, client) = pair(&rt);
    let addr = server.local_addr();
    let mut group = c.benchmark_group("requests");
    group.warm_up_time(Duration::from_secs(1));
    for concurrency in [1usize, 64, 1024] {
        for size in [64usize, 1024, 65536] {
            // Batches of milliseconds get flat sampling and fewer samples, so that the
            // group stays within a minute or two.
            let batch_bytes = concurrency * size;
            let (mode, samples, seconds) = match (concurrency, batch_bytes) {
                (1, _) => (SamplingMode::Auto, 100, 3),
                (_, b) if b >= 32 << 20 => (SamplingMode::Flat, 10, 8),
                (_, b) if b >= 1 << 20 => (SamplingMode::Flat, 10, 3),
                _ => (SamplingMode::Flat, 30, 3),
            };
            group
                .sampling_mode(mode)
                .sample_size(samples)
                .measurement_time(Duration::from_secs(seconds));
            group.throughput(Throughput::Elements(concurrency as u64));
            let payload = Bytes::from(vec![1u8; size]);
            group.bench_function(
                BenchmarkId::new(format!("concurrency_{concurrency}"), format!("size_{size}")),
                |b| {
                    b.to_async(&rt).iter(|| {
                        let mut batch = JoinSet::new();
                        for _ in 0..concurrency {
                            let (client, payload) = (client.clone(), payload.clone());
                            batch.spawn(async move {
                                client.request(addr, Message::binary("task", payload)).await
                            });
                        }
                        async move {
                            for reply in batch.join_all().await {
                                reply.expect("reply");
                            }
                        }
                    })
                },
            );
        }
    }
    group.finish();
    close(&rt, server, client);
}

/// Batches of 1000 one-way messages on one channel; each batch waits until QUIC has
/// taken all of them (the send side only).
fn oneway(c: &mut Criterion) {
    const BATCH: usize = 1000;
    let rt = runtime();
    let (server, client) = pair(&rt);
    let addr = server.local_addr();
    let payload = Bytes::from(vec![2u8; 1024]);
    let mut group = c.benchmark_group("oneway");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("size_1024", |b| {
        b.to_async(&rt).iter(|| {
            // `send` queues when called, so the whole batch is queued before any await.
            let sent: Vec<_> = (0..BATCH)
                .map(|_| {
                    let message = Message::binary("event", payload.clone()).with_channel("bench");
                    client.send(addr, message)
                })
                .collect();
            async move {
                for done in sent {
                    done.await.expect("send");
                }
            }
        })
    });
    group.finish();
    close(&rt, server, client);
}

/// One 64 MiB echo per iteration; throughput counts both directions.
fn bulk(c: &mut Criterion) {
    const SIZE: usize = 64 << 20;
    let rt = runtime();
    let (server, client) = pair(&rt);
    let addr = server.local_addr();
    let payload = Bytes::from(vec![3u8; SIZE]);
    let mut group = c.benchmark_group("bulk");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Bytes(2 * SIZE as u64));
    group.bench_function(format!("size_{SIZE}"), |b| {
        b.to_async(&rt).iter(|| async {
            let reply = client
                .request(addr, Message::binary("task", payload.clone()))
                .await
                .expect("reply");
            assert_eq!(reply.payload.len(), SIZE);
        })
    });
    group.finish();
    close(&rt, server, client);
}

/// What finding the pooled connection costs: `connect` to an address already connected.
fn pool_lookup(c: &mut Criterion) {
    let rt = runtime();
    let (server, client) = pair(&rt);
    let addr = server.local_addr();
    let mut group = c.benchmark_group("pool");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    group.bench_function("lookup", |b| {
        b.to_async(&rt)
            .iter(|| async { client.connect(addr).await.expect("pooled") })
    });
    group.finish();
    close(&rt, server, client);
}

fn close(rt: &tokio::runtime::Runtime, server: QuicServer, client: QuicClient) {
    rt.block_on(async {
        client.close().await;
        server.close().await;
    });
}

/// A new connection: the handshake alone. Creating the client (which generates its own
/// certificate) and closing it are left out of the timing; closing waits out QUIC's
/// draining period (~3 PTO, tens of ms), so it runs in the background instead.
fn handshake(c: &mut Criterion) {
    let rt = runtime();
    let (server, client) = pair(&rt);
    let addr = server.local_addr();
    let pin = parse_fingerprint(&server.fingerprint()).expect("pin");
    let mut group = c.benchmark_group("connect");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("handshake", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut config = TransportConfig::default();
                config.trust.pins.push(pin);
                let fresh = QuicClient::new(config).expect("client");
                let started = Instant::now();
                fresh.connect(addr).await.expect("connect");
                total += started.elapsed();
                tokio::spawn(async move { fresh.close().await });
            }
            total
        })
    });
    group.finish();
    close(&rt, server, client);
}

criterion_group!(
    benches,
    frames,
    round_trip,
    concurrent_requests,
    oneway,
    bulk,
    pool_lookup,
    handshake
);
criterion_main!(benches);
