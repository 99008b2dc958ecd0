//! The Grafana dashboard of deploy/observability against the real tools:
//!
//! * a real Prometheus (Debian's package) on 127.0.0.1 scrapes `coord serve --metrics-listen`
//!   and two workers' `--metrics-listen` every second while they run a sweep; `promtool check
//!   metrics` passes on each /metrics body, and every Prometheus expression of every panel of
//!   grafana/dashboards/herd.json returns data through Prometheus' HTTP API;
//! * the dashboard JSON type-checks against Grafana's published schema (@grafana/schema) with
//!   deploy/validate/dashboard.mjs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd_storage::gcs::GcsClient;
use herd_testkit::process::Proc;
use herd_tests::fixture::{SweepFixture, BUCKET};
use herd_tests::procs::{free_port, spawn_worker, CoordSettings, Coordinator};
use herd_tests::scenario::{start_gcs, SweepRun};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(300);
/// The test's scrape interval: short, so the sweep's few seconds give every rate() samples.
const SCRAPE_SECS: u64 = 1;
const HOW_PROMETHEUS: &str = "run scripts/setup (it installs Debian's prometheus package)";

fn dashboard_path() -> PathBuf {
    herd_testkit::workspace_root().join("deploy/observability/grafana/dashboards/herd.json")
}

/// A Prometheus expression of the dashboard: where it is, and the text as written.
struct PanelQuery {
    place: String,
    expr: String,
}

/// Every target of every panel (rows' panels included) whose datasource is Prometheus (the
/// target's, else the panel's); the Tempo table's TraceQL is for Tempo, not Prometheus.
fn prometheus_queries(dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &[Value], out: &mut Vec<PanelQuery>) {
        for panel in panels {
            if let Some(inner) = panel["panels"].as_array() {
                walk(inner, out);
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                let source = target
                    .get("datasource")
                    .or(panel.get("datasource"))
                    .and_then(|d| d["type"].as_str())
                    .unwrap_or("");
                if source != "prometheus" {
                    continue;
                }
                let expr = target["expr"].as_str().unwrap_or_else(|| {
                    panic!(
                        "panel {:?} target {}: a Prometheus target without expr",
                        panel["title"], target["refId"]
                    )
                });
                out.push(PanelQuery {
                    place: format!("panel {:?} target {}", panel["title"], target["refId"]),
                    expr: expr.to_string(),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().expect("panels"), &mut out);
    out
}

/// `expr` with Grafana's variables replaced by what Grafana sends this Prometheus:
/// * `$__rate_interval`: max(`$__interval` + scrape interval, 4 × scrape interval) (Grafana's
///   definition), 4s at the test's 1s scrape interval;
/// * `$__interval`: the scrape interval (Grafana's lower bound for it), `$__range`: `range`;
/// * a dashboard variable (`$name`, `${name}`, `[[name]]`): its `current.value` in
///   templating.list; `$__all` / "All" as `.*`, several values as `(a|b)`.
///
/// An unknown variable is an error, so a new one gets a rule here rather than a silent miss.
fn substitute(expr: &str, dashboard: &Value, range: Duration) -> Result<String, String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    values.insert("__rate_interval".into(), format!("{}s", 4 * SCRAPE_SECS));
    values.insert("__interval".into(), format!("{SCRAPE_SECS}s"));
    values.insert("__range".into(), format!("{}s", range.as_secs().max(1)));
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = var["name"].as_str().unwrap_or_default().to_string();
        let current = &var["current"]["value"];
        let all = |v: &str| v == "$__all" || v == "All";
        let value = match current {
            Value::String(v) if all(v) => ".*".to_string(),
            Value::String(v) => v.clone(),
            Value::Array(list) if list.iter().any(|v| v.as_str().is_some_and(all)) => {
                ".*".to_string()
            }
            Value::Array(list) => format!(
                "({})",
                list.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("|")
            ),
            _ => return Err(format!("variable {name} has no current value")),
        };
        values.insert(name, value);
    }
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(inner) = tail.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {expr}"))?;
            (inner[..end].split(':').next().unwrap_or(""), end + 3)
        } else if let Some(inner) = tail.strip_prefix("[[") {
            let end = inner
                .find("]]")
                .ok_or_else(|| format!("unclosed [[ in {expr}"))?;
            (&inner[..end], end + 4)
        } else if let Some(inner) = tail.strip_prefix('$') {
            let end = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            (&inner[..end], end + 1)
        } else {
            // a plain '[' (a range selector)
            out.push('[');
            rest = &tail[1..];
            continue;
        };
        let value = values
            .get(name)
            .ok_or_else(|| format!("no rule for the Grafana variable {name:?} in {expr}"))?;
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[test]
fn grafana_variables_are_substituted() {
    let dashboard = serde_json::json!({"templating": {"list": [
        {"name": "job", "current": {"value": "herd-worker"}},
        {"name": "worker", "current": {"value": ["$__all"]}},
        {"name": "state", "current": {"value": ["done", "failed"]}},
    ]}});
    let range = Duration::from_secs(90);
    let sub = |e: &str| substitute(e, &dashboard, range);
    assert_eq!(
        sub("rate(x{job=\"$job\"}[$__rate_interval])").unwrap(),
        "rate(x{job=\"herd-worker\"}[4s])"
    );
    assert_eq!(
        sub("x{worker=~\"${worker}\", state=~\"[[state]]\"}[$__range]").unwrap(),
        "x{worker=~\".*\", state=~\"(done|failed)\"}[90s]"
    );
    assert_eq!(sub("sum(rate(x[1m]))").unwrap(), "sum(rate(x[1m]))");
    assert!(sub("x[$__nope]").unwrap_err().contains("__nope"));
}

/// A real Prometheus on 127.0.0.1:`port` scraping `targets` (job name -> host:port list) every
/// second, its data in `dir`.
fn start_prometheus(binary: &Path, dir: &Path, port: u16, targets: &[(&str, Vec<String>)]) -> Proc {
    let mut config = format!(
        "global:\n  scrape_interval: {SCRAPE_SECS}s\n  evaluation_interval: {SCRAPE_SECS}s\nscrape_configs:\n"
    );
    for (job, list) in targets {
        let quoted: Vec<String> = list.iter().map(|t| format!("\"{t}\"")).collect();
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs: [{{targets: [{}]}}]\n",
            quoted.join(", ")
        ));
    }
    std::fs::create_dir_all(dir).unwrap();
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = Command::new(binary);
    command
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn");
    Proc::spawn("prometheus", command, &dir.join("logs"))
}

/// GET `url` as text, or why not.
async fn get(url: &str) -> Result<String, String> {
    let response = reqwest::get(url).await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: {status}: {text}"));
    }
    Ok(text)
}

/// Prometheus' instant query: the `data.result` vector.
async fn query(port: u16, expr: &str) -> Result<Vec<Value>, String> {
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        urlencoding::encode(expr)
    );
    let body: Value = serde_json::from_str(&get(&url).await?).map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{expr}: {body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The single value of a one-element query result.
fn scalar(result: &[Value]) -> Option<f64> {
    match result {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// `promtool check metrics` on a /metrics body: its output when it finds problems.
fn promtool_check(promtool: &Path, body: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", promtool.display()))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answers_every_panel_of_the_dashboard() {
    let Some(prometheus) = herd_testkit::program("prometheus", HOW_PROMETHEUS) else {
        return;
    };
    let Some(promtool) = herd_testkit::program("promtool", HOW_PROMETHEUS) else {
        return;
    };
    let Some(gcs) = start_gcs() else { return };
    let started = Instant::now();
    let dashboard = herd_testkit::fixtures::read_json(&dashboard_path());
    let queries = prometheus_queries(&dashboard);
    assert!(queries.len() >= 10, "{} Prometheus queries", queries.len());

    let tmp = tempfile::tempdir().unwrap();
    // 3 checkpoints of 30 examples in shards of 8: 12 tasks for two workers
    let fixture = SweepFixture::new(&tmp.path().join("fixture"), 3, 15).unwrap();
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    fixture.upload(&client, BUCKET).await.unwrap();
    let presets = fixture.write_presets(BUCKET, 8).unwrap();

    let coord_metrics = free_port();
    let worker_metrics = [free_port(), free_port()];
    let prometheus_port = free_port();
    // the job names of deploy/observability/prometheus.yml, which the dashboard is written for
    let committed = std::fs::read_to_string(
        herd_testkit::workspace_root().join("deploy/observability/prometheus.yml"),
    )
    .unwrap();
    for job in ["herd-coord", "herd-worker"] {
        assert!(
            committed.contains(&format!("job_name: {job}")),
            "{committed}"
        );
    }
    let prometheus_proc = start_prometheus(
        &prometheus,
        &tmp.path().join("prometheus"),
        prometheus_port,
        &[
            ("herd-coord", vec![format!("127.0.0.1:{coord_metrics}")]),
            (
                "herd-worker",
                worker_metrics
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect(),
            ),
        ],
    );

    let env = vec![
        ("STORAGE_EMULATOR_HOST".to_string(), gcs.endpoint()),
        ("RUST_LOG".to_string(), "info".to_string()),
        ("HF_HUB_OFFLINE".to_string(), "1".to_string()),
        // `coord serve --metrics-listen` (client commands ignore it)
        (
            "HERD_METRICS_LISTEN".to_string(),
            format!("127.0.0.1:{coord_metrics}"),
        ),
    ];
    let dir = tmp.path().join("run");
    let coord = Coordinator::start(&dir, env, CoordSettings::default());
    let mut run = SweepRun {
        dir: dir.clone(),
        env: coord.worker_env(),
        worker_target: coord.url(),
        coord,
        workers: Vec::new(),
    };
    // Prometheus is up before the sweep starts (so it sees the counters move)
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&format!("http://127.0.0.1:{prometheus_port}/-/ready"))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "prometheus never got ready\n{}",
            prometheus_proc.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.submit(&presets);
    for (i, port) in worker_metrics.iter().enumerate() {
        let name = format!("worker-{i}");
        let mut env = run.env.clone();
        env.push((
            "HERD_METRICS_LISTEN".to_string(),
            format!("127.0.0.1:{port}"),
        ));
        run.workers.push(spawn_worker(
            &name,
            &run.worker_target,
            &dir.join("caches").join(&name),
            &dir.join("logs"),
            &env,
        ));
    }
    let status = run.finish_done(TIMEOUT).await;
    let tasks = f64::from(status.tasks_total);
    let sweep_secs = started.elapsed();

    // wait until Prometheus has scraped the finished sweep from all three targets
    let settled = [
        ("sum(herd_tasks{state=\"done\"})".to_string(), tasks),
        (
            "sum(herd_worker_tasks_total{outcome=\"completed\"})".to_string(),
            tasks,
        ),
        ("sum(up)".to_string(), 3.0),
        ("count(up)".to_string(), 3.0),
        // rate() and increase() need two samples in their window: a sweep shorter than two
        // scrapes would leave the counter panels empty however correct they are
        ("min(count_over_time(up[1m])) >= bool 3".to_string(), 1.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !settled_now(&settled, prometheus_port).await {
        if Instant::now() > deadline {
            let mut seen = Vec::new();
            for (expr, want) in &settled {
                let got = scalar(&query(prometheus_port, expr).await.unwrap_or_default());
                seen.push(format!("{expr} = {got:?} (want {want})"));
            }
            panic!(
                "Prometheus never saw the finished sweep: {seen:?}\n{}\n{}",
                prometheus_proc.log_tail(30),
                run.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // promtool's lint of each exposition
    let ports = [coord_metrics, worker_metrics[0], worker_metrics[1]];
    let mut bodies = Vec::new();
    for port in ports {
        let body = get(&format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap();
        if let Err(problems) = promtool_check(&promtool, &body) {
            panic!("promtool check metrics on 127.0.0.1:{port}/metrics:\n{problems}\n---\n{body}");
        }
        bodies.push(format!("---- 127.0.0.1:{port}/metrics\n{body}"));
    }

    // every panel's expression returns data
    let range = started.elapsed() + Duration::from_secs(1);
    let mut empty = Vec::new();
    for q in &queries {
        let expr =
            substitute(&q.expr, &dashboard, range).unwrap_or_else(|e| panic!("{}: {e}", q.place));
        match query(prometheus_port, &expr).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => empty.push(format!("{}: `{expr}` returned no series", q.place)),
            Err(e) => empty.push(format!("{}: `{expr}`: {e}", q.place)),
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}\n{}\n{}",
        empty.join("\n"),
        bodies.join("\n"),
        run.logs()
    );
    // and the progress gauge reads the finished sweep
    let progress = queries
        .iter()
        .find(|q| q.expr.contains("herd_examples{state=\"stored\"}"))
        .expect("the examples-stored panel");
    let ratio = scalar(&query(prometheus_port, &progress.expr).await.unwrap());
    assert_eq!(ratio, Some(1.0), "{}", progress.expr);
    eprintln!(
        "{} panel queries answered; sweep of {} tasks in {:.1}s, test {:.1}s",
        queries.len(),
        status.tasks_total,
        sweep_secs.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Whether Prometheus' answer to each expression is the wanted value.
async fn settled_now(settled: &[(String, f64)], port: u16) -> bool {
    for (expr, want) in settled {
        if scalar(&query(port, expr).await.unwrap_or_default()) != Some(*want) {
            return false;
        }
    }
    true
}

/// An edit that breaks a dashboard.
type Breaking = fn(&mut Value);

#[test]
fn dashboard_matches_grafanas_published_schema() {
    let Some(node_modules) = herd_testkit::deploy_node_modules() else {
        return;
    };
    let Some(node) = herd_testkit::program(
        "node",
        "install Node.js (scripts/setup installs Debian's nodejs when npm is missing)",
    ) else {
        return;
    };
    // the check bites: a misspelt panel field, a wrong option type, an unknown field option
    let tmp = tempfile::tempdir().unwrap();
    let dashboard = herd_testkit::fixtures::read_json(&dashboard_path());
    let broken: [(&str, Breaking); 3] = [
        ("gridpos", |d| {
            let panel = d["panels"][0].as_object_mut().unwrap();
            let grid = panel.remove("gridPos").unwrap();
            panel.insert("gridpos".into(), grid);
        }),
        ("showLegend", |d| {
            d["panels"][3]["options"] = serde_json::json!({"legend": {"showLegend": "yes"}});
        }),
        ("lineWidht", |d| {
            d["panels"][2]["fieldConfig"]["defaults"]["custom"] =
                serde_json::json!({"lineWidht": 2});
        }),
    ];
    let mut files = vec![dashboard_path()];
    for (named, breaking) in &broken {
        let mut bad = dashboard.clone();
        breaking(&mut bad);
        let path = tmp.path().join(format!("{named}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&bad).unwrap()).unwrap();
        files.push(path);
    }
    // one node process for all four (typescript reuses the parsed schema between files)
    let script = herd_testkit::workspace_root().join("deploy/validate/dashboard.mjs");
    let out = Command::new(&node)
        .arg(&script)
        .arg("--node-modules")
        .arg(&node_modules)
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // exit 1: some file has problems (the broken ones); anything else is the script failing
    assert_eq!(out.status.code(), Some(1), "dashboard.mjs:\n{text}");
    let committed = format!("{}: 0 problems", dashboard_path().display());
    assert!(
        text.lines().any(|l| l == committed),
        "the committed dashboard:\n{text}"
    );
    assert!(text.contains("3 with problems"), "{text}");
    for ((named, _), path) in broken.iter().zip(&files[1..]) {
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("ERROR {}:", path.display())))
            .collect();
        assert_eq!(errors.len(), 1, "{named}:\n{text}");
        assert!(errors[0].contains(named), "{named}:\n{text}");
    }
}
