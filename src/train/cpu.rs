//! The CPU engine: the training step of [`crate::reference::train`] in f64, on the same initial parameters and
//! batches as the GPU engine. [`CpuRuns`] trains several runs one after another behind [`Trainer`].

use super::affine::AffineF64;
use super::cosine::CosineF64;
use super::engine::{State, Trainer};
use super::simvq::SimvqF64;
use super::{ADAM_BETAS, ADAM_EPS, ALTERNATE_MOMENTUM, EMA, Metrics, Schedule, TrainConfig};
use crate::Estimator;
use crate::contract::seed_mix;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{BetaSchedule, CodebookMode, EncoderKind, Reparam};
use crate::reference::train::{CpuAdam, CpuEma, CpuModel, CpuSgd, Relaxation, Step};
use crate::reference::{adapt_beta, to_f32, to_f64};

/// How one level's codebook learns: Adam on its gradient, the EMA update, its own SGD step before the forward pass
/// (alternate), none (fixed), or (level 0) SimVQ's layer, the affine map's codes and parameters, or the cosine
/// codes' rows.
enum LevelUpdate {
    Grad(CpuAdam),
    Ema(CpuEma),
    Alternate(CpuSgd),
    Fixed,
    Simvq(SimvqF64),
    Affine(AffineF64),
    Cosine(CosineF64),
}

/// Trains one run on the CPU.
pub struct CpuTrainer {
    config: TrainConfig,
    data: Dataset,
    train: Vec<f64>,
    eval: Vec<f64>,
    /// The model being trained, in f64.
    pub model: CpuModel,
    adam_params: CpuAdam,
    /// Each level's codebook update, level 0 first.
    level_updates: Vec<LevelUpdate>,
    schedule: Schedule,
    step: u64,
    last: Option<Step>,
    used: Vec<bool>,
    /// The adaptive beta's state (beta, lo, hi); beta stays put when fixed.
    beta: (f64, f64, f64),
    /// The learned estimator's M (m x m) and its Adam.
    pub transport: Vec<f64>,
    adam_transport: CpuAdam,
}

impl CpuTrainer {
    /// Initializes from the config's seed (k-means included).
    pub fn new(config: &TrainConfig, data: Dataset) -> Result<Self> {
        config.validate()?;
        let layout = config.shape(&data).layout();
        let m = config.latent as usize;
        let k = config.codes as usize;
        let (params, codebooks) = super::init::initial_run(config, &layout, &data, &super::init::lloyd_cpu)?;
        let adam = |len: usize| CpuAdam::new(len, ADAM_BETAS.0, ADAM_BETAS.1, ADAM_EPS);
        let level_updates = codebooks
            .iter()
            .map(|c| match (config.codebook_mode, config.reparam) {
                (CodebookMode::Grad, Reparam::Simvq) => LevelUpdate::Simvq(SimvqF64::new(config, adam(m * m + m))),
                (CodebookMode::Grad, _) if config.cosine => LevelUpdate::Cosine(CosineF64::new(c, adam(c.len()))),
                (CodebookMode::Grad, _) if config.affine_lr > 0.0 => {
                    LevelUpdate::Affine(AffineF64::new(c, m, config.affine_lr, adam))
                }
                (CodebookMode::Grad, _) => LevelUpdate::Grad(adam(c.len())),
                (CodebookMode::Ema, _) => LevelUpdate::Ema(CpuEma::new(c, k, EMA.0, EMA.1)),
                (CodebookMode::Alternate, _) => LevelUpdate::Alternate(CpuSgd::new(c.len(), ALTERNATE_MOMENTUM)),
                (CodebookMode::Fixed, _) => LevelUpdate::Fixed,
            })
            .collect();
        let model = CpuModel { layout, latent: m, params, codebooks, map: config.latent_map() };
        Ok(CpuTrainer {
            adam_params: adam(model.params.len()),
            schedule: Schedule::new(config.seed, data.train_rows(), config.batch as usize),
            config: config.clone(),
            train: to_f64(&data.train),
            eval: to_f64(&data.eval),
            model,
            level_updates,
            data,
            step: 0,
            last: None,
            used: vec![false; k],
            transport: crate::reference::train::identity(m),
            adam_transport: adam(m * m),
            beta: {
                // As the GPU keeps them: f32 values.
                let b = config.beta as f32;
                let range = crate::contract::BETA_RANGE;
                (b as f64, (b / range) as f64, (b * range) as f64)
            },
        })
    }

    /// One training step on the next batch.
    pub fn step(&mut self) {
        let (b, d, m) = (self.config.batch as usize, self.data.dim as usize, self.config.latent as usize);
        let rows = self.schedule.next_batch();
        let x: Vec<f64> =
            rows.iter().flat_map(|&r| self.train[r as usize * d..(r as usize + 1) * d].to_vec()).collect();
        let t = self.step + 1;
        let relax = Relaxation {
            tau: self.config.tau_at(t),
            seed: seed_mix(self.config.seed),
            step: t as u32,
            transport: Some(&self.transport),
            sampling: self.config.sampling,
        };
        if let LevelUpdate::Alternate(sgd) = &mut self.level_updates[0] {
            // Alternated optimization (PROTOCOL §6.6): the codebook's own step on L_cb of the batch's nearest codes,
            // before the step's forward pass assigns them again.
            let (z, codebook) = (self.model.encode(&x, b), &mut self.model.codebooks[0]);
            let a = crate::reference::assign_f64(&z, codebook, m);
            let grad = crate::reference::codebook_grad_f64(&z, &a.index, codebook, m, b);
            sgd.update(codebook, &grad, self.config.alternate_lr);
        }
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
        let mut step = self.model.step(&x, b, c.estimator, &mut beta, c.codebook_mode, relax);
        if c.orth_weight > 0.0 {
            // The orthogonality penalty's gradient at the codebook the step used (PROTOCOL §6.6).
            let penalty = crate::reference::orthogonal::grad(&self.model.codebooks[0], m);
            let grad = &mut step.levels[0].codebook_grad;
            grad.iter_mut().zip(penalty).for_each(|(g, p)| *g += c.orth_weight * p);
        }
        if c.sync_nu > 0.0 {
            // The synchronized update: each code also takes nu times the decoder's gradient at it (§6.6).
            let (level, nu) = (&mut step.levels[0], c.sync_nu);
            for (gi, &a) in step.g.chunks_exact(m).zip(&level.index) {
                let code = &mut level.codebook_grad[a as usize * m..(a as usize + 1) * m];
                code.iter_mut().zip(gi).for_each(|(d, g)| *d += nu * g);
            }
        }
        self.step += 1;
        self.adam_params.update(&mut self.model.params, &step.grads, self.config.lr, self.step);
        if self.config.estimator == Estimator::Learned {
            self.adam_transport.update(&mut self.transport, &step.transport_grad, self.config.lr, self.step);
        }
        for ((codebook, update), level) in
            self.model.codebooks.iter_mut().zip(&mut self.level_updates).zip(&step.levels)
        {
            match update {
                LevelUpdate::Ema(ema) => ema.update(codebook, &level.input, &level.index, m),
                LevelUpdate::Grad(adam) => adam.update(codebook, &level.codebook_grad, self.config.lr, self.step),
                LevelUpdate::Simvq(s) => s.update(codebook, &level.codebook_grad, m, self.config.lr, self.step),
                LevelUpdate::Affine(a) => a.update(codebook, &level.codebook_grad, m, self.config.lr, self.step),
                LevelUpdate::Cosine(u) => u.update(codebook, &level.codebook_grad, m, self.config.lr, self.step),
                LevelUpdate::Alternate(_) | LevelUpdate::Fixed => {} // stepped before the forward pass, or never
            }
        }
        for &a in &step.levels[0].index {
            self.used[a as usize] = true;
        }
        if self.config.reset_dead > 0 && self.step.is_multiple_of(self.config.reset_dead as u64) {
            let ema = match &mut self.level_updates[0] {
                LevelUpdate::Ema(ema) => Some((&mut ema.size[..], &mut ema.sum[..])),
                _ => None,
            };
            let (seed, t) = (self.config.seed, self.step);
            let codebook = &mut self.model.codebooks[0];
            super::reset_unused(codebook, &mut self.used, &step.levels[0].input, m, b as u32, seed, t, ema);
        }
        self.last = Some(step);
    }

    /// The metrics on the eval set now.
    pub fn evaluate(&self) -> Metrics {
        let (d, m, k) = (self.data.dim as usize, self.config.latent as usize, self.config.codes as usize);
        let n = self.data.eval_rows();
        let z = self.model.encode(&self.eval, n);
        let (assignments, q) = self.model.quantize(&z);
        let xhat = self.model.decode(&q, n);
        let recon_mse = xhat.iter().zip(&self.eval).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (n * d) as f64;
        let labels = self.data.eval_labels.as_deref().map(|l| (l, self.data.classes as usize));
        let (s, levels) = crate::train::code_metrics(&assignments, k, m, labels);
        let (loss, batch_usage) = match &self.last {
            Some(step) => {
                let mut seen = vec![false; k];
                step.levels[0].index.iter().for_each(|&c| seen[c as usize] = true);
                (step.losses.total, seen.iter().filter(|&&u| u).count() as f64 / k as f64)
            }
            None => (f64::NAN, f64::NAN),
        };
        let subspace_err = match (&self.data.basis, self.config.encoder) {
            (Some(basis), EncoderKind::Linear) if self.model.layout.decoder.len() == 1 => {
                let w = self.model.layout.decoder[0];
                let wd = &self.model.params[w.w_off as usize..w.b_off as usize];
                Some(super::subspace_err(wd, d, m, basis, self.data.rank as usize))
            }
            _ => None,
        };
        let codebook = &self.model.codebooks[0];
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
                let mut fixed = codebook.clone();
                super::init::lloyd(&z, &mut fixed, m, self.config.lloyd_iters as usize);
                let sq: f64 = fixed.iter().zip(codebook).map(|(a, b)| (a - b).powi(2)).sum();
                sq / (k * m) as f64
            }),
        }
    }
}

/// Several runs on the CPU engine, trained one after another: each exactly as it would be alone.
pub struct CpuRuns {
    configs: Vec<TrainConfig>,
    runs: Vec<CpuTrainer>,
}

impl CpuRuns {
    /// One [`CpuTrainer`] per configuration and data set.
    pub fn new(configs: &[TrainConfig], data: &[Dataset]) -> Result<Self> {
        if configs.len() != data.len() || configs.is_empty() {
            return Err(Error::Input(format!("{} configurations for {} data sets", configs.len(), data.len())));
        }
        let runs = configs.iter().zip(data).map(|(c, d)| CpuTrainer::new(c, d.clone())).collect::<Result<_>>()?;
        Ok(CpuRuns { configs: configs.to_vec(), runs })
    }
}

impl Trainer for CpuRuns {
    fn configs(&self) -> &[TrainConfig] {
        &self.configs
    }

    fn steps_done(&self) -> u64 {
        self.runs[0].step
    }

    fn train_steps(&mut self, steps: u32) -> Result<()> {
        for run in &mut self.runs {
            (0..steps).for_each(|_| run.step());
        }
        Ok(())
    }

    fn evaluate_run(&self, run: usize) -> Result<Metrics> {
        Ok(self.runs[run].evaluate())
    }

    fn read_states(&self) -> Result<Vec<State>> {
        Ok(self.runs.iter().map(|r| (to_f32(&r.model.params), to_f32(&r.model.codebooks[0]))).collect())
    }

    fn read_states_f64(&self) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
        Ok(self.runs.iter().map(|r| (r.model.params.clone(), r.model.codebooks[0].clone())).collect())
    }
}
