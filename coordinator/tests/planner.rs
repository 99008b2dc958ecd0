//! The planner: local folders, files, hf: sources, GCS (real fake-gcs-server), examples, shards.

use std::path::Path;

use herd_coordinator::domain::CheckpointFormat;
use herd_coordinator::planner::{
    easylm_run_name, experiment_name, list_checkpoints, load_examples, param_bytes_of_folder,
    shard_ranges,
};
use herd_rpc::v1::SweepSpec;

const RUN_A: &str =
    "tulu2_13b_rm_human_datamodel_counts_7000_ID__07add08aa33a4fa6a5294c7bc41ae1f9__SWAPS_4026";
const RUN_B: &str =
    "tulu2_13b_rm_human_datamodel_counts_7000_ID__1b2c3d4e5f60718293a4b5c6d7e8f901__SWAPS_120";

fn spec(sources: &[&str], prefix: &str) -> SweepSpec {
    SweepSpec {
        name: "helpsteer2".into(),
        checkpoints: sources.iter().map(|s| s.to_string()).collect(),
        experiment_prefix: prefix.into(),
        ..Default::default()
    }
}

fn touch(path: &Path, bytes: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![0u8; bytes]).unwrap();
}

#[test]
fn shards_cover_the_examples() {
    assert_eq!(shard_ranges(0, 10), Vec::<std::ops::Range<u32>>::new());
    assert_eq!(shard_ranges(10, 3), vec![0..3, 3..6, 6..9, 9..10]);
    assert_eq!(shard_ranges(9, 3), vec![0..3, 3..6, 6..9]);
    assert_eq!(shard_ranges(1403, 0), vec![0..500, 500..1000, 1000..1403]);
    assert_eq!(shard_ranges(5, 100), vec![0..5]);
    assert_eq!(shard_ranges(u32::MAX, u32::MAX), vec![0..u32::MAX]);
    for (n, s) in [(1u32, 1u32), (17, 4), (1000, 7)] {
        let ranges = shard_ranges(n, s);
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, n);
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert!(ranges.iter().all(|r| r.len() as u32 <= s && !r.is_empty()));
    }
}

#[test]
fn names_follow_hybrid_preferences() {
    assert_eq!(
        easylm_run_name(&format!(
            "human-preferences/rm_checkpoints/helpsteer2/{RUN_A}--a6bf226b9e8e43f387810e0da3096526/streaming_params_437"
        ))
        .unwrap(),
        RUN_A
    );
    assert_eq!(easylm_run_name("streaming_params"), None);
    // convert_to_hf.py: parts[-2].replace(".", "-").split("--")[0] when "llama" is in the path
    // of its download (<download_dir>/<run folder>/<file>), else parent.stem.split("--")[0]
    let llama_run = "tulu2_13b_llama3.1_rm_human_datamodel_counts_7000_ID__0d2b1c__SWAPS_3150";
    let llama_name = "tulu2_13b_llama3-1_rm_human_datamodel_counts_7000_ID__0d2b1c__SWAPS_3150";
    for path in [
        format!("gs://bucket/rm_checkpoints/helpsteer2/{llama_run}--9f0e3a7c21d84b6e/streaming_params_437"),
        format!("rm_checkpoints/helpsteer2/{llama_run}--9f0e3a7c21d84b6e/streaming_params_437"),
        format!("/data/ckpts/{llama_run}--9f0e3a7c21d84b6e/streaming_params"),
    ] {
        assert_eq!(easylm_run_name(&path).unwrap(), llama_name, "{path}");
    }
    assert_eq!(
        easylm_run_name("ckpts/llama3.1_8b_rm--abc/streaming_params").unwrap(),
        "llama3-1_8b_rm"
    );
    // "llama" above the run folder (bucket, family folder): the non-llama rule, Path.stem
    // dropping the last ".suffix" of the folder name before the "--" split
    let run = "tulu2_13b_rm_human_datamodel_counts_7000_ID__7aa9__SWAPS_0.5";
    for path in [
        format!(
            "gs://llama-bucket/rm_checkpoints/llama/{run}--a6bf226b9e8e43f3/streaming_params_437"
        ),
        format!("/home/me/llama/ckpts/{run}--a6bf226b9e8e43f3/streaming_params"),
    ] {
        assert_eq!(
            easylm_run_name(&path).unwrap(),
            "tulu2_13b_rm_human_datamodel_counts_7000_ID__7aa9__SWAPS_0",
            "{path}"
        );
    }
    assert_eq!(
        easylm_run_name(&format!(
            "gs://b/rm_checkpoints/llama/{RUN_A}--a6bf226b9e8e43f387810e0da3096526/streaming_params_437"
        ))
        .unwrap(),
        RUN_A
    );
    assert_eq!(
        experiment_name("helpsteer2-counts", RUN_A),
        format!("rm-eval-helpsteer2-counts-{RUN_A}")
    );
    assert_eq!(experiment_name("", "run"), "run");
}

#[tokio::test]
async fn local_folders_files_and_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ckpts");
    touch(&root.join(format!("{RUN_B}--ffff/streaming_params_12")), 7);
    touch(
        &root.join(format!("{RUN_A}--abcd/streaming_params_437")),
        11,
    );
    touch(&root.join(format!("{RUN_A}--abcd/metadata_437.pkl")), 3);
    touch(&root.join("hf-model/config.json"), 2);
    touch(&root.join("hf-model/model.safetensors"), 40);
    // an HF folder is one checkpoint: nothing inside it is searched
    touch(&root.join("hf-model/sub/streaming_params_1"), 1);
    touch(&root.join("notes.txt"), 1);

    let found = list_checkpoints(&spec(
        &[root.to_str().unwrap(), "hf:allenai/tulu-2-13b"],
        "helpsteer2-counts",
    ))
    .await
    .unwrap();
    let summary: Vec<(&str, CheckpointFormat, u64)> = found
        .iter()
        .map(|c| (c.name.as_str(), c.format, c.size_bytes))
        .collect();
    let canon = std::fs::canonicalize(&root).unwrap();
    let a = format!("rm-eval-helpsteer2-counts-{RUN_A}");
    let b = format!("rm-eval-helpsteer2-counts-{RUN_B}");
    assert_eq!(
        summary,
        vec![
            (
                "rm-eval-helpsteer2-counts-hf-model",
                CheckpointFormat::HuggingFace,
                42
            ),
            (a.as_str(), CheckpointFormat::EasyLm, 11),
            (b.as_str(), CheckpointFormat::EasyLm, 7),
            (
                "rm-eval-helpsteer2-counts-tulu-2-13b",
                CheckpointFormat::HuggingFace,
                0
            ),
        ]
    );
    // parameter bytes: the garbage model.safetensors is unknown (0, the worker reports it), an
    // EasyLM file counts as its size, a Hub checkpoint is unknown
    let params: Vec<u64> = found.iter().map(|c| c.param_bytes).collect();
    assert_eq!(params, vec![0, 11, 7, 0]);
    let uris: Vec<&str> = found.iter().map(|c| c.uri.as_str()).collect();
    let mut sorted = uris.clone();
    sorted.sort();
    assert_eq!(uris, sorted);
    assert_eq!(found[0].uri, canon.join("hf-model").to_str().unwrap());
    assert_eq!(
        found[1].uri,
        canon
            .join(format!("{RUN_A}--abcd/streaming_params_437"))
            .to_str()
            .unwrap()
    );
    assert_eq!(found[3].uri, "hf:allenai/tulu-2-13b");

    // a single EasyLM file, no prefix; the same uri through two sources is kept once
    let file = root.join(format!("{RUN_B}--ffff/streaming_params_12"));
    let found = list_checkpoints(&spec(&[file.to_str().unwrap(), file.to_str().unwrap()], ""))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, RUN_B);

    // a file that is not a checkpoint
    let err = list_checkpoints(&spec(&[root.join("notes.txt").to_str().unwrap()], ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    // a missing source
    let err = list_checkpoints(&spec(&[root.join("nope").to_str().unwrap()], ""))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
    // nothing found
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = list_checkpoints(&spec(&[empty.to_str().unwrap()], ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no checkpoints found"), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
    // a bad hub name
    let err = list_checkpoints(&spec(&["hf:justaname"], ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hf:justaname"), "{err}");
}

#[tokio::test]
async fn duplicate_names_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp
        .path()
        .join(format!("one/{RUN_A}--aaaa/streaming_params_1"));
    let two = tmp
        .path()
        .join(format!("two/{RUN_A}--bbbb/streaming_params_2"));
    touch(&one, 1);
    touch(&two, 1);
    let err = list_checkpoints(&spec(&[tmp.path().to_str().unwrap()], "p"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("aaaa") && err.contains("bbbb"), "{err}");
    assert!(err.contains(RUN_A), "{err}");
}

#[tokio::test]
async fn gcs_listing() {
    use herd_storage::gcs::GcsClient;
    let Some(gcs) = herd_testkit::fake_gcs() else {
        return;
    };
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    client.create_bucket("ljm-dev").await.unwrap();
    let base = "human-preferences/rm_checkpoints/helpsteer2";
    for (name, len) in [
        (
            format!("{base}/{RUN_A}--a6bf/streaming_params_437"),
            13usize,
        ),
        (format!("{base}/{RUN_A}--a6bf/metadata_437.pkl"), 2),
        (format!("{base}/{RUN_B}--77ee/streaming_params_12"), 5),
        (
            "human-preferences/rm_checkpoints/multipref/x--1/streaming_params_1".to_string(),
            1,
        ),
    ] {
        client
            .upload("ljm-dev", &name, bytes::Bytes::from(vec![1u8; len]))
            .await
            .unwrap();
    }
    // the planner's client comes from the environment
    std::env::set_var("STORAGE_EMULATOR_HOST", gcs.endpoint());
    let found = list_checkpoints(&spec(
        &["gs://ljm-dev/human-preferences/rm_checkpoints/helpsteer2/"],
        "helpsteer2-counts",
    ))
    .await
    .unwrap();
    let got: Vec<(String, String, u64)> = found
        .iter()
        .map(|c| (c.uri.clone(), c.name.clone(), c.size_bytes))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                format!("gs://ljm-dev/{base}/{RUN_A}--a6bf/streaming_params_437"),
                format!("rm-eval-helpsteer2-counts-{RUN_A}"),
                13
            ),
            (
                format!("gs://ljm-dev/{base}/{RUN_B}--77ee/streaming_params_12"),
                format!("rm-eval-helpsteer2-counts-{RUN_B}"),
                5
            ),
        ]
    );
    assert!(found.iter().all(|c| c.format == CheckpointFormat::EasyLm));
    let err = list_checkpoints(&spec(&["gs://ljm-dev/nothing/here/"], ""))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("gs://ljm-dev/nothing/here/"),
        "{err}"
    );
}

#[test]
fn examples_from_files() {
    let Some(path) = herd_testkit::shared_path("data/rewardbench-llmbar.jsonl") else {
        return;
    };
    let spec = SweepSpec {
        eval_dataset: path.display().to_string(),
        ..Default::default()
    };
    let examples = load_examples(&spec).unwrap();
    assert_eq!(examples.len(), 419);
    for (i, e) in examples.iter().enumerate() {
        assert_eq!(e.index as usize, i);
        assert_eq!(e.id, i.to_string());
        assert!(e.subset.starts_with("llmbar-"));
        let pair: herd_rewardbench::dataset::PreferencePair =
            serde_json::from_str(&e.pair_json).unwrap();
        assert_eq!(pair.subset.as_deref(), Some(e.subset.as_str()));
    }

    let tmp = tempfile::tempdir().unwrap();
    let no_subset = tmp.path().join("nosubset.jsonl");
    std::fs::write(
        &no_subset,
        "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\", \"id\": 5}\n",
    )
    .unwrap();
    let err = load_examples(&SweepSpec {
        eval_dataset: no_subset.display().to_string(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("nosubset.jsonl"), "{err}");
    assert!(err.to_string().contains("subset"), "{err}");

    let missing = tmp.path().join("missing.jsonl");
    let err = load_examples(&SweepSpec {
        eval_dataset: missing.display().to_string(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("missing.jsonl"), "{err:#}");
}

/// Schema rb2: RewardBench 2 rows are loaded as best-of-N rows, each example carries its row and
/// completion counts; read as preference pairs they fail with a pointer to the schema.
#[test]
fn rb2_examples_from_files() {
    use herd_coordinator::domain::Completions;
    use herd_rewardbench::dataset::v2::BestOfNRow;
    use herd_rpc::v1::Scoring;

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("rb2.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"id": "7", "prompt": "p", "chosen": ["a"], "rejected": ["b", "c", "d"], "num_correct": 1, "total_completions": 4, "subset": "Math"}"#,
            "\n",
            r#"{"id": "tied:3", "prompt": "q", "chosen": ["a", "e"], "rejected": ["b"], "num_correct": 2, "subset": "Ties"}"#,
            "\n"
        ),
    )
    .unwrap();
    let rb2 = |schema: &str| SweepSpec {
        name: "rb2".into(),
        eval_dataset: file.display().to_string(),
        scoring: Some(Scoring {
            schema: schema.into(),
            ..Scoring::default()
        }),
        ..Default::default()
    };
    let examples = load_examples(&rb2("rb2")).unwrap();
    assert_eq!(examples.len(), 2);
    assert_eq!(
        examples[0].completions,
        Some(Completions {
            chosen: 1,
            rejected: 3
        })
    );
    assert_eq!(examples[1].id, "tied:3");
    assert_eq!(examples[1].subset, "Ties");
    let row: BestOfNRow = serde_json::from_str(&examples[1].pair_json).unwrap();
    assert_eq!(row.chosen, ["a", "e"]);
    assert_eq!(row.num_correct, 2);

    for schema in ["", "rb1"] {
        let err = format!("{:#}", load_examples(&rb2(schema)).unwrap_err());
        assert!(
            err.contains("rb2.jsonl") && err.contains("--schema rb2"),
            "{schema:?}: {err}"
        );
    }
    let err = format!("{:#}", load_examples(&rb2("v2")).unwrap_err());
    assert!(err.contains("\"v2\"") && err.contains("'rb2'"), "{err}");
}

/// A safetensors file as the format lays it out: 8 bytes of header length, the JSON header,
/// zeroed data. `tensors`: (name, dtype, element size, shape).
fn safetensors_file(path: &Path, tensors: &[(&str, &str, usize, &[usize])]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, size, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * size;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(vec![0u8; offset]);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, out).unwrap();
}

/// A sparse mixture of experts holds every expert in memory although each token runs only
/// `num_experts_per_tok` of them: the scheduler's bytes count all experts (the Mixtral DPO
/// fixture of tests/golden/make_mixtral_goldens.py, counted from its config.json).
#[test]
fn parameter_bytes_of_a_mixture_of_experts_count_every_expert() {
    let dir =
        herd_testkit::workspace_root().join("tests/golden/fixtures/mixtral/models/mixtral-policy");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let int = |key: &str| config[key].as_u64().unwrap();
    let (vocab, hidden, inter) = (
        int("vocab_size"),
        int("hidden_size"),
        int("intermediate_size"),
    );
    let (heads, kv_heads, experts) = (
        int("num_attention_heads"),
        int("num_key_value_heads"),
        int("num_local_experts"),
    );
    assert!(int("num_experts_per_tok") < experts);
    let head_dim = hidden / heads;
    let attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim;
    let per_layer = attention + 2 * hidden + experts * hidden + experts * 3 * inter * hidden;
    // embeddings, the untied lm_head, the final norm
    let parameters = 2 * vocab * hidden + hidden + int("num_hidden_layers") * per_layer;
    assert_eq!(param_bytes_of_folder(&dir).unwrap(), 2 * parameters);
}

#[test]
fn parameter_bytes_come_from_safetensors_headers() {
    let tmp = tempfile::tempdir().unwrap();
    // sharded: the index names two shards (one twice); fp32 and bf16 count alike, 2 bytes each
    let sharded = tmp.path().join("sharded");
    safetensors_file(
        &sharded.join("model-00001-of-00002.safetensors"),
        &[("a", "F32", 4, &[3, 4]), ("c", "BF16", 2, &[5])],
    );
    safetensors_file(
        &sharded.join("model-00002-of-00002.safetensors"),
        &[("b", "BF16", 2, &[2, 2, 2])],
    );
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        r#"{"metadata": {"total_size": 74}, "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    assert_eq!(param_bytes_of_folder(&sharded).unwrap(), 2 * (12 + 5 + 8));

    let single = tmp.path().join("single");
    safetensors_file(
        &single.join("model.safetensors"),
        &[("w", "F32", 4, &[7, 3])],
    );
    assert_eq!(param_bytes_of_folder(&single).unwrap(), 2 * 21);

    // no safetensors weights: unknown
    let bin = tmp.path().join("bin");
    touch(&bin.join("pytorch_model.bin"), 100);
    assert_eq!(param_bytes_of_folder(&bin).unwrap(), 0);

    // an index naming a path outside the folder, or a broken header: errors naming the file
    let escape = tmp.path().join("escape");
    std::fs::create_dir_all(&escape).unwrap();
    std::fs::write(
        escape.join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "../single/model.safetensors"}}"#,
    )
    .unwrap();
    let error = format!("{:#}", param_bytes_of_folder(&escape).unwrap_err());
    assert!(error.contains("not a file name in the folder"), "{error}");
    let broken = tmp.path().join("broken");
    touch(&broken.join("model.safetensors"), 40);
    let error = format!("{:#}", param_bytes_of_folder(&broken).unwrap_err());
    assert!(
        error.contains("model.safetensors") && error.contains("safetensors header"),
        "{error}"
    );
}
