//! The Gumbel-softmax relaxation (docs/PROTOCOL.md §6.1), bound when some run samples its codes (a Gumbel estimator,
//! or stochastic code sampling, §6.6): the hard sample after the first level's assignment (rewriting those runs'
//! index, distance and q), and the relaxation's exact backward beside the estimator (which skips those runs). Each run's noise comes from its seed's mix, the step
//! and the row; the temperature reaches the shaders per step through the step uniform.

use super::Ctx;
use crate::contract::seed_mix;
use crate::error::Result;
use crate::kernels::soft::{BoundSoft, SoftBackwardBuffers, SoftRun, SoftSampleBuffers, SoftShape};
use crate::kernels::step::StepUniform;
use crate::model::Sampling;
use crate::train::TrainConfig;

pub(in super::super) struct GumbelStage {
    /// Present when some run samples (`gumbel`, `gumbel-rotation-trick`, `--sampling stochastic`).
    sample: Option<BoundSoft>,
    /// Present when some run's backward is the relaxation's (`gumbel`).
    pub backward: Option<BoundSoft>,
}

impl GumbelStage {
    /// `None` unless some run samples.
    pub fn new(cx: Ctx<'_>) -> Result<Option<Self>> {
        let (device, bf, sz) = (cx.device(), cx.bf, cx.sz);
        let level = &bf.levels[0];
        let runs = |active: fn(&TrainConfig) -> bool| -> Option<Vec<SoftRun>> {
            cx.configs.iter().any(active).then(|| {
                cx.configs
                    .iter()
                    .map(|c| SoftRun {
                        active: active(c),
                        noise_seed: Some(seed_mix(c.seed)),
                        beta: c.beta as f32,
                        batch: sz.b,
                        unsquared: c.sampling == Sampling::Stochastic,
                    })
                    .collect()
            })
        };
        let shape = SoftShape { n: sz.b, k: sz.k, m: sz.m };
        let sample = runs(|c| c.estimator.samples_gumbel() || c.sampling == Sampling::Stochastic)
            .map(|runs| {
                let buffers = SoftSampleBuffers {
                    z: &level.input,
                    codebook: &level.codebook,
                    index: &level.index,
                    distance: &level.dist,
                    q: &bf.q,
                };
                cx.ks.soft.bind_sample(device, &buffers, shape, &runs)
            })
            .transpose()?;
        let backward = runs(|c| c.estimator.soft_backward())
            .map(|runs| {
                let buffers = SoftBackwardBuffers {
                    z: &level.input,
                    codebook: &level.codebook,
                    g: &bf.g,
                    index: &level.index,
                    grad_z: &level.dz,
                };
                cx.ks.soft.bind_backward(device, &buffers, shape, &runs)
            })
            .transpose()?;
        Ok((sample.is_some() || backward.is_some()).then_some(GumbelStage { sample, backward }))
    }

    /// The hard sample, after the first level's assignment.
    pub fn record_sample(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32) {
        if let Some(s) = &self.sample {
            s.encode(pass, step, slot);
        }
    }

    /// The relaxation's backward, after the first level's estimator.
    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32) {
        if let Some(b) = &self.backward {
            b.encode(pass, step, slot);
        }
    }
}
