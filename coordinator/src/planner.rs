//! Sweep planning: which checkpoints ([`list_checkpoints`]), which examples ([`load_examples`]:
//! preference pairs, or RewardBench 2 best-of-N rows for a sweep of schema rb2) and how the
//! examples are cut into tasks ([`shard_ranges`]).
//!
//! Checkpoint sources (`SweepSpec.checkpoints`):
//! - `gs://bucket/prefix`: a recursive listing; every object whose name contains
//!   `streaming_params` is one EasyLM checkpoint (as `generate_eval_runs.py` lists them);
//! - a local file: an EasyLM checkpoint if its name contains `streaming_params`;
//! - a local folder: one HF checkpoint if it holds `config.json`, else searched recursively for
//!   `streaming_params` files and HF folders;
//! - `hf:org/name`: one HF checkpoint on the Hub (nothing is fetched at plan time).
//!
//! Each checkpoint carries its parameters' bytes in 16-bit precision for the scheduler's memory
//! rule ([`crate::scheduler`]): an HF folder's from its safetensors headers
//! ([`param_bytes_of_folder`]), an EasyLM file's as its size (EasyLM's checkpointer writes bf16 by
//! default, `float_dtype='bf16'`; an fp32 file counts double, erring towards a bigger worker), a
//! Hub checkpoint's as unknown (0).
//!
//! Experiment names follow hybrid-preferences' `convert_to_hf.py`: the run name is the params
//! file's parent folder up to the first `--` (the EasyLM logger id is dropped; the folder's stem,
//! or, when the run folder or file name contains `llama`, the whole folder name with `.` replaced
//! by `-`: see [`easylm_run_name`]), an HF folder's run name is the
//! folder name; the experiment is `rm-eval-{experiment_prefix}-{run}` (or `{run}` without a
//! prefix), as Beaker named the RewardBench runs that `fetch_evals_rewardbench.py` reads.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use herd_rewardbench::dataset::v2::BestOfNRow;
use herd_rewardbench::dataset::{ExampleId, PreferencePair};
use herd_rpc::v1::SweepSpec;
use herd_rpc::EvalSchema;

use crate::domain::{CheckpointFormat, Completions, PlannedCheckpoint, PlannedExample};

/// Examples per task when the spec leaves `shard_size` at 0.
pub const DEFAULT_SHARD_SIZE: u32 = 500;

/// A spec's shard size, with 0 meaning [`DEFAULT_SHARD_SIZE`].
pub fn effective_shard_size(shard_size: u32) -> u32 {
    if shard_size == 0 {
        DEFAULT_SHARD_SIZE
    } else {
        shard_size
    }
}

/// The marker of an EasyLM checkpoint file name.
pub const EASYLM_MARKER: &str = "streaming_params";

/// Lists the checkpoints of every source of `spec.checkpoints`, sorted by uri. A uri found
/// through two sources is kept once; two different uris with the same experiment name, or no
/// checkpoint at all, are errors.
pub async fn list_checkpoints(spec: &SweepSpec) -> anyhow::Result<Vec<PlannedCheckpoint>> {
    if spec.checkpoints.is_empty() {
        bail!("sweep '{}': no checkpoint sources given", spec.name);
    }
    let mut found: Vec<PlannedCheckpoint> = Vec::new();
    for source in &spec.checkpoints {
        let source = source.trim();
        if source.is_empty() {
            bail!("sweep '{}': an empty checkpoint source", spec.name);
        }
        let mut part = if source.starts_with("gs://") {
            list_gcs(source, &spec.experiment_prefix).await?
        } else if let Some(repo) = source.strip_prefix("hf:") {
            vec![hub_checkpoint(source, repo, &spec.experiment_prefix)?]
        } else {
            list_local(Path::new(source), &spec.experiment_prefix)?
        };
        found.append(&mut part);
    }
    finish(found, spec)
}

/// Sorts by uri, drops repeated uris, refuses duplicate names and an empty result.
fn finish(
    mut found: Vec<PlannedCheckpoint>,
    spec: &SweepSpec,
) -> anyhow::Result<Vec<PlannedCheckpoint>> {
    found.sort_by(|a, b| a.uri.cmp(&b.uri));
    found.dedup_by(|a, b| a.uri == b.uri);
    if found.is_empty() {
        bail!(
            "sweep '{}': no checkpoints found in {} (looked for objects or files whose name \
             contains '{EASYLM_MARKER}' and for folders with a config.json)",
            spec.name,
            spec.checkpoints.join(", ")
        );
    }
    let mut by_name: BTreeMap<&str, &str> = BTreeMap::new();
    for ckpt in &found {
        if let Some(other) = by_name.insert(&ckpt.name, &ckpt.uri) {
            bail!(
                "sweep '{}': two checkpoints have the experiment name '{}': {} and {}",
                spec.name,
                ckpt.name,
                other,
                ckpt.uri
            );
        }
    }
    Ok(found)
}

/// `rm-eval-{prefix}-{run}`, or `{run}` without a prefix.
pub fn experiment_name(prefix: &str, run: &str) -> String {
    if prefix.is_empty() {
        run.to_owned()
    } else {
        format!("rm-eval-{prefix}-{run}")
    }
}

/// The run name of an EasyLM params file given its path (object name or local path), as
/// hybrid-preferences' `evals/convert_to_hf.py` (7a17ed3, lines 128-131) names it:
/// `params_path.parts[-2].replace(".", "-").split("--")[0]` when the path contains `llama`, else
/// `params_path.parent.stem.split("--")[0]`. The script tests the path of its download,
/// `<--download_dir>/<run folder>/<file>` (`gsutil cp -r` of the object's folder), so `llama` is
/// looked for in the run folder and file name only: a bucket or prefix named `llama` does not
/// change the name. `None` when the file has no parent folder.
pub fn easylm_run_name(params_path: &str) -> Option<String> {
    let mut parts = params_path.split('/').filter(|p| !p.is_empty());
    let file = parts.next_back()?;
    let parent = parts.next_back()?;
    if parent.contains("llama") || file.contains("llama") {
        let name = parent.replace('.', "-");
        return Some(name.split("--").next().unwrap_or(&name).to_owned());
    }
    // Path.stem of a folder name drops a final `.suffix`, as Python does
    let stem = match parent.rfind('.') {
        Some(dot) if dot > 0 => &parent[..dot],
        _ => parent,
    };
    Some(stem.split("--").next().unwrap_or(stem).to_owned())
}

async fn list_gcs(source: &str, prefix: &str) -> anyhow::Result<Vec<PlannedCheckpoint>> {
    use herd_storage::gcs::{GcsClient, GcsUri};
    let uri = GcsUri::parse(source)?;
    let client = GcsClient::from_env()
        .await
        .with_context(|| format!("{source}: cannot create a GCS client"))?;
    let objects = client
        .list(&uri.bucket, &uri.object)
        .await
        .with_context(|| format!("{source}: listing failed"))?;
    let mut out = Vec::new();
    for object in objects {
        if !object.name.contains(EASYLM_MARKER) {
            continue;
        }
        let full = object.uri();
        let run = easylm_run_name(&object.name).with_context(|| {
            format!("{full}: an EasyLM checkpoint must sit in a run folder (<run>--<id>/streaming_params_<step>)")
        })?;
        out.push(PlannedCheckpoint {
            uri: full,
            name: experiment_name(prefix, &run),
            format: CheckpointFormat::EasyLm,
            size_bytes: object.size,
            param_bytes: object.size,
        });
    }
    Ok(out)
}

fn hub_checkpoint(source: &str, repo: &str, prefix: &str) -> anyhow::Result<PlannedCheckpoint> {
    let repo = repo.trim_matches('/');
    let valid = repo.split('/').count() == 2
        && repo.split('/').all(|p| {
            !p.is_empty()
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if !valid {
        bail!("{source}: expected hf:ORG/NAME");
    }
    let run = repo.rsplit('/').next().unwrap_or(repo);
    Ok(PlannedCheckpoint {
        uri: format!("hf:{repo}"),
        name: experiment_name(prefix, run),
        format: CheckpointFormat::HuggingFace,
        size_bytes: 0,
        param_bytes: 0,
    })
}

fn list_local(path: &Path, prefix: &str) -> anyhow::Result<Vec<PlannedCheckpoint>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("checkpoint source {}", path.display()))?;
    let path = std::fs::canonicalize(path)
        .with_context(|| format!("checkpoint source {}", path.display()))?;
    let mut out = Vec::new();
    if meta.is_file() {
        let name = file_name(&path);
        if !name.contains(EASYLM_MARKER) {
            bail!(
                "{}: not a checkpoint (an EasyLM file name contains '{EASYLM_MARKER}'; an HF \
                 checkpoint is a folder with config.json)",
                path.display()
            );
        }
        out.push(local_easylm(&path, meta.len(), prefix)?);
    } else {
        walk(&path, prefix, &mut out)?;
    }
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn local_easylm(path: &Path, size: u64, prefix: &str) -> anyhow::Result<PlannedCheckpoint> {
    let text = path
        .to_str()
        .with_context(|| format!("{}: the path is not UTF-8", path.display()))?;
    let run = easylm_run_name(text)
        .with_context(|| format!("{text}: an EasyLM checkpoint must sit in a run folder"))?;
    Ok(PlannedCheckpoint {
        uri: text.to_owned(),
        name: experiment_name(prefix, &run),
        format: CheckpointFormat::EasyLm,
        size_bytes: size,
        param_bytes: size,
    })
}

/// One HF folder, or a recursive search (sorted) for `streaming_params` files and HF folders.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<PlannedCheckpoint>) -> anyhow::Result<()> {
    let text = dir
        .to_str()
        .with_context(|| format!("{}: the path is not UTF-8", dir.display()))?;
    if dir.join("config.json").is_file() {
        out.push(PlannedCheckpoint {
            uri: text.to_owned(),
            name: experiment_name(prefix, &file_name(dir)),
            format: CheckpointFormat::HuggingFace,
            size_bytes: folder_size(dir),
            param_bytes: param_bytes_of_folder(dir).unwrap_or_else(|e| {
                // the worker that loads it fails that checkpoint with the reason; the sweep goes on
                tracing::warn!("{e:#}: its size is unknown to the scheduler");
                0
            }),
        });
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{text}: cannot list the folder"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{text}: cannot list the folder"))?;
    entries.sort();
    for entry in entries {
        let meta = match std::fs::metadata(&entry) {
            Ok(meta) => meta,
            // a dangling link is not a checkpoint
            Err(_) => continue,
        };
        if meta.is_dir() {
            walk(&entry, prefix, out)?;
        } else if file_name(&entry).contains(EASYLM_MARKER) {
            out.push(local_easylm(&entry, meta.len(), prefix)?);
        }
    }
    Ok(())
}

/// The safetensors index of a sharded HF checkpoint.
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
/// The weights file of an unsharded one.
const SAFETENSORS_FILE: &str = "model.safetensors";

/// The parameters' bytes in 16-bit precision (2 x the parameter count) of an HF folder, read from
/// the safetensors headers only: every shard named in `model.safetensors.index.json`'s
/// `weight_map`, else `model.safetensors`. 0 (unknown) for a folder without safetensors weights.
/// A header or index that cannot be read is an error naming the file (the planner then plans the
/// checkpoint with an unknown size, and the worker that loads it reports it broken).
pub fn param_bytes_of_folder(dir: &Path) -> anyhow::Result<u64> {
    let index = dir.join(SAFETENSORS_INDEX);
    let files: Vec<PathBuf> = if index.is_file() {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read(&index).with_context(|| format!("{}", index.display()))?;
        let parsed: Index = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a safetensors index", index.display()))?;
        let mut shards: Vec<&String> = parsed.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        let mut files = Vec::with_capacity(shards.len());
        for shard in shards {
            // the shard names become paths: plain file names in the folder only
            if shard.is_empty() || shard.contains(['/', '\\']) || shard == ".." {
                bail!(
                    "{}: the shard name {shard:?} is not a file name in the folder",
                    index.display()
                );
            }
            files.push(dir.join(shard));
        }
        files
    } else if dir.join(SAFETENSORS_FILE).is_file() {
        vec![dir.join(SAFETENSORS_FILE)]
    } else {
        return Ok(0);
    };
    let mut parameters: u64 = 0;
    for file in &files {
        parameters = parameters.saturating_add(safetensors_parameters(file)?);
    }
    Ok(parameters.saturating_mul(2))
}

/// The element count of every tensor of a safetensors file, from its header alone (8 bytes of
/// little-endian header length, then the JSON header, parsed by the `safetensors` crate).
fn safetensors_parameters(file: &Path) -> anyhow::Result<u64> {
    use std::io::Read;
    /// the `safetensors` crate's own bound on a header (MAX_HEADER_SIZE)
    const MAX_HEADER: u64 = 100_000_000;
    let mut f = std::fs::File::open(file).with_context(|| format!("{}", file.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{}: too short for a safetensors header", file.display()))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        bail!(
            "{}: a safetensors header of {len} bytes (at most {MAX_HEADER})",
            file.display()
        );
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{}: the safetensors header is cut short", file.display()))?;
    let metadata: safetensors::tensor::Metadata = serde_json::from_slice(&header)
        .with_context(|| format!("{}: not a safetensors header", file.display()))?;
    Ok(metadata
        .tensors()
        .values()
        .map(|info| info.shape.iter().map(|&d| d as u64).product::<u64>())
        .fold(0u64, u64::saturating_add))
}

fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| if m.is_file() { m.len() } else { 0 })
        .sum()
}

/// Loads the evaluation set of `spec` (a file or `hf://datasets/...` with `eval_split`) as its
/// schema says (`scoring.schema`): preference pairs, or RewardBench 2 best-of-N rows. Every row
/// needs a subset (RewardBench scores by subset).
pub fn load_examples(spec: &SweepSpec) -> anyhow::Result<Vec<PlannedExample>> {
    let source = spec.eval_dataset.trim();
    if source.is_empty() {
        bail!(
            "sweep '{}': no evaluation dataset (eval_dataset)",
            spec.name
        );
    }
    let split = Some(spec.eval_split.trim()).filter(|s| !s.is_empty());
    match sweep_schema(spec)? {
        EvalSchema::Rb1 => match herd_storage::hub::load_pairs_from(source, split) {
            Ok(pairs) => examples_from_pairs(source, &pairs),
            // RewardBench 2 rows fail as pairs on their `chosen` list: say which flag reads them
            Err(e) => match herd_storage::hub::load_best_of_n_from(source, split) {
                Ok(_) => bail!(
                    "cannot load the evaluation set {source} as preference pairs ({e}); its rows \
                     read as RewardBench 2 best-of-N rows: submit it with schema rb2 (--schema \
                     rb2, or `schema = \"rb2\"` in the preset)"
                ),
                Err(_) => {
                    Err(e).with_context(|| format!("cannot load the evaluation set {source}"))
                }
            },
        },
        EvalSchema::Rb2 => {
            let rows = herd_storage::hub::load_best_of_n_from(source, split).with_context(|| {
                format!("cannot load the evaluation set {source} as RewardBench 2 rows (schema rb2)")
            })?;
            examples_from_best_of_n(source, &rows)
        }
    }
}

/// The evaluation-set schema of `spec` (`scoring.schema`; none: [`EvalSchema::Rb1`]).
pub fn sweep_schema(spec: &SweepSpec) -> anyhow::Result<EvalSchema> {
    spec.scoring
        .as_ref()
        .map_or(Ok(EvalSchema::Rb1), |s| s.eval_schema())
        .map_err(|e| anyhow::anyhow!("sweep '{}': {e}", spec.name))
}

/// [`PlannedExample`]s of loaded pairs (index = position); `source` names the dataset in errors.
pub fn examples_from_pairs(
    source: &str,
    pairs: &[PreferencePair],
) -> anyhow::Result<Vec<PlannedExample>> {
    check_row_count(source, pairs.len())?;
    pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let subset = row_subset(source, i, &pair.id, pair.subset.as_deref())?;
            let pair_json = serde_json::to_string(pair)
                .with_context(|| format!("{source}: row {} (id {})", i + 1, pair.id))?;
            Ok(PlannedExample {
                index: i as u32,
                id: pair.id.to_string(),
                subset,
                pair_json,
                completions: None,
            })
        })
        .collect()
}

/// [`PlannedExample`]s of RewardBench 2 rows (index = position): `pair_json` is the
/// [`BestOfNRow`] as JSON (prompt, both completion lists, `num_correct`, subset) and
/// `completions` its counts, which the ingest holds every result to.
pub fn examples_from_best_of_n(
    source: &str,
    rows: &[BestOfNRow],
) -> anyhow::Result<Vec<PlannedExample>> {
    check_row_count(source, rows.len())?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let subset = row_subset(source, i, &row.id, row.subset.as_deref())?;
            let count = |n: usize, what: &str| {
                u32::try_from(n).with_context(|| {
                    format!(
                        "{source}: row {} (id {}) has too many {what} completions",
                        i + 1,
                        row.id
                    )
                })
            };
            let completions = Completions {
                chosen: count(row.chosen.len(), "chosen")?,
                rejected: count(row.rejected.len(), "rejected")?,
            };
            let pair_json = serde_json::to_string(row)
                .with_context(|| format!("{source}: row {} (id {})", i + 1, row.id))?;
            Ok(PlannedExample {
                index: i as u32,
                id: row.id.to_string(),
                subset,
                pair_json,
                completions: Some(completions),
            })
        })
        .collect()
}

fn check_row_count(source: &str, rows: usize) -> anyhow::Result<()> {
    if rows == 0 {
        bail!("{source}: the evaluation set has no rows");
    }
    if rows > u32::MAX as usize {
        bail!("{source}: too many rows ({rows})");
    }
    Ok(())
}

/// Row `i`'s subset, required: RewardBench scores by subset.
fn row_subset(
    source: &str,
    i: usize,
    id: &ExampleId,
    subset: Option<&str>,
) -> anyhow::Result<String> {
    match subset {
        Some(s) if !s.trim().is_empty() => Ok(s.to_owned()),
        _ => bail!(
            "{source}: row {} (id {id}) has no subset; RewardBench scores need one per row",
            i + 1
        ),
    }
}

/// Contiguous ranges of at most `shard_size` examples (0: [`DEFAULT_SHARD_SIZE`]) covering
/// `0..examples` in order.
pub fn shard_ranges(examples: u32, shard_size: u32) -> Vec<Range<u32>> {
    let size = effective_shard_size(shard_size);
    (0..examples)
        .step_by(size as usize)
        .map(|start| start..examples.min(start.saturating_add(size)))
        .collect()
}
