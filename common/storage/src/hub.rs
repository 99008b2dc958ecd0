//! Datasets on the Hugging Face Hub: `hf://datasets/ORG/NAME[@REVISION][/PATH]`, resolved to
//! files in the local Hub cache through `hf-hub` and read by the loaders of [`herd_rewardbench::dataset`].
//!
//! - Which files: `PATH` if given (a file, or a folder whose data files are taken); otherwise the
//!   data files of the requested split: files named `<split>-*.<ext>` or `<split>.<ext>`, or
//!   inside a folder named `<split>` (the layouts `datasets` writes: `data/filtered-00000-of-00001.parquet`,
//!   `default/test/0000.parquet`). Parquet is preferred over JSON when a split has both. Several
//!   shards are read in path order and concatenated.
//! - The cache is the one `huggingface_hub` uses: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`,
//!   else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//!   `~/.cache/huggingface/hub` (layout `datasets--ORG--NAME/{refs/REV, blobs/, snapshots/COMMIT/...}`).
//! - Offline (`HF_HUB_OFFLINE` or `HF_DATASETS_OFFLINE` set to 1/ON/YES/TRUE): only the cache is
//!   read, through `hf_hub::Cache`; nothing touches the network.
//! - Online: the file list comes from the Hub API, files already in the cache are not downloaded
//!   again, new ones are downloaded into the cache. If the Hub cannot be reached, the cache is
//!   used and [`Resolved::warnings`] says so.
//! - Token: `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the file `HF_TOKEN_PATH`, else
//!   `$HF_HOME/token`. Endpoint: `HF_ENDPOINT` (default `https://huggingface.co`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use herd_rewardbench::dataset::prior_sets::{self, PriorSetRow};
use herd_rewardbench::dataset::v2::BestOfNRow;
use herd_rewardbench::dataset::{load_rows, DatasetError, DatasetRow, ExampleId, PreferencePair};

/// The scheme of Hub sources.
pub const HF_SCHEME: &str = "hf://";

/// A dataset on the Hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubDataset {
    /// `ORG/NAME`.
    pub repo: String,
    /// A branch, tag or commit; `None` is `main`.
    pub revision: Option<String>,
    /// A file or folder inside the repository.
    pub path: Option<String>,
}

impl HubDataset {
    /// The revision, defaulting to `main`.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    fn repo(&self) -> Repo {
        Repo::with_revision(
            self.repo.clone(),
            RepoType::Dataset,
            self.revision().to_owned(),
        )
    }
}

impl std::fmt::Display for HubDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{HF_SCHEME}datasets/{}", self.repo)?;
        if let Some(rev) = &self.revision {
            write!(f, "@{}", rev.replace('/', "%2F"))?;
        }
        if let Some(path) = &self.path {
            write!(f, "/{path}")?;
        }
        Ok(())
    }
}

/// Where a dataset comes from: a local file or a dataset on the Hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    Local(PathBuf),
    Hub(HubDataset),
}

impl DataSource {
    /// `hf://datasets/ORG/NAME[@REVISION][/PATH]` (a revision with `/` written as `%2F`, as in
    /// `@refs%2Fconvert%2Fparquet`), or else a local path.
    pub fn parse(source: &str) -> Result<DataSource, DatasetError> {
        let Some(rest) = source.strip_prefix(HF_SCHEME) else {
            return Ok(DataSource::Local(PathBuf::from(source)));
        };
        let bad = |reason: &str| DatasetError::Hub {
            file: source.into(),
            reason: format!("{reason}; expected hf://datasets/ORG/NAME[@REVISION][/PATH]"),
        };
        let Some(rest) = rest.strip_prefix("datasets/") else {
            return Err(bad("only dataset repositories are supported"));
        };
        let mut parts = rest.splitn(3, '/');
        let org = parts.next().unwrap_or_default();
        let name_rev = parts.next().unwrap_or_default();
        let path = parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
        let (name, revision) = match name_rev.split_once('@') {
            Some((name, rev)) if !rev.is_empty() => (name, Some(percent_decode(rev))),
            Some(_) => return Err(bad("empty revision after '@'")),
            None => (name_rev, None),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid(org) || !valid(name) {
            return Err(bad("the repository must be ORG/NAME"));
        }
        if path
            .as_deref()
            .is_some_and(|p| p.split('/').any(|c| c == ".."))
        {
            return Err(bad("the path may not contain '..'"));
        }
        Ok(DataSource::Hub(HubDataset {
            repo: format!("{org}/{name}"),
            revision,
            path,
        }))
    }
}

impl FromStr for DataSource {
    type Err = DatasetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataSource::parse(s)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How to reach the Hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubOptions {
    /// The Hub cache (`.../huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Read the cache only.
    pub offline: bool,
    pub token: Option<String>,
    /// `None`: `https://huggingface.co`.
    pub endpoint: Option<String>,
}

impl HubOptions {
    /// Options from the environment, as `huggingface_hub` reads it (see the module docs).
    pub fn from_env() -> HubOptions {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = dirs_home();
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let truthy = |name: &str| {
            var(name).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_uppercase().as_str(),
                    "1" | "ON" | "YES" | "TRUE"
                )
            })
        };
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
            });
        HubOptions {
            cache_dir,
            offline: truthy("HF_HUB_OFFLINE") || truthy("HF_DATASETS_OFFLINE"),
            token,
            endpoint: var("HF_ENDPOINT"),
        }
    }
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The local files of a source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// In the order they are read.
    pub files: Vec<PathBuf>,
    /// Things the caller may want to tell the user (e.g. the Hub could not be reached and the
    /// cache was used).
    pub warnings: Vec<String>,
}

/// The extensions of data files, in order of preference.
const DATA_EXTENSIONS: [&str; 4] = ["parquet", "jsonl", "ndjson", "json"];

fn extension_rank(path: &str) -> Option<usize> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    DATA_EXTENSIONS.iter().position(|e| *e == ext)
}

/// The split a data file belongs to, from its name: `data/test-00000-of-00001.parquet` → `test`,
/// `default/test/0000.parquet` → `test`, `test.jsonl` → `test`.
fn file_matches_split(path: &str, split: &str) -> bool {
    let mut components: Vec<&str> = path.split('/').collect();
    let file = components.pop().unwrap_or_default();
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    stem == split
        || stem
            .strip_prefix(split)
            .is_some_and(|rest| rest.starts_with('-'))
        || components.contains(&split)
}

/// The split names the data files suggest (for error messages).
fn split_names(files: &[String]) -> Vec<String> {
    let mut names: Vec<String> = files
        .iter()
        .map(|path| {
            let file = path.rsplit('/').next().unwrap_or(path);
            let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
            stem.split_once('-').map_or(stem, |(s, _)| s).to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Picks the data files of `split` (or under `dataset.path`) from a repository listing.
fn select_files(
    source: &HubDataset,
    listing: &[String],
    split: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut candidates: Vec<&String> = match &source.path {
        Some(path) if listing.contains(path) => return Ok(vec![path.clone()]),
        Some(path) => {
            let folder = format!("{}/", path.trim_end_matches('/'));
            listing
                .iter()
                .filter(|f| f.starts_with(&folder) && extension_rank(f).is_some())
                .collect()
        }
        None => listing
            .iter()
            .filter(|f| extension_rank(f).is_some() && !f.starts_with('.'))
            .collect(),
    };
    if candidates.is_empty() {
        return Err(match &source.path {
            Some(path) => format!("no file or folder of data files \"{path}\" in the repository"),
            None => "no data files (.parquet, .jsonl, .json) in the repository".into(),
        });
    }
    let all: Vec<String> = candidates.iter().map(|s| (*s).clone()).collect();
    if let Some(split) = split {
        candidates.retain(|f| file_matches_split(f, split));
        if candidates.is_empty() {
            return Err(format!(
                "no data files for split \"{split}\" (splits found: {})",
                split_names(&all).join(", ")
            ));
        }
    }
    let best = candidates
        .iter()
        .filter_map(|f| extension_rank(f))
        .min()
        .unwrap_or(0);
    candidates.retain(|f| extension_rank(f) == Some(best));
    if split.is_none() {
        let names = split_names(&candidates.iter().map(|s| (*s).clone()).collect::<Vec<_>>());
        if names.len() > 1 {
            return Err(format!("several splits ({}): name one", names.join(", ")));
        }
    }
    let mut files: Vec<String> = candidates.into_iter().cloned().collect();
    files.sort();
    Ok(files)
}

/// The files of a cached snapshot, relative to it, with `/` separators.
fn cached_listing(
    options: &HubOptions,
    dataset: &HubDataset,
) -> Result<(PathBuf, Vec<String>), String> {
    let cache = Cache::new(options.cache_dir.clone());
    let repo_dir = options.cache_dir.join(dataset.repo().folder_name());
    let revision = dataset.revision();
    let commit = if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
        revision.to_owned()
    } else {
        let ref_path = repo_dir.join("refs").join(revision);
        match std::fs::read_to_string(&ref_path) {
            Ok(commit) => commit.trim().to_owned(),
            Err(_) => {
                return Err(format!(
                    "not in the local Hub cache (no {})",
                    ref_path.display()
                ))
            }
        }
    };
    let snapshot = cache.repo(dataset.repo()).pointer_path(&commit);
    if !snapshot.is_dir() {
        return Err(format!(
            "not in the local Hub cache (no {})",
            snapshot.display()
        ));
    }
    let mut files = Vec::new();
    walk(&snapshot, &snapshot, &mut files);
    files.sort();
    Ok((snapshot, files))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if path.is_file() {
            if let Ok(rel) = path.strip_prefix(root) {
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(rel.join("/"));
            }
        }
    }
}

fn resolve_from_cache(
    options: &HubOptions,
    dataset: &HubDataset,
    split: Option<&str>,
) -> Result<Vec<PathBuf>, String> {
    let (snapshot, listing) = cached_listing(options, dataset)?;
    let files = select_files(dataset, &listing, split)?;
    Ok(files.iter().map(|f| snapshot.join(f)).collect())
}

fn resolve_online(
    options: &HubOptions,
    dataset: &HubDataset,
    split: Option<&str>,
) -> Result<Vec<PathBuf>, String> {
    let mut builder = ApiBuilder::from_cache(Cache::new(options.cache_dir.clone()))
        .with_progress(false)
        .with_token(options.token.clone());
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder
        .build()
        .map_err(|err| format!("cannot set up the Hub client: {err}"))?;
    let repo = api.repo(dataset.repo());
    let listing: Vec<String> = match &dataset.path {
        // A file path needs no listing (and is served from the cache when there).
        Some(path) if extension_rank(path).is_some() => vec![path.clone()],
        _ => repo
            .info()
            .map_err(|err| format!("cannot list the repository: {err}"))?
            .siblings
            .into_iter()
            .map(|s| s.rfilename)
            .collect(),
    };
    let files = select_files(dataset, &listing, split)?;
    files
        .iter()
        .map(|f| {
            repo.get(f)
                .map_err(|err| format!("cannot download {f}: {err}"))
        })
        .collect()
}

/// The local files of a source: a local path as it is; a Hub dataset through the cache (see the
/// module docs). `split` picks the split's files of a Hub dataset (ignored for local paths).
pub fn resolve(
    source: &DataSource,
    split: Option<&str>,
    options: &HubOptions,
) -> Result<Resolved, DatasetError> {
    let dataset = match source {
        DataSource::Local(path) => {
            return Ok(Resolved {
                files: vec![path.clone()],
                warnings: Vec::new(),
            })
        }
        DataSource::Hub(dataset) => dataset,
    };
    let error = |reason: String| DatasetError::Hub {
        file: dataset.to_string(),
        reason,
    };
    if options.offline {
        return resolve_from_cache(options, dataset, split)
            .map(|files| Resolved {
                files,
                warnings: Vec::new(),
            })
            .map_err(|reason| error(format!("{reason} (offline: HF_HUB_OFFLINE is set)")));
    }
    match resolve_online(options, dataset, split) {
        Ok(files) => Ok(Resolved {
            files,
            warnings: Vec::new(),
        }),
        Err(online) => match resolve_from_cache(options, dataset, split) {
            Ok(files) => Ok(Resolved {
                files,
                warnings: vec![format!("{dataset}: {online}; using the local Hub cache")],
            }),
            Err(cached) => Err(error(format!("{online}; and {cached}"))),
        },
    }
}

/// Loads the rows of a source (a local file or `hf://...`); several shards are concatenated,
/// and ids must be unique across them.
pub fn load_source<T: DatasetRow>(
    source: &str,
    split: Option<&str>,
    options: &HubOptions,
) -> Result<(Vec<T>, Resolved), DatasetError> {
    let parsed = DataSource::parse(source)?;
    let resolved = resolve(&parsed, split, options)?;
    let mut rows: Vec<T> = Vec::new();
    let mut first_file: std::collections::HashMap<ExampleId, (usize, usize)> =
        std::collections::HashMap::new();
    for (f, path) in resolved.files.iter().enumerate() {
        let shard: Vec<T> = load_rows(path)?;
        if resolved.files.len() > 1 {
            for (r, row) in shard.iter().enumerate() {
                if let Some((pf, pr)) = first_file.insert(row.id().clone(), (f, r)) {
                    return Err(DatasetError::Hub {
                        file: source.into(),
                        reason: format!(
                            "duplicate id {} in {} row {} (already used by {} row {})",
                            row.id(),
                            path.display(),
                            r + 1,
                            resolved.files[pf].display(),
                            pr + 1
                        ),
                    });
                }
            }
        }
        rows.extend(shard);
    }
    Ok((rows, resolved))
}

/// Preference pairs from a local file or `hf://...` (options from the environment); warnings
/// go to stderr.
pub fn load_pairs_from(
    source: &str,
    split: Option<&str>,
) -> Result<Vec<PreferencePair>, DatasetError> {
    let (rows, resolved) = load_source(source, split, &HubOptions::from_env())?;
    for warning in &resolved.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(rows)
}

/// RewardBench 2 rows from a local file or `hf://...` (options from the environment); warnings
/// go to stderr.
pub fn load_best_of_n_from(
    source: &str,
    split: Option<&str>,
) -> Result<Vec<BestOfNRow>, DatasetError> {
    let (rows, resolved) = load_source(source, split, &HubOptions::from_env())?;
    for warning in &resolved.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(rows)
}

/// RewardBench v1 on the Hub (split `filtered`).
pub const REWARD_BENCH: &str = "hf://datasets/allenai/reward-bench";
/// The prior preference sets on the Hub (one split per set).
pub const PREF_TEST_SETS: &str = "hf://datasets/allenai/pref-test-sets";
/// RewardBench 2 on the Hub (split `test`).
pub const REWARD_BENCH_2: &str = "hf://datasets/allenai/reward-bench-2";

/// The prior preference sets as `--pref_sets` loads them
/// ([`herd_rewardbench::dataset::prior_sets`]): from a local folder in the Hub's layout, every
/// split found there; from the Hub, every split of [`herd_rewardbench::v1::PREF_TEST_SETS`]
/// (`pku_better`/`pku_safer` left out). Each row's `subset` is moved to `subsubset` and set to
/// its split's name.
pub fn load_pref_test_sets(
    source: &str,
    options: &HubOptions,
) -> Result<(Vec<PriorSetRow>, Vec<String>), DatasetError> {
    if let DataSource::Local(dir) = DataSource::parse(source)? {
        return Ok((prior_sets::load_dir(&dir)?, Vec::new()));
    }
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for split in herd_rewardbench::v1::PREF_TEST_SETS {
        let (pairs, resolved) = load_source::<PreferencePair>(source, Some(split), options)?;
        warnings.extend(resolved.warnings);
        rows.extend(prior_sets::label_split(split, pairs));
    }
    Ok((rows, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(repo: &str, revision: Option<&str>, path: Option<&str>) -> DataSource {
        DataSource::Hub(HubDataset {
            repo: repo.into(),
            revision: revision.map(Into::into),
            path: path.map(Into::into),
        })
    }

    #[test]
    fn parses_sources() {
        assert_eq!(
            DataSource::parse("hf://datasets/allenai/reward-bench").unwrap(),
            hub("allenai/reward-bench", None, None)
        );
        assert_eq!(
            DataSource::parse(
                "hf://datasets/allenai/reward-bench@refs%2Fconvert%2Fparquet/default/filtered"
            )
            .unwrap(),
            hub(
                "allenai/reward-bench",
                Some("refs/convert/parquet"),
                Some("default/filtered")
            )
        );
        assert_eq!(
            DataSource::parse("hf://datasets/a/b/data/x.parquet").unwrap(),
            hub("a/b", None, Some("data/x.parquet"))
        );
        assert_eq!(
            DataSource::parse("data/x.jsonl").unwrap(),
            DataSource::Local("data/x.jsonl".into())
        );
        for bad in [
            "hf://allenai/reward-bench",
            "hf://datasets/allenai",
            "hf://datasets/a b/c",
            "hf://datasets/a/b@",
            "hf://datasets/a/b/../x",
        ] {
            let err = DataSource::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(bad), "{err}");
        }
        let s = hub("a/b", Some("refs/pr/1"), Some("d/x.parquet"));
        let DataSource::Hub(h) = &s else {
            unreachable!()
        };
        assert_eq!(h.to_string(), "hf://datasets/a/b@refs%2Fpr%2F1/d/x.parquet");
        assert_eq!(DataSource::parse(&h.to_string()).unwrap(), s);
    }

    #[test]
    fn percent_decoding_leaves_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn selects_split_files() {
        let listing: Vec<String> = [
            ".gitattributes",
            "README.md",
            "data/filtered-00000-of-00001.parquet",
            "data/raw-00000-of-00002.parquet",
            "data/raw-00001-of-00002.parquet",
            "data/raw_extra-00000-of-00001.parquet",
            "raw/notes.json",
        ]
        .map(String::from)
        .to_vec();
        let ds = HubDataset {
            repo: "a/b".into(),
            revision: None,
            path: None,
        };
        assert_eq!(
            select_files(&ds, &listing, Some("filtered")).unwrap(),
            vec!["data/filtered-00000-of-00001.parquet"]
        );
        assert_eq!(
            select_files(&ds, &listing, Some("raw")).unwrap(),
            vec![
                "data/raw-00000-of-00002.parquet",
                "data/raw-00001-of-00002.parquet"
            ]
        );
        let err = select_files(&ds, &listing, Some("test")).unwrap_err();
        assert!(err.contains("filtered, notes, raw, raw_extra"), "{err}");
        let err = select_files(&ds, &listing, None).unwrap_err();
        assert!(err.contains("several splits"), "{err}");
        let one = ["data/test-00000-of-00001.parquet".to_string()];
        assert_eq!(select_files(&ds, &one, None).unwrap(), one.to_vec());
        let converted = ["default/test/0000.parquet".to_string()];
        assert_eq!(
            select_files(&ds, &converted, Some("test")).unwrap(),
            converted.to_vec()
        );
        let with_path = HubDataset {
            path: Some("data".into()),
            ..ds.clone()
        };
        assert_eq!(
            select_files(&with_path, &listing, Some("filtered"))
                .unwrap()
                .len(),
            1
        );
    }
}
