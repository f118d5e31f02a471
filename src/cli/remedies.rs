//! The report's section on the codebook-collapse remedies (docs/PROTOCOL.md §6.6): every remedy with `ste` and
//! with `rotation-trick` on E1, across E4's K and on E3's clusters, beside the plain estimators. Each figure comes
//! with its 95% interval and Welch's test against plain `ste`, the cost per step comes from E8, one plot sets
//! codebook use against reconstruction error per setting, and a table says where each remedy helps.

use super::overhead::Overhead;
use super::report::{PointPanel, Run, points_plot};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use vqgrad::analysis::{Summary, summarize, welch_p};
use vqgrad::data::DataSpec;
use vqgrad::model::{BetaSchedule, CodebookMode, Reparam, Sampling};
use vqgrad::train::TrainConfig;

/// The remedies a run uses, as the report names them, or `None` for a plain run.
pub fn remedy(c: &TrainConfig) -> Option<String> {
    let mut parts = Vec::new();
    if c.sampling == Sampling::Stochastic {
        parts.push(format!("stochastic sampling (tau {})", c.tau));
    }
    if c.orth_weight > 0.0 {
        parts.push(format!("orthogonality {}", c.orth_weight));
    }
    if c.reparam == Reparam::Simvq {
        parts.push("simvq".into());
    }
    if c.sync_nu > 0.0 {
        parts.push(format!("sync {}", c.sync_nu));
    }
    if c.affine_lr > 0.0 {
        parts.push(format!("affine {}", c.affine_lr));
    }
    if c.codebook_mode == CodebookMode::Alternate {
        parts.push(format!("alternate (lr {})", c.alternate_lr));
    }
    if !c.fsq_levels.is_empty() {
        parts.push("fsq".into());
    }
    if c.cosine {
        parts.push("cosine".into());
    }
    if c.lookup_width > 0 {
        // The lookup's dimension alone, so that one variant spans places of different widths.
        parts.push(format!("lookup {}", c.latent));
    }
    (!parts.is_empty()).then(|| parts.join(" + "))
}

/// A run's variant: its estimator, with its remedies.
fn variant(c: &TrainConfig) -> String {
    match remedy(c) {
        Some(r) => format!("{} + {r}", c.estimator),
        None => c.estimator.to_string(),
    }
}

/// The metrics of each table, in order.
const METRICS: [&str; 5] = ["dead_codes", "dead_fraction", "perplexity", "recon_mse", "quant_err"];

/// Where the remedies are compared: E3's clusters at its K, or the subspace data of E1 and E4 at a K.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Subspace(u32),
    Clusters(u32),
}

impl Place {
    /// The place of a plain-model run (one level, a fixed beta of 0.25) of `ste` or `rotation-trick`.
    fn of(c: &TrainConfig) -> Option<Place> {
        // FSQ has no commitment term: its runs take beta 0 (PROTOCOL §6.6).
        let beta = c.beta == 0.25 || (!c.fsq_levels.is_empty() && c.beta == 0.0);
        let plain = c.levels == 1 && c.beta_schedule == BetaSchedule::Fixed && beta;
        let estimator = matches!(c.estimator.name(), "ste" | "rotation-trick");
        match c.data {
            _ if !(plain && estimator) => None,
            DataSpec::Subspace { dim: 256, rank: 4, sigma: 0.05 } => Some(Place::Subspace(c.codes)),
            DataSpec::Clusters { .. } => Some(Place::Clusters(c.codes)),
            _ => None,
        }
    }

    fn title(self) -> String {
        match self {
            Place::Subspace(32) => "E1: K = 32, subspace data".into(),
            Place::Subspace(k) => format!("E4: K = {k}, subspace data"),
            Place::Clusters(k) => format!("E3: K = {k}, clusters data"),
        }
    }

    fn k(self) -> f64 {
        match self {
            Place::Subspace(k) | Place::Clusters(k) => k as f64,
        }
    }
}

/// A variant's place in a table: plain estimators first, `ste` before `rotation-trick`, then the remedies.
type Key = (bool, usize, String);

/// Per place, per variant, the runs.
type Cells<'r> = BTreeMap<Place, BTreeMap<Key, Vec<&'r Run>>>;

fn key(c: &TrainConfig) -> Key {
    let rank = vqgrad::Estimator::ALL.iter().position(|e| *e == c.estimator).unwrap_or(usize::MAX);
    (remedy(c).is_some(), rank, variant(c))
}

fn value(r: &Run, metric: &str, k: f64) -> f64 {
    if metric == "dead_fraction" { r.metric("dead_codes") / k } else { r.metric(metric) }
}

fn fmt(s: &Summary) -> String {
    match s.n {
        0 => "-".into(),
        1 => format!("{} (n=1)", short(s.mean)),
        _ => format!("{} ± {}", short(s.mean), short(s.ci95)),
    }
}

/// Three significant digits, without an exponent for the figures a table shows.
fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.digits$}")
}

/// The section (markdown), its plot in `out`, and its figures under `json` (a row `"id": "remedies"`). Empty when
/// the runs hold no remedy.
pub fn section(runs: &[Run], overhead: &[Overhead], out: &Path, json: &mut Value) -> anyhow::Result<String> {
    let mut cells: Cells<'_> = BTreeMap::new();
    for r in runs {
        let Ok(c) = serde_json::from_value::<TrainConfig>(r.config.clone()) else { continue };
        if let Some(place) = Place::of(&c) {
            cells.entry(place).or_default().entry(key(&c)).or_default().push(r);
        }
    }
    cells.retain(|_, variants| variants.keys().any(|(remedied, ..)| *remedied));
    if cells.is_empty() {
        return Ok(String::new());
    }
    let mut md = String::new();
    let _ = writeln!(md, "\n## Codebook-collapse remedies\n");
    let _ = writeln!(
        md,
        "Each remedy (docs/PROTOCOL.md §6.6) with `ste` and with `rotation-trick`, beside the plain estimators, on \
         E1, across E4's K and on E3's clusters. Cells: mean ± half-width of the 95% confidence interval over seeds; \
         p: Welch's test against plain `ste` at the same place. Dead codes as a fraction of K compare across K.\n"
    );
    let mut places = serde_json::Map::new();
    for (place, variants) in &cells {
        places.insert(place.title(), place_table(&mut md, *place, variants));
    }
    verdicts(&mut md, &cells);
    costs(&mut md, overhead);
    let _ = writeln!(md, "\n{}", summary_plot(&cells, out)?);
    if let Some(rows) = json.as_array_mut() {
        rows.push(json!({ "id": "remedies", "places": places }));
    }
    Ok(md)
}

/// A place's table: every variant's metrics, with Welch's p of dead codes and of recon_mse against plain `ste`.
fn place_table(md: &mut String, place: Place, variants: &BTreeMap<Key, Vec<&Run>>) -> Value {
    let k = place.k();
    let _ = writeln!(md, "\n### {}\n", place.title());
    let _ = writeln!(md, "| variant (n) | {} | p dead codes | p recon_mse |", METRICS.join(" | "));
    let _ = writeln!(md, "|---|{}---|---|", "---|".repeat(METRICS.len()));
    let plain = variants.iter().find(|((remedied, _, name), _)| !remedied && name == "ste").map(|(_, runs)| runs);
    let values = |runs: &[&Run], m: &str| runs.iter().map(|r| value(r, m, k)).collect::<Vec<f64>>();
    let mut out = serde_json::Map::new();
    for ((remedied, _, name), runs) in variants {
        let sums: Vec<Summary> = METRICS.iter().map(|m| summarize(&values(runs, m))).collect();
        let against = plain.filter(|_| *remedied || name != "ste");
        let p = |m: &str| against.and_then(|s| welch_p(&values(runs, m), &values(s, m)));
        let fmt_p = |p: Option<f64>| p.map_or("-".into(), |p| format!("{p:.3}"));
        let cols: Vec<String> = sums.iter().map(fmt).collect();
        let n = runs.len();
        let (pd, pr) = (p("dead_codes"), p("recon_mse"));
        let _ = writeln!(md, "| {name} ({n}) | {} | {} | {} |", cols.join(" | "), fmt_p(pd), fmt_p(pr));
        let figures: serde_json::Map<String, Value> =
            METRICS.iter().zip(&sums).map(|(m, s)| (m.to_string(), json!(s))).collect();
        out.insert(name.clone(), json!({ "metrics": figures, "p_dead_codes": pd, "p_recon_mse": pr }));
    }
    Value::Object(out)
}

/// Where each remedy helps: per place (rows) and remedy variant (columns), its change in dead codes and in
/// recon_mse against the same estimator without the remedy, named only where Welch's p < 0.05.
fn verdicts(md: &mut String, cells: &Cells<'_>) {
    let mut remedied: Vec<(usize, String)> = cells
        .values()
        .flat_map(|v| v.keys().filter(|(r, ..)| *r).map(|(_, rank, name)| (*rank, name.clone())))
        .collect();
    remedied.sort();
    remedied.dedup();
    let _ = writeln!(
        md,
        "\n### Where each remedy helps\n\nAgainst the same estimator without the remedy, at each place: the change in \
         dead codes, and in recon_mse relative to it, where Welch's p < 0.05; \"=\" where p >= 0.05.\n"
    );
    let names: Vec<&str> = remedied.iter().map(|(_, n)| n.as_str()).collect();
    let _ = writeln!(md, "| place | {} |", names.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(names.len()));
    for (place, variants) in cells {
        let runs = |remedied: bool, name: &str| {
            variants.iter().find(|((r, _, n), _)| *r == remedied && n == name).map(|(_, runs)| runs)
        };
        let cols: Vec<String> = names
            .iter()
            .map(|name| {
                let base = name.split(" + ").next().unwrap_or(name);
                let (Some(with), Some(without)) = (runs(true, name), runs(false, base)) else {
                    return "-".into();
                };
                format!("{}; {}", change(with, without, "dead_codes"), change(with, without, "recon_mse"))
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", place.title(), cols.join(" | "));
    }
}

/// How `metric` moved from `without` to `with`: "-11.3 dead codes", "recon_mse +19%", or "=" where Welch's p >= 0.05.
fn change(with: &[&Run], without: &[&Run], metric: &str) -> String {
    let (a, b): (Vec<f64>, Vec<f64>) =
        (with.iter().map(|r| r.metric(metric)).collect(), without.iter().map(|r| r.metric(metric)).collect());
    let (ma, mb) = (summarize(&a).mean, summarize(&b).mean);
    match (welch_p(&a, &b), metric) {
        (Some(p), "dead_codes") if p < 0.05 => format!("{:+.1} dead codes", ma - mb),
        (Some(p), _) if p < 0.05 => format!("{metric} {:+.0}%", 100.0 * (ma - mb) / mb),
        (Some(_), _) => format!("{metric} ="),
        (None, _) => format!("{metric} untested"),
    }
}

/// What each remedy costs per step: E8's ratios to `ste` of the remedies timed with it.
fn costs(md: &mut String, overhead: &[Overhead]) {
    let timed: Vec<String> = overhead
        .iter()
        .filter(|o| o.estimator.starts_with("ste + "))
        .map(|o| format!("{} {:.2} (rounds {:.2} to {:.2})", o.estimator, o.ratio_to_ste, o.ratio_min, o.ratio_max))
        .collect();
    if !timed.is_empty() {
        let _ = writeln!(md, "\nStep time over plain `ste`'s, from E8 (E1, in the same rounds): {}.", timed.join(", "));
    }
}

/// The summary plot: per place, each variant's recon_mse against its dead codes / K, both with 95% intervals.
fn summary_plot(cells: &Cells<'_>, out: &Path) -> anyhow::Result<String> {
    let panels: Vec<PointPanel> = cells
        .iter()
        .map(|(place, variants)| {
            let k = place.k();
            let points = variants
                .iter()
                .map(|((_, _, name), runs)| {
                    let s = |m: &str| summarize(&runs.iter().map(|r| value(r, m, k)).collect::<Vec<_>>());
                    let (x, y) = (s("recon_mse"), s("dead_fraction"));
                    (name.clone(), (x.mean, x.ci95), (y.mean, y.ci95))
                })
                .collect();
            PointPanel { title: place.title(), points }
        })
        .collect();
    let title = "Codebook use against reconstruction: each variant's mean with its 95% intervals";
    let labels = ("recon. MSE (per input dim)", "dead codes / K");
    points_plot(&out.join("remedies"), title, labels, &panels)
}
