//! DPO goldens of make_fixtures.dpo_rows (a policy and a reference model in one fixtures folder,
//! the tokenizer from the shared data): herd's rewards against them in fp32, in packed batches and
//! one sequence per batch, reference-free with and without the prompt shared, and bf16 against the
//! golden's own bf16 draw (`"bf16"`).

use std::path::{Path, PathBuf};

use herd_engine::batching::BatchLimits;
use herd_engine::dpo::RefFreeType;
use herd_engine::scorer::{score_pairs, ScoreRequest};
use serde_json::Value;
use tch::{Device, Kind};

use super::{assert_close, floats, one_per_batch, packed, pairs};

/// batch composition may move fp32 rewards by rounding only: this much plus 1e-7 per unit of the
/// summed log-probs' magnitude
const BATCH_EFFECT: f64 = 1e-5;

/// make_fixtures.py's BF16_SCORE_FACTOR: herd's bf16 is another draw of the same rounding
const BF16_SCORE_FACTOR: f64 = 2.0;

/// make_fixtures.py's BF16_FLIP_MARGIN
const BF16_FLIP_MARGIN: usize = 2;

pub struct DpoGolden {
    /// the folder of the golden's `models/`
    pub fixtures: PathBuf,
    pub golden: Value,
    /// the shared tokenizer the golden names
    tokenizer: PathBuf,
}

impl DpoGolden {
    /// `case`.json of `fixtures`; `None` when the shared data is missing (testkit's rule).
    pub fn open(fixtures: &Path, case: &str) -> Option<Self> {
        let golden = herd_testkit::fixtures::read_json(&fixtures.join(format!("{case}.json")));
        let tokenizer =
            herd_testkit::shared_path(&format!("data/{}", golden["tokenizer"].as_str().unwrap()))?;
        Some(Self {
            fixtures: fixtures.to_path_buf(),
            golden,
            tokenizer,
        })
    }

    fn examples(&self) -> &Vec<Value> {
        self.golden["examples"].as_array().unwrap()
    }

    /// (chosen, rejected) rewards per row: with the golden's reference model, or reference-free.
    pub fn rewards(
        &self,
        with_ref: bool,
        ref_free: RefFreeType,
        kind: Kind,
        limits: BatchLimits,
        share: bool,
    ) -> Vec<(f64, f64)> {
        let model = |key: &str| {
            self.fixtures
                .join("models")
                .join(self.golden[key].as_str().unwrap())
        };
        let req = ScoreRequest {
            model: model("policy"),
            tokenizer: Some(self.tokenizer.clone()),
            ref_model: with_ref.then(|| model("ref")),
            ref_free_type: ref_free,
            chat_template: self.golden["chat_template"].as_str().unwrap().to_string(),
            max_length: self.golden["max_length"].as_u64().unwrap() as usize,
            limits,
            share_prefix: share,
            weights: Default::default(),
            device: Device::Cpu,
            kind,
            provenance: Default::default(),
            pooling: Default::default(),
        };
        let scored = score_pairs(&req, &pairs(&self.golden)).unwrap();
        let expected = if with_ref { "DPO" } else { "DPO Ref. Free" };
        assert_eq!(scored.model_type, expected);
        assert_eq!(scored.pairs.len(), self.examples().len(), "rows");
        scored
            .pairs
            .iter()
            .map(|p| {
                assert_eq!((p.chosen.len(), p.rejected.len()), (1, 1));
                (p.chosen[0], p.rejected[0])
            })
            .collect()
    }

    /// fp32: rewards within `assert_close` of the golden with the same wins, packed and one
    /// sequence per batch (which agree within rounding); the reference-free avg, sum and norm too,
    /// with and without the prompt shared in one row.
    pub fn check_fp32(&self) {
        let case = self.golden["case"].as_str().unwrap();
        let full = |limits| self.rewards(true, RefFreeType::Avg, Kind::Float, limits, false);
        let (packed_rewards, single) = (full(packed()), full(one_per_batch()));
        let (mut worst, mut batch_effect) = (0.0f64, 0.0f64);
        for ((ours, alone), e) in packed_rewards.iter().zip(&single).zip(self.examples()) {
            let id = &e["id"];
            for (side, ours, alone) in [("chosen", ours.0, alone.0), ("rejected", ours.1, alone.1)]
            {
                let theirs = e[format!("reward_{side}")].as_f64().unwrap();
                let scale = e[format!("policy_sum_{side}")].as_f64().unwrap().abs()
                    + e[format!("ref_sum_{side}")].as_f64().unwrap().abs();
                assert_close(ours, theirs, scale, &format!("{case} {id} reward {side}"));
                let what = format!("{case} {id} reward {side}, alone");
                assert_close(alone, theirs, scale, &what);
                worst = worst.max((ours - theirs).abs());
                let moved = (ours - alone).abs();
                batch_effect = batch_effect.max(moved);
                assert!(
                    moved < BATCH_EFFECT + 1e-7 * scale,
                    "{case} {id} {side}: packed {ours} vs alone {alone}"
                );
            }
            let their_win = e["reward_chosen"].as_f64() > e["reward_rejected"].as_f64();
            assert_eq!(ours.0 > ours.1, their_win, "{case} {id}: win");
            assert_eq!(alone.0 > alone.1, their_win, "{case} {id}: win, alone");
        }
        eprintln!(
            "{case} fp32: max |diff| {worst:.2e} vs the reference; packed vs one per batch \
             {batch_effect:.2e}"
        );
        for (kind, key) in [
            (RefFreeType::Avg, "avg"),
            (RefFreeType::Sum, "sum"),
            (RefFreeType::Norm, "norm"),
        ] {
            for share in [false, true] {
                let rewards = self.rewards(false, kind, Kind::Float, packed(), share);
                for ((c, r), e) in rewards.iter().zip(self.examples()) {
                    let id = &e["id"];
                    for (side, ours) in [("chosen", c), ("rejected", r)] {
                        let theirs = e[format!("policy_{key}_{side}")].as_f64().unwrap();
                        let what = format!("{case} {id} ref-free {key} {side}, shared {share}");
                        assert_close(*ours, theirs, theirs.abs(), &what);
                    }
                }
            }
        }
    }

    /// bf16: reported against the golden's fp32 and its bf16 draw; herd's distance from fp32 is
    /// at most twice the draw's, and its win flips at most the draw's plus the margin.
    pub fn check_bf16(&self) {
        let case = self.golden["case"].as_str().unwrap();
        let ours = self.rewards(true, RefFreeType::Avg, Kind::BFloat16, packed(), false);
        let bf16 = |side: &str| floats(&self.golden["bf16"][format!("reward_{side}")]);
        let (their_c, their_r) = (bf16("chosen"), bf16("rejected"));
        let (mut ours_vs_fp32, mut theirs_vs_fp32, mut ours_vs_bf16) = (0.0f64, 0.0f64, 0.0f64);
        let (mut our_flips, mut their_flips) = (Vec::new(), Vec::new());
        for (i, ((c, r), e)) in ours.iter().zip(self.examples()).enumerate() {
            let fc = e["reward_chosen"].as_f64().unwrap();
            let fr = e["reward_rejected"].as_f64().unwrap();
            ours_vs_fp32 = ours_vs_fp32.max((c - fc).abs()).max((r - fr).abs());
            theirs_vs_fp32 = theirs_vs_fp32
                .max((their_c[i] - fc).abs())
                .max((their_r[i] - fr).abs());
            ours_vs_bf16 = ours_vs_bf16
                .max((c - their_c[i]).abs())
                .max((r - their_r[i]).abs());
            if (c > r) != (fc > fr) {
                our_flips.push(i);
            }
            if (their_c[i] > their_r[i]) != (fc > fr) {
                their_flips.push(i);
            }
        }
        eprintln!(
            "{case} bf16: herd vs the reference's fp32 max |diff| {ours_vs_fp32:.4} with win \
             flips {our_flips:?}; the reference's bf16 vs its fp32 {theirs_vs_fp32:.4} with \
             flips {their_flips:?}; herd bf16 vs the reference's bf16 {ours_vs_bf16:.4}"
        );
        assert!(
            ours_vs_fp32 <= BF16_SCORE_FACTOR * theirs_vs_fp32,
            "{case}: bf16 rewards moved {ours_vs_fp32}, the reference's own bf16 {theirs_vs_fp32}"
        );
        assert!(
            our_flips.len() <= their_flips.len() + BF16_FLIP_MARGIN,
            "{case}: bf16 flips {our_flips:?} vs the reference's {their_flips:?}"
        );
    }
}
