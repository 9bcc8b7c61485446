#!/usr/bin/env bash
# bench/compare.sh [ROUNDS] [SECONDS] — like peers.sh, but ROUNDS rounds
# (default 5) of SECONDS-second runs (default 6), the proxies interleaved
# in every round, then the median requests per proxy CPU-second of each.
# On a shared 2-core machine single runs vary by 15% or more; interleaved
# medians are what to compare. Raw lines: /tmp/gatehouse-bench/compare.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${1:-5}
DUR=${2:-6}
OUT=/tmp/gatehouse-bench/compare.txt
mkdir -p /tmp/gatehouse-bench
: > "$OUT"
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  bash "$HERE/peers.sh" "$DUR" 2>/dev/null | grep -E '^(nginx|haproxy|envoy|gatehouse)' | tee -a "$OUT" >&2
done
echo "median rps/srv_core over $ROUNDS rounds of ${DUR}s (HTTPS; HTTP/1.1 keep-alive, 32 connections, wrk; -h2: HTTP/2, 32 connections x 8 streams, h2load):"
for p in nginx haproxy envoy gatehouse-0 gatehouse-6 gatehouse-0-observed nginx-h2 haproxy-h2 envoy-h2 gatehouse-0-h2; do
  grep "^$p " "$OUT" | sed -E 's/.*rps\/srv_core=([0-9]+).*/\1/' | sort -n |
    awk -v p="$p" '{a[NR]=$1} END {if (NR) printf "  %-21s %6d   (min %d, max %d, n=%d)\n", p, (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), a[1], a[NR], NR}'
done
