//! Round trip against goldens from tests/golden/make_easylm_fixtures.py: the worker's direct load
//! of an EasyLM checkpoint (no files written) and the Hugging Face folder `convert` writes both give
//! the outputs of a numpy forward of the original EasyLM weights (interleaved rotary), which
//! transformers reproduces on the converted weights.
//!
//! How the written folder is checked without Python at test time: its safetensors tensors are
//! compared byte for byte with `<fixture>.expected-bf16.safetensors`, which the fixture script
//! wrote from the tensors it loaded into transformers; the folder is loaded back by the worker's
//! own Hugging Face path and scored. transformers itself also loads each written folder
//! (`make_easylm_fixtures.py check-hf`, in the herd venv or $HERD_PYTHON; required under CI).

mod support;

use std::path::Path;
use std::process::Command;

use herd_engine::batching::{Batch, Plan};
use herd_engine::easylm::stream::{RecordStream, Value as Record};
use herd_engine::easylm::{convert, Checkpoint, ConvertOptions, OutputDtype};
use herd_engine::model_dir::ModelDir;
use herd_engine::models::ModelSpec;
use safetensors::SafeTensors;
use serde_json::Value;
use support::*;
use tch::{Device, Kind, Tensor};

const FP32_TOLERANCE: f64 = 1e-4;

fn outputs(golden: &Value, key: &str) -> Vec<Vec<f64>> {
    golden[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn inputs(golden: &Value) -> Vec<Vec<i64>> {
    golden["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        })
        .collect()
}

/// The model's outputs on the golden inputs: reward logits, or next-token log-probs.
fn run(spec: &ModelSpec, golden: &Value, kind: Kind) -> Vec<Vec<f64>> {
    let _guard = tch::no_grad_guard();
    let mut out = Vec::new();
    // one sequence per batch, unpadded
    let batch = |ids: &[i64]| {
        let row: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        let plan = Plan {
            members: vec![0],
            padded_len: row.len(),
        };
        Batch::pad(&[row], plan, 0, Device::Cpu)
    };
    if golden["head"] == "score" {
        let model = spec.load_classifier(Device::Cpu, kind).unwrap();
        for ids in inputs(golden) {
            let pooled = Tensor::from_slice(&[ids.len() as i64 - 1]);
            let logits = model.forward(&batch(&ids), &pooled);
            out.push(Vec::<f64>::try_from(logits.to_kind(Kind::Double).view([-1])).unwrap());
        }
    } else {
        let model = spec.load_causal_lm(Device::Cpu, kind).unwrap();
        for ids in inputs(golden) {
            let positions = Tensor::arange(ids.len() as i64 - 1, (Kind::Int64, Device::Cpu));
            let targets = Tensor::from_slice(&ids[1..]);
            let lp = model.token_logprobs(&batch(&ids), &positions, &targets);
            out.push(Vec::<f64>::try_from(lp.to_kind(Kind::Double)).unwrap());
        }
    }
    out
}

/// Max |a - b| over equal-shaped outputs; the row counts and row lengths must agree first.
fn max_diff(what: &str, a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: number of output rows");
    a.iter()
        .zip(b)
        .enumerate()
        .flat_map(|(i, (x, y))| {
            assert_eq!(x.len(), y.len(), "{what}: row {i}: number of outputs");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

fn convert_fixture(name: &str, out: &Path, dtype: OutputDtype, shard_bytes: u64) {
    let golden = golden(name);
    let options = ConvertOptions {
        easylm: options(&golden),
        dtype,
        shard_bytes,
        ..ConvertOptions::default()
    };
    convert(&checkpoint_path(&golden), out, &options).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// Every tensor of a Hugging Face folder: name -> (dtype, shape, bytes).
fn folder_tensors(dir: &Path) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let mut tensors = std::collections::BTreeMap::new();
    for file in ModelDir::open(dir).unwrap().weight_files().unwrap() {
        let bytes = std::fs::read(&file).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let value = (
                format!("{:?}", view.dtype()),
                view.shape().to_vec(),
                view.data().to_vec(),
            );
            assert!(tensors.insert(name, value).is_none());
        }
        let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
        let format = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("format").cloned());
        assert_eq!(format.as_deref(), Some("pt"), "{}", file.display());
    }
    tensors
}

#[test]
fn direct_load_matches_numpy_easylm_and_transformers() {
    for name in FIXTURES {
        let golden = golden(name);
        let spec = ModelSpec::from_easylm(&checkpoint_path(&golden), &options(&golden))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = run(&spec, &golden, Kind::Float);
        let numpy = outputs(&golden, "numpy_easylm");
        let transformers = outputs(&golden, "transformers");
        let d_numpy = max_diff(&format!("{name} vs numpy"), &ours, &numpy);
        let d_hf = max_diff(&format!("{name} vs transformers"), &ours, &transformers);
        assert!(d_numpy < FP32_TOLERANCE, "{name}: {d_numpy} from numpy");
        assert!(d_hf < FP32_TOLERANCE, "{name}: {d_hf} from transformers");
        eprintln!("{name}: direct load, max |diff| {d_numpy:.2e} vs numpy EasyLM, {d_hf:.2e} vs transformers");
    }
}

#[test]
fn direct_load_in_bf16_is_close() {
    let golden = golden("rm-gqa-bf16");
    let spec = ModelSpec::from_easylm(&checkpoint_path(&golden), &options(&golden)).unwrap();
    let ours = run(&spec, &golden, Kind::BFloat16);
    let d = max_diff(
        "rm-gqa-bf16 bf16 vs numpy",
        &ours,
        &outputs(&golden, "numpy_easylm"),
    );
    assert!(d < 0.1, "{d}");
}

#[test]
fn converted_tensors_are_the_goldens_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let golden = golden(name);
        let out = dir.path().join(name);
        convert_fixture(name, &out, OutputDtype::Bf16, u64::MAX);
        let written = folder_tensors(&out);
        let expected_bytes =
            std::fs::read(easylm_dir().join(golden["expected_bf16"].as_str().unwrap())).unwrap();
        let expected = SafeTensors::deserialize(&expected_bytes).unwrap();
        assert_eq!(written.len(), expected.len(), "{name}");
        for (tensor, view) in expected.tensors() {
            let (dtype, shape, data) = &written[&tensor];
            assert_eq!(dtype, "BF16", "{name} {tensor}");
            assert_eq!(shape.as_slice(), view.shape(), "{name} {tensor}");
            assert!(data == view.data(), "{name} {tensor}: bytes differ");
        }
        // config.json as transformers needs it
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        for (field, value) in golden["config"].as_object().unwrap() {
            assert_eq!(&config[field], value, "{name}: config {field}");
        }
        assert_eq!(config["torch_dtype"], "bfloat16");
        assert_eq!(config["model_type"], "llama");
        assert!(!out.join("model.safetensors.index.json").exists());
    }
}

#[test]
fn converted_folder_scores_like_the_direct_load() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let golden = golden(name);
        let out = dir.path().join(name);
        // `keep`: the stored dtype, so the folder holds exactly the EasyLM values
        convert_fixture(name, &out, OutputDtype::Keep, u64::MAX);
        let folder = ModelSpec::open(ModelDir::open(&out).unwrap()).unwrap();
        let direct = ModelSpec::from_easylm(&checkpoint_path(&golden), &options(&golden)).unwrap();
        assert_eq!(
            folder.config, direct.config,
            "{name}: config.json reads back differently"
        );
        assert_eq!(folder.head, direct.head);
        let from_folder = run(&folder, &golden, Kind::Float);
        let from_direct = run(&direct, &golden, Kind::Float);
        let d = max_diff(
            &format!("{name} folder vs direct"),
            &from_folder,
            &from_direct,
        );
        assert!(d < 1e-6, "{name}: folder vs direct {d}");
        let d = max_diff(
            &format!("{name} folder vs numpy"),
            &from_folder,
            &outputs(&golden, "numpy_easylm"),
        );
        assert!(d < FP32_TOLERANCE, "{name}: folder vs numpy {d}");
    }
}

#[test]
fn sharded_output_has_an_index_and_the_same_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    let sharded = dir.path().join("sharded");
    convert_fixture("rm-mha-chunked", &single, OutputDtype::Bf16, u64::MAX);
    convert_fixture("rm-mha-chunked", &sharded, OutputDtype::Bf16, 16_000);
    let shards: Vec<String> = std::fs::read_dir(&sharded)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert!(shards.len() > 2, "{shards:?}");
    let total = shards.len();
    for i in 1..=total {
        assert!(
            shards.contains(&format!("model-{i:05}-of-{total:05}.safetensors")),
            "{shards:?}"
        );
    }
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(sharded.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let tensors = folder_tensors(&sharded);
    assert_eq!(
        index["weight_map"].as_object().unwrap().len(),
        tensors.len()
    );
    let total_size: usize = tensors.values().map(|(_, _, d)| d.len()).sum();
    assert_eq!(index["metadata"]["total_size"], total_size);
    assert_eq!(tensors, folder_tensors(&single));
    // and the worker's Hugging Face loader takes it
    let spec = ModelSpec::open(ModelDir::open(&sharded).unwrap()).unwrap();
    spec.load_classifier(Device::Cpu, Kind::Float).unwrap();
}

/// `hf_row[h·hd + j·hd/2 + i] = easylm_row[h·hd + 2i + j]`, element by element, on the fixture's q
/// and k kernels and the tensors `convert` wrote.
#[test]
fn rotary_permutation_index_formula_holds_element_by_element() {
    let golden = golden("rm-gqa-bf16");
    let dir = tempfile::tempdir().unwrap();
    convert_fixture("rm-gqa-bf16", dir.path(), OutputDtype::Bf16, u64::MAX);
    let written = folder_tensors(dir.path());
    let hd = golden["config"]["head_dim"].as_u64().unwrap() as usize;
    let dim = golden["config"]["hidden_size"].as_u64().unwrap() as usize;

    let bytes = std::fs::read(checkpoint_path(&golden)).unwrap();
    let mut stream = RecordStream::new(bytes.as_slice());
    let mut checked = 0;
    while let Some(record) = stream.next_record().unwrap() {
        let hf_name = match record.key.as_slice() {
            [_, _, layer, _, w, _] if w == "wq" => {
                format!("model.layers.{layer}.self_attn.q_proj.weight")
            }
            [_, _, layer, _, w, _] if w == "wk" => {
                format!("model.layers.{layer}.self_attn.k_proj.weight")
            }
            _ => continue,
        };
        let Record::Tensor(header) = record.value else {
            panic!()
        };
        let mut easylm = Vec::new();
        stream.read_data_to(header.data_len, &mut easylm).unwrap();
        let cols = header.shape[1] as usize; // n·hd, flax layout (in = dim, out = n·hd)
        assert_eq!(header.shape[0] as usize, dim);
        let (_, shape, hf) = &written[&hf_name];
        assert_eq!(shape, &[cols, dim]);
        let element = |data: &[u8], index: usize| [data[2 * index], data[2 * index + 1]];
        for h in 0..cols / hd {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    for c in 0..dim {
                        let hf_row = h * hd + j * (hd / 2) + i;
                        let easylm_col = h * hd + 2 * i + j;
                        assert_eq!(
                            element(hf, hf_row * dim + c),
                            element(&easylm, c * cols + easylm_col),
                            "{hf_name} row {hf_row} col {c}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    // 2 layers x (q 32x32 + k 16x32)
    assert_eq!(checked, 2 * (32 * 32 + 16 * 32));
}

#[test]
fn tokenizer_files_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let golden = golden("rm-gqa-bf16");
    let folder_tokenizer = repo().join("tests/golden/fixtures/models/llama-gqa-rm");
    let out = dir.path().join("with-folder");
    let options = ConvertOptions {
        easylm: options(&golden),
        tokenizer: Some(folder_tokenizer.clone()),
        ..ConvertOptions::default()
    };
    convert(&checkpoint_path(&golden), &out, &options).unwrap();
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(folder_tokenizer.join(name)).unwrap(),
            "{name}"
        );
    }
    // a bare SentencePiece model, as EasyLM's converter takes it
    let model_file = dir.path().join("llama.model");
    std::fs::write(&model_file, b"not really sentencepiece").unwrap();
    let out = dir.path().join("with-model");
    let options = ConvertOptions {
        tokenizer: Some(model_file),
        ..options
    };
    convert(&checkpoint_path(&golden), &out, &options).unwrap();
    assert_eq!(
        std::fs::read(out.join("tokenizer.model")).unwrap(),
        b"not really sentencepiece"
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["tokenizer_class"], "LlamaTokenizer");
}

#[test]
fn existing_output_is_kept_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    convert_fixture("rm-gqa-bf16", dir.path(), OutputDtype::Bf16, u64::MAX);
    let golden = golden("rm-gqa-bf16");
    let mut options = ConvertOptions {
        easylm: options(&golden),
        ..ConvertOptions::default()
    };
    let err = convert(&checkpoint_path(&golden), dir.path(), &options).unwrap_err();
    assert!(err.to_string().contains("--overwrite"), "{err}");
    options.overwrite = true;
    options.shard_bytes = 16_000;
    convert(&checkpoint_path(&golden), dir.path(), &options).unwrap();
    // the old single file is gone, the shards and index are there
    assert!(!dir.path().join("model.safetensors").exists());
    assert!(dir.path().join("model.safetensors.index.json").exists());
}

#[test]
fn transformers_loads_the_converted_folders() {
    let Some(python) = herd_testkit::venv_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let out = dir.path().join(name);
        convert_fixture(name, &out, OutputDtype::Keep, 20_000);
        let result = Command::new(&python)
            .arg(repo().join("tests/golden/make_easylm_fixtures.py"))
            .arg("check-hf")
            .arg("--golden")
            .arg(easylm_dir().join(format!("{name}.json")))
            .arg("--model")
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        eprintln!("{name}: transformers {stdout}");
    }
}

#[test]
fn checkpoint_reports_sizes() {
    let golden = golden("rm-fp32-trainstate");
    let checkpoint = Checkpoint::open(&checkpoint_path(&golden), &options(&golden)).unwrap();
    // the float32 embedding (600 x 32) is the largest tensor
    assert_eq!(checkpoint.largest_tensor_bytes(), 600 * 32 * 4);
    assert_eq!(
        checkpoint.parameter_bytes(),
        checkpoint.parameter_count() * 4
    );
}
