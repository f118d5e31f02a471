//! The report's sweeps: metrics against K, beta and sigma where the runs vary one of them with everything else
//! equal, as one figure per family with a panel per metric; across K also rate against distortion.

use super::plot::{Panel, Series, XAxis, line_plot, metric_label, metric_title, panels_plot};
use super::{Group, Run, title};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use vqgrad::analysis::summarize;

/// The swept axes: the setting key, its name in file names, its axis, and the metrics drawn against it.
const AXES: [(&str, &str, &str, &[&str]); 3] = [
    ("codes", "K", "K (codebook size, log2 scale)", &["dead_codes", "dead_fraction", "entropy", "perplexity"]),
    ("beta", "beta", "beta (commitment weight)", &["dead_codes", "entropy", "perplexity", "recon_mse"]),
    ("data.sigma", "sigma", "sigma (noise std of the data)", &["dead_codes", "entropy", "perplexity", "recon_mse"]),
];

/// The section: per axis and family (the groups equal in all but that axis, two or more of them), a heading
/// naming what the family holds fixed, the figure of its metrics and, across K, the rate-distortion plot.
pub fn section(md: &mut String, groups: &[Group], out: &Path) -> anyhow::Result<()> {
    writeln!(md, "## Against K, beta and sigma\n")?;
    let mut sweeps = 0;
    for (axis, short, axis_label, metrics) in AXES {
        let mut families: BTreeMap<BTreeMap<String, String>, Vec<&Group>> = BTreeMap::new();
        for g in groups {
            if g.setting.contains_key(axis) {
                let mut rest = g.setting.clone();
                rest.remove(axis);
                families.entry(rest).or_default().push(g);
            }
        }
        for (fi, (rest, family)) in families.iter().filter(|(_, f)| f.len() >= 2).enumerate() {
            sweeps += 1;
            let name = format!("Against {short}: {}", title(rest, groups));
            writeln!(md, "### {name}\n")?;
            let panels: Vec<Panel> = metrics.iter().map(|m| panel(family, axis, m)).collect();
            let stem = format!("sweep_{short}_{}", fi + 1);
            let x_axis = XAxis { label: axis_label, log2: axis == "codes" };
            let figure = format!("{name} (mean over seeds, 95% interval)");
            writeln!(md, "{}\n", panels_plot(&out.join(&stem), &figure, x_axis, &panels)?)?;
            if axis == "codes" {
                rate_distortion_plot(md, family, fi, out)?;
            }
        }
    }
    if sweeps == 0 {
        writeln!(md, "(no settings that differ only in K, beta or sigma)")?;
    }
    Ok(())
}

/// One metric of a family against the axis, per estimator. Dead codes as a fraction of K compare across K; the
/// counts do not.
fn panel(family: &[&Group], axis: &str, metric: &str) -> Panel {
    let mut by_est: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for g in family {
        let x: f64 = g.setting[axis].parse().unwrap_or(f64::NAN);
        for (e, runs) in &g.by_estimator {
            let value = |r: &Run| if metric == "dead_fraction" { r.metric("dead_codes") / x } else { r.metric(metric) };
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
    Panel { title: metric_title(metric).into(), y_label: metric_label(metric), series }
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
    let title = "Rate-distortion across K (each point one K, means over seeds)";
    let x_label = "rate: code entropy (nats, summed over levels)";
    writeln!(md, "{}\n", line_plot(&out.join(&name), title, x_label, &metric_label("quant_err"), &series)?)?;
    Ok(())
}
