//! The GPU engine. All buffers, pipelines and bind groups are made once in [`GpuTrainer::new`]; each step is one
//! compute pass, a chunk of steps is one command buffer and one submit, and nothing is read back between
//! evaluations. An evaluation reads back two 32-byte statistics structs, two sums and (for `subspace_err`) the
//! decoder weights. [`BatchTrainer`] trains several runs of the same shapes in the same dispatches; pipelines are
//! shared by every run on a device ([`Gpu::cached`]).

use super::{
    ADAM_BETAS, ADAM_EPS, EMA, KMEANS_ITERS, KMEANS_SAMPLES, Metrics, RunResult, Schedule, TrainConfig, initial_state,
    kmeans_plus_plus,
};
use crate::Estimator;
use crate::data::DataSpec;
use crate::data::{Dataset, Stream, rng};
use crate::error::{Error, Result};
use crate::gpu::timing::Timestamps;
use crate::gpu::{Gpu, read_buffer};
use crate::kernels::adam::{Adam, AdamSettings, BoundAdam};
use crate::kernels::assign::{Assign, AssignBuffers, AssignShape, BoundAssign};
use crate::kernels::codebook::{
    BoundCounts, BoundEma, BoundGrad, BoundReset, Codebook, CodebookShape, CountBuffers, EmaBuffers, EmaSettings,
    GradBuffers, LloydBuffers, ResetBuffers, seed_mix,
};
use crate::kernels::dense::{BoundDense, Dense, Linear, LossTarget};
use crate::kernels::estimator::{
    BoundEstimator, EstimatorBackward, EstimatorBuffers, EstimatorSettings, EstimatorShape,
};
use crate::kernels::gather::{BoundGather, Gather};
use crate::kernels::loss::{BoundLoss, Loss};
use crate::kernels::stats::{BoundStats, Stats, StatsBuffers, StatsShape};
use crate::kernels::step::{StepConstants, StepUniform};
use crate::model::{CodebookInit, CodebookMode, EncoderKind, Layout};
use crate::reference::to_f64;
use crate::reference::train::CpuModel;
use std::time::Instant;

/// Steps recorded into one submit, at most.
pub const STEPS_PER_SUBMIT: u32 = 64;

/// The kernels, made once per device and shared by every run on it (see [`Gpu::cached`]).
struct Kernels {
    dense: Dense,
    assign: Assign,
    estimator: EstimatorBackward,
    codebook: Codebook,
    stats: Stats,
    loss: Loss,
    adam: Adam,
    gather: Gather,
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
            _step_layout: step,
        })
    }
}

/// The recorded pieces of one training step and of one evaluation.
struct Recorded {
    gather_batch: BoundGather,
    encoder: Vec<BoundDense>,
    /// Also writes q = c[a].
    assign: BoundAssign,
    /// The decoder; its last layer also writes the loss gradient `dxhat`.
    decoder: Vec<BoundDense>,
    decoder_back: Vec<BoundDense>,
    estimator: BoundEstimator,
    encoder_back: Vec<BoundDense>,
    codebook: CodebookUpdate,
    adam_params: BoundAdam,
    /// This step's counts for the dead-code marks (grad mode; the EMA update counts by itself).
    step_counts: BoundCounts,
    reset: Option<BoundReset>,
    // Evaluation.
    eval_encoder: Vec<BoundDense>,
    eval_assign: BoundAssign,
    eval_counts: BoundCounts,
    eval_stats: BoundStats,
    eval_decoder: Vec<BoundDense>,
    eval_sq: BoundLoss,
    batch_sq: BoundLoss,
    batch_counts: BoundCounts,
    batch_stats: BoundStats,
}

enum CodebookUpdate {
    Grad(BoundGrad, BoundAdam),
    Ema(BoundEma),
}

/// Every buffer of a run, made once.
struct Buffers {
    train: wgpu::Buffer,
    eval: wgpu::Buffer,
    eval_labels: Option<wgpu::Buffer>,
    schedule: wgpu::Buffer,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    adam_m: wgpu::Buffer,
    adam_v: wgpu::Buffer,
    codebook: wgpu::Buffer,
    codebook_grad: wgpu::Buffer,
    codebook_m: wgpu::Buffer,
    codebook_v: wgpu::Buffer,
    ema_size: wgpu::Buffer,
    ema_sum: wgpu::Buffer,
    counts: wgpu::Buffer,
    used: wgpu::Buffer,
    metrics: wgpu::Buffer,
    // The batch.
    x: wgpu::Buffer,
    z: wgpu::Buffer,
    index: wgpu::Buffer,
    dist: wgpu::Buffer,
    q: wgpu::Buffer,
    xhat: wgpu::Buffer,
    dxhat: wgpu::Buffer,
    g: wgpu::Buffer,
    dz: wgpu::Buffer,
    h_enc: wgpu::Buffer,
    h_dec: wgpu::Buffer,
    dh_enc: wgpu::Buffer,
    dh_dec: wgpu::Buffer,
    batch_counts: wgpu::Buffer,
    // The eval set.
    eval_z: wgpu::Buffer,
    eval_index: wgpu::Buffer,
    eval_dist: wgpu::Buffer,
    eval_q: wgpu::Buffer,
    eval_xhat: wgpu::Buffer,
    eval_hidden: wgpu::Buffer,
    eval_counts: wgpu::Buffer,
}

impl Buffers {
    /// Bytes of every buffer of the run.
    fn bytes(&self) -> u64 {
        let all = [
            &self.train,
            &self.eval,
            &self.schedule,
            &self.params,
            &self.grads,
            &self.adam_m,
            &self.adam_v,
            &self.codebook,
            &self.codebook_grad,
            &self.codebook_m,
            &self.codebook_v,
            &self.ema_size,
            &self.ema_sum,
            &self.counts,
            &self.used,
            &self.metrics,
            &self.x,
            &self.z,
            &self.index,
            &self.dist,
            &self.q,
            &self.xhat,
            &self.dxhat,
            &self.g,
            &self.dz,
            &self.h_enc,
            &self.h_dec,
            &self.dh_enc,
            &self.dh_dec,
            &self.batch_counts,
            &self.eval_z,
            &self.eval_index,
            &self.eval_dist,
            &self.eval_q,
            &self.eval_xhat,
            &self.eval_hidden,
            &self.eval_counts,
        ];
        all.iter().map(|b| b.size()).sum::<u64>() + self.eval_labels.as_ref().map_or(0, |b| b.size())
    }
}

/// A run on the GPU.
pub struct GpuTrainer<'g> {
    gpu: &'g Gpu,
    config: TrainConfig,
    data_dim: u32,
    layout: Layout,
    basis: Option<(Vec<f64>, usize)>,
    step_uniform: StepUniform,
    rec: Recorded,
    buffers: Buffers,
    schedule: Schedule,
    step: u64,
    n_eval: u32,
}

/// Forward through `layers` (ReLU after all but the last), from `input` into `outs`; with `loss`, the last layer
/// also writes the loss gradient.
#[allow(clippy::too_many_arguments)] // one call per chain; a struct would only rename the arguments
fn forward_chain(
    dense: &Dense,
    device: &wgpu::Device,
    layers: &[Linear],
    input: &wgpu::Buffer,
    outs: &[&wgpu::Buffer],
    params: &wgpu::Buffer,
    rows: u32,
    loss: Option<LossTarget<'_>>,
) -> Result<Vec<BoundDense>> {
    let mut out = Vec::new();
    for (i, &layer) in layers.iter().enumerate() {
        let x = if i == 0 { input } else { outs[i - 1] };
        let last = i + 1 == layers.len();
        out.push(match (&loss, last) {
            (Some(l), true) => dense.bind_forward_with_loss(device, layer, x, params, outs[i], rows, l)?,
            _ => dense.bind_forward(device, layer, x, params, outs[i], rows, !last)?,
        });
    }
    Ok(out)
}

/// Backward through `layers` from the gradient `dy_last` at the last output: parameter gradients into `grads`;
/// the gradient at each hidden input into `hidden_grads[i - 1]` (then ReLU-masked), and at the chain's input into
/// `input_grad` when given.
#[allow(clippy::too_many_arguments)] // one call per chain; a struct would only rename the arguments
fn backward_chain(
    dense: &Dense,
    device: &wgpu::Device,
    layers: &[Linear],
    input: &wgpu::Buffer,
    outs: &[&wgpu::Buffer],
    dy_last: &wgpu::Buffer,
    hidden_grads: &[&wgpu::Buffer],
    input_grad: Option<&wgpu::Buffer>,
    params: &wgpu::Buffer,
    grads: &wgpu::Buffer,
    rows: u32,
) -> Result<Vec<BoundDense>> {
    let mut out = Vec::new();
    for i in (0..layers.len()).rev() {
        let layer = layers[i];
        let x = if i == 0 { input } else { outs[i - 1] };
        let dy = if i + 1 == layers.len() { dy_last } else { hidden_grads[i] };
        out.push(dense.bind_weight_and_bias_grad(device, layer, dy, x, grads, rows)?);
        if i > 0 {
            let dx = hidden_grads[i - 1];
            out.push(dense.bind_input_grad(device, layer, dy, params, dx, rows)?);
            out.push(dense.bind_relu_mask(device, dx, outs[i - 1], rows * layer.input)?);
        } else if let Some(dx) = input_grad {
            out.push(dense.bind_input_grad(device, layer, dy, params, dx, rows)?);
        }
    }
    Ok(out)
}

impl<'g> GpuTrainer<'g> {
    /// Uploads the data and the initial state, and binds every kernel.
    pub fn new(gpu: &'g Gpu, config: &TrainConfig, data: &Dataset) -> Result<Self> {
        config.validate()?;
        let device = &gpu.device;
        let layout = config.shape(data).layout();
        let (b, d, m, k, h) = (config.batch, data.dim, config.latent, config.codes, config.hidden);
        let (n_train, n_eval) = (data.train_rows() as u32, data.eval_rows() as u32);
        let (params0, mut codebook0) = initial_state(config, &layout);
        if config.codebook_init == CodebookInit::Kmeans {
            // Encodings of the first samples with the initial parameters (on the host: one small product), the
            // k-means++ seeding (sequential by nature), then Lloyd's iterations on the GPU with the assign kernel.
            let model =
                CpuModel { layout: layout.clone(), latent: m as usize, params: to_f64(&params0), codebook: vec![] };
            let rows = data.train_rows().min(KMEANS_SAMPLES);
            let z = model.encode(&to_f64(&data.train[..rows * d as usize]), rows);
            let seeds = kmeans_plus_plus(&z, m as usize, k as usize, &mut rng(config.seed, Stream::Kmeans));
            let z32: Vec<f32> = z.iter().map(|&v| v as f32).collect();
            let seeds32: Vec<f32> = seeds.iter().map(|&v| v as f32).collect();
            codebook0 = lloyd_on_gpu(gpu, &z32, &seeds32, m, KMEANS_ITERS as u32)?;
        }
        let (ema_size0, ema_sum0) = crate::kernels::codebook::ema_initial_state(&codebook0, k as usize);
        let mlp = config.encoder == EncoderKind::Mlp;
        let f = |label: &str, len: u32| gpu.zeroed::<f32>(label, len as usize);
        let u = |label: &str, len: u32| gpu.zeroed::<u32>(label, len as usize);
        let hidden = if mlp { b * h } else { 1 };
        let bufs = Buffers {
            train: gpu.upload("train data", &data.train)?,
            eval: gpu.upload("eval data", &data.eval)?,
            eval_labels: data.eval_labels.as_ref().map(|l| gpu.upload("eval labels", l)).transpose()?,
            schedule: u("schedule", STEPS_PER_SUBMIT * b)?,
            params: gpu.upload("params", &params0)?,
            grads: f("grads", layout.len)?,
            adam_m: f("adam m", layout.len)?,
            adam_v: f("adam v", layout.len)?,
            codebook: gpu.upload("codebook", &codebook0)?,
            codebook_grad: f("codebook grad", k * m)?,
            codebook_m: f("codebook adam m", k * m)?,
            codebook_v: f("codebook adam v", k * m)?,
            ema_size: gpu.upload("ema size", &ema_size0)?,
            ema_sum: gpu.upload("ema sum", &ema_sum0)?,
            counts: u("counts", k)?,
            used: u("used codes", k)?,
            metrics: f("metrics", 4)?,
            x: f("x", b * d)?,
            z: f("z", b * m)?,
            index: u("index", b)?,
            dist: f("distance", b)?,
            q: f("q", b * m)?,
            xhat: f("xhat", b * d)?,
            dxhat: f("dxhat", b * d)?,
            g: f("g", b * m)?,
            dz: f("dz", b * m)?,
            h_enc: f("h enc", hidden)?,
            h_dec: f("h dec", hidden)?,
            dh_enc: f("dh enc", hidden)?,
            dh_dec: f("dh dec", hidden)?,
            batch_counts: u("batch counts", k)?,
            eval_z: f("eval z", n_eval * m)?,
            eval_index: u("eval index", n_eval)?,
            eval_dist: f("eval distance", n_eval)?,
            eval_q: f("eval q", n_eval * m)?,
            eval_xhat: f("eval xhat", n_eval * d)?,
            eval_hidden: f("eval hidden", if mlp { n_eval * h } else { 1 })?,
            eval_counts: u("eval counts", k)?,
        };
        let step_uniform = StepUniform::new(device, STEPS_PER_SUBMIT)?;
        let ks = gpu.cached(Kernels::new)?;
        let rec = Self::bind(device, &ks, &bufs, config, &layout, &step_uniform, (n_train, n_eval, d, data.classes))?;
        Ok(GpuTrainer {
            gpu,
            config: config.clone(),
            data_dim: d,
            layout,
            basis: data.basis.clone().map(|basis| (basis, data.rank as usize)),
            step_uniform,
            rec,
            buffers: bufs,
            schedule: Schedule::new(config.seed, data.train_rows(), b as usize),
            step: 0,
            n_eval,
        })
    }

    fn bind(
        device: &wgpu::Device,
        ks: &Kernels,
        bf: &Buffers,
        config: &TrainConfig,
        layout: &Layout,
        step: &StepUniform,
        (n_train, n_eval, d, classes): (u32, u32, u32, u32),
    ) -> Result<Recorded> {
        let (b, m, k) = (config.batch, config.latent, config.codes);
        let mlp = config.encoder == EncoderKind::Mlp;
        let enc_outs: Vec<&wgpu::Buffer> = if mlp { vec![&bf.h_enc, &bf.z] } else { vec![&bf.z] };
        let dec_outs: Vec<&wgpu::Buffer> = if mlp { vec![&bf.h_dec, &bf.xhat] } else { vec![&bf.xhat] };
        let eval_enc: Vec<&wgpu::Buffer> = if mlp { vec![&bf.eval_hidden, &bf.eval_z] } else { vec![&bf.eval_z] };
        let eval_dec: Vec<&wgpu::Buffer> = if mlp { vec![&bf.eval_hidden, &bf.eval_xhat] } else { vec![&bf.eval_xhat] };
        let cb_shape = CodebookShape { n: b, k, m };
        let adam = AdamSettings { beta1: ADAM_BETAS.0 as f32, beta2: ADAM_BETAS.1 as f32, eps: ADAM_EPS as f32 };
        let codebook = match config.codebook_mode {
            CodebookMode::Grad => CodebookUpdate::Grad(
                ks.codebook.bind_grad(
                    device,
                    &GradBuffers { z: &bf.z, index: &bf.index, codebook: &bf.codebook, grad: &bf.codebook_grad },
                    cb_shape,
                    b,
                )?,
                ks.adam.bind(device, &bf.codebook, &bf.codebook_grad, &bf.codebook_m, &bf.codebook_v, k * m, adam)?,
            ),
            CodebookMode::Ema => CodebookUpdate::Ema(ks.codebook.bind_ema(
                device,
                &EmaBuffers {
                    z: &bf.z,
                    index: &bf.index,
                    codebook: &bf.codebook,
                    counts: &bf.counts,
                    ema_size: &bf.ema_size,
                    ema_sum: &bf.ema_sum,
                },
                cb_shape,
                EmaSettings { decay: EMA.0 as f32, eps: EMA.1 as f32 },
            )?),
        };
        let reset = if config.reset_dead > 0 {
            let ema = (config.codebook_mode == CodebookMode::Ema).then_some((&bf.ema_size, &bf.ema_sum));
            let buffers = ResetBuffers { z: &bf.z, codebook: &bf.codebook, counts: &bf.counts, used: &bf.used, ema };
            Some(ks.codebook.bind_reset(device, &buffers, cb_shape, seed_mix(config.seed), step)?)
        } else {
            None
        };
        let estimator_settings = EstimatorSettings { estimator: config.estimator, beta: config.beta as f32, batch: b };
        let eval_labels = bf.eval_labels.as_ref();
        Ok(Recorded {
            gather_batch: ks.gather.bind_rows(
                device,
                &bf.train,
                n_train,
                &bf.schedule,
                STEPS_PER_SUBMIT * b,
                &bf.x,
                b,
                d,
            )?,
            encoder: forward_chain(&ks.dense, device, &layout.encoder, &bf.x, &enc_outs, &bf.params, b, None)?,
            assign: ks.assign.bind_with_codes(
                device,
                &AssignBuffers { z: &bf.z, codebook: &bf.codebook, index: &bf.index, distance: &bf.dist },
                AssignShape { n: b, k, m },
                &bf.q,
            )?,
            decoder: forward_chain(
                &ks.dense,
                device,
                &layout.decoder,
                &bf.q,
                &dec_outs,
                &bf.params,
                b,
                Some(LossTarget { target: &bf.x, grad: &bf.dxhat, scale: (2.0 / (b as f64 * d as f64)) as f32 }),
            )?,
            decoder_back: backward_chain(
                &ks.dense,
                device,
                &layout.decoder,
                &bf.q,
                &dec_outs,
                &bf.dxhat,
                &[&bf.dh_dec],
                Some(&bf.g),
                &bf.params,
                &bf.grads,
                b,
            )?,
            estimator: ks.estimator.bind(
                device,
                &EstimatorBuffers { g: &bf.g, z: &bf.z, index: &bf.index, codebook: &bf.codebook, grad_z: &bf.dz },
                EstimatorShape { n: b, k, m },
                estimator_settings,
            )?,
            encoder_back: backward_chain(
                &ks.dense,
                device,
                &layout.encoder,
                &bf.x,
                &enc_outs,
                &bf.dz,
                &[&bf.dh_enc],
                None,
                &bf.params,
                &bf.grads,
                b,
            )?,
            codebook,
            adam_params: ks.adam.bind(device, &bf.params, &bf.grads, &bf.adam_m, &bf.adam_v, layout.len, adam)?,
            step_counts: ks.codebook.bind_counts(
                device,
                &CountBuffers { index: &bf.index, counts: &bf.counts },
                b,
                k,
            )?,
            reset,
            eval_encoder: forward_chain(
                &ks.dense,
                device,
                &layout.encoder,
                &bf.eval,
                &eval_enc,
                &bf.params,
                n_eval,
                None,
            )?,
            eval_assign: ks.assign.bind_with_codes(
                device,
                &AssignBuffers {
                    z: &bf.eval_z,
                    codebook: &bf.codebook,
                    index: &bf.eval_index,
                    distance: &bf.eval_dist,
                },
                AssignShape { n: n_eval, k, m },
                &bf.eval_q,
            )?,
            eval_counts: ks.codebook.bind_counts(
                device,
                &CountBuffers { index: &bf.eval_index, counts: &bf.eval_counts },
                n_eval,
                k,
            )?,
            eval_stats: ks.stats.bind(
                device,
                &StatsBuffers {
                    index: &bf.eval_index,
                    distance: &bf.eval_dist,
                    counts: &bf.eval_counts,
                    labels: eval_labels,
                },
                StatsShape { n: n_eval, k, m, classes: if eval_labels.is_some() { classes } else { 0 } },
            )?,
            eval_decoder: forward_chain(
                &ks.dense,
                device,
                &layout.decoder,
                &bf.eval_q,
                &eval_dec,
                &bf.params,
                n_eval,
                None,
            )?,
            eval_sq: ks.loss.bind_sum_sq_diff(device, &bf.eval_xhat, &bf.eval, &bf.metrics, 0, n_eval * d)?,
            batch_sq: ks.loss.bind_sum_sq_diff(device, &bf.xhat, &bf.x, &bf.metrics, 1, b * d)?,
            batch_counts: ks.codebook.bind_counts(
                device,
                &CountBuffers { index: &bf.index, counts: &bf.batch_counts },
                b,
                k,
            )?,
            batch_stats: ks.stats.bind(
                device,
                &StatsBuffers { index: &bf.index, distance: &bf.dist, counts: &bf.batch_counts, labels: None },
                StatsShape { n: b, k, m, classes: 0 },
            )?,
        })
    }

    /// Records one training step (slot `slot` of this submit) into its own compute pass. `mark` is called after
    /// each kernel with its name (a profile's timestamps; a no-op otherwise).
    fn record_step(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        slot: u32,
        t: u64,
        mark: &mut dyn FnMut(&mut wgpu::ComputePass, &'static str),
    ) {
        let r = &self.rec;
        let s = &self.step_uniform;
        let mut pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("train step"), timestamp_writes: None });
        mark(&mut pass, "start");
        r.gather_batch.encode_step(&mut pass, s, slot);
        mark(&mut pass, "gather batch");
        r.encoder.iter().for_each(|op| op.encode(&mut pass));
        mark(&mut pass, "encoder forward");
        r.assign.encode(&mut pass);
        mark(&mut pass, "assign + q");
        r.decoder.iter().for_each(|op| op.encode(&mut pass));
        mark(&mut pass, "decoder forward + loss gradient");
        r.decoder_back.iter().for_each(|op| op.encode(&mut pass));
        mark(&mut pass, "decoder backward");
        r.estimator.encode(&mut pass);
        mark(&mut pass, "estimator backward");
        r.encoder_back.iter().for_each(|op| op.encode(&mut pass));
        mark(&mut pass, "encoder backward");
        match &r.codebook {
            CodebookUpdate::Grad(grad, adam) => {
                grad.encode(&mut pass);
                mark(&mut pass, "codebook gradient");
                adam.encode(&mut pass, s, slot);
                mark(&mut pass, "codebook adam");
            }
            CodebookUpdate::Ema(ema) => {
                ema.encode(&mut pass);
                mark(&mut pass, "codebook ema");
            }
        }
        r.adam_params.encode(&mut pass, s, slot);
        mark(&mut pass, "parameter adam");
        if let Some(reset) = &r.reset {
            if self.config.codebook_mode == CodebookMode::Grad {
                r.step_counts.encode(&mut pass); // the EMA update counted already
            }
            reset.encode_mark(&mut pass);
            if t.is_multiple_of(self.config.reset_dead as u64) {
                reset.encode_reset(&mut pass, s, slot);
            }
            mark(&mut pass, "dead-code reset");
        }
    }

    /// Writes the next `chunk` steps' batches and constants; the steps must then be recorded and submitted.
    fn prepare_chunk(&mut self, chunk: u32) -> Result<()> {
        let b = self.config.batch;
        let mut schedule = Vec::with_capacity((chunk * b) as usize);
        let mut constants = Vec::with_capacity(chunk as usize);
        for slot in 0..chunk {
            schedule.extend_from_slice(self.schedule.next_batch());
            let t = self.step + 1 + slot as u64;
            constants.push(StepConstants::adam(t, self.config.lr, ADAM_BETAS.0, ADAM_BETAS.1, slot * b));
        }
        self.gpu.queue.write_buffer(&self.buffers.schedule, 0, bytemuck::cast_slice(&schedule));
        self.step_uniform.write(&self.gpu.queue, &constants)
    }

    /// Runs `steps` training steps (at most `STEPS_PER_SUBMIT`) with a timestamp after every kernel, and returns
    /// the GPU nanoseconds per step of each kernel; `None` where the device has no timestamps inside passes.
    pub fn profile_steps(&mut self, steps: u32) -> Result<Option<Vec<(&'static str, f64)>>> {
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

    /// Runs `steps` training steps, `STEPS_PER_SUBMIT` to a submit, with no readback.
    pub fn train_steps(&mut self, steps: u32) -> Result<()> {
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

    /// Evaluates on the eval set (and the last batch) and reads back the statistics.
    pub fn evaluate(&self) -> Result<Metrics> {
        let r = &self.rec;
        let mut encoder =
            self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("eval") });
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("eval"), timestamp_writes: None });
            r.eval_encoder.iter().for_each(|op| op.encode(&mut pass));
            r.eval_assign.encode(&mut pass);
            r.eval_counts.encode(&mut pass);
            r.eval_stats.encode(&mut pass);
            r.eval_decoder.iter().for_each(|op| op.encode(&mut pass));
            r.eval_sq.encode(&mut pass);
            r.batch_sq.encode(&mut pass);
            r.batch_counts.encode(&mut pass);
            r.batch_stats.encode(&mut pass);
        }
        r.eval_stats.copy_out(&mut encoder);
        r.batch_stats.copy_out(&mut encoder);
        self.gpu.queue.submit([encoder.finish()]);
        let eval = r.eval_stats.read(&self.gpu.device)?;
        let batch = r.batch_stats.read(&self.gpu.device)?;
        let sums: Vec<f32> = read_buffer(&self.gpu.device, &self.gpu.queue, &self.buffers.metrics)?;
        let (b, d, m) = (self.config.batch as f64, self.data_dim as f64, self.config.latent as f64);
        let n_eval = self.n_eval as f64;
        let rec = sums[1] as f64 / (b * d);
        let cb = batch.quant_err;
        let loss = rec + if self.config.codebook_mode == CodebookMode::Grad { cb } else { 0.0 } + self.config.beta * cb;
        let subspace_err = match (&self.basis, self.config.encoder) {
            (Some((basis, rank)), EncoderKind::Linear) => {
                let params: Vec<f32> = read_buffer(&self.gpu.device, &self.gpu.queue, &self.buffers.params)?;
                let w = self.layout.decoder[0];
                let wd = to_f64(&params[w.w_off as usize..w.b_off as usize]);
                Some(super::subspace_err(&wd, self.data_dim as usize, m as usize, basis, *rank))
            }
            _ => None,
        };
        self.gpu.check()?;
        Ok(Metrics {
            step: self.step as u32,
            loss: if self.step == 0 { f64::NAN } else { loss },
            dead_codes: eval.dead_codes,
            usage: eval.usage,
            entropy: eval.entropy,
            perplexity: eval.perplexity,
            recon_mse: sums[0] as f64 / (n_eval * d),
            quant_err: eval.quant_err,
            purity: eval.purity,
            subspace_err,
            batch_usage: if self.step == 0 {
                f64::NAN
            } else {
                1.0 - batch.dead_codes as f64 / self.config.codes as f64
            },
        })
    }

    /// The flat parameters and the codebook, read back (for tests and for saving a model).
    pub fn read_state(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let device = &self.gpu.device;
        let params: Vec<f32> = read_buffer(device, &self.gpu.queue, &self.buffers.params)?;
        let codebook: Vec<f32> = read_buffer(device, &self.gpu.queue, &self.buffers.codebook)?;
        let k = (self.config.codes * self.config.latent) as usize;
        Ok((params[..self.layout.len as usize].to_vec(), codebook[..k].to_vec()))
    }

    /// Bytes of the run's storage buffers (data, state, activations; not the small uniforms).
    pub fn buffer_bytes(&self) -> u64 {
        self.buffers.bytes()
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Trains for the configured steps, evaluating every `eval_every` steps and at the end; `on_eval` sees each
    /// evaluation as it comes.
    pub fn run(&mut self, mut on_eval: impl FnMut(&Metrics)) -> Result<RunResult> {
        let start = Instant::now();
        let mut curve = Vec::new();
        let total = self.config.steps;
        while (self.step as u32) < total {
            let done = self.step as u32;
            let next_eval = ((done / self.config.eval_every) + 1) * self.config.eval_every;
            self.train_steps(next_eval.min(total) - done)?;
            let metrics = self.evaluate()?;
            on_eval(&metrics);
            curve.push(metrics);
        }
        let wall_s = start.elapsed().as_secs_f64();
        let metrics = curve.last().cloned().expect("steps >= 1 gives one evaluation");
        Ok(RunResult { metrics, curve, steps_per_sec: total as f64 / wall_s, wall_s })
    }
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

impl GpuTrainer<'_> {
    /// Records copies of run `run`'s state and last batch out of a batch's stacked buffers into this run's own
    /// buffers, so that [`GpuTrainer::evaluate`] sees them; `step` becomes this run's step count.
    fn record_load(&mut self, encoder: &mut wgpu::CommandEncoder, from: &BatchBuffers, run: u64, step: u64) {
        let own = &self.buffers;
        let mut copy = |src: &wgpu::Buffer, dst: &wgpu::Buffer, per_run_floats: u64| {
            let bytes = per_run_floats * 4;
            encoder.copy_buffer_to_buffer(src, run * bytes, dst, 0, bytes);
        };
        let (b, d, m, k) =
            (self.config.batch as u64, self.data_dim as u64, self.config.latent as u64, self.config.codes);
        copy(&from.params, &own.params, self.layout.len as u64);
        copy(&from.codebook, &own.codebook, k as u64 * m);
        copy(&from.x, &own.x, b * d);
        copy(&from.xhat, &own.xhat, b * d);
        copy(&from.index, &own.index, b);
        copy(&from.dist, &own.dist, b);
        self.step = step;
    }
}

/// Whether two runs can share dispatches in a [`BatchTrainer`]: the same settings except the seed, the estimator,
/// beta and the data's noise (sigma, spread), and no dead-code resets.
pub fn batchable(a: &TrainConfig, b: &TrainConfig) -> bool {
    let key = |c: &TrainConfig| {
        let data = match &c.data {
            DataSpec::Subspace { dim, rank, .. } => DataSpec::Subspace { dim: *dim, rank: *rank, sigma: 0.0 },
            DataSpec::Clusters { dim, clusters, .. } => {
                DataSpec::Clusters { dim: *dim, clusters: *clusters, spread: 0.0 }
            }
            other => other.clone(),
        };
        TrainConfig { data, seed: 0, estimator: Estimator::Ste, beta: 0.0, ..c.clone() }
    };
    let simple = |c: &TrainConfig| c.reset_dead == 0;
    simple(a) && simple(b) && key(a) == key(b)
}

/// The stacked training buffers of a batch: each run's slice follows the previous run's.
struct BatchBuffers {
    train: wgpu::Buffer,
    schedule: wgpu::Buffer,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    adam_m: wgpu::Buffer,
    adam_v: wgpu::Buffer,
    codebook: wgpu::Buffer,
    codebook_grad: wgpu::Buffer,
    codebook_m: wgpu::Buffer,
    codebook_v: wgpu::Buffer,
    counts: wgpu::Buffer,
    ema_size: wgpu::Buffer,
    ema_sum: wgpu::Buffer,
    x: wgpu::Buffer,
    z: wgpu::Buffer,
    index: wgpu::Buffer,
    dist: wgpu::Buffer,
    q: wgpu::Buffer,
    xhat: wgpu::Buffer,
    dxhat: wgpu::Buffer,
    g: wgpu::Buffer,
    dz: wgpu::Buffer,
    h_enc: wgpu::Buffer,
    h_dec: wgpu::Buffer,
    dh_enc: wgpu::Buffer,
    dh_dec: wgpu::Buffer,
}

/// One training step of every run of a batch, each kernel one dispatch over all runs.
struct BatchRecorded {
    gather_batch: BoundGather,
    encoder: Vec<BoundDense>,
    assign: BoundAssign,
    decoder: Vec<BoundDense>,
    decoder_back: Vec<BoundDense>,
    estimator: BoundEstimator,
    encoder_back: Vec<BoundDense>,
    codebook: CodebookUpdate,
    adam_params: BoundAdam,
}

/// Several runs of the same shapes (see [`batchable`]) trained in the same dispatches: every buffer holds the
/// runs one after another and every kernel covers them all, so a step costs one dispatch per kernel whatever the
/// number of runs. Each run reads its own data, schedule, estimator and beta, and its results are identical, bit
/// for bit, to training it alone with [`GpuTrainer`] (a test checks this). Each run keeps a [`GpuTrainer`] of its
/// own for its initial state and its evaluations.
pub struct BatchTrainer<'g> {
    gpu: &'g Gpu,
    runs: Vec<GpuTrainer<'g>>,
    schedules: Vec<Schedule>,
    step_uniform: StepUniform,
    buffers: BatchBuffers,
    rec: BatchRecorded,
    step: u64,
}

impl<'g> BatchTrainer<'g> {
    /// Builds every run (as [`GpuTrainer::new`] would) and the stacked buffers. The configurations must be
    /// [`batchable`] with each other and the data sets the same sizes.
    pub fn new(gpu: &'g Gpu, configs: &[TrainConfig], data: &[Dataset]) -> Result<Self> {
        let (Some(first), Some(data0)) = (configs.first(), data.first()) else {
            return Err(Error::Input("a batch needs at least one run".into()));
        };
        if configs.len() != data.len() {
            return Err(Error::Input(format!("{} configurations for {} data sets", configs.len(), data.len())));
        }
        for (c, d) in configs.iter().zip(data) {
            if !batchable(first, c) {
                return Err(Error::Input(format!(
                    "run (seed {}, {}) cannot share a batch: the settings differ in more than the seed, estimator, \
                     beta and noise, or use dead-code resets",
                    c.seed, c.estimator
                )));
            }
            if (d.dim, d.train_rows(), d.eval_rows()) != (data0.dim, data0.train_rows(), data0.eval_rows()) {
                return Err(Error::Input("every run's data set must have the same sizes".into()));
            }
        }
        let runs = configs.iter().zip(data).map(|(c, d)| GpuTrainer::new(gpu, c, d)).collect::<Result<Vec<_>>>()?;
        let r = runs.len() as u32;
        let device = &gpu.device;
        let layout = runs[0].layout.clone();
        let (b, d, m, k, h) = (first.batch, data0.dim, first.latent, first.codes, first.hidden);
        let n_train = data0.train_rows() as u32;
        let mlp = first.encoder == EncoderKind::Mlp;
        let hidden = if mlp { b * h } else { 1 };
        // The initial states, as each run made them.
        let (mut params0, mut codebook0, mut train) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ema_size0, mut ema_sum0) = (Vec::new(), Vec::new());
        for (run, d) in runs.iter().zip(data) {
            let (p, c) = run.read_state()?;
            let (size, sum) = crate::kernels::codebook::ema_initial_state(&c, k as usize);
            params0.extend(p);
            codebook0.extend(c);
            ema_size0.extend(size);
            ema_sum0.extend(sum);
            train.extend_from_slice(&d.train);
        }
        let f = |label: &str, len: u32| gpu.zeroed::<f32>(label, (r * len) as usize);
        let u = |label: &str, len: u32| gpu.zeroed::<u32>(label, (r * len) as usize);
        let bf = BatchBuffers {
            train: gpu.upload("batch train data", &train)?,
            schedule: u("batch schedule", STEPS_PER_SUBMIT * b)?,
            params: gpu.upload("batch params", &params0)?,
            grads: f("batch grads", layout.len)?,
            adam_m: f("batch adam m", layout.len)?,
            adam_v: f("batch adam v", layout.len)?,
            codebook: gpu.upload("batch codebook", &codebook0)?,
            codebook_grad: f("batch codebook grad", k * m)?,
            codebook_m: f("batch codebook adam m", k * m)?,
            codebook_v: f("batch codebook adam v", k * m)?,
            counts: u("batch counts", k)?,
            ema_size: gpu.upload("batch ema size", &ema_size0)?,
            ema_sum: gpu.upload("batch ema sum", &ema_sum0)?,
            x: f("batch x", b * d)?,
            z: f("batch z", b * m)?,
            index: u("batch index", b)?,
            dist: f("batch distance", b)?,
            q: f("batch q", b * m)?,
            xhat: f("batch xhat", b * d)?,
            dxhat: f("batch dxhat", b * d)?,
            g: f("batch g", b * m)?,
            dz: f("batch dz", b * m)?,
            h_enc: f("batch h enc", hidden)?,
            h_dec: f("batch h dec", hidden)?,
            dh_enc: f("batch dh enc", hidden)?,
            dh_dec: f("batch dh dec", hidden)?,
        };
        let step_uniform = StepUniform::new(device, STEPS_PER_SUBMIT)?;
        let ks = gpu.cached(Kernels::new)?;
        let dense = ks.dense.for_runs(r, layout.len)?;
        let enc_outs: Vec<&wgpu::Buffer> = if mlp { vec![&bf.h_enc, &bf.z] } else { vec![&bf.z] };
        let dec_outs: Vec<&wgpu::Buffer> = if mlp { vec![&bf.h_dec, &bf.xhat] } else { vec![&bf.xhat] };
        let adam = AdamSettings { beta1: ADAM_BETAS.0 as f32, beta2: ADAM_BETAS.1 as f32, eps: ADAM_EPS as f32 };
        let settings: Vec<EstimatorSettings> = configs
            .iter()
            .map(|c| EstimatorSettings { estimator: c.estimator, beta: c.beta as f32, batch: b })
            .collect();
        let loss = LossTarget { target: &bf.x, grad: &bf.dxhat, scale: (2.0 / (b as f64 * d as f64)) as f32 };
        let rec = BatchRecorded {
            gather_batch: ks.gather.bind_rows_runs(
                device,
                &bf.train,
                n_train,
                &bf.schedule,
                STEPS_PER_SUBMIT * b,
                &bf.x,
                (b, d),
                r,
            )?,
            encoder: forward_chain(&dense, device, &layout.encoder, &bf.x, &enc_outs, &bf.params, b, None)?,
            assign: ks.assign.bind_runs(
                device,
                &AssignBuffers { z: &bf.z, codebook: &bf.codebook, index: &bf.index, distance: &bf.dist },
                AssignShape { n: b, k, m },
                Some(&bf.q),
                r,
            )?,
            decoder: forward_chain(&dense, device, &layout.decoder, &bf.q, &dec_outs, &bf.params, b, Some(loss))?,
            decoder_back: backward_chain(
                &dense,
                device,
                &layout.decoder,
                &bf.q,
                &dec_outs,
                &bf.dxhat,
                &[&bf.dh_dec],
                Some(&bf.g),
                &bf.params,
                &bf.grads,
                b,
            )?,
            estimator: ks.estimator.bind_runs(
                device,
                &EstimatorBuffers { g: &bf.g, z: &bf.z, index: &bf.index, codebook: &bf.codebook, grad_z: &bf.dz },
                EstimatorShape { n: b, k, m },
                &settings,
            )?,
            encoder_back: backward_chain(
                &dense,
                device,
                &layout.encoder,
                &bf.x,
                &enc_outs,
                &bf.dz,
                &[&bf.dh_enc],
                None,
                &bf.params,
                &bf.grads,
                b,
            )?,
            codebook: match first.codebook_mode {
                CodebookMode::Grad => CodebookUpdate::Grad(
                    ks.codebook.bind_grad_runs(
                        device,
                        &GradBuffers { z: &bf.z, index: &bf.index, codebook: &bf.codebook, grad: &bf.codebook_grad },
                        CodebookShape { n: b, k, m },
                        b,
                        r,
                    )?,
                    // Adam is elementwise with the same constants for every run: the stacked arrays are one array.
                    ks.adam.bind(
                        device,
                        &bf.codebook,
                        &bf.codebook_grad,
                        &bf.codebook_m,
                        &bf.codebook_v,
                        r * k * m,
                        adam,
                    )?,
                ),
                CodebookMode::Ema => CodebookUpdate::Ema(ks.codebook.bind_ema_runs(
                    device,
                    &EmaBuffers {
                        z: &bf.z,
                        index: &bf.index,
                        codebook: &bf.codebook,
                        counts: &bf.counts,
                        ema_size: &bf.ema_size,
                        ema_sum: &bf.ema_sum,
                    },
                    CodebookShape { n: b, k, m },
                    EmaSettings { decay: EMA.0 as f32, eps: EMA.1 as f32 },
                    r,
                )?),
            },
            adam_params: ks.adam.bind(device, &bf.params, &bf.grads, &bf.adam_m, &bf.adam_v, r * layout.len, adam)?,
        };
        let schedules = configs.iter().map(|c| Schedule::new(c.seed, n_train as usize, b as usize)).collect();
        Ok(BatchTrainer { gpu, runs, schedules, step_uniform, buffers: bf, rec, step: 0 })
    }

    /// The most runs like `config` on `data` that one batch can hold on `gpu`: every stacked buffer must fit one
    /// storage binding. The training set is the largest (each run has its own).
    pub fn max_runs(gpu: &Gpu, config: &TrainConfig, data: &Dataset) -> u32 {
        let limit = gpu.device.limits().max_storage_buffer_binding_size;
        let b = config.batch as u64;
        let hidden = if config.encoder == EncoderKind::Mlp { config.hidden as u64 } else { 1 };
        let per_run = [
            data.train.len() as u64,
            (STEPS_PER_SUBMIT as u64) * b,
            b * data.dim as u64,
            b * hidden,
            config.codes as u64 * config.latent as u64,
            config.shape(data).layout().len as u64,
        ];
        let largest = per_run.iter().max().copied().unwrap_or(1).max(1) * 4;
        (limit / largest).clamp(1, gpu.device.limits().max_compute_workgroups_per_dimension as u64) as u32
    }

    /// The number of runs.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Runs `steps` training steps of every run, `STEPS_PER_SUBMIT` to a submit, with no readback.
    pub fn train_steps(&mut self, steps: u32) -> Result<()> {
        let config = &self.runs[0].config;
        let (b, lr) = (config.batch, config.lr);
        let mut left = steps;
        while left > 0 {
            let chunk = left.min(STEPS_PER_SUBMIT);
            // Each run's schedule slice holds STEPS_PER_SUBMIT batches; the same row offset serves every run.
            let mut schedule = vec![0u32; self.runs.len() * (STEPS_PER_SUBMIT * b) as usize];
            for (run, s) in self.schedules.iter_mut().enumerate() {
                let base = run * (STEPS_PER_SUBMIT * b) as usize;
                for slot in 0..chunk as usize {
                    let at = base + slot * b as usize;
                    schedule[at..at + b as usize].copy_from_slice(s.next_batch());
                }
            }
            let constants: Vec<StepConstants> = (0..chunk)
                .map(|slot| StepConstants::adam(self.step + 1 + slot as u64, lr, ADAM_BETAS.0, ADAM_BETAS.1, slot * b))
                .collect();
            self.gpu.queue.write_buffer(&self.buffers.schedule, 0, bytemuck::cast_slice(&schedule));
            self.step_uniform.write(&self.gpu.queue, &constants)?;
            let mut encoder =
                self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("batch train") });
            for slot in 0..chunk {
                let r = &self.rec;
                let s = &self.step_uniform;
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("batch train step"),
                    timestamp_writes: None,
                });
                r.gather_batch.encode_step(&mut pass, s, slot);
                r.encoder.iter().for_each(|op| op.encode(&mut pass));
                r.assign.encode(&mut pass);
                r.decoder.iter().for_each(|op| op.encode(&mut pass));
                r.decoder_back.iter().for_each(|op| op.encode(&mut pass));
                r.estimator.encode(&mut pass);
                r.encoder_back.iter().for_each(|op| op.encode(&mut pass));
                match &r.codebook {
                    CodebookUpdate::Grad(grad, adam) => {
                        grad.encode(&mut pass);
                        adam.encode(&mut pass, s, slot);
                    }
                    CodebookUpdate::Ema(ema) => ema.encode(&mut pass),
                }
                r.adam_params.encode(&mut pass, s, slot);
            }
            self.gpu.queue.submit([encoder.finish()]);
            self.step += chunk as u64;
            left -= chunk;
        }
        self.gpu.check()
    }

    /// Evaluates every run (each in its own [`GpuTrainer`], from a copy of its state) and reads back the metrics.
    pub fn evaluate(&mut self) -> Result<Vec<Metrics>> {
        let mut encoder =
            self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("batch load") });
        for (i, run) in self.runs.iter_mut().enumerate() {
            run.record_load(&mut encoder, &self.buffers, i as u64, self.step);
        }
        self.gpu.queue.submit([encoder.finish()]);
        self.runs.iter().map(|run| run.evaluate()).collect()
    }

    /// Each run's flat parameters and codebook, read back.
    pub fn read_states(&mut self) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        self.evaluate()?; // loads every run's state into its own trainer
        self.runs.iter().map(|run| run.read_state()).collect()
    }

    /// Trains every run for the configured steps, evaluating every `eval_every` steps and at the end; `on_eval`
    /// sees each evaluation (the run's position in the batch, its metrics) as it comes.
    pub fn run(&mut self, mut on_eval: impl FnMut(usize, &Metrics)) -> Result<Vec<RunResult>> {
        let start = Instant::now();
        let config = self.runs[0].config.clone();
        let mut curves: Vec<Vec<Metrics>> = vec![Vec::new(); self.runs.len()];
        while (self.step as u32) < config.steps {
            let done = self.step as u32;
            let next_eval = ((done / config.eval_every) + 1) * config.eval_every;
            self.train_steps(next_eval.min(config.steps) - done)?;
            for (i, (metrics, curve)) in self.evaluate()?.into_iter().zip(&mut curves).enumerate() {
                on_eval(i, &metrics);
                curve.push(metrics);
            }
        }
        // The batch's wall time is shared: each run is credited with all of it, as if alone.
        let wall_s = start.elapsed().as_secs_f64();
        Ok(curves
            .into_iter()
            .map(|curve| RunResult {
                metrics: curve.last().cloned().expect("steps >= 1 gives one evaluation"),
                curve,
                steps_per_sec: config.steps as f64 / wall_s,
                wall_s,
            })
            .collect())
    }
}
