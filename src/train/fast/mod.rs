//! The fast CPU engine: the training step of docs/PROTOCOL.md §2 in f32, written for the machine. Every product
//! is a blocked GEMM ([`dense`]), the nearest-code search is fused with its argmin ([`quantize`]), the step
//! works in buffers made once (`Work`) and allocates nothing, the evaluation runs on blocks of rows in parallel,
//! and the runs of a batch train on threads of their own ([`FastRuns`]). The f64 reference
//! ([`super::cpu::CpuTrainer`]) is its oracle, as it is the GPU engine's.

mod affine;
mod cosine;
pub mod dense;
mod eval;
pub use eval::lloyd;
mod latent;
pub mod orthogonal;
pub mod quantize;
mod simvq;
mod step;
mod update;

use super::engine::{State, Trainer};
use super::{Metrics, Schedule, TrainConfig};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{CodebookMode, LatentMap, Layout, Reparam};
use rayon::prelude::*;
use update::{Adam, Ema, Sgd};

/// How one level's codebook learns: Adam on its gradient, the EMA update, its own SGD step before the forward pass
/// (alternate), none (fixed), or (level 0) SimVQ's layer, the affine map's codes and parameters, or the cosine
/// codes' rows.
enum LevelUpdate {
    Grad(Adam),
    Ema(Ema),
    Alternate(Sgd),
    Fixed,
    Simvq(simvq::SimvqF32),
    Affine(affine::AffineF32),
    Cosine(cosine::CosineF32),
}

/// One VQ level's buffers for a batch.
struct Level {
    /// The level's input (B x m): z for level 0, else the residual of the levels before.
    input: Vec<f32>,
    /// Its codes (B).
    index: Vec<u32>,
    /// Each row's squared distance to its code (B).
    dist: Vec<f32>,
    /// The codes (B x m).
    q: Vec<f32>,
    /// dL_cb/dC (K x m), grad mode.
    codebook_grad: Vec<f32>,
}

/// Every buffer a step uses, made once for the run's shapes.
struct Work {
    x: Vec<f32>,
    enc: Vec<Vec<f32>>,
    dec: Vec<Vec<f32>>,
    levels: Vec<Level>,
    q_total: Vec<f32>,
    grads: Vec<f32>,
    grad: Vec<f32>,
    spare: Vec<f32>,
    dz: Vec<f32>,
    row: Vec<f32>,
    soft: Vec<f32>,
    scores: Vec<f32>,
    /// The Gumbel estimators' scores of every row at the sample (B x K), kept for the backward.
    sampled: Vec<f32>,
    c_bar: Vec<f32>,
    transport_grad: Vec<f32>,
    seen: Vec<bool>,
    /// The orthogonality penalty's scratch ((K + 1) x m), when it is on.
    orthogonal: Vec<f32>,
    /// The mapped encodings (B x m), when a map is on.
    mapped: Vec<f32>,
}

impl Work {
    fn new(layout: &Layout, config: &TrainConfig, params: usize) -> Self {
        let (b, m, k) = (config.batch as usize, config.latent as usize, config.codes as usize);
        let outs =
            |layers: &[crate::contract::Linear]| layers.iter().map(|l| vec![0.0; b * l.output as usize]).collect();
        let widest = layout.encoder.iter().chain(&layout.decoder).map(|l| l.input.max(l.output)).max().unwrap_or(1);
        let level = || Level {
            input: vec![0.0; b * m],
            index: vec![0; b],
            dist: vec![0.0; b],
            q: vec![0.0; b * m],
            codebook_grad: vec![0.0; k * m],
        };
        Work {
            x: vec![0.0; b * layout.encoder[0].input as usize],
            enc: outs(&layout.encoder),
            dec: outs(&layout.decoder),
            levels: (0..config.levels).map(|_| level()).collect(),
            q_total: vec![0.0; b * m],
            grads: vec![0.0; params],
            grad: vec![0.0; b * widest as usize],
            spare: vec![0.0; b * widest as usize],
            dz: vec![0.0; b * m],
            row: vec![0.0; m],
            soft: vec![0.0; m],
            scores: vec![0.0; k],
            sampled: vec![0.0; if config.estimator.samples_gumbel() { b * k } else { 0 }],
            c_bar: vec![0.0; m],
            transport_grad: vec![0.0; m * m],
            seen: vec![false; k],
            orthogonal: vec![0.0; if config.orth_weight > 0.0 { (k + 1) * m } else { 0 }],
            mapped: vec![0.0; if config.latent_map() != LatentMap::None { b * m } else { 0 }],
        }
    }
}

/// Trains one run on the CPU in f32.
pub struct FastTrainer {
    config: TrainConfig,
    data: Dataset,
    layout: Layout,
    /// The flat parameters in [`Layout`] order.
    pub params: Vec<f32>,
    /// Every level's codebook (each K x m), level 0 first.
    pub codebooks: Vec<Vec<f32>>,
    /// The learned estimator's M (m x m).
    pub transport: Vec<f32>,
    adam_params: Adam,
    adam_transport: Adam,
    level_updates: Vec<LevelUpdate>,
    schedule: Schedule,
    step: u64,
    used: Vec<bool>,
    /// The adaptive beta's state (beta, lo, hi), from f32 values as the other engines keep it.
    beta: (f64, f64, f64),
    /// The last step's total loss and the share of codes its batch used.
    last: Option<(f64, f64)>,
    work: Work,
    /// The map of the encodings before the quantizer.
    map: LatentMap,
}

impl FastTrainer {
    /// Initializes from the config's seed (k-means included), as the other engines do.
    pub fn new(config: &TrainConfig, data: Dataset) -> Result<Self> {
        config.validate()?;
        let layout = config.shape(&data).layout();
        let (m, k) = (config.latent as usize, config.codes as usize);
        let (params, codebooks) = super::init::initial_run(config, &layout, &data, &super::init::lloyd_cpu)?;
        let codebooks: Vec<Vec<f32>> = codebooks.iter().map(|c| crate::reference::to_f32(c)).collect();
        let level_updates = codebooks
            .iter()
            .map(|c| match (config.codebook_mode, config.reparam) {
                (CodebookMode::Grad, Reparam::Simvq) => LevelUpdate::Simvq(simvq::SimvqF32::new(config)),
                (CodebookMode::Grad, _) if config.cosine => LevelUpdate::Cosine(cosine::CosineF32::new(c)),
                (CodebookMode::Grad, _) if config.affine_lr > 0.0 => {
                    LevelUpdate::Affine(affine::AffineF32::new(c, m, config.affine_lr))
                }
                (CodebookMode::Grad, _) => LevelUpdate::Grad(Adam::new(c.len())),
                (CodebookMode::Ema, _) => LevelUpdate::Ema(Ema::new(c, k)),
                (CodebookMode::Alternate, _) => LevelUpdate::Alternate(Sgd::new(c.len())),
                (CodebookMode::Fixed, _) => LevelUpdate::Fixed,
            })
            .collect();
        let b = config.beta as f32;
        let range = crate::contract::BETA_RANGE;
        Ok(FastTrainer {
            work: Work::new(&layout, config, params.len()),
            adam_params: Adam::new(params.len()),
            params: crate::reference::to_f32(&params),
            codebooks,
            transport: crate::reference::to_f32(&crate::reference::train::identity(m)),
            adam_transport: Adam::new(m * m),
            level_updates,
            schedule: Schedule::new(config.seed, data.train_rows(), config.batch as usize),
            step: 0,
            used: vec![false; k],
            beta: (b as f64, (b / range) as f64, (b * range) as f64),
            last: None,
            map: config.latent_map(),
            config: config.clone(),
            layout,
            data,
        })
    }

    /// One training step on the next batch.
    pub fn step(&mut self) {
        let t = self.step + 1;
        let beta = self.forward(t);
        self.backward(t, beta);
        self.update(t);
        self.step = t;
    }
}

/// Several runs on the fast CPU engine, each exactly as it would be alone, trained side by side on the cores.
pub struct FastRuns {
    configs: Vec<TrainConfig>,
    runs: Vec<FastTrainer>,
}

impl FastRuns {
    /// One [`FastTrainer`] per configuration and data set.
    pub fn new(configs: &[TrainConfig], data: &[Dataset]) -> Result<Self> {
        if configs.len() != data.len() || configs.is_empty() {
            return Err(Error::Input(format!("{} configurations for {} data sets", configs.len(), data.len())));
        }
        let runs = configs.iter().zip(data).map(|(c, d)| FastTrainer::new(c, d.clone())).collect::<Result<_>>()?;
        Ok(FastRuns { configs: configs.to_vec(), runs })
    }
}

impl Trainer for FastRuns {
    fn configs(&self) -> &[TrainConfig] {
        &self.configs
    }

    fn steps_done(&self) -> u64 {
        self.runs[0].step
    }

    fn train_steps(&mut self, steps: u32) -> Result<()> {
        self.runs.par_iter_mut().for_each(|run| (0..steps).for_each(|_| run.step()));
        Ok(())
    }

    fn evaluate_run(&self, run: usize) -> Result<Metrics> {
        Ok(self.runs[run].evaluate())
    }

    fn read_states(&self) -> Result<Vec<State>> {
        Ok(self.runs.iter().map(|r| (r.params.clone(), r.codebooks[0].clone())).collect())
    }
}
