//! Compiled components are cached on disk by content hash: a restart reads
//! the cache instead of compiling, and a cache directory anyone may write
//! to is never read.

use std::path::Path;
use std::sync::Arc;

use gatehouse::observe::metrics::Metrics;
use gatehouse::policy::{
    builtin, cache, CallSettings, EngineSettings, HostServices, PolicyRuntime,
};

/// A small policy runtime whose component cache is `dir` (a new one per
/// call, as after a restart: nothing in memory).
fn runtime_with_cache(dir: &Path) -> Arc<PolicyRuntime> {
    PolicyRuntime::new(
        EngineSettings {
            memory_limit_mib: 16,
            max_instances: 8,
            cache_dir: Some(dir.to_path_buf()),
        },
        HostServices::new(Arc::new(Metrics::new())),
    )
    .expect("policy runtime")
}

const CALL: CallSettings = CallSettings {
    deadline_ms: 100,
    instances: 1,
};

/// Whether `component` behaves as set-header (it accepts set-header's
/// config, which check-header refuses as an unknown key).
fn is_set_header(rt: &Arc<PolicyRuntime>, component: &gatehouse::policy::LoadedComponent) -> bool {
    rt.pool(
        "p",
        component,
        r#"{"name":"x-a","value":"1"}"#.into(),
        Default::default(),
        CALL,
    )
    .is_ok()
}

#[test]
fn a_restart_reads_the_compiled_cache() {
    let dir = std::env::temp_dir().join(format!("gatehouse-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let check = builtin::get("check-header").expect("built-in check-header is embedded");
    let set = builtin::get("set-header").expect("built-in set-header is embedded");

    let rt = runtime_with_cache(&dir);
    let loaded = rt.load_component(check).unwrap();
    assert!(!is_set_header(&rt, &loaded));
    rt.load_component(set).unwrap();
    let check_file = dir.join(format!("{}.cwasm", cache::key(rt.engine(), check)));
    let set_file = dir.join(format!("{}.cwasm", cache::key(rt.engine(), set)));
    assert!(check_file.exists() && set_file.exists());
    drop(rt);

    // Plant set-header's compiled code under check-header's key: a runtime
    // that reads the cache (rather than compiling) gets set-header.
    std::fs::copy(&set_file, &check_file).unwrap();
    let rt = runtime_with_cache(&dir);
    let loaded = rt.load_component(check).unwrap();
    assert!(
        is_set_header(&rt, &loaded),
        "the second start compiled check-header instead of reading the cache"
    );
    drop(rt);

    // A corrupt cache entry is ignored and replaced.
    std::fs::write(&check_file, b"garbage").unwrap();
    let rt = runtime_with_cache(&dir);
    let loaded = rt.load_component(check).unwrap();
    assert!(!is_set_header(&rt, &loaded));
    assert_ne!(std::fs::read(&check_file).unwrap(), b"garbage");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn a_world_writable_cache_directory_is_neither_read_nor_written() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("gatehouse-cache-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let check = builtin::get("check-header").unwrap();
    let set = builtin::get("set-header").unwrap();
    // Someone plants set-header's code under check-header's key.
    let rt = runtime_with_cache(&dir);
    rt.load_component(set).unwrap();
    let set_file = dir.join(format!("{}.cwasm", cache::key(rt.engine(), set)));
    let check_file = dir.join(format!("{}.cwasm", cache::key(rt.engine(), check)));
    std::fs::rename(&set_file, &check_file).unwrap();
    drop(rt);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();

    let rt = runtime_with_cache(&dir);
    let loaded = rt.load_component(check).unwrap();
    assert!(
        !is_set_header(&rt, &loaded),
        "code was read from a world-writable cache directory"
    );
    // Nothing new was written either.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_same_bytes_are_compiled_once_per_process() {
    let rt = PolicyRuntime::new(
        EngineSettings {
            memory_limit_mib: 16,
            max_instances: 8,
            cache_dir: None,
        },
        HostServices::new(Arc::new(Metrics::new())),
    )
    .unwrap();
    let check = builtin::get("check-header").unwrap();
    rt.load_component(check).unwrap();
    rt.load_component(check).unwrap();
    let m = &rt.services().metrics;
    assert_eq!(m.components_compiled.get(), 1);
    assert_eq!(m.components_reused.get(), 1);
}
