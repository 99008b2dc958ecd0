//! A sweep family laid out as hybrid-preferences has it: tiny EasyLM checkpoints under
//! `gs://ljm-dev/human-preferences/rm_checkpoints/helpsteer2/<run>--<hex>/streaming_params_437`,
//! a feature-count file per run, the Llama-2 tokenizer in the bucket, and an evaluation set of
//! real RewardBench rows (plus short synthetic pairs for the subsets ../shared/data lacks).

use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use herd_rewardbench::v1::Section;
use herd_storage::gcs::GcsClient;
use herd_testkit::shared;
use serde_json::Value;

use crate::easylm::{tiny_reward_model, NUM_HEADS};

/// The bucket the reference runs use; tests that need a second copy use another name.
pub const BUCKET: &str = "ljm-dev";
pub const PREFIX: &str = "human-preferences/rm_checkpoints/helpsteer2/";
pub const TOKENIZER_PREFIX: &str = "tokenizers/llama2/";
pub const SWEEP: &str = "helpsteer2";

pub struct FixtureCheckpoint {
    pub uuid: String,
    pub budget: u32,
    /// the object name of its streaming_params file
    pub object: String,
    pub bytes: Vec<u8>,
}

impl FixtureCheckpoint {
    pub fn uri(&self, bucket: &str) -> String {
        format!("gs://{bucket}/{}", self.object)
    }
}

pub struct SweepFixture {
    pub root: PathBuf,
    pub eval_set: PathBuf,
    pub counts_dir: PathBuf,
    pub checkpoints: Vec<FixtureCheckpoint>,
    pub examples: usize,
}

/// 32 lowercase hex digits from a seed, like `uuid4().hex`.
fn hex32(seed: u64) -> String {
    let a = seed.wrapping_mul(0x9E3779B97F4A7C15) ^ 0xD1B54A32D192ED03;
    let b = a.rotate_left(29).wrapping_mul(0xBF58476D1CE4E5B9);
    format!("{a:016x}{b:016x}")
}

impl SweepFixture {
    /// `checkpoints` runs and the first `per_file` rows of each RewardBench file in ../shared/data.
    pub fn new(root: &Path, checkpoints: usize, per_file: usize) -> anyhow::Result<SweepFixture> {
        std::fs::create_dir_all(root)?;
        let eval_set = root.join("eval.jsonl");
        let mut lines = Vec::new();
        for file in ["rewardbench-llmbar.jsonl", "rewardbench-hep.jsonl"] {
            let path = shared().join("data").join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()).take(per_file) {
                let mut row: Value = serde_json::from_str(line)?;
                // ids restart at 0 in each file: number them across the set
                row["id"] = Value::from(lines.len());
                lines.push(serde_json::to_string(&row)?);
            }
        }
        // the shared data covers 11 of the 23 subsets; the CSV needs every section, so the
        // others get short placeholder pairs (chosen_model/rejected_model "placeholder")
        let present: Vec<String> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["subset"].as_str().map(str::to_string))
            .collect();
        for section in Section::ALL {
            for subset in section.subsets() {
                if present.iter().any(|p| p == subset) {
                    continue;
                }
                for k in 0..3 {
                    let row = serde_json::json!({
                        "id": lines.len(),
                        "subset": subset,
                        "prompt": format!("Question {k} for {subset}: how do I keep a sourdough starter alive?"),
                        "chosen": format!("Feed it flour and water every day, keep it warm, and discard half before feeding ({k})."),
                        "rejected": format!("Put it in the freezer ({k})."),
                        // marked: not RewardBench data
                        "chosen_model": "placeholder",
                        "rejected_model": "placeholder",
                    });
                    lines.push(serde_json::to_string(&row)?);
                }
            }
        }
        std::fs::write(&eval_set, lines.join("\n") + "\n")?;

        let counts_dir = root.join("counts");
        std::fs::create_dir_all(&counts_dir)?;
        let mut list = Vec::new();
        for i in 0..checkpoints {
            let seed = i as u64 + 1;
            let uuid = hex32(seed);
            let budget = 1000 + 613 * i as u32;
            let run =
                format!("tulu2_13b_rm_human_datamodel_counts_7000_ID__{uuid}__SWAPS_{budget}");
            let object = format!("{PREFIX}{run}--{}/streaming_params_437", &hex32(seed + 99));
            let counts = serde_json::json!({
                "bertscore::min_val=0.0|max_val=0.33": (seed * 37) % 101,
                "bertscore::min_val=0.33|max_val=0.67": (seed * 53) % 97,
                "analyzer_closed_set::feature_name=languages|constraints=English": budget / 3,
                "analyzer_open_set::feature_name=format_constraints|check_for_existence=1": seed,
            });
            std::fs::write(
                counts_dir.join(format!("regressor_feats_ID__{uuid}__SWAPS_{budget}.json")),
                serde_json::to_string_pretty(&counts)?,
            )?;
            list.push(FixtureCheckpoint {
                uuid,
                budget,
                object,
                bytes: tiny_reward_model(seed),
            });
        }
        Ok(SweepFixture {
            root: root.to_path_buf(),
            eval_set,
            counts_dir,
            checkpoints: list,
            examples: lines.len(),
        })
    }

    /// The bucket as the training jobs leave it: params, the pickles beside them, the tokenizer.
    pub async fn upload(&self, gcs: &GcsClient, bucket: &str) -> anyhow::Result<()> {
        gcs.create_bucket(bucket).await?;
        for ckpt in &self.checkpoints {
            gcs.upload(bucket, &ckpt.object, Bytes::from(ckpt.bytes.clone()))
                .await?;
            let dir = ckpt.object.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            gcs.upload(
                bucket,
                &format!("{dir}/metadata_437.pkl"),
                Bytes::from_static(b"not needed"),
            )
            .await?;
        }
        let tokenizer = shared().join("data/tokenizers/llama2");
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            let path = tokenizer.join(name);
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            gcs.upload(
                bucket,
                &format!("{TOKENIZER_PREFIX}{name}"),
                Bytes::from(data),
            )
            .await?;
        }
        Ok(())
    }

    /// A presets file whose `[helpsteer2]` family points at the bucket.
    pub fn write_presets(&self, bucket: &str, shard_size: u32) -> anyhow::Result<PathBuf> {
        let path = self.root.join(format!("presets-{bucket}.toml"));
        let text = format!(
            r#"[{SWEEP}]
checkpoints = ["gs://{bucket}/{PREFIX}"]
eval_dataset = "{eval}"
tokenizer = "gs://{bucket}/{TOKENIZER_PREFIX}"
chat_template = "tulu"
max_length = 512
feature_counts_dir = "{counts}"
output_csv = "{SWEEP}-counts-runs.csv"
experiment_prefix = "{SWEEP}-counts"
shard_size = {shard_size}
xstest_weighting = "legacy"

[{SWEEP}.easylm]
num_heads = {NUM_HEADS}
"#,
            eval = self.eval_set.display(),
            counts = self.counts_dir.display(),
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }
}
