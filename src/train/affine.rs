//! The affine re-parameterization (docs/PROTOCOL.md §6.6; Huh et al. 2023, vqtorch's `affine_lr`), a
//! codebook-collapse remedy: the quantizer's codebook is `C = C0 diag(1 + a s) + a b`, the learned codes C0 under a
//! per-dimension scale and shift shared by every code. s and b start at 0, so C starts as C0; `a` (`--affine-lr`)
//! scales their steps. The codebook's gradient G trains all three by Adam:
//!
//! ```text
//! dC0 = G diag(1 + a s),  ds_j = a sum_k G_kj C0_kj,  db_j = a sum_k G_kj
//! ```
//!
//! and C is computed again after each step. The map and its gradient in f64 are [`crate::reference::affine`]; the
//! reference engine's state is here.

use crate::reference::affine;
use crate::reference::train::CpuAdam;

/// The reference engine's affine state: the codes C0 and [s, b] in f64, each with its Adam.
pub struct AffineF64 {
    raw: Vec<f64>,
    scale_shift: Vec<f64>,
    adam_raw: CpuAdam,
    adam_params: CpuAdam,
    lr_scale: f64,
}

impl AffineF64 {
    /// The state at the run's initial `codebook` (C0 = C, s = b = 0) with the scale `a` and Adam's constants.
    pub fn new(codebook: &[f64], m: usize, lr_scale: f64, adam: impl Fn(usize) -> CpuAdam) -> Self {
        AffineF64 {
            raw: codebook.to_vec(),
            scale_shift: vec![0.0; 2 * m],
            adam_raw: adam(codebook.len()),
            adam_params: adam(2 * m),
            lr_scale,
        }
    }

    /// One step: the gradients from the codebook's, Adam on C0 and on [s, b] at step `t`, and the codebook computed
    /// again into `codebook`.
    pub fn update(&mut self, codebook: &mut [f64], codebook_grad: &[f64], m: usize, lr: f64, t: u64) {
        let (raw_grad, params_grad) = affine::grad(&self.raw, &self.scale_shift, codebook_grad, m, self.lr_scale);
        self.adam_raw.update(&mut self.raw, &raw_grad, lr, t);
        self.adam_params.update(&mut self.scale_shift, &params_grad, lr, t);
        codebook.copy_from_slice(&affine::codebook(&self.raw, &self.scale_shift, m, self.lr_scale));
    }
}
