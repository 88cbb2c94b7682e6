//! Every input a fuzzer crashed on (`fuzz/regressions/<target>/`), and the seed corpus
//! (`fuzz/seeds/<target>/`), replayed through exactly what the fuzz target runs
//! (`fedgate_dev::fuzzing`). `scripts/fuzz` runs the fuzzers themselves.

use std::path::Path;

use fedgate_dev::fuzzing::TARGETS;

fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut replayed = 0;
    for (target, run) in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails again", path.display());
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn inputs_the_fuzzers_crashed_on_pass() {
    assert!(replay("regressions") >= 1);
}

#[test]
fn the_seed_corpus_passes() {
    assert!(replay("seeds") >= TARGETS.len());
}
