#!/usr/bin/env bash
# Samples where one side of a benchmark scenario spends its CPU, with perf (cpu-clock,
# so it works without hardware counters), each side pinned to its own core:
#   bash bench/profile.sh <transport> <server|client> <scenario> [key=value ...]
#   e.g. bash bench/profile.sh quic client rps seconds=3
# Then: perf report -i /tmp/afq-perf.data --no-children --sort comm,dso
# (Rust frames have names only in an unstripped build: CARGO_PROFILE_RELEASE_STRIP=none.)
set -euo pipefail
cd "$(dirname "$0")/.."
transport=$1 side=$2 scenario=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node bench/make-cert.mjs "$work"
record=(perf record -F 2000 -e cpu-clock -g -o /tmp/afq-perf.data --)
server_prefix=() client_prefix=()
if [ "$side" = server ]; then server_prefix=("${record[@]}"); else client_prefix=("${record[@]}"); fi
coproc SERVER { taskset -c 1 "${server_prefix[@]}" node --perf-basic-prof bench/server.mjs "$transport" 127.0.0.1 0 "$work/cert.pem" "$work/key.pem"; }
read -r ready <&"${SERVER[0]}"
port=${ready#READY }
taskset -c 0 "${client_prefix[@]}" node --perf-basic-prof bench/client.mjs "$transport" 127.0.0.1 "$port" "$work/cert.pem" "$scenario" "$@"
echo quit >&"${SERVER[1]}"
wait
rm -f isolate-*-v8.log
