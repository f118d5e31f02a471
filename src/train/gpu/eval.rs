//! The evaluator: one workspace per trainer into which a run's parameters, codebooks, last batch and eval set are
//! copied out of the stacked buffers, so that every run of a batch is evaluated by the same kernels on its own
//! state, exactly as it would be alone; then the metrics of docs/PROTOCOL.md §4 read back (two 32-byte statistics
//! structs per level, a few sums and, for `subspace_err`, the decoder weights).

use super::Kernels;
use super::buffers::{Sizes, TrainBuffers};
use super::layers::forward_chain;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::assign::{AssignBuffers, AssignShape, BoundAssign};
use crate::kernels::codebook::{BoundCounts, BoundLloyd, CodebookShape, CountBuffers, LloydBuffers};
use crate::kernels::dense::BoundDense;
use crate::kernels::latent::{BoundLatent, LatentBuffers};
use crate::kernels::loss::BoundLoss;
use crate::kernels::residual::BoundResidual;
use crate::kernels::stats::{BoundStats, StatsBuffers, StatsShape};
use crate::model::{CodebookMode, EncoderKind, LatentMap, Layout};
use crate::reference::to_f64;
use crate::train::{LevelMetrics, Metrics, TrainConfig};

/// One level's eval-set assignment. Level 0's input and codes are the eval encodings and the decoder's input
/// (`eval_z`, `eval_q`), and its last-batch distances the batch's own; a later level has its own.
struct EvalLevel {
    codebook: wgpu::Buffer,
    input: wgpu::Buffer,
    index: wgpu::Buffer,
    dist: wgpu::Buffer,
    q: wgpu::Buffer,
    counts: wgpu::Buffer,
    /// The run's last batch's distances at this level.
    batch_dist: wgpu::Buffer,
}

struct EvalBuffers {
    /// The eval set and labels being evaluated: the workspace's own copy, or (a batch of one) the stacked
    /// buffers themselves, with nothing to copy.
    eval: wgpu::Buffer,
    eval_labels: Option<wgpu::Buffer>,
    own_eval: bool,
    params: wgpu::Buffer,
    /// The run's last batch, its reconstruction and codes (the batch metrics).
    x: wgpu::Buffer,
    xhat: wgpu::Buffer,
    index: wgpu::Buffer,
    batch_counts: wgpu::Buffer,
    /// Sums: eval set and last batch squared errors, the Lloyd distance, then each level's batch distances.
    metrics: wgpu::Buffer,
    eval_xhat: wgpu::Buffer,
    /// The outputs of the encoder's and the decoder's layers but their last.
    eval_enc_hidden: Vec<wgpu::Buffer>,
    eval_dec_hidden: Vec<wgpu::Buffer>,
    /// With a map of the encodings (docs/PROTOCOL.md §6.6): the encoder's output, which the map takes to level 0's
    /// input.
    eval_raw: Option<wgpu::Buffer>,
    /// The Lloyd fixed point on the eval encodings, from the run's first codebook, with its own assignment.
    lloyd: [wgpu::Buffer; 4],
    levels: Vec<EvalLevel>,
}

/// The eval set's codes (with q) through one codebook, their counts and their statistics.
struct EvalCodes {
    assign: BoundAssign,
    counts: BoundCounts,
    stats: BoundStats,
}

/// One level's evaluation: the input (later levels), the codes and their sum (later levels).
struct EvalLevelPlan {
    residual: Option<BoundResidual>,
    codes: EvalCodes,
    sum_q: Option<BoundResidual>,
}

struct EvalPlan {
    encoder: Vec<BoundDense>,
    map: Option<BoundLatent>,
    levels: Vec<EvalLevelPlan>,
    /// With later levels: the sum of each level's last-batch distances into `metrics[3 + l]` (the loss terms).
    batch_sums: Vec<BoundLoss>,
    decoder: Vec<BoundDense>,
    sq: BoundLoss,
    batch_sq: BoundLoss,
    batch_counts: BoundCounts,
    batch_stats: BoundStats,
    lloyd_assign: BoundAssign,
    lloyd_update: BoundLloyd,
    lloyd_sq: BoundLoss,
}

pub(super) struct Evaluator {
    buffers: EvalBuffers,
    plan: EvalPlan,
}

impl EvalBuffers {
    fn new(
        gpu: &Gpu,
        (config, layout): (&TrainConfig, &Layout),
        sz: Sizes,
        shared: Option<(&wgpu::Buffer, Option<&wgpu::Buffer>)>,
        labels: bool,
    ) -> Result<Self> {
        let Sizes { b, d, m, k, n_eval, .. } = sz;
        let f = |label: &str, len: u32| gpu.zeroed::<f32>(label, len as usize);
        let u = |label: &str, len: u32| gpu.zeroed::<u32>(label, len as usize);
        let (eval_z, eval_q, batch_dist) =
            (f("eval z", n_eval * m)?, f("eval q", n_eval * m)?, f("eval batch distance", b)?);
        let mut levels = Vec::new();
        for l in 0..config.levels {
            let own =
                |label: &str, shared: &wgpu::Buffer, len: u32| if l == 0 { Ok(shared.clone()) } else { f(label, len) };
            levels.push(EvalLevel {
                codebook: f("eval codebook", k * m)?,
                input: own("eval level input", &eval_z, n_eval * m)?,
                index: u("eval index", n_eval)?,
                dist: f("eval distance", n_eval)?,
                q: own("eval level q", &eval_q, n_eval * m)?,
                counts: u("eval counts", k)?,
                batch_dist: own("eval level batch distance", &batch_dist, b)?,
            });
        }
        Ok(EvalBuffers {
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
            x: f("eval batch x", b * d)?,
            xhat: f("eval batch xhat", b * d)?,
            index: u("eval batch index", b)?,
            batch_counts: u("eval batch counts", k)?,
            metrics: f("metrics", 3 + config.levels.max(2))?,
            eval_xhat: f("eval xhat", n_eval * d)?,
            eval_enc_hidden: (layout.encoder[..layout.encoder.len() - 1].iter())
                .map(|l| f("eval encoder hidden", n_eval * l.output))
                .collect::<Result<_>>()?,
            eval_dec_hidden: (layout.decoder[..layout.decoder.len() - 1].iter())
                .map(|l| f("eval decoder hidden", n_eval * l.output))
                .collect::<Result<_>>()?,
            eval_raw: match config.latent_map() {
                crate::model::LatentMap::None => None,
                _ => Some(f("eval raw z", n_eval * m)?),
            },
            lloyd: [
                f("lloyd codebook", k * m)?,
                u("lloyd index", n_eval)?,
                f("lloyd distance", n_eval)?,
                u("lloyd counts", k)?,
            ],
            levels,
        })
    }
}

/// Binds the eval set's assignment through `level` (writing q), counts and statistics (purity with `labels`).
fn eval_codes(
    ks: &Kernels,
    device: &wgpu::Device,
    level: &EvalLevel,
    sz: Sizes,
    labels: Option<&wgpu::Buffer>,
) -> Result<EvalCodes> {
    let (n, k, m) = (sz.n_eval, sz.k, sz.m);
    Ok(EvalCodes {
        assign: ks.assign.bind_with_codes(
            device,
            &AssignBuffers { z: &level.input, codebook: &level.codebook, index: &level.index, distance: &level.dist },
            AssignShape { n, k, m },
            &level.q,
        )?,
        counts: ks.codebook.bind_counts(device, &CountBuffers { index: &level.index, counts: &level.counts }, n, k)?,
        stats: ks.stats.bind(
            device,
            &StatsBuffers { index: &level.index, distance: &level.dist, counts: &level.counts, labels },
            StatsShape { n, k, m, classes: if labels.is_some() { sz.classes } else { 0 } },
        )?,
    })
}

impl EvalPlan {
    fn new(
        ks: &Kernels,
        device: &wgpu::Device,
        bf: &EvalBuffers,
        (layout, map): (&Layout, &LatentMap),
        sz: Sizes,
    ) -> Result<Self> {
        let Sizes { b, d, m, k, n_eval, .. } = sz;
        let level0 = &bf.levels[0];
        let z = bf.eval_raw.as_ref().unwrap_or(&level0.input);
        let enc_outs: Vec<&wgpu::Buffer> = bf.eval_enc_hidden.iter().chain([z]).collect();
        let map = match map {
            LatentMap::None => None,
            LatentMap::Fsq(levels) => {
                let buffers = LatentBuffers { z, out: &level0.input, dy: None };
                Some(ks.latent.bind_fsq(device, &buffers, levels, n_eval * m)?)
            }
            LatentMap::Unit => {
                let buffers = LatentBuffers { z, out: &level0.input, dy: None };
                Some(ks.latent.bind_unit(device, &buffers, m, n_eval * m)?)
            }
        };
        let dec_outs: Vec<&wgpu::Buffer> = bf.eval_dec_hidden.iter().chain([&bf.eval_xhat]).collect();
        let [lloyd_codebook, lloyd_index, lloyd_dist, lloyd_counts] = &bf.lloyd;
        let mut levels = Vec::new();
        for (l, lv) in bf.levels.iter().enumerate() {
            let prev = &bf.levels[l.saturating_sub(1)];
            let labels = if l == 0 { bf.eval_labels.as_ref() } else { None };
            let later = l > 0;
            levels.push(EvalLevelPlan {
                residual: later
                    .then(|| ks.residual.bind_subtract(device, &prev.input, &prev.q, &lv.input, n_eval * m))
                    .transpose()?,
                codes: eval_codes(ks, device, lv, sz, labels)?,
                sum_q: later.then(|| ks.residual.bind_accumulate(device, &lv.q, &level0.q, n_eval * m)).transpose()?,
            });
        }
        let batch_sums = if bf.levels.len() > 1 {
            (bf.levels.iter().enumerate())
                .map(|(l, lv)| ks.loss.bind_sum(device, &lv.batch_dist, &bf.metrics, 3 + l as u32, b))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(EvalPlan {
            encoder: forward_chain(&ks.dense, device, &layout.encoder, &bf.eval, &enc_outs, &bf.params, n_eval, None)?,
            map,
            levels,
            batch_sums,
            decoder: forward_chain(&ks.dense, device, &layout.decoder, &level0.q, &dec_outs, &bf.params, n_eval, None)?,
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
                &StatsBuffers {
                    index: &bf.index,
                    distance: &level0.batch_dist,
                    counts: &bf.batch_counts,
                    labels: None,
                },
                StatsShape { n: b, k, m, classes: 0 },
            )?,
            lloyd_assign: ks.assign.bind(
                device,
                &AssignBuffers { z: &level0.input, codebook: lloyd_codebook, index: lloyd_index, distance: lloyd_dist },
                AssignShape { n: n_eval, k, m },
            )?,
            lloyd_update: ks.codebook.bind_lloyd(
                device,
                &LloydBuffers { z: &level0.input, index: lloyd_index, codebook: lloyd_codebook, counts: lloyd_counts },
                CodebookShape { n: n_eval, k, m },
            )?,
            lloyd_sq: ks.loss.bind_sum_sq_diff(device, lloyd_codebook, &level0.codebook, &bf.metrics, 2, k * m)?,
        })
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>, lloyd_iters: u32) {
        self.encoder.iter().for_each(|op| op.encode(pass));
        if let Some(map) = &self.map {
            map.encode(pass);
        }
        for level in &self.levels {
            if let Some(r) = &level.residual {
                r.encode(pass);
            }
            level.codes.assign.encode(pass);
            level.codes.counts.encode(pass);
            level.codes.stats.encode(pass);
            if let Some(s) = &level.sum_q {
                s.encode(pass);
            }
        }
        self.batch_sums.iter().for_each(|op| op.encode(pass));
        self.decoder.iter().for_each(|op| op.encode(pass));
        self.sq.encode(pass);
        self.batch_sq.encode(pass);
        self.batch_counts.encode(pass);
        self.batch_stats.encode(pass);
        for _ in 0..lloyd_iters {
            self.lloyd_assign.encode(pass);
            self.lloyd_update.encode(pass);
        }
        if lloyd_iters > 0 {
            self.lloyd_sq.encode(pass);
        }
    }
}

/// What the stages report for a run at an evaluation.
pub(super) struct StageMetrics {
    pub beta: Option<f64>,
    pub transport: Option<Vec<f64>>,
}

impl Evaluator {
    /// A workspace for one run of `config`'s shapes. `shared` is the eval set and labels to bind directly (a batch
    /// of one); otherwise the workspace has its own copy (`labels`: whether the data have labels).
    pub fn new(
        gpu: &Gpu,
        ks: &Kernels,
        (config, layout): (&TrainConfig, &Layout),
        sz: Sizes,
        shared: Option<(&wgpu::Buffer, Option<&wgpu::Buffer>)>,
        labels: bool,
    ) -> Result<Self> {
        let buffers = EvalBuffers::new(gpu, (config, layout), sz, shared, labels)?;
        let plan = EvalPlan::new(ks, &gpu.device, &buffers, (layout, &config.latent_map()), sz)?;
        Ok(Evaluator { buffers, plan })
    }

    /// Records copies of run `run`'s slices of the stacked buffers into the workspace, then the evaluation.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder, from: &TrainBuffers, run: u64, lloyd_iters: u32) {
        let own = &self.buffers;
        let mut copy = |src: &wgpu::Buffer, dst: &wgpu::Buffer| {
            let bytes = dst.size();
            encoder.copy_buffer_to_buffer(src, run * bytes, dst, 0, bytes);
        };
        copy(&from.params, &own.params);
        for (src, dst) in from.levels.iter().zip(&own.levels) {
            copy(&src.codebook, &dst.codebook);
            copy(&src.dist, &dst.batch_dist);
        }
        copy(&from.levels[0].codebook, &own.lloyd[0]);
        copy(&from.x, &own.x);
        copy(&from.xhat, &own.xhat);
        copy(&from.levels[0].index, &own.index);
        if own.own_eval {
            copy(&from.eval, &own.eval);
            if let (Some(src), Some(dst)) = (&from.eval_labels, &own.eval_labels) {
                copy(src, dst);
            }
        }
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("eval"), timestamp_writes: None });
            self.plan.record(&mut pass, lloyd_iters);
        }
        self.plan.levels[0].codes.stats.copy_out(encoder);
        self.plan.batch_stats.copy_out(encoder);
        self.plan.levels[1..].iter().for_each(|l| l.codes.stats.copy_out(encoder));
    }

    /// Reads back the metrics of the run just recorded, after `step` steps, with what its stages report (a
    /// changing beta enters the loss) and, for `subspace_err`, its data's basis and rank.
    pub fn read(
        &self,
        gpu: &Gpu,
        (config, layout, sz): (&TrainConfig, &Layout, Sizes),
        step: u64,
        stages: StageMetrics,
        basis: Option<&(Vec<f64>, usize)>,
    ) -> Result<Metrics> {
        let device = &gpu.device;
        let eval = self.plan.levels[0].codes.stats.read(device)?;
        let batch = self.plan.batch_stats.read(device)?;
        let sums: Vec<f32> = gpu.read(&self.buffers.metrics)?;
        let (b, d, m, n_eval) = (sz.b as f64, sz.d as f64, sz.m as f64, sz.n_eval as f64);
        let rec = sums[1] as f64 / (b * d);
        // L_cb sums the levels' terms, and L_commit is the last level's (||z - sum_l q_l||^2); one level: both are
        // the batch's quantization error.
        let (cb, commit) = if self.plan.batch_sums.is_empty() {
            (batch.quant_err, batch.quant_err)
        } else {
            let per_level: Vec<f64> = (0..self.plan.batch_sums.len()).map(|l| sums[3 + l] as f64 / (b * m)).collect();
            (per_level.iter().sum(), per_level.last().copied().unwrap_or(f64::NAN))
        };
        let levels = if self.plan.levels.len() > 1 {
            let mut all = vec![LevelMetrics::from(eval)];
            for level in &self.plan.levels[1..] {
                all.push(LevelMetrics::from(level.codes.stats.read(device)?));
            }
            Some(all)
        } else {
            None
        };
        let loss = rec
            + if config.codebook_mode == CodebookMode::Grad { cb } else { 0.0 }
            + stages.beta.unwrap_or(config.beta) * commit;
        let subspace_err = match (basis, config.encoder) {
            // One decoder layer: W_d is the whole decoder (not with a lookup's projection).
            (Some((basis, rank)), EncoderKind::Linear) if layout.decoder.len() == 1 => {
                let params: Vec<f32> = gpu.read(&self.buffers.params)?;
                let w = layout.decoder[0];
                let wd = to_f64(&params[w.w_off as usize..w.b_off as usize]);
                Some(crate::train::subspace_err(&wd, sz.d as usize, sz.m as usize, basis, *rank))
            }
            _ => None,
        };
        let trained = step > 0;
        Ok(Metrics {
            step: step as u32,
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
            beta: stages.beta,
            transport: stages.transport,
            levels,
            lloyd_dist: (config.lloyd_iters > 0).then(|| sums[2] as f64 / (sz.k as f64 * m)),
        })
    }

    /// The buffers the workspace owns (level 0's aliases and a shared eval set included: callers count distinct
    /// buffers).
    pub fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        let bf = &self.buffers;
        [&bf.params, &bf.x, &bf.xhat, &bf.index, &bf.batch_counts, &bf.metrics, &bf.eval_xhat]
            .into_iter()
            .chain(&bf.lloyd)
            .chain(
                bf.levels
                    .iter()
                    .flat_map(|l| [&l.codebook, &l.input, &l.index, &l.dist, &l.q, &l.counts, &l.batch_dist]),
            )
            .chain(std::iter::once(&bf.eval).chain(bf.eval_labels.iter()).filter(|_| bf.own_eval))
    }
}
