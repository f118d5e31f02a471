//! The step's stages, one per feature, each with its buffers, its binding, its recording and (where it reports
//! one) its metric together: a VQ level with its codebook update (`level`, `codebook`), the Gumbel relaxation
//! (`gumbel`), the learned estimator (`learned`), the adaptive beta (`adaptive`), dead-code resets (`reset`) and the
//! map of the encodings before the quantizer (`latent`).
//! [`super::plan::StepPlan`] binds them once and records them in the step's order.

pub(super) mod adaptive;
pub(super) mod codebook;
pub(super) mod gumbel;
pub(super) mod latent;
pub(super) mod learned;
pub(super) mod level;
pub(super) mod reset;

use super::Kernels;
use super::buffers::{Sizes, TrainBuffers};
use crate::gpu::Gpu;
use crate::kernels::step::StepUniform;
use crate::train::TrainConfig;

/// What every stage binds against: the device and its kernels, the step's buffers, the runs and their sizes.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub gpu: &'a Gpu,
    pub ks: &'a Kernels,
    pub bf: &'a TrainBuffers,
    pub configs: &'a [TrainConfig],
    pub sz: Sizes,
    pub step: &'a StepUniform,
}

impl Ctx<'_> {
    pub fn device(&self) -> &wgpu::Device {
        &self.gpu.device
    }

    /// The settings the runs of a batch share (everything but seed, estimator, beta, noise and code sampling).
    pub fn first(&self) -> &TrainConfig {
        &self.configs[0]
    }
}
