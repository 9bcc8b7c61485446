//! Test fixture: misbehaves on requests that carry `x-misbehave: <mode>`.
//! Modes: `panic`, `loop` (never returns), `alloc` (allocates until the
//! memory cap), `std` (uses HashMap, clocks and env; sets `x-std`),
//! `stdout` (prints: traps), `vars` (echoes context variable `probe` to
//! `x-probe`), `frame-respond` and `frame-deny` (a response or a fault
//! whose headers try to set `content-length` and `transfer-encoding`),
//! and modes that go over the host's caps: `many-edits`, `big-edit`,
//! `big-respond`, `big-fault`, `many-vars`, `long-var-name`,
//! `many-exprs`, `slow-expr` (an expression too costly for the deadline),
//! `many-comprehensions` (refused at compile; the error comes back in
//! `x-compile-error`).
//! Anything else continues.
//!
//! With `record_completion: true`, it asks for the completion hook and
//! traces what the gateway reports there.
use gatehouse_sdk::{
    export_policy, host, variables, Completion, Connection, Decision, Expression, Fault,
    HeaderEdit, Policy, Request, ResponseSpec,
};

/// `[1,2,...,n]`.
fn list(n: usize) -> String {
    let items: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(","))
}
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    fail_construction: bool,
    #[serde(default)]
    record_completion: bool,
    /// Text the `note` modes pass on (a secret, in the secret tests).
    #[serde(default)]
    note: String,
}

pub struct Misbehave {
    record_completion: bool,
    note: String,
}

impl Policy for Misbehave {
    type Config = Config;
    fn new(c: Config) -> Result<Self, String> {
        if c.fail_construction {
            return Err("fail_construction: asked to fail".into());
        }
        Ok(Misbehave {
            record_completion: c.record_completion,
            note: c.note,
        })
    }
    fn wants_completion(&self) -> bool {
        self.record_completion
    }
    fn on_complete(&self, req: &Request, _conn: &Connection, info: &Completion) {
        host::trace(&format!(
            "completion {} {} status={} request_bytes={} response_bytes={} complete={} fault={} upstream_first_byte={}",
            req.method(),
            req.path(),
            info.status,
            info.request_bytes,
            info.response_bytes,
            info.complete,
            info.fault_code.as_deref().unwrap_or("none"),
            info.upstream_first_byte_us.is_some(),
        ));
    }
    fn on_request(&self, req: &Request, _conn: &Connection) -> Decision {
        match req.header("x-misbehave").as_deref() {
            Some("panic") => panic!("misbehave: asked to panic"),
            Some("loop") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("alloc") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("std") => {
                // Everyday std: a HashMap (seeded from wasi:random), clocks
                // and the environment must work inside a policy.
                let mut m = std::collections::HashMap::new();
                m.insert("k", 1u32);
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let t = std::time::Instant::now();
                let envs = std::env::vars().count();
                let value = format!(
                    "map={} wall>2020={} mono={} env={}",
                    m["k"],
                    wall > 1_577_836_800,
                    t.elapsed().as_secs() < 5,
                    envs
                );
                Decision::edit(vec![HeaderEdit::set("x-std", value)])
            }
            Some("stdout") => {
                println!("a policy has no stdout");
                Decision::proceed()
            }
            Some("frame-respond") => Decision::respond(
                ResponseSpec::new(200)
                    .with_header("content-length", "1")
                    .with_header("transfer-encoding", "chunked")
                    .with_header("x-from", "policy")
                    .with_body("whole body"),
            ),
            Some("frame-deny") => Decision::deny(
                Fault::new(
                    403,
                    "policy.misbehave.frame",
                    "Framing",
                    "a fault with framing headers",
                )
                .with_header("content-length", "1")
                .with_header("transfer-encoding", "chunked")
                .with_header("x-from", "policy"),
            ),
            Some("many-edits") => Decision::edit(
                (0..1000)
                    .map(|i| HeaderEdit::set(format!("x-e{i}"), "v"))
                    .collect(),
            ),
            Some("big-edit") => Decision::edit(vec![HeaderEdit::set("x-big", "v".repeat(100_000))]),
            Some("big-respond") => {
                Decision::respond(ResponseSpec::new(200).with_body(vec![b'b'; 2 << 20]))
            }
            Some("big-fault") => Decision::deny(Fault::new(
                400,
                "policy.misbehave.big",
                "Big",
                "d".repeat(10_000),
            )),
            Some("many-vars") => {
                for i in 0..300 {
                    variables::set(&format!("v{i}"), "x");
                }
                Decision::proceed()
            }
            Some("long-var-name") => {
                variables::set(&"n".repeat(1000), "x");
                Decision::proceed()
            }
            Some("many-exprs") => {
                let mut held = Vec::new();
                for i in 0..100 {
                    match Expression::compile(&format!("{i} + 1")) {
                        Ok(e) => held.push(e),
                        Err(_) => break,
                    }
                }
                Decision::edit(vec![HeaderEdit::set("x-held", held.len().to_string())])
            }
            Some("slow-expr") => {
                // 250³ inner steps, each formatting a number: seconds of
                // work, far past the deadline of the tests that use it.
                let n = 250;
                let src = format!(
                    "{}.map(x, {}.map(y, {}.all(z, string(z * x * y).size() > 0)))",
                    list(n),
                    list(n),
                    list(n)
                );
                match Expression::compile(&src) {
                    Ok(e) => {
                        let _ = e.evaluate();
                        Decision::edit(vec![HeaderEdit::set("x-evaluated", "yes")])
                    }
                    Err(e) => Decision::edit(vec![HeaderEdit::set("x-compile-error", e)]),
                }
            }
            Some("many-comprehensions") => {
                match Expression::compile("[1].map(a, a).map(b, b).map(c, c).map(d, d)") {
                    Ok(_) => Decision::proceed(),
                    Err(e) => Decision::edit(vec![HeaderEdit::set("x-compile-error", e)]),
                }
            }
            // The note, as the policy holds it, on the request (to the
            // upstream) or in a response of its own (to the client), as it
            // is, base64-encoded or percent-encoded.
            Some("set-note") => Decision::edit(vec![HeaderEdit::set("x-note", self.note.clone())]),
            Some("respond-note") => Decision::respond(
                ResponseSpec::new(200)
                    .with_header("x-note", self.note.clone())
                    .with_header("x-note-b64", b64(self.note.as_bytes()))
                    .with_header("x-note-pct", pct(&self.note)),
            ),
            Some("vars") => {
                let v = variables::get("probe").unwrap_or_else(|| "none".into());
                Decision::edit(vec![HeaderEdit::set("x-probe", v)])
            }
            _ => Decision::proceed(),
        }
    }
}

export_policy!(Misbehave);

/// Standard base64 with padding.
fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every byte that is not unreserved as `%XX`.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
