#!/usr/bin/env bash
# Runs bench/loss-connect.mjs in a network namespace whose nftables rules drop `percent`
# of the packets to and from UDP port 47443 (needs root, iproute2 and nftables):
#   bash bench/loss-connect.sh [percent=20] [connections=60]
set -euo pipefail
cd "$(dirname "$0")/.."
percent=${1:-20} count=${2:-60}
ns=afq-loss-connect-$$
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" nft -f - <<RULES
add table inet afq
add chain inet afq in { type filter hook input priority 0 ; }
add chain inet afq out { type filter hook output priority 0 ; }
add rule inet afq in udp dport 47443 numgen random mod 100 < $percent drop
add rule inet afq out udp sport 47443 numgen random mod 100 < $percent drop
RULES
ip netns exec "$ns" node bench/loss-connect.mjs "$count"
