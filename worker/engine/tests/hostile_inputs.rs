//! Hostile model folders: safetensors files with lying headers, config.json with
//! absurd sizes, garbage tokenizer.json. Each ends in an error that names the file and the
//! reason, quickly and without allocating what the input asks for; none panics.
//! (load_errors.rs covers the ordinary mistakes; easylm_format.rs the EasyLM msgpack reader.)

use std::path::Path;
use std::time::{Duration, Instant};

use herd_engine::model_dir::ModelDir;
use herd_engine::models::ModelSpec;
use herd_engine::tokenizer::RewardTokenizer;
use serde_json::{json, Value};
use tch::{Device, Kind};

mod support;
use support::{copy_of, fixture_model};

/// The error of loading `dir` as a classifier, and how long it took to fail.
fn load_error(dir: &Path) -> (String, Duration) {
    let start = Instant::now();
    let result = ModelDir::open(dir)
        .map_err(anyhow::Error::from)
        .and_then(|d| Ok(ModelSpec::open(d)?))
        .and_then(|spec| Ok(spec.load_classifier(Device::Cpu, Kind::Float)?));
    match result {
        Ok(_) => panic!("{} loaded but should not have", dir.display()),
        Err(e) => (format!("{e:#}"), start.elapsed()),
    }
}

// ---------------------------------------------------------------------------------------------
// safetensors

/// The fixture's safetensors file split into its JSON header and its data.
fn fixture_safetensors() -> (Value, Vec<u8>) {
    let bytes = std::fs::read(fixture_model("mistral-rm").join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn safetensors_bytes(header: &Value, data: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// The mistral-rm fixture with `model.safetensors` replaced by `bytes`; the load error.
fn safetensors_error(bytes: &[u8]) -> String {
    let dir = copy_of("mistral-rm");
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    let (error, took) = load_error(dir.path());
    assert!(error.contains("model.safetensors"), "{error}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {error}");
    error
}

/// The fixture with the header edited, data unchanged.
fn edited_header_error(edit: impl FnOnce(&mut Value)) -> String {
    let (mut header, data) = fixture_safetensors();
    edit(&mut header);
    safetensors_error(&safetensors_bytes(&header, &data))
}

const EMBED: &str = "model.embed_tokens.weight";
const NORM: &str = "model.layers.0.input_layernorm.weight";

#[test]
fn safetensors_huge_header_length_is_refused_without_allocating() {
    let (_, data) = fixture_safetensors();
    for length in [u64::MAX, 1 << 40, 100_000_001, data.len() as u64] {
        let mut bytes = length.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        bytes.extend_from_slice(&data[..1000]);
        let error = safetensors_error(&bytes);
        assert!(error.contains("invalid safetensors"), "{length}: {error}");
    }
}

#[test]
fn safetensors_truncated_header_is_refused() {
    let (header, data) = fixture_safetensors();
    let whole = safetensors_bytes(&header, &data);
    for cut in [0, 3, 8, 9, 500] {
        let error = safetensors_error(&whole[..cut]);
        assert!(
            error.contains("invalid safetensors"),
            "cut at {cut}: {error}"
        );
    }
    // a header that is not JSON, or JSON of the wrong shape
    for text in [&b"{\"a\": "[..], b"[1,2,3]", b"\xff\xfe", b"{\"w\": 7}"] {
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text);
        let error = safetensors_error(&bytes);
        assert!(error.contains("invalid safetensors"), "{error}");
    }
}

#[test]
fn safetensors_overlapping_offsets_are_refused() {
    let error = edited_header_error(|h| {
        // the norm weight claims bytes inside the embedding's
        h[NORM]["data_offsets"] = json!([64, 128]);
    });
    assert!(error.contains("invalid safetensors"), "{error}");
}

#[test]
fn safetensors_out_of_bounds_offsets_are_refused() {
    for offsets in [
        json!([2048000, u64::MAX]),
        json!([2048064, 2048000]),
        json!([0, 1u64 << 62]),
    ] {
        let error = edited_header_error(|h| h[NORM]["data_offsets"] = offsets.clone());
        assert!(error.contains("invalid safetensors"), "{offsets}: {error}");
    }
    // the last tensor ends past the end of the file
    let (header, data) = fixture_safetensors();
    let error = safetensors_error(&safetensors_bytes(&header, &data[..data.len() - 2]));
    assert!(error.contains("invalid safetensors"), "{error}");
}

#[test]
fn safetensors_unknown_and_unsupported_dtypes_are_refused() {
    let error = edited_header_error(|h| h[NORM]["dtype"] = json!("Q4_K"));
    assert!(error.contains("invalid safetensors"), "{error}");
    // known to safetensors, not a float dtype herd loads: named with the tensor
    let error = edited_header_error(|h| {
        h[NORM]["dtype"] = json!("I16");
    });
    assert!(
        error.contains(NORM) && error.contains("I16") && error.contains("not supported"),
        "{error}"
    );
}

#[test]
fn safetensors_shape_and_byte_count_mismatch_is_refused() {
    for shape in [
        json!([33]),
        json!([32000, 33]),
        json!([1u64 << 40, 1u64 << 40]),
    ] {
        let error = edited_header_error(|h| h[EMBED]["shape"] = shape.clone());
        assert!(error.contains("invalid safetensors"), "{shape}: {error}");
    }
}

#[test]
fn safetensors_dimension_past_i64_is_refused() {
    // zero elements, so the byte count matches, but the other dimension does not fit libtorch's
    // i64 sizes
    let error = edited_header_error(|h| {
        h["model.extra.weight"] = json!({
            "dtype": "BF16", "shape": [0, u64::MAX], "data_offsets": [2048064, 2048064]
        });
    });
    assert!(error.contains("model.extra.weight"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// config.json

/// The error of the mistral-rm fixture with `edit` applied to its config.json; asserts it is
/// refused quickly (before anything the config asks for is allocated) and names config.json.
fn config_error(edit: impl FnOnce(&mut Value)) -> String {
    let dir = copy_of("mistral-rm");
    let path = dir.path().join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, serde_json::to_string(&config).unwrap()).unwrap();
    let (error, took) = load_error(dir.path());
    assert!(error.contains("config.json"), "{error}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {error}");
    error
}

#[test]
fn absurd_sizes_are_refused_naming_config_json_and_the_field() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("hidden_size", json!(1_000_000_000_000_i64), "hidden_size"),
        ("hidden_size", json!(1e12), "hidden_size"),
        (
            "num_hidden_layers",
            json!(1_000_000_000),
            "num_hidden_layers",
        ),
        ("vocab_size", json!(1_i64 << 40), "vocab_size"),
        ("intermediate_size", json!(-64), "intermediate_size"),
        ("vocab_size", json!(-1), "vocab_size"),
        ("num_hidden_layers", json!(0), "num_hidden_layers"),
        ("num_attention_heads", json!(0), "num_attention_heads"),
        ("num_key_value_heads", json!(0), "num_key_value_heads"),
        ("num_key_value_heads", json!(3), "num_key_value_heads"),
        ("head_dim", json!(-8), "head_dim"),
        ("head_dim", json!(7), "head_dim"),
        ("num_labels", json!(1_i64 << 40), "num_labels"),
        ("vocab_size", json!("32000"), "vocab_size"),
        ("vocab_size", json!(u64::MAX), "vocab_size"),
        ("hidden_size", Value::Null, "hidden_size"),
    ];
    for (field, value, named) in cases {
        let error = config_error(|c| c[field] = value.clone());
        assert!(
            error.contains(&format!("field \"{named}\"")),
            "{field}={value}: {error}"
        );
    }
}

#[test]
fn head_count_that_does_not_divide_hidden_size_is_refused() {
    // no head_dim: transformers derives hidden_size / num_attention_heads and refuses a remainder
    let error = config_error(|c| {
        c["num_attention_heads"] = json!(5);
        c["num_key_value_heads"] = json!(5);
    });
    assert!(
        error.contains("num_attention_heads") && error.contains("divide"),
        "{error}"
    );
}

#[test]
fn config_json_that_is_not_an_object_is_refused() {
    for text in ["", "[]", "null", "{\"hidden_size\": ", "\u{0}\u{1}"] {
        let dir = copy_of("mistral-rm");
        std::fs::write(dir.path().join("config.json"), text).unwrap();
        let (error, _) = load_error(dir.path());
        assert!(error.contains("config.json"), "{text:?}: {error}");
    }
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json

fn tokenizer_error(text: &[u8]) -> String {
    let dir = copy_of("mistral-rm");
    std::fs::write(dir.path().join("tokenizer.json"), text).unwrap();
    let model = ModelDir::open(dir.path()).unwrap();
    match RewardTokenizer::load(&model) {
        Ok(_) => panic!(
            "{:?} loaded",
            String::from_utf8_lossy(&text[..text.len().min(80)])
        ),
        Err(e) => e.to_string(),
    }
}

#[test]
fn garbage_tokenizer_json_is_refused_naming_the_file() {
    let real = std::fs::read(fixture_model("mistral-rm").join("tokenizer.json")).unwrap();
    let deep = "[".repeat(100_000);
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"garbage".to_vec(),
        b"\xff\xfe\x00".to_vec(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"{\"model\": {\"type\": \"BPE\", \"vocab\": 7}}".to_vec(),
        deep.into_bytes(),
        real[..real.len() / 2].to_vec(),
    ];
    for text in cases {
        let error = tokenizer_error(&text);
        assert!(error.contains("tokenizer.json"), "{error}");
    }
}

#[test]
fn garbage_tokenizer_config_json_is_refused_naming_the_file() {
    for (text, named) in [
        ("{\"chat_template\": ", "tokenizer_config.json"),
        ("{\"chat_template\": 7}", "chat_template"),
        (
            "{\"chat_template\": \"{% for %}\"}",
            "tokenizer_config.json",
        ),
    ] {
        let dir = copy_of("mistral-rm");
        std::fs::write(dir.path().join("tokenizer_config.json"), text).unwrap();
        let model = ModelDir::open(dir.path()).unwrap();
        match RewardTokenizer::load(&model) {
            Ok(_) => panic!("{text:?} loaded"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(named), "{text:?}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fuzz seeds on stable: the targets' committed seeds and byte mutations of them, through the same
// entry points as the cargo-fuzz targets of fuzz/

fn fuzz_seeds(target: &str) -> Vec<Vec<u8>> {
    use herd_testkit::fuzz_seeds::{seeds_and_mutations, Mutations};
    seeds_and_mutations(target, Mutations::Binary)
}

#[test]
fn fuzz_seeds_and_mutations_of_easylm_never_panic() {
    use herd_engine::easylm::checkpoint::{scan, Checkpoint, EasyLmOptions};
    use herd_engine::easylm::stream::{RecordStream, Value as Record};
    for bytes in fuzz_seeds("easylm_msgpack") {
        let data = bytes.as_slice();
        let mut stream = RecordStream::new(data);
        let mut buf = [0u8; 4096];
        'records: while let Ok(Some(record)) = stream.next_record() {
            if let Record::Tensor(_) = record.value {
                loop {
                    match stream.read_data(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(_) => break 'records,
                    }
                }
                if stream.finish_tensor().is_err() {
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
    }
}

#[test]
fn fuzz_seeds_and_mutations_of_safetensors_never_panic() {
    for bytes in fuzz_seeds("safetensors_header") {
        if let Ok(st) = safetensors::SafeTensors::deserialize(&bytes) {
            for (_name, view) in st.tensors() {
                let elements: usize = view.shape().iter().product();
                let bits = elements * view.dtype().bitsize();
                assert_eq!(bits.div_ceil(8), view.data().len());
            }
        }
    }
}
