//! `vqgrad kmeans` (E7): k-means++ then Lloyd's algorithm on the GPU (the assign kernel and a centroid update), on
//! a trained model's eval encodings or on raw eval data; with a model, also the VQ codebook's own figures and how far
//! it is from a Lloyd fixed point.

use super::train::{TrainArgs, config};
use anyhow::Context;
use serde_json::json;
use std::path::PathBuf;
use vqgrad::data::{Stream, rng};
use vqgrad::gpu::GpuOptions;
use vqgrad::model::SavedModel;
use vqgrad::reference::train::CpuModel;
use vqgrad::reference::{Assignment, assign_f64, stats, to_f64};
use vqgrad::train::Engine;
use vqgrad::train::{TrainConfig, kmeans_plus_plus};

#[derive(clap::Args, Debug)]
pub struct KmeansArgs {
    /// A model saved by `train --save-params`: cluster its eval-set encodings (K defaults to its K).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Lloyd iterations after the k-means++ seeding.
    #[arg(long, default_value_t = 50)]
    pub iters: u32,
    /// Without --model: the data to cluster, as train flags (e.g. --preset E1 --k 32); its eval set is used.
    #[command(flatten)]
    pub data: TrainArgs,
}

/// Distortion (1/(N m) sum ||z - c||^2), dead codes and entropy of `centres` on `z`.
fn figures(z: &[f64], centres: &[f64], m: usize) -> serde_json::Value {
    let a: Assignment = assign_f64(z, centres, m);
    let s = stats(&a, centres.len() / m, m, None);
    json!({ "distortion": s.quant_err, "dead_codes": s.dead_codes, "entropy": s.entropy, "perplexity": s.perplexity })
}

/// k-means on `z` (`m` columns) with `k` codes: k-means++ seeded by `seed`, then `iters` Lloyd iterations; with
/// `vq`, also the VQ codebook's figures and Lloyd from it. Returns the JSON `kmeans` prints and writes.
pub fn analyse(
    engine: &Engine,
    z: &[f64],
    m: usize,
    k: usize,
    seed: u64,
    iters: u32,
    vq: Option<&[f64]>,
) -> anyhow::Result<serde_json::Value> {
    let n = z.len() / m;
    if k == 0 || k > n {
        return Err(vqgrad::Error::Input(format!("K = {k} must be between 1 and the {n} points")).into());
    }
    let seeds = kmeans_plus_plus(z, m, k, &mut rng(seed, Stream::Kmeans));
    let centres = engine.lloyd(z, &seeds, m, iters as usize)?;
    let mut out = json!({ "k": k, "points": n, "dim": m, "iters": iters, "kmeans": figures(z, &centres, m) });
    if let Some(vq) = vq.filter(|c| c.len() == k * m) {
        // The VQ codebook as it is, and after Lloyd from it: a codebook at a Lloyd fixed point does not move.
        let vq_figures = figures(z, vq, m);
        let polished = engine.lloyd(z, vq, m, iters as usize)?;
        let polished_figures = figures(z, &polished, m);
        let d0 = vq_figures["distortion"].as_f64().unwrap_or(f64::NAN);
        let d1 = polished_figures["distortion"].as_f64().unwrap_or(f64::NAN);
        let moved: f64 = vq.iter().zip(&polished).map(|(a, b)| (a - b).powi(2)).sum::<f64>()
            / vq.iter().map(|a| a * a).sum::<f64>().max(1e-30);
        out["vq"] = vq_figures;
        out["lloyd_from_vq"] = polished_figures;
        out["lloyd_gap"] = json!((d0 - d1) / d1);
        out["codebook_moved"] = json!(moved);
    }
    Ok(out)
}

/// A saved model as the f64 reference model, with its configuration and data set (regenerated from the seed).
pub fn saved_model(
    path: &std::path::Path,
) -> anyhow::Result<(TrainConfig, vqgrad::data::Dataset, SavedModel, CpuModel)> {
    let mut loaded: Option<(TrainConfig, vqgrad::data::Dataset)> = None;
    let saved = SavedModel::load(path, |text| {
        let c: TrainConfig = serde_json::from_str(text)
            .map_err(|e| vqgrad::Error::Input(format!("{}: the stored config: {e}", path.display())))?;
        let data = c.load_data()?;
        let shape = c.shape(&data);
        loaded = Some((c, data));
        Ok(shape)
    })?;
    let (c, data) = loaded.context("the model's configuration")?;
    let model = CpuModel {
        layout: saved.layout.clone(),
        latent: saved.latent as usize,
        params: to_f64(&saved.params),
        codebooks: vec![to_f64(&saved.codebook)],
        map: c.latent_map(),
    };
    Ok((c, data, saved, model))
}

/// The eval-set encodings of a saved model, with its configuration and codebook.
pub fn model_encodings(path: &std::path::Path) -> anyhow::Result<(TrainConfig, Vec<f64>, SavedModel)> {
    let (c, data, saved, model) = saved_model(path)?;
    let z = model.encode(&to_f64(&data.eval), data.eval_rows());
    Ok((c, z, saved))
}

/// The most Lloyd iterations `kmeans` runs (each is two dispatches, recorded into one pass on the GPU).
const MAX_ITERS: u32 = 100_000;

pub fn run(options: &GpuOptions, args: &KmeansArgs) -> anyhow::Result<()> {
    let engine = super::train::engine(options, &args.data.engine)?;
    let (cfg, z, m, k, vq, source) = match &args.model {
        Some(path) => {
            let (c, z, saved) = model_encodings(path)?;
            let k = args.data.k.unwrap_or(saved.codes) as usize;
            (
                c,
                z,
                saved.latent as usize,
                k,
                Some(to_f64(&saved.codebook)),
                format!("eval encodings of {}", path.display()),
            )
        }
        None => {
            let c = config(&args.data)?;
            let data = engine.load_data(&c)?;
            let k = c.codes as usize;
            (c.clone(), to_f64(&data.eval), data.dim as usize, k, None, "raw eval data".to_string())
        }
    };
    if args.iters > MAX_ITERS {
        return Err(vqgrad::Error::Input(format!("--iters must be at most {MAX_ITERS}, got {}", args.iters)).into());
    }
    let mut out = analyse(&engine, &z, m, k, cfg.seed, args.iters, vq.as_deref())?;
    out["source"] = json!(source);
    out["config"] = json!(cfg);
    println!("{source}: {} points of dimension {m}, K = {k}", z.len() / m);
    let row = |name: &str, f: &serde_json::Value| {
        println!(
            "{name:<28} distortion {:.6}  dead {:>4}  entropy {:.4}",
            f["distortion"].as_f64().unwrap_or(f64::NAN),
            f["dead_codes"],
            f["entropy"].as_f64().unwrap_or(f64::NAN)
        )
    };
    row("k-means++ + Lloyd", &out["kmeans"]);
    if out.get("vq").is_some() {
        row("the VQ codebook", &out["vq"]);
        row("Lloyd from the VQ codebook", &out["lloyd_from_vq"]);
        println!(
            "Lloyd gap: the VQ distortion is {:.2}% above its Lloyd fixed point; the codebook moves by {:.4} of its norm^2",
            100.0 * out["lloyd_gap"].as_f64().unwrap_or(f64::NAN),
            out["codebook_moved"].as_f64().unwrap_or(f64::NAN)
        );
    }
    if let Some(path) = &args.data.out {
        std::fs::write(path, serde_json::to_string_pretty(&out)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
