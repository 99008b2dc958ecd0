//! Comparing two `eval-set-scores/<model>.json` files (RewardBench's per-example scores, written
//! by herd-rewardbench's `EvalSetScores`): the one a sweep's coordinator writes and the one
//! `worker score` writes for the same checkpoint and dataset. The two score the same texts with
//! the same engine in different batches, so the scores may differ in their last bits; everything
//! else must be byte for byte the same.

use herd_rewardbench::pyjson::{self, PyValue};

/// The columns holding scores (run_rm.py / run_dpo.py: `scores_chosen`, `scores_rejected`;
/// run_v2.py: `scores`).
const SCORE_COLUMNS: [&str; 3] = ["scores_chosen", "scores_rejected", "scores"];

fn floats(v: &PyValue, out: &mut Vec<f64>) {
    match v {
        PyValue::List(items) => items.iter().for_each(|x| floats(x, out)),
        other => out.push(other.as_f64().expect("a score is a number")),
    }
}

/// Asserts that `sweep` (the coordinator's file) is what `json.dumps(indent=4, sort_keys=True)`
/// writes for its own values, that its score columns are within `tolerance` of `alone`'s (the
/// `worker score` file) value by value, and that with `alone`'s scores put in place of its own it
/// is `alone` byte for byte. Returns the number of scores compared and the largest |difference|.
pub fn assert_same_scores_file(
    what: &str,
    sweep: &str,
    alone: &str,
    tolerance: f64,
) -> (usize, f64) {
    let sweep_value = pyjson::loads(sweep).unwrap_or_else(|e| panic!("{what}: sweep file: {e}"));
    let alone_value = pyjson::loads(alone).unwrap_or_else(|e| panic!("{what}: worker file: {e}"));
    assert_eq!(
        pyjson::dumps(&sweep_value, Some(4), true),
        sweep,
        "{what}: the sweep's file is not json.dumps(indent=4, sort_keys=True) of its values"
    );
    let (PyValue::Dict(mut sweep_dict), PyValue::Dict(alone_dict)) = (sweep_value, alone_value)
    else {
        panic!("{what}: not JSON objects")
    };
    let mut compared = 0;
    let mut worst = 0.0f64;
    for column in SCORE_COLUMNS {
        let Some(theirs) = pyjson::dict_get(&alone_dict, column) else {
            continue;
        };
        let ours = pyjson::dict_get(&sweep_dict, column)
            .unwrap_or_else(|| panic!("{what}: the sweep's file has no {column}"));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        floats(theirs, &mut a);
        floats(ours, &mut b);
        assert_eq!(a.len(), b.len(), "{what}: {column}: number of scores");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let diff = (x - y).abs();
            assert!(
                diff <= tolerance,
                "{what}: {column} value {i}: sweep {y} vs worker score {x}"
            );
            worst = worst.max(diff);
        }
        compared += a.len();
        for (key, value) in sweep_dict.iter_mut() {
            if key == column {
                *value = theirs.clone();
            }
        }
    }
    assert!(compared > 0, "{what}: no score column");
    assert_eq!(
        pyjson::dumps(&PyValue::Dict(sweep_dict), Some(4), true),
        alone,
        "{what}: other than the scores, the sweep's file is not worker score's"
    );
    (compared, worst)
}
