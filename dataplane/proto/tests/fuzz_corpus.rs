//! Replays the kept fuzz corpus (`fuzz/corpus/<target>/`) and the crashes turned into
//! regressions (`fuzz/regressions/<target>/`, optional) through the harnesses in
//! `ringway_proto::fuzz`, on stable, so `cargo test` checks every input the fuzzers kept.
//!
//! A missing or empty corpus directory fails: it means the corpus was lost, not that there is
//! nothing to check. A failing input is named with its path; rerun it under libFuzzer with
//! `cargo +nightly fuzz run <target> <path>`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use ringway_proto::fuzz;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, harness: fn(&[u8])) {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    assert!(
        corpus.is_dir(),
        "fuzz corpus {} is missing: it is kept in git, restore it",
        corpus.display()
    );
    let mut inputs = files(&corpus);
    assert!(
        !inputs.is_empty(),
        "fuzz corpus {} is empty: it is kept in git, restore it",
        corpus.display()
    );
    let regressions = fuzz_dir.join("regressions").join(target);
    if regressions.is_dir() {
        inputs.extend(files(&regressions));
    }
    let mut failed = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed (panic messages above):\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
    println!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn upgrade_request_corpus() {
    replay("upgrade_request", fuzz::upgrade_request);
}

#[test]
fn frames_corpus() {
    replay("frames", fuzz::frames);
}

#[test]
fn tunnel_corpus() {
    replay("tunnel", fuzz::tunnel);
}
