//! What the criterion benches share: a policy runtime as the gateway makes
//! one, a chain of one policy, and a request to run it on.

use std::sync::Arc;
use std::time::Instant;

use gatehouse::exchange::{ConnInfo, Exchange, RequestId};
use gatehouse::observe::metrics::Metrics;
use gatehouse::policy::{CallSettings, EngineSettings, HostServices, PolicyRuntime};
use gatehouse::proxy::snapshot::ChainStep;

/// A policy runtime (64 MiB per instance, 64 instances).
pub fn runtime() -> Arc<PolicyRuntime> {
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

/// A chain of one policy, `name` from `wasm` with `config` (JSON), in the
/// scope `api:bench`, with a pool of `instances`.
pub fn step(
    rt: &Arc<PolicyRuntime>,
    name: &str,
    wasm: &[u8],
    config: &str,
    instances: usize,
) -> Vec<ChainStep> {
    let component = rt.load_component(wasm).expect("component");
    let pool = rt
        .pool(
            name,
            &component,
            config.to_string(),
            Default::default(),
            CallSettings {
                deadline_ms: 100,
                instances,
            },
        )
        .expect("pool");
    vec![ChainStep {
        pool,
        scope: Arc::from("api:bench"),
    }]
}

/// A built-in policy's chain of one, with a pool of one instance.
pub fn builtin_step(rt: &Arc<PolicyRuntime>, name: &str, config: &str) -> Vec<ChainStep> {
    let wasm = gatehouse::policy::builtin::get(name).expect("built-in");
    step(rt, name, wasm, config, 1)
}

/// A `GET https://{host}/orders/42` with three ordinary headers and
/// `extra`, on `conn`.
pub fn exchange(conn: &Arc<ConnInfo>, host: &str, extra: &[(&str, &str)]) -> Box<Exchange> {
    let mut req = http::Request::get(format!("https://{host}/orders/42"))
        .header("host", host)
        .header("user-agent", "bench/1.0")
        .header("accept", "application/json");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    Box::new(Exchange::new(
        req.body(()).expect("request").into_parts().0,
        conn.clone(),
        RequestId::new(),
        Instant::now(),
    ))
}
