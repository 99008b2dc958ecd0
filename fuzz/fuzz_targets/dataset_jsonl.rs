//! herd_rewardbench's dataset parsers over arbitrary text named as a `.jsonl` file: preference pairs
//! (RewardBench v1) and best-of-N rows (RewardBench 2).
#![no_main]

use herd_rewardbench::dataset::{parse_pairs, DataFormat};
use herd_rewardbench::dataset::v2::parse_best_of_n;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // load_rows refuses non-UTF-8 before parsing
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_pairs("fuzz.jsonl", text, Some(DataFormat::JsonLines));
    let _ = parse_best_of_n("fuzz.jsonl", text, Some(DataFormat::JsonLines));
});
