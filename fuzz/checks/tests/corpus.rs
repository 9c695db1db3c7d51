//! Replays every committed corpus file (`fuzz/corpus/<target>/*`, minimised by
//! `cargo xtask fuzz`) and every regression input (`fuzz/regressions/<target>/*`: inputs that
//! crashed a check once, kept next to their fix and never minimised away) through its target's
//! check on the stable toolchain, so `cargo xtask test` keeps them checked without nightly or
//! cargo-fuzz.

use std::path::{Path, PathBuf};

use velocache_fuzz_checks::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_fuzz_target_has_a_check_and_a_committed_corpus() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    on_disk.sort();
    let listed: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk, listed, "fuzz_targets/ and TARGETS differ");
    for name in &listed {
        let dir = fuzz_dir().join("corpus").join(name);
        let n = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask fuzz {name}`)", dir.display()))
            .count();
        assert!(n > 0, "{} is empty", dir.display());
    }
}

#[test]
fn every_committed_corpus_input_passes_its_check() {
    let mut total = 0;
    for (name, check) in TARGETS {
        let mut files: Vec<PathBuf> = ["corpus", "regressions"]
            .iter()
            .filter_map(|d| std::fs::read_dir(fuzz_dir().join(d).join(name)).ok())
            .flat_map(|entries| entries.map(|e| e.unwrap().path()))
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            // A panic names the input, so it can be replayed with `cargo fuzz run <target> <file>`.
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{name}: {} fails its check", file.display());
            total += 1;
        }
    }
    println!("replayed {total} corpus inputs");
}
