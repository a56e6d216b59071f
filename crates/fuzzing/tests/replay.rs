//! Every fuzz target's property over its committed corpus, then over deterministic
//! mutations of it, in an ordinary test build: the part of fuzzing that runs in every
//! test run. The coverage-guided search is `tests/fuzz/run.sh` (cargo fuzz).
//!
//! `FUZZ_REPLAY_MUTATIONS` (default 2000) mutations per corpus file and target; a
//! failure prints the target, the input in base64 and its seed.

use std::path::PathBuf;

use wsgate_fuzzing::mutate::{mutate, parse_dict, Rng};
use wsgate_fuzzing::{Target, TARGETS};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn run_one(target: &Target, what: &str, input: &[u8]) {
    let check = target.check;
    if std::panic::catch_unwind(|| check(input)).is_err() {
        panic!(
            "fuzz target {} failed on {what}; input (base64): {}\n\
             reproduce with the cargo fuzz target: tests/fuzz/run.sh (see its header)",
            target.name,
            base64(input)
        );
    }
}

fn replay(target: &Target) {
    let files = corpus(target.name);
    assert!(!files.is_empty(), "the corpus of {} is empty", target.name);
    let dict = target
        .dict
        .map(|d| parse_dict(&std::fs::read_to_string(fuzz_dir().join("dict").join(d)).unwrap()))
        .unwrap_or_default();
    for (name, data) in &files {
        run_one(target, &format!("corpus file {name}"), data);
    }
    let per_file: usize = std::env::var("FUZZ_REPLAY_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    for (i, (name, data)) in files.iter().enumerate() {
        let other = &files[(i + 1) % files.len()].1;
        let seed = 0x5EED_0000 + i as u64;
        let mut rng = Rng::new(seed);
        let mut current = data.clone();
        for n in 0..per_file {
            // Mostly from the seed itself, sometimes a mutation of a mutation.
            let base = if n % 4 == 3 { &current } else { data };
            current = mutate(&mut rng, base, &dict, other, 4096.max(data.len() * 2));
            run_one(
                target,
                &format!("mutation {n} of {name} (seed {seed:#x})"),
                &current,
            );
        }
    }
}

#[test]
fn client_frame() {
    replay(&TARGETS[0]);
}

#[test]
fn server_frame() {
    replay(&TARGETS[1]);
}

#[test]
fn api_bodies() {
    replay(&TARGETS[2]);
}

#[test]
fn http_inputs() {
    replay(&TARGETS[3]);
}
