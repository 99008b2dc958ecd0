//! The prior preference sets (`allenai/pref-test-sets`) as RewardBench's `--pref_sets` loads
//! them: `rewardbench/utils.py::load_eval_dataset(core_set=False)` (0.1.4, lines 331-349):
//!
//! - every split of the dataset is read, except `pku_better` and `pku_safer` ("no longer part of
//!   the benchmark");
//! - a split's own `subset` column, where it has one, is renamed `subsubset`
//!   ([`PriorSetRow::subsubset`]), and `subset` becomes the split's name;
//! - the splits are concatenated in the dataset's split order. For files named
//!   `<split>-*.parquet` (what `push_to_hub` writes), `datasets` orders the splits it infers
//!   alphabetically, which is the order of [`crate::v1::PREF_TEST_SETS`].
//!
//! `scripts/run_rm.py` then keeps only `text_chosen`, `text_rejected` and `id`
//! (`keep_columns`), so the sub-subset never reaches its result files.
//!
//! [`load_dir`] reads a local copy in the Hub's layout (a folder holding
//! `data/<split>-00000-of-00001.parquet`, or `<split>.jsonl`, ...); `herd_storage::hub` resolves
//! `hf://datasets/allenai/pref-test-sets` to such files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{load_rows, DatasetError, PreferencePair};

/// Splits of `allenai/pref-test-sets` that `load_eval_dataset` drops.
pub const DROPPED_SPLITS: [&str; 2] = ["pku_better", "pku_safer"];

/// One row of a prior set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriorSetRow {
    /// The pair, its `subset` set to the split name.
    pub pair: PreferencePair,
    /// The row's own `subset` value (the reference's `subsubset` column), if it had one.
    pub subsubset: Option<String>,
}

/// The rows of one split as the reference labels them: `subset` moved to `subsubset`, then
/// `subset` = `split`.
pub fn label_split(split: &str, rows: Vec<PreferencePair>) -> Vec<PriorSetRow> {
    rows.into_iter()
        .map(|mut pair| {
            let subsubset = pair.subset.replace(split.to_owned());
            PriorSetRow { pair, subsubset }
        })
        .collect()
}

/// The extensions of data files, in order of preference (a split with both Parquet and JSON
/// files is read from the Parquet ones).
const DATA_EXTENSIONS: [&str; 4] = ["parquet", "jsonl", "ndjson", "json"];

/// The split a data file belongs to, from its name: `anthropic_hhh-00000-of-00001.parquet` and
/// `anthropic_hhh.jsonl` → `anthropic_hhh`; `None` for files that are not data files.
pub fn split_of_file(path: &Path) -> Option<(String, usize)> {
    let name = path.file_name()?.to_str()?;
    let (stem, ext) = name.rsplit_once('.')?;
    let rank = DATA_EXTENSIONS
        .iter()
        .position(|e| ext.eq_ignore_ascii_case(e))?;
    let split = stem.split_once('-').map_or(stem, |(split, _)| split);
    (!split.is_empty() && !name.starts_with('.')).then(|| (split.to_owned(), rank))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DatasetError> {
    let io = |source| DatasetError::Io {
        file: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The data files of a local copy, by split (alphabetical; [`DROPPED_SPLITS`] left out), each
/// split's files in path order and of its preferred extension only.
pub fn split_files(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, DatasetError> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let mut by_split: BTreeMap<String, (usize, Vec<PathBuf>)> = BTreeMap::new();
    for path in files {
        let Some((split, rank)) = split_of_file(&path) else {
            continue;
        };
        let entry = by_split.entry(split).or_insert((rank, Vec::new()));
        if rank < entry.0 {
            *entry = (rank, Vec::new());
        }
        if rank == entry.0 {
            entry.1.push(path);
        }
    }
    let splits: Vec<(String, Vec<PathBuf>)> = by_split
        .into_iter()
        .filter(|(split, _)| !DROPPED_SPLITS.contains(&split.as_str()))
        .map(|(split, (_, files))| (split, files))
        .collect();
    if splits.is_empty() {
        return Err(DatasetError::Layout {
            file: dir.display().to_string(),
            reason: "no prior-set data files (expected files such as \
                     data/anthropic_helpful-00000-of-00001.parquet, as in allenai/pref-test-sets)"
                .into(),
        });
    }
    Ok(splits)
}

/// Every prior set of a local copy of `allenai/pref-test-sets` (see the module docs), in the
/// reference's order. Ids must be unique within a file; splits may reuse each other's ids.
pub fn load_dir(dir: &Path) -> Result<Vec<PriorSetRow>, DatasetError> {
    let mut rows = Vec::new();
    for (split, files) in split_files(dir)? {
        for file in files {
            let pairs: Vec<PreferencePair> = load_rows(&file)?;
            rows.extend(label_split(&split, pairs));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{ExampleId, Prompt};

    #[test]
    fn split_names_from_file_names() {
        let split = |name: &str| split_of_file(Path::new(name)).map(|(s, _)| s);
        assert_eq!(
            split("data/anthropic_hhh-00000-of-00001.parquet").as_deref(),
            Some("anthropic_hhh")
        );
        assert_eq!(split("shp.jsonl").as_deref(), Some("shp"));
        assert_eq!(split("README.md"), None);
        assert_eq!(split(".shp.jsonl"), None);
        assert_eq!(split("-x.json"), None);
    }

    #[test]
    fn subset_moves_to_subsubset() {
        let pair = |subset: Option<&str>| PreferencePair {
            id: ExampleId::Int(0),
            prompt: Prompt::Text("q".into()),
            chosen: "a".into(),
            rejected: "b".into(),
            subset: subset.map(Into::into),
            chosen_model: None,
            rejected_model: None,
        };
        let rows = label_split("anthropic_hhh", vec![pair(Some("harmless")), pair(None)]);
        assert_eq!(rows[0].pair.subset.as_deref(), Some("anthropic_hhh"));
        assert_eq!(rows[0].subsubset.as_deref(), Some("harmless"));
        assert_eq!(rows[1].pair.subset.as_deref(), Some("anthropic_hhh"));
        assert_eq!(rows[1].subsubset, None);
    }

    #[test]
    fn a_folder_without_data_files_is_an_error() {
        let dir = std::env::temp_dir().join(format!("herd-prior-sets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("README.md"), "x").unwrap();
        std::fs::write(dir.join("pku_safer.jsonl"), "{}").unwrap();
        let err = load_dir(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("no prior-set data files"), "{err}");
    }
}
