//! Compiled components are cached on disk by content hash: a second load
//! reads the cache instead of compiling.

use std::path::Path;
use std::sync::Arc;

use gatehouse::policy::{builtin, cache, PolicyRuntime, RuntimeSettings};

/// A small policy runtime whose component cache is `dir`.
fn runtime_with_cache(dir: &Path) -> Arc<PolicyRuntime> {
    PolicyRuntime::new(RuntimeSettings {
        call_deadline_ms: 100,
        memory_limit_mib: 16,
        instances_per_policy: 1,
        max_instances: 8,
        cache_dir: Some(dir.to_path_buf()),
    })
    .expect("policy runtime")
}

#[test]
fn second_load_uses_the_compiled_cache() {
    let dir = std::env::temp_dir().join(format!("gatehouse-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = runtime_with_cache(&dir);
    let wasm = builtin::get("check-header").expect("built-in check-header is embedded");
    rt.load_component(wasm).unwrap();
    let file = dir.join(format!("{}.cwasm", cache::key(rt.engine(), wasm)));
    let first = std::fs::metadata(&file)
        .expect("the compiled component was written")
        .modified()
        .unwrap();
    // A second load (as after a restart) deserializes the same file and
    // does not rewrite it.
    let component = rt.load_component(wasm).unwrap();
    let second = std::fs::metadata(&file).unwrap().modified().unwrap();
    assert_eq!(first, second);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // And it is a working component: a pool builds from it.
    rt.pool(
        "check-header",
        &component,
        r#"{"name":"x-a"}"#.into(),
        Default::default(),
    )
    .unwrap();
    // A corrupt cache entry is ignored and replaced.
    std::fs::write(&file, b"garbage").unwrap();
    rt.load_component(wasm).unwrap();
    assert_ne!(std::fs::read(&file).unwrap(), b"garbage");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn a_world_writable_cache_directory_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("gatehouse-cache-open-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let rt = runtime_with_cache(&dir);
    let wasm = builtin::get("check-header").unwrap();
    // Still loads (compiled in memory), but nothing is read from or written
    // to the open directory.
    rt.load_component(wasm).unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
