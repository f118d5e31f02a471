//! Dead-code resets (docs/PROTOCOL.md §2.3): every step marks the codes its batch used (in grad mode from counts
//! of its own; the EMA update has counted them already); every `reset_dead` steps each code unused since the last
//! reset takes the encoding of a hashed row of the batch, its EMA state restarting there.

use super::Ctx;
use super::level::LevelStage;
use crate::contract::seed_mix;
use crate::error::Result;
use crate::kernels::codebook::{BoundCounts, BoundReset, CodebookShape, CountBuffers, ResetBuffers};
use crate::kernels::step::StepUniform;

pub(in super::super) struct ResetStage {
    /// Grad mode: this step's counts for the marks.
    counts: Option<BoundCounts>,
    reset: BoundReset,
    every: u64,
}

impl ResetStage {
    /// `None` without resets. Resets act on the first level (residual VQ takes none).
    pub fn new(cx: Ctx<'_>, level: &LevelStage) -> Result<Option<Self>> {
        let every = cx.first().reset_dead as u64;
        if every == 0 {
            return Ok(None);
        }
        let (device, sz) = (cx.device(), cx.sz);
        let lv = &cx.bf.levels[0];
        let ema = level.codebook.ema_state();
        let counts = CountBuffers { index: &lv.index, counts: &lv.counts };
        let step_counts = match ema {
            None => Some(cx.ks.codebook.bind_counts_runs(device, &counts, sz.b, sz.k, sz.runs)?),
            Some(_) => None,
        };
        let buffers = ResetBuffers { z: &lv.input, codebook: &lv.codebook, counts: &lv.counts, ema };
        let seeds: Vec<u32> = cx.configs.iter().map(|c| seed_mix(c.seed)).collect();
        let shape = CodebookShape { n: sz.b, k: sz.k, m: sz.m };
        let reset = cx.ks.codebook.bind_reset_runs(device, &buffers, shape, &seeds, cx.step)?;
        Ok(Some(ResetStage { counts: step_counts, reset, every }))
    }

    /// The marks of step `t` (1-based, slot `slot`), and the reset when `t` is a multiple of `reset_dead`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32, t: u64) {
        if let Some(counts) = &self.counts {
            counts.encode(pass);
        }
        self.reset.encode_mark(pass);
        if t.is_multiple_of(self.every) {
            self.reset.encode_reset(pass, step, slot);
        }
    }
}
