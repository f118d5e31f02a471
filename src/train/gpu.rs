//! The GPU engine. [`BatchTrainer`] trains several runs of the same shapes in the same dispatches, and
//! [`GpuTrainer`] is a batch of one. All buffers, pipelines and bind groups are made once in [`BatchTrainer::new`];
//! each step is one compute pass, a chunk of steps is one command buffer and one submit, and nothing is read back
//! between evaluations. An evaluation reads back two 32-byte statistics structs, two sums and (for `subspace_err`)
//! the decoder weights. Pipelines are shared by every run on a device ([`Gpu::cached`]).
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! use vqgrad::train::{TrainConfig, gpu::GpuTrainer};
//! let gpu = match vqgrad::Gpu::new(&vqgrad::GpuOptions::default()) {
//!     Ok(gpu) => gpu,
//!     Err(_) if std::env::var("VQGRAD_REQUIRE_GPU").as_deref() != Ok("1") => return Ok(()), // no adapter: skip
//!     Err(e) => return Err(e),
//! };
//! // STUDY.md's E1 model, shortened: every `vqgrad train` flag is a field of TrainConfig.
//! let config = TrainConfig { steps: 50, eval_every: 50, n_train: 2048, n_eval: 512, ..TrainConfig::default() };
//! let data = config.load_data()?;
//! let result = GpuTrainer::new(&gpu, &config, &data)?.run(|metrics| println!("{metrics:?}"))?;
//! assert_eq!(result.metrics.step, 50);
//! assert!(result.metrics.perplexity >= 1.0);
//! # Ok(())
//! # }
//! ```

use super::engine::{State, Trainer};
use super::{ADAM_BETAS, ADAM_EPS, EMA, LevelMetrics, Metrics, RunResult, Schedule, TrainConfig};
use crate::Estimator;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::timing::Timestamps;
use crate::gpu::{Gpu, read_buffer};
use crate::kernels::adam::{Adam, AdamSettings, BoundAdam};
use crate::kernels::assign::{Assign, AssignBuffers, AssignShape, BoundAssign};
use crate::kernels::codebook::{
    BoundCounts, BoundEma, BoundGrad, BoundLloyd, BoundReset, Codebook, CodebookShape, CountBuffers, EmaBuffers,
    EmaSettings, GradBuffers, LloydBuffers, ResetBuffers, seed_mix,
};
use crate::kernels::dense::{BoundDense, Dense, Linear, LossTarget};
use crate::kernels::estimator::{
    BoundEstimator, EstimatorBackward, EstimatorBuffers, EstimatorSettings, EstimatorShape,
};
use crate::kernels::gather::{BoundGather, Gather};
use crate::kernels::learned::{BoundLearned, Learned, LearnedBuffers, LearnedGradBuffers, identity};
use crate::kernels::loss::{BoundLoss, Loss};
use crate::kernels::residual::{BoundResidual, Residual};
use crate::kernels::schedule::{
    AdaptiveBeta, BetaSchedule, BoundBetaSchedule, ScheduleShape, SettingsSlot, beta_state,
};
use crate::kernels::soft::{BoundSoft, Soft, SoftBackwardBuffers, SoftRun, SoftSampleBuffers, SoftShape};
use crate::kernels::stats::{BoundStats, Stats, StatsBuffers, StatsShape};
use crate::kernels::step::{StepConstants, StepUniform};
use crate::model::{BetaSchedule as BetaRule, CodebookMode, EncoderKind, Layout};
use crate::reference::to_f64;

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
    soft: Soft,
    schedule: BetaSchedule,
    learned: Learned,
    residual: Residual,
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
            schedule: BetaSchedule::new(device)?,
            learned: Learned::new(device)?,
            residual: Residual::new(device)?,
            _step_layout: step,
        })
    }
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

/// One training step of every run of a batch, each kernel one dispatch over all runs.
struct StepRecorded {
    gather_batch: BoundGather,
    encoder: Vec<BoundDense>,
    /// Also writes q = c[a].
    assign: BoundAssign,
    /// The Gumbel hard sample, when a run samples: rewrites those runs' index, distance and q.
    sample: Option<BoundSoft>,
    /// The adaptive beta: this step's counts, then the new commitment coefficients.
    adapt: Option<(BoundCounts, BoundBetaSchedule)>,
    /// The decoder; its last layer also writes the loss gradient `dxhat`.
    decoder: Vec<BoundDense>,
    decoder_back: Vec<BoundDense>,
    estimator: BoundEstimator,
    /// The relaxation's backward, when a run's estimator is `gumbel` (the estimator kernel skips those runs).
    soft_backward: Option<BoundSoft>,
    /// The learned estimator, when a run's is `learned`: its targets (the relaxation's backward of g), dM, then
    /// `dz += M g`; and Adam on M after the parameters'.
    learned: Option<LearnedRecorded>,
    encoder_back: Vec<BoundDense>,
    codebook: CodebookUpdate,
    adam_params: BoundAdam,
    /// The dead-code reset, with this step's counts for its marks in grad mode (the EMA update counts by itself).
    reset: Option<(Option<BoundCounts>, BoundReset)>,
    /// Residual VQ's levels after the first (none for one level).
    levels: Vec<LevelRecorded>,
}

/// One residual VQ level after the first: its input `r_l = r_{l-1} - q_{l-1}`, its assignment, the sum of the
/// codes (the decoder's input), its estimator into its own dz, the sum of the gradients, its codebook update.
struct LevelRecorded {
    residual: BoundResidual,
    assign: BoundAssign,
    sum_q: BoundResidual,
    estimator: BoundEstimator,
    sum_dz: BoundResidual,
    codebook: CodebookUpdate,
}

struct LearnedRecorded {
    target: BoundSoft,
    grad: BoundLearned,
    backward: BoundLearned,
    adam: BoundAdam,
}

/// The buffers a level's codebook update reads and writes.
struct CodebookState<'a> {
    z: &'a wgpu::Buffer,
    index: &'a wgpu::Buffer,
    codebook: &'a wgpu::Buffer,
    grad: &'a wgpu::Buffer,
    adam_m: &'a wgpu::Buffer,
    adam_v: &'a wgpu::Buffer,
    counts: &'a wgpu::Buffer,
    ema_size: &'a wgpu::Buffer,
    ema_sum: &'a wgpu::Buffer,
}

enum CodebookUpdate {
    Grad(BoundGrad, BoundAdam),
    Ema(BoundEma),
}

/// The training buffers of a batch, stacked: each run's slice follows the previous run's. A single run is a batch
/// of one.
struct TrainBuffers {
    train: wgpu::Buffer,
    /// Each run's eval set (and labels), copied into the [`Evaluator`] when that run is evaluated.
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
    /// Each run's adaptive beta state (beta, lo, hi).
    beta_state: wgpu::Buffer,
    /// The learned estimator: each run's M (m x m), dM, Adam's moments, and the batch's fitting targets.
    transport: wgpu::Buffer,
    transport_grad: wgpu::Buffer,
    transport_m: wgpu::Buffer,
    transport_v: wgpu::Buffer,
    transport_target: wgpu::Buffer,
    counts: wgpu::Buffer,
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
    /// Residual VQ's levels after the first.
    levels: Vec<LevelBuffers>,
}

/// One residual VQ level's buffers, stacked over runs like the first level's.
struct LevelBuffers {
    /// r_l, the level's input.
    input: wgpu::Buffer,
    codebook: wgpu::Buffer,
    codebook_grad: wgpu::Buffer,
    codebook_m: wgpu::Buffer,
    codebook_v: wgpu::Buffer,
    ema_size: wgpu::Buffer,
    ema_sum: wgpu::Buffer,
    counts: wgpu::Buffer,
    index: wgpu::Buffer,
    dist: wgpu::Buffer,
    q: wgpu::Buffer,
    dz: wgpu::Buffer,
}

impl LevelBuffers {
    fn all(&self) -> [&wgpu::Buffer; 12] {
        [
            &self.input,
            &self.codebook,
            &self.codebook_grad,
            &self.codebook_m,
            &self.codebook_v,
            &self.ema_size,
            &self.ema_sum,
            &self.counts,
            &self.index,
            &self.dist,
            &self.q,
            &self.dz,
        ]
    }
}

impl TrainBuffers {
    fn all(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        [
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
            &self.beta_state,
            &self.transport,
            &self.transport_grad,
            &self.transport_m,
            &self.transport_v,
            &self.transport_target,
            &self.counts,
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
        ]
        .into_iter()
        .chain(self.eval_labels.as_ref())
        .chain(self.levels.iter().flat_map(LevelBuffers::all))
    }
}

/// One run's evaluation: before it, the run's parameters, codebook, last batch and eval set are copied out of the
/// stacked buffers into these, so that every run of a batch is evaluated by the same kernels on its own state,
/// exactly as it would be alone.
struct Evaluator {
    buffers: EvalBuffers,
    rec: EvalRecorded,
}

struct EvalBuffers {
    /// The eval set and labels being evaluated: the workspace's own copy, or (a batch of one) the stacked
    /// buffers themselves, with nothing to copy.
    eval: wgpu::Buffer,
    eval_labels: Option<wgpu::Buffer>,
    own_eval: bool,
    params: wgpu::Buffer,
    codebook: wgpu::Buffer,
    /// The run's last batch, its reconstruction, codes and distances (the batch metrics).
    x: wgpu::Buffer,
    xhat: wgpu::Buffer,
    index: wgpu::Buffer,
    dist: wgpu::Buffer,
    batch_counts: wgpu::Buffer,
    /// The two sums of squares: eval set and last batch.
    metrics: wgpu::Buffer,
    eval_z: wgpu::Buffer,
    eval_index: wgpu::Buffer,
    eval_dist: wgpu::Buffer,
    eval_q: wgpu::Buffer,
    eval_xhat: wgpu::Buffer,
    eval_hidden: wgpu::Buffer,
    eval_counts: wgpu::Buffer,
    /// The Lloyd fixed point on the eval encodings, from the run's codebook, with its own assignment.
    lloyd_codebook: wgpu::Buffer,
    lloyd_index: wgpu::Buffer,
    lloyd_dist: wgpu::Buffer,
    lloyd_counts: wgpu::Buffer,
    /// Residual VQ's later levels, each with its codebook, its eval assignment and its last batch's distances.
    levels: Vec<EvalLevelBuffers>,
}

struct EvalLevelBuffers {
    codebook: wgpu::Buffer,
    input: wgpu::Buffer,
    index: wgpu::Buffer,
    dist: wgpu::Buffer,
    q: wgpu::Buffer,
    counts: wgpu::Buffer,
    batch_dist: wgpu::Buffer,
}

impl EvalBuffers {
    /// The buffers the workspace owns.
    fn owned(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        [
            &self.params,
            &self.codebook,
            &self.x,
            &self.xhat,
            &self.index,
            &self.dist,
            &self.batch_counts,
            &self.metrics,
            &self.eval_z,
            &self.eval_index,
            &self.eval_dist,
            &self.eval_q,
            &self.eval_xhat,
            &self.eval_hidden,
            &self.eval_counts,
            &self.lloyd_codebook,
            &self.lloyd_index,
            &self.lloyd_dist,
            &self.lloyd_counts,
        ]
        .into_iter()
        .chain(
            self.levels.iter().flat_map(|l| [&l.codebook, &l.input, &l.index, &l.dist, &l.q, &l.counts, &l.batch_dist]),
        )
        .chain(std::iter::once(&self.eval).chain(self.eval_labels.iter()).filter(|_| self.own_eval))
    }
}

struct EvalRecorded {
    encoder: Vec<BoundDense>,
    eval_codes: EvalCodesRecorded,
    decoder: Vec<BoundDense>,
    sq: BoundLoss,
    batch_sq: BoundLoss,
    batch_counts: BoundCounts,
    batch_stats: BoundStats,
    lloyd_assign: BoundAssign,
    lloyd_update: BoundLloyd,
    lloyd_sq: BoundLoss,
    levels: Vec<EvalLevelRecorded>,
    /// With later levels: the sum of each level's last-batch distances into `metrics[3 + l]` (the loss terms).
    batch_sums: Vec<BoundLoss>,
}

struct EvalLevelRecorded {
    residual: BoundResidual,
    codes: EvalCodesRecorded,
    sum_q: BoundResidual,
}

/// The eval set's codes (with q) through one codebook, their counts and their statistics.
struct EvalCodesRecorded {
    assign: BoundAssign,
    counts: BoundCounts,
    stats: BoundStats,
}

impl EvalCodesRecorded {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.assign.encode(pass);
        self.counts.encode(pass);
        self.stats.encode(pass);
    }
}

/// The buffers of [`eval_codes`]: the inputs z and codebook; written: index, distance, q and counts.
struct EvalCodes<'a> {
    z: &'a wgpu::Buffer,
    codebook: &'a wgpu::Buffer,
    index: &'a wgpu::Buffer,
    dist: &'a wgpu::Buffer,
    q: &'a wgpu::Buffer,
    counts: &'a wgpu::Buffer,
}

/// Binds the eval set's assignment (writing q), counts and statistics (purity with `labels`: the labels and the
/// number of classes) for `n` rows, `k` codes of dimension `m`.
fn eval_codes(
    ks: &Kernels,
    device: &wgpu::Device,
    b: EvalCodes<'_>,
    (n, k, m): (u32, u32, u32),
    labels: Option<(&wgpu::Buffer, u32)>,
) -> Result<EvalCodesRecorded> {
    Ok(EvalCodesRecorded {
        assign: ks.assign.bind_with_codes(
            device,
            &AssignBuffers { z: b.z, codebook: b.codebook, index: b.index, distance: b.dist },
            AssignShape { n, k, m },
            b.q,
        )?,
        counts: ks.codebook.bind_counts(device, &CountBuffers { index: b.index, counts: b.counts }, n, k)?,
        stats: ks.stats.bind(
            device,
            &StatsBuffers { index: b.index, distance: b.dist, counts: b.counts, labels: labels.map(|l| l.0) },
            StatsShape { n, k, m, classes: labels.map_or(0, |l| l.1) },
        )?,
    })
}

/// The sizes every run of a batch shares.
#[derive(Clone, Copy)]
struct Sizes {
    b: u32,
    d: u32,
    m: u32,
    k: u32,
    n_train: u32,
    n_eval: u32,
    classes: u32,
}

impl Evaluator {
    /// A workspace for one run of `config`'s shapes. `shared` is the eval set and labels to bind directly (a batch
    /// of one); otherwise the workspace has its own copy (`labels`: whether the data have labels).
    fn new(
        gpu: &Gpu,
        ks: &Kernels,
        (config, layout): (&TrainConfig, &Layout),
        sz: Sizes,
        shared: Option<(&wgpu::Buffer, Option<&wgpu::Buffer>)>,
        labels: bool,
    ) -> Result<Self> {
        let device = &gpu.device;
        let Sizes { b, d, m, k, n_eval, classes, .. } = sz;
        let mlp = config.encoder == EncoderKind::Mlp;
        let f = |label: &str, len: u32| gpu.zeroed::<f32>(label, len as usize);
        let u = |label: &str, len: u32| gpu.zeroed::<u32>(label, len as usize);
        let bf = EvalBuffers {
            eval: match shared {
                Some((eval, _)) => eval.clone(),
                None => f("eval data", n_eval * d)?,
            },
            eval_labels: match shared {
                Some((_, labels)) => labels.cloned(),
                None if labels => Some(u("eval labels", n_eval)?),
                None => None,
            },
            own_eval: shared.is_none(),
            params: f("eval params", layout.len)?,
            codebook: f("eval codebook", k * m)?,
            x: f("eval batch x", b * d)?,
            xhat: f("eval batch xhat", b * d)?,
            index: u("eval batch index", b)?,
            dist: f("eval batch distance", b)?,
            batch_counts: u("eval batch counts", k)?,
            metrics: f("metrics", 3 + config.levels.max(2))?,
            eval_z: f("eval z", n_eval * m)?,
            eval_index: u("eval index", n_eval)?,
            eval_dist: f("eval distance", n_eval)?,
            eval_q: f("eval q", n_eval * m)?,
            eval_xhat: f("eval xhat", n_eval * d)?,
            eval_hidden: f("eval hidden", if mlp { n_eval * config.hidden } else { 1 })?,
            eval_counts: u("eval counts", k)?,
            lloyd_codebook: f("lloyd codebook", k * m)?,
            lloyd_index: u("lloyd index", n_eval)?,
            lloyd_dist: f("lloyd distance", n_eval)?,
            lloyd_counts: u("lloyd counts", k)?,
            levels: (1..config.levels)
                .map(|_| {
                    Ok(EvalLevelBuffers {
                        codebook: f("eval level codebook", k * m)?,
                        input: f("eval level input", n_eval * m)?,
                        index: u("eval level index", n_eval)?,
                        dist: f("eval level distance", n_eval)?,
                        q: f("eval level q", n_eval * m)?,
                        counts: u("eval level counts", k)?,
                        batch_dist: f("eval level batch distance", b)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let enc_outs: Vec<&wgpu::Buffer> = if mlp { vec![&bf.eval_hidden, &bf.eval_z] } else { vec![&bf.eval_z] };
        let dec_outs: Vec<&wgpu::Buffer> = if mlp { vec![&bf.eval_hidden, &bf.eval_xhat] } else { vec![&bf.eval_xhat] };
        let labels = bf.eval_labels.as_ref();
        let rec = EvalRecorded {
            encoder: forward_chain(&ks.dense, device, &layout.encoder, &bf.eval, &enc_outs, &bf.params, n_eval, None)?,
            eval_codes: eval_codes(
                ks,
                device,
                EvalCodes {
                    z: &bf.eval_z,
                    codebook: &bf.codebook,
                    index: &bf.eval_index,
                    dist: &bf.eval_dist,
                    q: &bf.eval_q,
                    counts: &bf.eval_counts,
                },
                (n_eval, k, m),
                labels.map(|l| (l, classes)),
            )?,
            decoder: forward_chain(
                &ks.dense,
                device,
                &layout.decoder,
                &bf.eval_q,
                &dec_outs,
                &bf.params,
                n_eval,
                None,
            )?,
            sq: ks.loss.bind_sum_sq_diff(device, &bf.eval_xhat, &bf.eval, &bf.metrics, 0, n_eval * d)?,
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
            lloyd_assign: ks.assign.bind(
                device,
                &AssignBuffers {
                    z: &bf.eval_z,
                    codebook: &bf.lloyd_codebook,
                    index: &bf.lloyd_index,
                    distance: &bf.lloyd_dist,
                },
                AssignShape { n: n_eval, k, m },
            )?,
            lloyd_update: ks.codebook.bind_lloyd(
                device,
                &LloydBuffers {
                    z: &bf.eval_z,
                    index: &bf.lloyd_index,
                    codebook: &bf.lloyd_codebook,
                    counts: &bf.lloyd_counts,
                },
                CodebookShape { n: n_eval, k, m },
            )?,
            lloyd_sq: ks.loss.bind_sum_sq_diff(device, &bf.lloyd_codebook, &bf.codebook, &bf.metrics, 2, k * m)?,
            levels: bf
                .levels
                .iter()
                .enumerate()
                .map(|(l, lv)| {
                    let (prev_input, prev_q) =
                        if l == 0 { (&bf.eval_z, &bf.eval_q) } else { (&bf.levels[l - 1].input, &bf.levels[l - 1].q) };
                    Ok(EvalLevelRecorded {
                        residual: ks.residual.bind_subtract(device, prev_input, prev_q, &lv.input, n_eval * m)?,
                        codes: eval_codes(
                            ks,
                            device,
                            EvalCodes {
                                z: &lv.input,
                                codebook: &lv.codebook,
                                index: &lv.index,
                                dist: &lv.dist,
                                q: &lv.q,
                                counts: &lv.counts,
                            },
                            (n_eval, k, m),
                            None,
                        )?,
                        sum_q: ks.residual.bind_accumulate(device, &lv.q, &bf.eval_q, n_eval * m)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            batch_sums: if bf.levels.is_empty() {
                Vec::new()
            } else {
                std::iter::once(&bf.dist)
                    .chain(bf.levels.iter().map(|l| &l.batch_dist))
                    .enumerate()
                    .map(|(l, dist)| ks.loss.bind_sum(device, dist, &bf.metrics, 3 + l as u32, b))
                    .collect::<Result<Vec<_>>>()?
            },
        };
        Ok(Evaluator { buffers: bf, rec })
    }

    /// Records copies of run `run`'s slices of the stacked buffers into the workspace, then the evaluation.
    fn record(&self, encoder: &mut wgpu::CommandEncoder, from: &TrainBuffers, run: u64, lloyd_iters: u32) {
        let own = &self.buffers;
        let mut copy = |src: &wgpu::Buffer, dst: &wgpu::Buffer| {
            let bytes = dst.size();
            encoder.copy_buffer_to_buffer(src, run * bytes, dst, 0, bytes);
        };
        copy(&from.params, &own.params);
        copy(&from.codebook, &own.codebook);
        copy(&from.codebook, &own.lloyd_codebook);
        for (src, dst) in from.levels.iter().zip(&own.levels) {
            copy(&src.codebook, &dst.codebook);
            copy(&src.dist, &dst.batch_dist);
        }
        copy(&from.x, &own.x);
        copy(&from.xhat, &own.xhat);
        copy(&from.index, &own.index);
        copy(&from.dist, &own.dist);
        if own.own_eval {
            copy(&from.eval, &own.eval);
            if let (Some(src), Some(dst)) = (&from.eval_labels, &own.eval_labels) {
                copy(src, dst);
            }
        }
        let r = &self.rec;
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("eval"), timestamp_writes: None });
            r.encoder.iter().for_each(|op| op.encode(&mut pass));
            r.eval_codes.encode(&mut pass);
            for level in &r.levels {
                level.residual.encode(&mut pass);
                level.codes.encode(&mut pass);
                level.sum_q.encode(&mut pass);
            }
            r.batch_sums.iter().for_each(|op| op.encode(&mut pass));
            r.decoder.iter().for_each(|op| op.encode(&mut pass));
            r.sq.encode(&mut pass);
            r.batch_sq.encode(&mut pass);
            r.batch_counts.encode(&mut pass);
            r.batch_stats.encode(&mut pass);
            for _ in 0..lloyd_iters {
                r.lloyd_assign.encode(&mut pass);
                r.lloyd_update.encode(&mut pass);
            }
            if lloyd_iters > 0 {
                r.lloyd_sq.encode(&mut pass);
            }
        }
        r.eval_codes.stats.copy_out(encoder);
        r.batch_stats.copy_out(encoder);
        r.levels.iter().for_each(|l| l.codes.stats.copy_out(encoder));
    }
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
    Ok((narrow(&params), codebooks.iter().map(|c| narrow(c)).collect()))
}

/// f64 values as the GPU holds them.
fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub use super::batchable;

/// Several runs of the same shapes (see [`batchable`]) trained in the same dispatches: every buffer holds the
/// runs one after another and every kernel covers them all, so a step costs one dispatch per kernel whatever the
/// number of runs. Each run reads its own data, schedule, estimator, beta and reset seed, and its results are
/// identical, bit for bit, to training it alone (a test checks this). All buffers, pipelines and bind groups are
/// made once in [`BatchTrainer::new`]; each step is one compute pass, a chunk of steps one command buffer and one
/// submit, and nothing is read back between evaluations. [`GpuTrainer`] is a batch of one.
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
    rec: StepRecorded,
    evaluator: Evaluator,
    step: u64,
}

impl<'g> BatchTrainer<'g> {
    /// Makes every run's initial state, uploads the data and the states stacked, and binds every kernel. The
    /// configurations must be [`batchable`] with each other and the data sets the same sizes.
    pub fn new(gpu: &'g Gpu, configs: &[TrainConfig], data: &[Dataset]) -> Result<Self> {
        let runs: Vec<(&TrainConfig, &Dataset)> = configs.iter().zip(data).collect();
        if configs.len() != data.len() {
            return Err(Error::Input(format!("{} configurations for {} data sets", configs.len(), data.len())));
        }
        Self::build(gpu, &runs)
    }

    fn build(gpu: &'g Gpu, runs: &[(&TrainConfig, &Dataset)]) -> Result<Self> {
        let Some(&(first, data0)) = runs.first() else {
            return Err(Error::Input("a batch needs at least one run".into()));
        };
        for &(c, d) in runs {
            c.validate()?;
            if !batchable(first, c) {
                return Err(Error::Input(format!(
                    "run (seed {}, {}) cannot share a batch: the settings differ in more than the seed, estimator, \
                     beta and noise",
                    c.seed, c.estimator
                )));
            }
            let sizes = |d: &Dataset| (d.dim, d.train_rows(), d.eval_rows(), d.eval_labels.is_some(), d.classes);
            if sizes(d) != sizes(data0) {
                return Err(Error::Input("every run's data set must have the same sizes".into()));
            }
        }
        let r = runs.len() as u32;
        let device = &gpu.device;
        let layout = first.shape(data0).layout();
        let sz = Sizes {
            b: first.batch,
            d: data0.dim,
            m: first.latent,
            k: first.codes,
            n_train: data0.train_rows() as u32,
            n_eval: data0.eval_rows() as u32,
            classes: data0.classes,
        };
        let Sizes { b, d, m, k, n_train, .. } = sz;
        let mlp = first.encoder == EncoderKind::Mlp;
        let hidden = if mlp { b * first.hidden } else { 1 };
        let learned = runs.iter().any(|&(c, _)| c.estimator == Estimator::Learned);
        let (mut params0, mut codebook0, mut ema_size0, mut ema_sum0) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut train, mut eval, mut labels) = (Vec::new(), Vec::new(), Vec::<u32>::new());
        // Each later level's codebooks, stacked over runs.
        let mut level_codebooks: Vec<Vec<f32>> = vec![Vec::new(); first.levels as usize - 1];
        for &(c, data) in runs {
            let (p, mut codebooks) = initial_run_state(gpu, c, &layout, data)?;
            for (stack, codebook) in level_codebooks.iter_mut().zip(codebooks.drain(1..)) {
                stack.extend(codebook);
            }
            let cb = codebooks.swap_remove(0);
            let (size, sum) = crate::kernels::codebook::ema_initial_state(&cb, k as usize);
            params0.extend(p);
            codebook0.extend(cb);
            ema_size0.extend(size);
            ema_sum0.extend(sum);
            train.extend_from_slice(&data.train);
            eval.extend_from_slice(&data.eval);
            labels.extend(data.eval_labels.iter().flatten());
        }
        let f = |label: &str, len: u32| gpu.zeroed::<f32>(label, (r * len) as usize);
        let u = |label: &str, len: u32| gpu.zeroed::<u32>(label, (r * len) as usize);
        let bf = TrainBuffers {
            train: gpu.upload("train data", &train)?,
            eval: gpu.upload("eval data", &eval)?,
            eval_labels: data0.eval_labels.is_some().then(|| gpu.upload("eval labels", &labels)).transpose()?,
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
            beta_state: gpu
                .upload("beta state", &beta_state(&runs.iter().map(|&(c, _)| c.beta as f32).collect::<Vec<_>>()))?,
            transport: gpu.upload("transport", &identity(m, r))?,
            transport_grad: f("transport grad", m * m)?,
            transport_m: f("transport adam m", m * m)?,
            transport_v: f("transport adam v", m * m)?,
            transport_target: f("transport target", if learned { b * m } else { 1 })?,
            counts: u("counts", k)?,
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
            levels: level_codebooks
                .iter()
                .map(|codebooks| {
                    let (size, sum) = crate::kernels::codebook::ema_initial_state(codebooks, (r * k) as usize);
                    Ok(LevelBuffers {
                        input: f("level input", b * m)?,
                        codebook: gpu.upload("level codebook", codebooks)?,
                        codebook_grad: f("level codebook grad", k * m)?,
                        codebook_m: f("level codebook adam m", k * m)?,
                        codebook_v: f("level codebook adam v", k * m)?,
                        ema_size: gpu.upload("level ema size", &size)?,
                        ema_sum: gpu.upload("level ema sum", &sum)?,
                        counts: u("level counts", k)?,
                        index: u("level index", b)?,
                        dist: f("level distance", b)?,
                        q: f("level q", b * m)?,
                        dz: f("level dz", b * m)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        };
        drop((train, eval, labels));
        let step_uniform = StepUniform::new(device, STEPS_PER_SUBMIT)?;
        let ks = gpu.cached(Kernels::new)?;
        let configs: Vec<TrainConfig> = runs.iter().map(|&(c, _)| c.clone()).collect();
        let rec = Self::bind(device, &ks, &bf, &configs, &layout, &step_uniform, sz)?;
        let shared = (r == 1).then_some((&bf.eval, bf.eval_labels.as_ref()));
        let evaluator = Evaluator::new(gpu, &ks, (first, &layout), sz, shared, data0.eval_labels.is_some())?;
        Ok(BatchTrainer {
            gpu,
            bases: runs.iter().map(|&(_, d)| d.basis.clone().map(|basis| (basis, d.rank as usize))).collect(),
            schedules: configs.iter().map(|c| Schedule::new(c.seed, n_train as usize, b as usize)).collect(),
            configs,
            layout,
            sizes: sz,
            step_uniform,
            buffers: bf,
            rec,
            evaluator,
            step: 0,
        })
    }

    fn bind(
        device: &wgpu::Device,
        ks: &Kernels,
        bf: &TrainBuffers,
        configs: &[TrainConfig],
        layout: &Layout,
        step: &StepUniform,
        sz: Sizes,
    ) -> Result<StepRecorded> {
        let first = &configs[0];
        let r = configs.len() as u32;
        let Sizes { b, d, m, k, n_train, .. } = sz;
        let mlp = first.encoder == EncoderKind::Mlp;
        let dense = ks.dense.for_runs(r, layout.len)?;
        let enc_outs: Vec<&wgpu::Buffer> = if mlp { vec![&bf.h_enc, &bf.z] } else { vec![&bf.z] };
        let dec_outs: Vec<&wgpu::Buffer> = if mlp { vec![&bf.h_dec, &bf.xhat] } else { vec![&bf.xhat] };
        let cb_shape = CodebookShape { n: b, k, m };
        let adam = AdamSettings { beta1: ADAM_BETAS.0 as f32, beta2: ADAM_BETAS.1 as f32, eps: ADAM_EPS as f32 };
        let settings: Vec<EstimatorSettings> = configs
            .iter()
            .map(|c| EstimatorSettings { estimator: c.estimator, beta: c.beta as f32, batch: b })
            .collect();
        let loss = LossTarget { target: &bf.x, grad: &bf.dxhat, scale: (2.0 / (b as f64 * d as f64)) as f32 };
        // The Gumbel kernels, bound only when some run needs them; each run's noise seed is its reset seed's mix.
        let soft_runs = |active: fn(Estimator) -> bool| -> Option<Vec<SoftRun>> {
            configs.iter().any(|c| active(c.estimator)).then(|| {
                configs
                    .iter()
                    .map(|c| SoftRun {
                        active: active(c.estimator),
                        noise_seed: Some(seed_mix(c.seed)),
                        beta: c.beta as f32,
                        batch: b,
                    })
                    .collect()
            })
        };
        let soft_shape = SoftShape { n: b, k, m };
        let sample = soft_runs(Estimator::samples_gumbel)
            .map(|runs| {
                let buffers = SoftSampleBuffers {
                    z: &bf.z,
                    codebook: &bf.codebook,
                    index: &bf.index,
                    distance: &bf.dist,
                    q: &bf.q,
                };
                ks.soft.bind_sample(device, &buffers, soft_shape, &runs)
            })
            .transpose()?;
        let soft_backward = soft_runs(Estimator::soft_backward)
            .map(|runs| {
                let buffers = SoftBackwardBuffers {
                    z: &bf.z,
                    codebook: &bf.codebook,
                    g: &bf.g,
                    index: &bf.index,
                    grad_z: &bf.dz,
                };
                ks.soft.bind_backward(device, &buffers, soft_shape, &runs)
            })
            .transpose()?;
        // A level's codebook update from its input z (the encodings, or a residual), its codes and its state.
        let codebook_update = |cb: CodebookState<'_>| -> Result<CodebookUpdate> {
            Ok(match first.codebook_mode {
                CodebookMode::Grad => CodebookUpdate::Grad(
                    ks.codebook.bind_grad_runs(
                        device,
                        &GradBuffers { z: cb.z, index: cb.index, codebook: cb.codebook, grad: cb.grad },
                        cb_shape,
                        b,
                        r,
                    )?,
                    // Adam is elementwise with the same constants for every run: the stacked arrays are one array.
                    ks.adam.bind(device, cb.codebook, cb.grad, cb.adam_m, cb.adam_v, r * k * m, adam)?,
                ),
                CodebookMode::Ema => CodebookUpdate::Ema(ks.codebook.bind_ema_runs(
                    device,
                    &EmaBuffers {
                        z: cb.z,
                        index: cb.index,
                        codebook: cb.codebook,
                        counts: cb.counts,
                        ema_size: cb.ema_size,
                        ema_sum: cb.ema_sum,
                    },
                    cb_shape,
                    EmaSettings { decay: EMA.0 as f32, eps: EMA.1 as f32 },
                    r,
                )?),
            })
        };
        let codebook = codebook_update(CodebookState {
            z: &bf.z,
            index: &bf.index,
            codebook: &bf.codebook,
            grad: &bf.codebook_grad,
            adam_m: &bf.codebook_m,
            adam_v: &bf.codebook_v,
            counts: &bf.counts,
            ema_size: &bf.ema_size,
            ema_sum: &bf.ema_sum,
        })?;
        // Residual VQ's later levels: level l reads r_l = r_{l-1} - q_{l-1} (r_0 = z, q_0 the first level's codes,
        // read before any level adds to them). The commitment term, 2 beta / (B m) (z - sum_l q_l), is the last
        // level's estimator's (z - q there is r_{L-1} - q_{L-1} = z - sum_l q_l); the others get beta = 0.
        let last = bf.levels.len();
        let mut levels = Vec::new();
        for (l, lv) in bf.levels.iter().enumerate() {
            let (prev_input, prev_q) =
                if l == 0 { (&bf.z, &bf.q) } else { (&bf.levels[l - 1].input, &bf.levels[l - 1].q) };
            let level_settings: Vec<EstimatorSettings> = settings
                .iter()
                .map(|s| EstimatorSettings { beta: if l + 1 == last { s.beta } else { 0.0 }, ..*s })
                .collect();
            levels.push(LevelRecorded {
                residual: ks.residual.bind_subtract(device, prev_input, prev_q, &lv.input, r * b * m)?,
                assign: ks.assign.bind_runs(
                    device,
                    &AssignBuffers { z: &lv.input, codebook: &lv.codebook, index: &lv.index, distance: &lv.dist },
                    AssignShape { n: b, k, m },
                    Some(&lv.q),
                    r,
                )?,
                sum_q: ks.residual.bind_accumulate(device, &lv.q, &bf.q, r * b * m)?,
                estimator: ks.estimator.bind_runs(
                    device,
                    &EstimatorBuffers {
                        g: &bf.g,
                        z: &lv.input,
                        index: &lv.index,
                        codebook: &lv.codebook,
                        grad_z: &lv.dz,
                    },
                    EstimatorShape { n: b, k, m },
                    &level_settings,
                )?,
                sum_dz: ks.residual.bind_accumulate(device, &lv.dz, &bf.dz, r * b * m)?,
                codebook: codebook_update(CodebookState {
                    z: &lv.input,
                    index: &lv.index,
                    codebook: &lv.codebook,
                    grad: &lv.codebook_grad,
                    adam_m: &lv.codebook_m,
                    adam_v: &lv.codebook_v,
                    counts: &lv.counts,
                    ema_size: &lv.ema_size,
                    ema_sum: &lv.ema_sum,
                })?,
            });
        }
        let reset = if first.reset_dead > 0 {
            let grad = first.codebook_mode == CodebookMode::Grad;
            let counts = CountBuffers { index: &bf.index, counts: &bf.counts };
            let step_counts = if grad { Some(ks.codebook.bind_counts_runs(device, &counts, b, k, r)?) } else { None };
            let ema = (!grad).then_some((&bf.ema_size, &bf.ema_sum));
            let buffers = ResetBuffers { z: &bf.z, codebook: &bf.codebook, counts: &bf.counts, ema };
            let seeds: Vec<u32> = configs.iter().map(|c| seed_mix(c.seed)).collect();
            Some((step_counts, ks.codebook.bind_reset_runs(device, &buffers, cb_shape, &seeds, step)?))
        } else {
            None
        };
        let first_settings: Vec<EstimatorSettings> = if last > 0 {
            settings.iter().map(|s| EstimatorSettings { beta: 0.0, ..*s }).collect()
        } else {
            settings.clone()
        };
        let estimator = ks.estimator.bind_runs(
            device,
            &EstimatorBuffers { g: &bf.g, z: &bf.z, index: &bf.index, codebook: &bf.codebook, grad_z: &bf.dz },
            EstimatorShape { n: b, k, m },
            &first_settings,
        )?;
        let learned = if configs.iter().any(|c| c.estimator == Estimator::Learned) {
            let enabled: Vec<bool> = configs.iter().map(|c| c.estimator == Estimator::Learned).collect();
            let target_runs: Vec<SoftRun> =
                enabled.iter().map(|&active| SoftRun { active, noise_seed: None, beta: 0.0, batch: b }).collect();
            let t = &bf.transport;
            Some(LearnedRecorded {
                target: ks.soft.bind_backward(
                    device,
                    &SoftBackwardBuffers {
                        z: &bf.z,
                        codebook: &bf.codebook,
                        g: &bf.g,
                        index: &bf.index,
                        grad_z: &bf.transport_target,
                    },
                    soft_shape,
                    &target_runs,
                )?,
                grad: ks.learned.bind_grad(
                    device,
                    &LearnedGradBuffers { g: &bf.g, s: &bf.transport_target, transport: t, grad: &bf.transport_grad },
                    (b, m),
                    &enabled,
                )?,
                backward: ks.learned.bind_backward(
                    device,
                    &LearnedBuffers { g: &bf.g, transport: t, grad_z: &bf.dz },
                    (b, m),
                    &enabled,
                )?,
                adam: ks.adam.bind(device, t, &bf.transport_grad, &bf.transport_m, &bf.transport_v, r * m * m, adam)?,
            })
        } else {
            None
        };
        // The adaptive beta: this step's counts, then each run's new commitment coefficient written into the
        // estimator kernels' run settings (both, when a run's backward is the relaxation's).
        let adapt = if first.beta_schedule == BetaRule::Adaptive {
            let counts = CountBuffers { index: &bf.index, counts: &bf.counts };
            let rule = AdaptiveBeta { target: first.target_usage as f32, rate: first.beta_rate as f32 };
            let a = SettingsSlot { buffer: estimator.run_settings(), stride: 2, offset: 1 };
            let soft = soft_backward.as_ref().map(|s| SettingsSlot { buffer: s.run_settings(), stride: 4, offset: 3 });
            Some((
                ks.codebook.bind_counts_runs(device, &counts, b, k, r)?,
                ks.schedule.bind(
                    device,
                    (&bf.counts, &bf.beta_state),
                    ScheduleShape { k, batch: b, m, runs: r },
                    rule,
                    a,
                    soft,
                )?,
            ))
        } else {
            None
        };
        Ok(StepRecorded {
            levels,
            adapt,
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
            sample,
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
            estimator,
            soft_backward,
            learned,
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
            codebook,
            adam_params: ks.adam.bind(device, &bf.params, &bf.grads, &bf.adam_m, &bf.adam_v, r * layout.len, adam)?,
            reset,
        })
    }

    /// The most runs like `config` on `data` that one batch can hold on `gpu`: every stacked buffer must fit one
    /// storage binding. The training set is the largest (each run has its own).
    pub fn max_runs(gpu: &Gpu, config: &TrainConfig, data: &Dataset) -> u32 {
        let limit = gpu.device.limits().max_storage_buffer_binding_size;
        let b = config.batch as u64;
        let hidden = if config.encoder == EncoderKind::Mlp { config.hidden as u64 } else { 1 };
        let per_run = [
            data.train.len() as u64,
            data.eval.len() as u64,
            (STEPS_PER_SUBMIT as u64) * b,
            b * data.dim as u64,
            b * hidden,
            b * config.latent as u64,
            config.codes as u64 * config.latent as u64,
            config.codes as u64 + 1, // the reset's marks and seed
            config.shape(data).layout().len as u64,
        ];
        let largest = per_run.iter().max().copied().unwrap_or(1).max(1) * 4;
        (limit / largest).clamp(1, gpu.device.limits().max_compute_workgroups_per_dimension as u64) as u32
    }

    /// The number of runs.
    pub fn runs(&self) -> usize {
        self.configs.len()
    }

    /// Records one training step of every run (slot `slot` of this submit, step `t`) into its own compute pass.
    /// `mark` is called after each kernel with its name (a profile's timestamps; a no-op otherwise).
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
        if let Some(sample) = &r.sample {
            sample.encode(&mut pass, s, slot);
        }
        for level in &r.levels {
            level.residual.encode(&mut pass);
            level.assign.encode(&mut pass);
            level.sum_q.encode(&mut pass);
        }
        mark(&mut pass, "assign + q");
        if let Some((counts, schedule)) = &r.adapt {
            counts.encode(&mut pass);
            schedule.encode(&mut pass);
            mark(&mut pass, "adaptive beta");
        }
        r.decoder.iter().for_each(|op| op.encode(&mut pass));
        mark(&mut pass, "decoder forward + loss gradient");
        r.decoder_back.iter().for_each(|op| op.encode(&mut pass));
        mark(&mut pass, "decoder backward");
        r.estimator.encode(&mut pass);
        if let Some(soft) = &r.soft_backward {
            soft.encode(&mut pass, s, slot);
        }
        if let Some(l) = &r.learned {
            l.target.encode(&mut pass, s, slot);
            l.grad.encode(&mut pass);
            l.backward.encode(&mut pass);
        }
        for level in &r.levels {
            level.estimator.encode(&mut pass);
            level.sum_dz.encode(&mut pass);
        }
        mark(&mut pass, "estimator backward");
        r.encoder_back.iter().for_each(|op| op.encode(&mut pass));
        mark(&mut pass, "encoder backward");
        // Every level's codebooks (they share the codebook mode).
        let updates = || std::iter::once(&r.codebook).chain(r.levels.iter().map(|l| &l.codebook));
        match &r.codebook {
            CodebookUpdate::Grad(..) => {
                updates().for_each(|u| {
                    if let CodebookUpdate::Grad(grad, _) = u {
                        grad.encode(&mut pass)
                    }
                });
                mark(&mut pass, "codebook gradient");
                updates().for_each(|u| {
                    if let CodebookUpdate::Grad(_, adam) = u {
                        adam.encode(&mut pass, s, slot)
                    }
                });
                mark(&mut pass, "codebook adam");
            }
            CodebookUpdate::Ema(..) => {
                updates().for_each(|u| {
                    if let CodebookUpdate::Ema(ema) = u {
                        ema.encode(&mut pass)
                    }
                });
                mark(&mut pass, "codebook ema");
            }
        }
        r.adam_params.encode(&mut pass, s, slot);
        if let Some(l) = &r.learned {
            l.adam.encode(&mut pass, s, slot);
        }
        mark(&mut pass, "parameter adam");
        if let Some((step_counts, reset)) = &r.reset {
            if let Some(counts) = step_counts {
                counts.encode(&mut pass);
            }
            reset.encode_mark(&mut pass);
            if t.is_multiple_of(self.configs[0].reset_dead as u64) {
                reset.encode_reset(&mut pass, s, slot);
            }
            mark(&mut pass, "dead-code reset");
        }
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

    /// Runs `steps` training steps of every run, `STEPS_PER_SUBMIT` to a submit, with no readback.
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

    /// Evaluates run `run` on its eval set (and its last batch) and reads back the statistics.
    pub fn evaluate_run(&self, run: usize) -> Result<Metrics> {
        let config = &self.configs[run];
        let ev = &self.evaluator;
        let mut encoder =
            self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("eval") });
        ev.record(&mut encoder, &self.buffers, run as u64, config.lloyd_iters);
        self.gpu.queue.submit([encoder.finish()]);
        let device = &self.gpu.device;
        let eval = ev.rec.eval_codes.stats.read(device)?;
        let batch = ev.rec.batch_stats.read(device)?;
        let sums: Vec<f32> = read_buffer(device, &self.gpu.queue, &ev.buffers.metrics)?;
        let Sizes { b, d, m, n_eval, .. } = self.sizes;
        let (b, d, n_eval) = (b as f64, d as f64, n_eval as f64);
        let rec = sums[1] as f64 / (b * d);
        // L_cb sums the levels' terms, and L_commit is the last level's (||z - sum_l q_l||^2); one level: both are
        // the batch's quantization error.
        let (cb, commit) = if ev.rec.levels.is_empty() {
            (batch.quant_err, batch.quant_err)
        } else {
            let per_level: Vec<f64> =
                (0..ev.rec.batch_sums.len()).map(|l| sums[3 + l] as f64 / (b * m as f64)).collect();
            (per_level.iter().sum(), per_level.last().copied().unwrap_or(f64::NAN))
        };
        let levels = if ev.rec.levels.is_empty() {
            None
        } else {
            let mut all = vec![LevelMetrics::from(eval)];
            for level in &ev.rec.levels {
                all.push(LevelMetrics::from(level.codes.stats.read(device)?));
            }
            Some(all)
        };
        let beta = match config.beta_schedule {
            BetaRule::Adaptive => {
                let state: Vec<f32> = read_buffer(device, &self.gpu.queue, &self.buffers.beta_state)?;
                Some(state[3 * run] as f64)
            }
            BetaRule::Fixed => None,
        };
        let loss = rec
            + if config.codebook_mode == CodebookMode::Grad { cb } else { 0.0 }
            + beta.unwrap_or(config.beta) * commit;
        let transport = if config.estimator == Estimator::Learned {
            let all: Vec<f32> = read_buffer(device, &self.gpu.queue, &self.buffers.transport)?;
            let mm = (m * m) as usize;
            Some(to_f64(&all[run * mm..(run + 1) * mm]))
        } else {
            None
        };
        let subspace_err = match (&self.bases[run], config.encoder) {
            (Some((basis, rank)), EncoderKind::Linear) => {
                let params: Vec<f32> = read_buffer(device, &self.gpu.queue, &ev.buffers.params)?;
                let w = self.layout.decoder[0];
                let wd = to_f64(&params[w.w_off as usize..w.b_off as usize]);
                Some(super::subspace_err(&wd, self.sizes.d as usize, m as usize, basis, *rank))
            }
            _ => None,
        };
        self.gpu.check()?;
        let trained = self.step > 0;
        Ok(Metrics {
            step: self.step as u32,
            loss: if trained { loss } else { f64::NAN },
            dead_codes: eval.dead_codes,
            usage: eval.usage,
            entropy: eval.entropy,
            perplexity: eval.perplexity,
            recon_mse: sums[0] as f64 / (n_eval * d),
            quant_err: levels.as_ref().and_then(|l| l.last()).map_or(eval.quant_err, |l| l.quant_err),
            purity: eval.purity,
            subspace_err,
            batch_usage: if trained { 1.0 - batch.dead_codes as f64 / config.codes as f64 } else { f64::NAN },
            beta,
            transport,
            levels,
            lloyd_dist: (config.lloyd_iters > 0).then(|| sums[2] as f64 / (self.sizes.k as f64 * m as f64)),
        })
    }

    /// Each run's flat parameters and codebook, read back (for tests and for saving a model).
    pub fn read_states(&self) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let (device, queue) = (&self.gpu.device, &self.gpu.queue);
        let params: Vec<f32> = read_buffer(device, queue, &self.buffers.params)?;
        let codebook: Vec<f32> = read_buffer(device, queue, &self.buffers.codebook)?;
        let (p, c) = (self.layout.len as usize, (self.sizes.k * self.sizes.m) as usize);
        Ok((0..self.runs())
            .map(|r| (params[r * p..(r + 1) * p].to_vec(), codebook[r * c..(r + 1) * c].to_vec()))
            .collect())
    }

    /// Bytes of the batch's storage buffers (data, state, activations, the evaluation workspace; not the small
    /// uniforms).
    pub fn buffer_bytes(&self) -> u64 {
        self.buffers.all().chain(self.evaluator.buffers.owned()).map(|b| b.size()).sum()
    }

    /// Steps taken so far (by every run).
    pub fn steps_done(&self) -> u64 {
        self.step
    }
}

impl Trainer for BatchTrainer<'_> {
    fn configs(&self) -> &[TrainConfig] {
        &self.configs
    }

    fn steps_done(&self) -> u64 {
        self.step
    }

    fn train_steps(&mut self, steps: u32) -> Result<()> {
        BatchTrainer::train_steps(self, steps)
    }

    fn evaluate_run(&self, run: usize) -> Result<Metrics> {
        BatchTrainer::evaluate_run(self, run)
    }

    fn read_states(&self) -> Result<Vec<State>> {
        BatchTrainer::read_states(self)
    }

    fn wait(&self) -> Result<()> {
        self.gpu.wait()
    }
}

/// A run on the GPU: a [`BatchTrainer`] of one.
pub struct GpuTrainer<'g> {
    batch: BatchTrainer<'g>,
}

impl<'g> GpuTrainer<'g> {
    /// Makes the initial state, uploads the data and the state, and binds every kernel.
    pub fn new(gpu: &'g Gpu, config: &TrainConfig, data: &Dataset) -> Result<Self> {
        Ok(GpuTrainer { batch: BatchTrainer::build(gpu, &[(config, data)])? })
    }

    /// See [`BatchTrainer::profile_steps`].
    pub fn profile_steps(&mut self, steps: u32) -> Result<Option<Vec<(&'static str, f64)>>> {
        self.batch.profile_steps(steps)
    }

    /// Runs `steps` training steps, `STEPS_PER_SUBMIT` to a submit, with no readback.
    pub fn train_steps(&mut self, steps: u32) -> Result<()> {
        self.batch.train_steps(steps)
    }

    /// Evaluates on the eval set (and the last batch) and reads back the statistics.
    pub fn evaluate(&self) -> Result<Metrics> {
        self.batch.evaluate_run(0)
    }

    /// The flat parameters and the codebook, read back (for tests and for saving a model).
    pub fn read_state(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok(self.batch.read_states()?.swap_remove(0))
    }

    /// Bytes of the run's storage buffers (data, state, activations, the evaluation workspace; not the small
    /// uniforms).
    pub fn buffer_bytes(&self) -> u64 {
        self.batch.buffer_bytes()
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.batch.step
    }

    /// Trains for the configured steps, evaluating every `eval_every` steps and at the end; `on_eval` sees each
    /// evaluation as it comes.
    pub fn run(&mut self, mut on_eval: impl FnMut(&Metrics)) -> Result<RunResult> {
        Ok(Trainer::run(&mut self.batch, &mut |_, m| on_eval(m))?.swap_remove(0))
    }
}

/// [`lloyd_on_gpu`] on f64 values, narrowed to f32 and the result widened back.
pub fn lloyd_f64(gpu: &Gpu, z: &[f64], centres: &[f64], m: usize, iters: usize) -> Result<Vec<f64>> {
    let iters = u32::try_from(iters).map_err(|_| Error::Input(format!("{iters} Lloyd iterations are too many")))?;
    Ok(to_f64(&lloyd_on_gpu(gpu, &narrow(z), &narrow(centres), m as u32, iters)?))
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
