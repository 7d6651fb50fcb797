#!/usr/bin/env bash
# The Rust core alone (examples/bench_peer.rs) on tokio's two runtimes, rounds
# interleaved, server and client each pinned to one core as in `npm run bench`:
#   bash bench/core-runtime.sh [rounds=3] [scenario=rps]
# prints one JSON line per run after its runtime's name, then the UDP datagrams the
# machine sent during the client's run (warm-up included; from /proc/net/snmp, Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} scenario=${2:-rps}
peer=target/release/examples/bench_peer
datagrams() { awk '/^Udp:/ { if (++n == 2) print $5 }' /proc/net/snmp; }
cargo build --release --no-default-features --example bench_peer >&2
certs=$(mktemp -d)
trap 'rm -rf "$certs"' EXIT
node bench/make-cert.mjs "$certs"
for _ in $(seq "$rounds"); do
  for runtime in multi-thread current-thread; do
    coproc SERVER { exec taskset -c 1 "$peer" server --host 127.0.0.1 --port 0 \
      --cert "$certs/cert.pem" --key "$certs/key.pem" --runtime "$runtime"; }
    read -r ready <&"${SERVER[0]}"
    before=$(datagrams)
    out=$(taskset -c 0 "$peer" client --host 127.0.0.1 --port "${ready#READY }" \
      --ca "$certs/cert.pem" --scenario "$scenario" --seconds 3 --runtime "$runtime")
    echo "$runtime $out datagrams=$(($(datagrams) - before))"
    echo quit >&"${SERVER[1]}"
    wait "$SERVER_PID"
  done
done
