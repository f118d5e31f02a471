//! `vqgrad bias`: on a trained model, every estimator's gradient against the exact gradient of the
//! soft-assignment surrogate as tau -> 0 ([`vqgrad::bias`]): a table, `bias.json` and two plots across tau.

use super::report::line_plot;
use super::train::{TrainArgs, config};
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vqgrad::bias::BiasRow;
use vqgrad::gpu::GpuOptions;
use vqgrad::reference::to_f64;
use vqgrad::reference::train::CpuModel;
use vqgrad::train::Engine;

#[derive(clap::Args, Debug)]
pub struct BiasArgs {
    /// A model saved by `train --save-params`; without one, a model is trained first with the train flags below
    /// (by default E1 with ste). `--out` is the directory for bias.json, bias.md and the plots (default `bias`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The surrogate's temperatures, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,0.3,0.1,0.03,0.01,0.003,0.001",
        allow_negative_numbers = true
    )]
    pub taus: Vec<f64>,
    /// Eval samples the gradients are taken on (at most the eval set).
    #[arg(long, default_value_t = 2048)]
    pub rows: u32,
    /// Noise draws each Gumbel estimator's gradient is averaged over.
    #[arg(long, default_value_t = 16)]
    pub draws: u32,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// The model and the batch: a saved model's, or one trained now.
fn model(engine: &Engine, args: &BiasArgs) -> anyhow::Result<(String, CpuModel, Vec<f64>, usize, u64)> {
    match &args.model {
        Some(path) => load(path, args.rows, &path.display().to_string()),
        None => {
            let c = config(&args.train)?;
            eprintln!("training a model first ({} on {} steps)", c.estimator, c.steps);
            let dir = std::env::temp_dir().join(format!("vqgrad-bias-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("model.safetensors");
            let trained = engine.load_data(&c).map_err(anyhow::Error::from).and_then(|data| {
                super::train::train_and_save(engine, &c, data, |_| {}, Some(&path))?;
                load(&path, args.rows, &format!("a model trained now ({}, seed {})", c.estimator, c.seed))
            });
            let _ = std::fs::remove_dir_all(&dir);
            trained
        }
    }
}

/// A saved model, and the first `rows` samples of its eval set: (a description, the model, the samples, their
/// count, the run's seed).
pub fn load(path: &Path, rows: u32, source: &str) -> anyhow::Result<(String, CpuModel, Vec<f64>, usize, u64)> {
    let (config, data, _, model) = super::kmeans::saved_model(path)?;
    let rows = (rows as usize).min(data.eval_rows());
    let x = to_f64(&data.eval[..rows * data.dim as usize]);
    Ok((source.to_string(), model, x, rows, config.seed))
}

/// The table (markdown) of `rows`: one line per tau, one column per estimator, each `cosine (relative error)`.
pub fn table(rows: &[BiasRow]) -> String {
    let mut names: Vec<&str> = Vec::new();
    let mut taus: Vec<f64> = Vec::new();
    for r in rows {
        if !names.contains(&r.estimator.as_str()) {
            names.push(&r.estimator);
        }
        if !taus.contains(&r.tau) {
            taus.push(r.tau);
        }
    }
    let mut md = format!("| tau | {} |\n|---|{}\n", names.join(" | "), "---|".repeat(names.len()));
    for &tau in &taus {
        let _ = write!(md, "| {tau} |");
        for name in &names {
            match rows.iter().find(|r| r.tau == tau && r.estimator == *name) {
                Some(r) => {
                    let _ = write!(md, " {:.3} ({:.3}) |", r.cosine, r.rel_err);
                }
                None => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
    md
}

/// Writes `{stem}.json`, `{stem}.md` and the plots `{stem}_cosine` and `{stem}_rel_err` into `out`; returns the
/// markdown section.
pub fn write(rows: &[BiasRow], out: &Path, source: &str, stem: &str) -> anyhow::Result<String> {
    super::output::ensure_dir(out, "--out")?;
    let mut md = format!(
        "Each estimator's gradient of L_rec at the encodings against the exact gradient of the soft-assignment \
         surrogate (the decoder fed sum_k softmax(-||z - c||^2 / tau)_k c_k), on {source}. Each cell: cosine \
         (relative error ||E - S|| / ||S||) over the whole batch gradient. The Gumbel estimators are averaged over \
         their noise draws.\n\n"
    );
    md.push_str(&table(rows));
    let zero = rows.iter().filter(|r| r.estimator == "ste").map(|r| format!("{}: {}", r.tau, r.zero_rows));
    let _ = writeln!(
        md,
        "\nRows whose exact gradient is exactly 0 (every weight but one underflowed), per tau: {}.",
        zero.collect::<Vec<_>>().join(", ")
    );
    let series = |metric: &dyn Fn(&BiasRow) -> f64| -> Vec<super::report::Series> {
        let mut names: Vec<String> = Vec::new();
        for r in rows {
            if !names.contains(&r.estimator) {
                names.push(r.estimator.clone());
            }
        }
        names
            .into_iter()
            .map(|name| {
                let pts: Vec<(f64, f64, f64)> =
                    rows.iter().filter(|r| r.estimator == name).map(|r| (r.tau.log10(), metric(r), f64::NAN)).collect();
                (name, pts)
            })
            .collect()
    };
    let cosine = line_plot(
        &out.join(format!("{stem}_cosine")),
        "Cosine with the soft surrogate's exact gradient",
        "log10 tau (temperature)",
        "cosine (1 = same direction)",
        &series(&|r| r.cosine),
    )?;
    let rel_err = line_plot(
        &out.join(format!("{stem}_rel_err")),
        "Relative error against the soft surrogate's exact gradient",
        "log10 tau (temperature)",
        "log10 ||E - S|| / ||S||",
        &series(&|r| r.rel_err.log10()),
    )?;
    let _ = writeln!(md, "\n{cosine} {rel_err}");
    let json = json!({ "source": source, "rows": rows });
    std::fs::write(out.join(format!("{stem}.json")), serde_json::to_string_pretty(&json)? + "\n")?;
    std::fs::write(out.join(format!("{stem}.md")), format!("# Estimator bias\n\n{md}"))?;
    Ok(md)
}

/// Measures the model of `args` (or a saved one) and writes the outputs.
pub fn measure(engine: &Engine, args: &BiasArgs, out: &Path) -> anyhow::Result<(String, Vec<BiasRow>)> {
    if args.taus.is_empty() || args.taus.iter().any(|t| !(t.is_finite() && *t > 0.0 && (*t as f32) > 0.0)) {
        return Err(vqgrad::Error::Input(format!("--taus must be finite and > 0, got {:?}", args.taus)).into());
    }
    if args.rows == 0 || args.draws == 0 {
        return Err(vqgrad::Error::Input("--rows and --draws must be at least 1".into()).into());
    }
    let (source, model, x, rows, seed) = model(engine, args)?;
    let measured = vqgrad::bias::measure(&model, &x, rows, &args.taus, args.draws, seed, engine)?;
    let md = write(&measured, out, &format!("{rows} eval samples of {source}"), "bias")?;
    Ok((md, measured))
}

pub fn run(options: &GpuOptions, args: &BiasArgs) -> anyhow::Result<()> {
    let engine = super::train::engine(options, &args.train.engine)?;
    let out = args.train.out.clone().unwrap_or_else(|| PathBuf::from("bias"));
    let (md, _) = measure(&engine, args, &out)?;
    println!("{md}");
    eprintln!("written to {}", out.join("bias.md").display());
    Ok(())
}
