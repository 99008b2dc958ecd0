//! The sweep CSV byte for byte against the reference logic run with real pandas.
//!
//! `tests/golden/sweep/<scenario>/expected.csv` is what allenai/hybrid-preferences'
//! `scripts/fetch_evals_rewardbench.py` (run unmodified by `tests/golden/make_sweep_csv_golden.py` with
//! pandas 2.2.3) writes for the experiments and feature files beside it; `argsort.json` holds
//! numpy's object-array quicksort and pandas' descending `sort_values` order on tie-heavy inputs.
//! Regenerate with `$HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_sweep_csv_golden.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herd_rewardbench::pyjson::{self, dict_get, PyDict, PyValue};
use herd_rewardbench::sweep_csv::npsort::{argsort_quicksort, nargsort_descending};
use herd_rewardbench::sweep_csv::{
    build_sweep_table, read_feature_counts_dir, sweep_csv, Cell, Experiment, FeatureCounts,
    RowLabel, SweepError, SweepOptions,
};
use herd_rewardbench::v1::{section_scores, XstestWeighting, SUBSETS};
use proptest::prelude::*;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sweep")
}

struct Scenario {
    experiments: Vec<Experiment>,
    features: Option<Vec<FeatureCounts>>,
    options: SweepOptions,
    expected: String,
}

fn load(name: &str) -> Scenario {
    let dir = golden_dir().join(name);
    let options_json =
        pyjson::loads(&std::fs::read_to_string(dir.join("options.json")).unwrap()).unwrap();
    let opts = options_json.as_dict().unwrap();
    let experiments = std::fs::read_to_string(dir.join("experiments.txt"))
        .unwrap()
        .lines()
        .map(|name| {
            Experiment::read(name, &dir.join("metrics").join(format!("{name}.json"))).unwrap()
        })
        .collect();
    let features = match dict_get(opts, "feature_counts_dir").unwrap() {
        PyValue::Str(sub) => Some(read_feature_counts_dir(&dir.join(sub)).unwrap()),
        _ => None,
    };
    let options = SweepOptions {
        weighting: XstestWeighting::Legacy,
        dataset_total_size: match dict_get(opts, "dataset_total_size").unwrap() {
            PyValue::Int(n) => Some(*n as u64),
            _ => None,
        },
        label_threshold: dict_get(opts, "gpt4_threshold_score").unwrap().as_f64(),
    };
    Scenario {
        experiments,
        features,
        options,
        expected: std::fs::read_to_string(dir.join("expected.csv")).unwrap(),
    }
}

fn check_scenario(name: &str) {
    let s = load(name);
    let csv = sweep_csv(&s.experiments, s.features.as_deref(), &s.options).unwrap();
    if csv != s.expected {
        for (i, (got, want)) in csv.lines().zip(s.expected.lines()).enumerate() {
            if got != want {
                panic!("{name}: line {} differs:\n got: {got}\nwant: {want}", i + 1);
            }
        }
        panic!(
            "{name}: {} lines written, {} expected",
            csv.lines().count(),
            s.expected.lines().count()
        );
    }
}

#[test]
fn counts_mode_matches_pandas() {
    // ties reordered by the unstable sort, rows dropped, float count columns, rescaled budgets,
    // label, quoted header
    check_scenario("counts");
}

#[test]
fn counts_mode_with_int_features_matches_pandas() {
    // the 90 real feature names, string budgets, a uuid shared by two experiments, no label
    check_scenario("counts_int");
}

#[test]
fn name_mode_matches_pandas() {
    // no feature files: names as row labels, missing values kept as empty fields
    check_scenario("names");
}

#[test]
fn golden_shapes_are_what_the_scenarios_promise() {
    let s = load("counts");
    let table = build_sweep_table(&s.experiments, s.features.as_deref(), &s.options).unwrap();
    let names: Vec<&str> = table.column_names().collect();
    assert_eq!(
        &names[..9],
        [
            "model_type",
            "chat_template",
            "Chat",
            "Chat Hard",
            "Safety",
            "Reasoning",
            "Overall",
            "uuid",
            "budget"
        ]
    );
    let mut sorted_subsets = SUBSETS.to_vec();
    sorted_subsets.sort_unstable();
    assert_eq!(&names[9..32], &sorted_subsets[..]);
    assert_eq!(names.last(), Some(&"label"));
    // 24 ID runs, 4 dropped (no features, null chat_template, missing subset... and the
    // feature file without a run adds nothing)
    assert_eq!(table.num_rows(), 21);
    assert!(s
        .expected
        .lines()
        .nth(1)
        .unwrap()
        .contains(",Seq. Classifier,tulu,"));
    // the rows are in descending Overall
    let overall = table.column("Overall").unwrap();
    let values: Vec<f64> = overall.cells.iter().map(|c| c.as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]));
    // and ties came out of order, as the unstable sort leaves them
    let labels: Vec<usize> = table
        .labels
        .iter()
        .map(|l| match l {
            RowLabel::Position(p) => *p,
            RowLabel::Name(_) => unreachable!(),
        })
        .collect();
    assert!(labels.windows(2).any(|w| w[0] > w[1]));
}

#[test]
fn categories_equal_rewardbench_sections_with_the_legacy_weights() {
    // the sweep's Chat..Reasoning are calculate_scores_per_section with xstest 250/154, bit for bit
    // ("counts": one experiment per uuid, so every row's sections come from its own subsets)
    let s = load("counts");
    let table = build_sweep_table(&s.experiments, s.features.as_deref(), &s.options).unwrap();
    for row in 0..table.num_rows() {
        let accs: BTreeMap<String, f64> = SUBSETS
            .iter()
            .map(|&sub| {
                (
                    sub.to_string(),
                    table.column(sub).unwrap().cells[row].as_f64().unwrap(),
                )
            })
            .collect();
        let sections = section_scores(&accs, XstestWeighting::Legacy);
        for (name, want) in ["Chat", "Chat Hard", "Safety", "Reasoning"]
            .iter()
            .zip(sections.as_array())
        {
            let got = table.column(name).unwrap().cells[row].as_f64().unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "row {row} {name}");
        }
        let overall = table.column("Overall").unwrap().cells[row]
            .as_f64()
            .unwrap();
        assert_eq!(overall.to_bits(), sections.score().to_bits());
    }
    // and the weighting is selectable
    let current = SweepOptions {
        weighting: XstestWeighting::Current,
        ..s.options.clone()
    };
    let t2 = build_sweep_table(&s.experiments, s.features.as_deref(), &current).unwrap();
    let safety =
        |t: &herd_rewardbench::sweep_csv::SweepTable| t.column("Safety").unwrap().cells.clone();
    assert_ne!(safety(&table), safety(&t2));
    assert_eq!(
        table.column("Chat").unwrap().cells.len(),
        t2.column("Chat").unwrap().cells.len()
    );
}

#[test]
fn numpy_quicksort_and_pandas_order_match() {
    let text = std::fs::read_to_string(golden_dir().join("argsort.json")).unwrap();
    let PyValue::List(cases) = pyjson::loads(&text).unwrap() else {
        panic!("a list")
    };
    let ints = |v: &PyValue| -> Vec<usize> {
        let PyValue::List(items) = v else { panic!() };
        items
            .iter()
            .map(|i| match i {
                PyValue::Int(n) => *n as usize,
                _ => panic!(),
            })
            .collect()
    };
    let mut unstable_seen = false;
    for (k, case) in cases.iter().enumerate() {
        let d = case.as_dict().unwrap();
        let PyValue::List(values) = dict_get(d, "values").unwrap() else {
            panic!()
        };
        let values: Vec<f64> = values.iter().map(|v| v.as_f64().unwrap()).collect();
        let with_nan: Vec<f64> = values.clone();
        assert_eq!(
            argsort_quicksort(&with_nan),
            ints(dict_get(d, "argsort").unwrap()),
            "case {k}: argsort of {values:?}"
        );
        let desc = nargsort_descending(&values.iter().map(|&x| Some(x)).collect::<Vec<_>>());
        let want = ints(dict_get(d, "sort_desc").unwrap());
        assert_eq!(desc, want, "case {k}: sort_values of {values:?}");
        // a stable descending sort would give another order for some of these
        let mut stable: Vec<usize> = (0..values.len()).filter(|&i| !values[i].is_nan()).collect();
        stable.sort_by(|&a, &b| values[b].partial_cmp(&values[a]).unwrap());
        stable.extend((0..values.len()).filter(|&i| values[i].is_nan()));
        unstable_seen |= stable != want;
    }
    assert!(
        unstable_seen,
        "the goldens should include a case where the sort is not stable"
    );
}

fn metrics(accs: &[(String, f64)]) -> PyDict {
    let mut d: PyDict = vec![
        ("model".into(), "/reward_model".into()),
        ("model_type".into(), "Seq. Classifier".into()),
        ("chat_template".into(), "tulu".into()),
    ];
    d.extend(accs.iter().map(|(k, v)| (k.clone(), PyValue::Float(*v))));
    d
}

fn full_metrics(value: f64) -> PyDict {
    let mut subsets = SUBSETS.to_vec();
    subsets.sort_unstable();
    metrics(
        &subsets
            .iter()
            .map(|s| (s.to_string(), value))
            .collect::<Vec<_>>(),
    )
}

fn features_for(uuid: &str) -> FeatureCounts {
    FeatureCounts::new(
        format!("regressor_feats_ID__{uuid}__SWAPS_1.json"),
        &format!("regressor_feats_ID__{uuid}__SWAPS_1"),
        vec![("f".into(), PyValue::Int(3))],
    )
    .unwrap()
}

#[test]
fn errors_where_the_reference_fails() {
    let feats = [features_for("abc")];
    let opts = SweepOptions::default();
    for bad in ["rm-eval-x-ID__abc__no-swaps", "rm-eval-x-ID__ABC__SWAPS_3"] {
        let exps = [Experiment::new(bad, full_metrics(0.5))];
        let err = build_sweep_table(&exps, Some(&feats), &opts).unwrap_err();
        assert!(matches!(err, SweepError::Experiment { .. }), "{err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
    // a name without "ID" is simply left out in counts mode
    let exps = [
        Experiment::new("baseline", full_metrics(0.5)),
        Experiment::new("x_ID__abc__SWAPS_3", full_metrics(0.25)),
    ];
    let t = build_sweep_table(&exps, Some(&feats), &opts).unwrap();
    assert_eq!(t.num_rows(), 1);
    assert_eq!(t.column("budget").unwrap().cells[0], Cell::Str("3".into()));
    // RangeIndex position after the merge: the ID run sorts second but is the only left row
    assert_eq!(t.labels, vec![RowLabel::Position(0)]);
    // no feature files at all
    let err = build_sweep_table(&exps, Some(&[]), &opts).unwrap_err();
    assert!(err.to_string().contains("feature"), "{err}");
    // a subset no experiment has
    let mut m = full_metrics(0.5);
    m.retain(|(k, _)| k != "hep-go");
    let err = build_sweep_table(
        &[Experiment::new("x_ID__abc__SWAPS_3", m)],
        Some(&feats),
        &opts,
    )
    .unwrap_err();
    assert!(err.to_string().contains("hep-go"), "{err}");
    // a non-numeric accuracy
    let mut m = full_metrics(0.5);
    m.push(("hep-go".into(), "high".into()));
    let err = build_sweep_table(
        &[Experiment::new("x_ID__abc__SWAPS_3", m)],
        Some(&feats),
        &opts,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("hep-go") && err.to_string().contains("x_ID__abc__SWAPS_3"),
        "{err}"
    );
    // no model key anywhere
    let mut m = full_metrics(0.5);
    m.retain(|(k, _)| k != "model");
    let err = build_sweep_table(&[Experiment::new("n", m)], None, &opts).unwrap_err();
    assert!(err.to_string().contains("\"model\""), "{err}");
    // a feature file name without an ID
    let err = FeatureCounts::new("feats.json", "feats", vec![]).unwrap_err();
    assert!(err.to_string().contains("feats.json"), "{err}");
}

#[test]
fn past_results_join_a_sweep() {
    // an eval-set results file read back gives the metrics dict the sweep needs
    let tmp = tempfile::tempdir().unwrap();
    let mut accs = BTreeMap::new();
    for s in SUBSETS {
        accs.insert(s.to_string(), 0.5);
    }
    let r = herd_rewardbench::files::EvalSetResults::new(
        "/reward_model",
        "Seq. Classifier",
        Some("tulu".into()),
        accs,
    );
    let path = tmp.path().join("metrics.json");
    r.write_metrics(&path).unwrap();
    let a = Experiment::read("a_ID__aa__SWAPS_5", &path).unwrap();
    let b = Experiment::from_results("b_ID__bb__SWAPS_6", &r);
    assert_eq!(a.metrics, b.metrics);
    let t = build_sweep_table(
        &[a, b],
        Some(&[features_for("aa"), features_for("bb")]),
        &SweepOptions::default(),
    )
    .unwrap();
    assert_eq!(t.num_rows(), 2);
}

proptest! {
    #[test]
    fn nargsort_is_a_descending_permutation(values in prop::collection::vec(
        prop_oneof![Just(None), Just(Some(f64::NAN)), (0u8..6).prop_map(|k| Some(f64::from(k) / 5.0))], 0..80)) {
        let order = nargsort_descending(&values);
        let mut seen = order.clone();
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..values.len()).collect::<Vec<_>>());
        let present = values.iter().filter(|v| v.is_some_and(|x| !x.is_nan())).count();
        for w in order[..present].windows(2) {
            prop_assert!(values[w[0]].unwrap() >= values[w[1]].unwrap());
        }
        prop_assert!(order[present..].windows(2).all(|w| w[0] < w[1]));
        if present <= 16 {
            // a stable sort for small inputs: ties keep their order
            for w in order[..present].windows(2) {
                if values[w[0]] == values[w[1]] {
                    prop_assert!(w[0] < w[1]);
                }
            }
        }
    }

    #[test]
    fn sweep_rows_do_not_depend_on_listing_order_without_ties(
        accs in prop::collection::vec(prop::collection::vec(0u32..=100, 23), 1..12),
        seed in any::<u64>(),
    ) {
        let mut subsets = SUBSETS.to_vec();
        subsets.sort_unstable();
        let mut exps: Vec<Experiment> = accs.iter().enumerate().map(|(i, a)| {
            let m = metrics(&subsets.iter().zip(a).map(|(s, &k)| (s.to_string(), f64::from(k) / 100.0)).collect::<Vec<_>>());
            Experiment::new(format!("r_ID__{i:x}a__SWAPS_{i}"), m)
        }).collect();
        let feats: Vec<FeatureCounts> = (0..accs.len()).map(|i| features_for(&format!("{i:x}a"))).collect();
        let opts = SweepOptions::default();
        let t1 = build_sweep_table(&exps, Some(&feats), &opts).unwrap();
        let overall: Vec<f64> = t1.column("Overall").unwrap().cells.iter().map(|c| c.as_f64().unwrap()).collect();
        prop_assert!(overall.windows(2).all(|w| w[0] >= w[1]));
        prop_assert_eq!(t1.num_rows(), accs.len());
        for c in &t1.columns[2..6] {
            prop_assert!(c.cells.iter().all(|x| (0.0..=1.0).contains(&x.as_f64().unwrap())));
        }
        let distinct = { let mut o = overall.clone(); o.dedup(); o.len() == overall.len() };
        // shuffle the listing
        let mut s = seed;
        for i in (1..exps.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            exps.swap(i, (s >> 33) as usize % (i + 1));
        }
        let t2 = build_sweep_table(&exps, Some(&feats), &opts).unwrap();
        if distinct {
            // same rows in the same order (row labels follow the listing, so compare the cells)
            prop_assert_eq!(&t1.columns, &t2.columns);
        }
    }
}

#[test]
fn confidence_intervals_extend_the_reference_layout() {
    use herd_rewardbench::sweep_csv::with_confidence_intervals;
    use herd_rewardbench::v1::bootstrap::BootstrapConfig;

    let s = load("counts");
    let table = build_sweep_table(&s.experiments, s.features.as_deref(), &s.options).unwrap();
    let config = BootstrapConfig {
        resamples: 200,
        weighting: s.options.weighting,
        ..BootstrapConfig::default()
    };
    let with_ci = with_confidence_intervals(&table, &config).unwrap();
    // every reference line is a prefix of the extended line: the reference layout is untouched
    let plain = table.to_csv();
    let extended = with_ci.to_csv();
    assert_eq!(plain.lines().count(), extended.lines().count());
    for (a, b) in plain.lines().zip(extended.lines()) {
        assert!(b.starts_with(a), "{b:?} does not extend {a:?}");
    }
    // deterministic for a seed
    assert_eq!(
        extended,
        with_confidence_intervals(&table, &config).unwrap().to_csv()
    );
    // each interval holds its point estimate (sections computed from the same accuracies)
    for name in ["Chat", "Chat Hard", "Safety", "Reasoning", "Overall"] {
        let value = table.column(name).unwrap();
        let low = with_ci.column(&format!("{name} CI low")).unwrap();
        let high = with_ci.column(&format!("{name} CI high")).unwrap();
        for row in 0..table.num_rows() {
            let (Some(v), Some(l), Some(h)) = (
                value.cells[row].as_f64(),
                low.cells[row].as_f64(),
                high.cells[row].as_f64(),
            ) else {
                continue;
            };
            // accuracies are rounded to whole wins per subset, so allow a subset's 1/rows
            assert!(l <= h, "{name} row {row}: [{l}, {h}]");
            assert!(
                l - 0.01 <= v && v <= h + 0.01,
                "{name} row {row}: {v} not in [{l}, {h}]"
            );
        }
    }
}
