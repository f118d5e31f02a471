//! Cosine codes on the CPU engine (docs/PROTOCOL.md §6.6), as [`crate::train::cosine`] defines them, in f32 on
//! buffers made once: the codebook is its learned rows over their norms, trained through the map.

use super::latent::{unit, unit_backward};
use super::update::Adam;

/// The rows C0, their gradient and Adam.
pub struct CosineF32 {
    raw: Vec<f32>,
    grad: Vec<f32>,
    adam: Adam,
}

impl CosineF32 {
    /// The state at the run's initial (unit) `codebook`.
    pub fn new(codebook: &[f32]) -> Self {
        CosineF32 { raw: codebook.to_vec(), grad: vec![0.0; codebook.len()], adam: Adam::new(codebook.len()) }
    }

    /// One step: C0's gradient from the codebook's, Adam at step `t`, and the unit codebook again.
    pub fn update(&mut self, codebook: &mut [f32], codebook_grad: &[f32], m: usize, lr: f64, t: u64) {
        unit_backward(&self.raw, codebook_grad, &mut self.grad, m);
        self.adam.update(&mut self.raw, &self.grad, lr, t);
        unit(&self.raw, codebook, m);
    }
}
