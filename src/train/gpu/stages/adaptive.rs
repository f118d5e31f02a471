//! The adaptive beta (docs/PROTOCOL.md §6.2): each step, the batch's code counts, then each run's new beta and its
//! commitment coefficient `2 beta / (B m)` written straight into the estimator kernels' run settings (both, when a
//! run's backward is the relaxation's), so nothing is read back inside the loop. beta is reported at every
//! evaluation.

use super::Ctx;
use super::gumbel::GumbelStage;
use super::level::LevelStage;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::codebook::{BoundCounts, CountBuffers};
use crate::kernels::schedule::{BetaRule, BoundAdaptiveBeta, ScheduleShape, beta_state};
use crate::model::BetaSchedule;

pub(in super::super) struct AdaptiveStage {
    /// Each run's (beta, lo, hi).
    state: wgpu::Buffer,
    counts: BoundCounts,
    rule: BoundAdaptiveBeta,
}

impl AdaptiveStage {
    /// `None` with a fixed beta. It rewrites the commitment of `level`'s estimator and of `gumbel`'s backward.
    pub fn new(cx: Ctx<'_>, level: &LevelStage, gumbel: Option<&GumbelStage>) -> Result<Option<Self>> {
        let first = cx.first();
        if first.beta_schedule != BetaSchedule::Adaptive {
            return Ok(None);
        }
        let (device, sz) = (cx.device(), cx.sz);
        let lv = &cx.bf.levels[0];
        let betas: Vec<f32> = cx.configs.iter().map(|c| c.beta as f32).collect();
        let state = cx.gpu.upload("beta state", &beta_state(&betas))?;
        let counts = CountBuffers { index: &lv.index, counts: &lv.counts };
        let rule = BetaRule { target: first.target_usage as f32, rate: first.beta_rate as f32 };
        let soft = gumbel.and_then(|g| g.backward.as_ref()).map(|b| b.commitment_slot());
        let shape = ScheduleShape { k: sz.k, batch: sz.b, m: sz.m, runs: sz.runs };
        Ok(Some(AdaptiveStage {
            counts: cx.ks.codebook.bind_counts_runs(device, &counts, sz.b, sz.k, sz.runs)?,
            rule: cx.ks.schedule.bind(
                device,
                (&lv.counts, &state),
                shape,
                rule,
                level.estimator.commitment_slot(),
                soft,
            )?,
            state,
        }))
    }

    /// The counts, then the new betas; after the assignment (and the Gumbel sample), before the estimators.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.counts.encode(pass);
        self.rule.encode(pass);
    }

    /// Run `run`'s beta now.
    pub fn read(&self, gpu: &Gpu, run: usize) -> Result<f64> {
        let state: Vec<f32> = gpu.read(&self.state)?;
        Ok(state[3 * run] as f64)
    }

    pub fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        std::iter::once(&self.state)
    }
}
