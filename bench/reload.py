#!/usr/bin/env python3
"""bench/reload.py [ROUNDS] — time from SIGHUP to the new config serving.

Two configs, each run by the release binary (`target/release/gatehouse`,
two workers) on loopback:

- the quickstart (examples/quickstart.yaml, ports moved);
- a generated config of 200 APIs with 5 policies each (3 of the 5 with a
  config of their own per API: 600 distinct pools, 2 shared).

For each, ROUNDS (default 5) reloads of two kinds, alternating:

- "marker": only one policy's config changes (one new pool);
- "all":    every per-API policy config changes (600 new pools, same
            components).

A reload is timed from `kill -HUP` to the first response that shows the
new config, read by a client that polls on one keep-alive connection (each
request loads the config in force). The script also reads
gatehouse_policy_components_compiled_total before and after: a reload of
unchanged components must compile nothing. Everything is bounded in time
and stays on 127.0.0.1.
"""

import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.environ.get("GATEHOUSE_BIN", os.path.join(ROOT, "target/release/gatehouse"))
PORT, ADMIN = 18470, 18471


def quickstart(marker):
    text = open(os.path.join(ROOT, "examples/quickstart.yaml")).read()
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{PORT}").replace(
        "127.0.0.1:9901", f"127.0.0.1:{ADMIN}")
    return text.replace("value: hello}", f"value: {marker}}}")


def generated(marker, variant):
    lines = [
        f'listeners: [{{name: main, address: "127.0.0.1:{PORT}"}}]',
        f'admin: {{address: "127.0.0.1:{ADMIN}"}}',
        "policy_runtime: {max_instances: 2048, memory_limit_mib: 16}",
        'upstreams: {echo: {url: "builtin:echo"}}',
        "apis:",
        "  - name: probe",
        "    path: /hello",
        "    upstream: echo",
        f"    policies: {{inbound: [{{set-header: {{name: x-gateway-route, value: {marker}}}}}]}}",
    ]
    for i in range(200):
        lines += [
            f"  - name: api{i}",
            f"    path: /api{i}",
            "    upstream: echo",
            "    policies:",
            "      inbound:",
            f'        - check-header: {{name: x-tenant, values: [acme, "t{i}-{variant}"]}}',
            "        - check-header: {name: host}",
            f'        - set-header: {{name: x-api, value: "api{i}-{variant}"}}',
            "        - set-header: {name: x-env, value: prod}",
            "      outbound:",
            f'        - set-header: {{name: x-served-by, value: "api{i}-{variant}"}}',
        ]
    return "\n".join(lines) + "\n"


def metric(name):
    c = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=5)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    m = re.search(rf"^{name} (\d+)", body, re.M)
    return int(m.group(1)) if m else 0


def route_of(conn):
    conn.request("GET", "/hello", headers={"x-tenant": "acme"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"status {r.status}: {body[:200]!r}")
    return json.loads(body)["headers"].get("x-gateway-route")


def wait_serving(deadline_s=60):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
            route_of(c)
            return c
        except (OSError, RuntimeError, http.client.HTTPException):
            time.sleep(0.05)
    raise SystemExit("the gateway did not start")


def bench(name, make, rounds):
    d = tempfile.mkdtemp(prefix="gatehouse-reload-")
    cfg = os.path.join(d, "gateway.yaml")
    open(cfg, "w").write(make("m0", 0))
    log = open(os.path.join(d, "gateway.log"), "w")
    env = dict(os.environ, GATEHOUSE_LOG="info,gatehouse::access=off", RUST_BACKTRACE="0")
    started = time.time()
    p = subprocess.Popen([BIN, "run", "-c", cfg, "--workers", "2"], stdout=log, stderr=log, env=env)
    try:
        conn = wait_serving()
        print(f"{name}: started in {time.time() - started:.2f} s")
        results = {"marker": [], "all": []}
        compiled = []
        variant = 0
        for r in range(1, 2 * rounds + 1):
            kind = "marker" if r % 2 else "all"
            if kind == "all":
                variant += 1
            marker = f"m{r}"
            open(cfg, "w").write(make(marker, variant))
            before = metric("gatehouse_policy_components_compiled_total")
            t0 = time.perf_counter()
            os.kill(p.pid, signal.SIGHUP)
            end = time.time() + 60
            while route_of(conn) != marker:
                if time.time() > end:
                    raise SystemExit(f"{name}: reload {r} never served")
            results[kind].append((time.perf_counter() - t0) * 1000)
            compiled.append(metric("gatehouse_policy_components_compiled_total") - before)
            time.sleep(0.2)
        for kind, ms in results.items():
            print(f"  {kind:6s} SIGHUP -> new config serving: median {statistics.median(ms):7.1f} ms"
                  f"  (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})")
        print(f"  components compiled per reload: {compiled}")
        took = re.findall(r"took_ms=(\d+)", open(os.path.join(d, "gateway.log")).read())
        print(f"  build time per reload (log, ms): {took}")
    finally:
        p.terminate()
        p.wait(timeout=30)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if not os.access(BIN, os.X_OK):
        raise SystemExit("build first: cargo build --release -p gatehouse")
    bench("quickstart", lambda marker, _v: quickstart(marker), rounds)
    bench("200 APIs x 5 policies", generated, rounds)


if __name__ == "__main__":
    main()
