#!/usr/bin/env bash
# Instructions per request on one side of the request path, counted by callgrind
# (repeatable where timings on a shared machine are not):
#   bash bench/callgrind.sh [server|client] [transport] [count] [size] [in-flight]
#   e.g. bash bench/callgrind.sh server quic 20000 1024
#        bash bench/callgrind.sh client quic 10000 64 1
# Runs `count` requests of `size` bytes, `in-flight` (64) at a time, between bench/server.mjs and
# bench/client.mjs; the measured side runs under valgrind from its first request to its
# last (startup is not counted). Prints instructions per request and the top functions.
# KEEP=<dir> copies callgrind's output files there, to read with callgrind_annotate.
# (Rust frames have names only in an unstripped build: CARGO_PROFILE_RELEASE_STRIP=none
# npm run build.)
set -euo pipefail
cd "$(dirname "$0")/.."
side=${1:-server} transport=${2:-quic} count=${3:-20000} size=${4:-1024} inflight=${5:-64}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] && cp -r "$work" "$KEEP"; rm -rf "$work"' EXIT
node bench/make-cert.mjs "$work"
grind=(valgrind --tool=callgrind "--callgrind-out-file=$work/cg.out" --log-file="$work/valgrind.log")
server_prefix=()
if [ "$side" = server ]; then server_prefix=("${grind[@]}" --instr-atstart=no); fi
coproc SERVER { taskset -c 1 "${server_prefix[@]}" node bench/server.mjs "$transport" 127.0.0.1 0 "$work/cert.pem" "$work/key.pem"; }
read -r ready <&"${SERVER[0]}"
port=${ready#READY }
if [ "$side" = server ]; then
  grinding=$(pgrep -f -- "--callgrind-out-file=$work/cg.out" | head -n 1)
  callgrind_control -i on "$grinding" >/dev/null 2>&1
  taskset -c 0 node bench/client.mjs "$transport" 127.0.0.1 "$port" "$work/cert.pem" requests "count=$count" "size=$size" "concurrency=$inflight" >/dev/null 2>&1
  callgrind_control -i off "$grinding" >/dev/null 2>&1
  callgrind_control -d "$grinding" >/dev/null 2>&1
else
  # The client is counted whole, less a run of one request (its startup and handshake).
  taskset -c 0 "${grind[@]}" node bench/client.mjs "$transport" 127.0.0.1 "$port" "$work/cert.pem" requests count=1 "size=$size" "concurrency=$inflight" >/dev/null 2>&1
  mv "$work/cg.out" "$work/one.out"
  taskset -c 0 "${grind[@]}" node bench/client.mjs "$transport" 127.0.0.1 "$port" "$work/cert.pem" requests "count=$count" "size=$size" "concurrency=$inflight" >/dev/null 2>&1
fi
echo quit >&"${SERVER[1]}"
wait
# Each file's total (its `summary:` and `totals:` lines give it twice), summed; %.0f as
# mawk's %d stops at 2^31 - 1.
total() {
  local sum=0 f
  for f in "$@"; do sum=$((sum + $(awk '/^(summary|totals):/ { v = $2 } END { printf "%.0f", v }' "$f"))); done
  echo "$sum"
}
ir=$(total "$work"/cg.out*)
if [ "$side" = client ]; then ir=$((ir - $(total "$work/one.out"))); fi
echo "$side ($transport): $((ir / count)) instructions per request ($ir for $count requests of $size B, $inflight in flight)"
callgrind_annotate --inclusive=no $(ls "$work"/cg.out* | tail -1) 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,22p' | cut -c1-160
