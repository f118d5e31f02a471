//! The CPU engine: the training step of [`crate::reference::train`] in f64, on the same initial parameters and
//! batches as the GPU engine.

use super::{
    ADAM_BETAS, ADAM_EPS, EMA, KMEANS_ITERS, KMEANS_SAMPLES, LevelMetrics, Metrics, RunResult, Schedule, TrainConfig,
};
use crate::Estimator;
use crate::data::{Dataset, Stream, rng};
use crate::error::Result;
use crate::model::{BetaSchedule, CodebookInit, CodebookMode, EncoderKind};
use crate::reference::train::{CpuAdam, CpuEma, CpuModel, Relaxation, Step};
use crate::reference::{Assignment, adapt_beta, stats, to_f64};
use std::time::Instant;

/// Trains on the CPU.
pub struct CpuTrainer {
    config: TrainConfig,
    data: Dataset,
    train: Vec<f64>,
    eval: Vec<f64>,
    /// The model being trained, in f64.
    pub model: CpuModel,
    adam_params: CpuAdam,
    adam_codebook: CpuAdam,
    ema: Option<CpuEma>,
    schedule: Schedule,
    step: u64,
    last: Option<(Step, Vec<u32>)>,
    used: Vec<bool>,
    /// The adaptive beta's state (beta, lo, hi); beta stays put when fixed.
    beta: (f64, f64, f64),
    /// Residual VQ: each later level's codebook optimizer (Adam) or EMA state.
    level_updates: Vec<(CpuAdam, Option<CpuEma>)>,
    /// The learned estimator's M (m x m) and its Adam.
    pub transport: Vec<f64>,
    adam_transport: CpuAdam,
}

impl CpuTrainer {
    /// Initializes from the config's seed (k-means included).
    pub fn new(config: &TrainConfig, data: Dataset) -> Result<Self> {
        config.validate()?;
        let shape = config.shape(&data);
        let layout = shape.layout();
        let (params, codebook) = super::initial_state(config, &layout);
        let m = config.latent as usize;
        let k = config.codes as usize;
        let train = to_f64(&data.train);
        let eval = to_f64(&data.eval);
        let residual_init: Vec<Vec<f64>> = super::residual_codebooks(config).iter().map(|c| to_f64(c)).collect();
        let residual = residual_init.clone();
        let mut model = CpuModel { layout, latent: m, params: to_f64(&params), codebook: to_f64(&codebook), residual };
        if config.codebook_init == CodebookInit::Kmeans {
            let rows = data.train_rows().min(KMEANS_SAMPLES);
            let z = model.encode(&train[..rows * data.dim as usize], rows);
            let mut centres = super::kmeans_plus_plus(&z, m, k, &mut rng(config.seed, Stream::Kmeans));
            super::lloyd(&z, &mut centres, m, KMEANS_ITERS);
            model.codebook = centres;
        }
        let ema = (config.codebook_mode == CodebookMode::Ema).then(|| CpuEma::new(&model.codebook, k, EMA.0, EMA.1));
        Ok(CpuTrainer {
            adam_params: CpuAdam::new(model.params.len(), ADAM_BETAS.0, ADAM_BETAS.1, ADAM_EPS),
            adam_codebook: CpuAdam::new(model.codebook.len(), ADAM_BETAS.0, ADAM_BETAS.1, ADAM_EPS),
            schedule: Schedule::new(config.seed, data.train_rows(), config.batch as usize),
            config: config.clone(),
            train,
            eval,
            model,
            ema,
            data,
            step: 0,
            last: None,
            used: vec![false; k],
            level_updates: residual_init
                .iter()
                .map(|c| {
                    let ema = (config.codebook_mode == CodebookMode::Ema).then(|| CpuEma::new(c, k, EMA.0, EMA.1));
                    (CpuAdam::new(c.len(), ADAM_BETAS.0, ADAM_BETAS.1, ADAM_EPS), ema)
                })
                .collect(),
            transport: crate::reference::train::identity(m),
            adam_transport: CpuAdam::new(m * m, ADAM_BETAS.0, ADAM_BETAS.1, ADAM_EPS),
            beta: {
                // As the GPU keeps them: f32 values.
                let b = config.beta as f32;
                let range = crate::kernels::schedule::BETA_RANGE;
                (b as f64, (b / range) as f64, (b * range) as f64)
            },
        })
    }

    /// One training step on the next batch.
    pub fn step(&mut self) {
        let (b, d, m) = (self.config.batch as usize, self.data.dim as usize, self.config.latent as usize);
        let rows = self.schedule.next_batch().to_vec();
        let x: Vec<f64> =
            rows.iter().flat_map(|&r| self.train[r as usize * d..(r as usize + 1) * d].to_vec()).collect();
        let t = self.step + 1;
        let relax = Relaxation {
            tau: self.config.tau_at(t),
            seed: crate::kernels::codebook::seed_mix(self.config.seed),
            step: t as u32,
            transport: Some(&self.transport),
        };
        let (k, c) = (self.config.codes as usize, &self.config);
        let adaptive = c.beta_schedule == BetaSchedule::Adaptive;
        let state = &mut self.beta;
        let mut beta = |index: &[u32]| {
            if adaptive {
                state.0 = adapt_beta(state.0, (state.1, state.2), index, k, c.target_usage, c.beta_rate);
                state.0
            } else {
                c.beta
            }
        };
        let step = self.model.step(&x, b, c.estimator, &mut beta, c.codebook_mode, relax);
        self.step += 1;
        self.adam_params.update(&mut self.model.params, &step.grads, self.config.lr, self.step);
        if self.config.estimator == Estimator::Learned {
            self.adam_transport.update(&mut self.transport, &step.transport_grad, self.config.lr, self.step);
        }
        match &mut self.ema {
            Some(ema) => ema.update(&mut self.model.codebook, &step.z, &step.index, m),
            None => self.adam_codebook.update(&mut self.model.codebook, &step.codebook_grad, self.config.lr, self.step),
        }
        for ((codebook, (adam, ema)), level) in
            self.model.residual.iter_mut().zip(&mut self.level_updates).zip(&step.levels)
        {
            match ema {
                Some(ema) => ema.update(codebook, &level.input, &level.index, m),
                None => adam.update(codebook, &level.codebook_grad, self.config.lr, self.step),
            }
        }
        for &a in &step.index {
            self.used[a as usize] = true;
        }
        if self.config.reset_dead > 0 && self.step.is_multiple_of(self.config.reset_dead as u64) {
            let (seed, t) = (self.config.seed, self.step);
            super::reset_unused(
                &mut self.model.codebook,
                &mut self.used,
                &step.z,
                m,
                b as u32,
                seed,
                t,
                self.ema.as_mut(),
            );
        }
        self.last = Some((step, rows));
    }

    /// The metrics on the eval set now.
    pub fn evaluate(&self) -> Metrics {
        let (d, m, k) = (self.data.dim as usize, self.config.latent as usize, self.config.codes as usize);
        let n = self.data.eval_rows();
        let z = self.model.encode(&self.eval, n);
        let (assignments, q) = self.model.quantize(&z);
        let a: &Assignment = &assignments[0];
        let xhat = self.model.decode(&q, n);
        let recon_mse = xhat.iter().zip(&self.eval).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (n * d) as f64;
        let labels = self.data.eval_labels.as_deref().map(|l| (l, self.data.classes as usize));
        let mut s = stats(a, k, m, labels);
        let levels = (assignments.len() > 1).then(|| {
            let per_level: Vec<LevelMetrics> =
                assignments.iter().map(|a| LevelMetrics::from(stats(a, k, m, None))).collect();
            // The whole quantizer's error is the last level's: ||z - sum_l q_l||^2.
            s.quant_err = per_level.last().map_or(s.quant_err, |l| l.quant_err);
            per_level
        });
        let (loss, batch_usage) = match &self.last {
            Some((step, _)) => {
                let mut seen = vec![false; k];
                step.index.iter().for_each(|&c| seen[c as usize] = true);
                (step.losses.total, seen.iter().filter(|&&u| u).count() as f64 / k as f64)
            }
            None => (f64::NAN, f64::NAN),
        };
        let subspace_err = match (&self.data.basis, self.config.encoder) {
            (Some(basis), EncoderKind::Linear) => {
                let w = self.model.layout.decoder[0];
                let wd = &self.model.params[w.w_off as usize..w.b_off as usize];
                Some(super::subspace_err(wd, d, m, basis, self.data.rank as usize))
            }
            _ => None,
        };
        Metrics {
            step: self.step as u32,
            loss,
            dead_codes: s.dead_codes,
            usage: s.usage,
            entropy: s.entropy,
            perplexity: s.perplexity,
            recon_mse,
            quant_err: s.quant_err,
            purity: s.purity,
            subspace_err,
            batch_usage,
            beta: (self.config.beta_schedule == BetaSchedule::Adaptive).then_some(self.beta.0),
            transport: (self.config.estimator == Estimator::Learned).then(|| self.transport.clone()),
            levels,
            lloyd_dist: (self.config.lloyd_iters > 0).then(|| {
                let mut fixed = self.model.codebook.clone();
                super::lloyd(&z, &mut fixed, m, self.config.lloyd_iters as usize);
                let sq: f64 = fixed.iter().zip(&self.model.codebook).map(|(a, b)| (a - b).powi(2)).sum();
                sq / (k * m) as f64
            }),
        }
    }

    /// Trains for the configured steps, evaluating every `eval_every` steps and at the end.
    pub fn run(&mut self, mut on_eval: impl FnMut(&Metrics)) -> RunResult {
        let start = Instant::now();
        let mut curve = Vec::new();
        for s in 1..=self.config.steps {
            self.step();
            if s % self.config.eval_every == 0 || s == self.config.steps {
                let metrics = self.evaluate();
                on_eval(&metrics);
                curve.push(metrics);
            }
        }
        let wall_s = start.elapsed().as_secs_f64();
        RunResult {
            metrics: curve.last().cloned().expect("steps >= 1 gives one evaluation"),
            curve,
            steps_per_sec: self.config.steps as f64 / wall_s,
            wall_s,
        }
    }
}
