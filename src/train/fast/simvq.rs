//! SimVQ on the CPU engine (docs/PROTOCOL.md §6.6), as [`crate::train::simvq`] defines it, in f32 on buffers made
//! once: the codebook is `C0 W^T + b`, and the codebook's gradient trains the layer.

use super::dense;
use super::update::Adam;
use crate::train::TrainConfig;
use crate::train::simvq::{initial, layer};

/// The basis, the layer with its gradient and Adam.
pub struct SimvqF32 {
    basis: Vec<f32>,
    projection: Vec<f32>,
    grad: Vec<f32>,
    adam: Adam,
}

impl SimvqF32 {
    /// The run's initial state.
    pub fn new(config: &TrainConfig) -> Self {
        let (basis, projection) = initial(config);
        let len = projection.len();
        SimvqF32 { basis, projection, grad: vec![0.0; len], adam: Adam::new(len) }
    }

    /// One step: the layer's gradient from the codebook's, Adam at step `t`, and the codebook computed again.
    pub fn update(&mut self, codebook: &mut [f32], codebook_grad: &[f32], m: usize, lr: f64, t: u64) {
        let (l, k) = (layer(m as u32), self.basis.len() / m);
        dense::backward(&self.projection, l, &self.basis, codebook_grad, k, &mut self.grad, None);
        self.adam.update(&mut self.projection, &self.grad, lr, t);
        dense::forward(&self.projection, l, &self.basis, k, false, codebook);
    }
}
