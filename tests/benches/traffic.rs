//! The cost of a traffic policy per request, with everything the host does
//! for the call: `rate-limit-by-key` counting by the client address (a CEL
//! key expression, then an exact `acquire` in the counter store), in the
//! `memory` store and in the `durable` one (the same in-memory path, plus
//! change tracking for the file writer); `set-header` with a fixed value
//! for the call floor; and the memory store's `acquire` alone.
//!
//! `cargo bench -p gatehouse-tests --bench traffic`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gatehouse::counters::memory::MemoryStore;
use gatehouse::counters::{FailMode, Op, Window};
use gatehouse::exchange::{ConnInfo, Exchange};
use gatehouse::proxy::chain::{self, Outcome, Section};
use gatehouse::proxy::snapshot::ChainStep;
use gatehouse_tests::bench::{builtin_step as step, runtime};

// The allocator the gatehouse binary runs with (runtime/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn exchange(conn: &Arc<ConnInfo>) -> Box<Exchange> {
    gatehouse_tests::bench::exchange(conn, "api.test", &[])
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let limit = step(
        &rt,
        "rate-limit-by-key",
        r#"{"calls": 1000000000, "renewal_period": 60, "counter_key": "connection.client_ip"}"#,
    );
    let floor = step(&rt, "set-header", r#"{"name":"x-fixed","value":"fixed"}"#);
    let expr = step(
        &rt,
        "set-header",
        r#"{"name":"x-client","expression":"connection.client_ip"}"#,
    );
    let addr = "127.0.0.1:50000".parse().expect("addr");
    let conn = Arc::new(ConnInfo::new(addr, addr, Arc::from("bench"), None));
    let mut ran = Vec::new();
    let mut run = |steps: &[ChainStep], ex: Box<Exchange>| match chain::run(
        Section::Inbound,
        steps,
        ex,
        &mut ran,
    ) {
        Outcome::Continue(ex) => ex,
        Outcome::Fault(_, f) => panic!("admitted: {f:?}"),
        Outcome::Respond(..) => panic!("admitted"),
    };
    c.bench_function("rate-limit-by-key, memory store", |b| {
        b.iter_batched(
            || exchange(&conn),
            |ex| run(&limit, ex),
            BatchSize::SmallInput,
        )
    });
    let dir = std::env::temp_dir().join(format!("gh-bench-traffic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let settings = gatehouse::config::Counters {
        backend: gatehouse::config::CounterBackend::Durable,
        path: Some("counters.redb".into()),
        ..Default::default()
    };
    let store = rt
        .services()
        .prepare_counters(&settings, &dir, &|_| Err("no named values".into()))
        .expect("durable store")
        .expect("a new store");
    rt.services().install_counters(store);
    c.bench_function("rate-limit-by-key, durable store", |b| {
        b.iter_batched(
            || exchange(&conn),
            |ex| run(&limit, ex),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("set-header fixed value (call floor)", |b| {
        b.iter_batched(
            || exchange(&conn),
            |ex| run(&floor, ex),
            BatchSize::SmallInput,
        )
    });
    c.bench_function(
        "set-header connection.client_ip (the key expression alone)",
        |b| {
            b.iter_batched(
                || exchange(&conn),
                |ex| run(&expr, ex),
                BatchSize::SmallInput,
            )
        },
    );
    let store = MemoryStore::new(100_000, FailMode::Open);
    let key = "rate-limit-by-key\u{1f}api:bench\u{1f}calls\u{1f}Sliding(60)\u{1f}127.0.0.1";
    c.bench_function("memory store acquire alone", |b| {
        b.iter(|| {
            store.apply(
                key,
                u64::MAX,
                Window::Sliding(60),
                Op::Acquire(1),
                gatehouse::counters::now_ms(),
            )
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
