//! The coordinator under test: a real `coord serve` child process on 127.0.0.1 with its own state
//! file, restartable on the same port (for the kill -9 runs), plus the synthetic sweep inputs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herd_rpc::v1::sweeps_client::SweepsClient;
use herd_rpc::v1::{Scoring, StatusRequest, SubmitRequest, SubmitResponse, SweepSpec};
use herd_testkit::process::{coord_serve, free_port, Proc};

/// `coord serve` flags the simulator sets (everything else is the coordinator's default).
#[derive(Clone, Debug)]
pub struct CoordSettings {
    pub lease_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// extra arguments passed verbatim after the ones above
    pub extra: Vec<String>,
}

pub struct Coord {
    bin: PathBuf,
    pub port: u16,
    pub state: PathBuf,
    out_dir: PathBuf,
    log_dir: PathBuf,
    settings: CoordSettings,
    /// the running process (its log is the newest `coord.N.log`)
    proc: Option<Proc>,
}

impl Coord {
    /// Starts `coord serve` in `dir` (state.db, out/, coord.N.log) and waits until it answers.
    pub async fn start(bin: &Path, dir: &Path, settings: CoordSettings) -> anyhow::Result<Coord> {
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: build it first (`cargo build --release -p herd-coordinator`)",
            bin.display()
        );
        let mut coord = Coord {
            bin: bin.to_path_buf(),
            port: free_port(),
            state: dir.join("state.db"),
            out_dir: dir.join("out"),
            log_dir: dir.to_path_buf(),
            settings,
            proc: None,
        };
        coord.restart().await?;
        Ok(coord)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again: same port, same state file) and waits until Status answers.
    pub async fn restart(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let s = &self.settings;
        let mut command = coord_serve(
            &self.bin,
            &self.state,
            self.port,
            &self.out_dir,
            s.lease_timeout_ms,
            s.heartbeat_interval_ms,
        );
        // the simulated workers send no token, and lease as fast as the coordinator answers
        command
            .args(["--insecure-no-auth", "--lease-rate", "0"])
            .args(&s.extra);
        self.proc = Some(Proc::try_spawn("coord", command, &self.log_dir)?);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(proc) = self.proc.as_mut() {
                if !proc.is_running() {
                    anyhow::bail!("coord serve exited:\n{}", self.log_tail(30));
                }
            }
            if self.ping().await {
                return Ok(started.elapsed());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "coord serve did not answer within 60 s:\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        match SweepsClient::connect(self.url()).await {
            // any answer from the service (even an error status) means it is serving
            Ok(mut client) => match client
                .status(StatusRequest {
                    sweep: String::new(),
                })
                .await
            {
                Ok(_) => true,
                Err(status) => status.code() != tonic::Code::Unavailable,
            },
            Err(_) => false,
        }
    }

    /// `kill -9`: the process gets no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(proc) = self.proc.as_mut() {
            proc.kill9();
        }
    }

    /// The last lines of the newest log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc
            .as_ref()
            .map(|proc| proc.log_tail(lines))
            .unwrap_or_default()
    }

    pub async fn submit(&self, spec: SweepSpec) -> anyhow::Result<SubmitResponse> {
        let mut client = SweepsClient::connect(self.url()).await?;
        let response = client
            .submit(SubmitRequest {
                spec: Some(spec),
                retry_failed: false,
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "Submit: {} {}\n{}",
                    s.code(),
                    s.message(),
                    self.log_tail(30)
                )
            })?;
        Ok(response.into_inner())
    }

    /// The state of `sweep` as Status reports it ("active", "done", ...).
    pub async fn sweep_state(
        &self,
        sweep: &str,
    ) -> anyhow::Result<(herd_rpc::v1::SweepState, u32, u32)> {
        let mut client = SweepsClient::connect(self.url()).await?;
        let status = client
            .status(StatusRequest {
                sweep: sweep.to_string(),
            })
            .await?
            .into_inner();
        let s = status
            .sweeps
            .into_iter()
            .find(|s| s.name == sweep)
            .ok_or_else(|| anyhow::anyhow!("Status has no sweep {sweep}"))?;
        Ok((s.state(), s.tasks_done, s.tasks_total))
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// RewardBench subset names the synthetic rows cycle through (all four sections).
pub const SUBSETS: &[&str] = &[
    "alpacaeval-easy",
    "alpacaeval-length",
    "alpacaeval-hard",
    "mt-bench-easy",
    "mt-bench-med",
    "mt-bench-hard",
    "llmbar-natural",
    "llmbar-adver-neighbor",
    "refusals-dangerous",
    "refusals-offensive",
    "xstest-should-refuse",
    "xstest-should-respond",
    "donotanswer",
    "math-prm",
    "hep-python",
    "hep-rust",
];

/// The sweep's inputs: `examples` short JSONL rows and `checkpoints` placeholder HF folders
/// (config.json only: enough for the planner; the simulated workers never load them).
pub struct Inputs {
    pub eval_set: PathBuf,
    pub checkpoints: Vec<String>,
    pub tokenizer: PathBuf,
}

pub fn write_inputs(dir: &Path, checkpoints: usize, examples: usize) -> anyhow::Result<Inputs> {
    std::fs::create_dir_all(dir)?;
    let eval_set = dir.join("eval.jsonl");
    let mut text = String::with_capacity(examples * 120);
    for i in 0..examples {
        let subset = SUBSETS[i % SUBSETS.len()];
        let row = serde_json::json!({
            "prompt": format!("question {i}?"),
            "chosen": format!("a good answer to {i}"),
            "rejected": format!("a bad answer to {i}"),
            "subset": subset,
            "id": i,
        });
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(&eval_set, text)?;
    let tokenizer = dir.join("tokenizer");
    std::fs::create_dir_all(&tokenizer)?;
    let mut list = Vec::new();
    for c in 0..checkpoints {
        let folder = dir.join("checkpoints").join(format!("sim-rm-{c:04}"));
        std::fs::create_dir_all(&folder)?;
        std::fs::write(
            folder.join("config.json"),
            r#"{"architectures": ["LlamaForSequenceClassification"], "model_type": "llama", "num_labels": 1, "_herd_sim": "placeholder: never loaded"}"#,
        )?;
        list.push(folder.display().to_string());
    }
    Ok(Inputs {
        eval_set,
        checkpoints: list,
        tokenizer,
    })
}

pub fn spec(name: &str, inputs: &Inputs, shard_size: u32) -> SweepSpec {
    SweepSpec {
        name: name.to_string(),
        checkpoints: inputs.checkpoints.clone(),
        eval_dataset: inputs.eval_set.display().to_string(),
        scoring: Some(Scoring {
            tokenizer: inputs.tokenizer.display().to_string(),
            chat_template: herd_rpc::defaults::CHAT_TEMPLATE.into(),
            max_length: herd_rpc::defaults::MAX_LENGTH,
            easylm: None,
            ..Default::default()
        }),
        experiment_prefix: "sim".into(),
        shard_size,
        xstest_weighting: "current".into(),
        ..Default::default()
    }
}
