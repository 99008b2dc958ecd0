//! The `coordinator_requests` fuzz target on stable: its committed seeds (request sequences
//! written by [`scenarios`]) and deterministic mutations of them, through the same driver and
//! invariants (`herd_coordinator::fuzzing`).

use herd_rpc::v1::{
    CancelRequest, CompleteRequest, ExampleReward, FailRequest, FailureKind, HeartbeatRequest,
    LeaseRequest, RegisterRequest, ResultBatch, ResultsRequest, SubmitRequest, SweepSpec,
};
use prost::Message;

use herd_coordinator::fuzzing as coordinator_driver;
use herd_testkit::fuzz_seeds as stable_replay;

const TARGET: &str = "coordinator_requests";

/// One request of a sequence: (op, clock step, protobuf bytes).
type Step = (u8, u8, Vec<u8>);

const REGISTER: u8 = 0;
const LEASE: u8 = 1;
const RESULTS: u8 = 2;
const COMPLETE: u8 = 3;
const FAIL: u8 = 4;
const HEARTBEAT: u8 = 5;
const REAP: u8 = 6;
const CANCEL: u8 = 7;
const SUBMIT: u8 = 8;
const REPORT: u8 = 9;

fn rewards(range: std::ops::Range<u32>, chosen: f64) -> Vec<ExampleReward> {
    range
        .map(|i| ExampleReward {
            example_id: format!("ex{i}"),
            scores_chosen: vec![chosen],
            scores_rejected: vec![0.0],
            index: i,
            texts: Vec::new(),
        })
        .collect()
}

fn results(rewards: Vec<ExampleReward>) -> Vec<u8> {
    ResultBatch {
        rewards,
        ..Default::default()
    }
    .encode_to_vec()
}

/// The seeds: a sweep scored to the end through every request kind, and the hostile inputs the
/// store must refuse (names that are paths, bad numbers, results outside the shard).
fn scenarios() -> Vec<(&'static str, Vec<Step>)> {
    let register = RegisterRequest {
        name: "w".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let lease = LeaseRequest::default().encode_to_vec();
    let complete = CompleteRequest {
        model_type: "Seq. Classifier".into(),
        chat_template: "tokenizer".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut full = vec![(REGISTER, 0, register.clone())];
    // two checkpoints of two shards of 12 examples each
    for shard in [0, 12, 0, 12] {
        full.push((LEASE, 1, lease.clone()));
        full.push((RESULTS, 1, results(rewards(shard..shard + 12, 1.0))));
        full.push((COMPLETE, 1, complete.clone()));
    }
    full.push((
        REPORT,
        0,
        ResultsRequest { sweep: "s".into() }.encode_to_vec(),
    ));

    let lifecycle = vec![
        (REGISTER, 0, register.clone()),
        (LEASE, 1, lease.clone()),
        (RESULTS, 1, results(rewards(0..5, 2.0))),
        (HEARTBEAT, 50, HeartbeatRequest::default().encode_to_vec()),
        (REAP, 255, vec![]),
        (LEASE, 1, lease.clone()),
        (
            FAIL,
            1,
            FailRequest {
                kind: FailureKind::Checkpoint as i32,
                reason: "bad".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            CANCEL,
            1,
            CancelRequest { sweep: "s".into() }.encode_to_vec(),
        ),
        (
            SUBMIT,
            1,
            SubmitRequest {
                spec: Some(SweepSpec {
                    name: "s".into(),
                    checkpoints: vec!["/ckpts".into()],
                    eval_dataset: "eval.jsonl".into(),
                    shard_size: 12,
                    output_csv: "s.csv".into(),
                    ..Default::default()
                }),
                retry_failed: true,
            }
            .encode_to_vec(),
        ),
        (LEASE, 1, lease.clone()),
        (RESULTS, 1, results(rewards(0..12, 1.0))),
        (COMPLETE, 1, complete.clone()),
    ];

    let mut nan = rewards(0..12, 1.0);
    nan[1].scores_chosen = vec![f64::NAN];
    let hostile = vec![
        (
            SUBMIT,
            0,
            SubmitRequest {
                spec: Some(SweepSpec {
                    name: "../../x".into(),
                    checkpoints: vec!["a".into()],
                    shard_size: 4,
                    output_csv: "../x.csv".into(),
                    ..Default::default()
                }),
                retry_failed: false,
            }
            .encode_to_vec(),
        ),
        (
            REPORT,
            0,
            ResultsRequest {
                sweep: "../x".into(),
            }
            .encode_to_vec(),
        ),
        (
            CANCEL,
            0,
            CancelRequest {
                sweep: "/tmp/x".into(),
            }
            .encode_to_vec(),
        ),
        (REGISTER, 0, register),
        (LEASE, 1, lease),
        (RESULTS, 1, results(nan)),
        (RESULTS, 1, results(rewards(12..14, 1.0))),
        (RESULTS, 1, results(rewards(0..12, 1.0))),
        (RESULTS, 1, results(rewards(0..12, 5.0))),
        (COMPLETE, 1, complete),
    ];
    vec![
        ("scenario-full-sweep", full),
        ("scenario-lifecycle", lifecycle),
        ("scenario-hostile", hostile),
    ]
}

fn corpus() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(TARGET)
}

/// The committed seeds are the scenarios as encoded now (`HERD_WRITE_FUZZ_SEEDS=1` rewrites them).
#[test]
fn committed_seeds_are_the_scenarios() {
    for (name, steps) in scenarios() {
        let bytes = coordinator_driver::encode(&steps);
        let path = corpus().join(name);
        if std::env::var_os("HERD_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == bytes,
            "{}: differs from the scenario (HERD_WRITE_FUZZ_SEEDS=1 rewrites it)",
            path.display()
        );
    }
}

#[test]
fn the_scenarios_reach_what_they_are_for() {
    // the full sweep finishes and its report lands inside the output folder
    let dir = tempfile::tempdir().unwrap();
    let full = &scenarios()[0].1;
    coordinator_driver::run_in(dir.path(), &coordinator_driver::encode(full));
    let out = dir.path().join("out").join("s");
    for file in ["s.csv", "metrics/rm-eval-a.json", "eval-set/rm-eval-b.json"] {
        assert!(
            out.join(file).is_file(),
            "{file} missing under {}",
            out.display()
        );
    }
}

#[test]
fn coordinator_request_seeds_and_mutations_keep_the_invariants() {
    let inputs = stable_replay::seeds_and_mutations(TARGET, stable_replay::Mutations::Binary);
    // a few hundred sequences: every one opens a store in a fresh folder
    for bytes in inputs.iter().step_by(8) {
        coordinator_driver::run(bytes);
    }
}
