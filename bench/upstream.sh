#!/usr/bin/env bash
# bench/upstream.sh [ROUNDS] [SECONDS] — what upstream mTLS and HTTP/2 to
# upstreams cost once connections are pooled: requests per proxy
# CPU-second through Gatehouse to a plain HTTP/1.1 upstream, to an mTLS
# upstream (nginx with ssl_verify_client on, the gateway presenting the
# bench client certificate), and to an h2c upstream; nginx proxying to the
# same plain and mTLS upstreams as the peer figure. The client side is
# plain HTTP/1.1 keep-alive (wrk, 32 connections), so only the upstream
# side differs. ROUNDS rounds (default 5) of SECONDS-second runs (default
# 6), interleaved; medians. Proxies: one worker pinned to CPU 1; wrk and
# the upstreams on CPU 0. Loopback only, bounded in time.
# Raw lines: /tmp/gatehouse-bench/upstream.txt.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$(cd "$ROOT/../shared/bench" 2>/dev/null && pwd || true)}
[ -n "$SHARED" ] && [ -x "$SHARED/run.sh" ] || { echo "shared bench harness not found (set SHARED_BENCH)" >&2; exit 2; }
ROUNDS=${1:-5}
DUR=${2:-6}
CERTS=${CERTS:-/tmp/bench-certs}
RUN=/tmp/gatehouse-bench
BIN=${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}
OUT=$RUN/upstream.txt
mkdir -p "$RUN/up-mtls" "$RUN/px-nginx"
[ -x "$BIN" ] || { echo "build first: cargo build --release -p gatehouse" >&2; exit 2; }
[ -f "$CERTS/server.key" ] || "$SHARED/certs.sh" "$CERTS" >/dev/null

cleanup() {
  [ -s "$RUN/up-gh.pid" ] && kill "$(cat "$RUN/up-gh.pid")" 2>/dev/null || true
  for d in up-mtls px-nginx; do
    [ -s "$RUN/$d/nginx.pid" ] && kill -QUIT "$(cat "$RUN/$d/nginx.pid")" 2>/dev/null || true
  done
  (cd "$SHARED" && ./upstream/upstream.sh stop >/dev/null 2>&1 || true)
}
trap cleanup EXIT
(cd "$SHARED" && ./upstream/upstream.sh start >/dev/null)

# The mTLS upstream: TLS 1.3, requires a client certificate from the bench CA.
cat > "$RUN/up-mtls/nginx.conf" <<EOT
worker_processes 1;
pid $RUN/up-mtls/nginx.pid;
error_log $RUN/up-mtls/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $RUN/up-mtls/body; proxy_temp_path $RUN/up-mtls/proxy;
  fastcgi_temp_path $RUN/up-mtls/fcgi; uwsgi_temp_path $RUN/up-mtls/uwsgi; scgi_temp_path $RUN/up-mtls/scgi;
  server {
    listen 127.0.0.1:18090 ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate $CERTS/server-chain.crt;
    ssl_certificate_key $CERTS/server.key;
    ssl_client_certificate $CERTS/ca.crt;
    ssl_verify_client on;
    location / { return 200 "hello from upstream\n"; }
  }
}
EOT
taskset -c 0 nginx -p "$RUN/up-mtls" -e "$RUN/up-mtls/error.log" -c "$RUN/up-mtls/nginx.conf"

# The peer: nginx proxying to the same upstreams, keep-alive pools.
cat > "$RUN/px-nginx/nginx.conf" <<EOT
worker_processes 1;
pid $RUN/px-nginx/nginx.pid;
error_log $RUN/px-nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $RUN/px-nginx/body; proxy_temp_path $RUN/px-nginx/proxy;
  fastcgi_temp_path $RUN/px-nginx/fcgi; uwsgi_temp_path $RUN/px-nginx/uwsgi; scgi_temp_path $RUN/px-nginx/scgi;
  upstream plain { server 127.0.0.1:18080; keepalive 64; }
  upstream mtls { server 127.0.0.1:18090; keepalive 64; }
  server {
    listen 127.0.0.1:18480;
    location /plain/ { proxy_pass http://plain/; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /mtls/ {
      proxy_pass https://mtls/; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate $CERTS/client.crt; proxy_ssl_certificate_key $CERTS/client.key;
      proxy_ssl_trusted_certificate $CERTS/ca.crt; proxy_ssl_verify on;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_ssl_name test.com; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
    }
  }
}
EOT
taskset -c 1 nginx -p "$RUN/px-nginx" -e "$RUN/px-nginx/error.log" -c "$RUN/px-nginx/nginx.conf"

sed "s|__CERTS__|$CERTS|g" "$HERE/gatehouse-upstreams.yaml" > "$RUN/up-gh.yaml"
GATEHOUSE_LOG=warn RUST_BACKTRACE=0 taskset -c 1 "$BIN" run -c "$RUN/up-gh.yaml" --workers 1 > "$RUN/up-gh.log" 2>&1 &
echo $! > "$RUN/up-gh.pid"
for _ in $(seq 100); do
  curl -sf -o /dev/null http://127.0.0.1:18470/mtls/ && break
  sleep 0.1
done
curl -sf -o /dev/null http://127.0.0.1:18470/mtls/ || { echo "gatehouse -> mtls upstream fails; see $RUN/up-gh.log" >&2; exit 1; }
curl -sf -o /dev/null http://127.0.0.1:18470/h2c/ || { echo "gatehouse -> h2c upstream fails" >&2; exit 1; }
curl -sf -o /dev/null http://127.0.0.1:18480/mtls/ || { echo "nginx -> mtls upstream fails; see $RUN/px-nginx/error.log" >&2; exit 1; }

UP="$(cat /tmp/bench-upstream/nginx.pid),$(cat "$RUN/up-mtls/nginx.pid")"
GH=$(cat "$RUN/up-gh.pid")
NX=$(cat "$RUN/px-nginx/nginx.pid")
: > "$OUT"
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  for c in "gatehouse-plain:$GH:18470/plain/" "gatehouse-mtls:$GH:18470/mtls/" "gatehouse-h2c:$GH:18470/h2c/" \
           "nginx-plain:$NX:18480/plain/" "nginx-mtls:$NX:18480/mtls/"; do
    IFS=: read -r label pid target <<< "$c"
    (cd "$SHARED" && RESULTS_DIR=$RUN/results ./run.sh -g wrk -c 32 -d "$DUR" -p "$pid" -U "$UP" -l "$label" "http://127.0.0.1:$target") | tee -a "$OUT" >&2
  done
done
echo "median requests per proxy CPU-second over $ROUNDS rounds of ${DUR}s (client: plain HTTP/1.1 keep-alive, wrk -c 32):"
med() { grep "^$1 " "$OUT" | sed -E 's/.*rps\/srv_core=([0-9]+).*/\1/' | sort -n |
  awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)), a[1], a[NR]}'; }
for p in gatehouse-plain gatehouse-mtls gatehouse-h2c nginx-plain nginx-mtls; do
  read -r m lo hi <<< "$(med "$p")"
  printf "  %-16s %6d  (min %d, max %d)\n" "$p" "$m" "$lo" "$hi"
  eval "M_${p//-/_}=$m"
done
awk -v p="$M_gatehouse_plain" -v m="$M_gatehouse_mtls" -v h="$M_gatehouse_h2c" -v np="$M_nginx_plain" -v nm="$M_nginx_mtls" 'BEGIN {
  printf "  gatehouse: mTLS costs %.1f%% over plain; h2c %.2fx plain HTTP/1.1\n", (p/m - 1) * 100, h/p
  printf "  nginx:     mTLS costs %.1f%% over plain\n", (np/nm - 1) * 100
  printf "  gatehouse-mtls / nginx-mtls: %.2fx\n", m/nm }'
