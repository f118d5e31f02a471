//! Cosine codes (docs/PROTOCOL.md §6.6; Yu et al. 2022, ViT-VQGAN's l2-normalized codes, vector-quantize-pytorch's
//! `use_cosine_sim`): the encodings and the codes are unit vectors. The encodings pass through the unit map before
//! the quantizer ([`crate::model::LatentMap::Unit`]); the codebook the quantizer uses is its learned rows C0 over
//! their norms, and the codebook's gradient G trains C0 through the map, `dC0 = unit'(C0) G`, by Adam. C0 starts as
//! the protocol's initial codebook over its norms. The map in f64 is [`crate::reference::latent::unit`]; the
//! reference engine's state is here.

use crate::reference::latent::{unit, unit_backward};
use crate::reference::train::CpuAdam;

/// The reference engine's state: the rows C0 in f64 with their Adam.
pub struct CosineF64 {
    raw: Vec<f64>,
    adam: CpuAdam,
}

impl CosineF64 {
    /// The state at the run's initial (unit) `codebook`.
    pub fn new(codebook: &[f64], adam: CpuAdam) -> Self {
        CosineF64 { raw: codebook.to_vec(), adam }
    }

    /// One step: C0's gradient from the codebook's, Adam at step `t`, and the unit codebook again into `codebook`.
    pub fn update(&mut self, codebook: &mut [f64], codebook_grad: &[f64], m: usize, lr: f64, t: u64) {
        let grad = unit_backward(&self.raw, codebook_grad, m);
        self.adam.update(&mut self.raw, &grad, lr, t);
        codebook.copy_from_slice(&unit(&self.raw, m));
    }
}
