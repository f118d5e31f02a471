//! `vqgrad report`: statistics across seeds for every setting and estimator, Welch's t-tests between estimators,
//! plots, `report.md`, the same as one page a browser opens (`report.html`) and `summary.json`.

mod html;
mod plot;
mod sweeps;

pub use html::slug;
pub use plot::{Panel, PointPanel, Series, XAxis, chart_on, line_plot, metric_label, points_plot, svg_to_png};
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

/// The raw label of a setting (`codes=64, data.kind=subspace`), kept in summary.json for programs.
fn label(g: &Group, keys: &[String]) -> String {
    keys.iter().filter_map(|k| g.setting.get(k).map(|v| format!("{k}={v}"))).collect::<Vec<_>>().join(", ")
}

/// A setting key and value as a reader names them (`K = 64`, `sigma 0.05`, `adaptive beta`, `subspace data`), or
/// nothing for the plain model's defaults (a fixed beta, one level), which every title would otherwise repeat.
fn readable(key: &str, value: &str) -> Option<String> {
    Some(match key {
        "codes" => format!("K = {value}"),
        "data.kind" => format!("{value} data"),
        "data.sigma" => format!("sigma {value}"),
        "beta_schedule" if value == "fixed" => return None,
        "beta_schedule" => format!("{value} beta"),
        "levels" if value == "1" => return None,
        "levels" => format!("{value} levels"),
        "beta" => format!("beta {value}"),
        other => format!("{} = {value}", other.rsplit('.').next().unwrap_or(other)),
    })
}

/// A setting's title from K, the data and the keys that vary among the settings on the same data (K first, the
/// data last): "K = 64, beta 0.25, sigma 0.05, subspace data".
fn title(setting: &BTreeMap<String, String>, groups: &[Group]) -> String {
    let same_data: Vec<&Group> =
        groups.iter().filter(|g| g.setting.get("data.kind") == setting.get("data.kind")).collect();
    let mut keys: Vec<&String> = setting
        .keys()
        .filter(|k| {
            ["data.kind", "codes"].contains(&k.as_str())
                || same_data.iter().any(|g| g.setting.get(*k) != setting.get(*k))
        })
        .collect();
    let rank = |k: &str| ["codes", "beta", "beta_schedule", "levels", "data.sigma"].iter().position(|r| *r == k);
    keys.sort_by_key(|k| (k.as_str() == "data.kind", rank(k).unwrap_or(usize::MAX - 1), k.to_string()));
    let parts: Vec<String> = keys.iter().filter_map(|k| readable(k, &setting[*k])).collect();
    if parts.is_empty() { "every run".into() } else { parts.join(", ") }
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

/// A part of the report: an experiment's settings under a title saying what it varies ("E4: K = 4 ... 256").
pub struct Chapter {
    pub title: String,
    /// The settings (every configuration field but seed and estimator) the experiment runs.
    pub settings: Vec<BTreeMap<String, String>>,
}

impl Chapter {
    /// A chapter of the settings of `configs`.
    pub fn new(title: String, configs: &[vqgrad::train::TrainConfig]) -> Chapter {
        let settings = configs.iter().map(|c| setting(&serde_json::to_value(c).unwrap_or_default())).collect();
        Chapter { title, settings }
    }
}

/// What comes before the settings: the report's own opening (its title and first screen, then the claims) and
/// its chapters. The default is `report`'s: a title of its own and every setting in one list.
#[derive(Default)]
pub struct Front {
    pub preamble: Option<String>,
    pub chapters: Vec<Chapter>,
}

/// The summaries, tests and plots of a set of runs, written to `out` as `report.md`, `report.html` (one page, the
/// plots inline) and `summary.json`. Returns the summary JSON.
pub fn write_report(runs: &[Run], out: &Path, sources: &[PathBuf], front: &Front) -> anyhow::Result<Value> {
    super::output::ensure_dir(out, "--out")?;
    let groups = groups(runs);
    let keys = varying(&groups);
    let names: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    let mut md = front.preamble.clone().unwrap_or_else(|| "# vqgrad report\n\n".into());
    let level = if front.chapters.is_empty() { "###" } else { "####" };
    let heading = if front.chapters.is_empty() { "Every setting" } else { "Every setting, by experiment" };
    writeln!(md, "## {heading}\n")?;
    writeln!(md, "{} runs in {} settings, from {}.\n", runs.len(), groups.len(), names.join(", "))?;
    writeln!(
        md,
        "Each cell: mean ± sample std [± half-width of the 95% confidence interval of the mean, Student's t] over \
         seeds. p: Welch's two-sided t-test between two estimators.\n"
    )?;
    // Each setting is written once, under the first chapter that runs it; later chapters link to it.
    let mut written: BTreeMap<usize, String> = BTreeMap::new();
    let mut summary_groups = Vec::new();
    for (chapter, members) in chapters(&groups, &front.chapters) {
        if let Some(chapter) = chapter {
            writeln!(md, "### {chapter}\n")?;
        }
        for gi in members {
            let name = title(&groups[gi].setting, &groups);
            if let Some(anchor) = written.get(&gi) {
                writeln!(md, "- {name}: [shown above]({anchor})\n")?;
                continue;
            }
            writeln!(md, "{level} {name}\n")?;
            written.insert(gi, format!("#{}", html::slug(&name)));
            let mut json = setting_section(&mut md, &groups[gi], gi, &name, out)?;
            json["label"] = json!(label(&groups[gi], &keys));
            summary_groups.push(json);
        }
    }
    sweeps::section(&mut md, &groups, out)?;
    let summary = json!({ "runs": runs.len(), "sources": names, "groups": summary_groups });
    std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    std::fs::write(out.join("report.html"), html::page(&md, out)?)?;
    std::fs::write(out.join("report.md"), md)?;
    Ok(summary)
}

/// The groups by chapter, in the chapters' order, each group's index under every chapter that runs it; groups no
/// chapter names come last, under "Other settings" (or, with no chapters, under no heading).
fn chapters(groups: &[Group], chapters: &[Chapter]) -> Vec<(Option<String>, Vec<usize>)> {
    let mut out: Vec<(Option<String>, Vec<usize>)> = chapters
        .iter()
        .map(|c| {
            let members = c.settings.iter().filter_map(|s| groups.iter().position(|g| &g.setting == s));
            let mut unique: Vec<usize> = Vec::new();
            members.for_each(|gi| {
                if !unique.contains(&gi) {
                    unique.push(gi)
                }
            });
            (Some(c.title.clone()), unique)
        })
        .collect();
    let rest: Vec<usize> =
        (0..groups.len()).filter(|&gi| !out.iter().any(|(_, members)| members.contains(&gi))).collect();
    if !rest.is_empty() {
        out.push(((!chapters.is_empty()).then(|| "Other settings".to_string()), rest));
    }
    out.retain(|(_, members)| !members.is_empty());
    out
}

/// One setting's section: the table of every metric per estimator, the Welch p-values and the training curves.
/// Returns the setting's summary JSON.
fn setting_section(md: &mut String, g: &Group, gi: usize, name: &str, out: &Path) -> anyhow::Result<Value> {
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
    curves_plot(md, g, gi, name, out)?;
    writeln!(md)?;
    Ok(json!({ "setting": g.setting, "title": name, "estimators": est_json, "welch_p": tests }))
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

/// The training curves of setting `gi` as small multiples, `curves_{gi + 1}.svg`: a panel per metric, in each the
/// mean over seeds at every evaluation per estimator, with its 95% interval as a band.
fn curves_plot(md: &mut String, g: &Group, gi: usize, name: &str, out: &Path) -> anyhow::Result<()> {
    let panel = |metric: &str| {
        let series = g
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
        Panel { title: plot::metric_title(metric).into(), y_label: plot::metric_label(metric), series }
    };
    let panels: Vec<Panel> = ["dead_codes", "perplexity", "loss", "lloyd_dist"].into_iter().map(panel).collect();
    let stem = format!("curves_{}", gi + 1);
    let figure = format!("During training: {name} (mean over seeds, 95% interval)");
    writeln!(md, "\n{}", plot::panels_plot(&out.join(&stem), &figure, XAxis::from("training step"), &panels)?)?;
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
    // Runs with codebook-collapse remedies get their comparison first (without E8's timings, which need a process
    // of their own), its figures in remedies.json.
    super::output::ensure_dir(&args.out, "--out")?;
    let mut remedies = json!([]);
    let section = super::remedies::section(&runs, &[], &args.out, &mut remedies)?;
    if !section.is_empty() {
        std::fs::write(args.out.join("remedies.json"), serde_json::to_string_pretty(&remedies[0])? + "\n")?;
    }
    let front = Front { preamble: Some(format!("# vqgrad report\n{section}\n")), chapters: Vec::new() };
    write_report(&runs, &args.out, &args.results, &front)?;
    let (md, html) = (args.out.join("report.md"), args.out.join("report.html"));
    eprintln!("{} runs; wrote {} and {}", runs.len(), md.display(), html.display());
    Ok(())
}
