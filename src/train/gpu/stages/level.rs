//! One VQ level of the step (docs/PROTOCOL.md §1, §6.3). Every level assigns its input to its nearest codes and
//! applies the run's estimator at its own input and code; a later level l first forms its input
//! `r_l = r_{l-1} - q_{l-1}`, then adds its codes into the decoder's input and its gradient into dz. Level 0 reads
//! z and writes the step's q and dz directly. The commitment term `2 beta / (B m) (z - sum_l q_l)` is the last
//! level's (its `z - q` is `r_{L-1} - q_{L-1} = z - sum_l q_l`); the other levels get beta = 0.

use super::Ctx;
use super::codebook::CodebookStage;
use crate::error::Result;
use crate::kernels::assign::{AssignBuffers, AssignShape, BoundAssign};
use crate::kernels::estimator::{BoundEstimator, EstimatorBuffers, EstimatorSettings, EstimatorShape};
use crate::kernels::residual::BoundResidual;

pub(in super::super) struct LevelStage {
    /// Later levels: the input r_l from the previous level's input and codes.
    residual: Option<BoundResidual>,
    /// The nearest code, also writing the level's q.
    assign: BoundAssign,
    /// Later levels: q += q_l.
    sum_q: Option<BoundResidual>,
    pub estimator: BoundEstimator,
    /// Later levels: dz += dz_l.
    sum_dz: Option<BoundResidual>,
    pub codebook: CodebookStage,
}

impl LevelStage {
    /// Level `l` of `cx.bf.levels`, its codebook update starting from `initial` (the stacked codebooks).
    pub fn new(cx: Ctx<'_>, l: usize, initial: &[f32]) -> Result<Self> {
        let (device, bf, sz) = (cx.device(), cx.bf, cx.sz);
        let (lv, len) = (&bf.levels[l], sz.runs * sz.b * sz.m);
        let last = l + 1 == bf.levels.len();
        let settings: Vec<EstimatorSettings> = cx
            .configs
            .iter()
            .map(|c| EstimatorSettings {
                estimator: c.estimator,
                beta: if last { c.beta as f32 } else { 0.0 },
                batch: sz.b,
            })
            .collect();
        let later = |bind: &dyn Fn() -> Result<BoundResidual>| if l > 0 { bind().map(Some) } else { Ok(None) };
        let prev = &bf.levels[l.saturating_sub(1)];
        let rk = &cx.ks.residual;
        Ok(LevelStage {
            residual: later(&|| rk.bind_subtract(device, &prev.input, &prev.q, &lv.input, len))?,
            assign: cx.ks.assign.bind_runs(
                device,
                &AssignBuffers { z: &lv.input, codebook: &lv.codebook, index: &lv.index, distance: &lv.dist },
                AssignShape { n: sz.b, k: sz.k, m: sz.m },
                Some(&lv.q),
                sz.runs,
            )?,
            sum_q: later(&|| rk.bind_accumulate(device, &lv.q, &bf.q, len))?,
            estimator: cx.ks.estimator.bind_runs(
                device,
                &EstimatorBuffers { g: &bf.g, z: &lv.input, index: &lv.index, codebook: &lv.codebook, grad_z: &lv.dz },
                EstimatorShape { n: sz.b, k: sz.k, m: sz.m },
                &settings,
            )?,
            sum_dz: later(&|| rk.bind_accumulate(device, &lv.dz, &bf.dz, len))?,
            codebook: CodebookStage::new(cx, lv, l == 0, initial)?,
        })
    }

    /// The forward half: the input (later levels), the codes, and their sum.
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(r) = &self.residual {
            r.encode(pass);
        }
        self.assign.encode(pass);
        if let Some(s) = &self.sum_q {
            s.encode(pass);
        }
    }

    /// The backward half: the estimator at this level, and its sum into dz (later levels).
    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.estimator.encode(pass);
        if let Some(s) = &self.sum_dz {
            s.encode(pass);
        }
    }
}
