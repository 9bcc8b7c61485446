#!/usr/bin/env bash
# bench/mtls.sh [ROUNDS] [SECONDS] — full mTLS handshakes per proxy
# CPU-second: Gatehouse next to nginx, haproxy and envoy, each requiring a
# client certificate from the same CA, session resumption off, with
# ECDSA P-256 certificates and then RSA-2048 ones (../shared/bench/certs.sh
# makes both). The generator is `openssl s_time -new` presenting the
# client certificate (2 parallel processes: a new TCP + TLS 1.3 connection
# and one HTTP/1.1 request each), pinned to CPU 0 with the upstream; each
# proxy runs one worker pinned to CPU 1. ROUNDS rounds (default 5) of
# SECONDS-second runs (default 6), the proxies interleaved in each round;
# prints the median rps/srv_core per proxy and key type, and each one's
# ratio to the best peer. Loopback only, bounded in time.
# Raw lines: /tmp/gatehouse-bench/mtls.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$SHARED" ] && [ -x "$SHARED/run.sh" ] || { echo "shared bench harness not found (set SHARED_BENCH)" >&2; exit 2; }
ROUNDS=${1:-5}
DUR=${2:-6}
BASE_CERTS=${CERTS:-/tmp/bench-certs}
RUN=/tmp/gatehouse-bench
BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
OUT=$RUN/mtls.txt
mkdir -p "$RUN"
[ -x "$BIN" ] || { echo "build first: cargo build --release -p gatehouse" >&2; exit 2; }
[ -f "$BASE_CERTS/server.key" ] || "$SHARED/certs.sh" "$BASE_CERTS" >/dev/null

cleanup() {
  [ -s "$RUN/mtls-gh.pid" ] && kill "$(cat "$RUN/mtls-gh.pid")" 2>/dev/null || true
  (cd "$SHARED" && ./peers.sh stop >/dev/null 2>&1 || true; ./upstream/upstream.sh stop >/dev/null 2>&1 || true)
}
trap cleanup EXIT
(cd "$SHARED" && ./upstream/upstream.sh start >/dev/null)
UP=$(cat /tmp/bench-upstream/nginx.pid)
: > "$OUT"

for kind in ecdsa rsa; do
  CERTS=$BASE_CERTS
  [ "$kind" = rsa ] && CERTS=$BASE_CERTS/rsa
  (cd "$SHARED" && ./peers.sh stop >/dev/null 2>&1 || true
   CERTS=$CERTS MTLS=require RESUMPTION=off ./peers.sh start nginx haproxy envoy >/dev/null)
  [ -s "$RUN/mtls-gh.pid" ] && kill "$(cat "$RUN/mtls-gh.pid")" 2>/dev/null || true
  sleep 0.3
  sed "s|__CERTS__|$CERTS|g" "$HERE/gatehouse-mtls.yaml" > "$RUN/mtls-gh.yaml"
  GATEHOUSE_LOG=warn RUST_BACKTRACE=0 taskset -c 1 "$BIN" run -c "$RUN/mtls-gh.yaml" --workers 1 > "$RUN/mtls-gh.log" 2>&1 &
  echo $! > "$RUN/mtls-gh.pid"
  for _ in $(seq 100); do
    curl -sfk --cert "$CERTS/client.crt" --key "$CERTS/client.key" -o /dev/null https://127.0.0.1:18450/ && break
    sleep 0.1
  done
  for r in $(seq "$ROUNDS"); do
    echo "$kind round $r/$ROUNDS" >&2
    for p in nginx:18443:/tmp/bench-peers/nginx/pid haproxy:18444:/tmp/bench-peers/haproxy/pid \
             envoy:18445:/tmp/bench-peers/envoy/pid gatehouse:18450:$RUN/mtls-gh.pid; do
      IFS=: read -r name port pidf <<< "$p"
      (cd "$SHARED" && RESULTS_DIR=$RUN/results ./run.sh -g s_time -k -c 2 -C "$CERTS" -d "$DUR" \
        -p "$(cat "$pidf")" -U "$UP" -l "$kind-$name" "https://127.0.0.1:$port/") | tee -a "$OUT" >&2
    done
  done
done

med() { grep "^$1 " "$OUT" | sed -E 's/.*rps\/srv_core=([0-9]+).*/\1/' | sort -n |
  awk '{a[NR]=$1} END {if (NR) printf "%d %d %d", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), a[1], a[NR]}'; }
echo "median full mTLS handshakes (+1 request) per proxy CPU-second over $ROUNDS rounds of ${DUR}s (TLS 1.3, resumption off, s_time -new x2):"
for kind in ecdsa rsa; do
  best=0
  for p in nginx haproxy envoy; do read -r m _ _ <<< "$(med "$kind-$p")"; [ "${m:-0}" -gt "$best" ] && best=$m; done
  for p in nginx haproxy envoy gatehouse; do
    read -r m lo hi <<< "$(med "$kind-$p")"
    awk -v k="$kind" -v p="$p" -v m="$m" -v lo="$lo" -v hi="$hi" -v b="$best" \
      'BEGIN {printf "  %-6s %-10s %6d  (min %d, max %d)  %.2fx the best peer\n", k, p, m, lo, hi, (b ? m / b : 0)}'
  done
done
