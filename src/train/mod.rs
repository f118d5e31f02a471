//! Training the model of docs/PROTOCOL.md end to end: the configuration, the minibatch schedule, the metrics, and
//! two engines with the same step behind one interface ([`Trainer`], chosen by [`Engine::choose`]): the GPU engine
//! ([`gpu::BatchTrainer`]: everything on the GPU, reading back only statistics) and the CPU engine
//! ([`cpu::CpuRuns`]: the f64 reference, used where no adapter exists).

pub mod affine;
pub mod cosine;
pub mod cpu;
pub mod engine;
pub mod fast;
pub mod gpu;
pub mod init;
mod remedy;
pub mod simvq;

pub use engine::{Adapter, Engine, EngineChoice, State, Trainer, request_stop, stop_requested};
pub use init::{KMEANS_ITERS, KMEANS_SAMPLES, initial_run, initial_state, kmeans_plus_plus, lloyd};

use crate::data::{self, DataSpec, Dataset, Stream};
use crate::error::{Error, Result};
use crate::estimator::Estimator;
use crate::model::{BetaSchedule, CodebookInit, CodebookMode, EncoderKind, ModelShape, Reparam, Sampling};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Every setting of a run (docs/PROTOCOL.md's defaults in [`TrainConfig::default`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// The data set (`--dataset` or `--data`, with `--dim`, `--rank`, `--sigma`, `--clusters`, `--spread`).
    pub data: DataSpec,
    /// Training samples, generated data only (`--n-train`).
    pub n_train: u32,
    /// Eval samples, generated data only (`--n-eval`).
    pub n_eval: u32,
    /// Encoder kind, `linear` or `mlp` (`--encoder`).
    pub encoder: EncoderKind,
    /// Hidden width h of the `mlp` encoder and decoder (`--hidden`).
    pub hidden: u32,
    /// Latent dimension m (`--latent`).
    pub latent: u32,
    /// Codes K (`--k`).
    pub codes: u32,
    /// Gradient estimator at the VQ layer (`--estimator`).
    pub estimator: Estimator,
    /// Commitment weight beta (`--beta`).
    pub beta: f64,
    /// How the codebook learns, `grad` or `ema` (`--codebook-mode`).
    pub codebook_mode: CodebookMode,
    /// How the codebook starts, `uniform`, `normal` or `kmeans` (`--codebook-init`).
    pub codebook_init: CodebookInit,
    /// Training steps (`--steps`).
    pub steps: u32,
    /// Batch size B (`--batch`).
    pub batch: u32,
    /// Adam learning rate (`--lr`).
    pub lr: f64,
    /// Seed of every random stream: data, init, shuffles, k-means (`--seed`).
    pub seed: u64,
    /// Evaluate every this many steps, and after the last (`--eval-every`).
    pub eval_every: u32,
    /// Every this many steps, replace the codes unused since the last reset; 0 is off (`--reset-dead`).
    pub reset_dead: u32,
    /// The Gumbel estimators' temperature at the first step (`--tau`).
    #[serde(default = "default_tau")]
    pub tau: f64,
    /// The temperature at the last step, reached geometrically from `tau`; `None` keeps `tau` (`--tau-final`).
    #[serde(default)]
    pub tau_final: Option<f64>,
    /// `fixed` or `adaptive`: beta moved each step from the batch's code usage toward `target_usage`
    /// ([`crate::kernels::schedule`]) (`--beta-schedule`).
    #[serde(default)]
    pub beta_schedule: BetaSchedule,
    /// The adaptive beta's target usage, in (0, 1]: 1 is uniform use (`--target-usage`).
    #[serde(default = "default_target_usage")]
    pub target_usage: f64,
    /// The adaptive beta's log-step per unit of usage error, per step (`--beta-rate`).
    #[serde(default = "default_beta_rate")]
    pub beta_rate: f64,
    /// Residual VQ levels: level l quantizes the residual the levels before it leave with its own codebook of K
    /// codes; the decoder gets the sum of the levels' codes, and the encoder the sum of the estimator applied at
    /// every level (`--levels`). 1 is plain VQ.
    #[serde(default = "default_levels")]
    pub levels: u32,
    /// Lloyd iterations behind [`Metrics::lloyd_dist`] at each evaluation; 0 leaves it out (`--lloyd-iters`).
    #[serde(default = "default_lloyd_iters")]
    pub lloyd_iters: u32,
    /// How level 0 picks each row's code in training: `nearest`, or `stochastic`, drawn from softmax(-||z - c|| /
    /// tau) at the temperature of `tau` (and `tau_final`) (`--sampling`). Left out of results when `nearest`.
    #[serde(default, skip_serializing_if = "Sampling::is_nearest")]
    pub sampling: Sampling,
    /// The weight lambda of the codebook's orthogonality penalty `lambda L_orth` (docs/PROTOCOL.md §6.6), added to
    /// the codebook's gradient; 0 is off (`--orth-weight`). Left out of results when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub orth_weight: f64,
    /// How the codebook is parameterized: `none`, or `simvq`, a frozen basis through a learned linear layer
    /// (docs/PROTOCOL.md §6.6) (`--reparam`). Left out of results when `none`.
    #[serde(default, skip_serializing_if = "Reparam::is_none")]
    pub reparam: Reparam,
    /// The synchronized update's weight nu (docs/PROTOCOL.md §6.6): each code also receives nu times the decoder's
    /// gradient at it, as vqtorch's `sync_nu`; 0 is off (`--sync-nu`). Left out of results when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sync_nu: f64,
    /// The affine re-parameterization's scale a (docs/PROTOCOL.md §6.6): the codebook is `C0 diag(1 + a s) + a b`
    /// with a learned per-dimension scale s and shift b, as vqtorch's `affine_lr`; 0 is off (`--affine-lr`). Left
    /// out of results when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub affine_lr: f64,
    /// The learning rate of the alternate codebook mode's own SGD step (momentum [`ALTERNATE_MOMENTUM`]) on L_cb
    /// (docs/PROTOCOL.md §6.6) (`--alternate-lr`). Left out of results at its default, 1.
    #[serde(default = "default_alternate_lr", skip_serializing_if = "is_default_alternate_lr")]
    pub alternate_lr: f64,
    /// FSQ's levels per latent dimension (docs/PROTOCOL.md §6.6): the encodings are bounded per dimension and
    /// quantized to the fixed grid of prod L_j codes (K), with codebook mode `fixed` and no commitment term (beta
    /// 0); empty is off (`--fsq-levels`). Left out of results when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fsq_levels: Vec<u32>,
    /// Cosine codes (docs/PROTOCOL.md §6.6): the encodings and the codes are unit vectors, the codebook learned
    /// through the normalization (`--cosine`). Left out of results when off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cosine: bool,
    /// A low-dimensional lookup (docs/PROTOCOL.md §6.6): the encoder's output width w, which a linear layer projects
    /// down to the quantizer's m (`latent`), and another back up to w for the decoder (`--lookup-dim` sets m and
    /// keeps the old m as w). 0 is none. Left out of results when 0.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub lookup_width: u32,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn default_alternate_lr() -> f64 {
    1.0
}

fn is_default_alternate_lr(v: &f64) -> bool {
    *v == default_alternate_lr()
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn default_target_usage() -> f64 {
    TrainConfig::default().target_usage
}

fn default_beta_rate() -> f64 {
    TrainConfig::default().beta_rate
}

fn default_levels() -> u32 {
    1
}

fn default_lloyd_iters() -> u32 {
    TrainConfig::default().lloyd_iters
}

fn default_tau() -> f64 {
    TrainConfig::default().tau
}

impl Default for TrainConfig {
    /// docs/PROTOCOL.md's E1: subspace data (d = 256, r = 4, sigma = 0.05), m = 4, K = 32, beta = 0.25.
    fn default() -> Self {
        TrainConfig {
            data: DataSpec::Subspace { dim: 256, rank: 4, sigma: 0.05 },
            n_train: 16384,
            n_eval: 8192,
            encoder: EncoderKind::Linear,
            hidden: 128,
            latent: 4,
            codes: 32,
            estimator: Estimator::Ste,
            beta: 0.25,
            codebook_mode: CodebookMode::Grad,
            codebook_init: CodebookInit::Uniform,
            steps: 2000,
            batch: 256,
            lr: 1e-3,
            seed: 0,
            eval_every: 250,
            reset_dead: 0,
            tau: 0.1,
            tau_final: None,
            beta_schedule: BetaSchedule::Fixed,
            target_usage: 0.9,
            beta_rate: 0.05,
            levels: 1,
            lloyd_iters: 10,
            sampling: Sampling::Nearest,
            orth_weight: 0.0,
            reparam: Reparam::None,
            sync_nu: 0.0,
            affine_lr: 0.0,
            alternate_lr: default_alternate_lr(),
            fsq_levels: Vec::new(),
            cosine: false,
            lookup_width: 0,
        }
    }
}

/// The most residual VQ levels.
pub const MAX_LEVELS: u32 = 16;
/// The most Lloyd iterations per evaluation behind `lloyd_dist` (each is two dispatches).
pub const MAX_LLOYD_ITERS: u32 = 1000;

/// The most values any one array of a run may hold: the kernels index with u32, and a storage binding holds at most
/// 4 GiB of f32.
pub const MAX_ELEMENTS: u64 = (u32::MAX / 4) as u64;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The host memory available now (`MemAvailable` in /proc/meminfo, Linux); `None` where it cannot be read.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The largest label count purity is computed for.
pub const MAX_CLASSES: u32 = 65536;

impl TrainConfig {
    /// Checks the settings that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("codes (K)", self.codes),
            ("latent (m)", self.latent),
            ("hidden", self.hidden),
            ("steps", self.steps),
            ("batch", self.batch),
            ("eval-every", self.eval_every),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::Input(format!("{name} must be at least 1")));
            }
        }
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::Input(format!("beta must be finite and >= 0, got {}", self.beta)));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Input(format!("lr must be finite and > 0, got {}", self.lr)));
        }
        if self.beta_schedule == BetaSchedule::Adaptive {
            if !(self.beta > 0.0 && (self.beta as f32) > 0.0) {
                return Err(Error::Input(format!("the adaptive beta starts from beta > 0, got {}", self.beta)));
            }
            if !(self.target_usage > 0.0 && self.target_usage <= 1.0) {
                return Err(Error::Input(format!("target-usage must be in (0, 1], got {}", self.target_usage)));
            }
            if !(self.beta_rate.is_finite() && self.beta_rate > 0.0) {
                return Err(Error::Input(format!("beta-rate must be finite and > 0, got {}", self.beta_rate)));
            }
        }
        if self.lloyd_iters > MAX_LLOYD_ITERS {
            return Err(Error::Input(format!(
                "lloyd-iters must be at most {MAX_LLOYD_ITERS}, got {}",
                self.lloyd_iters
            )));
        }
        if !(1..=MAX_LEVELS).contains(&self.levels) {
            return Err(Error::Input(format!("levels must be 1 to {MAX_LEVELS}, got {}", self.levels)));
        }
        if self.levels > 1 {
            let unsupported = if !Estimator::ROW.contains(&self.estimator) {
                Some(format!("the {} estimator", self.estimator))
            } else if self.beta_schedule != BetaSchedule::Fixed {
                Some("the adaptive beta".into())
            } else if self.reset_dead > 0 {
                Some("dead-code resets".into())
            } else if self.codebook_init == CodebookInit::Kmeans {
                Some("the k-means init".into())
            } else {
                None
            };
            if let Some(what) = unsupported {
                return Err(Error::Input(format!(
                    "residual VQ (levels > 1) takes ste, rotation, rotation-trick or diveq with a fixed beta, no \
                     resets and a uniform or normal init; not {what}"
                )));
            }
        }
        self.check_remedies()?;
        if let Some(dim) = self.data.generated_dim() {
            self.check_sizes(dim, (self.n_train as u64, self.n_eval as u64), self.data.structure_len())?;
        }
        for (name, tau) in [("tau", Some(self.tau)), ("tau-final", self.tau_final)] {
            if let Some(t) = tau
                && !(t.is_finite() && t > 0.0 && t as f32 > 0.0)
            {
                return Err(Error::Input(format!("{name} must be finite and > 0, got {t}")));
            }
        }
        Ok(())
    }

    /// Checks the sizes a run of these settings needs on data of dimension `dim` with `rows` (train, eval) rows,
    /// before anything is allocated: every array's element count within the u32 the kernels index with, and the
    /// host memory it needs within what the machine has available. `extra` counts the values the data set's
    /// structure needs (the clusters' centres). Checked arithmetic throughout.
    pub fn check_sizes(&self, dim: u32, (n_train, n_eval): (u64, u64), extra: u64) -> Result<()> {
        let too_big = || {
            let (k, m, h) = (self.codes, self.latent, self.hidden);
            Error::Input(format!("the sizes overflow 64 bits: d {dim}, {n_train} + {n_eval} rows, K {k}, m {m}, h {h}"))
        };
        let mul = |a: u64, b: u64| a.checked_mul(b).ok_or_else(too_big);
        let (d, m, k, h, b) =
            (dim as u64, self.latent as u64, self.codes as u64, self.hidden as u64, self.batch as u64);
        let params = ModelShape {
            dim,
            latent: self.latent,
            codes: self.codes,
            encoder: self.encoder,
            hidden: self.hidden,
            lookup_width: self.lookup_width,
        }
        .param_count()
        .ok_or_else(too_big)?;
        let arrays = [
            ("the training set (rows x d)", mul(n_train, d)?),
            ("the eval set (rows x d)", mul(n_eval, d)?),
            ("the model's parameters", params),
            ("the codebook (K x m)", mul(k, m)?),
            ("the batch's activations (B x max(d, h))", mul(b, d.max(h))?),
            (
                "the eval set's hidden layer (rows x h)",
                mul(n_eval, if self.encoder == EncoderKind::Mlp { h } else { 1 })?,
            ),
            ("the data's structure", extra),
        ];
        for (what, n) in arrays {
            if n > MAX_ELEMENTS {
                return Err(Error::Input(format!(
                    "{what} would hold {n} values; at most {MAX_ELEMENTS} fit the kernels' u32 indices"
                )));
            }
        }
        // Host bytes: the data in f32, its f64 copy (CPU engine) and the batch's f64 work, the parameters with
        // their gradient and Adam's moments in f64, every level's codebook likewise.
        let data = n_train.saturating_add(n_eval).saturating_mul(d).saturating_add(extra);
        let state = params.saturating_add(k.saturating_mul(m).saturating_mul(self.levels as u64));
        let need = data
            .saturating_mul(12)
            .saturating_add(state.saturating_mul(32))
            .saturating_add(b.saturating_mul(d.max(h)).saturating_mul(64));
        if let Some(available) = available_memory()
            && need > available
        {
            return Err(Error::Input(format!(
                "a run of these sizes needs about {:.1} GiB of host memory; {:.1} GiB are available",
                need as f64 / GIB,
                available as f64 / GIB
            )));
        }
        Ok(())
    }

    /// The temperature at step `t` (1-based): `tau (tau_final / tau)^((t - 1) / (steps - 1))`, or `tau`.
    pub fn tau_at(&self, t: u64) -> f64 {
        match self.tau_final {
            Some(last) if self.steps > 1 => {
                let frac = (t.saturating_sub(1) as f64 / (self.steps - 1) as f64).min(1.0);
                self.tau * (last / self.tau).powf(frac)
            }
            _ => self.tau,
        }
    }

    /// Loads the data and checks it against the settings.
    pub fn load_data(&self) -> Result<Dataset> {
        self.validate()?;
        let data = data::load_shared(&self.data, self.n_train, self.n_eval, self.seed)?;
        if self.batch as usize > data.train_rows() {
            return Err(Error::Input(format!(
                "the batch ({}) is larger than the training set ({} rows)",
                self.batch,
                data.train_rows()
            )));
        }
        if data.classes > MAX_CLASSES {
            return Err(Error::Input(format!("{} label classes; at most {MAX_CLASSES} are supported", data.classes)));
        }
        Ok(data)
    }

    /// The model's shape on `data`.
    pub fn shape(&self, data: &Dataset) -> ModelShape {
        ModelShape {
            dim: data.dim,
            latent: self.latent,
            codes: self.codes,
            encoder: self.encoder,
            hidden: self.hidden,
            lookup_width: self.lookup_width,
        }
    }
}

/// The metrics of docs/PROTOCOL.md §4 at one point of a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// Training steps taken.
    pub step: u32,
    /// The training loss on the last batch.
    pub loss: f64,
    /// Codes no eval sample is assigned to.
    pub dead_codes: u32,
    /// 1 - dead_codes / K.
    pub usage: f64,
    /// -sum_k p_k ln p_k over the eval assignments, in nats (at most ln K).
    pub entropy: f64,
    /// exp(entropy).
    pub perplexity: f64,
    /// 1/(N d) sum_i ||x_i - x^_i||^2 on the eval set.
    pub recon_mse: f64,
    /// 1/(N m) sum_i ||z_i - q_i||^2 on the eval set.
    pub quant_err: f64,
    /// 1/N sum_k max_c n_{k,c}; `None` without labels.
    pub purity: Option<f64>,
    /// [`subspace_err`] of the decoder weight; `None` unless the data is `subspace` and the encoder `linear`.
    pub subspace_err: Option<f64>,
    /// Distinct codes in the last training batch / K.
    pub batch_usage: f64,
    /// `||C - C*||_F^2 / (K m)`: how far the codebook C is from the Lloyd (k-means) fixed point C*, approached by
    /// [`TrainConfig::lloyd_iters`] Lloyd iterations from C on the same eval encodings (codes no encoding picks
    /// stay put; with residual VQ, the first level's codebook). `None` when that is 0, and in results written
    /// before it existed.
    #[serde(default)]
    pub lloyd_dist: Option<f64>,
    /// The adaptive beta's value at this step; `None` with a fixed beta.
    #[serde(default)]
    pub beta: Option<f64>,
    /// The learned estimator's M (m x m, row-major) at this step; `None` for the other estimators.
    #[serde(default)]
    pub transport: Option<Vec<f64>>,
    /// Residual VQ: each level's code use on the eval set (its `quant_err` is that of its own input, the residual
    /// of the levels before it). The top-level `dead_codes`, `usage`, `entropy` and `perplexity` are level 1's;
    /// `quant_err` is the whole quantizer's, `||z - sum_l q_l||^2`. `None` for one level.
    #[serde(default)]
    pub levels: Option<Vec<LevelMetrics>>,
}

impl Metrics {
    /// Whether every figure is finite in f32, the precision of the GPU engine and of saved models (so that both
    /// engines call the same runs diverged): the loss (after a step), the eval metrics, and those of the optional
    /// ones that are present. A run whose evaluation is not finite has diverged (docs/PROTOCOL.md §4).
    pub fn is_finite(&self) -> bool {
        let finite = |v: f64| v.is_finite() && v.abs() <= f32::MAX as f64;
        let present = |v: Option<f64>| v.is_none_or(finite);
        let figures = [self.usage, self.entropy, self.perplexity, self.recon_mse, self.quant_err];
        let levels = self.levels.iter().flatten().flat_map(|l| [l.usage, l.entropy, l.perplexity, l.quant_err]);
        (self.step == 0 || (finite(self.loss) && finite(self.batch_usage)))
            && figures.into_iter().chain(levels).all(finite)
            && [self.purity, self.subspace_err, self.lloyd_dist, self.beta].into_iter().all(present)
            && self.transport.iter().flatten().all(|&v| finite(v))
    }
}

/// One residual VQ level's code use on the eval set.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LevelMetrics {
    /// Codes of this level no eval sample is assigned to.
    pub dead_codes: u32,
    /// 1 - dead_codes / K.
    pub usage: f64,
    /// The entropy of this level's assignments, in nats.
    pub entropy: f64,
    /// exp(entropy).
    pub perplexity: f64,
    /// 1/(N m) sum_i ||r_i - q_i||^2 with r this level's input.
    pub quant_err: f64,
}

impl From<crate::contract::CodeStats> for LevelMetrics {
    fn from(s: crate::contract::CodeStats) -> Self {
        LevelMetrics {
            dead_codes: s.dead_codes,
            usage: s.usage,
            entropy: s.entropy,
            perplexity: s.perplexity,
            quant_err: s.quant_err,
        }
    }
}

/// Whether two runs can share a trainer's dispatches: the same settings except the seed, the estimator, beta, the
/// data's noise (sigma, spread) and how codes are sampled.
pub fn batchable(a: &TrainConfig, b: &TrainConfig) -> bool {
    let key = |c: &TrainConfig| {
        let data = match &c.data {
            DataSpec::Subspace { dim, rank, .. } => DataSpec::Subspace { dim: *dim, rank: *rank, sigma: 0.0 },
            DataSpec::Clusters { dim, clusters, .. } => {
                DataSpec::Clusters { dim: *dim, clusters: *clusters, spread: 0.0 }
            }
            other => other.clone(),
        };
        TrainConfig { data, seed: 0, estimator: Estimator::Ste, beta: 0.0, sampling: Sampling::Nearest, ..c.clone() }
    };
    key(a) == key(b)
}

/// A finished run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    /// The metrics after the last step; for a diverged run, its last finite evaluation (or, when even the first
    /// was not finite, that evaluation).
    pub metrics: Metrics,
    /// The finite evaluations, in step order; the last is `metrics` unless the run diverged at its first.
    pub curve: Vec<Metrics>,
    /// The step of the first evaluation whose loss or metrics were not finite (docs/PROTOCOL.md §4); the run
    /// stopped counting there. `None` for a run that finished.
    #[serde(default)]
    pub diverged_at: Option<u32>,
    /// Training steps per second of wall time, the periodic evaluations included.
    pub steps_per_sec: f64,
    /// Wall time of the training loop, the periodic evaluations included, in seconds.
    pub wall_s: f64,
}

/// The minibatch order: a fresh seeded shuffle of the training rows each epoch; each epoch yields
/// floor(n / B) batches (the remainder of a shuffle is dropped, so every batch has B rows).
pub struct Schedule {
    rng: ChaCha8Rng,
    order: Vec<u32>,
    next: usize,
    batch: usize,
}

impl Schedule {
    /// The order for `n_train` rows in batches of `batch`, shuffled from `seed`'s shuffle stream.
    pub fn new(seed: u64, n_train: usize, batch: usize) -> Self {
        Schedule {
            rng: data::rng(seed, Stream::Shuffle),
            order: (0..n_train as u32).collect(),
            next: usize::MAX,
            batch,
        }
    }

    /// The next batch's row indices.
    pub fn next_batch(&mut self) -> &[u32] {
        if self.next.saturating_add(self.batch) > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.next = 0;
        }
        let start = self.next;
        self.next += self.batch;
        &self.order[start..start + self.batch]
    }
}

/// The most iterations the SVD behind [`subspace_err`] takes; a decoder it does not converge on gets NaN.
pub const SVD_MAX_ITERS: usize = 10_000;

/// `1 - ||A^T U||_F^2 / r`, U the top-r left singular vectors of the decoder weight `w` (`d x m`, row-major) and A
/// the subspace basis (`d x r`, row-major). 0 means the subspace is recovered.
pub fn subspace_err(w: &[f64], d: usize, m: usize, basis: &[f64], r: usize) -> f64 {
    // An SVD of non-finite values need not terminate: a diverged decoder has no subspace error.
    if !w.iter().all(|v| v.is_finite()) {
        return f64::NAN;
    }
    let wm = nalgebra::DMatrix::from_row_slice(d, m, w);
    let Some(svd) = wm.try_svd(true, false, f64::EPSILON, SVD_MAX_ITERS) else { return f64::NAN };
    let Some(u) = svd.u else { return f64::NAN };
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
    let a = nalgebra::DMatrix::from_row_slice(d, r, basis);
    let mut captured = 0.0;
    for &col in order.iter().take(r) {
        let uc = u.column(col);
        let proj = a.transpose() * uc;
        captured += proj.norm_squared();
    }
    1.0 - captured / r as f64
}

/// PyTorch-style `lr / (1 - beta1^t)` and `sqrt(1 - beta2^t)` come from [`crate::kernels::step::StepConstants`];
/// these are the Adam settings docs/PROTOCOL.md fixes.
pub const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
/// Adam's epsilon.
pub const ADAM_EPS: f64 = 1e-8;
/// The code statistics of an evaluation (docs/PROTOCOL.md §4) from its codes at every level, level 0 first: level
/// 0's, with purity where `labels` (labels, classes) are given, and for residual VQ each level's, the whole
/// quantizer's error then being the last level's, `||z - sum_l q_l||^2`.
pub fn code_metrics(
    assignments: &[crate::reference::Assignment],
    k: usize,
    m: usize,
    labels: Option<(&[u32], usize)>,
) -> (crate::contract::CodeStats, Option<Vec<LevelMetrics>>) {
    let mut s = crate::reference::stats(&assignments[0], k, m, labels);
    let levels = (assignments.len() > 1).then(|| {
        let per_level: Vec<LevelMetrics> =
            assignments.iter().map(|a| LevelMetrics::from(crate::reference::stats(a, k, m, None))).collect();
        s.quant_err = per_level.last().map_or(s.quant_err, |l| l.quant_err);
        per_level
    });
    (s, levels)
}

/// The momentum of the alternate codebook mode's SGD step, as vqtorch's example optimizer (PyTorch's SGD semantics:
/// `v <- mu v + g`, `p <- p - lr v`).
pub const ALTERNATE_MOMENTUM: f64 = 0.9;
/// The EMA decay and Laplace epsilon.
pub const EMA: (f64, f64) = (0.99, 1e-5);
/// Dead-code reset: every code not used since the last reset takes the encoding of a pseudo-random row of the
/// current batch ([`crate::contract::reset_row`], docs/PROTOCOL.md §2.3); with EMA its state restarts there (N_k = 1,
/// M_k = the new c_k: `ema` is (N, M)). Clears `used`.
pub fn reset_unused<T: Copy + From<u8>>(
    codebook: &mut [T],
    used: &mut [bool],
    z: &[T],
    m: usize,
    batch: u32,
    seed: u64,
    step: u64,
    ema: Option<(&mut [T], &mut [T])>,
) {
    let mut ema = ema;
    for k in 0..used.len() {
        if !used[k] {
            let r = crate::contract::reset_row(seed, step, k as u32, batch) as usize;
            codebook[k * m..(k + 1) * m].copy_from_slice(&z[r * m..(r + 1) * m]);
            if let Some((size, sum)) = ema.as_mut() {
                size[k] = T::from(1);
                sum[k * m..(k + 1) * m].copy_from_slice(&z[r * m..(r + 1) * m]);
            }
        }
        used[k] = false;
    }
}
