//! herd_rewardbench's dataset parsers over arbitrary text as a `.json` file (array of rows, column
//! dict or single row) and with no extension (content sniffed).
#![no_main]

use herd_rewardbench::dataset::{parse_pairs, DataFormat};
use herd_rewardbench::dataset::v2::parse_best_of_n;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_pairs("fuzz.json", text, Some(DataFormat::Json));
    let _ = parse_best_of_n("fuzz.json", text, Some(DataFormat::Json));
    let _ = parse_pairs("fuzz", text, None);
});
