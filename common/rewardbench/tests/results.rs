//! Result files byte for byte against what the Python reference writes.
//!
//! The goldens under `tests/golden/results/` come from `tests/golden/make_results_golden.py`
//! (CPython's `json` on the same inputs, transcribing `rewardbench/utils.py::save_to_hub`,
//! `scripts/run_rm.py`, `scripts/run_dpo.py` and the `rewardbench` CLI). Regenerate with
//! `$HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_results_golden.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herd_rewardbench::dataset::ExampleId;
use herd_rewardbench::files::{
    cli_paths, results_name, results_path, CliOutputs, CliResults, EvalSetResults, EvalSetScores,
    ResultsError, ResultsKind, ScoredPair,
};
use herd_rewardbench::pyjson::{self, dict_get, PyValue};
use proptest::prelude::*;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/results")
}

fn read_golden(rel: &str) -> String {
    let path = golden_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn inputs() -> PyValue {
    pyjson::loads(&read_golden("inputs.json")).expect("inputs.json parses")
}

fn get<'a>(v: &'a PyValue, key: &str) -> &'a PyValue {
    dict_get(v.as_dict().expect("a dict"), key).unwrap_or_else(|| panic!("no key {key}"))
}

fn opt_str(v: &PyValue) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn accuracies(v: &PyValue) -> BTreeMap<String, f64> {
    v.as_dict()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect()
}

fn pairs(inputs: &PyValue) -> Vec<ScoredPair> {
    let PyValue::List(rows) = get(inputs, "rows") else {
        panic!("rows")
    };
    rows.iter()
        .map(|r| {
            let id = match get(r, "id") {
                PyValue::Int(n) => ExampleId::Int(*n),
                other => panic!("id {other:?}"),
            };
            ScoredPair {
                id,
                subset: get(r, "subset").as_str().unwrap().into(),
                text_chosen: get(r, "text_chosen").as_str().unwrap().into(),
                text_rejected: get(r, "text_rejected").as_str().unwrap().into(),
                win: get(r, "result") == &PyValue::Int(1),
                scores_chosen: vec![get(r, "score_chosen").as_f64().unwrap()],
                scores_rejected: vec![get(r, "score_rejected").as_f64().unwrap()],
            }
        })
        .collect()
}

fn prompts(inputs: &PyValue) -> Vec<String> {
    let PyValue::List(rows) = get(inputs, "rows") else {
        panic!("rows")
    };
    rows.iter()
        .map(|r| get(r, "prompt").as_str().unwrap().to_owned())
        .collect()
}

fn assert_same_file(written: &Path, golden_rel: &str) {
    let got = std::fs::read(written).unwrap_or_else(|e| panic!("{}: {e}", written.display()));
    let want = std::fs::read(golden_dir().join(golden_rel)).unwrap();
    assert!(
        got == want,
        "{} differs from golden {golden_rel}:\n--- got\n{}\n--- want\n{}",
        written.display(),
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
}

#[test]
fn run_rm_files_match_python() {
    let inputs = inputs();
    let tmp = tempfile::tempdir().unwrap();
    for key in ["rm", "rm_tokenizer_template"] {
        let spec = get(&inputs, key);
        let model = get(spec, "model").as_str().unwrap();
        let results = EvalSetResults::new(
            model,
            get(spec, "model_type").as_str().unwrap(),
            opt_str(get(spec, "chat_template")),
            accuracies(get(spec, "accuracies")),
        );
        let results_dir = tmp.path().join(key).join("results");
        let path = results
            .write_eval_set(&results_dir, ResultsKind::EvalSet, model)
            .unwrap();
        let golden_rel = format!(
            "run_rm/{key}/results/eval-set/{}.json",
            model.trim_start_matches('/')
        );
        assert_same_file(&path, &golden_rel);
        let metrics = tmp.path().join(key).join("metrics.json");
        results.write_metrics(&metrics).unwrap();
        assert_same_file(&metrics, &format!("run_rm/{key}/metrics.json"));

        let scores = EvalSetScores::classifier(
            &pairs(&inputs),
            model,
            get(spec, "model_type").as_str().unwrap(),
            opt_str(get(spec, "scores_chat_template")),
        );
        let path = scores
            .write(&results_dir, ResultsKind::EvalSetScores, model)
            .unwrap();
        assert_same_file(
            &path,
            &format!(
                "run_rm/{key}/results/eval-set-scores/{}.json",
                model.trim_start_matches('/')
            ),
        );

        // the reader gets back what was written, from both layouts
        for file in [
            &metrics,
            &results_path(&results_dir, ResultsKind::EvalSet, model),
        ] {
            let back = EvalSetResults::read(file).unwrap();
            assert_eq!(back, results, "{}", file.display());
        }
    }
}

#[test]
fn run_dpo_files_match_python() {
    let inputs = inputs();
    let spec = get(&inputs, "dpo");
    let model = get(spec, "model").as_str().unwrap();
    let results = EvalSetResults::dpo(
        model,
        opt_str(get(spec, "ref_model")),
        accuracies(get(spec, "accuracies")),
    );
    assert_eq!(
        results.model_type,
        get(spec, "model_type").as_str().unwrap()
    );
    assert_eq!(results.chat_template, opt_str(get(spec, "chat_template")));
    let tmp = tempfile::tempdir().unwrap();
    let results_dir = tmp.path().join("results");
    let name = results_name(model, &results.model_type);
    assert_eq!(name, format!("{model}_ref_free"));
    assert_eq!(results_name(model, "DPO"), model);
    assert_eq!(results_name(model, "Seq. Classifier"), model);
    let path = results
        .write_eval_set(&results_dir, ResultsKind::EvalSet, &name)
        .unwrap();
    assert_same_file(&path, &format!("run_rm/dpo/results/eval-set/{name}.json"));
    let metrics = tmp.path().join("metrics.json");
    results.write_metrics(&metrics).unwrap();
    assert_same_file(&metrics, "run_rm/dpo/metrics.json");
    assert_eq!(EvalSetResults::read(&metrics).unwrap(), results);

    let scores = EvalSetScores::dpo(
        &pairs(&inputs),
        &prompts(&inputs),
        model,
        opt_str(get(spec, "scores_chat_template")),
    );
    let path = scores
        .write(&results_dir, ResultsKind::EvalSetScores, &name)
        .unwrap();
    assert_same_file(
        &path,
        &format!("run_rm/dpo/results/eval-set-scores/{name}.json"),
    );
}

#[test]
fn cli_files_match_python() {
    let inputs = inputs();
    let spec = get(&inputs, "cli");
    let model = get(spec, "model").as_str().unwrap();
    let pairs = pairs(&inputs);
    let wins: Vec<bool> = pairs.iter().map(|p| p.win).collect();
    let accuracy = herd_rewardbench::v1::cli_accuracy(wins.iter().copied()).unwrap();
    let per_subset =
        herd_rewardbench::v1::subset_accuracies(pairs.iter().map(|p| (&p.subset, p.win)));
    let results = CliResults {
        accuracy,
        num_prompts: pairs.len(),
        model: model.into(),
        ref_model: opt_str(get(spec, "ref_model")),
        tokenizer: get(spec, "tokenizer").as_str().unwrap().into(),
        chat_template: opt_str(get(spec, "chat_template")),
        extra_results: Some(per_subset),
    };
    let outputs = CliOutputs {
        prompt: prompts(&inputs).into_iter().map(PyValue::Str).collect(),
        results: wins,
        scores_chosen: pairs.iter().map(|p| p.scores_chosen.clone()).collect(),
        scores_rejected: pairs.iter().map(|p| p.scores_rejected.clone()).collect(),
        text_chosen: pairs.iter().map(|p| p.text_chosen.clone()).collect(),
        text_rejected: pairs.iter().map(|p| p.text_rejected.clone()).collect(),
        metadata: vec![
            (
                "subset".into(),
                pairs.iter().map(|p| p.subset.as_str().into()).collect(),
            ),
            ("id".into(), pairs.iter().map(|p| (&p.id).into()).collect()),
        ],
    };
    let tmp = tempfile::tempdir().unwrap();
    let output_dir = format!("{}/results/", tmp.path().display());
    let json = results.write(&output_dir).unwrap();
    let jsonl = outputs.write(&output_dir, model).unwrap();
    assert_eq!((json.clone(), jsonl.clone()), cli_paths(&output_dir, model));
    assert_same_file(&json, &format!("cli/results/{model}.json"));
    assert_same_file(&jsonl, &format!("cli/results/{model}_outputs.jsonl"));

    let mut short = outputs.clone();
    short.text_rejected.pop();
    let err = short.to_jsonl().unwrap_err();
    assert!(matches!(err, ResultsError::Ragged { .. }), "{err}");
}

#[test]
fn float_repr_matches_python_on_tricky_and_random_doubles() {
    let PyValue::List(cases) = pyjson::loads(&read_golden("float_repr.json")).unwrap() else {
        panic!("a list")
    };
    assert!(cases.len() > 700);
    for case in &cases {
        let PyValue::List(pair) = case else { panic!() };
        let bits = u64::from_str_radix(pair[0].as_str().unwrap(), 16).unwrap();
        let x = f64::from_bits(bits);
        let want = pair[1].as_str().unwrap();
        assert_eq!(pyjson::float_repr(x), want, "bits {bits:016x}");
        // and the parser reads Python's repr back to the same double
        assert_eq!(
            pyjson::loads(want).unwrap().as_f64().unwrap().to_bits(),
            bits,
            "{want}"
        );
    }
}

#[test]
fn reader_errors_name_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let p = write("a.json", r#"{"model_type": "x"}"#);
    let e = EvalSetResults::read(&p).unwrap_err().to_string();
    assert!(
        e.contains("a.json") && e.contains("\"model\"") && e.contains("missing"),
        "{e}"
    );
    let p = write("b.json", r#"{"model": 3}"#);
    let e = EvalSetResults::read(&p).unwrap_err().to_string();
    assert!(
        e.contains("b.json") && e.contains("\"model\"") && e.contains("int"),
        "{e}"
    );
    let p = write("c.json", "{\"model\": \"m\",\n \"chat_template\": 1}");
    let e = EvalSetResults::read(&p).unwrap_err().to_string();
    assert!(
        e.contains("c.json") && e.contains("\"chat_template\""),
        "{e}"
    );
    let p = write("d.json", "{\"model\": \"m\",\n \"x\" 1}");
    let e = EvalSetResults::read(&p).unwrap_err().to_string();
    assert!(e.contains("d.json") && e.contains("line 2 column 6"), "{e}");
    let p = write("e.json", "[1]");
    let e = EvalSetResults::read(&p).unwrap_err().to_string();
    assert!(e.contains("e.json") && e.contains("list"), "{e}");
    let e = EvalSetResults::read(&tmp.path().join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.json"), "{e}");

    // extra keys are tolerated and kept; ints are accuracies too
    let p = write(
        "f.json",
        r#"{"model": "m", "model_type": "Seq. Classifier", "chat_template": null, "hep-go": 1, "shp": 0.5, "notes": ["x"], "n": 3}"#,
    );
    let r = EvalSetResults::read(&p).unwrap();
    assert_eq!(r.chat_template, None);
    assert_eq!(r.accuracies.get("hep-go"), Some(&1.0));
    assert_eq!(r.accuracies.get("n"), Some(&3.0));
    assert_eq!(
        r.extra,
        vec![("notes".to_string(), PyValue::List(vec!["x".into()]))]
    );
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z\\-]{0,12}",
        any::<String>(),
        Just("\"\\\n\t\u{7f}é😀".to_string()),
    ]
}

fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (0u32..=1000, 1u32..=1000).prop_map(|(a, b)| f64::from(a) / f64::from(b)),
        Just(0.1),
        Just(1e-5),
        Just(-0.0),
        Just(2.5e20),
    ]
}

fn arb_value() -> impl Strategy<Value = PyValue> {
    let leaf = prop_oneof![
        Just(PyValue::Null),
        any::<bool>().prop_map(PyValue::Bool),
        any::<i64>().prop_map(PyValue::Int),
        arb_float().prop_map(PyValue::Float),
        arb_string().prop_map(PyValue::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(PyValue::List),
            prop::collection::vec((arb_string(), inner), 0..6).prop_map(|entries| {
                // a dict has unique keys
                let mut d: Vec<(String, PyValue)> = Vec::new();
                for (k, v) in entries {
                    if !d.iter().any(|(dk, _)| *dk == k) {
                        d.push((k, v));
                    }
                }
                PyValue::Dict(d)
            }),
        ]
    })
}

/// Equality with NaN equal to NaN and -0.0 apart from 0.0 (what a byte-exact round trip needs).
fn same(a: &PyValue, b: &PyValue) -> bool {
    match (a, b) {
        (PyValue::Float(x), PyValue::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        (PyValue::List(x), PyValue::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (PyValue::Dict(x), PyValue::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => a == b,
    }
}

proptest! {
    #[test]
    fn json_round_trips(v in arb_value(), indent in prop::option::of(0usize..5)) {
        let text = pyjson::dumps(&v, indent, false);
        prop_assert!(text.is_ascii());
        let back = pyjson::loads(&text).unwrap();
        prop_assert!(same(&v, &back), "{text}");
    }

    #[test]
    fn float_repr_round_trips(x in any::<f64>()) {
        let s = pyjson::float_repr(x);
        let back: f64 = s.parse().unwrap();
        prop_assert!(back.to_bits() == x.to_bits() || (x.is_nan() && back.is_nan()), "{s}");
    }

    #[test]
    fn eval_set_reader_round_trips_the_writers(
        model in "[a-zA-Z0-9_./-]{1,30}",
        model_type in arb_string(),
        chat_template in prop::option::of(arb_string()),
        ref_model in prop::option::of(prop::option::of(arb_string())),
        accs in prop::collection::btree_map("[a-z][a-z0-9_-]{0,15}", arb_float(), 0..30),
    ) {
        // subset names never collide with the dict's own keys
        let accs: BTreeMap<String, f64> = accs
            .into_iter()
            .filter(|(k, _)| !["model", "model_type", "chat_template", "ref_model"].contains(&k.as_str()))
            .collect();
        let mut r = EvalSetResults::new(model, model_type, chat_template, accs);
        r.ref_model = ref_model;
        for text in [r.eval_set_json(), r.metrics_json()] {
            let back = EvalSetResults::from_value("mem", &pyjson::loads(&text).unwrap()).unwrap();
            prop_assert_eq!(&back.model, &r.model);
            prop_assert_eq!(&back.model_type, &r.model_type);
            prop_assert_eq!(&back.chat_template, &r.chat_template);
            prop_assert_eq!(&back.ref_model, &r.ref_model);
            prop_assert_eq!(back.accuracies.len(), r.accuracies.len());
            for ((ka, va), (kb, vb)) in back.accuracies.iter().zip(&r.accuracies) {
                prop_assert_eq!(ka, kb);
                prop_assert!(va.to_bits() == vb.to_bits() || (va.is_nan() && vb.is_nan()));
            }
            // and writing what was read gives the same bytes
            prop_assert_eq!(back.eval_set_json(), r.eval_set_json());
        }
    }
}

#[test]
fn of_pairs_picks_the_scripts_layout_by_model_type() {
    let inputs = inputs();
    let (pairs, prompts) = (pairs(&inputs), prompts(&inputs));
    let tmp = tempfile::tempdir().unwrap();
    let results_dir = tmp.path().join("results");
    // a DPO model: run_dpo.py's golden, saved under the _ref_free name
    let dpo = get(&inputs, "dpo");
    let model = get(dpo, "model").as_str().unwrap();
    let model_type = get(dpo, "model_type").as_str().unwrap();
    let name = results_name(model, model_type);
    let path = EvalSetScores::of_pairs(
        &pairs,
        Some(&prompts),
        model,
        model_type,
        opt_str(get(dpo, "scores_chat_template")),
    )
    .unwrap()
    .write(&results_dir, ResultsKind::EvalSetScores, &name)
    .unwrap();
    assert_same_file(
        &path,
        &format!("run_rm/dpo/results/eval-set-scores/{name}.json"),
    );
    // a sequence classifier: run_rm.py's golden (the prompts are not used)
    let rm = get(&inputs, "rm");
    let model = get(rm, "model").as_str().unwrap();
    let path = EvalSetScores::of_pairs(
        &pairs,
        Some(&prompts),
        model,
        get(rm, "model_type").as_str().unwrap(),
        opt_str(get(rm, "scores_chat_template")),
    )
    .unwrap()
    .write(&results_dir, ResultsKind::EvalSetScores, model)
    .unwrap();
    assert_same_file(
        &path,
        &format!("run_rm/rm/results/eval-set-scores/{model}.json"),
    );
    // a DPO file needs one prompt per pair
    let err = EvalSetScores::of_pairs(&pairs, None, "m", "DPO Ref. Free", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("eval-set-scores/m_ref_free.json") && err.contains("no prompts"),
        "{err}"
    );
    let err = EvalSetScores::of_pairs(&pairs, Some(&prompts[1..]), "m", "DPO", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"prompt\" has"), "{err}");
}
