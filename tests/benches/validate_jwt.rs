//! The cost of `validate-jwt` per request, with everything the host does
//! for the call (instance checkout, the header read, the signature check
//! through the `jose` interface, the claims, the output variables):
//!
//! - a full validation of an RS256 and of an ES256 token (PyJWT-minted,
//!   static keys, `audiences`, `issuers` and one required claim, the
//!   claims written to a variable): 300 distinct tokens taken in turn, so
//!   that the per-instance cache of verified tokens (256 entries) never
//!   answers;
//! - the same RS256 token again: a cache hit;
//! - for scale, `set-header` with a fixed value (the call floor).
//!
//! `cargo bench -p gatehouse-tests --bench validate_jwt`

use std::cell::Cell;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gatehouse::exchange::{ConnInfo, Exchange};
use gatehouse::proxy::chain::{self, Outcome, Section};
use gatehouse::proxy::snapshot::ChainStep;
use gatehouse_tests::bench::{builtin_step as step, runtime};
use gatehouse_tests::jwt::{sign, tokens, Kit};
use serde_json::json;

// The allocator the gatehouse binary runs with (runtime/src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Distinct tokens per algorithm: more than the cache holds.
const DISTINCT: usize = 300;

fn exchange(conn: &Arc<ConnInfo>, token: &str) -> Box<Exchange> {
    let bearer = format!("Bearer {token}");
    gatehouse_tests::bench::exchange(conn, "api.test", &[("authorization", &bearer)])
}

fn bench(c: &mut Criterion) {
    let kit = Kit::new();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let mut reqs = Vec::new();
    for (alg, key) in [("RS256", "rsa"), ("ES256", "ec256"), ("HS256", "hmac")] {
        for i in 0..DISTINCT {
            let claims = json!({"sub": format!("user-{i}"), "aud": "orders", "iss": "https://idp.test",
                "scp": "orders.read orders.write", "exp": exp, "jti": format!("{alg}-{i}")});
            reqs.push((
                format!("{alg}-{i}"),
                sign(alg, kit.signer(key), &claims, json!({})),
            ));
        }
    }
    let minted = tokens(reqs.iter().map(|(n, r)| (n.as_str(), r.clone())).collect());
    let list = |alg: &str| -> Vec<String> {
        (0..DISTINCT)
            .map(|i| minted[&format!("{alg}-{i}")].clone())
            .collect()
    };
    let rs256 = list("RS256");
    let es256 = list("ES256");
    let hs256 = list("HS256");

    let rt = runtime();
    let config = |key: serde_json::Value| {
        json!({
            "header_name": "authorization", "require_scheme": "Bearer",
            "issuer_signing_keys": [key],
            "audiences": ["orders"], "issuers": ["https://idp.test"],
            "required_claims": [{"name": "scp", "separator": " ", "values": ["orders.read"]}],
            "output_token_variable_name": "jwt",
        })
        .to_string()
    };
    let rs = step(
        &rt,
        "validate-jwt",
        &config(json!({"pem": kit.public("rsa")})),
    );
    let es = step(
        &rt,
        "validate-jwt",
        &config(json!({"pem": kit.public("ec256")})),
    );
    let hs = step(
        &rt,
        "validate-jwt",
        &config(json!({"base64": kit.secret("hmac")})),
    );
    let floor = step(&rt, "set-header", r#"{"name":"x-fixed","value":"fixed"}"#);

    let addr = "127.0.0.1:50000".parse().expect("addr");
    let conn = Arc::new(ConnInfo::new(addr, addr, Arc::from("bench"), None));
    let mut ran = Vec::new();
    let mut run = |steps: &[ChainStep], ex: Box<Exchange>| match chain::run(
        Section::Inbound,
        steps,
        ex,
        &mut ran,
    ) {
        Outcome::Continue(ex) => {
            assert!(ex.vars.is_empty() || ex.vars.contains_key("jwt.sub"));
            ex
        }
        _ => panic!("the token must be accepted"),
    };
    let _ = run(&rs, exchange(&conn, &rs256[0]));
    let _ = run(&es, exchange(&conn, &es256[0]));
    let _ = run(&hs, exchange(&conn, &hs256[0]));

    for (name, steps, list) in [
        ("validate-jwt RS256, full validation", &rs, &rs256),
        ("validate-jwt ES256, full validation", &es, &es256),
        ("validate-jwt HS256, full validation", &hs, &hs256),
    ] {
        let next = Cell::new(0usize);
        c.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let i = next.get();
                    next.set((i + 1) % DISTINCT);
                    exchange(&conn, &list[i])
                },
                |ex| run(steps, ex),
                BatchSize::SmallInput,
            )
        });
    }
    c.bench_function("validate-jwt RS256, cache hit", |b| {
        b.iter_batched(
            || exchange(&conn, &rs256[0]),
            |ex| run(&rs, ex),
            BatchSize::SmallInput,
        )
    });
    let bare = step(
        &rt,
        "validate-jwt",
        &json!({"header_name": "authorization", "require_scheme": "Bearer",
                "issuer_signing_keys": [{"pem": kit.public("rsa")}]})
        .to_string(),
    );
    let _ = run(&bare, exchange(&conn, &rs256[0]));
    c.bench_function("validate-jwt RS256, cache hit, no output variable", |b| {
        b.iter_batched(
            || exchange(&conn, &rs256[0]),
            |ex| run(&bare, ex),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("set-header fixed value (call floor)", |b| {
        b.iter_batched(
            || exchange(&conn, &rs256[0]),
            |ex| run(&floor, ex),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
