//! The committed fuzz corpus (`fuzz/corpus/<target>/`) and the fixed crash reproducers
//! (`fuzz/regressions/<target>/`), replayed through the fuzz targets' own harness without
//! libFuzzer or nightly: every input gives a result or a typed error, never a panic. Here rather
//! than in a test binary of its own, since each one links all of Burn.

use std::panic::{AssertUnwindSafe, catch_unwind};

#[path = "../../../../fuzz/harness.rs"]
#[allow(dead_code)]
mod harness;

#[test]
fn fuzz_corpus_inputs_give_results_or_typed_errors() {
    let fuzz = test_support::fixtures().join("../../fuzz");
    for (target, run) in harness::TARGETS {
        let (mut inputs, mut parsed) = (0, 0);
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                match catch_unwind(AssertUnwindSafe(|| run(&bytes))) {
                    Ok(Ok(())) => parsed += 1,
                    Ok(Err(e)) => assert!(!e.to_string().is_empty(), "{path:?}: empty error"),
                    Err(_) => panic!("{target}: {path:?} panicked"),
                }
                inputs += 1;
            }
        }
        // The seeds include real fixture files, which must parse.
        assert!(inputs >= 3, "{target}: only {inputs} corpus inputs");
        assert!(
            parsed >= 1,
            "{target}: none of {inputs} corpus inputs parsed"
        );
    }
}
