#!/usr/bin/env bash
# CPU time and context switches of each side of one benchmark scenario, and the UDP
# datagrams the machine sent meanwhile, each side pinned to its own core as in
# `npm run bench` (needs perf; Linux):
#   bash bench/cpu.sh <transport> <scenario> [key=value ...]
#   e.g. bash bench/cpu.sh quic rps seconds=4
# Prints the client's JSON line, then one line per side. Both sides are counted over
# the client's whole run (its connect and warm-up included), so a side whose CPU time is
# close to the run's wall time is the one that bounds the throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
transport=${1:?usage: bash bench/cpu.sh <transport> <scenario> [key=value ...]}
scenario=${2:?scenario}
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node bench/make-cert.mjs "$work"
datagrams() { awk '/^Udp:/ { if (++n == 2) print $5 }' /proc/net/snmp; }
coproc SERVER { exec taskset -c 1 node bench/server.mjs "$transport" 127.0.0.1 0 "$work/cert.pem" "$work/key.pem"; }
read -r ready <&"${SERVER[0]}"
port=${ready#READY }
perf stat -e task-clock,context-switches -x, -o "$work/server.csv" -p "$SERVER_PID" &
counting=$!
sleep 0.2 # perf attaches
before=$(datagrams) start=$(date +%s%N)
perf stat -e task-clock,context-switches -x, -o "$work/client.csv" -- \
  taskset -c 0 node bench/client.mjs "$transport" 127.0.0.1 "$port" "$work/cert.pem" "$scenario" "$@"
wall_ms=$((($(date +%s%N) - start) / 1000000)) sent=$(($(datagrams) - before))
kill -INT "$counting"
wait "$counting" || true
echo quit >&"${SERVER[1]}"
wait "$SERVER_PID" || true
for side in client server; do
  awk -F, -v side="$side" -v wall="$wall_ms" '
    $3 == "task-clock" { cpu = $1 } $3 == "context-switches" { cs = $1 }
    END { printf "%s: %.0f ms CPU in %d ms (%.2f of a core), %d context switches\n", side, cpu, wall, cpu / wall, cs }
  ' "$work/$side.csv"
done
echo "UDP datagrams sent: $sent"
