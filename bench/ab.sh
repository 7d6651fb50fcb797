#!/usr/bin/env bash
# Compares builds of this package side by side, one scenario at a time, rounds
# interleaved (this machine is noisy: only differences seen in every round count).
#
#   bash bench/ab.sh snapshot <dir>
#       copies the package as built now (JS files, bench/, the .node addon) to <dir>,
#       sharing this checkout's node_modules; build another version, snapshot it too.
#   bash bench/ab.sh <rounds> <scenario> <dir>:<transport> ... [-- key=value ...]
#       e.g. bash bench/ab.sh 3 bulk /tmp/before:quic /tmp/after:quic /tmp/after:tcp-tls
#            bash bench/ab.sh 3 rps /tmp/before:quic /tmp/after:quic -- seconds=2
#       runs bench/server.mjs (CPU 1) and bench/client.mjs (CPU 0) of each <dir> in turn
#       and prints each run's JSON line after its label.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" = snapshot ]; then
  dir=${2:?usage: bash bench/ab.sh snapshot <dir>}
  mkdir -p "$dir"
  cp -r "$here"/index.js "$here"/index.mjs "$here"/wire.js "$here"/binding.js \
    "$here"/package.json "$here"/bench "$here"/*.node "$dir"/
  ln -sfn "$here/node_modules" "$dir/node_modules"
  echo "snapshot in $dir"
  exit 0
fi

rounds=${1:?usage: see the top of bench/ab.sh} scenario=${2:?scenario}
shift 2
variants=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do variants+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
certs=$(mktemp -d)
trap 'rm -rf "$certs"' EXIT
node "$here/bench/make-cert.mjs" "$certs" >/dev/null
for _ in $(seq "$rounds"); do
  for variant in "${variants[@]}"; do
    dir=${variant%:*} transport=${variant##*:}
    coproc SERVER { exec taskset -c 1 node "$dir/bench/server.mjs" "$transport" 127.0.0.1 0 "$certs/cert.pem" "$certs/key.pem"; }
    read -r ready <&"${SERVER[0]}"
    out=$(timeout 300 taskset -c 0 node "$dir/bench/client.mjs" "$transport" 127.0.0.1 "${ready#READY }" "$certs/cert.pem" "$scenario" "$@")
    echo "$variant $out"
    echo quit >&"${SERVER[1]}"
    wait "$SERVER_PID" 2>/dev/null || true
  done
done
