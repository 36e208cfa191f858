//! Replays every committed input of every fuzz target (its corpus and the inputs of the
//! crashes it found) through the target's body: a quick regression run without libFuzzer.

use std::path::Path;

#[test]
fn every_target_passes_over_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in sluice_fuzz::TARGETS {
        let dir = root.join("corpus").join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{name} has a seed corpus");
        for path in &inputs {
            let data = std::fs::read(path).expect("a corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} failed on {}", path.display());
        }
    }
}
