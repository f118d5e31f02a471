//! The GPU engine: [`BatchTrainer`] trains one run, or several of the same shapes in the same dispatches, behind
//! [`Trainer`]. An evaluation reads back one 32-byte statistics struct per level and one for the last batch, a few
//! sums, and where they apply beta, M and (for `subspace_err`) the decoder weights. Pipelines are shared by every
//! run on a device ([`Gpu::cached`]). The parts: `buffers.rs` (the step's buffers), `plan.rs` (the step), `stages/`
//! (one file per optional feature), `eval.rs` (the evaluator), `layers.rs` (dense chains).
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! use vqgrad::train::{TrainConfig, Trainer, gpu::BatchTrainer};
//! let gpu = match vqgrad::Gpu::new(&vqgrad::GpuOptions::default()) {
//!     Ok(gpu) => gpu,
//!     Err(_) if std::env::var("VQGRAD_REQUIRE_GPU").as_deref() != Ok("1") => return Ok(()), // no adapter: skip
//!     Err(e) => return Err(e),
//! };
//! // docs/PROTOCOL.md's E1 model, shortened: every `vqgrad train` flag is a field of TrainConfig.
//! let config = TrainConfig { steps: 50, eval_every: 50, n_train: 2048, n_eval: 512, ..TrainConfig::default() };
//! let data = config.load_data()?;
//! let result = BatchTrainer::one(&gpu, &config, &data)?.run(&mut |_run, metrics| println!("{metrics:?}"))?;
//! assert_eq!(result[0].metrics.step, 50);
//! assert!(result[0].metrics.perplexity >= 1.0);
//! # Ok(())
//! # }
//! ```

mod buffers;
mod eval;
mod layers;
mod plan;
mod stages;

use super::engine::{State, Trainer};
use super::{ADAM_BETAS, Metrics, Schedule, TrainConfig, batchable};
use crate::Estimator;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::timing::Timestamps;
use crate::gpu::{Gpu, read_buffer};
use crate::kernels::adam::Adam;
use crate::kernels::assign::{Assign, AssignBuffers, AssignShape};
use crate::kernels::codebook::{Codebook, CodebookShape, LloydBuffers};
use crate::kernels::dense::Dense;
use crate::kernels::estimator::EstimatorBackward;
use crate::kernels::gather::Gather;
use crate::kernels::learned::Learned;
use crate::kernels::loss::Loss;
use crate::kernels::orthogonal::Orthogonal;
use crate::kernels::residual::Residual;
use crate::kernels::schedule::AdaptiveBeta;
use crate::kernels::soft::Soft;
use crate::kernels::stats::Stats;
use crate::kernels::step::{StepConstants, StepUniform};
use crate::model::{EncoderKind, Layout, ModelShape};
use crate::reference::{to_f32, to_f64};
use buffers::{Sizes, Stacked, TrainBuffers};
use eval::{Evaluator, StageMetrics};
use plan::{Mark, StepPlan};
use stages::Ctx;

/// Steps recorded into one submit, at most.
pub const STEPS_PER_SUBMIT: u32 = 64;

/// The kernels, made once per device and shared by every run on it (see [`Gpu::cached`]).
pub(super) struct Kernels {
    pub dense: Dense,
    pub assign: Assign,
    pub estimator: EstimatorBackward,
    pub codebook: Codebook,
    pub stats: Stats,
    pub loss: Loss,
    pub adam: Adam,
    pub gather: Gather,
    pub soft: Soft,
    pub schedule: AdaptiveBeta,
    pub learned: Learned,
    pub residual: Residual,
    pub orthogonal: Orthogonal,
    pub affine: crate::kernels::affine::Affine,
    pub sgd: crate::kernels::sgd::Sgd,
    pub latent: crate::kernels::latent::Latent,
    /// Owns the layout the per-step kernels were made with; each run binds its own, identical one.
    _step_layout: StepUniform,
}

impl Kernels {
    fn new(gpu: &Gpu) -> Result<Self> {
        let device = &gpu.device;
        let step = StepUniform::new(device, 1)?;
        Ok(Kernels {
            dense: Dense::new(device)?,
            assign: Assign::new(device)?,
            estimator: EstimatorBackward::new(device)?,
            codebook: Codebook::new(device)?,
            stats: Stats::new(device)?,
            loss: Loss::new(device)?,
            adam: Adam::new(device, &step)?,
            gather: Gather::new(device, &step)?,
            soft: Soft::new(device, &step)?,
            schedule: AdaptiveBeta::new(device)?,
            learned: Learned::new(device)?,
            residual: Residual::new(device)?,
            orthogonal: Orthogonal::new(device)?,
            affine: crate::kernels::affine::Affine::new(device)?,
            sgd: crate::kernels::sgd::Sgd::new(device)?,
            latent: crate::kernels::latent::Latent::new(device)?,
            _step_layout: step,
        })
    }
}

/// Several runs of the same shapes (see [`super::batchable`]) trained in the same dispatches: every buffer holds the
/// runs one after another and every kernel covers them all, so a step costs one dispatch per kernel whatever the
/// number of runs. Each run reads its own data, schedule, estimator, beta and reset seed, and its results are
/// identical, bit for bit, to training it alone (a test checks this). All buffers, pipelines and bind groups are
/// made once in [`BatchTrainer::new`]; each step is one compute pass, a chunk of steps one command buffer and one
/// submit, and nothing is read back between evaluations.
pub struct BatchTrainer<'g> {
    gpu: &'g Gpu,
    configs: Vec<TrainConfig>,
    layout: Layout,
    sizes: Sizes,
    /// Each run's subspace basis and rank, for `subspace_err`.
    bases: Vec<Option<(Vec<f64>, usize)>>,
    schedules: Vec<Schedule>,
    step_uniform: StepUniform,
    buffers: TrainBuffers,
    plan: StepPlan,
    evaluator: Evaluator,
    step: u64,
}

impl<'g> BatchTrainer<'g> {
    /// Makes every run's initial state, uploads the data and the states stacked, and binds every kernel. The
    /// configurations must be [`super::batchable`] with each other and the data sets the same sizes.
    pub fn new(gpu: &'g Gpu, configs: &[TrainConfig], data: &[Dataset]) -> Result<Self> {
        let runs: Vec<(&TrainConfig, &Dataset)> = configs.iter().zip(data).collect();
        if configs.len() != data.len() {
            return Err(Error::Input(format!("{} configurations for {} data sets", configs.len(), data.len())));
        }
        Self::build(gpu, &runs)
    }

    /// A batch of one run.
    pub fn one(gpu: &'g Gpu, config: &TrainConfig, data: &Dataset) -> Result<Self> {
        Self::build(gpu, &[(config, data)])
    }

    fn build(gpu: &'g Gpu, runs: &[(&TrainConfig, &Dataset)]) -> Result<Self> {
        let Some(&(first, data0)) = runs.first() else {
            return Err(Error::Input("a batch needs at least one run".into()));
        };
        check_batch(runs)?;
        let layout = first.shape(data0).layout();
        let sz = Sizes::new(first, data0, runs.len() as u32);
        let init = stack_initial(gpu, runs, &layout)?;
        let mapped = first.latent_map() != crate::model::LatentMap::None;
        let buffers = TrainBuffers::new(gpu, &init, &layout, mapped, sz)?;
        let step_uniform = StepUniform::new(&gpu.device, STEPS_PER_SUBMIT)?;
        let ks = gpu.cached(Kernels::new)?;
        let configs: Vec<TrainConfig> = runs.iter().map(|&(c, _)| c.clone()).collect();
        let cx = Ctx { gpu, ks: &ks, bf: &buffers, configs: &configs, sz, step: &step_uniform };
        let plan = StepPlan::new(cx, &layout, &init.codebooks)?;
        drop(init);
        let shared = (runs.len() == 1).then_some((&buffers.eval, buffers.eval_labels.as_ref()));
        let evaluator = Evaluator::new(gpu, &ks, (first, &layout), sz, shared, data0.eval_labels.is_some())?;
        Ok(BatchTrainer {
            gpu,
            bases: runs.iter().map(|&(_, d)| d.basis.clone().map(|basis| (basis, d.rank as usize))).collect(),
            schedules: configs.iter().map(|c| Schedule::new(c.seed, sz.n_train as usize, sz.b as usize)).collect(),
            configs,
            layout,
            sizes: sz,
            step_uniform,
            buffers,
            plan,
            evaluator,
            step: 0,
        })
    }

    /// The most runs like `config` on `data` that one batch can hold on `gpu`: every stacked buffer must fit one
    /// storage binding. The training set is the largest (each run has its own).
    pub fn max_runs(gpu: &Gpu, config: &TrainConfig, data: &Dataset) -> u32 {
        let limit = gpu.device.limits().max_storage_buffer_binding_size;
        let rows = (data.train_rows() as u64, data.eval_rows() as u64);
        let largest = per_run_arrays(config, data.dim, rows).iter().map(|&(_, n)| n).max().unwrap_or(1).max(1) * 4;
        (limit / largest).clamp(1, gpu.device.limits().max_compute_workgroups_per_dimension as u64) as u32
    }

    /// Refuses, before any data exists, a run whose arrays on data of dimension `dim` with `rows` (train, eval)
    /// rows cannot fit one storage binding of `gpu`: one line naming the array, its bytes and the limit.
    pub fn check_fits(gpu: &Gpu, config: &TrainConfig, dim: u32, rows: (u64, u64)) -> Result<()> {
        let limit = gpu.device.limits().max_storage_buffer_binding_size;
        for (what, n) in per_run_arrays(config, dim, rows) {
            let bytes = n.saturating_mul(4);
            if bytes > limit {
                return Err(Error::Input(format!(
                    "{what} needs {bytes} bytes in one binding; `{}` allows {limit} (max_storage_buffer_binding_size)",
                    gpu.info().name
                )));
            }
        }
        Ok(())
    }

    /// Records one training step of every run (slot `slot` of this submit, step `t`) into its own compute pass.
    /// `mark` is called after each kernel group with its name (a profile's timestamps; a no-op otherwise).
    fn record_step(&self, encoder: &mut wgpu::CommandEncoder, slot: u32, t: u64, mark: Mark<'_>) {
        let mut pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("train step"), timestamp_writes: None });
        self.plan.record(&mut pass, &self.step_uniform, slot, t, mark);
    }

    /// Writes the next `chunk` steps' batches (every run's, from its own schedule) and constants; the steps must
    /// then be recorded and submitted.
    fn prepare_chunk(&mut self, chunk: u32) -> Result<()> {
        let (b, lr) = (self.sizes.b, self.configs[0].lr);
        // Each run's schedule slice holds STEPS_PER_SUBMIT batches; the same row offset serves every run.
        let per_run = (STEPS_PER_SUBMIT * b) as usize;
        let mut schedule = vec![0u32; self.schedules.len() * per_run];
        for (run, s) in self.schedules.iter_mut().enumerate() {
            for slot in 0..chunk as usize {
                let at = run * per_run + slot * b as usize;
                schedule[at..at + b as usize].copy_from_slice(s.next_batch());
            }
        }
        let constants: Vec<StepConstants> = (0..chunk)
            .map(|slot| {
                let t = self.step + 1 + slot as u64;
                let tau = self.configs[0].tau_at(t) as f32; // batchable runs share the schedule
                StepConstants::adam(t, lr, ADAM_BETAS.0, ADAM_BETAS.1, slot * b).with_tau(tau)
            })
            .collect();
        self.gpu.queue.write_buffer(&self.buffers.schedule, 0, bytemuck::cast_slice(&schedule));
        self.step_uniform.write(&self.gpu.queue, &constants)
    }
}

impl Trainer for BatchTrainer<'_> {
    fn configs(&self) -> &[TrainConfig] {
        &self.configs
    }

    fn steps_done(&self) -> u64 {
        self.step
    }

    /// Runs `steps` training steps of every run, `STEPS_PER_SUBMIT` to a submit, with no readback.
    fn train_steps(&mut self, steps: u32) -> Result<()> {
        let mut left = steps;
        while left > 0 {
            let chunk = left.min(STEPS_PER_SUBMIT);
            self.prepare_chunk(chunk)?;
            let mut encoder =
                self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train") });
            for slot in 0..chunk {
                self.record_step(&mut encoder, slot, self.step + 1 + slot as u64, &mut |_, _| {});
            }
            self.gpu.queue.submit([encoder.finish()]);
            self.step += chunk as u64;
            left -= chunk;
        }
        self.gpu.check()
    }

    /// Evaluates run `run` on its eval set (and its last batch) and reads back the statistics.
    fn evaluate_run(&self, run: usize) -> Result<Metrics> {
        let config = &self.configs[run];
        let mut encoder =
            self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("eval") });
        self.evaluator.record(&mut encoder, &self.buffers, run as u64, config.lloyd_iters);
        self.gpu.queue.submit([encoder.finish()]);
        let stages = StageMetrics {
            beta: self.plan.adaptive.as_ref().map(|a| a.read(self.gpu, run)).transpose()?,
            transport: match &self.plan.learned {
                Some(l) if config.estimator == Estimator::Learned => Some(l.read(self.gpu, run)?),
                _ => None,
            },
        };
        let shapes = (config, &self.layout, self.sizes);
        let metrics = self.evaluator.read(self.gpu, shapes, self.step, stages, self.bases[run].as_ref())?;
        self.gpu.check()?;
        Ok(metrics)
    }

    /// Each run's flat parameters and codebook, read back (for tests and for saving a model).
    fn read_states(&self) -> Result<Vec<State>> {
        let (device, queue) = (&self.gpu.device, &self.gpu.queue);
        let params: Vec<f32> = read_buffer(device, queue, &self.buffers.params)?;
        let codebook: Vec<f32> = read_buffer(device, queue, &self.buffers.levels[0].codebook)?;
        let (p, c) = (self.layout.len as usize, (self.sizes.k * self.sizes.m) as usize);
        Ok((0..self.runs())
            .map(|r| (params[r * p..(r + 1) * p].to_vec(), codebook[r * c..(r + 1) * c].to_vec()))
            .collect())
    }

    /// Runs `steps` training steps (at most `STEPS_PER_SUBMIT`) with a timestamp after every kernel, and returns
    /// the GPU nanoseconds per step of each kernel; `None` where the device has no timestamps inside passes.
    fn profile_steps(&mut self, steps: u32) -> Result<Option<Vec<(&'static str, f64)>>> {
        let steps = steps.clamp(1, STEPS_PER_SUBMIT);
        let Some(mut stamps) = Timestamps::new(self.gpu, steps * 24)? else {
            return Ok(None);
        };
        self.prepare_chunk(steps)?;
        let mut encoder =
            self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
        for slot in 0..steps {
            self.record_step(&mut encoder, slot, self.step + 1 + slot as u64, &mut |pass, label| {
                stamps.mark(pass, label)
            });
        }
        stamps.resolve(&mut encoder);
        self.gpu.queue.submit([encoder.finish()]);
        self.step += steps as u64;
        let totals = stamps.read(self.gpu)?;
        self.gpu.check()?;
        // "start" also ends each step's stretch from the previous step's last kernel: the gap between passes.
        Ok(Some(totals.into_iter().map(|(label, ns)| (label, ns / steps as f64)).collect()))
    }

    /// Bytes of the batch's storage buffers (data, state, activations, the evaluation workspace; not the small
    /// uniforms).
    fn buffer_bytes(&self) -> u64 {
        let all = self.buffers.all().chain(self.plan.buffers()).chain(self.evaluator.buffers());
        // Level 0's buffers are the step's own, and a batch of one evaluates on its eval set in place.
        let mut distinct: Vec<&wgpu::Buffer> = Vec::new();
        for b in all {
            if !distinct.contains(&b) {
                distinct.push(b);
            }
        }
        distinct.iter().map(|b| b.size()).sum()
    }

    fn wait(&self) -> Result<()> {
        self.gpu.wait()
    }
}

/// [`lloyd_on_gpu`] on f64 values, narrowed to f32 and the result widened back.
pub fn lloyd_f64(gpu: &Gpu, z: &[f64], centres: &[f64], m: usize, iters: usize) -> Result<Vec<f64>> {
    let iters = u32::try_from(iters).map_err(|_| Error::Input(format!("{iters} Lloyd iterations are too many")))?;
    Ok(to_f64(&lloyd_on_gpu(gpu, &to_f32(z), &to_f32(centres), m as u32, iters)?))
}

/// Lloyd's algorithm on the GPU: `iters` rounds of assign (the nearest-code kernel) and centroid update, from
/// `centres` (k x m) on the rows of `z` (n x m). Codes that no row picks stay where they are. Returns the centres.
pub fn lloyd_on_gpu(gpu: &Gpu, z: &[f32], centres: &[f32], m: u32, iters: u32) -> Result<Vec<f32>> {
    let device = &gpu.device;
    let (n, k) = ((z.len() / m as usize) as u32, (centres.len() / m as usize) as u32);
    let zb = gpu.upload("lloyd z", z)?;
    let codebook = gpu.upload("lloyd centres", centres)?;
    let index = gpu.zeroed::<u32>("lloyd index", n as usize)?;
    let dist = gpu.zeroed::<f32>("lloyd distance", n as usize)?;
    let counts = gpu.zeroed::<u32>("lloyd counts", k as usize)?;
    let ks = gpu.cached(Kernels::new)?;
    let assign = ks.assign.bind(
        device,
        &AssignBuffers { z: &zb, codebook: &codebook, index: &index, distance: &dist },
        AssignShape { n, k, m },
    )?;
    let update = ks.codebook.bind_lloyd(
        device,
        &LloydBuffers { z: &zb, index: &index, codebook: &codebook, counts: &counts },
        CodebookShape { n, k, m },
    )?;
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lloyd") });
    {
        let mut pass =
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("lloyd"), timestamp_writes: None });
        for _ in 0..iters {
            assign.encode(&mut pass);
            update.encode(&mut pass);
        }
    }
    gpu.queue.submit([encoder.finish()]);
    let out: Vec<f32> = read_buffer(device, &gpu.queue, &codebook)?;
    gpu.check()?;
    Ok(out[..(k * m) as usize].to_vec())
}
/// The initial parameters and codebooks of a run ([`super::init::initial_run`]), with a k-means init's Lloyd
/// iterations on the GPU (the assign kernel).
fn initial_run_state(
    gpu: &Gpu,
    config: &TrainConfig,
    layout: &Layout,
    data: &Dataset,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let lloyd = |z: &[f64], c: &[f64], m: usize, iters: usize| lloyd_f64(gpu, z, c, m, iters);
    let (params, codebooks) = super::init::initial_run(config, layout, data, &lloyd)?;
    Ok((to_f32(&params), codebooks.iter().map(|c| to_f32(c)).collect()))
}

/// Checks that the runs can share a batch: each valid, [`batchable`] with the first, on data of the same sizes.
fn check_batch(runs: &[(&TrainConfig, &Dataset)]) -> Result<()> {
    let (first, data0) = runs[0];
    let sizes = |d: &Dataset| (d.dim, d.train_rows(), d.eval_rows(), d.eval_labels.is_some(), d.classes);
    for &(c, d) in runs {
        c.validate()?;
        if !batchable(first, c) {
            return Err(Error::Input(format!(
                "run (seed {}, {}) cannot share a batch: the settings differ in more than the seed, estimator, \
                 beta and noise",
                c.seed, c.estimator
            )));
        }
        if sizes(d) != sizes(data0) {
            return Err(Error::Input("every run's data set must have the same sizes".into()));
        }
    }
    Ok(())
}

/// Every run's initial state and data, stacked run after run.
fn stack_initial(gpu: &Gpu, runs: &[(&TrainConfig, &Dataset)], layout: &Layout) -> Result<Stacked> {
    let levels = runs[0].0.levels as usize;
    let labelled = runs[0].1.eval_labels.is_some();
    let mut out = Stacked {
        train: Vec::new(),
        eval: Vec::new(),
        labels: labelled.then(Vec::new),
        params: Vec::new(),
        codebooks: vec![Vec::new(); levels],
    };
    for &(c, data) in runs {
        let (params, codebooks) = initial_run_state(gpu, c, layout, data)?;
        out.params.extend(params);
        for (stack, codebook) in out.codebooks.iter_mut().zip(codebooks) {
            stack.extend(codebook);
        }
        out.train.extend_from_slice(&data.train);
        out.eval.extend_from_slice(&data.eval);
        if let Some(labels) = &mut out.labels {
            labels.extend(data.eval_labels.iter().flatten());
        }
    }
    Ok(out)
}

/// Every array a run of `config` has of its own on the GPU, in f32 elements: each is stacked across a batch's runs
/// into one storage binding. Saturating, so that a size past u64 still compares as too large.
fn per_run_arrays(config: &TrainConfig, dim: u32, (n_train, n_eval): (u64, u64)) -> [(&'static str, u64); 9] {
    let (b, d, m, k) = (config.batch as u64, dim as u64, config.latent as u64, config.codes as u64);
    let hidden = if config.encoder == EncoderKind::Mlp { config.hidden as u64 } else { 1 };
    let shape = ModelShape {
        dim,
        latent: config.latent,
        codes: config.codes,
        encoder: config.encoder,
        hidden: config.hidden,
        lookup_width: config.lookup_width,
    };
    [
        ("the training set (rows x d)", n_train.saturating_mul(d)),
        ("the eval set (rows x d)", n_eval.saturating_mul(d)),
        ("a submit's minibatch schedule", (STEPS_PER_SUBMIT as u64).saturating_mul(b)),
        ("the batch (B x d)", b.saturating_mul(d)),
        ("the batch's hidden layer (B x h)", b.saturating_mul(hidden)),
        ("the batch's encodings (B x m)", b.saturating_mul(m)),
        ("the codebook (K x m)", k.saturating_mul(m)),
        ("the reset's marks (K + 1)", k.saturating_add(1)),
        ("the model's parameters", shape.param_count().unwrap_or(u64::MAX)),
    ]
}
