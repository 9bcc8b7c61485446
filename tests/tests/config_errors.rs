//! Config errors: each file in `tests/config-errors/` is an invalid config;
//! the `.err` file next to it is the exact text the gateway must print
//! (every problem, one per line, each naming the file and key path).
//! Run with `GATEHOUSE_BLESS=1` to rewrite the `.err` files after a
//! deliberate change, then review the diff.

use std::path::Path;

#[test]
fn every_invalid_config_gives_its_exact_errors() {
    let dir = Path::new("config-errors");
    let mut cases: Vec<_> = std::fs::read_dir(dir)
        .expect("config-errors/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the golden cases, found {}",
        cases.len()
    );
    let bless = std::env::var_os("GATEHOUSE_BLESS").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let actual = match gatehouse::gateway::check(Some(case)) {
            Ok(_) => "(no error)\n".to_string(),
            Err(errors) => errors.0.iter().map(|e| format!("{e}\n")).collect(),
        };
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &actual).expect("write .err");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn secrets_never_appear_in_errors() {
    let errors =
        gatehouse::gateway::check(Some(Path::new("config-errors/secret-is-redacted.yaml")))
            .err()
            .expect("the config is invalid");
    let text = errors.to_string();
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(text.contains("***"), "{text}");
}
