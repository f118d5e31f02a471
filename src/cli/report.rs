//! `vqgrad report`: statistics across seeds for every setting and estimator, Welch's t-tests between estimators,
//! plots, `report.md` and `summary.json`.

use anyhow::Context;
use plotters::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vqgrad::analysis::{Summary, summarize, welch_p};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Results files (JSON Lines from `sweep`); several are merged, a run present twice counts once.
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Directory for report.md, summary.json and the plots.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    /// Print the seed's claims table computed from the results (as the README quotes it) and write nothing.
    #[arg(long)]
    pub claims: bool,
}

/// Every metric reported, in order.
pub const METRICS: &[&str] = &[
    "dead_codes",
    "usage",
    "entropy",
    "perplexity",
    "recon_mse",
    "quant_err",
    "purity",
    "subspace_err",
    "batch_usage",
    "lloyd_dist",
    "loss",
    "steps_per_sec",
    "wall_s",
];

/// One finished run from a results file.
#[derive(Clone, Debug)]
pub struct Run {
    pub config: Value,
    pub metrics: Value,
    pub curve: Vec<Value>,
    /// The step at which the run diverged (`"status": "diverged"`); its metrics are left out of the means and
    /// counted in the table's `diverged` row instead.
    pub diverged_at: Option<u64>,
}

impl Run {
    pub fn estimator(&self) -> String {
        self.config["estimator"].as_str().unwrap_or("?").to_string()
    }
    pub fn metric(&self, name: &str) -> f64 {
        if self.diverged_at.is_some() {
            return f64::NAN;
        }
        self.metrics[name].as_f64().unwrap_or(f64::NAN)
    }
    /// The quantizer's rate in nats: the entropy of the codes, summed over residual VQ's levels (each level's
    /// entropy bounds its share of the tuple's).
    pub fn rate(&self) -> f64 {
        match self.metrics["levels"].as_array().filter(|_| self.diverged_at.is_none()) {
            Some(levels) => levels.iter().map(|l| l["entropy"].as_f64().unwrap_or(f64::NAN)).sum(),
            None => self.metric("entropy"),
        }
    }
}

/// The runs of several results files; duplicates (the same configuration) count once; lines that are not runs
/// are reported and skipped. A file that cannot be read, or whose lines are all something else than runs, is bad
/// input, named in one line.
pub fn load_runs(files: &[PathBuf]) -> anyhow::Result<Vec<Run>> {
    let mut seen = BTreeSet::new();
    let mut runs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vqgrad::Error::Input(format!("{}: cannot read: {e}", path.display())))?;
        let ends_clean = text.ends_with('\n') || text.is_empty();
        let lines: Vec<&str> = text.lines().collect();
        let (mut found, mut skipped) = (0usize, Vec::new());
        for (n, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v["config"].is_object() && v["metrics"].is_object() => {
                    found += 1;
                    if seen.insert(super::sweep::key(&v["config"])) {
                        runs.push(Run::from_line(&v));
                    }
                }
                _ if n + 1 == lines.len() && !ends_clean => {
                    skipped.push(format!("{}: ignoring a truncated last line", path.display()))
                }
                _ => skipped.push(format!("{}: line {} is not a run; skipped", path.display(), n + 1)),
            }
        }
        if found == 0 && !skipped.is_empty() {
            let message = format!("{}: not a vqgrad results file: no line is a run", path.display());
            return Err(vqgrad::Error::Input(message).into());
        }
        skipped.iter().for_each(|line| eprintln!("{line}"));
    }
    Ok(runs)
}

impl Run {
    /// One results line as a run.
    fn from_line(v: &Value) -> Run {
        Run {
            config: v["config"].clone(),
            metrics: v["metrics"].clone(),
            curve: v["curve"].as_array().cloned().unwrap_or_default(),
            diverged_at: (v["status"] == "diverged").then(|| v["diverged_at"].as_u64().unwrap_or(0)),
        }
    }
}

/// `config` flattened to dotted keys (`data.sigma`), without `seed` and `estimator`.
fn setting(config: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string().trim_matches('"').to_string());
            }
        }
    }
    walk("", config, &mut out);
    out.remove("seed");
    out.remove("estimator");
    out
}

/// Runs with the same setting (all but seed and estimator), split by estimator.
#[derive(Clone, Debug)]
pub struct Group {
    pub setting: BTreeMap<String, String>,
    pub by_estimator: BTreeMap<String, Vec<Run>>,
}

pub fn groups(runs: &[Run]) -> Vec<Group> {
    let mut map: BTreeMap<BTreeMap<String, String>, BTreeMap<String, Vec<Run>>> = BTreeMap::new();
    for run in runs {
        map.entry(setting(&run.config)).or_default().entry(run.estimator()).or_default().push(run.clone());
    }
    map.into_iter().map(|(setting, by_estimator)| Group { setting, by_estimator }).collect()
}

/// The setting keys whose values differ between groups (with the data kind always), for short labels.
fn varying(groups: &[Group]) -> Vec<String> {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    if let Some(first) = groups.first() {
        for g in groups {
            for (k, v) in &g.setting {
                if first.setting.get(k) != Some(v) {
                    keys.insert(k.clone());
                }
            }
        }
    }
    keys.insert("data.kind".into());
    keys.into_iter().collect()
}

fn label(g: &Group, keys: &[String]) -> String {
    keys.iter().filter_map(|k| g.setting.get(k).map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(", ")
}

fn fmt_summary(s: &Summary) -> String {
    if s.n == 0 {
        return "-".into();
    }
    if s.n < 2 {
        return format!("{:.4} (n=1)", s.mean);
    }
    format!("{:.4} ± {:.4} [±{:.4}]", s.mean, s.std, s.ci95)
}

fn fmt_p(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 1e-4 => format!("{p:.1e}"),
        Some(p) => format!("{p:.4}"),
        None => "-".into(),
    }
}

/// A named series of (x, mean, error half-width) points.
pub type Series = (String, Vec<(f64, f64, f64)>);

/// A plot's x axis: its label, and whether its values are drawn on a log2 scale (K, which doubles from point to
/// point).
pub struct XAxis<'a> {
    pub label: &'a str,
    pub log2: bool,
}

impl<'a> From<&'a str> for XAxis<'a> {
    fn from(label: &'a str) -> Self {
        XAxis { label, log2: false }
    }
}

/// One colour per series name in every plot: the estimators (and variants named after them, "ste + adaptive
/// beta") in a fixed order from a colour-blind-safe palette (Okabe and Ito), other names hashed into plotters'
/// 99 colours.
pub fn series_color(name: &str) -> RGBColor {
    const OKABE_ITO: [RGBColor; 7] = [
        RGBColor(0, 114, 178),   // blue
        RGBColor(213, 94, 0),    // vermillion
        RGBColor(0, 158, 115),   // green
        RGBColor(204, 121, 167), // purple
        RGBColor(230, 159, 0),   // orange
        RGBColor(86, 180, 233),  // sky blue
        RGBColor(0, 0, 0),       // black
    ];
    if let Some(i) = vqgrad::Estimator::ALL.iter().position(|e| e.name() == name) {
        return OKABE_ITO[i % OKABE_ITO.len()];
    }
    // FNV-1a: the same name gets the same colour in every plot and every run of the tool.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let c = Palette99::pick(hash as usize % 99).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// A line plot: one series per name of (x, mean, error half-width), each in its [`series_color`], the interval
/// drawn as a band (an error bar where a series has one point). Writes `stem.svg` and `stem.png`.
pub fn line_plot<'a>(
    stem: &Path,
    title: &str,
    x_axis: impl Into<XAxis<'a>>,
    y_label: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    let x_axis = x_axis.into();
    let series: Vec<Series> = if x_axis.log2 {
        series.iter().map(|(n, p)| (n.clone(), p.iter().map(|&(x, y, e)| (x.log2(), y, e)).collect())).collect()
    } else {
        series.to_vec()
    };
    let points = series.iter().flat_map(|(_, p)| p.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, e) in points {
        let e = if e.is_finite() { e } else { 0.0 };
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y - e), y1.max(y + e));
    }
    if x0 > x1 {
        return Ok(()); // nothing finite to draw
    }
    let pad = |a: f64, b: f64| if b > a { (b - a) * 0.05 } else { a.abs().max(1.0) * 0.05 };
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))?;
        let x_ticks = |v: &f64| if x_axis.log2 { format!("{}", 2f64.powf(*v).round()) } else { format!("{v}") };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_axis.label).y_desc(y_label);
        if x_axis.log2 {
            mesh.x_label_formatter(&x_ticks).x_labels(((x1 - x0).round() as usize + 1).clamp(2, 12));
        }
        mesh.draw()?;
        for (name, pts) in &series {
            let color = series_color(name).to_rgba();
            let pts: Vec<(f64, f64, f64)> = pts.iter().copied().filter(|p| p.1.is_finite()).collect();
            let err = |p: &(f64, f64, f64)| if p.2.is_finite() && p.2 > 0.0 { p.2 } else { 0.0 };
            if pts.len() > 1 && pts.iter().any(|p| err(p) > 0.0) {
                // The interval as a band under the line: upper edge left to right, lower edge back.
                let edge = pts.iter().map(|p| (p.0, p.1 + err(p))).chain(pts.iter().rev().map(|p| (p.0, p.1 - err(p))));
                chart.draw_series(std::iter::once(Polygon::new(edge.collect::<Vec<_>>(), color.mix(0.18).filled())))?;
            } else {
                let bars = pts.iter().filter(|p| err(p) > 0.0);
                chart.draw_series(
                    bars.map(|&(x, y, e)| ErrorBar::new_vertical(x, y - e, y, y + e, color.filled(), 6)),
                )?;
            }
            chart
                .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&(x, y, _)| Circle::new((x, y), 3, color.filled())))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
    }
    std::fs::write(stem.with_extension("svg"), &svg)?;
    svg_to_png(&svg, &stem.with_extension("png"))
}

/// A chart with a caption and a light mesh on `area`, for panels drawn by hand.
pub fn chart_on<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> anyhow::Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(36)
        .build_cartesian_2d(x, y)?;
    chart.configure_mesh().disable_mesh().draw()?;
    Ok(chart)
}

/// Renders SVG text to a PNG with resvg (system fonts for the labels; without any, the text is left out).
pub fn svg_to_png(svg: &str, path: &Path) -> anyhow::Result<()> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_system_fonts();
    // The plots ask for "sans-serif": map it to a face this machine has (DejaVu Sans where present).
    let families: Vec<String> =
        fonts.faces().filter_map(|f| f.families.first().map(|(name, _)| name.clone())).collect();
    if let Some(family) = families.iter().find(|f| f.as_str() == "DejaVu Sans").or(families.first()) {
        fonts.set_sans_serif_family(family.clone());
    }
    let tree = usvg::Tree::from_str(svg, &options)?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).context("allocating the PNG's pixels")?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.save_png(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The summaries, tests and plots of a set of runs, written to `out`. Returns the summary JSON.
pub fn write_report(runs: &[Run], out: &Path, sources: &[PathBuf]) -> anyhow::Result<Value> {
    super::output::ensure_dir(out, "--out")?;
    let groups = groups(runs);
    let keys = varying(&groups);
    let mut md = String::new();
    writeln!(md, "# vqgrad report\n")?;
    let names: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    writeln!(md, "{} runs in {} settings, from {}.\n", runs.len(), groups.len(), names.join(", "))?;
    writeln!(
        md,
        "Each cell: mean ± sample std [± half-width of the 95% confidence interval of the mean, Student's t] over \
         seeds. p: Welch's two-sided t-test between two estimators.\n"
    )?;
    let mut summary_groups = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        summary_groups.push(setting_section(&mut md, g, gi, &keys, out)?);
    }
    sweeps_section(&mut md, &groups, out)?;
    let summary = json!({ "runs": runs.len(), "sources": names, "groups": summary_groups });
    std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    std::fs::write(out.join("report.md"), md)?;
    Ok(summary)
}

/// One setting's section: the table of every metric per estimator, the Welch p-values and the training curves.
/// Returns the setting's summary JSON.
fn setting_section(md: &mut String, g: &Group, gi: usize, keys: &[String], out: &Path) -> anyhow::Result<Value> {
    writeln!(md, "## Setting {}: {}\n", gi + 1, label(g, keys))?;
    let estimators: Vec<&String> = g.by_estimator.keys().collect();
    writeln!(
        md,
        "| metric | {} |",
        estimators.iter().map(|e| format!("{e} (n={})", g.by_estimator[*e].len())).collect::<Vec<_>>().join(" | ")
    )?;
    writeln!(md, "|---|{}", "---|".repeat(estimators.len()))?;
    let mut est_json = serde_json::Map::new();
    let mut tests = serde_json::Map::new();
    for metric in METRICS {
        let values: Vec<Vec<f64>> =
            estimators.iter().map(|e| g.by_estimator[*e].iter().map(|r| r.metric(metric)).collect()).collect();
        if values.iter().all(|v| v.iter().all(|x| !x.is_finite())) {
            continue; // e.g. purity without labels
        }
        let sums: Vec<Summary> = values.iter().map(|v| summarize(v)).collect();
        writeln!(md, "| {metric} | {} |", sums.iter().map(fmt_summary).collect::<Vec<_>>().join(" | "))?;
        for (e, s) in estimators.iter().zip(&sums) {
            est_json.entry(e.to_string()).or_insert_with(|| json!({}))[*metric] = serde_json::to_value(s)?;
        }
        let mut pairs = serde_json::Map::new();
        for a in 0..estimators.len() {
            for b in a + 1..estimators.len() {
                pairs.insert(format!("{} vs {}", estimators[a], estimators[b]), json!(welch_p(&values[a], &values[b])));
            }
        }
        tests.insert(metric.to_string(), Value::Object(pairs));
    }
    let diverged: Vec<usize> =
        estimators.iter().map(|e| g.by_estimator[*e].iter().filter(|r| r.diverged_at.is_some()).count()).collect();
    if diverged.iter().any(|&d| d > 0) {
        let cells: Vec<String> =
            estimators.iter().zip(&diverged).map(|(e, d)| format!("{d} of {}", g.by_estimator[*e].len())).collect();
        writeln!(md, "| diverged (left out of the figures above) | {} |", cells.join(" | "))?;
    }
    for (e, d) in estimators.iter().zip(&diverged) {
        est_json.entry(e.to_string()).or_insert_with(|| json!({}))["diverged"] = json!(d);
    }
    if estimators.len() > 1 {
        welch_table(md, &tests)?;
    }
    for metric in ["dead_codes", "perplexity", "loss", "lloyd_dist"] {
        curve_plot(md, g, gi, metric, out)?;
    }
    writeln!(md)?;
    Ok(json!({ "setting": g.setting, "label": label(g, keys), "estimators": est_json, "welch_p": tests }))
}

/// The Welch p-values of every metric (rows) and pair of estimators (columns).
fn welch_table(md: &mut String, tests: &serde_json::Map<String, Value>) -> anyhow::Result<()> {
    writeln!(md, "\nWelch p-values:\n")?;
    let pair_names: Vec<String> =
        tests.values().next().and_then(|v| v.as_object()).map(|o| o.keys().cloned().collect()).unwrap_or_default();
    writeln!(md, "| metric | {} |", pair_names.join(" | "))?;
    writeln!(md, "|---|{}", "---|".repeat(pair_names.len()))?;
    for (metric, pairs) in tests {
        let cells: Vec<String> = pair_names.iter().map(|p| fmt_p(pairs[p].as_f64())).collect();
        writeln!(md, "| {metric} | {} |", cells.join(" | "))?;
    }
    Ok(())
}

/// A training curve of setting `gi`: the mean over seeds of `metric` at each evaluation, per estimator.
fn curve_plot(md: &mut String, g: &Group, gi: usize, metric: &str, out: &Path) -> anyhow::Result<()> {
    let series: Vec<Series> = g
        .by_estimator
        .iter()
        .map(|(e, runs)| {
            let mut steps: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for r in runs {
                for point in &r.curve {
                    if let (Some(s), Some(v)) = (point["step"].as_u64(), point[metric].as_f64()) {
                        steps.entry(s).or_default().push(v);
                    }
                }
            }
            let pts = steps.into_iter().map(|(s, v)| {
                let sm = summarize(&v);
                (s as f64, sm.mean, sm.ci95)
            });
            (e.to_string(), pts.collect())
        })
        .collect();
    let stem = out.join(format!("curve_{}_{metric}", gi + 1));
    line_plot(&stem, &format!("setting {}: {metric} during training", gi + 1), "step", metric, &series)?;
    writeln!(md, "\n![{metric} during training](curve_{}_{metric}.svg)", gi + 1)?;
    Ok(())
}

/// Metrics against K, beta and sigma, where the runs vary them with everything else equal; across K also rate
/// against distortion.
fn sweeps_section(md: &mut String, groups: &[Group], out: &Path) -> anyhow::Result<()> {
    writeln!(md, "## Against K, beta and sigma\n")?;
    let mut sweeps = 0;
    for (axis, axis_label, metrics) in [
        ("codes", "K", &["dead_codes", "dead_fraction", "entropy", "perplexity"][..]),
        ("beta", "beta", &["dead_codes", "entropy", "perplexity", "recon_mse"][..]),
        ("data.sigma", "sigma", &["dead_codes", "entropy", "perplexity", "recon_mse"][..]),
    ] {
        let mut families: BTreeMap<BTreeMap<String, String>, Vec<&Group>> = BTreeMap::new();
        for g in groups {
            if g.setting.contains_key(axis) {
                let mut rest = g.setting.clone();
                rest.remove(axis);
                families.entry(rest).or_default().push(g);
            }
        }
        for (fi, family) in families.values().filter(|f| f.len() >= 2).enumerate() {
            sweeps += 1;
            if axis == "codes" {
                rate_distortion_plot(md, family, fi, out)?;
            }
            for metric in metrics {
                let mut by_est: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
                for g in family {
                    let x: f64 = g.setting[axis].parse().unwrap_or(f64::NAN);
                    for (e, runs) in &g.by_estimator {
                        // Dead codes as a fraction of K compare across K; the counts do not.
                        let value = |r: &Run| {
                            if *metric == "dead_fraction" { r.metric("dead_codes") / x } else { r.metric(metric) }
                        };
                        let s = summarize(&runs.iter().map(value).collect::<Vec<_>>());
                        by_est.entry(e.clone()).or_default().push((x, s.mean, s.ci95));
                    }
                }
                let series: Vec<Series> = by_est
                    .into_iter()
                    .map(|(e, mut p)| {
                        p.sort_by(|a, b| a.0.total_cmp(&b.0));
                        (e, p)
                    })
                    .collect();
                let name = format!("{metric}_vs_{axis_label}_{}", fi + 1);
                let x_axis =
                    XAxis { label: if axis == "codes" { "K (log2 scale)" } else { axis_label }, log2: axis == "codes" };
                let y_label = if *metric == "dead_fraction" { "dead codes / K" } else { metric };
                line_plot(&out.join(&name), &format!("{metric} against {axis_label}"), x_axis, y_label, &series)?;
                writeln!(md, "![{metric} against {axis_label}]({name}.svg)")?;
            }
        }
    }
    if sweeps == 0 {
        writeln!(md, "(no settings that differ only in K, beta or sigma)")?;
    }
    Ok(())
}

/// Rate against distortion across K: each estimator's (entropy, quant_err) means, joined in order of K.
fn rate_distortion_plot(md: &mut String, family: &[&Group], fi: usize, out: &Path) -> anyhow::Result<()> {
    let mut by_est: BTreeMap<String, Vec<(f64, f64, f64, f64)>> = BTreeMap::new();
    for g in family {
        let k: f64 = g.setting["codes"].parse().unwrap_or(f64::NAN);
        for (e, runs) in &g.by_estimator {
            let mean = |m: &str| summarize(&runs.iter().map(|r| r.metric(m)).collect::<Vec<_>>()).mean;
            let rate = summarize(&runs.iter().map(Run::rate).collect::<Vec<_>>()).mean;
            by_est.entry(e.clone()).or_default().push((k, rate, mean("quant_err"), f64::NAN));
        }
    }
    let series: Vec<Series> = by_est
        .into_iter()
        .map(|(e, mut p)| {
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            (e, p.into_iter().map(|(_, x, y, err)| (x, y, err)).collect())
        })
        .collect();
    let name = format!("rate_distortion_{}", fi + 1);
    let title = "Rate-distortion across K: entropy (nats) against quant_err";
    line_plot(&out.join(&name), title, "entropy (nats; summed over residual levels)", "quant_err", &series)?;
    writeln!(md, "![rate-distortion across K]({name}.svg)")?;
    Ok(())
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let runs = load_runs(&args.results)?;
    if runs.is_empty() {
        return Err(vqgrad::Error::Input("no runs in the results files".into()).into());
    }
    if args.claims {
        print!("{}", super::reproduce::claims_markdown(&runs));
        return Ok(());
    }
    write_report(&runs, &args.out, &args.results)?;
    eprintln!("{} runs; wrote {}", runs.len(), args.out.join("report.md").display());
    Ok(())
}
