//! E8: the time per training step of each estimator, measured in one process with the estimators alternating, as
//! ratios to `ste`.

use std::time::Instant;
use vqgrad::Estimator;
use vqgrad::train::Engine;
use vqgrad::train::TrainConfig;

/// Per estimator: the median seconds per step over `rounds` rounds of `steps` steps; the median over rounds of
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

/// Builds one trainer per estimator on `base`'s setting, warms each up (shader compilation, caches), then times
/// `rounds` rounds in which every estimator runs `steps` steps in turn, waiting for the GPU after each.
pub fn measure(engine: &Engine, base: &TrainConfig, steps: u32, rounds: u32) -> anyhow::Result<Vec<Overhead>> {
    let estimators = Estimator::ALL;
    let data = engine.load_data(base)?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); estimators.len()];
    let mut trainers = Vec::new();
    for e in estimators {
        let config = TrainConfig { estimator: e, steps: u32::MAX, ..base.clone() };
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
    Ok(estimators
        .iter()
        .zip(times)
        .map(|(e, rounds)| {
            // Ratios within a round cancel most of the machine's drift between rounds.
            let ratios: Vec<f64> = rounds.iter().zip(&ste).map(|(t, s)| t / s).collect();
            Overhead {
                estimator: e.name().to_string(),
                seconds_per_step: median(&rounds),
                ratio_to_ste: median(&ratios),
                ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratio_max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                rounds,
            }
        })
        .collect())
}
