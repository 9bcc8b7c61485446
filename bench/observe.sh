#!/usr/bin/env bash
# bench/observe.sh [ROUNDS] [SECONDS] — the cost of observability: Gatehouse
# with no policy (gatehouse-0.yaml) next to the same with an admin listener
# (every request counted in the metrics) and the JSON access log written to
# a file (gatehouse-0-observed.yaml), interleaved in ROUNDS rounds (default
# 9) of SECONDS-second wrk runs (default 6), then the median requests per
# proxy CPU-second of each, their ratio, and the median of the per-round
# ratios (which cancels drift between rounds on a noisy machine).
#
# Same harness and pinning as peers.sh (HTTPS, HTTP/1.1 keep-alive, 32
# connections, one worker on CPU 1). Only the two Gatehouse instances run,
# back to back in each round, so drift between them is small. Bounded in
# time, loopback only. Raw lines: /tmp/gatehouse-bench/observe.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$SHARED" ] && [ -x "$SHARED/run.sh" ] || { echo "shared bench harness not found (set SHARED_BENCH)" >&2; exit 2; }
ROUNDS=${1:-9}
DUR=${2:-6}
CERTS=${CERTS:-/tmp/bench-certs}
RUN=/tmp/gatehouse-bench
BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
OUT=$RUN/observe.txt
mkdir -p "$RUN"
[ -x "$BIN" ] || { echo "build first: cargo build --release -p gatehouse" >&2; exit 2; }
[ -f "$CERTS/server.key" ] || "$SHARED/certs.sh" "$CERTS" >/dev/null

cleanup() {
  for f in "$RUN"/obs-*.pid; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  (cd "$SHARED" && ./upstream/upstream.sh stop >/dev/null 2>&1 || true)
}
trap cleanup EXIT
(cd "$SHARED" && ./upstream/upstream.sh start >/dev/null)

start_gatehouse() { # start_gatehouse NAME CONFIG PORT
  sed "s|__CERTS__|$CERTS|g; s|__RUN__|$RUN|g" "$HERE/$2" > "$RUN/obs-$1.yaml"
  GATEHOUSE_LOG=warn RUST_BACKTRACE=0 taskset -c 1 "$BIN" run -c "$RUN/obs-$1.yaml" --workers 1 > "$RUN/obs-$1.log" 2>&1 &
  echo $! > "$RUN/obs-$1.pid"
  for _ in $(seq 100); do
    curl -sfk -o /dev/null "https://127.0.0.1:$3/" && return 0
    sleep 0.1
  done
  echo "gatehouse ($1) did not start; see $RUN/obs-$1.log" >&2; exit 1
}
start_gatehouse off gatehouse-0.yaml 18447
start_gatehouse on gatehouse-0-observed.yaml 18449

UP=$(cat /tmp/bench-upstream/nginx.pid)
: > "$OUT"
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  for p in off:18447 on:18449; do
    (cd "$SHARED" && RESULTS_DIR=$RUN/results ./run.sh -g wrk -c 32 -d "$DUR" -p "$(cat "$RUN/obs-${p%:*}.pid")" -U "$UP" -l "observe-${p%:*}" "https://127.0.0.1:${p#*:}/") | tee -a "$OUT" >&2
  done
done
med() { grep "^observe-$1 " "$OUT" | sed -E 's/.*rps\/srv_core=([0-9]+).*/\1/' | sort -n |
  awk '{a[NR]=$1} END {printf "%d %d %d", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), a[1], a[NR]}'; }
read -r off off_min off_max <<< "$(med off)"
read -r on on_min on_max <<< "$(med on)"
echo "median rps/srv_core over $ROUNDS rounds of ${DUR}s (HTTPS, HTTP/1.1 keep-alive, 32 connections, wrk):"
printf "  metrics and access log off  %6d   (min %d, max %d)\n" "$off" "$off_min" "$off_max"
printf "  metrics and access log on   %6d   (min %d, max %d)\n" "$on" "$on_min" "$on_max"
awk -v a="$off" -v b="$on" 'BEGIN {printf "  cost of observability, from the medians:              %.1f%%\n", (1 - b / a) * 100}'
# Each round's on/off ratio cancels the drift between rounds.
paste <(grep "^observe-off " "$OUT" | sed -E 's/.*rps\/srv_core=([0-9]+).*/\1/') \
      <(grep "^observe-on " "$OUT" | sed -E 's/.*rps\/srv_core=([0-9]+).*/\1/') |
  awk '{print $2 / $1}' | sort -n |
  awk '{a[NR]=$1} END {m = (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); printf "  cost of observability, median of per-round ratios:   %.1f%%  (rounds: %.1f%% .. %.1f%%)\n", (1 - m) * 100, (1 - a[NR]) * 100, (1 - a[1]) * 100}'
