//! Policy call cost, measured the way the pipeline pays it: check an
//! instance out of its pool, move the request into its store, set the
//! deadline, call the hook, move the request back, record the call's
//! duration in its histogram, return the instance — and, for the chain,
//! apply each decision's header edits through the one chain runner.
//!
//! `cargo bench -p gatehouse --bench policy_call`
//! (unset RUST_BACKTRACE: with it, every wasmtime error captures a
//! backtrace; these benchmarks make no errors, but keep runs comparable).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gatehouse::exchange::{ConnInfo, Exchange, RequestId};
use gatehouse::observe::metrics::Metrics;
use gatehouse::policy::{builtin, CallSettings, EngineSettings, HostServices, PolicyRuntime};
use gatehouse::proxy::chain::{self, Outcome, Section};
use gatehouse::proxy::snapshot::ChainStep;

// The allocator the gatehouse binary runs with (runtime/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn runtime() -> Arc<PolicyRuntime> {
    PolicyRuntime::new(
        EngineSettings {
            memory_limit_mib: 64,
            max_instances: 64,
            cache_dir: gatehouse::policy::cache::default_dir(),
        },
        HostServices::new(Arc::new(Metrics::new())),
    )
    .expect("policy runtime")
}

fn step(rt: &Arc<PolicyRuntime>, name: &str, config: &str) -> ChainStep {
    let wasm = builtin::get(name).expect("built-in policy");
    let component = rt.load_component(wasm).expect("component");
    let pool = rt
        .pool(
            name,
            &component,
            config.to_string(),
            Default::default(),
            CallSettings {
                deadline_ms: 100,
                instances: 4,
            },
        )
        .expect("pool");
    ChainStep {
        pool,
        scope: Arc::from("api:bench"),
    }
}

/// A request with 10 headers, as a browser or SDK client sends, and a
/// response head with 3.
fn exchange() -> Box<Exchange> {
    let req = http::Request::get("https://api.test.com/orders/42?expand=items")
        .header("host", "api.test.com")
        .header("user-agent", "bench/1.0")
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, br")
        .header("accept-language", "en")
        .header("authorization", "Bearer abc.def.ghi")
        .header("x-tenant", "acme")
        .header("x-env", "prod")
        .header("x-request-start", "1700000000")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(())
        .expect("request");
    let resp = http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", "2")
        .header("date", "Tue, 01 Dec 2026 00:00:00 GMT")
        .body(())
        .expect("response");
    let addr: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
    let mut ex = Box::new(Exchange::new(
        req.into_parts().0,
        Arc::new(ConnInfo::new(addr, addr, Arc::from("bench"), None)),
        RequestId::new(),
        Instant::now(),
    ));
    ex.response = Some(resp.into_parts().0);
    ex
}

fn bench(c: &mut Criterion) {
    let rt = runtime();

    // One call as the chain runner makes it: checkout, call, return the
    // instance, time it and record it in the policy's histogram.
    let check = vec![step(&rt, "check-header", r#"{"name":"x-tenant"}"#)];
    let mut slot = Some(exchange());
    let mut ran = Vec::new();
    c.bench_function("check-header warm call, 10 headers", |b| {
        b.iter(|| {
            let ex = slot.take().expect("exchange");
            match chain::run(Section::Inbound, &check, ex, &mut ran) {
                Outcome::Continue(back) => slot = Some(back),
                _ => panic!("check-header must let the request through"),
            }
        })
    });

    // ip-filter: an allow list of ten CIDR blocks, two ranges and two
    // addresses; the client (127.0.0.1) matches the last block.
    let ip = vec![step(
        &rt,
        "ip-filter",
        r#"{"action":"allow","addresses":["192.0.2.7","2001:db8::1"],
            "address_ranges":[{"from":"198.51.100.1","to":"198.51.100.9"},{"from":"2001:db8::10","to":"2001:db8::20"}],
            "cidrs":["10.0.0.0/8","172.16.0.0/12","192.168.0.0/16","100.64.0.0/10","fd00::/8",
                     "2001:db8:1::/48","2001:db8:2::/48","203.0.113.0/24","169.254.0.0/16","127.0.0.0/8"]}"#,
    )];
    let mut slot = Some(exchange());
    c.bench_function("ip-filter warm call, 14 rules", |b| {
        b.iter(|| {
            let ex = slot.take().expect("exchange");
            match chain::run(Section::Inbound, &ip, ex, &mut ran) {
                Outcome::Continue(back) => slot = Some(back),
                _ => panic!("ip-filter must let 127.0.0.1 through"),
            }
        })
    });

    // The same call without the runner's timing and recording: the cost
    // of entering the component and the host calls alone.
    let scope = check[0].scope.clone();
    let pool = check[0].pool.clone();
    let mut slot = Some(exchange());
    c.bench_function("check-header bare pool call, 10 headers", |b| {
        b.iter(|| {
            let ex = slot.take().expect("exchange");
            let (back, decision) = pool.on_request(ex, &scope);
            slot = Some(back);
            assert!(decision.is_ok());
        })
    });

    // The bench config's chain (bench/gatehouse-6.yaml): two checks, two
    // sets and a rate limit by client address (memory store) inbound, one
    // set outbound; a fresh 10-header request each time.
    let inbound = vec![
        step(&rt, "check-header", r#"{"name":"x-tenant"}"#),
        step(
            &rt,
            "check-header",
            r#"{"name":"x-env","values":["prod","test"]}"#,
        ),
        step(
            &rt,
            "set-header",
            r#"{"name":"x-gateway","value":"gatehouse"}"#,
        ),
        step(&rt, "set-header", r#"{"name":"x-route","value":"orders"}"#),
        step(
            &rt,
            "rate-limit-by-key",
            r#"{"calls":1000000000,"renewal_period":300,"counter_key":"connection.client_ip"}"#,
        ),
    ];
    let outbound = vec![step(
        &rt,
        "set-header",
        r#"{"name":"x-served-by","value":"gatehouse"}"#,
    )];
    c.bench_function(
        "bench chain: 2 check + 2 set + rate-limit-by-key in, 1 set out",
        |b| {
            b.iter_batched(
                exchange,
                |ex| {
                    let ex = match chain::run(Section::Inbound, &inbound, ex, &mut ran) {
                        Outcome::Continue(ex) => ex,
                        _ => panic!("the inbound chain must let the request through"),
                    };
                    match chain::run(Section::Outbound, &outbound, ex, &mut ran) {
                        Outcome::Continue(ex) => ex,
                        _ => panic!("the outbound chain must let the response through"),
                    }
                },
                BatchSize::SmallInput,
            )
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
