//! SimVQ (docs/PROTOCOL.md §6.6; Zhu et al. 2024), a codebook-collapse remedy: the quantizer's codebook is
//! `C = C0 W^T + b`, a frozen random basis C0 (K x m) through one learned linear layer (W m x m, b m). The codebook's
//! gradient (L_cb's, and the orthogonality penalty's where on) trains the layer by Adam; C0 never moves, and C is
//! computed again after each step. As in the authors' code, C0 is N(0, 1/m) and the layer has PyTorch's default
//! initialization. What every engine shares lives here: the layer's layout, the initial state, and the f64 update
//! of the reference engine.

use super::TrainConfig;
use crate::contract::Linear;
use crate::data::{self, Stream};
use crate::reference::train::{CpuAdam, linear_backward, linear_forward};
use rand_distr::{Distribution, StandardNormal};

/// The projection layer's layout in its own parameter buffer: W (m x m) then b (m).
pub fn layer(m: u32) -> Linear {
    Linear { input: m, output: m, w_off: 0, b_off: m * m, relu: false }
}

/// The frozen basis C0 (K x m, N(0, 1/m), from the codebook's stream) and the layer's initial parameters (PyTorch's
/// `nn.Linear` default, U(-1/sqrt(m), 1/sqrt(m)), from the projection's stream) of `config`'s run.
pub fn initial(config: &TrainConfig) -> (Vec<f32>, Vec<f32>) {
    let (k, m) = (config.codes as usize, config.latent as usize);
    let mut rng = data::rng(config.seed, Stream::Codebook);
    let scale = 1.0 / (m as f64).sqrt();
    let basis = (0..k * m)
        .map(|_| {
            let v: f64 = StandardNormal.sample(&mut rng);
            (scale * v) as f32
        })
        .collect();
    let layout = crate::model::Layout { encoder: vec![], decoder: vec![layer(m as u32)], len: (m * m + m) as u32 };
    let projection = crate::model::init_params(&layout, &mut data::rng(config.seed, Stream::Projection));
    (basis, projection)
}

/// The codebook `C0 W^T + b` in f64.
pub fn codebook_f64(basis: &[f64], projection: &[f64], m: usize) -> Vec<f64> {
    linear_forward(projection, layer(m as u32), basis, basis.len() / m, false)
}

/// The reference engine's SimVQ state: the basis and the layer in f64, with the layer's Adam.
pub struct SimvqF64 {
    basis: Vec<f64>,
    projection: Vec<f64>,
    adam: CpuAdam,
}

impl SimvqF64 {
    /// The run's initial state, with Adam's constants.
    pub fn new(config: &TrainConfig, adam: CpuAdam) -> Self {
        let (basis, projection) = initial(config);
        SimvqF64 { basis: crate::reference::to_f64(&basis), projection: crate::reference::to_f64(&projection), adam }
    }

    /// One step: the layer's gradient from the codebook's (`dW = dC^T C0`, `db = sum_k dC_k`), Adam on the layer at
    /// step `t`, and the codebook computed again into `codebook`.
    pub fn update(&mut self, codebook: &mut [f64], codebook_grad: &[f64], m: usize, lr: f64, t: u64) {
        let mut grad = vec![0.0; self.projection.len()];
        let k = self.basis.len() / m;
        linear_backward(&self.projection, layer(m as u32), &self.basis, codebook_grad, k, &mut grad);
        self.adam.update(&mut self.projection, &grad, lr, t);
        codebook.copy_from_slice(&codebook_f64(&self.basis, &self.projection, m));
    }
}
