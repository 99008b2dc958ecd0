//! The EasyLM streaming format as herd reads it: the reference's worked bytes, every framing,
//! chunked arrays, train states, and bad input of every kind ending in an error that names the
//! byte offset and the record, never in a panic.

mod support;

use std::path::Path;

use herd_engine::easylm::checkpoint::{scan, Checkpoint, Scan};
use herd_engine::easylm::reader::Sequential;
use herd_engine::easylm::stream::{Dtype, FloatDtype, RecordStream, Value};
use herd_engine::easylm::{EasyLmError, EasyLmOptions};
use herd_engine::models::HeadKind;
use support::*;
use tch::{Device, Kind};

fn scan_bytes(bytes: &[u8]) -> Result<Scan, EasyLmError> {
    scan(&mut RecordStream::new(bytes))
}

fn open_bytes(bytes: &[u8], options: &EasyLmOptions) -> Result<Checkpoint, EasyLmError> {
    let scan = scan_bytes(bytes)?;
    Checkpoint::from_scan(Path::new("memory"), scan, bytes.len() as u64, options)
}

fn error_of(bytes: &[u8], options: &EasyLmOptions) -> String {
    match open_bytes(bytes, options) {
        Ok(_) => panic!("loaded but should not have"),
        Err(e) => e.to_string(),
    }
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(checkpoint_path(&golden(name))).unwrap()
}

fn all_data<S: herd_engine::easylm::reader::Source>(
    stream: &mut RecordStream<S>,
    len: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_data_to(len, &mut out).unwrap();
    out
}

#[test]
fn worked_examples_decode_as_the_reference_states() {
    let bytes = std::fs::read(easylm_dir().join("worked-examples.msgpack")).unwrap();
    let mut stream = RecordStream::new(bytes.as_slice());

    let wq = stream.next_record().unwrap().unwrap();
    assert_eq!(wq.name, "transformer.h.0.attention.wq.kernel");
    assert_eq!(wq.offset, 0);
    let Value::Tensor(header) = wq.value else {
        panic!("{:?}", wq.value)
    };
    assert_eq!(header.shape, [2, 3]);
    assert_eq!(header.dtype, Dtype::Float(FloatDtype::F32));
    let data = all_data(&mut stream, header.data_len);
    let values: Vec<f32> = data
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);

    let score = stream.next_record().unwrap().unwrap();
    assert_eq!(score.name, "score.kernel");
    let Value::Tensor(header) = score.value else {
        panic!()
    };
    assert_eq!(header.shape, [2, 1]);
    assert_eq!(header.dtype, Dtype::Float(FloatDtype::BF16));
    assert_eq!(all_data(&mut stream, 4), [0x80, 0x3f, 0x00, 0xc0]);

    // to_bytes(jnp.int32(7)): a 0-d array in an ext8
    let count = stream.next_record().unwrap().unwrap();
    assert_eq!(count.key, ["opt_state", "count"]);
    let Value::Tensor(header) = count.value else {
        panic!()
    };
    assert!(header.shape.is_empty());
    assert_eq!(header.dtype.name(), "int32");
    assert_eq!(all_data(&mut stream, 4), 7i32.to_le_bytes());

    // to_bytes(7): a plain msgpack int, skipped as not-an-array
    let step = stream.next_record().unwrap().unwrap();
    assert_eq!(step.key, ["step"]);
    assert!(matches!(step.value, Value::Other(ref what) if what.contains("integer")));
    assert!(stream.next_record().unwrap().is_none());
}

#[test]
fn every_ext_and_bin_framing_decodes() {
    // 0-d f32 = fixext16; then ext8/bin8, ext16/bin16, ext32/bin32 as arrays grow
    let mut bytes = Vec::new();
    let zero_d = ndarray(&[], "float32", &0.5f32.to_le_bytes());
    assert_eq!(zero_d[0], 0xd8, "fixext16");
    bytes.extend(record(&["a"], &zero_d));
    let sizes = [1u64, 10, 200, 20_000];
    for (i, &n) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..n).flat_map(|v| (v as f32).to_le_bytes()).collect();
        bytes.extend(record(
            &[&format!("t{i}")],
            &ndarray(&[n], "float32", &data),
        ));
    }
    for seen in [
        decode_all(RecordStream::new(bytes.as_slice())),
        decode_all(RecordStream::new(Sequential(bytes.as_slice()))),
    ] {
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], (vec![], 0.5f32.to_le_bytes().to_vec()));
        for (i, &n) in sizes.iter().enumerate() {
            let (shape, data) = &seen[i + 1];
            let last = f32::from_le_bytes(data[data.len() - 4..].try_into().unwrap());
            assert_eq!(shape, &[n]);
            assert_eq!(last, (n - 1) as f32);
        }
    }
}

fn decode_all<S: herd_engine::easylm::reader::Source>(
    mut stream: RecordStream<S>,
) -> Vec<(Vec<u64>, Vec<u8>)> {
    let mut seen = Vec::new();
    while let Some(record) = stream.next_record().unwrap() {
        let Value::Tensor(header) = record.value else {
            panic!("{:?}", record.value)
        };
        let data = all_data(&mut stream, header.data_len);
        seen.push((header.shape, data));
    }
    seen
}

#[test]
fn fixtures_scan_into_the_expected_models() {
    for name in FIXTURES {
        let golden = golden(name);
        let checkpoint = Checkpoint::open(&checkpoint_path(&golden), &options(&golden))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let config = checkpoint.config.hf_config_json("bfloat16");
        for (field, value) in golden["config"].as_object().unwrap() {
            assert_eq!(&config[field], value, "{name}: {field}");
        }
        let layers = golden["config"]["num_hidden_layers"].as_u64().unwrap() as usize;
        assert_eq!(checkpoint.entries.len(), 9 * layers + 3, "{name}");
        let expected_dtype = match golden["dtype"].as_str().unwrap() {
            "bfloat16" => FloatDtype::BF16,
            "float16" => FloatDtype::F16,
            _ => FloatDtype::F32,
        };
        assert!(checkpoint.entries.iter().all(|e| e.dtype == expected_dtype));
        let head = if golden["head"] == "score" {
            HeadKind::SequenceClassification
        } else {
            HeadKind::CausalLm
        };
        assert_eq!(checkpoint.head(), head);
        match golden["layout"].as_str().unwrap() {
            // step + count + learning rate + two mu arrays
            "train_state" => assert_eq!(checkpoint.skipped, 5, "{name}"),
            _ => assert_eq!(checkpoint.skipped, 0, "{name}"),
        }
        let chunked = checkpoint.entries.iter().filter(|e| e.chunked).count();
        if golden["chunked"].as_bool().unwrap() {
            // every array over 256 bytes: all but the norms and the score head
            assert_eq!(chunked, 7 * layers + 1, "{name}");
        } else {
            assert_eq!(chunked, 0, "{name}");
        }
        // the same scan through a source that cannot seek
        let bytes = fixture_bytes(name);
        let sequential = scan(&mut RecordStream::new(Sequential(bytes.as_slice()))).unwrap();
        assert_eq!(sequential.entries, checkpoint.entries, "{name}");
    }
}

/// Byte offsets at which a file may legitimately end: after any record.
fn record_ends(bytes: &[u8]) -> Vec<u64> {
    let mut stream = RecordStream::new(bytes);
    let mut ends = Vec::new();
    while let Some(record) = stream.next_record().unwrap() {
        if record.offset > 0 {
            ends.push(record.offset);
        }
    }
    ends.push(bytes.len() as u64);
    ends
}

#[test]
fn truncated_files_fail_naming_offset_and_record() {
    let mut rng = Lcg(0x5eed);
    for name in FIXTURES {
        let golden = golden(name);
        let options = options(&golden);
        let bytes = fixture_bytes(name);
        let ends = record_ends(&bytes);
        let entries = Checkpoint::open(&checkpoint_path(&golden), &options)
            .unwrap()
            .entries;
        let mut cuts: Vec<u64> = (0..150).map(|_| rng.below(bytes.len() as u64)).collect();
        // inside the tensor bytes of every record
        cuts.extend(
            entries
                .iter()
                .map(|e| e.offset + 1 + e.data_len.min(100) / 2),
        );
        cuts.extend(ends.iter().flat_map(|&e| [e.saturating_sub(1), e + 1]));
        for cut in cuts {
            let cut = cut.min(bytes.len() as u64 - 1);
            let piece = &bytes[..cut as usize];
            match open_bytes(piece, &options) {
                Ok(_) => {
                    // only a cut between records of a train state's optimizer state leaves a whole model
                    assert!(ends.contains(&cut), "{name}: cut at {cut} loaded");
                    assert_eq!(
                        golden["layout"], "train_state",
                        "{name}: cut at {cut} loaded"
                    );
                }
                Err(e) => {
                    let message = e.to_string();
                    if ends.contains(&cut) {
                        continue; // a clean record boundary: the model is incomplete (config error)
                    }
                    assert!(message.contains("truncated"), "{name} cut {cut}: {message}");
                    let offset = e.offset().unwrap_or_else(|| panic!("{message}"));
                    assert!(
                        offset <= cut,
                        "{name} cut {cut}: offset {offset}: {message}"
                    );
                    assert!(message.contains(&format!("byte {offset}")), "{message}");
                }
            }
        }
        // a cut inside a record's tensor bytes names that record
        for entry in entries.iter().filter(|e| e.data_len > 64) {
            let end = ends.iter().copied().find(|&x| x > entry.offset).unwrap();
            let message = error_of(&bytes[..(end - 8) as usize], &options);
            assert!(message.contains(&format!("{:?}", entry.name)), "{message}");
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let mut rng = Lcg(42);
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let golden = golden(name);
        let options = options(&golden);
        let bytes = fixture_bytes(name);
        for case in 0..250 {
            let mut corrupt = bytes.clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(corrupt.len() as u64) as usize;
                corrupt[at] = rng.below(256) as u8;
            }
            let scanned = open_bytes(&corrupt, &options);
            if let Err(e) = &scanned {
                assert!(
                    e.to_string().contains("byte ") || matches!(e, EasyLmError::Config(_)),
                    "{e}"
                );
            }
            // the data pass too, for some of them
            if scanned.is_ok() && case % 10 == 0 {
                let path = dir.path().join(format!("{name}-{case}"));
                std::fs::write(&path, &corrupt).unwrap();
                let checkpoint = Checkpoint::open(&path, &options).unwrap();
                if let Err(e) = checkpoint.load_tensors(Device::Cpu, Kind::Float) {
                    assert!(e.to_string().contains("byte "), "{e}");
                }
            }
        }
    }
}

fn replace_first(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn wrong_dtype_names_are_refused() {
    let golden_bf16 = golden("rm-gqa-bf16");
    let bytes = fixture_bytes("rm-gqa-bf16");
    // records are in sorted key order, so the first array is score.kernel
    let message = error_of(
        &replace_first(&bytes, b"bfloat16", b"bfloat17"),
        &options(&golden_bf16),
    );
    assert!(
        message.contains("\"bfloat17\"") && message.contains("\"score.kernel\""),
        "{message}"
    );

    let golden_fp32 = golden("rm-fp32-trainstate");
    let bytes = fixture_bytes("rm-fp32-trainstate");
    // float64 has 8-byte items: the buffer no longer fits the shape
    let message = error_of(
        &replace_first(&bytes, b"float32", b"float64"),
        &options(&golden_fp32),
    );
    assert!(
        message.contains("float64") && message.contains("buffer holds"),
        "{message}"
    );
    assert!(
        message.contains("params.params.transformer.wte.embedding"),
        "{message}"
    );

    // an integer dtype with a consistent buffer: refused for a parameter
    let mut model = tiny_model(1);
    model[1].dtype = "int16".to_string();
    let message = error_of(&encode(&model), &tiny_options());
    assert!(
        message.contains("\"int16\" is not supported")
            && message.contains("transformer.h.0.attention.wq.kernel"),
        "{message}"
    );
}

#[test]
fn shape_mismatches_are_refused() {
    // a tiny model that loads as it is
    let base = tiny_model(2);
    let checkpoint = open_bytes(&encode(&base), &tiny_options()).unwrap();
    assert_eq!(checkpoint.config.num_kv_heads, 1);

    let mut wide_k = base.clone();
    let i = wide_k
        .iter()
        .position(|t| t.key.join("/") == "transformer/h/1/attention/wk/kernel")
        .unwrap();
    wide_k[i].shape = vec![16, 16];
    wide_k[i].data = bf16_data(256, 9);
    let message = error_of(&encode(&wide_k), &tiny_options());
    assert!(
        message.contains("transformer.h.1.attention.wk.kernel") && message.contains("does not fit"),
        "{message}"
    );

    let mut norm = base.clone();
    let last_norm = norm.len() - 2;
    norm[last_norm].shape = vec![17];
    norm[last_norm].data = bf16_data(17, 3);
    let message = error_of(&encode(&norm), &tiny_options());
    assert!(message.contains("transformer.ln_f.kernel"), "{message}");

    // a buffer that does not match its declared shape
    let mut short = base.clone();
    let half = short[1].data.len() / 2;
    short[1].data.truncate(half);
    let message = error_of(&encode(&short), &tiny_options());
    assert!(message.contains("buffer holds"), "{message}");

    // 1-D where a kernel belongs
    let mut flat = base.clone();
    let score = flat.len() - 1;
    flat[score].shape = vec![16];
    let message = error_of(&encode(&flat), &tiny_options());
    assert!(
        message.contains("score.kernel") && message.contains("2-D"),
        "{message}"
    );

    // a size that does not fit the shapes
    let sized = EasyLmOptions {
        size: Some("7b".to_string()),
        ..tiny_options()
    };
    let message = error_of(&encode(&base), &sized);
    assert!(
        message.contains("size 7b has hidden_size 4096"),
        "{message}"
    );
    let unknown = EasyLmOptions {
        size: Some("7B-chat".to_string()),
        ..tiny_options()
    };
    let message = error_of(&encode(&base), &unknown);
    assert!(
        message.contains("unknown size") && message.contains("70b31"),
        "{message}"
    );
}

#[test]
fn unknown_and_structurally_wrong_keys_are_refused() {
    let golden_bf16 = golden("rm-gqa-bf16");
    let bytes = fixture_bytes("rm-gqa-bf16");
    let message = error_of(
        &replace_first(&bytes, b"\xa2wq", b"\xa2wx"),
        &options(&golden_bf16),
    );
    assert!(
        message.contains("\"transformer.h.0.attention.wx.kernel\"")
            && message.contains("not an EasyLM LLaMA parameter"),
        "{message}"
    );

    let base = tiny_model(2);
    let with_key = |index: usize, key: &str| {
        let mut model = base.clone();
        model[index].key = key.split('/').map(str::to_string).collect();
        encode(&model)
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            with_key(1, "transformer/h/0/attention/rotary/kernel"),
            "not an EasyLM LLaMA parameter",
        ),
        (
            with_key(1, "transformer/h/x/attention/wq/kernel"),
            "layer index \"x\"",
        ),
        (
            with_key(1, "transformer/wte/embedding/chunk_0"),
            "large_msgpack",
        ),
        // layer 0's wq renamed to layer 1's: a duplicate
        (
            with_key(1, "transformer/h/1/attention/wq/kernel"),
            "appears twice",
        ),
        (with_key(base.len() - 1, "lm_head/kernel"), "does not fit"),
    ];
    for (bytes, expected) in cases {
        let message = error_of(&bytes, &tiny_options());
        assert!(message.contains(expected), "{expected}: {message}");
    }

    // a missing tensor, a gap in the layers, both heads, no head
    let mut missing = base.clone();
    missing.remove(1);
    let message = error_of(&encode(&missing), &tiny_options());
    assert!(
        message.contains("no transformer.h.0.attention.wq.kernel"),
        "{message}"
    );

    let gap: Vec<_> = base
        .iter()
        .cloned()
        .map(|mut t| {
            if t.key.get(2).map(String::as_str) == Some("1") {
                t.key[2] = "2".to_string();
            }
            t
        })
        .collect();
    let message = error_of(&encode(&gap), &tiny_options());
    assert!(message.contains("layer 1 is missing"), "{message}");

    let mut both = base.clone();
    both.push(Tensor {
        key: vec!["lm_head".into(), "kernel".into()],
        shape: vec![16, 40],
        dtype: "bfloat16".into(),
        data: bf16_data(640, 1),
    });
    assert!(
        error_of(&encode(&both), &tiny_options()).contains("both score.kernel and lm_head.kernel")
    );
    let headless = &base[..base.len() - 1];
    assert!(error_of(&encode(headless), &tiny_options()).contains("neither score.kernel"));
}

#[test]
fn odd_payloads_are_refused() {
    let base = tiny_model(1);
    let mut bytes = encode(&base);
    // trailing garbage after the last record
    bytes.push(0x00);
    let message = error_of(&bytes, &tiny_options());
    assert!(
        message.contains("expected the start of a record"),
        "{message}"
    );
    let at = encode(&base).len();
    assert!(message.contains(&format!("byte {at}")), "{message}");

    // a parameter whose value is an int (like a train state's step)
    let mut int_param = encode(&base[..base.len() - 1]);
    int_param.extend(record(&["score", "kernel"], &[0x07]));
    assert!(error_of(&int_param, &tiny_options()).contains("not a flax array"));

    // a record whose value is not bytes at all
    let mut not_bytes = encode(&base[..base.len() - 1]);
    not_bytes.extend([0x92, 0x92]);
    not_bytes.extend(str_bytes("score"));
    not_bytes.extend(str_bytes("kernel"));
    not_bytes.push(0x07);
    let message = error_of(&not_bytes, &tiny_options());
    assert!(
        message.contains("value to be bytes") && message.contains("\"score.kernel\""),
        "{message}"
    );

    // flax's complex ext (type 2) for a parameter
    let mut complex = encode(&base[..base.len() - 1]);
    let score = &base[base.len() - 1];
    let mut inner = ndarray(&score.shape, "bfloat16", &score.data);
    let code_at = match inner[0] {
        0xc7 => 2,
        0xc8 => 3,
        _ => 5,
    };
    inner[code_at] = 2;
    complex.extend(record(&["score", "kernel"], &inner));
    assert!(error_of(&complex, &tiny_options()).contains("extension type 2"));

    // the extension claims more bytes than the record holds
    let mut long_ext = encode(&base[..base.len() - 1]);
    let mut inner = ndarray(&score.shape, "bfloat16", &score.data);
    assert_eq!(inner[0], 0xc7);
    inner[1] += 4;
    long_ext.extend(record(&["score", "kernel"], &inner));
    assert!(error_of(&long_ext, &tiny_options()).contains("the extension holds"));
}

/// flax's chunked map, with knobs to break it.
fn chunked(
    shape: &[u64],
    data: &[u8],
    chunk_elems: usize,
    shuffle: bool,
    shape_last: bool,
    drop_last: bool,
) -> Vec<u8> {
    let mut chunks: Vec<(usize, Vec<u8>)> = data
        .chunks(chunk_elems * 2)
        .enumerate()
        .map(|(i, c)| (i, ndarray(&[(c.len() / 2) as u64], "bfloat16", c)))
        .collect();
    if shuffle {
        chunks.swap(0, 1);
    }
    if drop_last {
        chunks.pop();
    }
    let mut shape_field = str_bytes("shape");
    shape_field.push(0x80 | shape.len() as u8);
    for (i, d) in shape.iter().enumerate() {
        shape_field.extend(str_bytes(&i.to_string()));
        shape_field.extend(uint_bytes(*d));
    }
    let mut chunks_field = str_bytes("chunks");
    chunks_field.push(0xde);
    chunks_field.extend((chunks.len() as u16).to_be_bytes());
    for (i, c) in &chunks {
        chunks_field.extend(str_bytes(&i.to_string()));
        chunks_field.extend(c);
    }
    let mut out = vec![0x83];
    out.extend(str_bytes("__msgpack_chunked_array__"));
    out.push(0xc3);
    if shape_last {
        out.extend(chunks_field);
        out.extend(shape_field);
    } else {
        out.extend(shape_field);
        out.extend(chunks_field);
    }
    out
}

#[test]
fn chunked_arrays_read_whole_and_refuse_damage() {
    let base = tiny_model(1);
    let embedding = &base[0];
    let good = chunked(&embedding.shape, &embedding.data, 100, false, false, false);
    let with = |payload: &[u8]| {
        let mut bytes = record(&["transformer", "wte", "embedding"], payload);
        bytes.extend(encode(&base[1..]));
        bytes
    };
    // reads as the same tensor as the plain form
    let plain = open_bytes(&encode(&base), &tiny_options()).unwrap();
    let chunked_model = open_bytes(&with(&good), &tiny_options()).unwrap();
    assert!(chunked_model.entries[0].chunked);
    assert_eq!(chunked_model.entries[0].shape, plain.entries[0].shape);
    let good_bytes = with(&good);
    let mut stream = RecordStream::new(good_bytes.as_slice());
    let record = stream.next_record().unwrap().unwrap();
    let Value::Tensor(header) = record.value else {
        panic!()
    };
    assert_eq!(all_data(&mut stream, header.data_len), embedding.data);

    let read_all = |bytes: &[u8]| -> Result<(), EasyLmError> {
        let mut stream = RecordStream::new(bytes);
        while let Some(record) = stream.next_record()? {
            if let Value::Tensor(h) = record.value {
                let mut out = Vec::new();
                stream.read_data_to(h.data_len, &mut out)?;
            }
        }
        Ok(())
    };
    read_all(&with(&good)).unwrap();
    for (payload, expected) in [
        (
            chunked(&embedding.shape, &embedding.data, 100, true, false, false),
            "chunks must be in order",
        ),
        (
            chunked(&embedding.shape, &embedding.data, 100, false, true, false),
            "before its shape",
        ),
        (
            chunked(&embedding.shape, &embedding.data, 100, false, false, true),
            "short of the array's shape",
        ),
    ] {
        let message = read_all(&with(&payload)).unwrap_err().to_string();
        assert!(message.contains(expected), "{expected}: {message}");
        assert!(message.contains("transformer.wte.embedding"), "{message}");
    }
}

#[test]
fn train_state_prefix_and_optimizer_records_are_handled() {
    let base = tiny_model(1);
    let mut bytes = record(&["step"], &uint_bytes(1903));
    for t in &base {
        let mut prefixed = t.clone();
        prefixed
            .key
            .splice(0..0, ["params".to_string(), "params".to_string()]);
        bytes.extend(prefixed.encode());
        let mut mu = t.clone();
        mu.key.splice(
            0..0,
            ["opt_state".to_string(), "1".to_string(), "mu".to_string()],
        );
        mu.dtype = "float32".into();
        mu.data = vec![0; t.data.len() * 2];
        bytes.extend(mu.encode());
    }
    let checkpoint = open_bytes(&bytes, &tiny_options()).unwrap();
    assert_eq!(checkpoint.entries.len(), base.len());
    assert_eq!(checkpoint.skipped, base.len() + 1);
    assert!(checkpoint.entries[0].name.starts_with("params.params."));
}

#[test]
fn errors_found_while_writing_leave_no_model_behind() {
    // chunked embedding one chunk short: the header scan passes, the data pass fails
    let base = tiny_model(1);
    let embedding = &base[0];
    let mut bytes = record(
        &["transformer", "wte", "embedding"],
        &chunked(&embedding.shape, &embedding.data, 100, false, false, true),
    );
    bytes.extend(encode(&base[1..]));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("streaming_params");
    std::fs::write(&src, &bytes).unwrap();
    Checkpoint::open(&src, &tiny_options()).expect("the scan alone passes");
    let out = dir.path().join("hf");
    let options = herd_engine::easylm::ConvertOptions {
        easylm: tiny_options(),
        ..Default::default()
    };
    let message = herd_engine::easylm::convert(&src, &out, &options)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("short of the array's shape")
            && message.contains("transformer.wte.embedding"),
        "{message}"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // the direct load reports the same
    let checkpoint = Checkpoint::open(&src, &tiny_options()).unwrap();
    let message = checkpoint
        .load_tensors(Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string();
    assert!(message.contains("short of the array's shape"), "{message}");
}
