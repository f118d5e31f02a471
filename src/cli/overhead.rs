//! E8: the time per training step of each estimator, and of each codebook-collapse remedy with `ste`, measured in
//! one process with the variants alternating, as ratios to `ste`.

use std::time::Instant;
use vqgrad::Estimator;
use vqgrad::model::{CodebookMode, Reparam, Sampling};
use vqgrad::train::Engine;
use vqgrad::train::TrainConfig;

/// Per variant (an estimator, or "ste + " a remedy): the median seconds per step over `rounds` rounds of `steps` steps; the median over rounds of
/// the ratio to `ste`'s time in the same round, and that ratio's range over the rounds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Overhead {
    pub estimator: String,
    pub seconds_per_step: f64,
    pub ratio_to_ste: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    pub rounds: Vec<f64>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

/// The variants timed, on `base`'s setting: every estimator, `ste` first, then each codebook-collapse remedy with
/// `ste` (docs/PROTOCOL.md §6.6), named "ste + " the remedy.
pub fn variants(base: &TrainConfig) -> Vec<(String, TrainConfig)> {
    let with = |estimator| TrainConfig { estimator, ..base.clone() };
    let mut out: Vec<(String, TrainConfig)> = Estimator::ALL.iter().map(|&e| (e.name().to_string(), with(e))).collect();
    let sampled = TrainConfig { sampling: Sampling::Stochastic, ..with(Estimator::Ste) };
    out.push(("ste + stochastic sampling".into(), sampled));
    let orthogonal = TrainConfig { orth_weight: 10.0, ..with(Estimator::Ste) };
    out.push(("ste + orthogonality penalty".into(), orthogonal));
    out.push(("ste + simvq".into(), TrainConfig { reparam: Reparam::Simvq, ..with(Estimator::Ste) }));
    out.push(("ste + synchronized update".into(), TrainConfig { sync_nu: 0.2, ..with(Estimator::Ste) }));
    out.push(("ste + affine codes".into(), TrainConfig { affine_lr: 10.0, ..with(Estimator::Ste) }));
    let alternate = TrainConfig { codebook_mode: CodebookMode::Alternate, ..with(Estimator::Ste) };
    out.push(("ste + alternated optimization".into(), alternate));
    if let Ok(levels) = TrainConfig::fsq_auto_levels(base.codes) {
        out.push(("ste + fsq".into(), with(Estimator::Ste).with_fsq(levels)));
    }
    out.push(("ste + cosine codes".into(), TrainConfig { cosine: true, ..with(Estimator::Ste) }));
    if base.latent > 2 {
        let lookup = TrainConfig { latent: 2, lookup_width: base.latent, ..with(Estimator::Ste) };
        out.push(("ste + low-dimensional lookup".into(), lookup));
    }
    out
}

/// Builds one trainer per [`variants`] entry on `base`'s setting, warms each up (shader compilation, caches), then
/// times `rounds` rounds in which every variant runs `steps` steps in turn, waiting for the GPU after each.
pub fn measure(engine: &Engine, base: &TrainConfig, steps: u32, rounds: u32) -> anyhow::Result<Vec<Overhead>> {
    let variants = variants(base);
    let data = engine.load_data(base)?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut trainers = Vec::new();
    for (_, config) in &variants {
        let config = TrainConfig { steps: u32::MAX, ..config.clone() };
        let mut t = engine.trainer(std::slice::from_ref(&config), std::slice::from_ref(&data))?;
        t.train_steps(steps.min(64))?; // warm-up: shader compilation (at the first dispatch on some drivers), caches
        t.wait()?;
        trainers.push(t);
    }
    for _ in 0..rounds {
        for (t, out) in trainers.iter_mut().zip(&mut times) {
            let start = Instant::now();
            t.train_steps(steps)?;
            t.wait()?;
            out.push(start.elapsed().as_secs_f64() / steps as f64);
        }
    }
    let ste = times[0].clone();
    Ok(variants
        .iter()
        .zip(times)
        .map(|((name, _), rounds)| {
            // Ratios within a round cancel most of the machine's drift between rounds.
            let ratios: Vec<f64> = rounds.iter().zip(&ste).map(|(t, s)| t / s).collect();
            Overhead {
                estimator: name.clone(),
                seconds_per_step: median(&rounds),
                ratio_to_ste: median(&ratios),
                ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratio_max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                rounds,
            }
        })
        .collect())
}
