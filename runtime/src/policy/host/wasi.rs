//! The few WASI functions a policy gets for real.
//!
//! A `wasm32-wasip2` guest imports WASI through Rust's std even when the
//! policy never asks for it, and some everyday std types reach it: a
//! `HashMap` seeds itself from `wasi:random`, `SystemTime`/`Instant` read
//! `wasi:clocks`, `std::env` reads `wasi:cli/environment`. Those are served
//! here (randomness, clocks, an empty environment). Everything else — files,
//! sockets, stdout — is defined as a trap: a policy talks to the world only
//! through the `gatehouse:policy` host interfaces.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ring::rand::SecureRandom;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentType, Linker, LinkerInstance, Lower, ResourceType};
use wasmtime::Engine;

use super::HostState;

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// The origin of the monotonic clocks policies read (WASI and `host`).
pub fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn secure_bytes(len: u64) -> wasmtime::Result<Vec<u8>> {
    // A policy asking for more than 1 MiB of randomness at once is wrong.
    let len = usize::try_from(len.min(1 << 20)).unwrap_or(1 << 20);
    let mut v = vec![0u8; len];
    ring::rand::SystemRandom::new()
        .fill(&mut v)
        .map_err(|_| wasmtime::Error::msg("the system random source failed"))?;
    Ok(v)
}

/// Defines every `wasi:*` import of `component` as a trap (functions) or a
/// placeholder type (resources). [`define`] then shadows the functions that
/// are served for real; the linker must allow shadowing.
///
/// Only `wasi:*` imports are stubbed: a `gatehouse:policy/*` import is
/// matched by the linker's own definitions (including an older 0.1.x
/// version, by semver), and anything else is refused before this (see
/// [`crate::policy::imports`]).
///
/// # Errors
///
/// A definition the linker refuses.
pub fn stub_unserved(
    linker: &mut Linker<HostState>,
    component: &Component,
    engine: &Engine,
) -> wasmtime::Result<()> {
    for (name, item) in component.component_type().imports(engine) {
        if !name.starts_with("wasi:") {
            continue;
        }
        if let ComponentItem::ComponentInstance(instance) = item.ty {
            let mut inst = linker.instance(name)?;
            for (export, item) in instance.exports(engine) {
                stub(&mut inst, name, export, item.ty)?;
            }
        }
    }
    Ok(())
}

fn stub(
    inst: &mut LinkerInstance<'_, HostState>,
    parent: &str,
    name: &str,
    item: ComponentItem,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let qualified = format!("{parent}#{name}");
            inst.func_new(name, move |_, _, _, _| {
                Err(wasmtime::Error::msg(format!(
                    "`{qualified}` is not available to policies (log and trace through gatehouse:policy/host)"
                )))
            })?;
        }
        ComponentItem::Resource(_) => {
            inst.resource(name, ResourceType::host::<()>(), |_, _| Ok(()))?;
        }
        _ => {}
    }
    Ok(())
}

/// Defines the served WASI functions for every WASI instance `component`
/// imports (with the exact versioned name it imports).
///
/// # Errors
///
/// A definition that clashes with one already in the linker.
pub fn define(
    linker: &mut Linker<HostState>,
    component: &Component,
    engine: &Engine,
) -> wasmtime::Result<()> {
    let names: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(n, _)| n.to_string())
        .collect();
    for name in names {
        let base = name.split('@').next().unwrap_or(&name);
        match base {
            "wasi:random/random" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap("get-random-bytes", |_, (len,): (u64,)| {
                    Ok((secure_bytes(len)?,))
                })?;
                i.func_wrap("get-random-u64", |_, (): ()| {
                    let b = secure_bytes(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&b);
                    Ok((u64::from_le_bytes(a),))
                })?;
            }
            "wasi:random/insecure" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap("get-insecure-random-bytes", |_, (len,): (u64,)| {
                    let len = usize::try_from(len.min(1 << 20)).unwrap_or(1 << 20);
                    Ok(((0..len).map(|_| fastrand::u8(..)).collect::<Vec<u8>>(),))
                })?;
                i.func_wrap("get-insecure-random-u64", |_, (): ()| {
                    Ok((fastrand::u64(..),))
                })?;
            }
            "wasi:random/insecure-seed" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap("insecure-seed", |_, (): ()| {
                    Ok(((fastrand::u64(..), fastrand::u64(..)),))
                })?;
            }
            "wasi:clocks/monotonic-clock" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap("now", |_, (): ()| {
                    Ok((origin().elapsed().as_nanos() as u64,))
                })?;
                i.func_wrap("resolution", |_, (): ()| Ok((1u64,)))?;
            }
            "wasi:clocks/wall-clock" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap("now", |_, (): ()| {
                    let d = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    Ok((Datetime {
                        seconds: d.as_secs(),
                        nanoseconds: d.subsec_nanos(),
                    },))
                })?;
                i.func_wrap("resolution", |_, (): ()| {
                    Ok((Datetime {
                        seconds: 0,
                        nanoseconds: 1,
                    },))
                })?;
            }
            "wasi:cli/environment" => {
                let mut i = linker.instance(&name)?;
                i.func_wrap("get-environment", |_, (): ()| {
                    Ok((Vec::<(String, String)>::new(),))
                })?;
                i.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
                i.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
            }
            _ => {}
        }
    }
    Ok(())
}
