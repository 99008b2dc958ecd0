//! The EasyLM msgpack record stream over arbitrary bytes: every record header, every tensor's
//! element bytes read out, then the checkpoint scan and config inference. Errors are fine;
//! panics, hangs and runaway allocations are not.
#![no_main]

use std::path::Path;

use herd_engine::easylm::checkpoint::{scan, Checkpoint, EasyLmOptions};
use herd_engine::easylm::stream::{RecordStream, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut stream = RecordStream::new(data);
    let mut buf = [0u8; 4096];
    while let Ok(Some(record)) = stream.next_record() {
        if let Value::Tensor(_) = record.value {
            let mut failed = false;
            loop {
                match stream.read_data(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed || stream.finish_tensor().is_err() {
                break;
            }
        }
    }
    if let Ok(scanned) = scan(&mut RecordStream::new(data)) {
        let _ = Checkpoint::from_scan(
            Path::new("fuzz.streaming_params"),
            scanned,
            data.len() as u64,
            &EasyLmOptions::default(),
        );
    }
});
