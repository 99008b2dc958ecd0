//! Fault tests: workers killed with SIGKILL at several points, a coordinator killed and
//! restarted mid-sweep, a worker's connection cut, a corrupt checkpoint and one that vanishes
//! from GCS. Every fault must run; the sweep finishes, failures carry their reasons, and every
//! stored score and the CSV equal a clean run's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use herd_rpc::v1::{CheckpointState, SweepState};
use herd_storage::gcs::GcsClient;
use herd_tests::fixture::{SweepFixture, BUCKET};
use herd_tests::procs::CoordSettings;
use herd_tests::proxy::Proxy;
use herd_tests::scenario::{start_gcs, SweepRun};

const TIMEOUT: Duration = Duration::from_secs(400);
/// Faults injected into one sweep: two worker kills, a coordinator restart, a connection cut.
const FAULTS: usize = 4;

/// Every stored score of a state file: (checkpoint name, example index) -> the chosen and
/// rejected rewards as stored (little-endian f64 bytes, compared exactly).
type Scores = BTreeMap<(String, i64), (Vec<u8>, Vec<u8>)>;

fn stored_scores(state: &Path) -> Scores {
    let conn = rusqlite::Connection::open(state).unwrap();
    let mut query = conn
        .prepare(
            "SELECT c.name, r.idx, r.chosen, r.rejected FROM results r
             JOIN checkpoints c ON c.id = r.checkpoint_id",
        )
        .unwrap();
    let rows = query
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))
        .unwrap();
    let mut scores = Scores::new();
    for row in rows {
        let (key, value) = row.unwrap();
        assert!(
            scores.insert(key.clone(), value).is_none(),
            "{key:?} twice in {}: the key needs unique checkpoint names",
            state.display()
        );
    }
    scores
}

/// The faulty run stored exactly the clean run's scores: the same (checkpoint, example) pairs,
/// each with bit-identical chosen and rejected rewards.
fn assert_same_scores(clean: &Scores, faulty: &Scores, logs: &str) {
    let missing: Vec<_> = clean.keys().filter(|k| !faulty.contains_key(*k)).collect();
    let extra: Vec<_> = faulty.keys().filter(|k| !clean.contains_key(*k)).collect();
    let differ: Vec<_> = clean
        .iter()
        .filter(|(k, v)| faulty.get(*k).is_some_and(|f| f != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        !clean.is_empty() && missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "per-example scores, faulty run vs clean run ({} clean rows): missing {missing:?}, \
         extra {extra:?}, different scores {differ:?}\n{logs}",
        clean.len()
    );
}

/// Kills worker `n` (kill -9), starts a replacement, and says whether the victim held an
/// active lease when it died.
fn kill_holder(run: &mut SweepRun, n: usize) -> bool {
    run.workers[n].kill9();
    run.add_worker();
    active_leases(&run.coord.state, &format!("worker-{n}")) > 0
}

fn active_leases(state: &Path, worker: &str) -> i64 {
    leases_of(state, worker, "l.state = 'active'")
}

/// Leases of the named worker that it never completed.
fn unfinished_leases(state: &Path, worker: &str) -> i64 {
    leases_of(state, worker, "l.state != 'done'")
}

fn leases_of(state: &Path, worker: &str, condition: &str) -> i64 {
    let conn = rusqlite::Connection::open(state).unwrap();
    conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM leases l JOIN workers w ON w.id = l.worker_id
             WHERE w.name = ?1 AND {condition}"
        ),
        [worker],
        |r| r.get(0),
    )
    .unwrap()
}

/// A clean run of the sweep with one worker: its CSV and its stored scores.
async fn clean_run(dir: &Path, gcs: &str, presets: &Path) -> (String, Scores) {
    let mut run = SweepRun::start(dir, gcs, CoordSettings::default());
    run.submit(presets);
    run.add_worker();
    let status = run.finish(TIMEOUT, |_| {}).await;
    assert_eq!(status.state(), SweepState::Done, "{}", run.logs());
    (run.results_csv(), stored_scores(&run.coord.state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_restarted_coordinator_and_cut_connections_change_nothing() {
    let Some(gcs) = start_gcs() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let fixture = SweepFixture::new(&tmp.path().join("fixture"), 6, 20).unwrap();
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    fixture.upload(&client, BUCKET).await.unwrap();
    let presets = fixture.write_presets(BUCKET, 10).unwrap();
    let (clean_csv, clean_scores) =
        clean_run(&tmp.path().join("clean"), &gcs.endpoint(), &presets).await;

    let dir = tmp.path().join("faulty");
    let mut run = SweepRun::start(&dir, &gcs.endpoint(), CoordSettings::default());
    // workers reach the coordinator through a proxy whose connections can be cut
    let target = format!("127.0.0.1:{}", run.coord.port).parse().unwrap();
    let proxy = Proxy::start(target).await.unwrap();
    run.worker_target = proxy.url();
    run.submit(&presets);
    for _ in 0..3 {
        run.add_worker();
    }

    // fault schedule by stored examples; kills hit a worker that holds a lease (mid-shard)
    let total = (fixture.examples * fixture.checkpoints.len()) as u64;
    let deadline = Instant::now() + TIMEOUT;
    let mut step = 0;
    let mut killed = Vec::new();
    let mut cut = None;
    while step < FAULTS {
        assert!(
            Instant::now() < deadline,
            "only {step} of {FAULTS} faults ran within {TIMEOUT:?}\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        // unreachable while the coordinator restarts
        let Ok(status) = run.coord.status().await else {
            continue;
        };
        let sweep = status
            .sweeps
            .iter()
            .find(|s| s.name == "helpsteer2")
            .unwrap_or_else(|| panic!("no sweep helpsteer2 in {status:?}\n{}", run.logs()));
        assert_eq!(
            sweep.state(),
            SweepState::Active,
            "the sweep ended after {step} of {FAULTS} faults\n{}",
            run.logs()
        );
        let stored = sweep.examples_stored;
        let busy = status
            .workers
            .iter()
            .filter(|w| !w.leases.is_empty())
            .filter_map(|w| w.name.strip_prefix("worker-")?.parse::<usize>().ok())
            .find(|&n| run.workers[n].is_running());
        match (step, busy) {
            // a worker killed as soon as anything is stored, another a quarter of the way in;
            // a step counts only when the state file shows the victim died holding a live lease
            // (a fast shard may complete between the status poll and the kill)
            (0, Some(n)) if stored > 0 && kill_holder(&mut run, n) => {
                killed.push(n);
                step += 1;
            }
            (1, Some(n)) if stored >= total / 4 && kill_holder(&mut run, n) => {
                killed.push(n);
                step += 1;
            }
            // the coordinator itself, killed and restarted on the same state file
            (2, _) if stored >= total / 2 => {
                run.coord.kill9();
                tokio::time::sleep(Duration::from_millis(500)).await;
                run.coord.restart();
                step += 1;
            }
            // every worker connection cut; counts only when live streams were cut (after the
            // restart the workers may not have reconnected yet)
            (3, _) if stored >= total * 2 / 3 => {
                let severed = proxy.sever();
                if severed > 0 {
                    cut = Some((severed, proxy.accepted()));
                    step += 1;
                }
            }
            _ => {}
        }
    }
    // the cut streams were the workers': they connect through the proxy again
    let (severed, accepted_at_cut) = cut.expect("the connection cut ran");
    let reconnect_deadline = Instant::now() + Duration::from_secs(60);
    while proxy.accepted() == accepted_at_cut {
        assert!(
            Instant::now() < reconnect_deadline,
            "no worker reconnected after {severed} streams were cut\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = run.finish_done(TIMEOUT).await;
    // each killed worker died holding a lease that someone else finished (after expiry, or
    // as a straggler duplicate)
    for n in &killed {
        let unfinished = unfinished_leases(&run.coord.state, &format!("worker-{n}"));
        assert!(
            unfinished > 0,
            "worker-{n} was killed holding no lease\n{}",
            run.logs()
        );
    }
    assert_eq!(status.examples_stored, total, "{}", run.logs());
    assert_eq!(clean_scores.len() as u64, total);
    assert_same_scores(&clean_scores, &stored_scores(&run.coord.state), &run.logs());
    let faulty = run.results_csv();
    assert_eq!(faulty, clean_csv, "faulty run vs clean run\n{}", run.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_vanished_checkpoints_fail_with_reasons_and_the_sweep_goes_on() {
    let Some(gcs) = start_gcs() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let fixture = SweepFixture::new(&tmp.path().join("fixture"), 6, 10).unwrap();
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    // the clean bucket holds the four good checkpoints only
    let mut good = SweepFixture::new(&tmp.path().join("good"), 6, 10).unwrap();
    good.checkpoints.truncate(4);
    good.upload(&client, "clean").await.unwrap();
    let (clean_csv, clean_scores) = clean_run(
        &tmp.path().join("clean"),
        &gcs.endpoint(),
        &good.write_presets("clean", 10).unwrap(),
    )
    .await;

    // the sweep's bucket: the same four, one with damaged bytes, one deleted after planning
    let mut damaged = fixture;
    let corrupt = &mut damaged.checkpoints[4];
    let cut = corrupt.bytes.len() / 2;
    corrupt.bytes.truncate(cut);
    corrupt.bytes.extend_from_slice(b"\xc1\xc1garbage");
    damaged.upload(&client, BUCKET).await.unwrap();
    let presets = damaged.write_presets(BUCKET, 10).unwrap();
    let corrupt_object = damaged.checkpoints[4].object.clone();
    let vanished_object = damaged.checkpoints[5].object.clone();

    let dir = tmp.path().join("damaged");
    let mut run = SweepRun::start(&dir, &gcs.endpoint(), CoordSettings::default());
    run.submit(&presets);
    let url = format!(
        "{}/storage/v1/b/{BUCKET}/o/{}",
        gcs.endpoint(),
        vanished_object.replace('/', "%2F")
    );
    let deleted = reqwest::Client::new().delete(&url).send().await.unwrap();
    assert!(deleted.status().is_success(), "{deleted:?}");
    run.add_worker();
    run.add_worker();
    let status = run.finish_done(TIMEOUT).await;

    let failed: Vec<_> = status
        .checkpoints
        .iter()
        .filter(|c| c.state() == CheckpointState::Failed)
        .collect();
    assert_eq!(failed.len(), 2, "{status:#?}");
    let reason_of = |object: &str| {
        failed
            .iter()
            .find(|c| c.uri.ends_with(object))
            .map(|c| c.failure.clone())
            .unwrap_or_else(|| panic!("{object} not failed: {status:#?}"))
    };
    let corrupt_reason = reason_of(&corrupt_object);
    assert!(
        corrupt_reason.contains("streaming_params"),
        "corrupt: {corrupt_reason}"
    );
    let vanished_reason = reason_of(&vanished_object).to_lowercase();
    assert!(
        vanished_reason.contains("not found") || vanished_reason.contains("404"),
        "vanished: {vanished_reason}"
    );
    // the failed checkpoints stored nothing; the others exactly what a clean run stores
    assert_same_scores(&clean_scores, &stored_scores(&run.coord.state), &run.logs());
    assert_eq!(run.results_csv(), clean_csv, "{}", run.logs());
}
