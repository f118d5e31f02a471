//! The report's section on the seed's future directions: every estimator variant (the Gumbel and learned
//! estimators, the adaptive beta, residual VQ) beside `ste` and `rotation-trick` on E1 and across E4's K, the
//! rate-distortion plot across K, the Lloyd distance over training, and the bias analysis.

use super::report::{Run, Series, line_plot, metric_label};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use vqgrad::analysis::summarize;
use vqgrad::data::DataSpec;
use vqgrad::model::BetaSchedule;
use vqgrad::train::TrainConfig;

/// The columns of the E1 table.
const E1_METRICS: &[&str] = &["dead_codes", "entropy", "recon_mse", "quant_err", "subspace_err", "lloyd_dist"];

/// A run's variant: its estimator, with the adaptive beta and the residual levels when used.
pub fn variant(c: &TrainConfig) -> String {
    let mut name = c.estimator.name().to_string();
    if c.beta_schedule == BetaSchedule::Adaptive {
        name.push_str(" + adaptive beta");
    }
    if c.levels > 1 {
        let _ = write!(name, ", {} levels", c.levels);
    }
    name
}

/// E1's and E4's shared setting: subspace data at sigma 0.05, beta 0.25 (the adaptive beta's start).
fn e4_family(c: &TrainConfig) -> bool {
    let setting = matches!(c.data, DataSpec::Subspace { dim: 256, rank: 4, sigma } if sigma == 0.05) && c.beta == 0.25;
    setting && super::remedies::remedy(c).is_none() // the remedies have their own section
}

/// The variants in a fixed order: the seed's estimators, then the new ones, then the adaptive and residual runs.
fn order(name: &str) -> (usize, String) {
    let rank = ["ste", "rotation", "rotation-trick", "diveq", "gumbel", "gumbel-rotation-trick", "learned"]
        .iter()
        .position(|e| *e == name)
        .unwrap_or(usize::MAX);
    // Then the adaptive beta's runs, then residual VQ's, each in the estimators' order.
    let base = name.split([' ', ',']).next().unwrap_or(name);
    let base_rank = ["ste", "rotation", "rotation-trick"].iter().position(|e| *e == base).unwrap_or(9);
    let group = if name.contains("adaptive") {
        100
    } else if name.contains("levels") {
        200
    } else {
        return (rank, name.into());
    };
    (group + base_rank, name.to_string())
}

/// The runs of the E4 family by variant (in the report's order) and K.
type Cells<'r> = BTreeMap<(usize, String), BTreeMap<u32, Vec<&'r Run>>>;

/// The section (markdown), its plots in `out`, and its figures under `json["beyond"]`.
/// `bias`: the bias analysis's sections, each with its title.
pub fn section(runs: &[Run], bias: &[(&str, String)], out: &Path, json: &mut Value) -> anyhow::Result<String> {
    let mut cells: Cells<'_> = BTreeMap::new();
    for r in runs {
        let Ok(c) = serde_json::from_value::<TrainConfig>(r.config.clone()) else { continue };
        if e4_family(&c) {
            cells.entry(order(&variant(&c))).or_default().entry(c.codes).or_default().push(r);
        }
    }
    let mut md = String::new();
    let _ = writeln!(md, "\n## Beyond the seed: its future directions\n");
    let _ = writeln!(
        md,
        "Every variant on E1's setting (subspace, K = 32, beta = 0.25) and across E4's K, beside `ste` and \
         `rotation-trick`. `gumbel`: the Gumbel hard sample of softmax(-||z - c||^2 / tau + G) forward, the \
         relaxation's exact gradient backward (tau = 0.1). `gumbel-rotation-trick`: the same sample, the rotation \
         trick backward. `learned`: M g, M an m x m matrix from I fitted by Adam to the soft surrogate's gradient of \
         the same g (tau = 0.1). `adaptive beta`: beta x exp(0.05 (u - 0.9)) each step, u the batch's distinct codes \
         over those of uniform use, within [beta / 100, 100 beta]. `2 levels`: residual VQ, the estimator at both \
         levels. Each cell: mean ± sample std over seeds (n).\n"
    );
    let e1_json = e1_table(&mut md, &cells);
    let (e4_json, rate_distortion) = e4_table(&mut md, &cells, out)?;
    let lloyd = lloyd_plot(&cells, out)?;
    let _ = writeln!(
        md,
        "\nRate against distortion across K (each line joins a variant's K = 4 ... 256; a residual variant's rate is \
         the sum of its levels' entropies), and over training the distance from the codebook (the first level's, \
         for residual VQ) to the Lloyd (k-means) fixed point on the same eval encodings (`lloyd_dist`):\n\n{rate_distortion} {lloyd}"
    );
    for (title, bias) in bias {
        let _ = writeln!(md, "\n### Bias against the soft-assignment surrogate: {title}\n\n{bias}");
    }
    if let Some(rows) = json.as_array_mut() {
        rows.push(json!({ "id": "beyond", "e1": e1_json, "e4": e4_json }));
    }
    Ok(md)
}

/// The E1 table: every E1 metric per variant at K = 32. Returns its figures.
fn e1_table(md: &mut String, cells: &Cells<'_>) -> serde_json::Map<String, Value> {
    let _ = writeln!(md, "### E1 (K = 32)\n");
    let _ = writeln!(md, "| variant | {} |", E1_METRICS.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(E1_METRICS.len()));
    let mut e1_json = serde_json::Map::new();
    for ((_, name), by_k) in cells {
        let Some(e1) = by_k.get(&32) else { continue };
        let mut row = serde_json::Map::new();
        let cols: Vec<String> = E1_METRICS
            .iter()
            .map(|m| {
                let s = summarize(&e1.iter().map(|r| r.metric(m)).collect::<Vec<_>>());
                row.insert(m.to_string(), json!({ "mean": s.mean, "std": s.std, "n": s.n }));
                match (s.n, *m) {
                    (0, _) => "-".into(),
                    (_, "dead_codes") => format!("{:.1} ± {:.1} ({})", s.mean, s.std, s.n),
                    (_, "entropy" | "subspace_err") => format!("{:.3} ± {:.3} ({})", s.mean, s.std, s.n),
                    _ => format!("{:.2e} ± {:.1e} ({})", s.mean, s.std, s.n),
                }
            })
            .collect();
        e1_json.insert(name.clone(), Value::Object(row));
        let _ = writeln!(md, "| {name} | {} |", cols.join(" | "));
    }
    e1_json
}

/// The E4 table (dead codes / entropy per variant and K) and the rate-distortion plot across K. Returns its
/// figures.
fn e4_table(
    md: &mut String,
    cells: &Cells<'_>,
    out: &Path,
) -> anyhow::Result<(serde_json::Map<String, Value>, String)> {
    let ks: Vec<u32> = {
        let mut ks: Vec<u32> = cells.values().flat_map(|b| b.keys().copied()).collect();
        ks.sort_unstable();
        ks.dedup();
        ks
    };
    let _ = writeln!(md, "\n### E4 (K sweep): dead codes / entropy (nats), means over seeds\n");
    let _ = writeln!(md, "| variant | {} |", ks.iter().map(|k| format!("K = {k}")).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(ks.len()));
    let mut e4_json = serde_json::Map::new();
    let mut rate_distortion: Vec<Series> = Vec::new();
    for ((_, name), by_k) in cells {
        if by_k.len() < 2 {
            continue; // only E1
        }
        let mean = |runs: &[&Run], m: &str| summarize(&runs.iter().map(|r| r.metric(m)).collect::<Vec<_>>()).mean;
        let cols: Vec<String> = ks
            .iter()
            .map(|k| {
                by_k.get(k).map_or("-".into(), |r| format!("{:.1} / {:.2}", mean(r, "dead_codes"), mean(r, "entropy")))
            })
            .collect();
        let _ = writeln!(md, "| {name} | {} |", cols.join(" | "));
        let rate = |runs: &[&Run]| summarize(&runs.iter().map(|r| r.rate()).collect::<Vec<_>>()).mean;
        let points: Vec<(f64, f64, f64)> = by_k.values().map(|r| (rate(r), mean(r, "quant_err"), f64::NAN)).collect();
        e4_json.insert(
            name.clone(),
            json!(by_k.iter().map(|(k, r)| json!({ "k": k, "dead_codes": mean(r, "dead_codes"), "entropy": mean(r, "entropy"), "quant_err": mean(r, "quant_err") })).collect::<Vec<_>>()),
        );
        rate_distortion.push((name.clone(), points));
    }
    let plot = line_plot(
        &out.join("beyond_rate_distortion"),
        "Rate-distortion across K (E4): entropy against quant_err",
        "rate: code entropy (nats, summed over levels)",
        &metric_label("quant_err"),
        &rate_distortion,
    )?;
    Ok((e4_json, plot))
}

/// The Lloyd distance over training on E1: the mean over seeds at each evaluation, per variant.
fn lloyd_plot(cells: &Cells<'_>, out: &Path) -> anyhow::Result<String> {
    let mut lloyd: Vec<Series> = Vec::new();
    for ((_, name), by_k) in cells {
        let Some(e1) = by_k.get(&32) else { continue };
        let mut steps: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for r in e1 {
            for point in &r.curve {
                if let (Some(s), Some(v)) = (point["step"].as_u64(), point["lloyd_dist"].as_f64()) {
                    steps.entry(s).or_default().push(v);
                }
            }
        }
        lloyd.push((name.clone(), steps.into_iter().map(|(s, v)| (s as f64, summarize(&v).mean, f64::NAN)).collect()));
    }
    line_plot(
        &out.join("beyond_lloyd_dist"),
        "E1: distance from the codebook to its Lloyd fixed point",
        "training step",
        "||C - C*||^2 / (K m)",
        &lloyd,
    )
}
