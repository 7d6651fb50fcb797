#!/usr/bin/env bash
# Samples where one side of a benchmark scenario spends its CPU, with perf (cpu-clock,
# so it works without hardware counters), each side pinned to its own core:
#   bash bench/profile.sh <transport> <server|client> <scenario> [key=value ...]
#   e.g. bash bench/profile.sh quic client rps seconds=3
#        bash bench/profile.sh rust-quic server rps seconds=3   (the Rust core alone)
# Then: perf report -i /tmp/afq-perf.data --no-children --sort comm,dso
# (PERF_FREQ sets the sampling rate, 2000 per second by default: more for short events,
# such as the handshakes of `resume`.)
# (Rust frames have names only in an unstripped build: CARGO_PROFILE_RELEASE_STRIP=none;
# their callers only with frame pointers: RUSTFLAGS='-C force-frame-pointers=yes'. Build
# one with `npx napi build --platform --release` and those set, in a target dir of its own.)
set -euo pipefail
cd "$(dirname "$0")/.."
transport=$1 side=$2 scenario=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node bench/make-cert.mjs "$work"
record=(perf record -F ${PERF_FREQ:-2000} -e cpu-clock -g -o /tmp/afq-perf.data --)
server_prefix=() client_prefix=()
if [ "$side" = server ]; then server_prefix=("${record[@]}"); else client_prefix=("${record[@]}"); fi
if [ "$transport" = rust-quic ]; then
  # The Rust core alone (examples/bench_peer.rs); key=value parameters become --key value.
  peer=target/release/examples/bench_peer
  [ -x "$peer" ] || cargo build --release --no-default-features --example bench_peer
  server=("$peer" server --host 127.0.0.1 --port 0 --cert "$work/cert.pem" --key "$work/key.pem")
  flags=()
  for kv in "$@"; do flags+=("--${kv%%=*}" "${kv#*=}"); done
  client=("$peer" client --host 127.0.0.1 --ca "$work/cert.pem" --scenario "$scenario" "${flags[@]}" --port)
else
  server=(node --perf-basic-prof bench/server.mjs "$transport" 127.0.0.1 0 "$work/cert.pem" "$work/key.pem")
  client=(node --perf-basic-prof bench/client.mjs "$transport" 127.0.0.1 PORT "$work/cert.pem" "$scenario" "$@")
fi
coproc SERVER { taskset -c 1 "${server_prefix[@]}" "${server[@]}"; }
read -r ready <&"${SERVER[0]}"
port=${ready#READY }
if [ "$transport" = rust-quic ]; then client+=("$port"); else client=("${client[@]/PORT/$port}"); fi
taskset -c 0 "${client_prefix[@]}" "${client[@]}"
echo quit >&"${SERVER[1]}"
wait
rm -f isolate-*-v8.log
