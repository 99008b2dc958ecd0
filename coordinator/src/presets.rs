//! Sweep presets: a TOML file mapping a sweep family (`coord submit --dataset helpsteer2`) to
//! every field of a [`SweepSpec`]. Flags of `coord submit` override the preset field by field.
//!
//! ```toml
//! [helpsteer2]
//! checkpoints = ["gs://ljm-dev/human-preferences/rm_checkpoints/helpsteer2/"]
//! eval_dataset = "hf://datasets/allenai/reward-bench"
//! eval_split = "filtered"
//! tokenizer = "hf:allenai/tulu-2-13b"
//! chat_template = "tulu"
//! max_length = 2048
//! feature_counts_dir = "data/helpsteer2_count_feats/counts/"
//! output_csv = "helpsteer2-counts-runs.csv"       # default: {name}-counts-runs.csv
//! experiment_prefix = "helpsteer2-counts"         # default: {name}-counts
//! shard_size = 500
//! xstest_weighting = "legacy"
//! dataset_total_size = 10160
//! schema = "rb1"                                 # rb1 (default) or rb2 (RewardBench 2 rows)
//! tokenizer_template = "ignore"                   # use | ignore
//! pad = "eos"                                     # tokenizer | eos | <id>
//! pooling = "legacy"                              # current | legacy
//!
//! [helpsteer2.easylm]
//! size = "13b"
//! compat = "converter-2024"                       # training | converter-2024
//! ```
//!
//! `tokenizer_template`, `pad`, `pooling` and `easylm.compat` travel in [`Scoring`] to the
//! worker, which parses them (herd-engine `provenance`, `pooling`, `easylm::sizes::Compat`);
//! [`check_scoring`] refuses other values, and legacy pooling with a shard size that is not a
//! multiple of [`LEGACY_BATCH`], at submit time.
//!
//! Unknown keys are errors naming the key and the file. Relative local paths in a presets file
//! are relative to the file's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use herd_rpc::v1::{EasyLmConfig, Scoring, SweepSpec};
use herd_rpc::EvalSchema;
use serde::Deserialize;

/// `Scoring.schema` as a spec stores it: empty for [`EvalSchema::Rb1`] (so specs stored before
/// the field existed read the same), else the schema's name.
pub fn schema_field(schema: EvalSchema) -> String {
    match schema {
        EvalSchema::Rb1 => String::new(),
        other => other.as_str().to_owned(),
    }
}

/// The environment variable naming the presets file.
pub const PRESETS_ENV: &str = "HERD_PRESETS";
/// The presets file looked for in the current folder when neither flag nor environment names one.
pub const DEFAULT_PRESETS_FILE: &str = "herd-presets.toml";

/// One preset (a `[name]` table); every field optional. Also the shape of `coord submit`'s
/// overriding flags.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub checkpoints: Option<Vec<String>>,
    pub eval_dataset: Option<String>,
    pub eval_split: Option<String>,
    pub tokenizer: Option<String>,
    pub chat_template: Option<String>,
    pub max_length: Option<u32>,
    pub feature_counts_dir: Option<String>,
    pub output_csv: Option<String>,
    pub experiment_prefix: Option<String>,
    pub shard_size: Option<u32>,
    pub xstest_weighting: Option<String>,
    pub dataset_total_size: Option<u64>,
    /// `rb1` (preference pairs, the default) or `rb2` (RewardBench 2 best-of-N rows)
    pub schema: Option<String>,
    /// `use` (the tokenizer's own chat template when it has one) or `ignore`
    pub tokenizer_template: Option<String>,
    /// `tokenizer`, `eos` or a token id
    pub pad: Option<String>,
    /// `current` or `legacy`
    pub pooling: Option<String>,
    pub easylm: Option<EasyLmPreset>,
}

/// `[name.easylm]`: the shapes EasyLM checkpoints do not carry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EasyLmPreset {
    pub size: Option<String>,
    pub num_heads: Option<i64>,
    pub num_kv_heads: Option<i64>,
    pub vocab_size: Option<i64>,
    pub rope_theta: Option<f64>,
    pub rms_norm_eps: Option<f64>,
    pub max_position_embeddings: Option<i64>,
    /// `training` or `converter-2024`
    pub compat: Option<String>,
}

macro_rules! overlay {
    ($base:expr, $over:expr, $($field:ident),*) => {
        $( if $over.$field.is_some() { $base.$field = $over.$field; } )*
    };
}

impl EasyLmPreset {
    /// `self` with every field `over` sets replaced.
    pub fn overlay(mut self, over: EasyLmPreset) -> EasyLmPreset {
        overlay!(
            self,
            over,
            size,
            num_heads,
            num_kv_heads,
            vocab_size,
            rope_theta,
            rms_norm_eps,
            max_position_embeddings,
            compat
        );
        self
    }

    fn is_empty(&self) -> bool {
        *self == EasyLmPreset::default()
    }
}

impl Preset {
    /// `self` with every field `over` sets replaced (`easylm` field by field).
    pub fn overlay(mut self, over: Preset) -> Preset {
        overlay!(
            self,
            over,
            checkpoints,
            eval_dataset,
            eval_split,
            tokenizer,
            chat_template,
            max_length,
            feature_counts_dir,
            output_csv,
            experiment_prefix,
            shard_size,
            xstest_weighting,
            dataset_total_size,
            schema,
            tokenizer_template,
            pad,
            pooling
        );
        self.easylm = match (self.easylm, over.easylm) {
            (Some(base), Some(over)) => Some(base.overlay(over)),
            (base, over) => over.or(base),
        };
        self
    }

    /// The sweep spec named `name`: defaults `output_csv = {name}-counts-runs.csv` and
    /// `experiment_prefix = {name}-counts`. Needs checkpoints and an evaluation set.
    pub fn to_spec(&self, name: &str) -> anyhow::Result<SweepSpec> {
        let name = name.trim();
        if name.is_empty() {
            bail!("the sweep needs a name (--dataset)");
        }
        crate::domain::check_sweep_name(name).map_err(|e| anyhow::anyhow!(e))?;
        let checkpoints: Vec<String> = self
            .checkpoints
            .iter()
            .flatten()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if checkpoints.is_empty() {
            bail!("sweep '{name}': no checkpoints (set `checkpoints` in the preset or pass --checkpoints)");
        }
        let eval_dataset = self.eval_dataset.clone().unwrap_or_default();
        if eval_dataset.trim().is_empty() {
            bail!("sweep '{name}': no evaluation set (set `eval_dataset` in the preset or pass --eval-dataset)");
        }
        let xstest_weighting = self
            .xstest_weighting
            .clone()
            .unwrap_or_else(|| "legacy".into());
        crate::report::parse_weighting(&xstest_weighting)
            .with_context(|| format!("sweep '{name}'"))?;
        let output_csv = self
            .output_csv
            .clone()
            .unwrap_or_else(|| format!("{name}-counts-runs.csv"));
        crate::report::check_file_name(&output_csv, "output_csv")
            .with_context(|| format!("sweep '{name}'"))?;
        let schema = EvalSchema::parse(self.schema.as_deref().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("sweep '{name}': {e}"))?;
        let easylm = self.easylm.clone().unwrap_or_default();
        let easylm = (!easylm.is_empty()).then(|| EasyLmConfig {
            size: easylm.size.unwrap_or_default(),
            num_heads: easylm.num_heads,
            num_kv_heads: easylm.num_kv_heads,
            vocab_size: easylm.vocab_size,
            rope_theta: easylm.rope_theta,
            rms_norm_eps: easylm.rms_norm_eps,
            max_position_embeddings: easylm.max_position_embeddings,
            compat: easylm.compat.unwrap_or_default(),
        });
        let spec = SweepSpec {
            name: name.to_owned(),
            checkpoints,
            eval_dataset,
            eval_split: self.eval_split.clone().unwrap_or_default(),
            scoring: Some(Scoring {
                tokenizer: self.tokenizer.clone().unwrap_or_default(),
                chat_template: self.chat_template.clone().unwrap_or_default(),
                max_length: self.max_length.unwrap_or(0),
                easylm,
                schema: schema_field(schema),
                tokenizer_template: self.tokenizer_template.clone().unwrap_or_default(),
                pad: self.pad.clone().unwrap_or_default(),
                pooling: self.pooling.clone().unwrap_or_default(),
            }),
            feature_counts_dir: self.feature_counts_dir.clone().unwrap_or_default(),
            output_csv,
            experiment_prefix: self
                .experiment_prefix
                .clone()
                .unwrap_or_else(|| format!("{name}-counts")),
            shard_size: self.shard_size.unwrap_or(0),
            xstest_weighting,
            dataset_total_size: self.dataset_total_size.unwrap_or(0),
        };
        check_scoring(&spec).with_context(|| format!("sweep '{name}'"))?;
        Ok(spec)
    }

    /// Relative local paths (checkpoints, eval_dataset, tokenizer, feature_counts_dir) made
    /// relative to `base`; `gs://`, `hf:` and `hf://` sources and absolute paths are kept.
    pub fn resolve_paths(mut self, base: &Path) -> Preset {
        let fix = |p: &mut String| {
            if is_local(p) && Path::new(p.as_str()).is_relative() {
                *p = base.join(p.as_str()).to_string_lossy().into_owned();
            }
        };
        if let Some(list) = &mut self.checkpoints {
            list.iter_mut().for_each(fix);
        }
        for field in [
            &mut self.eval_dataset,
            &mut self.tokenizer,
            &mut self.feature_counts_dir,
        ]
        .into_iter()
        .flatten()
        {
            fix(field);
        }
        self
    }
}

/// Examples per RewardBench batch, which legacy pooling replays (herd-engine
/// `pooling::REFERENCE_BATCH`): shards must not cut one.
pub const LEGACY_BATCH: u32 = 8;

/// Refuses scoring settings the worker would reject, before any checkpoint is planned: unknown
/// `tokenizer_template`, `pad`, `pooling` or `easylm.compat` values, and legacy pooling on shards
/// that do not start at multiples of [`LEGACY_BATCH`] examples. Empty values are the defaults.
pub fn check_scoring(spec: &SweepSpec) -> anyhow::Result<()> {
    let none = Scoring::default();
    let scoring = spec.scoring.as_ref().unwrap_or(&none);
    let one_of = |key: &str, value: &str, allowed: &[&str]| -> anyhow::Result<()> {
        if value.is_empty() || allowed.contains(&value) {
            Ok(())
        } else {
            bail!(
                "{key} = {value:?}: expected {}",
                allowed
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        }
    };
    one_of(
        "tokenizer_template",
        &scoring.tokenizer_template,
        &["use", "ignore"],
    )?;
    if scoring.pad.parse::<u32>().is_err() {
        one_of("pad", &scoring.pad, &["tokenizer", "eos", "<token id>"])?;
    }
    one_of("pooling", &scoring.pooling, &["current", "legacy"])?;
    if let Some(easylm) = &scoring.easylm {
        one_of(
            "easylm.compat",
            &easylm.compat,
            &["training", "converter-2024"],
        )?;
    }
    let shard_size = crate::planner::effective_shard_size(spec.shard_size);
    if scoring.pooling == "legacy" && !shard_size.is_multiple_of(LEGACY_BATCH) {
        bail!(
            "pooling = \"legacy\" replays RewardBench's batches of {LEGACY_BATCH} examples, so \
             every shard must start at a multiple of {LEGACY_BATCH}; shard_size {shard_size} is \
             not a multiple of {LEGACY_BATCH} (e.g. {})",
            shard_size.div_ceil(LEGACY_BATCH) * LEGACY_BATCH
        );
    }
    Ok(())
}

/// A local path (not `gs://`, `hf:`, `hf://`, nor empty).
pub fn is_local(source: &str) -> bool {
    !(source.is_empty()
        || source.starts_with("gs://")
        || source.starts_with("hf:")
        || source.contains("://"))
}

/// A parsed presets file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Presets {
    /// where it was read from (for messages)
    pub file: String,
    pub presets: BTreeMap<String, Preset>,
}

impl Presets {
    /// Parses presets text; `file` names it in errors (unknown keys, wrong types).
    pub fn parse(text: &str, file: &str) -> anyhow::Result<Presets> {
        let presets: BTreeMap<String, Preset> =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        Ok(Presets {
            file: file.to_owned(),
            presets,
        })
    }

    /// Reads a presets file; relative paths in it become relative to its folder.
    pub fn read(path: &Path) -> anyhow::Result<Presets> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
        let mut presets = Presets::parse(&text, &file)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        // absolute: the coordinator may run in another folder
        let base = std::path::absolute(&base).unwrap_or(base);
        presets.presets = presets
            .presets
            .into_iter()
            .map(|(k, v)| (k, v.resolve_paths(&base)))
            .collect();
        Ok(presets)
    }

    pub fn get(&self, name: &str) -> Option<&Preset> {
        self.presets.get(name)
    }
}

/// Which presets file to read: the flag, else `$HERD_PRESETS`, else `./herd-presets.toml` when
/// it exists, else none.
pub fn presets_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_path_buf());
    }
    if let Some(env) = std::env::var_os(PRESETS_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(env));
    }
    let default = PathBuf::from(DEFAULT_PRESETS_FILE);
    default.is_file().then_some(default)
}

/// The sweep spec for `name`: the preset of that name in `presets` (if any) overlaid with
/// `overrides` (the flags). A name missing from the presets file is an error unless the flags
/// give the checkpoints and the evaluation set.
pub fn resolve_spec(
    name: &str,
    presets: Option<&Presets>,
    overrides: Preset,
) -> anyhow::Result<SweepSpec> {
    let base =
        match presets {
            Some(presets) => {
                match presets.get(name) {
                    Some(preset) => preset.clone(),
                    None if overrides.checkpoints.is_some() && overrides.eval_dataset.is_some() => {
                        Preset::default()
                    }
                    None => bail!(
                "no preset '{name}' in {} (it has: {}); pass --checkpoints and --eval-dataset \
                 to submit without one",
                presets.file,
                if presets.presets.is_empty() {
                    "none".to_owned()
                } else {
                    presets.presets.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
                }
            }
            None => Preset::default(),
        };
    base.overlay(overrides).to_spec(name)
}
