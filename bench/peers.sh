#!/usr/bin/env bash
# bench/peers.sh [SECONDS] — Gatehouse next to nginx, haproxy and envoy, all
# terminating TLS on loopback with the same certificates and proxying to the
# same nginx upstream (the shared harness in ../shared/bench).
#
# Gatehouse runs three ways: no policy (gatehouse-0.yaml), six policies
# (gatehouse-6.yaml), and no policy with metrics and a JSON access log on
# (gatehouse-0-observed.yaml).
#
# HTTPS, HTTP/1.1 keep-alive, 32 connections, wrk; then HTTP/2 (h2load, 32
# connections x 8 concurrent streams) for nginx, haproxy, envoy and
# gatehouse-0, labelled `-h2` (H2=0 skips it). Client certificates off
# (MTLS=off) because neither generator can send one. Each proxy is pinned to CPU 1 with
# one worker; wrk and the upstream share CPU 0. The figure to compare is
# rps/srv_core: requests per proxy CPU-second, measured in the same run.
#
# Prerequisites: ../shared/bench/install.sh (peers, wrk) and a release build
# (`cargo build --release -p gatehouse`). Every run is bounded (SECONDS, 10
# by default) and only talks to 127.0.0.1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$SHARED" ] && [ -x "$SHARED/run.sh" ] || { echo "shared bench harness not found (set SHARED_BENCH)" >&2; exit 2; }
DUR=${1:-10}
CERTS=${CERTS:-/tmp/bench-certs}
RUN=/tmp/gatehouse-bench
BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
mkdir -p "$RUN"
[ -x "$BIN" ] || { echo "build first: cargo build --release -p gatehouse" >&2; exit 2; }
[ -f "$CERTS/server.key" ] || "$SHARED/certs.sh" "$CERTS" >/dev/null

cleanup() {
  for f in "$RUN"/*.pid; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  (cd "$SHARED" && MTLS=off ./peers.sh stop >/dev/null 2>&1 || true; ./upstream/upstream.sh stop >/dev/null 2>&1 || true)
}
trap cleanup EXIT

(cd "$SHARED" && ./upstream/upstream.sh start >/dev/null && MTLS=off RESUMPTION=on ./peers.sh start nginx haproxy envoy >/dev/null)

start_gatehouse() { # start_gatehouse NAME CONFIG PORT
  sed "s|__CERTS__|$CERTS|g; s|__RUN__|$RUN|g" "$HERE/$2" > "$RUN/$1.yaml"
  GATEHOUSE_LOG=warn RUST_BACKTRACE=0 taskset -c 1 "$BIN" run -c "$RUN/$1.yaml" --workers 1 > "$RUN/$1.log" 2>&1 &
  echo $! > "$RUN/$1.pid"
  for _ in $(seq 100); do
    curl -sfk -o /dev/null "https://127.0.0.1:$3/" && return 0
    sleep 0.1
  done
  echo "gatehouse ($1) did not start; see $RUN/$1.log" >&2; exit 1
}
start_gatehouse gh0 gatehouse-0.yaml 18447
start_gatehouse gh6 gatehouse-6.yaml 18448
start_gatehouse gh0obs gatehouse-0-observed.yaml 18449

UP=$(cat /tmp/bench-upstream/nginx.pid)
run() { # run LABEL PID URL [extra wrk header]
  (cd "$SHARED" && RESULTS_DIR=$RUN/results ./run.sh -g wrk -c 32 -d "$DUR" -p "$2" -U "$UP" -l "$1" "$3")
}
run nginx "$(cat /tmp/bench-peers/nginx/pid)" https://127.0.0.1:18443/
run haproxy "$(cat /tmp/bench-peers/haproxy/pid)" https://127.0.0.1:18444/
run envoy "$(cat /tmp/bench-peers/envoy/pid)" https://127.0.0.1:18445/
run gatehouse-0 "$(cat "$RUN/gh0.pid")" https://127.0.0.1:18447/
run gatehouse-6 "$(cat "$RUN/gh6.pid")" https://127.0.0.1:18448/
run gatehouse-0-observed "$(cat "$RUN/gh0obs.pid")" https://127.0.0.1:18449/

if [ "${H2:-1}" != 0 ]; then
  run_h2() { # run_h2 LABEL PID URL
    (cd "$SHARED" && RESULTS_DIR=$RUN/results ./run.sh -g h2load -P h2 -c 32 -m 8 -d "$DUR" -p "$2" -U "$UP" -l "$1" "$3")
  }
  run_h2 nginx-h2 "$(cat /tmp/bench-peers/nginx/pid)" https://127.0.0.1:18443/
  run_h2 haproxy-h2 "$(cat /tmp/bench-peers/haproxy/pid)" https://127.0.0.1:18444/
  run_h2 envoy-h2 "$(cat /tmp/bench-peers/envoy/pid)" https://127.0.0.1:18445/
  run_h2 gatehouse-0-h2 "$(cat "$RUN/gh0.pid")" https://127.0.0.1:18447/
fi
