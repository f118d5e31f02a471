//! The fast CPU engine's parameter updates in f32, as the GPU keeps them: Adam (PyTorch's semantics, the GPU's
//! arithmetic) and the EMA codebook (docs/PROTOCOL.md §2). Neither allocates after it is made.

/// Adam's moments for a run of values.
pub struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    /// Zero moments for `len` values.
    pub fn new(len: usize) -> Self {
        Adam { m: vec![0.0; len], v: vec![0.0; len] }
    }

    /// One update of `p` by its gradient `g` at step `t` (1-based).
    pub fn update(&mut self, p: &mut [f32], g: &[f32], lr: f64, t: u64) {
        let (b1, b2) = super::super::ADAM_BETAS;
        // The step's constants in f64, then f32, as the GPU's per-step uniform holds them.
        let step_size = (lr / (1.0 - b1.powf(t as f64))) as f32;
        let bc2_sqrt = (1.0 - b2.powf(t as f64)).sqrt() as f32;
        let (b1, b2, eps) = (b1 as f32, b2 as f32, super::super::ADAM_EPS as f32);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m += (1.0 - b1) * (g - *m);
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= step_size * (*m / (v.sqrt() / bc2_sqrt + eps));
        }
    }
}

/// The EMA codebook state: N_k (k) and M_k (k x m), with the batch's counts and sums as scratch.
pub struct Ema {
    /// N_k, the decayed count of each code.
    pub size: Vec<f32>,
    /// M_k, the decayed sum of the encodings assigned to each code.
    pub sum: Vec<f32>,
    counts: Vec<f64>,
    sums: Vec<f64>,
}

impl Ema {
    /// N_k = 1, M_k = c_k.
    pub fn new(codebook: &[f32], k: usize) -> Self {
        Ema { size: vec![1.0; k], sum: codebook.to_vec(), counts: vec![0.0; k], sums: vec![0.0; codebook.len()] }
    }

    /// One update from a batch's encodings `z` (B x m) and codes; rewrites `codebook`. Each new value is computed
    /// in f64 from the stored f32 values and stored as f32, as the other engines do.
    pub fn update(&mut self, codebook: &mut [f32], z: &[f32], index: &[u32], m: usize) {
        let (g, eps) = super::super::EMA;
        let k = self.size.len();
        self.counts.fill(0.0);
        self.sums.fill(0.0);
        for (zi, &a) in z.chunks_exact(m).zip(index) {
            self.counts[a as usize] += 1.0;
            let sums = &mut self.sums[a as usize * m..(a as usize + 1) * m];
            sums.iter_mut().zip(zi).for_each(|(s, &v)| *s += v as f64);
        }
        for (size, count) in self.size.iter_mut().zip(&self.counts) {
            *size = (g * *size as f64 + (1.0 - g) * count) as f32;
        }
        let n: f64 = self.size.iter().map(|&s| s as f64).sum();
        for c in 0..k {
            let smoothed = (self.size[c] as f64 + eps) / (n + k as f64 * eps) * n;
            let codes = codebook[c * m..(c + 1) * m].iter_mut().zip(&self.sums[c * m..(c + 1) * m]);
            for ((code, &batch), state) in codes.zip(&mut self.sum[c * m..(c + 1) * m]) {
                let sum = g * *state as f64 + (1.0 - g) * batch;
                *state = sum as f32;
                *code = (sum / smoothed) as f32;
            }
        }
    }
}

/// SGD with momentum, PyTorch's semantics (`v <- mu v + g`, `p <- p - lr v`), for the alternate codebook mode; the
/// gradient's buffer is kept here, made once.
pub struct Sgd {
    velocity: Vec<f32>,
    /// The gradient to step with (filled by the caller).
    pub grad: Vec<f32>,
}

impl Sgd {
    /// Zero buffers for `len` values.
    pub fn new(len: usize) -> Self {
        Sgd { velocity: vec![0.0; len], grad: vec![0.0; len] }
    }

    /// One step of `p` by `self.grad` at rate `lr`.
    pub fn update(&mut self, p: &mut [f32], lr: f64) {
        let (mu, lr) = (super::super::ALTERNATE_MOMENTUM as f32, lr as f32);
        for ((p, v), g) in p.iter_mut().zip(&mut self.velocity).zip(&self.grad) {
            *v = mu * *v + g;
            *p -= lr * *v;
        }
    }
}
