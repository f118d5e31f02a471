//! One training step of every run of a batch (docs/PROTOCOL.md §2, §7.3), each kernel one dispatch over all runs:
//! the batch gather, the encoder, every VQ level's codes, the decoder with the loss gradient, the backward pass
//! through the decoder, every level's estimator, the encoder's backward, the codebook updates, Adam, and the
//! optional stages in their places. Bound once; recorded into one compute pass per step.

use super::STEPS_PER_SUBMIT;
use super::layers::{backward_chain, forward_chain};
use super::stages::Ctx;
use super::stages::adaptive::AdaptiveStage;
use super::stages::codebook::adam_settings;
use super::stages::gumbel::GumbelStage;
use super::stages::latent::LatentStage;
use super::stages::learned::LearnedStage;
use super::stages::level::LevelStage;
use super::stages::reset::ResetStage;
use crate::error::Result;
use crate::kernels::adam::BoundAdam;
use crate::kernels::dense::{BoundDense, LossTarget};
use crate::kernels::gather::BoundGather;
use crate::kernels::step::StepUniform;
use crate::model::Layout;

/// Called after each kernel group with its name: a profile's timestamps, or nothing.
pub(super) type Mark<'m> = &'m mut dyn FnMut(&mut wgpu::ComputePass, &'static str);

pub(super) struct StepPlan {
    gather: BoundGather,
    encoder: Vec<BoundDense>,
    latent: Option<LatentStage>,
    /// Every VQ level, level 0 first.
    pub levels: Vec<LevelStage>,
    gumbel: Option<GumbelStage>,
    pub adaptive: Option<AdaptiveStage>,
    /// The decoder; its last layer also writes the loss gradient `dxhat`.
    decoder: Vec<BoundDense>,
    decoder_back: Vec<BoundDense>,
    pub learned: Option<LearnedStage>,
    encoder_back: Vec<BoundDense>,
    adam_params: BoundAdam,
    reset: Option<ResetStage>,
}

impl StepPlan {
    /// Binds every stage; `initial` holds each level's stacked initial codebooks (the EMA state starts there).
    pub fn new(cx: Ctx<'_>, layout: &Layout, initial: &[Vec<f32>]) -> Result<Self> {
        let (device, bf, sz) = (cx.device(), cx.bf, cx.sz);
        let (b, d, r) = (sz.b, sz.d, sz.runs);
        let dense = cx.ks.dense.for_runs(r, layout.len)?;
        let enc_outs: Vec<&wgpu::Buffer> = bf.enc_hidden.iter().chain([&bf.z]).collect();
        let dec_outs: Vec<&wgpu::Buffer> = bf.dec_hidden.iter().chain([&bf.xhat]).collect();
        let (enc_grads, dec_grads): (Vec<&wgpu::Buffer>, Vec<&wgpu::Buffer>) =
            (bf.enc_hidden_grads.iter().collect(), bf.dec_hidden_grads.iter().collect());
        let loss = LossTarget { target: &bf.x, grad: &bf.dxhat, scale: (2.0 / (b as f64 * d as f64)) as f32 };
        let levels = (0..bf.levels.len()).map(|l| LevelStage::new(cx, l, &initial[l])).collect::<Result<Vec<_>>>()?;
        let gumbel = GumbelStage::new(cx)?;
        let latent = LatentStage::new(cx)?;
        let (params, grads) = (&bf.params, &bf.grads);
        Ok(StepPlan {
            gather: cx.ks.gather.bind_rows_runs(
                device,
                &bf.train,
                sz.n_train,
                &bf.schedule,
                STEPS_PER_SUBMIT * b,
                &bf.x,
                (b, d),
                r,
            )?,
            encoder: forward_chain(&dense, device, &layout.encoder, &bf.x, &enc_outs, params, b, None)?,
            adaptive: AdaptiveStage::new(cx, &levels[0], gumbel.as_ref())?,
            reset: ResetStage::new(cx, &levels[0])?,
            levels,
            gumbel,
            latent,
            decoder: forward_chain(&dense, device, &layout.decoder, &bf.q, &dec_outs, params, b, Some(loss))?,
            decoder_back: backward_chain(
                &dense,
                device,
                &layout.decoder,
                &bf.q,
                &dec_outs,
                &bf.dxhat,
                &dec_grads,
                Some(&bf.g),
                params,
                grads,
                b,
            )?,
            learned: LearnedStage::new(cx)?,
            encoder_back: backward_chain(
                &dense,
                device,
                &layout.encoder,
                &bf.x,
                &enc_outs,
                &bf.dz,
                &enc_grads,
                None,
                params,
                grads,
                b,
            )?,
            adam_params: cx.ks.adam.bind(
                device,
                params,
                grads,
                &bf.adam_m,
                &bf.adam_v,
                r * layout.len,
                adam_settings(),
            )?,
        })
    }

    /// Records step `t` (slot `slot` of this submit) into `pass`; `mark` is called after each group of kernels.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, s: &StepUniform, slot: u32, t: u64, mark: Mark<'_>) {
        mark(pass, "start");
        self.gather.encode_step(pass, s, slot);
        mark(pass, "gather batch");
        self.encoder.iter().for_each(|op| op.encode(pass));
        mark(pass, "encoder forward");
        if let Some(map) = &self.latent {
            map.record_forward(pass);
            mark(pass, "latent map");
        }
        if self.levels[0].codebook.alternates() {
            // The alternate codebook mode (PROTOCOL §6.6): assign, step the codebook, and assign again below.
            self.levels[0].record_forward(pass);
            self.levels[0].codebook.record_alternate(pass);
            mark(pass, "alternate codebook step");
        }
        for (l, level) in self.levels.iter().enumerate() {
            level.record_forward(pass);
            if let (0, Some(g)) = (l, &self.gumbel) {
                g.record_sample(pass, s, slot);
            }
        }
        mark(pass, "assign + q");
        if let Some(a) = &self.adaptive {
            a.record(pass);
            mark(pass, "adaptive beta");
        }
        self.decoder.iter().for_each(|op| op.encode(pass));
        mark(pass, "decoder forward + loss gradient");
        self.decoder_back.iter().for_each(|op| op.encode(pass));
        mark(pass, "decoder backward");
        for (l, level) in self.levels.iter().enumerate() {
            level.record_backward(pass);
            if l == 0 {
                if let Some(g) = &self.gumbel {
                    g.record_backward(pass, s, slot);
                }
                if let Some(learned) = &self.learned {
                    learned.record_backward(pass, s, slot);
                }
            }
        }
        mark(pass, "estimator backward");
        if let Some(map) = &self.latent {
            map.record_backward(pass);
        }
        self.encoder_back.iter().for_each(|op| op.encode(pass));
        mark(pass, "encoder backward");
        self.record_codebooks(pass, s, slot, mark);
        self.adam_params.encode(pass, s, slot);
        if let Some(learned) = &self.learned {
            learned.record_adam(pass, s, slot);
        }
        mark(pass, "parameter adam");
        if let Some(reset) = &self.reset {
            reset.record(pass, s, slot, t);
            mark(pass, "dead-code reset");
        }
    }

    /// Every level's codebook update: all the gradients, then all the Adam steps; or all the EMA updates; nothing
    /// with the alternate mode (its step came before the forward pass) or a fixed codebook.
    fn record_codebooks(&self, pass: &mut wgpu::ComputePass<'_>, s: &StepUniform, slot: u32, mark: Mark<'_>) {
        if self.levels[0].codebook.alternates() || self.levels[0].codebook.is_fixed() {
            return; // stepped before the forward pass, or never
        }
        self.levels.iter().for_each(|l| l.codebook.record_first(pass));
        if self.levels[0].codebook.ema_state().is_some() {
            mark(pass, "codebook ema");
        } else {
            mark(pass, "codebook gradient");
            self.levels.iter().for_each(|l| l.codebook.record_second(pass, s, slot));
            mark(pass, "codebook adam");
        }
    }

    /// The buffers the stages own.
    pub fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        let levels = self.levels.iter().flat_map(|l| l.codebook.buffers());
        let learned = self.learned.iter().flat_map(LearnedStage::buffers);
        levels.chain(learned).chain(self.adaptive.iter().flat_map(AdaptiveStage::buffers))
    }
}
