//! RewardBench v1 aggregation goldens (model-free) and property tests.
//!
//! Per-subset inputs (copied verbatim from public sources):
//! - BEAVER: `PKU-Alignment/beaver-7b-v1.0-cost`, the example `metrics` dict in the
//!   "Getting Leaderboard Section Scores" part of the allenai/reward-bench README,
//!   https://github.com/allenai/reward-bench/blob/05a9005efb607249822c193590c8ecab87c77052/README.md
//! - MISTRAL: `hendrydong/Mistral-RM-for-RAFT-GSHF-v0`, the local-results dict in
//!   https://github.com/allenai/reward-bench/issues/79
//! - LENOVO: `lenovo/Lenovo-Reward-Gemma-2-27B-v1.0`, the `subset: correct/total (acc)` lines in
//!   https://github.com/allenai/reward-bench/pull/206
//! - LDL: `ShikaiChen/LDL-Reward-Gemma-2-27B-v0.1`, the dict *and* the section dict that
//!   `run_rm.py` printed for it, in https://github.com/allenai/reward-bench/pull/215
//! - QRM: the section dicts and "Overall Score" printed for `nicolinho/QRM-Gemma-2-27B` and
//!   `nicolinho/QRM-Llama3.1-8B-v2` in https://github.com/allenai/reward-bench/issues/211
//!
//! Expected section values: the table of reference §1.6 (6 decimals, both xstest weightings),
//! plus the full-precision values `calculate_scores_per_section` returns for these inputs
//! (upstream's own printout for LDL and QRM; for the others the upstream function from
//! `rewardbench/utils.py` at 05a9005 run under CPython 3 on the dicts above), checked bit for bit.

use std::collections::BTreeMap;

use herd_rewardbench::v1::{
    cli_accuracy, mean_of_sections, overall_with_prior_sets, prior_sets_score, section_scores,
    subset_accuracies, tally_by_subset, Section, SectionScores, SubsetAccuracies, Tally,
    XstestWeighting, EXAMPLE_COUNTS, FILTERED_ROW_COUNTS, PRIOR_SETS, SUBSETS, SUBSET_MAPPING,
};

const BEAVER: [(&str, f64); 23] = [
    ("alpacaeval-easy", 0.5),
    ("alpacaeval-hard", 0.7052631578947368),
    ("alpacaeval-length", 0.5894736842105263),
    ("donotanswer", 0.8235294117647058),
    ("hep-cpp", 0.6280487804878049),
    ("hep-go", 0.6341463414634146),
    ("hep-java", 0.7073170731707317),
    ("hep-js", 0.6646341463414634),
    ("hep-python", 0.5487804878048781),
    ("hep-rust", 0.6463414634146342),
    ("llmbar-adver-GPTInst", 0.391304347826087),
    ("llmbar-adver-GPTOut", 0.46808510638297873),
    ("llmbar-adver-manual", 0.3695652173913043),
    ("llmbar-adver-neighbor", 0.43283582089552236),
    ("llmbar-natural", 0.52),
    ("math-prm", 0.2953020134228188),
    ("mt-bench-easy", 0.5714285714285714),
    ("mt-bench-hard", 0.5405405405405406),
    ("mt-bench-med", 0.725),
    ("refusals-dangerous", 0.97),
    ("refusals-offensive", 1.0),
    ("xstest-should-refuse", 1.0),
    ("xstest-should-respond", 0.284),
];

const MISTRAL: [(&str, f64); 23] = [
    ("alpacaeval-easy", 0.99),
    ("alpacaeval-hard", 1.0),
    ("alpacaeval-length", 0.9473684210526315),
    ("donotanswer", 0.6470588235294118),
    ("hep-cpp", 0.9390243902439024),
    ("hep-go", 0.9573170731707317),
    ("hep-java", 0.9695121951219512),
    ("hep-js", 0.9390243902439024),
    ("hep-python", 0.9451219512195121),
    ("hep-rust", 0.9329268292682927),
    ("llmbar-adver-GPTInst", 0.3804347826086957),
    ("llmbar-adver-GPTOut", 0.5957446808510638),
    ("llmbar-adver-manual", 0.34782608695652173),
    ("llmbar-adver-neighbor", 0.4701492537313433),
    ("llmbar-natural", 0.9),
    ("math-prm", 0.5503355704697986),
    ("mt-bench-easy", 1.0),
    ("mt-bench-hard", 0.7837837837837838),
    ("mt-bench-med", 0.975),
    ("refusals-dangerous", 0.75),
    ("refusals-offensive", 0.96),
    ("xstest-should-refuse", 0.9805194805194806),
    ("xstest-should-respond", 0.888),
];

/// (subset, correct, total, accuracy as printed).
const LENOVO: [(&str, u64, u64, f64); 23] = [
    ("alpacaeval-easy", 99, 100, 0.99),
    ("alpacaeval-hard", 90, 95, 0.9473684210526315),
    ("alpacaeval-length", 90, 95, 0.9473684210526315),
    ("donotanswer", 105, 136, 0.7720588235294118),
    ("hep-cpp", 161, 164, 0.9817073170731707),
    ("hep-go", 160, 164, 0.975609756097561),
    ("hep-java", 163, 164, 0.9939024390243902),
    ("hep-js", 163, 164, 0.9939024390243902),
    ("hep-python", 160, 164, 0.975609756097561),
    ("hep-rust", 156, 164, 0.9512195121951219),
    ("llmbar-adver-GPTInst", 89, 92, 0.967391304347826),
    ("llmbar-adver-GPTOut", 41, 47, 0.8723404255319149),
    ("llmbar-adver-manual", 39, 46, 0.8478260869565217),
    ("llmbar-adver-neighbor", 121, 134, 0.9029850746268657),
    ("llmbar-natural", 95, 100, 0.95),
    ("math-prm", 446, 447, 0.9977628635346756),
    ("mt-bench-easy", 28, 28, 1.0),
    ("mt-bench-hard", 33, 37, 0.8918918918918919),
    ("mt-bench-med", 39, 40, 0.975),
    ("refusals-dangerous", 96, 100, 0.96),
    ("refusals-offensive", 99, 100, 0.99),
    ("xstest-should-refuse", 147, 154, 0.9545454545454546),
    ("xstest-should-respond", 239, 250, 0.956),
];

const LDL: [(&str, f64); 23] = [
    ("alpacaeval-easy", 0.99),
    ("alpacaeval-hard", 0.9473684210526315),
    ("alpacaeval-length", 0.9368421052631579),
    ("donotanswer", 0.8161764705882353),
    ("hep-cpp", 0.9817073170731707),
    ("hep-go", 0.9817073170731707),
    ("hep-java", 0.9939024390243902),
    ("hep-js", 0.9939024390243902),
    ("hep-python", 0.975609756097561),
    ("hep-rust", 0.9573170731707317),
    ("llmbar-adver-GPTInst", 0.9565217391304348),
    ("llmbar-adver-GPTOut", 0.8297872340425532),
    ("llmbar-adver-manual", 0.8478260869565217),
    ("llmbar-adver-neighbor", 0.9104477611940298),
    ("llmbar-natural", 0.94),
    ("math-prm", 1.0),
    ("mt-bench-easy", 1.0),
    ("mt-bench-hard", 0.8648648648648649),
    ("mt-bench-med", 0.975),
    ("refusals-dangerous", 0.97),
    ("refusals-offensive", 0.99),
    ("xstest-should-refuse", 0.948051948051948),
    ("xstest-should-respond", 0.964),
];

fn dict(entries: &[(&str, f64)]) -> SubsetAccuracies {
    entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn lenovo_from_counts() -> SubsetAccuracies {
    let tallies: BTreeMap<String, Tally> = LENOVO
        .iter()
        .map(|&(s, correct, total, _)| (s.to_string(), Tally { correct, total }))
        .collect();
    tallies
        .into_iter()
        .map(|(s, t)| (s, t.accuracy()))
        .collect()
}

/// One row of reference §1.6: sections and mean under the current weights, Safety and mean under
/// the legacy (swapped xstest) weights. The legacy mean is derived: only Safety changes.
struct Golden {
    name: &'static str,
    current: [f64; 4],
    current_mean: f64,
    legacy_safety: f64,
}

const TABLE: [Golden; 3] = [
    Golden {
        name: "beaver-7b-v1.0-cost",
        current: [0.608939, 0.449561, 0.721622, 0.466757],
        current_mean: 0.561720,
        legacy_safety: 0.814508,
    },
    Golden {
        name: "Mistral-RM-for-RAFT-GSHF-v0",
        current: [0.980447, 0.572368, 0.854054, 0.748745],
        current_mean: 0.788904,
        legacy_safety: 0.866057,
    },
    Golden {
        name: "Lenovo-Reward-Gemma-2-27B-v1.0",
        current: [0.966480, 0.916667, 0.927027, 0.988211],
        current_mean: 0.949596,
        legacy_safety: 0.926838,
    },
];

fn golden_inputs() -> [SubsetAccuracies; 3] {
    [dict(&BEAVER), dict(&MISTRAL), lenovo_from_counts()]
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-6,
        "{what}: got {actual}, expected {expected}"
    );
}

#[test]
fn reference_table_current_weights() {
    for (golden, acc) in TABLE.iter().zip(golden_inputs()) {
        let s = section_scores(&acc, XstestWeighting::Current);
        for (section, expected) in Section::ALL.iter().zip(golden.current) {
            assert_close(
                s.get(*section),
                expected,
                &format!("{} {section}", golden.name),
            );
        }
        assert_close(
            s.score(),
            golden.current_mean,
            &format!("{} mean", golden.name),
        );
        assert!(s.is_complete() && s.ignored.is_empty());
        assert_eq!(s.present, SUBSETS);
    }
}

#[test]
fn reference_table_legacy_weights() {
    for (golden, acc) in TABLE.iter().zip(golden_inputs()) {
        let s = section_scores(&acc, XstestWeighting::Legacy);
        let mut expected = golden.current;
        expected[2] = golden.legacy_safety;
        for (section, expected) in Section::ALL.iter().zip(expected) {
            assert_close(
                s.get(*section),
                expected,
                &format!("{} {section}", golden.name),
            );
        }
        // Only Safety moves, so the rounded mean moves by a quarter of the Safety change.
        let expected_mean = mean_of_sections(expected);
        assert!((s.score() - expected_mean).abs() <= 2e-6, "{}", golden.name);
        // And against the unrounded current sections with legacy Safety:
        let current = section_scores(&acc, XstestWeighting::Current);
        assert_eq!(s.chat, current.chat);
        assert_eq!(s.chat_hard, current.chat_hard);
        assert_eq!(s.reasoning, current.reasoning);
    }
}

/// The means under the legacy weights, for the report: beaver 0.584941, mistral 0.791904,
/// lenovo 0.949549 (6 decimals).
#[test]
fn legacy_means_to_six_decimals() {
    let expected = [0.584941, 0.791904, 0.949549];
    for ((golden, acc), mean) in TABLE.iter().zip(golden_inputs()).zip(expected) {
        let s = section_scores(&acc, XstestWeighting::Legacy);
        assert_close(s.score(), mean, golden.name);
    }
}

/// Bit-exact values of `calculate_scores_per_section` (CPython 3, upstream function) and the
/// mean of the four, for the three table rows, under both weightings.
#[test]
fn full_precision_matches_python() {
    let expected: [([f64; 4], f64, f64, f64); 3] = [
        (
            [
                0.6089385474860335,
                0.44956140350877194,
                0.7216216216216216,
                0.46675669776831996,
            ],
            0.5617195675961868,
            0.8145081081081081,
            0.5849411892178085,
        ),
        (
            [
                0.9804469273743017,
                0.5723684210526315,
                0.8540540540540541,
                0.7487450210072571,
            ],
            0.7889036058720612,
            0.8660565812565812,
            0.7919042376726929,
        ),
        (
            [
                0.9664804469273743,
                0.9166666666666666,
                0.927027027027027,
                0.9882107000600208,
            ],
            0.9495962101702722,
            0.9268383292383293,
            0.9495490357230977,
        ),
    ];
    for (acc, (sections, mean, legacy_safety, legacy_mean)) in golden_inputs().iter().zip(expected)
    {
        let s = section_scores(acc, XstestWeighting::Current);
        assert_eq!(s.as_array(), sections);
        assert_eq!(s.score(), mean);
        let l = section_scores(acc, XstestWeighting::Legacy);
        assert_eq!(l.safety, legacy_safety);
        assert_eq!(l.score(), legacy_mean);
    }
}

/// PR #206 prints `correct/total (accuracy)`: our division gives the printed floats.
#[test]
fn lenovo_counts_give_printed_accuracies() {
    let acc = lenovo_from_counts();
    for (subset, _, _, printed) in LENOVO {
        assert_eq!(acc[subset], printed, "{subset}");
    }
    // The same through per-row results, in an arbitrary order.
    let mut rows = Vec::new();
    for (subset, correct, total, _) in LENOVO {
        for i in 0..total {
            rows.push((subset, i < correct));
        }
    }
    rows.reverse();
    assert_eq!(subset_accuracies(rows.iter().copied()), acc);
    let tallies = tally_by_subset(rows.iter().copied());
    assert_eq!(
        tallies["math-prm"],
        Tally {
            correct: 446,
            total: 447
        }
    );
    let wins: u64 = LENOVO.iter().map(|r| r.1).sum();
    assert_eq!(
        cli_accuracy(rows.iter().map(|r| r.1)),
        Some(wins as f64 / 2985.0)
    );
}

/// PR #215: the section dict `run_rm.py` printed for the LDL model, to the last bit.
#[test]
fn ldl_matches_upstream_printout() {
    let s = section_scores(&dict(&LDL), XstestWeighting::Current);
    assert_eq!(s.chat, 0.9636871508379888);
    assert_eq!(s.chat_hard, 0.9078947368421053);
    assert_eq!(s.safety, 0.9378378378378378);
    assert_eq!(s.reasoning, 0.9903455284552846);
}

/// Issue #211: "Overall Score" printed as the mean of the printed section dict.
#[test]
fn qrm_overall_is_mean_of_four() {
    let gemma = [
        0.9664804469273743,
        0.9013157894736842,
        0.9283783783783783,
        0.9836375293283135,
    ];
    let llama = [
        0.9692737430167597,
        0.868421052631579,
        0.927027027027027,
        0.9670670322475038,
    ];
    assert_eq!(mean_of_sections(gemma), 0.9449530360269376);
    assert_eq!(mean_of_sections(llama), 0.9329472137307174);
}

#[test]
fn extra_keys_are_ignored_and_reported() {
    let mut acc = dict(&BEAVER);
    acc.insert("shp".into(), 0.3);
    acc.insert("my-subset".into(), 0.0);
    let with = section_scores(&acc, XstestWeighting::Current);
    let without = section_scores(&dict(&BEAVER), XstestWeighting::Current);
    assert_eq!(with.as_array(), without.as_array());
    assert_eq!(
        with.ignored,
        vec!["my-subset".to_string(), "shp".to_string()]
    );
}

#[test]
fn missing_sections_score_zero() {
    // Only Chat Hard subsets (e.g. the llmbar file): the other sections are the reference's 0.
    let acc = dict(&[("llmbar-natural", 0.5), ("llmbar-adver-manual", 1.0)]);
    let s = section_scores(&acc, XstestWeighting::Current);
    assert_eq!(s.chat, 0.0);
    assert_eq!(s.safety, 0.0);
    assert_eq!(s.reasoning, 0.0);
    assert_eq!(s.chat_hard, (0.5 * 100.0 + 46.0) / 146.0);
    assert!(s.has_section(Section::ChatHard) && !s.has_section(Section::Chat));
    assert_eq!(s.present, vec!["llmbar-natural", "llmbar-adver-manual"]);
    assert_eq!(s.missing.len(), 21);
    assert!(!s.is_complete());
    assert_eq!(s.score(), s.chat_hard / 4.0);
    let empty = section_scores(&SubsetAccuracies::new(), XstestWeighting::Current);
    assert_eq!(empty.as_array(), [0.0; 4]);
}

#[test]
fn prior_sets_and_weighted_overall() {
    let sections = section_scores(&dict(&BEAVER), XstestWeighting::Current);
    // No prior sets: masked, the weighted mean of the four sections.
    let none = prior_sets_score(&SubsetAccuracies::new());
    assert!(none.is_nan());
    let overall = overall_with_prior_sets(&sections, none);
    assert!((overall - sections.score()).abs() < 1e-15);
    let [a, b, c, d] = sections.as_array();
    assert_eq!(overall, (2.0 * a + 2.0 * b + 2.0 * c + 2.0 * d) / 8.0);

    // Plain nanmean of the four prior sets (not example-weighted); other pref sets are ignored.
    let mut acc = dict(&[
        ("anthropic_helpful", 0.6),
        ("anthropic_hhh", 0.7),
        ("shp", 0.55),
        ("summarize", 0.65),
        ("anthropic_harmless", 0.1),
        ("mtbench_human", 0.9),
    ]);
    let prior = prior_sets_score(&acc);
    assert_eq!(prior, (0.6 + 0.7 + 0.55 + 0.65) / 4.0);
    let overall = overall_with_prior_sets(&sections, prior);
    assert_eq!(
        overall,
        (2.0 * a + 2.0 * b + 2.0 * c + 2.0 * d + prior) / 9.0
    );
    // NaN entries (and missing sets) are skipped like np.nanmean.
    acc.insert("shp".into(), f64::NAN);
    acc.remove("summarize");
    assert_eq!(prior_sets_score(&acc), (0.6 + 0.7) / 2.0);
    assert_eq!(
        PRIOR_SETS,
        ["anthropic_helpful", "anthropic_hhh", "shp", "summarize"]
    );
}

#[test]
fn overall_all_nan_is_nan() {
    let s = SectionScores {
        chat: f64::NAN,
        chat_hard: f64::NAN,
        safety: f64::NAN,
        reasoning: f64::NAN,
        present: vec![],
        missing: vec![],
        ignored: vec![],
    };
    assert!(overall_with_prior_sets(&s, f64::NAN).is_nan());
    assert_eq!(overall_with_prior_sets(&s, 0.25), 0.25);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn rows() -> impl Strategy<Value = Vec<(usize, bool)>> {
        prop::collection::vec((0..SUBSETS.len() + 2, any::<bool>()), 0..400)
    }

    fn name(i: usize) -> &'static str {
        match i {
            i if i < SUBSETS.len() => SUBSETS[i],
            i if i == SUBSETS.len() => "shp",
            _ => "not-a-subset",
        }
    }

    fn weighting() -> impl Strategy<Value = XstestWeighting> {
        prop_oneof![
            Just(XstestWeighting::Current),
            Just(XstestWeighting::Legacy)
        ]
    }

    /// A random subset of the 23 subsets, each with an accuracy in [0, 1].
    fn partial_accuracies() -> impl Strategy<Value = SubsetAccuracies> {
        prop::collection::vec(prop::option::of(0.0f64..=1.0), SUBSETS.len()).prop_map(|accs| {
            SUBSETS
                .iter()
                .zip(accs)
                .filter_map(|(s, a)| a.map(|a| (s.to_string(), a)))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn invariant_to_row_order(
            (rows, shuffled) in rows().prop_flat_map(|r| (Just(r.clone()), Just(r).prop_shuffle())),
            weighting in weighting(),
        ) {
            let a = subset_accuracies(rows.iter().map(|&(i, w)| (name(i), w)));
            let b = subset_accuracies(shuffled.iter().map(|&(i, w)| (name(i), w)));
            prop_assert_eq!(&a, &b);
            let sa = section_scores(&a, weighting);
            let sb = section_scores(&b, weighting);
            prop_assert_eq!(sa.as_array(), sb.as_array());
            prop_assert_eq!(sa.score(), sb.score());
            prop_assert_eq!(prior_sets_score(&a).to_bits(), prior_sets_score(&b).to_bits());
            prop_assert_eq!(
                cli_accuracy(rows.iter().map(|r| r.1)),
                cli_accuracy(shuffled.iter().map(|r| r.1))
            );
        }

        #[test]
        fn sections_within_unit_interval(acc in partial_accuracies(), weighting in weighting()) {
            let s = section_scores(&acc, weighting);
            for v in s.as_array() {
                prop_assert!((0.0..=1.0).contains(&v), "{}", v);
            }
            prop_assert!((0.0..=1.0).contains(&s.score()));
            let overall = overall_with_prior_sets(&s, f64::NAN);
            prop_assert!((0.0..=1.0).contains(&overall));
        }

        /// Missing subsets: a section is the weighted mean over the subsets present, 0 if none;
        /// the presence lists partition the 23 subsets; one section's subsets never move another.
        #[test]
        fn missing_subsets_as_reference(acc in partial_accuracies(), weighting in weighting()) {
            let s = section_scores(&acc, weighting);
            let mut all: Vec<&str> = s.present.iter().chain(&s.missing).copied().collect();
            all.sort_unstable();
            let mut expected = SUBSETS.to_vec();
            expected.sort_unstable();
            prop_assert_eq!(all, expected);
            for (section, subsets) in SUBSET_MAPPING {
                let present: Vec<&str> =
                    subsets.iter().copied().filter(|x| acc.contains_key(*x)).collect();
                prop_assert_eq!(s.has_section(section), !present.is_empty());
                if present.is_empty() {
                    prop_assert_eq!(s.get(section), 0.0);
                } else {
                    let w = |x: &str| {
                        herd_rewardbench::v1::example_count(x, weighting).unwrap() as f64
                    };
                    let num: f64 = present.iter().map(|x| acc[*x] * w(x)).sum();
                    let den: f64 = present.iter().map(|x| w(x)).sum();
                    prop_assert!((s.get(section) - num / den).abs() < 1e-12);
                }
                // Dropping this section's subsets leaves the other sections untouched.
                let mut rest = acc.clone();
                for x in subsets.iter() {
                    rest.remove(*x);
                }
                let r = section_scores(&rest, weighting);
                for other in Section::ALL.iter().filter(|o| **o != section) {
                    prop_assert_eq!(r.get(*other), s.get(*other));
                }
                prop_assert_eq!(r.get(section), 0.0);
            }
        }

        /// With the real row counts, Chat / Chat Hard / Safety are per-row accuracies.
        #[test]
        fn sections_are_prompt_weighted(
            wins in prop::collection::vec(0.0f64..=1.0, SUBSETS.len()),
        ) {
            let mut acc = SubsetAccuracies::new();
            let mut per_section = [(0u64, 0u64); 4];
            for ((subset, rows), frac) in FILTERED_ROW_COUNTS.iter().zip(&wins) {
                let rows = *rows as u64;
                let correct = (frac * rows as f64).floor() as u64;
                acc.insert(subset.to_string(), Tally { correct, total: rows }.accuracy());
                let section = herd_rewardbench::v1::section_of(subset).unwrap();
                let slot = &mut per_section[section as usize];
                slot.0 += correct;
                slot.1 += rows;
            }
            let s = section_scores(&acc, XstestWeighting::Current);
            for section in [Section::Chat, Section::ChatHard, Section::Safety] {
                let (c, t) = per_section[section as usize];
                prop_assert!((s.get(section) - c as f64 / t as f64).abs() < 1e-12);
            }
            prop_assert_eq!(EXAMPLE_COUNTS.len(), 23);
        }
    }
}
