//! The fuzz targets in the ordinary test suite: every file of the committed corpora
//! (`fuzz/corpus/<target>/`, grown by `cargo fuzz run`, crashes fixed and kept as regression
//! inputs) replays through its target, and random mutations of those files run through them
//! as property tests (10,000 cases per target by default; `FLOWGATE_PROPTEST_CASES` changes it).

use std::path::PathBuf;

use flowgate_fuzz::TARGETS;
use proptest::prelude::*;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

#[test]
fn every_corpus_file_replays_through_its_target() {
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        assert!(
            inputs.len() >= 10,
            "corpus {name} has {} files; seed it (fuzz/README.md)",
            inputs.len()
        );
        for input in &inputs {
            target(input);
        }
    }
}

fn cases() -> u32 {
    std::env::var("FLOWGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// A corpus file of `target` with a few random bytes overwritten, inserted or cut: close to
/// valid input, which is where parsers break.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let inputs = corpus(target);
    (
        0..inputs.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8),
    )
        .prop_map(move |(pick, edits)| {
            let mut bytes = inputs[pick].clone();
            for (at, byte, op) in edits {
                let at = if bytes.is_empty() {
                    0
                } else {
                    at % bytes.len()
                };
                match op {
                    0 if !bytes.is_empty() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if !bytes.is_empty() => {
                        bytes.truncate(at);
                    }
                    _ => bytes.push(byte),
                }
            }
            bytes
        })
}

macro_rules! fuzz_property {
    ($name:ident, $target:literal, $f:path) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]
            #[test]
            fn $name(bytes in prop_oneof![mutated($target), proptest::collection::vec(any::<u8>(), 0..512)]) {
                $f(&bytes);
            }
        }
    };
}

fuzz_property!(
    definition_never_panics,
    "definition",
    flowgate_fuzz::definition
);
fuzz_property!(
    slack_payload_never_panics,
    "slack_payload",
    flowgate_fuzz::slack_payload
);
fuzz_property!(
    signatures_never_panic_or_accept_forgeries,
    "signatures",
    flowgate_fuzz::signatures
);
fuzz_property!(
    api_bodies_are_refused_with_4xx,
    "api_bodies",
    flowgate_fuzz::api_bodies
);
