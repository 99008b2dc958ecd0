//! The coordinator's Workers/Sweeps requests as arbitrary sequences against a real Store in a
//! temporary folder (fuzz/coordinator_driver.rs states the input layout and the invariants).
#![no_main]

use libfuzzer_sys::fuzz_target;

// `encode` serves the stable replay's seed writer only
#[allow(dead_code)]
#[path = "../coordinator_driver.rs"]
mod coordinator_driver;

fuzz_target!(|data: &[u8]| {
    coordinator_driver::run(data);
});
