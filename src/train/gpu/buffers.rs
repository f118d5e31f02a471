//! The buffers every step uses, stacked over the runs of a batch (each run's slice follows the previous run's; a
//! single run is a batch of one). Optional features own their buffers in their stage ([`super::stages`]).

use super::STEPS_PER_SUBMIT;
use crate::data::Dataset;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::Layout;

/// The sizes every run of a batch shares.
#[derive(Clone, Copy)]
pub(super) struct Sizes {
    pub b: u32,
    pub d: u32,
    pub m: u32,
    pub k: u32,
    pub n_train: u32,
    pub n_eval: u32,
    pub classes: u32,
    /// The runs in the batch.
    pub runs: u32,
}

impl Sizes {
    pub fn new(config: &crate::train::TrainConfig, data: &Dataset, runs: u32) -> Self {
        Sizes {
            b: config.batch,
            d: data.dim,
            m: config.latent,
            k: config.codes,
            n_train: data.train_rows() as u32,
            n_eval: data.eval_rows() as u32,
            classes: data.classes,
            runs,
        }
    }
}

/// One VQ level's buffers. Level 0's input, codes and dz are the step's own z, q and dz (the same buffers; with a map
/// of the encodings, docs/PROTOCOL.md §6.6, its input and dz are its own: map(z) and the gradient there); a later
/// level l has its own: its input `r_l = r_{l-1} - q_{l-1}`, its codes q_l (added into the step's q) and its dz
/// (added into the step's dz).
pub(super) struct LevelBuffers {
    pub input: wgpu::Buffer,
    pub q: wgpu::Buffer,
    pub dz: wgpu::Buffer,
    pub codebook: wgpu::Buffer,
    pub index: wgpu::Buffer,
    pub dist: wgpu::Buffer,
    /// This step's per-code counts (the EMA update, the adaptive beta and the resets write them).
    pub counts: wgpu::Buffer,
}

/// The data, the parameters with Adam's state, and the step's activations, stacked over runs.
pub(super) struct TrainBuffers {
    pub train: wgpu::Buffer,
    /// Each run's eval set (and labels), copied into the evaluator when that run is evaluated (a batch of one
    /// binds it directly).
    pub eval: wgpu::Buffer,
    pub eval_labels: Option<wgpu::Buffer>,
    /// The rows of the next [`STEPS_PER_SUBMIT`] batches.
    pub schedule: wgpu::Buffer,
    pub params: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub adam_m: wgpu::Buffer,
    pub adam_v: wgpu::Buffer,
    pub x: wgpu::Buffer,
    pub z: wgpu::Buffer,
    /// The decoder's input: the sum of every level's codes.
    pub q: wgpu::Buffer,
    pub xhat: wgpu::Buffer,
    pub dxhat: wgpu::Buffer,
    /// dL/dq~, the gradient at the decoder's input.
    pub g: wgpu::Buffer,
    /// dL/dz, the sum of every level's estimator.
    pub dz: wgpu::Buffer,
    /// The outputs of the encoder's layers but its last (the mlp's hidden layer, a lookup's width), and the
    /// gradients there.
    pub enc_hidden: Vec<wgpu::Buffer>,
    pub enc_hidden_grads: Vec<wgpu::Buffer>,
    /// The same for the decoder's layers but its last.
    pub dec_hidden: Vec<wgpu::Buffer>,
    pub dec_hidden_grads: Vec<wgpu::Buffer>,
    /// Every VQ level, level 0 first.
    pub levels: Vec<LevelBuffers>,
}

/// What each run starts from, stacked: the data, the parameters and every level's codebook.
pub(super) struct Stacked {
    pub train: Vec<f32>,
    pub eval: Vec<f32>,
    pub labels: Option<Vec<u32>>,
    pub params: Vec<f32>,
    /// Per level, every run's codebook.
    pub codebooks: Vec<Vec<f32>>,
}

impl TrainBuffers {
    /// Uploads `init` and makes the step's buffers for `sz.runs` runs of `layout` (`hidden` is the mlp width, 0
    /// for a linear encoder).
    /// `mapped`: whether a map of the encodings stands between z and level 0.
    pub fn new(gpu: &Gpu, init: &Stacked, layout: &Layout, mapped: bool, sz: Sizes) -> Result<Self> {
        let Sizes { b, d, m, k, runs: r, .. } = sz;
        let f = |label: &str, len: u32| gpu.zeroed::<f32>(label, (r * len) as usize);
        let u = |label: &str, len: u32| gpu.zeroed::<u32>(label, (r * len) as usize);
        let inner = |layers: &[crate::contract::Linear], label: &str| -> Result<Vec<wgpu::Buffer>> {
            layers[..layers.len() - 1].iter().map(|l| f(label, b * l.output)).collect()
        };
        let (z, q, dz) = (f("z", b * m)?, f("q", b * m)?, f("dz", b * m)?);
        let mut levels = Vec::with_capacity(init.codebooks.len());
        for (l, codebooks) in init.codebooks.iter().enumerate() {
            let own = |label: &str, shared: &wgpu::Buffer| if l == 0 { Ok(shared.clone()) } else { f(label, b * m) };
            let mapped_own =
                |label: &str, shared: &wgpu::Buffer| if mapped { f(label, b * m) } else { own(label, shared) };
            levels.push(LevelBuffers {
                input: mapped_own("level input", &z)?,
                q: own("level q", &q)?,
                dz: mapped_own("level dz", &dz)?,
                codebook: gpu.upload("codebook", codebooks)?,
                index: u("index", b)?,
                dist: f("distance", b)?,
                counts: u("counts", k)?,
            });
        }
        Ok(TrainBuffers {
            train: gpu.upload("train data", &init.train)?,
            eval: gpu.upload("eval data", &init.eval)?,
            eval_labels: init.labels.as_ref().map(|l| gpu.upload("eval labels", l)).transpose()?,
            schedule: u("schedule", STEPS_PER_SUBMIT * b)?,
            params: gpu.upload("params", &init.params)?,
            grads: f("grads", layout.len)?,
            adam_m: f("adam m", layout.len)?,
            adam_v: f("adam v", layout.len)?,
            x: f("x", b * d)?,
            z,
            q,
            xhat: f("xhat", b * d)?,
            dxhat: f("dxhat", b * d)?,
            g: f("g", b * m)?,
            dz,
            enc_hidden: inner(&layout.encoder, "encoder hidden")?,
            enc_hidden_grads: inner(&layout.encoder, "encoder hidden grad")?,
            dec_hidden: inner(&layout.decoder, "decoder hidden")?,
            dec_hidden_grads: inner(&layout.decoder, "decoder hidden grad")?,
            levels,
        })
    }

    /// Every buffer (level 0's shared ones twice: callers count distinct buffers).
    pub fn all(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        [
            &self.train,
            &self.eval,
            &self.schedule,
            &self.params,
            &self.grads,
            &self.adam_m,
            &self.adam_v,
            &self.x,
            &self.z,
            &self.q,
            &self.xhat,
            &self.dxhat,
            &self.g,
            &self.dz,
        ]
        .into_iter()
        .chain(self.enc_hidden.iter().chain(&self.enc_hidden_grads))
        .chain(self.dec_hidden.iter().chain(&self.dec_hidden_grads))
        .chain(self.eval_labels.as_ref())
        .chain(self.levels.iter().flat_map(|l| [&l.input, &l.q, &l.dz, &l.codebook, &l.index, &l.dist, &l.counts]))
    }
}
