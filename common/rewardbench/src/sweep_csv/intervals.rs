//! The sweep CSV with bootstrap confidence intervals per section, beyond the reference script.
//!
//! A sweep row only carries per-subset accuracies, but outcomes are binary: resampling a
//! subset's rows with replacement is resampling `round(accuracy × rows)` wins among its `rows`
//! (the `filtered` split's counts), so the row-level bootstrap of [`crate::v1::bootstrap`] applies
//! exactly to what metrics.json keeps.

use std::collections::BTreeMap;

use super::table::{Cell, Column, ColumnKind, SweepTable};
use super::SweepError;
use crate::v1::bootstrap::{bootstrap_v1, BootstrapConfig, Estimate};
use crate::v1::{filtered_row_count, Section, SUBSETS};

/// The binary outcomes a subset accuracy stands for.
fn outcomes(subset: &str, accuracy: f64) -> Option<Vec<bool>> {
    let rows = filtered_row_count(subset)? as usize;
    let wins = (accuracy * rows as f64).round().clamp(0.0, rows as f64) as usize;
    Some((0..rows).map(|i| i < wins).collect())
}

/// Appends `<Section> CI low` / `<Section> CI high` for the four sections and Overall, after
/// every column of `table` (so the reference layout stays a prefix of each line).
pub fn with_confidence_intervals(
    table: &SweepTable,
    config: &BootstrapConfig,
) -> Result<SweepTable, SweepError> {
    let subset_columns: Vec<(&str, &Column)> = SUBSETS
        .iter()
        .filter_map(|&subset| Some((subset, table.column(subset)?)))
        .collect();
    let names: Vec<&str> = Section::ALL
        .iter()
        .map(|s| s.name())
        .chain(["Overall"])
        .collect();
    let mut low = vec![Vec::with_capacity(table.num_rows()); names.len()];
    let mut high = vec![Vec::with_capacity(table.num_rows()); names.len()];
    for row in 0..table.num_rows() {
        let mut by_subset = BTreeMap::new();
        for (subset, column) in &subset_columns {
            if let Some(accuracy) = column.cells[row].as_f64() {
                let wins = outcomes(subset, accuracy).ok_or_else(|| SweepError::Frame {
                    reason: format!("subset {subset} has no known row count"),
                })?;
                by_subset.insert(subset.to_string(), wins);
            }
        }
        let intervals = bootstrap_v1(&by_subset, config);
        let estimates: Vec<Option<Estimate>> = Section::ALL
            .iter()
            .map(|&s| intervals.section(s))
            .chain([intervals.overall])
            .collect();
        for (i, estimate) in estimates.into_iter().enumerate() {
            let cell = |x: fn(&Estimate) -> f64| {
                estimate
                    .as_ref()
                    .map_or(Cell::Missing, |e| Cell::Float(x(e)))
            };
            low[i].push(cell(|e| e.interval.low));
            high[i].push(cell(|e| e.interval.high));
        }
    }
    let mut out = table.clone();
    for ((name, low), high) in names.iter().zip(low).zip(high) {
        for (bound, cells) in [("low", low), ("high", high)] {
            out.columns.push(Column {
                name: format!("{name} CI {bound}"),
                kind: ColumnKind::Float64,
                cells,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_reproduce_the_accuracy() {
        let wins = outcomes("math-prm", 446.0 / 447.0).unwrap();
        assert_eq!(wins.len(), 447);
        assert_eq!(wins.iter().filter(|w| **w).count(), 446);
        assert!(outcomes("not-a-subset", 0.5).is_none());
    }
}
