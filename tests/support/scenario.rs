//! One sweep end to end: a coordinator, workers, `coord submit`, wait, `coord results`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_rpc::v1::{SweepState, SweepStatus};
use herd_storage::gcs::emulator::FakeGcs;

use crate::fixture::SWEEP;
use crate::procs::{spawn_worker, CoordSettings, Coordinator, Proc};

/// What every multi-process test needs: the shared data (RewardBench rows and the Llama-2
/// tokenizer of the fixture) and a running emulator. `None`: the test is skipped (outside CI
/// only; herd_testkit).
pub fn start_gcs() -> Option<FakeGcs> {
    herd_testkit::shared_path("data")?;
    herd_testkit::fake_gcs()
}

pub struct SweepRun {
    pub dir: PathBuf,
    pub coord: Coordinator,
    pub workers: Vec<Proc>,
    /// the workers' environment (the worker token, no operator token)
    pub env: Vec<(String, String)>,
    /// where workers connect (the coordinator, or a proxy in front of it)
    pub worker_target: String,
}

impl SweepRun {
    pub fn start(dir: &Path, gcs_endpoint: &str, settings: CoordSettings) -> SweepRun {
        let env = vec![
            (
                "STORAGE_EMULATOR_HOST".to_string(),
                gcs_endpoint.to_string(),
            ),
            ("RUST_LOG".to_string(), "info".to_string()),
            ("HF_HUB_OFFLINE".to_string(), "1".to_string()),
        ];
        let coord = Coordinator::start(dir, env, settings);
        let worker_target = coord.url();
        SweepRun {
            dir: dir.to_path_buf(),
            // with the coordinator's worker token ($HERD_TOKEN), not its operator token
            env: coord.worker_env(),
            coord,
            workers: Vec::new(),
            worker_target,
        }
    }

    /// `coord submit --dataset helpsteer2 --presets FILE`, retried while the server starts.
    pub fn submit(&self, presets: &Path) -> String {
        let presets = presets.display().to_string();
        let args = ["submit", "--dataset", SWEEP, "--presets", presets.as_str()];
        for _ in 0..100 {
            let out = self.coord.client(&args);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                return text;
            }
            if !text.contains("connect") && !text.contains("unavailable") {
                panic!("coord submit failed: {text}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "coord submit never reached the coordinator\n{}",
            self.logs()
        )
    }

    pub fn add_worker(&mut self) -> usize {
        let n = self.workers.len();
        let name = format!("worker-{n}");
        let cache = self.dir.join("caches").join(&name);
        let proc = spawn_worker(
            &name,
            &self.worker_target,
            &cache,
            &self.dir.join("logs"),
            &self.env,
        );
        self.workers.push(proc);
        n
    }

    pub async fn finish(
        &self,
        timeout: Duration,
        on_poll: impl FnMut(&SweepStatus),
    ) -> SweepStatus {
        match self.coord.wait_finished(SWEEP, timeout, on_poll).await {
            Ok(status) => status,
            Err(e) => panic!("{e:#}\n{}", self.logs()),
        }
    }

    /// [`SweepRun::finish`], asserting the sweep ended `Done` (with every log tail when not).
    pub async fn finish_done(&self, timeout: Duration) -> SweepStatus {
        let status = self.finish(timeout, |_| {}).await;
        assert_eq!(
            status.state(),
            SweepState::Done,
            "{status:?}\n{}",
            self.logs()
        );
        status
    }

    /// `coord results --sweep helpsteer2 -o FILE`: the CSV it writes.
    pub fn results_csv(&self) -> String {
        let csv = self.dir.join("results.csv");
        let csv_arg = csv.display().to_string();
        let json_dir = self.dir.join("results").display().to_string();
        let out = self.coord.client(&[
            "results",
            "--sweep",
            SWEEP,
            "-o",
            &csv_arg,
            "--out-dir",
            &json_dir,
        ]);
        assert!(
            out.status.success(),
            "coord results failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        std::fs::read_to_string(&csv).expect("coord results wrote the CSV")
    }

    /// The tails of every process log.
    pub fn logs(&self) -> String {
        let mut parts: Vec<String> = self.coord.proc.iter().map(|p| p.log_tail(40)).collect();
        parts.extend(self.workers.iter().map(|w| w.log_tail(25)));
        parts.join("\n")
    }
}

/// A presets file in `dir` for [`SWEEP`] over the run folders under `ckpts`, scored on the
/// RewardBench rows of `eval` with the tulu template, its results in `{name}.csv` with
/// experiment prefix `name`.
pub fn local_presets(
    dir: &Path,
    ckpts: &Path,
    eval: &Path,
    name: &str,
    max_length: u32,
    shard_size: u32,
) -> PathBuf {
    let presets = dir.join("presets.toml");
    std::fs::write(
        &presets,
        format!(
            r#"[{SWEEP}]
checkpoints = ["{ckpts}"]
eval_dataset = "{eval}"
chat_template = "tulu"
max_length = {max_length}
output_csv = "{name}.csv"
experiment_prefix = "{name}"
shard_size = {shard_size}
"#,
            ckpts = ckpts.display(),
            eval = eval.display(),
        ),
    )
    .unwrap();
    presets
}
