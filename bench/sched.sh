#!/usr/bin/env bash
# What runs on one side's core, switch by switch, in the middle of a benchmark scenario
# (needs perf; Linux): records the scheduler on that core for 0.3 s, then prints
# `perf sched timehist` (each line: a thread leaving the core, how long it ran, and whom
# it woke).
#   bash bench/sched.sh <transport> <client|server> <scenario> [key=value ...]
#   e.g. bash bench/sched.sh quic client rtt seconds=3 | sed -n 200,240p
set -euo pipefail
cd "$(dirname "$0")/.."
transport=${1:?usage: bash bench/sched.sh <transport> <client|server> <scenario> [key=value ...]}
side=${2:?client or server} scenario=${3:?scenario}
shift 3
case $side in client) core=0 ;; server) core=1 ;; *) echo "side: client or server" >&2; exit 2 ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node bench/make-cert.mjs "$work"
coproc SERVER { exec taskset -c 1 node bench/server.mjs "$transport" 127.0.0.1 0 "$work/cert.pem" "$work/key.pem"; }
read -r ready <&"${SERVER[0]}"
port=${ready#READY }
taskset -c 0 node bench/client.mjs "$transport" 127.0.0.1 "$port" "$work/cert.pem" "$scenario" "$@" >/dev/null &
client=$!
sleep 1.5 # past the client's start and warm-up
perf sched record -o "$work/sched.data" -C "$core" -- sleep 0.3 >/dev/null 2>&1
wait "$client"
echo quit >&"${SERVER[1]}"
wait "$SERVER_PID" || true
perf sched timehist -i "$work/sched.data" -w 2>/dev/null
