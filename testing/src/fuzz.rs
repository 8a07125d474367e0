//! Fuzzing on stable Rust, under `cargo test`: proptest drives each target
//! with generated inputs (shrunk to a smallest failing one when a property
//! breaks), [`config`] bounds the cases (`VIGIL_FUZZ_CASES`, 256 by default:
//! a few seconds per target on CI; set it to millions for a long run), and
//! [`mutations`] makes inputs structure-aware the way coverage fuzzers do:
//! valid encodings with bytes flipped, cut, inserted and repeated, so most
//! inputs get past the first bytes of a decoder.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per fuzz target: `VIGIL_FUZZ_CASES`, or 256.
pub fn cases() -> u32 {
    std::env::var("VIGIL_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256)
}

/// The proptest configuration of a fuzz target.
pub fn config() -> Config {
    Config {
        cases: cases(),
        // A failing case is reported with its input, not saved to a file in
        // the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Copies of `seeds` (valid inputs) with up to 16 edits each, and random
/// bytes now and then.
pub fn mutations(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let count = seeds.len();
    let edits = prop::collection::vec((0u8..5, any::<u16>(), any::<u8>()), 0..16);
    prop_oneof![
        9 => (0..count, edits).prop_map(move |(seed, edits)| mutate(&seeds[seed], &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn mutate(seed: &[u8], edits: &[(u8, u16, u8)]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for &(edit, at, byte) in edits {
        let at = usize::from(at) % (bytes.len() + 1);
        match edit {
            0 if at < bytes.len() => bytes[at] ^= byte | 1,
            1 => bytes.truncate(at),
            2 => bytes.insert(at, byte),
            3 => {
                let end = (at + usize::from(byte)).min(bytes.len());
                let repeated = bytes[at..end].to_vec();
                bytes.splice(at..at, repeated);
            }
            // A length or varint byte set to an extreme.
            _ if at < bytes.len() => bytes[at] = if byte % 2 == 0 { 0xff } else { 0x7f },
            _ => {}
        }
    }
    bytes
}
