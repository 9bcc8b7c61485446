#!/usr/bin/env bash
# bench/ab.sh BASE_BIN [ROUNDS] [SECONDS] — what a change costs: the
# Gatehouse binary BASE_BIN (e.g. built from an earlier commit) next to this
# tree's release build, each run with no policy (gatehouse-0.yaml) and with
# six policies (gatehouse-6.yaml), interleaved in ROUNDS rounds (default 7)
# of SECONDS-second wrk runs (default 6). Prints the median requests per
# proxy CPU-second of each, and per config the change from the medians and
# the median of the per-round ratios (which cancels drift between rounds).
#
# Same harness and pinning as peers.sh (HTTPS, HTTP/1.1 keep-alive, 32
# connections, one worker on CPU 1). Bounded in time, loopback only.
# Raw lines: /tmp/gatehouse-bench/ab.txt.
#
# To build a base binary without a second wasmtime build, share the target
# directory and keep a copy of the result:
#   git worktree add /tmp/base COMMIT
#   (cd /tmp/base && CARGO_TARGET_DIR=$PWD/../main/target cargo build --release -p gatehouse)
#   cp target/release/gatehouse /tmp/gatehouse-base && touch cli/src/main.rs && cargo build --release
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$SHARED" ] && [ -x "$SHARED/run.sh" ] || { echo "shared bench harness not found (set SHARED_BENCH)" >&2; exit 2; }
BASE=${1:?usage: bench/ab.sh BASE_BIN [ROUNDS] [SECONDS]}
ROUNDS=${2:-7}
DUR=${3:-6}
CERTS=${CERTS:-/tmp/bench-certs}
RUN=/tmp/gatehouse-bench
NEW=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
OUT=$RUN/ab.txt
mkdir -p "$RUN"
[ -x "$BASE" ] || { echo "$BASE: not an executable" >&2; exit 2; }
[ -x "$NEW" ] || { echo "build first: cargo build --release -p gatehouse" >&2; exit 2; }
[ -f "$CERTS/server.key" ] || "$SHARED/certs.sh" "$CERTS" >/dev/null

cleanup() {
  for f in "$RUN"/ab-*.pid; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  (cd "$SHARED" && ./upstream/upstream.sh stop >/dev/null 2>&1 || true)
}
trap cleanup EXIT
(cd "$SHARED" && ./upstream/upstream.sh start >/dev/null)

start_gatehouse() { # start_gatehouse NAME BIN CONFIG PORT
  sed "s|__CERTS__|$CERTS|g; s|__RUN__|$RUN|g; s|18447|$4|; s|18448|$4|" "$HERE/$3" > "$RUN/ab-$1.yaml"
  # A base built before `tls.default_host` existed served the first host to
  # clients without SNI anyway: leave the key out of its config.
  if ! "$2" check -c "$RUN/ab-$1.yaml" >/dev/null 2>&1; then
    sed -i '/default_host:/d' "$RUN/ab-$1.yaml"
  fi
  GATEHOUSE_LOG=warn RUST_BACKTRACE=0 taskset -c 1 "$2" run -c "$RUN/ab-$1.yaml" --workers 1 > "$RUN/ab-$1.log" 2>&1 &
  echo $! > "$RUN/ab-$1.pid"
  for _ in $(seq 100); do
    curl -sfk -o /dev/null "https://127.0.0.1:$4/" && return 0
    sleep 0.1
  done
  echo "gatehouse ($1) did not start; see $RUN/ab-$1.log" >&2; exit 1
}
start_gatehouse base-0 "$BASE" gatehouse-0.yaml 18451
start_gatehouse new-0 "$NEW" gatehouse-0.yaml 18452
start_gatehouse base-6 "$BASE" gatehouse-6.yaml 18453
start_gatehouse new-6 "$NEW" gatehouse-6.yaml 18454

UP=$(cat /tmp/bench-upstream/nginx.pid)
: > "$OUT"
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  for p in base-0:18451 new-0:18452 base-6:18453 new-6:18454; do
    (cd "$SHARED" && RESULTS_DIR=$RUN/results ./run.sh -g wrk -c 32 -d "$DUR" -p "$(cat "$RUN/ab-${p%:*}.pid")" -U "$UP" -l "ab-${p%:*}" "https://127.0.0.1:${p#*:}/") | tee -a "$OUT" >&2
  done
done
col() { grep "^ab-$1 " "$OUT" | sed -E 's/.*rps\/srv_core=([0-9]+).*/\1/'; }
med() { col "$1" | sort -n | awk '{a[NR]=$1} END {printf "%d %d %d", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), a[1], a[NR]}'; }
echo "median rps/srv_core over $ROUNDS rounds of ${DUR}s (HTTPS, HTTP/1.1 keep-alive, 32 connections, wrk):"
for c in 0 6; do
  read -r b b_min b_max <<< "$(med "base-$c")"
  read -r n n_min n_max <<< "$(med "new-$c")"
  printf "  gatehouse-%s  base %6d (min %d, max %d)   new %6d (min %d, max %d)\n" "$c" "$b" "$b_min" "$b_max" "$n" "$n_min" "$n_max"
  awk -v a="$b" -v b="$n" 'BEGIN {printf "    change, from the medians:            %+.1f%%\n", (b / a - 1) * 100}'
  paste <(col "base-$c") <(col "new-$c") | awk '{print $2 / $1}' | sort -n |
    awk '{a[NR]=$1} END {m = (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); printf "    change, median of per-round ratios:  %+.1f%%  (rounds: %+.1f%% .. %+.1f%%)\n", (m - 1) * 100, (a[1] - 1) * 100, (a[NR] - 1) * 100}'
done
