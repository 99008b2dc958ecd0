//! A per-sweep summary a researcher can look at: a Markdown table of every checkpoint (sections,
//! overall score and its confidence interval) and a PNG scatter plot of the overall score
//! against the training budget, one point per checkpoint.
//!
//! The input is a plain list of [`CheckpointSummary`] (name, budget, section scores, overall,
//! interval), so anything that has the numbers (a sweep CSV, metrics.json files, a fresh run)
//! can feed it. Scores are fractions in [0, 1]; both outputs show them ×100, as the leaderboard
//! does.
//!
//! The plot is drawn with `plotters` into an RGB buffer and encoded with `png`. Its text uses
//! DejaVu Sans, embedded in the binary (the `dejavu` crate), so no system font is needed. If the
//! font cannot be registered all the same, the plot is drawn without text and
//! [`PlotReport::warnings`] says so.

use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, GlyphId, PxScale, ScaleFont};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters_backend::{BackendColor, BackendCoord, DrawingErrorKind};

use crate::v1::bootstrap::{Interval, ScoreIntervals};
use crate::v1::{Section, SectionScores};

/// One checkpoint of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointSummary {
    pub name: String,
    /// The training budget (x axis); checkpoints without one are listed in the table but not
    /// plotted.
    pub budget: Option<f64>,
    /// Section scores in display order, e.g. `[("Chat", 0.95), ("Chat Hard", 0.61), ...]`.
    pub sections: Vec<(String, f64)>,
    pub overall: f64,
    /// The overall score's confidence interval.
    pub ci: Option<Interval>,
}

impl CheckpointSummary {
    /// A RewardBench v1 row: the four sections (only those with a subset present), the mean of
    /// the four as overall, and the bootstrap interval of the overall score if given.
    pub fn from_v1(
        name: impl Into<String>,
        budget: Option<f64>,
        scores: &SectionScores,
        intervals: Option<&ScoreIntervals>,
    ) -> CheckpointSummary {
        CheckpointSummary {
            name: name.into(),
            budget,
            sections: Section::ALL
                .iter()
                .filter(|s| scores.has_section(**s))
                .map(|s| (s.name().to_owned(), scores.get(*s)))
                .collect(),
            overall: scores.score(),
            ci: intervals.and_then(|i| i.overall).map(|e| e.interval),
        }
    }
}

/// Checkpoint indices by overall score, best first (NaN last; ties by name).
fn ranking(rows: &[CheckpointSummary]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (rows[a].overall, rows[b].overall);
        match (x.is_nan(), y.is_nan()) {
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => y.total_cmp(&x),
        }
        .then_with(|| rows[a].name.cmp(&rows[b].name))
    });
    order
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else {
        format!("{:.1}", x * 100.0)
    }
}

/// A budget as a person reads it: integers without a fraction, others in the shortest form.
pub fn format_budget(budget: f64) -> String {
    if budget.fract() == 0.0 && budget.abs() < 1e15 {
        format!("{budget:.0}")
    } else {
        format!("{budget}")
    }
}

fn escape_cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// The Markdown table: one row per checkpoint, best overall first, scores ×100 with one
/// decimal, and the overall interval as `[low, high]`. Section columns are the union of the rows'
/// sections in first-seen order; a row without a section shows `-`.
pub fn markdown_table(rows: &[CheckpointSummary]) -> String {
    let mut sections: Vec<&str> = Vec::new();
    for row in rows {
        for (name, _) in &row.sections {
            if !sections.contains(&name.as_str()) {
                sections.push(name);
            }
        }
    }
    let levels: Vec<f64> = rows.iter().filter_map(|r| r.ci.map(|c| c.level)).collect();
    let ci_header = match levels.first() {
        Some(first) if levels.iter().all(|l| l == first) => {
            format!(
                "{} CI",
                format_budget((first * 1000.0).round() / 10.0) + "%"
            )
        }
        _ => "CI".to_owned(),
    };
    let mut out = String::new();
    let mut header = vec!["Rank", "Checkpoint", "Budget"];
    header.extend(sections.iter().copied());
    header.push("Overall");
    header.push(&ci_header);
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let mut align = vec!["---:", ":---", "---:"];
    align.extend(sections.iter().map(|_| "---:"));
    align.push("---:");
    align.push(":---:");
    let _ = writeln!(out, "|{}|", align.join("|"));
    for (rank, &i) in ranking(rows).iter().enumerate() {
        let row = &rows[i];
        let mut cells = vec![
            (rank + 1).to_string(),
            escape_cell(&row.name),
            row.budget.map_or_else(|| "-".to_owned(), format_budget),
        ];
        for section in &sections {
            cells.push(
                row.sections
                    .iter()
                    .find(|(name, _)| name == section)
                    .map_or_else(|| "-".to_owned(), |(_, v)| pct(*v)),
            );
        }
        cells.push(pct(row.overall));
        cells.push(row.ci.map_or_else(
            || "-".to_owned(),
            |c| format!("[{}, {}]", pct(c.low), pct(c.high)),
        ));
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// Plot settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotOptions {
    pub width: u32,
    pub height: u32,
    pub title: String,
    pub x_label: String,
    /// Name every point when there are at most this many (otherwise only the best).
    pub max_point_labels: usize,
    /// Draw text (set to false to get the degraded, text-free plot).
    pub text: bool,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            width: 1200,
            height: 800,
            title: "RewardBench overall score vs budget".into(),
            x_label: "Budget".into(),
            max_point_labels: 12,
            text: true,
        }
    }
}

/// What a plot shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlotReport {
    /// Checkpoints drawn.
    pub plotted: usize,
    /// Checkpoints without a (finite) budget or overall score, not drawn.
    pub skipped: Vec<String>,
    /// Whether the x axis is logarithmic (budgets spanning two orders of magnitude or more).
    pub log_x: bool,
    pub warnings: Vec<String>,
}

/// Why a summary could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing the plot: {0}")]
    Draw(String),
    #[error("encoding the PNG: {0}")]
    Png(String),
}

/// The embedded DejaVu Sans, registered with plotters (tick labels and axis titles) once;
/// `None` if that failed.
fn font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| {
        let bytes = dejavu::sans::regular();
        let registered = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .is_ok()
            && plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold())
                .is_ok();
        registered
            .then(|| FontRef::try_from_slice(bytes).ok())
            .flatten()
    })
    .as_ref()
}

/// Horizontal anchoring of a [`GlyphText`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anchor {
    Left,
    Center,
    Right,
}

/// Text drawn glyph by glyph with ab_glyph, honouring each glyph's side bearings and kerning
/// (plotters' own ab_glyph text places every glyph's bounding box at the pen position, which
/// spaces letters unevenly). `at` is the anchor point; `offset` moves it in pixels; the text's
/// vertical centre sits on the anchor.
struct GlyphText<C> {
    at: C,
    offset: (i32, i32),
    text: String,
    size: f32,
    color: RGBColor,
    anchor: Anchor,
    font: &'static FontRef<'static>,
    /// A translucent box behind the text, so it stays readable over bars and grid lines.
    background: bool,
}

impl<C> GlyphText<C> {
    fn width(&self) -> f32 {
        let font = self.font.as_scaled(PxScale::from(self.size));
        let mut caret = 0.0f32;
        let mut prev: Option<GlyphId> = None;
        for c in self.text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            caret += font.h_advance(id);
            prev = Some(id);
        }
        caret
    }
}

impl<'a, C: 'a> PointCollection<'a, C> for &'a GlyphText<C> {
    type Point = &'a C;
    type IntoIter = std::iter::Once<&'a C>;

    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for GlyphText<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut points: I,
        backend: &mut DB,
        _parent_dim: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x0, y0)) = points.next() else {
            return Ok(());
        };
        let scale = PxScale::from(self.size);
        let font = self.font.as_scaled(scale);
        let width = self.width();
        let left = match self.anchor {
            Anchor::Left => 0.0,
            Anchor::Center => -width / 2.0,
            Anchor::Right => -width,
        };
        let origin_x = (x0 + self.offset.0) as f32 + left;
        // baseline so that the box from ascent to descent is centred on the anchor
        let baseline = (y0 + self.offset.1) as f32 + (font.ascent() + font.descent()) / 2.0;
        if self.background {
            let pad = 3;
            let top = (baseline - font.ascent()) as i32 - pad;
            let bottom = (baseline - font.descent()) as i32 + pad;
            let fill = WHITE.mix(0.85);
            backend.draw_rect(
                (origin_x as i32 - pad, top),
                ((origin_x + width) as i32 + pad, bottom),
                &fill,
                true,
            )?;
        }
        let (r, g, b) = (self.color.0, self.color.1, self.color.2);
        let mut caret = 0.0f32;
        let mut prev: Option<GlyphId> = None;
        for c in self.text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(scale, point(origin_x + caret, baseline));
            caret += font.h_advance(id);
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            let mut pixels = Vec::new();
            outline.draw(|x, y, coverage| {
                if coverage > 0.0 {
                    pixels.push((
                        bounds.min.x as i32 + x as i32,
                        bounds.min.y as i32 + y as i32,
                        coverage,
                    ));
                }
            });
            for (x, y, coverage) in pixels {
                backend.draw_pixel(
                    (x, y),
                    BackendColor {
                        alpha: f64::from(coverage.min(1.0)),
                        rgb: (r, g, b),
                    },
                )?;
            }
        }
        Ok(())
    }
}

const BLUE: RGBColor = RGBColor(0, 114, 178);
const ORANGE: RGBColor = RGBColor(213, 94, 0);
const GREY: RGBColor = RGBColor(120, 120, 120);

struct Point<'a> {
    name: &'a str,
    x: f64,
    y: f64,
    ci: Option<(f64, f64)>,
    best: bool,
}

fn padded(lo: f64, hi: f64, fraction: f64, fallback: f64) -> (f64, f64) {
    if hi > lo {
        let pad = (hi - lo) * fraction;
        (lo - pad, hi + pad)
    } else {
        (lo - fallback, hi + fallback)
    }
}

fn truncate(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_owned()
    } else {
        let head: String = name.chars().take(max - 1).collect();
        format!("{head}…")
    }
}

/// Renders the plot to PNG bytes.
pub fn render_png(
    rows: &[CheckpointSummary],
    options: &PlotOptions,
) -> Result<(Vec<u8>, PlotReport), SummaryError> {
    let mut report = PlotReport::default();
    let font = if options.text { font() } else { None };
    if options.text && font.is_none() {
        report
            .warnings
            .push("the embedded font could not be loaded: the plot has no text".into());
    }
    let best = ranking(rows)
        .first()
        .copied()
        .filter(|&i| !rows[i].overall.is_nan());
    let mut points = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        match row.budget {
            Some(x) if x.is_finite() && row.overall.is_finite() => points.push(Point {
                name: &row.name,
                x,
                y: row.overall * 100.0,
                ci: row
                    .ci
                    .filter(|c| c.low.is_finite() && c.high.is_finite())
                    .map(|c| (c.low * 100.0, c.high * 100.0)),
                best: best == Some(i),
            }),
            _ => report.skipped.push(row.name.clone()),
        }
    }
    report.plotted = points.len();
    if !report.skipped.is_empty() {
        report.warnings.push(format!(
            "{} checkpoint(s) without a budget or score are not plotted",
            report.skipped.len()
        ));
    }

    let (x_min, x_max) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.x), b.max(p.x))
        });
    let y_lo = points
        .iter()
        .map(|p| p.ci.map_or(p.y, |c| c.0.min(p.y)))
        .fold(f64::INFINITY, f64::min);
    let y_hi = points
        .iter()
        .map(|p| p.ci.map_or(p.y, |c| c.1.max(p.y)))
        .fold(f64::NEG_INFINITY, f64::max);
    let (y_lo, y_hi) = if points.is_empty() {
        (0.0, 100.0)
    } else {
        let (lo, hi) = padded(y_lo, y_hi, 0.12, 2.0);
        (lo.max(0.0), hi.min(100.0))
    };
    report.log_x = !points.is_empty() && x_min > 0.0 && x_max / x_min >= 100.0;

    let (w, h) = (options.width, options.height);
    let mut buffer = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut notes = Vec::new();
        if points.is_empty() {
            notes.push("no checkpoint has a budget: nothing to plot".to_owned());
        } else if !report.skipped.is_empty() {
            notes.push(format!(
                "{} checkpoint(s) without a budget not shown",
                report.skipped.len()
            ));
        }
        if points.iter().any(|p| p.ci.is_some()) {
            notes.push("bars: confidence interval of the overall score".to_owned());
        }
        let setup = Setup {
            points: &points,
            font,
            options,
            notes,
            log_x: report.log_x,
        };
        let y_range = y_lo..y_hi;
        if report.log_x {
            let (lo, hi) = (x_min / 1.4, x_max * 1.4);
            draw(&root, (lo..hi).log_scale(), (lo, hi), y_range, &setup)?;
        } else if points.is_empty() {
            draw(&root, 0.0..1.0, (0.0, 1.0), y_range, &setup)?;
        } else {
            let (lo, hi) = padded(x_min, x_max, 0.08, x_min.abs().max(1.0) * 0.5);
            draw(&root, lo..hi, (lo, hi), y_range, &setup)?;
        }
        root.present().map_err(draw_err)?;
    }
    let png = encode_png(&buffer, w, h)?;
    Ok((png, report))
}

struct Setup<'a> {
    points: &'a [Point<'a>],
    /// `None`: draw no text.
    font: Option<&'static FontRef<'static>>,
    options: &'a PlotOptions,
    notes: Vec<String>,
    log_x: bool,
}

fn draw_err<E: std::fmt::Display>(err: E) -> SummaryError {
    SummaryError::Draw(err.to_string())
}

fn draw<DB, X>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    x_spec: X,
    x_bounds: (f64, f64),
    y_range: Range<f64>,
    setup: &Setup<'_>,
) -> Result<(), SummaryError>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let options = setup.options;
    let (w, h) = root.dim_in_pixel();
    let text = |at: (i32, i32), s: String, size: f32, color: RGBColor, anchor: Anchor| {
        setup.font.map(|font| GlyphText {
            at,
            offset: (0, 0),
            text: s,
            size,
            color,
            anchor,
            font,
            background: false,
        })
    };
    let mut builder = ChartBuilder::on(root);
    if setup.font.is_some() {
        builder
            .margin_left(24)
            .margin_right(40)
            .margin_top(70)
            .margin_bottom(44)
            .x_label_area_size(60)
            .y_label_area_size(84);
    } else {
        builder.margin(24);
    }
    let mut chart = builder
        .build_cartesian_2d(x_spec, y_range)
        .map_err(draw_err)?;

    if setup.font.is_some() {
        let y_fmt = |y: &f64| format!("{y:.0}");
        let x_fmt = |x: &f64| format_budget(round_label(*x));
        chart
            .configure_mesh()
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(205, 205, 205))
            .x_desc(&options.x_label)
            .y_desc("Overall (score ×100)")
            .axis_desc_style(("sans-serif", 22))
            .label_style(("sans-serif", 18))
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(draw_err)?;
    } else {
        // no font: a frame instead of the mesh (whose labels need one)
        let area = chart.plotting_area().strip_coord_spec();
        let (px, py) = area.dim_in_pixel();
        area.draw(&Rectangle::new(
            [(0, 0), (px as i32 - 1, py as i32 - 1)],
            GREY.stroke_width(1),
        ))
        .map_err(draw_err)?;
    }

    // interval bars, then points on top
    for p in setup.points {
        if let Some((lo, hi)) = p.ci {
            let color = if p.best { ORANGE } else { BLUE };
            let style = color.mix(0.6).stroke_width(2);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(p.x, lo), (p.x, hi)],
                    style,
                )))
                .map_err(draw_err)?;
            for y in [lo, hi] {
                let cap =
                    EmptyElement::at((p.x, y)) + PathElement::new(vec![(-6, 0), (6, 0)], style);
                chart.draw_series(std::iter::once(cap)).map_err(draw_err)?;
            }
        }
    }
    for p in setup.points {
        let (color, size) = if p.best { (ORANGE, 8) } else { (BLUE, 6) };
        chart
            .draw_series(std::iter::once(Circle::new(
                (p.x, p.y),
                size,
                color.filled(),
            )))
            .map_err(draw_err)?;
    }

    let Some(font) = setup.font else {
        return Ok(());
    };
    // point labels: right of the point, or left of it in the right third of the plot
    let label_all = setup.points.len() <= options.max_point_labels;
    let (x_lo, x_hi) = x_bounds;
    for p in setup.points.iter().filter(|p| label_all || p.best) {
        let frac = if setup.log_x {
            (p.x.ln() - x_lo.ln()) / (x_hi.ln() - x_lo.ln())
        } else {
            (p.x - x_lo) / (x_hi - x_lo)
        };
        let (anchor, dx) = if frac > 0.66 {
            (Anchor::Right, -12)
        } else {
            (Anchor::Left, 12)
        };
        let (color, label) = if p.best {
            (ORANGE, format!("{}  {:.1}", truncate(p.name, 36), p.y))
        } else {
            (GREY, truncate(p.name, 36))
        };
        chart
            .draw_series(std::iter::once(GlyphText {
                at: (p.x, p.y),
                offset: (dx, -14),
                text: label,
                size: 16.0,
                color,
                anchor,
                font,
                background: true,
            }))
            .map_err(draw_err)?;
    }
    let title = text(
        (w as i32 / 2, 34),
        options.title.clone(),
        28.0,
        RGBColor(30, 30, 30),
        Anchor::Center,
    );
    let notes = text(
        (w as i32 - 40, h as i32 - 20),
        setup.notes.join("   ·   "),
        15.0,
        GREY,
        Anchor::Right,
    );
    for element in [title, notes].into_iter().flatten() {
        if !element.text.is_empty() {
            root.draw(&element).map_err(draw_err)?;
        }
    }
    Ok(())
}

/// Tick values shown with at most 4 significant digits, so log-scale ticks read `1000`, not
/// `999.9999999`.
fn round_label(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 4 - 1 - x.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, SummaryError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| SummaryError::Png(e.to_string()))?;
        writer
            .write_image_data(rgb)
            .map_err(|e| SummaryError::Png(e.to_string()))?;
    }
    Ok(out)
}

/// Writes the plot to `path`.
pub fn write_png(
    rows: &[CheckpointSummary],
    path: &Path,
    options: &PlotOptions,
) -> Result<PlotReport, SummaryError> {
    let (png, report) = render_png(rows, options)?;
    std::fs::write(path, png).map_err(|source| SummaryError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(report)
}

/// The files [`write_summary`] writes.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryFiles {
    pub markdown: PathBuf,
    pub png: PathBuf,
    pub report: PlotReport,
}

/// Writes `summary.md` (a heading, the plot's image link and the table) and
/// `overall_vs_budget.png` into `dir` (created if needed).
pub fn write_summary(
    dir: &Path,
    title: &str,
    rows: &[CheckpointSummary],
) -> Result<SummaryFiles, SummaryError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| SummaryError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let png = dir.join("overall_vs_budget.png");
    let options = PlotOptions {
        title: format!("{title}: overall score vs budget"),
        ..PlotOptions::default()
    };
    let report = write_png(rows, &png, &options)?;
    let markdown = dir.join("summary.md");
    let mut text = format!("# {title}\n\n");
    let _ = writeln!(
        text,
        "{} checkpoints; scores ×100, best overall first.\n",
        rows.len()
    );
    text.push_str("![Overall score against budget](overall_vs_budget.png)\n\n");
    text.push_str(&markdown_table(rows));
    for warning in &report.warnings {
        let _ = write!(text, "\nNote: {warning}.\n");
    }
    let mut file = std::fs::File::create(&markdown).map_err(io(&markdown))?;
    file.write_all(text.as_bytes()).map_err(io(&markdown))?;
    Ok(SummaryFiles {
        markdown,
        png,
        report,
    })
}
