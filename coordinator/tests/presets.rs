//! Presets: the shipped file, defaults, overrides and unknown keys.

use std::path::Path;

use herd_coordinator::presets::{check_scoring, resolve_spec, EasyLmPreset, Preset, Presets};

fn shipped() -> Presets {
    Presets::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("presets.toml")).unwrap()
}

const FAMILIES: [&str; 4] = ["alpacafarm", "chatarena", "helpsteer2", "multipref"];

#[test]
fn shipped_presets_cover_the_four_families() {
    let presets = shipped();
    let names: Vec<&str> = presets.presets.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "alpacafarm",
            "chatarena",
            "helpsteer2",
            "llama3.1-8b",
            "multipref"
        ]
    );
    for name in FAMILIES {
        let spec = resolve_spec(name, Some(&presets), Preset::default()).unwrap();
        assert_eq!(spec.name, name);
        assert_eq!(
            spec.checkpoints,
            [format!(
                "gs://ljm-dev/human-preferences/rm_checkpoints/{name}/"
            )]
        );
        assert_eq!(spec.output_csv, format!("{name}-counts-runs.csv"));
        assert_eq!(spec.experiment_prefix, format!("{name}-counts"));
        assert_eq!(spec.xstest_weighting, "legacy");
        assert_eq!(spec.eval_dataset, "hf://datasets/allenai/reward-bench");
        assert_eq!(spec.eval_split, "filtered");
        let scoring = spec.scoring.unwrap();
        assert_eq!(scoring.chat_template, "tulu");
        assert_eq!(scoring.max_length, 2048);
        // as the counts runs were scored: EasyLM's converter's tokenizer folder (no template, no
        // pad token), transformers 4.43's pooling, the converter's rope_theta
        assert_eq!(scoring.tokenizer_template, "ignore");
        assert_eq!(scoring.pad, "eos");
        assert_eq!(scoring.pooling, "legacy");
        assert_eq!(spec.shard_size % 8, 0);
        let easylm = scoring.easylm.unwrap();
        assert_eq!(easylm.size, "13b");
        assert_eq!(easylm.compat, "converter-2024");
        assert_eq!(easylm.rope_theta, None);
        // relative to the presets file's folder
        assert!(spec
            .feature_counts_dir
            .ends_with(&format!("data/{name}_count_feats/counts/")));
        assert!(
            Path::new(&spec.feature_counts_dir).is_absolute()
                || spec
                    .feature_counts_dir
                    .starts_with(env!("CARGO_MANIFEST_DIR"))
        );
        let total = if name == "helpsteer2" { 10160 } else { 0 };
        assert_eq!(spec.dataset_total_size, total);
    }
}

#[test]
fn flags_override_field_by_field() {
    let presets = shipped();
    let overrides = Preset {
        checkpoints: Some(vec!["/data/ckpts".into(), "hf:org/model".into()]),
        tokenizer: Some("/tok".into()),
        shard_size: Some(64),
        xstest_weighting: Some("current".into()),
        easylm: Some(EasyLmPreset {
            num_heads: Some(40),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = resolve_spec("helpsteer2", Some(&presets), overrides).unwrap();
    assert_eq!(spec.checkpoints, ["/data/ckpts", "hf:org/model"]);
    assert_eq!(spec.shard_size, 64);
    assert_eq!(spec.xstest_weighting, "current");
    assert_eq!(spec.dataset_total_size, 10160);
    let scoring = spec.scoring.unwrap();
    assert_eq!(scoring.tokenizer, "/tok");
    assert_eq!(scoring.chat_template, "tulu");
    let easylm = scoring.easylm.unwrap();
    assert_eq!(easylm.size, "13b");
    assert_eq!(easylm.num_heads, Some(40));
}

#[test]
fn defaults_without_a_presets_file() {
    let overrides = Preset {
        checkpoints: Some(vec!["/ckpts".into()]),
        eval_dataset: Some("/data/rb.jsonl".into()),
        ..Default::default()
    };
    let spec = resolve_spec("mysweep", None, overrides.clone()).unwrap();
    assert_eq!(spec.output_csv, "mysweep-counts-runs.csv");
    assert_eq!(spec.experiment_prefix, "mysweep-counts");
    assert_eq!(spec.xstest_weighting, "legacy");
    assert_eq!(spec.shard_size, 0);
    assert!(spec.scoring.unwrap().easylm.is_none());
    // a name the file lacks is fine when the flags give checkpoints and the evaluation set
    let presets = shipped();
    assert!(resolve_spec("mysweep", Some(&presets), overrides).is_ok());
    let err = resolve_spec("mysweep", Some(&presets), Preset::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("mysweep") && text.contains("helpsteer2"),
        "{text}"
    );
    // no checkpoints at all
    let err = resolve_spec(
        "x",
        None,
        Preset {
            eval_dataset: Some("/d.jsonl".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("checkpoints"), "{err}");
}

#[test]
fn unknown_keys_and_bad_values_name_the_file() {
    let err = Presets::parse("[helpsteer2]\nbucket = \"ljm-dev\"\n", "my-presets.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("my-presets.toml") && err.contains("bucket"),
        "{err}"
    );
    let err = Presets::parse("[a]\n[a.easylm]\nheads = 4\n", "p.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("p.toml") && err.contains("heads"), "{err}");
    let err = Presets::parse("[a]\nmax_length = \"long\"\n", "p.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("p.toml") && err.contains("max_length"),
        "{err}"
    );

    let presets = Presets::parse(
        "[a]\ncheckpoints = [\"/c\"]\neval_dataset = \"/d\"\nxstest_weighting = \"newest\"\n[b]\ncheckpoints = [\"/c\"]\neval_dataset = \"/d\"\noutput_csv = \"../x.csv\"\n",
        "p.toml",
    )
    .unwrap();
    let err = resolve_spec("a", Some(&presets), Preset::default()).unwrap_err();
    assert!(format!("{err:#}").contains("newest"), "{err:#}");
    let err = resolve_spec("b", Some(&presets), Preset::default()).unwrap_err();
    assert!(format!("{err:#}").contains("../x.csv"), "{err:#}");
}

#[test]
fn relative_paths_follow_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("herd-presets.toml");
    std::fs::write(
        &file,
        "[s]\ncheckpoints = [\"ckpts\", \"gs://b/p/\", \"hf:o/n\", \"/abs\"]\neval_dataset = \"rb.jsonl\"\nfeature_counts_dir = \"counts\"\n",
    )
    .unwrap();
    let presets = Presets::read(&file).unwrap();
    let spec = resolve_spec("s", Some(&presets), Preset::default()).unwrap();
    let base = tmp.path().display().to_string();
    assert_eq!(
        spec.checkpoints,
        [
            format!("{base}/ckpts"),
            "gs://b/p/".into(),
            "hf:o/n".into(),
            "/abs".into()
        ]
    );
    assert_eq!(spec.eval_dataset, format!("{base}/rb.jsonl"));
    assert_eq!(spec.feature_counts_dir, format!("{base}/counts"));
}

#[test]
fn schema_key_and_flag() {
    let base = Preset {
        checkpoints: Some(vec!["/ckpts".into()]),
        eval_dataset: Some("/data/rb2.jsonl".into()),
        ..Default::default()
    };
    let schema = |preset: Preset| {
        resolve_spec("rb2sweep", None, preset)
            .map(|spec| spec.scoring.unwrap().schema)
            .map_err(|e| format!("{e:#}"))
    };
    // rb1 is stored as the empty field, as every spec before the key
    assert_eq!(schema(base.clone()), Ok(String::new()));
    let with = |s: &str| Preset {
        schema: Some(s.into()),
        ..base.clone()
    };
    assert_eq!(schema(with("rb1")), Ok(String::new()));
    assert_eq!(schema(with("rb2")), Ok("rb2".into()));
    let err = schema(with("rewardbench2")).unwrap_err();
    assert!(
        err.contains("rb2sweep") && err.contains("rewardbench2"),
        "{err}"
    );
    let presets = Presets::parse(
        "[rb2sweep]\ncheckpoints = [\"/c\"]\neval_dataset = \"/d.jsonl\"\nschema = \"rb2\"\n",
        "p.toml",
    )
    .unwrap();
    let spec = resolve_spec("rb2sweep", Some(&presets), Preset::default()).unwrap();
    assert_eq!(spec.scoring.unwrap().schema, "rb2");
}

#[test]
fn llama31_preset_needs_checkpoints_and_uses_the_tokenizer_as_it_is() {
    let presets = shipped();
    let err = resolve_spec("llama3.1-8b", Some(&presets), Preset::default()).unwrap_err();
    assert!(err.to_string().contains("--checkpoints"), "{err}");
    let overrides = Preset {
        checkpoints: Some(vec!["gs://bucket/llama31/".into()]),
        ..Default::default()
    };
    let spec = resolve_spec("llama3.1-8b", Some(&presets), overrides).unwrap();
    assert_eq!(spec.output_csv, "llama3.1-8b-counts-runs.csv");
    let scoring = spec.scoring.unwrap();
    assert_eq!(scoring.tokenizer, "hf:meta-llama/Llama-3.1-8B");
    assert_eq!(scoring.tokenizer_template, "use");
    assert_eq!(scoring.pad, "tokenizer");
    assert_eq!(scoring.pooling, "current");
    let easylm = scoring.easylm.unwrap();
    assert_eq!(easylm.size, "8b31");
    assert_eq!(easylm.compat, "");
}

#[test]
fn provenance_pooling_and_compat_flags_override_the_preset() {
    let presets = shipped();
    let overrides = Preset {
        tokenizer_template: Some("use".into()),
        pad: Some("0".into()),
        pooling: Some("current".into()),
        shard_size: Some(500),
        easylm: Some(EasyLmPreset {
            compat: Some("training".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = resolve_spec("chatarena", Some(&presets), overrides).unwrap();
    let scoring = spec.scoring.unwrap();
    assert_eq!(
        (
            scoring.tokenizer_template.as_str(),
            scoring.pad.as_str(),
            scoring.pooling.as_str()
        ),
        ("use", "0", "current")
    );
    let easylm = scoring.easylm.unwrap();
    assert_eq!(
        (easylm.size.as_str(), easylm.compat.as_str()),
        ("13b", "training")
    );
}

#[test]
fn legacy_pooling_needs_shards_aligned_to_batches_of_eight() {
    let presets = shipped();
    let with_shards = |shard_size: Option<u32>| Preset {
        shard_size,
        ..Default::default()
    };
    for bad in [Some(500), Some(4)] {
        let err = resolve_spec("helpsteer2", Some(&presets), with_shards(bad))
            .map(|_| ())
            .unwrap_err();
        let text = format!("{err:#}");
        let size = bad.unwrap();
        assert!(
            text.contains("helpsteer2")
                && text.contains(&format!("shard_size {size}"))
                && text.contains("multiple of 8"),
            "{text}"
        );
    }
    for good in [8, 504, 1000] {
        let spec = resolve_spec("helpsteer2", Some(&presets), with_shards(Some(good))).unwrap();
        assert_eq!(spec.shard_size, good);
    }
    // current pooling takes any shard size
    let current = Preset {
        pooling: Some("current".into()),
        shard_size: Some(500),
        ..Default::default()
    };
    assert!(resolve_spec("helpsteer2", Some(&presets), current).is_ok());
    // unset, the shard size is the default 500
    let unset = Presets::parse(
        "[s]\ncheckpoints = [\"/c\"]\neval_dataset = \"/d\"\npooling = \"legacy\"\n",
        "p.toml",
    )
    .unwrap();
    let err = resolve_spec("s", Some(&unset), Preset::default()).unwrap_err();
    assert!(format!("{err:#}").contains("shard_size 500"), "{err:#}");
    // the coordinator's own check (what `submit` runs on specs from any client)
    let mut spec = resolve_spec("helpsteer2", Some(&presets), Preset::default()).unwrap();
    spec.shard_size = 0;
    assert!(check_scoring(&spec).is_err());
}

#[test]
fn unknown_provenance_pooling_and_compat_values_are_refused() {
    let base = "checkpoints = [\"/c\"]\neval_dataset = \"/d\"\n";
    for (line, key) in [
        ("tokenizer_template = \"drop\"", "tokenizer_template"),
        ("pad = \"-1\"", "pad"),
        ("pad = \"unk\"", "pad"),
        ("pooling = \"last\"", "pooling"),
        ("[s.easylm]\ncompat = \"2023\"", "easylm.compat"),
    ] {
        let text = format!("[s]\n{base}{line}\n");
        let presets = Presets::parse(&text, "p.toml").unwrap();
        let err = resolve_spec("s", Some(&presets), Preset::default()).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains(key), "{line}: {message}");
    }
    for line in [
        "pad = \"2\"",
        "pad = \"eos\"",
        "tokenizer_template = \"use\"",
    ] {
        let text = format!("[s]\n{base}{line}\n");
        let presets = Presets::parse(&text, "p.toml").unwrap();
        assert!(
            resolve_spec("s", Some(&presets), Preset::default()).is_ok(),
            "{line}"
        );
    }
}
