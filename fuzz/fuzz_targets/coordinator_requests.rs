//! The coordinator's Workers/Sweeps requests as arbitrary sequences against a real Store in a
//! temporary folder (herd_coordinator::fuzzing states the input layout and the invariants).
#![no_main]

use libfuzzer_sys::fuzz_target;

use herd_coordinator::fuzzing as coordinator_driver;

fuzz_target!(|data: &[u8]| {
    coordinator_driver::run(data);
});
