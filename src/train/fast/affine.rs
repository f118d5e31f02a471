//! The affine re-parameterization on the CPU engine (docs/PROTOCOL.md §6.6), as [`crate::train::affine`] defines
//! it, in f32 on buffers made once: the codebook is `C0 diag(1 + a s) + a b`, and the codebook's gradient trains C0,
//! s and b. The sums run over the codes in order, as the GPU's kernel runs them.

use super::update::Adam;

/// The codes C0, [s, b], their gradients and their Adams.
pub struct AffineF32 {
    raw: Vec<f32>,
    scale_shift: Vec<f32>,
    raw_grad: Vec<f32>,
    params_grad: Vec<f32>,
    adam_raw: Adam,
    adam_params: Adam,
    lr_scale: f32,
}

impl AffineF32 {
    /// The state at the run's initial `codebook` (C0 = C, s = b = 0) with the scale `a`.
    pub fn new(codebook: &[f32], m: usize, lr_scale: f64) -> Self {
        AffineF32 {
            raw: codebook.to_vec(),
            scale_shift: vec![0.0; 2 * m],
            raw_grad: vec![0.0; codebook.len()],
            params_grad: vec![0.0; 2 * m],
            adam_raw: Adam::new(codebook.len()),
            adam_params: Adam::new(2 * m),
            lr_scale: lr_scale as f32,
        }
    }

    /// One step: the gradients from the codebook's, Adam on C0 and on [s, b] at step `t`, and the codebook computed
    /// again into `codebook`.
    pub fn update(&mut self, codebook: &mut [f32], codebook_grad: &[f32], m: usize, lr: f64, t: u64) {
        let (a, s) = (self.lr_scale, &self.scale_shift[..m]);
        for (j, &sj) in s.iter().enumerate() {
            let (mut gc, mut gs) = (0.0f32, 0.0f32);
            for (e, g) in codebook_grad.iter().enumerate().skip(j).step_by(m) {
                gc += g * self.raw[e];
                gs += g;
                self.raw_grad[e] = g * (1.0 + a * sj);
            }
            self.params_grad[j] = a * gc;
            self.params_grad[m + j] = a * gs;
        }
        self.adam_raw.update(&mut self.raw, &self.raw_grad, lr, t);
        self.adam_params.update(&mut self.scale_shift, &self.params_grad, lr, t);
        let (s, b) = self.scale_shift.split_at(m);
        for (c, r) in codebook.chunks_exact_mut(m).zip(self.raw.chunks_exact(m)) {
            for j in 0..m {
                c[j] = r[j] * (1.0 + a * s[j]) + a * b[j];
            }
        }
    }
}
