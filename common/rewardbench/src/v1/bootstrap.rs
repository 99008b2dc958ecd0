//! Confidence intervals for RewardBench v1 section scores and the overall score: a seeded,
//! stratified percentile bootstrap over examples (beyond the reference, which reports point
//! estimates only; see allenai/reward-bench issues #269/#270 on rankings within noise).
//!
//! Each replicate resamples, **within every subset**, as many examples as the subset has (with
//! replacement), recomputes the subset accuracies, and feeds them through the reference's own
//! aggregation ([`section_scores`] with `EXAMPLE_COUNTS`, then the mean of the four sections).
//! Why stratified:
//! - The subset sizes are fixed by the benchmark's design, not random: RewardBench is a
//!   concatenation of separately collected subsets, so the sampling variability is within each
//!   subset. Pooled resampling would also randomise how many examples each subset gets.
//! - The sections weight subsets by `EXAMPLE_COUNTS`, which is not always the row count
//!   (math-prm: 447 rows, weight 984). Resampling the pooled Reasoning rows would let math-prm's
//!   share drift, whereas here its weight stays 984 and only its accuracy varies, exactly as in
//!   the point estimate.
//! - Every subset stays present in every replicate, so no replicate changes which subsets a
//!   section averages.
//!
//! The interval is the percentile interval of the replicates (quantiles with linear
//! interpolation, numpy's default). The random numbers come from a small built-in generator
//! (SplitMix64 seeding xoshiro256**), so a seed gives the same intervals on every platform and
//! with every version of the dependencies.

use std::collections::BTreeMap;

use crate::v1::{mean_of_sections, section_scores, Section, SubsetAccuracies, XstestWeighting};

/// Bootstrap settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BootstrapConfig {
    /// Replicates (default 1000).
    pub resamples: usize,
    /// Two-sided coverage (default 0.95).
    pub confidence: f64,
    pub seed: u64,
    /// The `EXAMPLE_COUNTS` the sections use.
    pub weighting: XstestWeighting,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 1000,
            confidence: 0.95,
            seed: 0x5eed_2024,
            weighting: XstestWeighting::Current,
        }
    }
}

/// A confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    /// Its two-sided coverage, e.g. 0.95.
    pub level: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }

    pub fn width(&self) -> f64 {
        self.high - self.low
    }
}

/// A point estimate with its interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub interval: Interval,
}

/// Point estimates and intervals of a model's RewardBench v1 results.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreIntervals {
    /// Per section, in [`Section::ALL`] order; `None` for a section with no subset present.
    pub sections: [Option<Estimate>; 4],
    /// The mean of the four sections; `None` unless every section has a subset present.
    pub overall: Option<Estimate>,
    /// Per subset accuracy.
    pub subsets: BTreeMap<String, Estimate>,
    pub config: BootstrapConfig,
}

impl ScoreIntervals {
    pub fn section(&self, section: Section) -> Option<Estimate> {
        let index = Section::ALL.iter().position(|s| *s == section).unwrap_or(0);
        self.sections[index]
    }
}

/// xoshiro256** seeded through SplitMix64 (public-domain algorithms by Blackman and Vigna).
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The `q` quantile (0..=1) of sorted values, interpolating linearly between order statistics
/// (numpy's default `method="linear"`).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    if lo == hi {
        sorted[lo]
    } else {
        sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
    }
}

/// The percentile interval of replicate values (NaN replicates are dropped).
pub fn percentile_interval(values: &[f64], confidence: f64) -> Interval {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let alpha = (1.0 - confidence) / 2.0;
    Interval {
        low: quantile(&sorted, alpha),
        high: quantile(&sorted, 1.0 - alpha),
        level: confidence,
    }
}

/// Per-example outcomes grouped by subset, from `(subset, win)` results in any order.
pub fn outcomes_by_subset<I, S>(results: I) -> BTreeMap<String, Vec<bool>>
where
    I: IntoIterator<Item = (S, bool)>,
    S: AsRef<str>,
{
    let mut out: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for (subset, win) in results {
        match out.get_mut(subset.as_ref()) {
            Some(list) => list.push(win),
            None => {
                out.insert(subset.as_ref().to_owned(), vec![win]);
            }
        }
    }
    out
}

/// Bootstrap intervals for the subsets, sections and overall score of RewardBench v1 from
/// per-example wins grouped by subset (see the module docs). Subsets outside RewardBench are
/// resampled too (their intervals are in `subsets`) but, as in the reference, do not enter the
/// sections. Empty subsets are ignored.
pub fn bootstrap_v1(
    outcomes: &BTreeMap<String, Vec<bool>>,
    config: &BootstrapConfig,
) -> ScoreIntervals {
    let outcomes: Vec<(&String, &Vec<bool>)> =
        outcomes.iter().filter(|(_, v)| !v.is_empty()).collect();
    let point: SubsetAccuracies = outcomes
        .iter()
        .map(|(subset, wins)| ((*subset).clone(), accuracy(wins)))
        .collect();
    let point_sections = section_scores(&point, config.weighting);
    let present = Section::ALL.map(|s| point_sections.has_section(s));

    let mut rng = Rng::new(config.seed);
    let resamples = config.resamples.max(1);
    let mut subset_draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); outcomes.len()];
    let mut section_draws: [Vec<f64>; 4] = Default::default();
    let mut overall_draws = Vec::with_capacity(resamples);
    let mut replicate = SubsetAccuracies::new();
    for _ in 0..resamples {
        for (k, (subset, wins)) in outcomes.iter().enumerate() {
            let n = wins.len() as u64;
            let mut hits = 0u64;
            for _ in 0..n {
                hits += u64::from(wins[rng.below(n) as usize]);
            }
            let acc = hits as f64 / n as f64;
            subset_draws[k].push(acc);
            replicate.insert((*subset).clone(), acc);
        }
        let sections = section_scores(&replicate, config.weighting);
        for (draws, value) in section_draws.iter_mut().zip(sections.as_array()) {
            draws.push(value);
        }
        overall_draws.push(mean_of_sections(sections.as_array()));
    }

    let estimate = |value: f64, draws: &[f64]| Estimate {
        value,
        interval: percentile_interval(draws, config.confidence),
    };
    let point_values = point_sections.as_array();
    let mut sections = [None; 4];
    for i in 0..4 {
        if present[i] {
            sections[i] = Some(estimate(point_values[i], &section_draws[i]));
        }
    }
    let overall = present
        .iter()
        .all(|p| *p)
        .then(|| estimate(point_sections.score(), &overall_draws));
    let subsets = outcomes
        .iter()
        .zip(&subset_draws)
        .map(|((subset, _), draws)| ((*subset).clone(), estimate(point[*subset], draws)))
        .collect();
    ScoreIntervals {
        sections,
        overall,
        subsets,
        config: *config,
    }
}

fn accuracy(wins: &[bool]) -> f64 {
    wins.iter().filter(|w| **w).count() as f64 / wins.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        // np.percentile([1, 2, 3, 4], [2.5, 50, 97.5]) = [1.075, 2.5, 3.925]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((quantile(&v, 0.025) - 1.075).abs() < 1e-12);
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert!((quantile(&v, 0.975) - 3.925).abs() < 1e-12);
        assert_eq!(quantile(&[7.0], 0.3), 7.0);
        assert!(quantile(&[], 0.3).is_nan());
    }

    #[test]
    fn rng_is_uniform_enough_and_fixed() {
        let mut rng = Rng::new(1);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut again = Rng::new(1);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[rng.below(7) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
