//! A benchmark peer for the Node harness (bench/): measures the pure-Rust core the way
//! the harness measures the Node transports. Usage is in `USAGE` below.
//!
//! The server prints `READY <port>`, then answers stdin lines: `stats` prints
//! `{"count":N,"firstNs":..,"lastNs":..}` (one-way messages received, CLOCK_MONOTONIC ns
//! of the first and last), `reset` zeroes them, `quit` or end of input stops it. The
//! client runs one scenario and prints one JSON line. Bad arguments exit with code 2.
//!
//! Build: `cargo build --release --no-default-features --example bench_peer`

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentic_flow_quic::{
    parse_peer_address, BoxFuture, Error, Handler, ListenOptions, Message, Peer, QuicClient,
    QuicServer, TlsOptions, TransportConfig, TransportOptions,
};
use bytes::Bytes;

/// Both sides accept messages this large, so that 64 MiB payloads fit.
const MAX_MESSAGE_BYTES: f64 = (128 << 20) as f64;
const WARM_UP: Duration = Duration::from_secs(1);

const USAGE: &str = "usage:
  bench_peer server --host H --port P --cert cert.pem --key key.pem [--runtime R]
  bench_peer client --host H --port P --ca cert.pem --scenario rps|rtt|bulk|connect|resume
                    [--seconds T] [--concurrency C] [--size BYTES] [--count N] [--runtime R]
  R: multi-thread (tokio's default, one worker per core; the Node binding's) or
     current-thread";

fn bad_usage(why: &str) -> ! {
    eprintln!("bench_peer: {why}\n{USAGE}");
    std::process::exit(2)
}

/// `--name value` pairs; each is taken once, and leftovers are an error.
struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Self {
        let mut map = HashMap::new();
        for pair in rest.chunks(2) {
            let name = pair[0]
                .strip_prefix("--")
                .unwrap_or_else(|| bad_usage(&format!("unexpected argument {:?}", pair[0])));
            let value = pair
                .get(1)
                .unwrap_or_else(|| bad_usage(&format!("--{name} needs a value")));
            if map.insert(name.to_owned(), value.clone()).is_some() {
                bad_usage(&format!("--{name} given twice"));
            }
        }
        Args(map)
    }

    fn required(&mut self, name: &str) -> String {
        self.0
            .remove(name)
            .unwrap_or_else(|| bad_usage(&format!("--{name} is required")))
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        match self.0.remove(name) {
            None => default,
            Some(text) => text
                .parse()
                .unwrap_or_else(|_| bad_usage(&format!("--{name} {text:?} is not a valid number"))),
        }
    }

    fn done(self) {
        if let Some(name) = self.0.keys().next() {
            bad_usage(&format!("unknown option --{name}"));
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rest) = argv.split_first().unwrap_or_else(|| bad_usage("no mode"));
    let mut args = Args::parse(rest);
    let mut runtime = match args.0.remove("runtime").as_deref() {
        None | Some("multi-thread") => tokio::runtime::Builder::new_multi_thread(),
        Some("current-thread") => tokio::runtime::Builder::new_current_thread(),
        Some(other) => bad_usage(&format!("unknown runtime {other:?}")),
    };
    let runtime = runtime.enable_all().build().unwrap_or_else(|e| {
        eprintln!("bench_peer: cannot start the tokio runtime: {e}");
        std::process::exit(1)
    });
    let outcome = runtime.block_on(async {
        match mode.as_str() {
            "server" => server(args).await,
            "client" => client(args).await,
            other => bad_usage(&format!("unknown mode {other:?}")),
        }
    });
    if let Err(e) = outcome {
        eprintln!("bench_peer: {e}");
        std::process::exit(1);
    }
}

/// The checked config; a bad option (unreadable PEM, bad host…) is bad input: exit 2.
fn config(options: TransportOptions) -> TransportConfig {
    let options = TransportOptions {
        max_message_bytes: Some(MAX_MESSAGE_BYTES),
        ..options
    };
    TransportConfig::try_from(options).unwrap_or_else(|e| {
        eprintln!("bench_peer: {e}");
        std::process::exit(2)
    })
}

/// Echoes requests and counts one-way messages (count, first and last arrival).
#[derive(Clone, Default)]
struct Counter(Arc<Mutex<(u64, u64, u64)>>);

impl Handler for Counter {
    fn request(&self, request: Message, _peer: Peer) -> BoxFuture<Result<Message, String>> {
        Box::pin(async move { Ok(Message::binary("result", request.payload)) })
    }

    fn message(&self, _message: Message, _peer: Peer) -> BoxFuture<()> {
        let now = monotonic_ns();
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if counts.0 == 0 {
            counts.1 = now;
        }
        counts.0 += 1;
        counts.2 = now;
        Box::pin(async {})
    }
}

async fn server(mut args: Args) -> Result<(), Error> {
    let config = config(TransportOptions {
        listen: Some(ListenOptions {
            host: Some(args.required("host")),
            port: Some(args.number("port", 0u16).into()),
        }),
        tls: Some(TlsOptions {
            cert_path: Some(args.required("cert").into()),
            key_path: Some(args.required("key").into()),
            ..TlsOptions::default()
        }),
        // For the `resume` scenario; a client without a session makes a full handshake.
        zero_rtt: Some(true),
        ..TransportOptions::default()
    });
    args.done();
    let counter = Counter::default();
    let server = QuicServer::bind(config, counter.clone())?;
    println!("READY {}", server.local_addr().port());

    // A plain thread reads stdin (the crate's tokio has no `io-std`); the runtime waits
    // for it to report `quit` or end of input.
    let (quit, quitting) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let mut counts = counter.0.lock().unwrap_or_else(|e| e.into_inner());
            match line.trim() {
                "stats" => {
                    let (count, first, last) = *counts;
                    println!(r#"{{"count":{count},"firstNs":{first},"lastNs":{last}}}"#);
                }
                "reset" => {
                    *counts = (0, 0, 0);
                    println!(r#"{{"ok":true}}"#);
                }
                "quit" => break,
                "" => {}
                other => eprintln!("bench_peer: unknown command {other:?}"),
            }
        }
        let _ = quit.send(());
    });
    let _ = quitting.await;
    server.close().await;
    Ok(())
}

async fn client(mut args: Args) -> Result<(), Error> {
    let host = args.required("host");
    let port: u16 = args.number("port", 0);
    let addr = parse_peer_address("--host", &format!("{host}:{port}"))
        .unwrap_or_else(|e| bad_usage(&e.to_string()));
    let tls = Some(TlsOptions {
        ca_path: Some(args.required("ca").into()),
        ..TlsOptions::default()
    });
    let scenario = args.required("scenario");
    // `resume` reconnects in 0-RTT.
    let resuming = scenario == "resume";
    let config = config(TransportOptions {
        tls,
        zero_rtt: Some(resuming),
        ..TransportOptions::default()
    });
    let bulk = scenario == "bulk";
    let seconds: f64 = args.number("seconds", 5.0);
    let concurrency: usize = args.number("concurrency", 64);
    // 64 B in `resume`, as in bench/client.mjs.
    let size: usize = args.number(
        "size",
        match scenario.as_str() {
            "bulk" => 64 << 20,
            "resume" => 64,
            _ => 1024,
        },
    );
    let count: usize = args.number("count", if bulk { 5 } else { 50 });
    args.done();
    if !["rps", "rtt", "bulk", "connect", "resume"].contains(&scenario.as_str()) {
        bad_usage(&format!("unknown scenario {scenario:?}"));
    }
    if port == 0 || concurrency == 0 || count == 0 || !(seconds > 0.0 && seconds < 1e6) {
        bad_usage("--port, --seconds, --concurrency and --count must be positive");
    }
    let seconds = Duration::from_secs_f64(seconds);
    let payload = Bytes::from(vec![0x5a; size]);
    let echo = move || Message::binary("echo", payload.clone());

    if scenario == "connect" {
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            let client = QuicClient::new(config.clone())?;
            client.connect(addr).await?;
            client
                .request(addr, Message::binary("echo", vec![0u8; 64]))
                .await?;
            samples.push(started.elapsed());
            client.close().await; // not timed: close waits for the peer's acknowledgement
        }
        println!("{}", latency_json(samples));
        return Ok(());
    }

    if resuming {
        // As bench/client.mjs's `resume`: the first connection makes a full handshake and
        // leaves a session; each sample is a request just after disconnect(), which
        // dials again and sends the request with its first packet. One more round trip
        // before each disconnect() lets the session tickets arrive, which follow the
        // handshake's end and can come after its first reply.
        let client = QuicClient::new(config)?;
        client.request(addr, echo()).await?;
        let (mut samples, mut resumed) = (Vec::with_capacity(count), 0);
        for _ in 0..count {
            client
                .request(addr, Message::binary("echo", Vec::new()))
                .await?;
            client.disconnect(addr).await?;
            let started = Instant::now();
            client.request(addr, echo()).await?;
            samples.push(started.elapsed());
            // Known once the handshake has ended, which the reply can precede.
            for _ in 0..20 {
                if client.connection_stats().iter().any(|c| c.zero_rtt) {
                    resumed += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        client.close().await;
        let json = latency_json(samples);
        println!("{},\"resumed\":{resumed}}}", &json[..json.len() - 1]);
        return Ok(());
    }

    let client = QuicClient::new(config)?;
    client.connect(addr).await?;
    match scenario.as_str() {
        "rps" => {
            // C tasks loop on requests; the count is read after the warm-up and again T
            // seconds later, so requests completed in between are what is reported.
            let done = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let (client, echo, done, stop) =
                    (client.clone(), echo.clone(), done.clone(), stop.clone());
                tasks.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        client.request(addr, echo()).await?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<_, Error>(())
                });
            }
            tokio::time::sleep(WARM_UP).await;
            let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
            tokio::time::sleep(seconds).await;
            let requests = done.load(Ordering::Relaxed) - before;
            let elapsed = start.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            while let Some(joined) = tasks.join_next().await {
                joined.expect("request task panicked")?;
            }
            let rps = requests as f64 / elapsed;
            println!(r#"{{"requests":{requests},"seconds":{elapsed:.3},"rps":{rps:.1}}}"#);
        }
        "rtt" => {
            let (measured, mut samples) = (Instant::now() + WARM_UP, Vec::new());
            while Instant::now() < measured + seconds {
                let started = Instant::now();
                client.request(addr, echo()).await?;
                if started >= measured {
                    samples.push(started.elapsed());
                }
            }
            println!("{}", latency_json(samples));
        }
        "bulk" => {
            // The payload goes out and comes back; MB/s is "each way": `size` bytes over
            // the median round-trip time, in 10^6 bytes per second.
            let mut rounds = Vec::with_capacity(count);
            for _ in 0..count {
                let started = Instant::now();
                let reply = client.request(addr, echo()).await?;
                rounds.push(started.elapsed().as_secs_f64());
                assert_eq!(reply.payload.len(), size, "echo came back truncated");
            }
            rounds.sort_by(f64::total_cmp);
            let mb_per_sec = size as f64 / rounds[rounds.len() / 2] / 1e6;
            println!(r#"{{"bytes":{size},"mbPerSec":{mb_per_sec:.1}}}"#);
        }
        _ => unreachable!("checked above"),
    }
    client.close().await;
    Ok(())
}

/// `{"samples":N,"p50Ms":..,"p99Ms":..,"maxMs":..}` by nearest rank.
fn latency_json(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let n = samples.len();
    let ms = |p: f64| match n {
        0 => 0.0,
        _ => samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1].as_secs_f64() * 1e3,
    };
    format!(
        r#"{{"samples":{n},"p50Ms":{:.3},"p99Ms":{:.3},"maxMs":{:.3}}}"#,
        ms(0.5),
        ms(0.99),
        ms(1.0)
    )
}

/// Nanoseconds of CLOCK_MONOTONIC: the clock of Node's `process.hrtime.bigint()` on
/// Linux, so the harness can compare these stamps with its own.
#[cfg(target_os = "linux")]
fn monotonic_ns() -> u64 {
    use std::ffi::{c_int, c_long};
    #[repr(C)]
    struct Timespec {
        sec: c_long,
        nsec: c_long,
    }
    extern "C" {
        fn clock_gettime(clock: c_int, now: *mut Timespec) -> c_int;
    }
    const CLOCK_MONOTONIC: c_int = 1;
    let mut now = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a live, properly laid out timespec.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut now) };
    now.sec as u64 * 1_000_000_000 + now.nsec as u64
}

/// Elsewhere: nanoseconds since the first call (only differences are meaningful).
#[cfg(not(target_os = "linux"))]
fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
