#!/usr/bin/env bash
# bench/traffic.sh [ROUNDS] [SECONDS] — requests per proxy CPU-second of a
# route with rate-limit-by-key, in the memory counter store, the durable
# one (a redb file written every 100 ms) and the redis one (a
# redis-server started here on 127.0.0.1:18493), next to the same
# gateway's route without policies. Three gateway processes (one per
# store), each one worker pinned to CPU 1; wrk (plain HTTP/1.1
# keep-alive, 32 connections), the upstream and redis-server on CPU 0.
# ROUNDS rounds (default 5) of SECONDS-second runs (default 6),
# interleaved; medians. For the redis runs it also reports Redis round
# trips per request (EVALSHA calls from INFO commandstats over the
# requests wrk completed) and redis-server's CPU. Loopback only, bounded
# in time. Raw lines: /tmp/gatehouse-bench/traffic.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$SHARED" ] && [ -x "$SHARED/run.sh" ] || { echo "shared bench harness not found (set SHARED_BENCH)" >&2; exit 2; }
ROUNDS=${1:-5}
DUR=${2:-6}
RUN=/tmp/gatehouse-bench
BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
OUT=$RUN/traffic.txt
mkdir -p "$RUN"
[ -x "$BIN" ] || { echo "build first: cargo build --release -p gatehouse" >&2; exit 2; }

command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 2; }
cleanup() {
  for p in mem dur red redis; do
    [ -s "$RUN/traffic-$p.pid" ] && kill "$(cat "$RUN/traffic-$p.pid")" 2>/dev/null || true
  done
  (cd "$SHARED" && ./upstream/upstream.sh stop >/dev/null 2>&1 || true)
}
trap cleanup EXIT
(cd "$SHARED" && ./upstream/upstream.sh start >/dev/null)

rm -f "$RUN/traffic.redb"
sed "s|__PORT__|18490|; s|__COUNTERS__|counters: {backend: memory}|" "$HERE/gatehouse-traffic.yaml" > "$RUN/traffic-mem.yaml"
sed "s|__PORT__|18491|; s|__COUNTERS__|counters: {backend: durable, path: $RUN/traffic.redb, flush_ms: 100}|" "$HERE/gatehouse-traffic.yaml" > "$RUN/traffic-dur.yaml"
taskset -c 0 redis-server --port 18493 --bind 127.0.0.1 --save "" --appendonly no > "$RUN/traffic-redis.log" 2>&1 &
echo $! > "$RUN/traffic-redis.pid"
sed "s|__PORT__|18492|; s|__COUNTERS__|counters: {backend: redis, redis: {url: \"redis://127.0.0.1:18493\"}}|" "$HERE/gatehouse-traffic.yaml" > "$RUN/traffic-red.yaml"
for _ in $(seq 50); do redis-cli -p 18493 ping >/dev/null 2>&1 && break; sleep 0.1; done
for p in mem dur red; do
  GATEHOUSE_LOG=warn RUST_BACKTRACE=0 taskset -c 1 "$BIN" run -c "$RUN/traffic-$p.yaml" --workers 1 > "$RUN/traffic-$p.log" 2>&1 &
  echo $! > "$RUN/traffic-$p.pid"
done
for port in 18490 18491 18492; do
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/limited/" && break
    sleep 0.1
  done
  curl -sf -o /dev/null "http://127.0.0.1:$port/limited/" || { echo "gatehouse on $port does not answer; see $RUN/traffic-*.log" >&2; exit 1; }
done

UP=$(cat /tmp/bench-upstream/nginx.pid)
MEM=$(cat "$RUN/traffic-mem.pid")
DURP=$(cat "$RUN/traffic-dur.pid")
REDP=$(cat "$RUN/traffic-red.pid")
RPID=$(cat "$RUN/traffic-redis.pid")
: > "$OUT"
: > "$RUN/traffic-redis-trips.txt"
evalsha() { redis-cli -p 18493 info commandstats | sed -nE 's/^cmdstat_evalsha:calls=([0-9]+).*/\1/p' | tr -d '\r' | grep . || echo 0; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  for c in "none:$MEM:18490/none/" "memory:$MEM:18490/limited/" "durable:$DURP:18491/limited/" "redis:$REDP:18492/limited/"; do
    IFS=: read -r label pid target <<< "$c"
    e0=$(evalsha); t0=$(cpu_ticks "$RPID")
    (cd "$SHARED" && RESULTS_DIR=$RUN/results ./run.sh -g wrk -c 32 -d "$DUR" -p "$pid" -U "$UP" -l "$label" "http://127.0.0.1:$target") 2> "$RUN/traffic-last.err" | tee -a "$OUT" >&2
    if [ "$label" = redis ]; then
      e1=$(evalsha); t1=$(cpu_ticks "$RPID")
      raw=$(sed -n 's/^raw: //p' "$RUN/traffic-last.err" | tail -1)
      reqs=$(grep -oE '^ *[0-9]+ requests in' "$raw" | grep -oE '[0-9]+' | head -1)
      echo "$((e1 - e0)) $reqs $((t1 - t0))" >> "$RUN/traffic-redis-trips.txt"
    fi
  done
done
echo "median requests per proxy CPU-second over $ROUNDS rounds of ${DUR}s (plain HTTP/1.1 keep-alive, wrk -c 32):"
med() { grep "^$1 " "$OUT" | sed -E 's/.*rps\/srv_core=([0-9]+).*/\1/' | sort -n |
  awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)), a[1], a[NR]}'; }
for p in none memory durable redis; do
  read -r m lo hi <<< "$(med "$p")"
  printf "  %-9s %6d  (min %d, max %d)\n" "$p" "$m" "$lo" "$hi"
  eval "M_$p=$m"
done
awk -v n="$M_none" -v m="$M_memory" -v d="$M_durable" -v r="$M_redis" 'BEGIN {
  printf "  rate-limit-by-key (memory) / no policy: %.2fx; durable / memory: %.2fx; redis / memory: %.2fx\n", m/n, d/m, r/m }'
HZ=$(getconf CLK_TCK)
awk -v hz="$HZ" '{e+=$1; q+=$2; t+=$3} END { if (q) printf "  redis: %d EVALSHA for %d requests completed = %.4f round trips per request (wrk does not count the <= 32 in flight at the end); redis-server CPU %.1f us per request\n", e, q, e/q, t/hz*1e6/q }' "$RUN/traffic-redis-trips.txt"
