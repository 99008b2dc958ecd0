//! The report writer: a sweep's report is written to `<out_dir>/<sweep>/` when it finishes (and,
//! at start-up, for finished sweeps whose folder is missing); `coord results` gets the report of
//! a sweep's current state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{AppError, Coordinator};
use crate::domain::SweepState;
use crate::report::SweepReport;
use crate::state::ReportInputs;

/// The report of a sweep from its current state; notes from the store come first.
pub fn build(inputs: &ReportInputs) -> anyhow::Result<SweepReport> {
    let mut report = if inputs.scored.is_empty() {
        SweepReport::default()
    } else {
        crate::report::build_report(&inputs.spec, &inputs.examples, &inputs.scored)?
    };
    let mut notes = inputs.notes.clone();
    notes.append(&mut report.notes);
    report.notes = notes;
    Ok(report)
}

/// Writes a sweep's report under `<out_dir>/<sweep>/`: the CSV, `metrics/`, `eval-set/` and
/// `eval-set-scores/` (checkpoints whose texts are stored; one skipped for texts that do not fit
/// its examples is logged).
pub fn write(
    out_dir: &Path,
    sweep: &str,
    inputs: &ReportInputs,
    report: &SweepReport,
) -> anyhow::Result<PathBuf> {
    let dir = crate::report::write_report(out_dir, sweep, report, &inputs.spec.output_csv)?;
    let skipped = crate::report::write_eval_set_scores(
        out_dir,
        sweep,
        &inputs.spec,
        &inputs.examples,
        &inputs.scored,
    )?;
    for reason in skipped {
        tracing::warn!(sweep = %sweep, "{reason}");
    }
    Ok(dir)
}

impl Coordinator {
    /// Sweeps just finished: write their reports in the background, then signal.
    pub fn sweeps_finished(self: &Arc<Self>, sweeps: Vec<String>) {
        if sweeps.is_empty() {
            return;
        }
        let hold = self.hold();
        // not finished until the reports are written
        self.finished.send_replace(false);
        let this = self.clone();
        tokio::spawn(async move {
            let _hold = hold;
            for sweep in sweeps {
                let store = this.store.clone();
                let out_dir = this.out_dir.clone();
                let name = sweep.clone();
                let span = tracing::info_span!(parent: None, "report", sweep = %sweep);
                herd_telemetry::set_parent(&span, this.traces.context(&sweep));
                let written = tokio::task::spawn_blocking(move || {
                    let inputs = store.report_inputs(&name)?;
                    let report = build(&inputs)?;
                    write(&out_dir, &name, &inputs, &report)
                })
                .await;
                match written {
                    Ok(Ok(dir)) => {
                        tracing::info!(sweep = %sweep, dir = %dir.display(), "report written")
                    }
                    Ok(Err(e)) => tracing::warn!(sweep = %sweep, "report not written: {e:#}"),
                    Err(e) => tracing::warn!(sweep = %sweep, "report task: {e}"),
                }
                drop(span);
            }
        });
    }

    /// A coordinator stopped between finishing a sweep and writing its report writes it on
    /// start.
    pub async fn write_missing_reports(self: &Arc<Self>) {
        let sweeps = self.with_store(|s| s.sweeps()).await.unwrap_or_default();
        let missing: Vec<String> = sweeps
            .into_iter()
            .filter(|(_, state)| *state == SweepState::Done)
            .filter(
                |(name, _)| match crate::report::sweep_dir(&self.out_dir, name) {
                    Ok(dir) => !dir.exists(),
                    // a state file written before the rule: its reports stay behind `coord results`
                    Err(e) => {
                        tracing::warn!("no report written at start-up: {e:#}");
                        false
                    }
                },
            )
            .map(|(name, _)| name)
            .collect();
        self.sweeps_finished(missing);
    }

    /// A sweep's report as of now, with what it was built from. A report that cannot be built
    /// (e.g. the CSV needs subsets this evaluation set lacks) still answers: no results, the
    /// store's notes and the reason.
    pub async fn current_report(
        &self,
        sweep: &str,
    ) -> Result<(ReportInputs, SweepReport), AppError> {
        let name = sweep.to_string();
        let inputs = self.with_store(move |s| s.report_inputs(&name)).await?;
        let (inputs, report) = tokio::task::spawn_blocking(move || {
            let report = build(&inputs);
            (inputs, report)
        })
        .await
        .map_err(|e| AppError::Task(format!("report task: {e}")))?;
        let report = report.unwrap_or_else(|e| {
            tracing::warn!(sweep = %sweep, "report not built: {e:#}");
            let mut notes = inputs.notes.clone();
            notes.push(format!("no report: {e:#}"));
            SweepReport {
                notes,
                ..Default::default()
            }
        });
        Ok((inputs, report))
    }
}
