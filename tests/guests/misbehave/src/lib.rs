//! Test fixture: misbehaves on requests that carry `x-misbehave: <mode>`.
//! Modes: `panic`, `loop` (never returns), `alloc` (allocates until the
//! memory cap), `vars` (echoes context variable `probe` to `x-probe`).
//! Anything else continues.
use gatehouse_sdk::{export_policy, variables, Connection, Decision, HeaderEdit, Policy, Request};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    fail_construction: bool,
}

pub struct Misbehave;

impl Policy for Misbehave {
    type Config = Config;
    fn new(c: Config) -> Result<Self, String> {
        if c.fail_construction {
            return Err("fail_construction: asked to fail".into());
        }
        Ok(Misbehave)
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
            Some("vars") => {
                let v = variables::get("probe").unwrap_or_else(|| "none".into());
                Decision::edit(vec![HeaderEdit::set("x-probe", v)])
            }
            _ => Decision::proceed(),
        }
    }
}

export_policy!(Misbehave);
