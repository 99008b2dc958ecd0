//! The safetensors header parser herd-worker's weights.rs uses, over arbitrary bytes: header
//! length prefix, JSON header, dtypes, shapes and data offsets, then every tensor view as
//! weights.rs walks them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safetensors::SafeTensors;

fuzz_target!(|data: &[u8]| {
    let _ = SafeTensors::read_metadata(data);
    if let Ok(st) = SafeTensors::deserialize(data) {
        for (_name, view) in st.tensors() {
            let elements = view
                .shape()
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d));
            let bits = elements.and_then(|n| n.checked_mul(view.dtype().bitsize()));
            // a parsed view's bytes always match its shape and dtype
            assert_eq!(bits.map(|b| b.div_ceil(8)), Some(view.data().len()));
        }
    }
});
