//! The learned estimator (docs/PROTOCOL.md §6.4), bound when some run's estimator is `learned`: each run's M
//! (m x m, from I) with its gradient and Adam's moments, and the batch's fitting targets (the relaxation's exact
//! backward of the same g). Each step: the targets, dM, then `dz += M g`; and Adam on M after the parameters'.
//! M is reported at every evaluation.

use super::Ctx;
use super::codebook::adam_settings;
use crate::Estimator;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::adam::BoundAdam;
use crate::kernels::learned::{BoundLearned, LearnedBuffers, LearnedGradBuffers, identity};
use crate::kernels::soft::{BoundSoft, SoftBackwardBuffers, SoftRun, SoftShape};
use crate::kernels::step::StepUniform;
use crate::reference::to_f64;

pub(in super::super) struct LearnedStage {
    transport: wgpu::Buffer,
    /// dM, Adam's two moments, the fitting targets.
    work: [wgpu::Buffer; 4],
    target: BoundSoft,
    grad: BoundLearned,
    backward: BoundLearned,
    adam: BoundAdam,
    m: u32,
}

impl LearnedStage {
    /// `None` unless some run's estimator is `learned`.
    pub fn new(cx: Ctx<'_>) -> Result<Option<Self>> {
        let enabled: Vec<bool> = cx.configs.iter().map(|c| c.estimator == Estimator::Learned).collect();
        if !enabled.contains(&true) {
            return Ok(None);
        }
        let (device, bf, sz, gpu) = (cx.device(), cx.bf, cx.sz, cx.gpu);
        let (b, m, r) = (sz.b, sz.m, sz.runs);
        let level = &bf.levels[0];
        let transport = gpu.upload("transport", &identity(m, r))?;
        let f = |label: &str, len: u32| gpu.zeroed::<f32>(label, (r * len) as usize);
        let work = [
            f("transport grad", m * m)?,
            f("transport adam m", m * m)?,
            f("transport adam v", m * m)?,
            f("transport target", b * m)?,
        ];
        let [dm, adam_m, adam_v, target] = &work;
        let target_runs: Vec<SoftRun> =
            enabled.iter().map(|&active| SoftRun { active, batch: b, ..SoftRun::exact() }).collect();
        let t = &transport;
        Ok(Some(LearnedStage {
            target: cx.ks.soft.bind_backward(
                device,
                &SoftBackwardBuffers {
                    z: &level.input,
                    codebook: &level.codebook,
                    g: &bf.g,
                    index: &level.index,
                    grad_z: target,
                },
                SoftShape { n: b, k: sz.k, m },
                &target_runs,
            )?,
            grad: cx.ks.learned.bind_grad(
                device,
                &LearnedGradBuffers { g: &bf.g, s: target, transport: t, grad: dm },
                (b, m),
                &enabled,
            )?,
            backward: cx.ks.learned.bind_backward(
                device,
                &LearnedBuffers { g: &bf.g, transport: t, grad_z: &level.dz },
                (b, m),
                &enabled,
            )?,
            adam: cx.ks.adam.bind(device, t, dm, adam_m, adam_v, r * m * m, adam_settings())?,
            transport,
            work,
            m,
        }))
    }

    /// The targets, dM and `dz += M g`, after the first level's estimator.
    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32) {
        self.target.encode(pass, step, slot);
        self.grad.encode(pass);
        self.backward.encode(pass);
    }

    /// Adam on M, after the parameters'.
    pub fn record_adam(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32) {
        self.adam.encode(pass, step, slot);
    }

    /// Run `run`'s M now (m x m, row-major).
    pub fn read(&self, gpu: &Gpu, run: usize) -> Result<Vec<f64>> {
        let all: Vec<f32> = gpu.read(&self.transport)?;
        let mm = (self.m * self.m) as usize;
        Ok(to_f64(&all[run * mm..(run + 1) * mm]))
    }

    pub fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        std::iter::once(&self.transport).chain(&self.work)
    }
}
