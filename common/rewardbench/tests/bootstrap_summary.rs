//! Bootstrap confidence intervals and the per-sweep summary (Markdown table golden, PNG plot).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use herd_rewardbench::summary::{
    markdown_table, render_png, write_summary, CheckpointSummary, PlotOptions,
};
use herd_rewardbench::v1::bootstrap::{
    bootstrap_v1, outcomes_by_subset, BootstrapConfig, Interval,
};
use herd_rewardbench::v1::{
    section_scores, subset_accuracies, Section, XstestWeighting, EXAMPLE_COUNTS,
    FILTERED_ROW_COUNTS,
};

/// Deterministic synthetic wins: subset `s` has `rows` examples and accuracy about `p`.
fn synthetic(scale: f64, seed: u64) -> BTreeMap<String, Vec<bool>> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut results = Vec::new();
    for (k, (subset, rows)) in FILTERED_ROW_COUNTS.iter().enumerate() {
        let p = 0.55 + 0.4 * ((k * 7) % 10) as f64 / 10.0;
        let n = ((*rows as f64) * scale).round().max(2.0) as usize;
        for _ in 0..n {
            results.push((subset.to_string(), next() < p));
        }
    }
    outcomes_by_subset(results)
}

#[test]
fn bootstrap_is_deterministic_and_covers_the_point_estimate() {
    let outcomes = synthetic(1.0, 7);
    let config = BootstrapConfig::default();
    let a = bootstrap_v1(&outcomes, &config);
    let b = bootstrap_v1(&outcomes, &config);
    assert_eq!(a, b, "same seed, same intervals");
    let c = bootstrap_v1(&outcomes, &BootstrapConfig { seed: 99, ..config });
    assert_ne!(a.overall, c.overall, "another seed, other replicates");

    // point estimates are the reference's numbers
    let accs = subset_accuracies(
        outcomes
            .iter()
            .flat_map(|(s, wins)| wins.iter().map(move |w| (s.clone(), *w))),
    );
    let point = section_scores(&accs, XstestWeighting::Current);
    let overall = a.overall.unwrap();
    assert_eq!(overall.value, point.score());
    for section in Section::ALL {
        let e = a.section(section).unwrap();
        assert_eq!(e.value, point.get(section));
        assert!(e.interval.contains(e.value), "{section}: {e:?}");
        assert!(e.interval.low >= 0.0 && e.interval.high <= 1.0);
        assert!(e.interval.width() > 0.0);
        assert_eq!(e.interval.level, 0.95);
    }
    assert!(overall.interval.contains(overall.value), "{overall:?}");
    assert!(overall.interval.width() < 0.06, "{overall:?}");
    for (subset, e) in &a.subsets {
        assert!(e.interval.contains(e.value), "{subset}: {e:?}");
    }
    assert_eq!(a.subsets.len(), EXAMPLE_COUNTS.len());
}

#[test]
fn intervals_shrink_with_more_examples() {
    let config = BootstrapConfig::default();
    let small = bootstrap_v1(&synthetic(0.25, 3), &config);
    let large = bootstrap_v1(&synthetic(4.0, 3), &config);
    let width =
        |s: &herd_rewardbench::v1::bootstrap::ScoreIntervals| s.overall.unwrap().interval.width();
    assert!(
        width(&large) < 0.7 * width(&small),
        "{} vs {}",
        width(&large),
        width(&small)
    );
    for section in Section::ALL {
        let w = |s: &herd_rewardbench::v1::bootstrap::ScoreIntervals| {
            s.section(section).unwrap().interval.width()
        };
        assert!(w(&large) < w(&small), "{section}");
    }
}

#[test]
fn all_wins_gives_a_degenerate_interval() {
    let outcomes: BTreeMap<String, Vec<bool>> = FILTERED_ROW_COUNTS
        .iter()
        .map(|(s, n)| (s.to_string(), vec![true; *n as usize]))
        .collect();
    let r = bootstrap_v1(&outcomes, &BootstrapConfig::default());
    let overall = r.overall.unwrap();
    assert_eq!(overall.value, 1.0);
    assert_eq!((overall.interval.low, overall.interval.high), (1.0, 1.0));
    for section in Section::ALL {
        let i = r.section(section).unwrap().interval;
        assert_eq!((i.low, i.high), (1.0, 1.0));
    }
}

#[test]
fn partial_results_have_no_overall_interval() {
    let outcomes = outcomes_by_subset([
        ("hep-go", true),
        ("hep-go", false),
        ("math-prm", true),
        ("shp", true),
    ]);
    let r = bootstrap_v1(
        &outcomes,
        &BootstrapConfig {
            resamples: 200,
            ..Default::default()
        },
    );
    assert!(r.overall.is_none());
    assert!(r.section(Section::Chat).is_none());
    assert!(r.section(Section::Reasoning).is_some());
    // a prior set is resampled but not part of any section
    assert!(r.subsets.contains_key("shp"));
}

fn ci(low: f64, high: f64) -> Option<Interval> {
    Some(Interval {
        low,
        high,
        level: 0.95,
    })
}

fn sweep() -> Vec<CheckpointSummary> {
    let sections = |c: f64, ch: f64, s: f64, r: f64| {
        vec![
            ("Chat".to_string(), c),
            ("Chat Hard".to_string(), ch),
            ("Safety".to_string(), s),
            ("Reasoning".to_string(), r),
        ]
    };
    let row =
        |name: &str, budget: Option<f64>, s: [f64; 4], ci_: Option<Interval>| CheckpointSummary {
            name: name.into(),
            budget,
            sections: sections(s[0], s[1], s[2], s[3]),
            overall: (s[0] + s[1] + s[2] + s[3]) / 4.0,
            ci: ci_,
        };
    vec![
        row(
            "ID__a1__SWAPS_0",
            Some(0.0),
            [0.912, 0.441, 0.702, 0.655],
            ci(0.652, 0.703),
        ),
        row(
            "ID__b2__SWAPS_1000",
            Some(1000.0),
            [0.934, 0.503, 0.781, 0.701],
            ci(0.703, 0.752),
        ),
        row(
            "ID__c3__SWAPS_2500",
            Some(2500.0),
            [0.941, 0.552, 0.804, 0.742],
            ci(0.735, 0.785),
        ),
        row(
            "ID__d4__SWAPS_5000",
            Some(5000.0),
            [0.955, 0.571, 0.822, 0.768],
            ci(0.754, 0.803),
        ),
        row(
            "ID__e5__SWAPS_7500",
            Some(7500.0),
            [0.949, 0.603, 0.815, 0.771],
            ci(0.761, 0.808),
        ),
        row(
            "ID__f6__SWAPS_10000",
            Some(10000.0),
            [0.962, 0.589, 0.848, 0.779],
            ci(0.769, 0.820),
        ),
        row("base|model (no budget)", None, [0.9, 0.4, 0.6, 0.5], None),
        CheckpointSummary {
            name: "partial".into(),
            budget: Some(0.25),
            sections: vec![("Chat".into(), 0.5)],
            overall: f64::NAN,
            ci: None,
        },
    ]
}

fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/summary")
        .join(rel)
}

#[test]
fn markdown_table_golden() {
    let table = markdown_table(&sweep());
    let path = golden("table.md");
    if std::env::var_os("HERD_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &table).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(table, expected, "\n{table}");
}

fn decode(png_bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info, buf)
}

fn count_color(rgb: &[u8], color: [u8; 3]) -> usize {
    rgb.chunks_exact(3).filter(|p| *p == color).count()
}

#[test]
fn summary_files_and_png() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sweep-summary");
    let files = write_summary(&dir, "demo sweep", &sweep()).unwrap();
    assert_eq!(files.report.plotted, 6);
    assert_eq!(
        files.report.skipped,
        vec!["base|model (no budget)", "partial"]
    );
    assert!(!files.report.log_x);
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(md.starts_with("# demo sweep\n\n8 checkpoints"));
    assert!(md.contains("![Overall score against budget](overall_vs_budget.png)"));
    assert!(md.contains(&markdown_table(&sweep())));

    let bytes = std::fs::read(&files.png).unwrap();
    let (info, rgb) = decode(&bytes);
    assert_eq!((info.width, info.height), (1200, 800));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    // the points are drawn: blue ones and one orange (best) one
    assert!(count_color(&rgb, [0, 114, 178]) > 500);
    assert!(count_color(&rgb, [213, 94, 0]) > 100);
    // text is drawn: dark label pixels exist
    assert!(
        rgb.chunks_exact(3)
            .filter(|p| p[0] < 60 && p[1] < 60 && p[2] < 60)
            .count()
            > 1000
    );
}

#[test]
fn plot_without_text_and_log_scale() {
    let mut rows = sweep();
    for (i, row) in rows.iter_mut().enumerate() {
        row.budget = row.budget.map(|_| 10f64.powi(i as i32 + 1));
    }
    let options = PlotOptions {
        width: 640,
        height: 400,
        text: false,
        ..Default::default()
    };
    let (bytes, report) = render_png(&rows, &options).unwrap();
    assert!(report.log_x);
    assert_eq!(report.plotted, 6);
    let (info, rgb) = decode(&bytes);
    assert_eq!((info.width, info.height), (640, 400));
    assert!(count_color(&rgb, [0, 114, 178]) > 100);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(out.join("plot-no-text.png"), &bytes).unwrap();

    // log scale with text: budgets 10 .. 1e6
    let (bytes, report) = render_png(&rows, &PlotOptions::default()).unwrap();
    assert!(report.log_x);
    std::fs::write(out.join("plot-log.png"), &bytes).unwrap();

    // nothing to plot: still a valid image
    let (bytes, report) = render_png(&rows[6..7], &PlotOptions::default()).unwrap();
    assert_eq!(report.plotted, 0);
    assert_eq!(decode(&bytes).0.width, 1200);
    let (bytes, _) = render_png(&[], &PlotOptions::default()).unwrap();
    assert_eq!(decode(&bytes).0.height, 800);
}
