//! Policy call cost, measured the way the pipeline pays it: check an
//! instance out of its pool, move the request into its store, set the
//! deadline, call `on-request`, move the request back, return the
//! instance — and, for the chain, apply each decision's header edits.
//!
//! `cargo bench -p gatehouse --bench policy_call`
//! (unset RUST_BACKTRACE: with it, every wasmtime error captures a
//! backtrace; these benchmarks make no errors, but keep runs comparable).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::policy::{builtin, Exchange, PolicyPool, PolicyRuntime, RouteInfo, RuntimeSettings};
use gatehouse::proxy::conn::ConnInfo;
use gatehouse::proxy::pipeline::{run_inbound, Inbound};

fn runtime() -> Arc<PolicyRuntime> {
    PolicyRuntime::new(RuntimeSettings {
        call_deadline_ms: 100,
        memory_limit_mib: 64,
        instances_per_policy: 4,
        max_instances: 64,
        cache_dir: gatehouse::policy::cache::default_dir(),
    })
    .expect("policy runtime")
}

fn pool(rt: &Arc<PolicyRuntime>, name: &str, config: &str) -> Arc<PolicyPool> {
    let wasm = builtin::get(name).expect("built-in policy");
    let component = rt.load_component(wasm).expect("component");
    rt.pool(name, &component, config.to_string(), Default::default())
        .expect("pool")
}

/// A request with 10 headers, as a browser or SDK client sends.
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
    let addr: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
    Box::new(Exchange {
        request: req.into_parts().0,
        response: None,
        conn: Arc::new(ConnInfo::new(addr, addr, 0, None)),
        vars: Default::default(),
        route: RouteInfo::default(),
        request_id: gatehouse::policy::RequestId::new(),
        started: Instant::now(),
        trace: None,
    })
}

fn bench(c: &mut Criterion) {
    let rt = runtime();

    let check = pool(&rt, "check-header", r#"{"name":"x-tenant"}"#);
    let mut slot = Some(exchange());
    c.bench_function("check-header warm call, 10 headers", |b| {
        b.iter(|| {
            let ex = slot.take().expect("exchange");
            let (back, decision) = check.on_request(ex);
            slot = Some(back);
            assert!(matches!(
                decision,
                Ok(gatehouse::policy::bindings::Decision::Continue(_))
            ));
        })
    });

    let chain = vec![
        pool(&rt, "check-header", r#"{"name":"x-tenant"}"#),
        pool(
            &rt,
            "check-header",
            r#"{"name":"x-env","values":["prod","test"]}"#,
        ),
        pool(&rt, "check-header", r#"{"name":"authorization"}"#),
        pool(
            &rt,
            "set-header",
            r#"{"name":"x-gateway","value":"gatehouse"}"#,
        ),
        pool(&rt, "set-header", r#"{"name":"x-route","value":"orders"}"#),
    ];
    let mut slot = Some(exchange());
    c.bench_function("5-policy inbound chain, 10 headers", |b| {
        b.iter(|| {
            let ex = slot.take().expect("exchange");
            match run_inbound(&chain, ex) {
                Inbound::Forward(back) => slot = Some(back),
                _ => panic!("the chain must let the request through"),
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
