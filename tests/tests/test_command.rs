//! The README's test command (`scripts/test`) never lets one failure hide the rest: it runs
//! `cargo test --no-fail-fast`, and its closing summary (`scripts/test-summary`) counts every
//! test binary, names the ones that failed and the ones that crashed without a result line, and
//! says so when nothing ran at all.

use std::path::PathBuf;
use std::process::Command;

fn summary(log: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = ringway_e2e::server::temp_path("log");
    std::fs::write(&path, log).expect("write log");
    let out = Command::new(root.join("scripts/test-summary"))
        .arg(&path)
        .output()
        .expect("run scripts/test-summary");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn a_crashed_binary_and_a_failed_one_are_both_named_and_every_binary_counted() {
    let log = "\
     Running unittests src/lib.rs (target/debug/deps/ringway_proto-0a1b2c)
test result: ok. 90 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.85s
     Running tests/config.rs (target/debug/deps/config-3d4e5f)
thread 'main' has overflowed its stack
error: test failed, to rerun pass `-p ringway-e2e --test config`
     Running tests/echo.rs (target/debug/deps/echo-6a7b8c)
test result: FAILED. 37 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9s
     Running tests/hostile.rs (target/debug/deps/hostile-9d0e1f)
test result: ok. 16 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.67s
   Doc-tests ringway_proto
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
    let s = summary(log);
    assert!(
        s.contains("workspace: 143 passed, 1 failed, 1 ignored, in 5 test binaries"),
        "{s}"
    );
    assert!(s.contains("failed: tests/echo.rs [echo]"), "{s}");
    assert!(
        s.contains("crashed (no result): tests/config.rs [config]"),
        "{s}"
    );
    assert!(
        !s.contains("hostile"),
        "a passing binary is only counted: {s}"
    );
}

#[test]
fn a_build_failure_is_not_reported_as_zero_failures() {
    let s = summary("error[E0308]: mismatched types\nerror: could not compile `ringway`\n");
    assert!(s.contains("no test binary ran"), "{s}");
}

#[test]
fn the_test_command_runs_every_binary_even_after_a_failure() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = std::fs::read_to_string(root.join("scripts/test")).expect("read scripts/test");
    assert!(
        script.contains("cargo test --workspace --no-fail-fast"),
        "scripts/test must not stop at the first failing binary"
    );
    assert!(script.contains("scripts/test-summary"), "{script}");
}
