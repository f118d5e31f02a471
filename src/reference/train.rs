//! The training step in plain Rust, every value in f64: the oracle the GPU trainer is compared with, the engine
//! used where no adapter exists, and the subject of the finite-difference checks of the whole backward pass.

use super::soft::{self, Noise};
use super::{assign_f64, estimator_row, learned_grad, learned_row};
use crate::contract::Linear;
use crate::estimator::Estimator;
use crate::model::{CodebookMode, LatentMap, Layout, Sampling};

/// `y = act(x W^T + b)` for `rows` rows.
pub fn linear_forward(p: &[f64], l: Linear, x: &[f64], rows: usize, relu: bool) -> Vec<f64> {
    let (input, output) = (l.input as usize, l.output as usize);
    let (w, b) = (&p[l.w_off as usize..], &p[l.b_off as usize..]);
    let mut y = vec![0.0; rows * output];
    for r in 0..rows {
        for o in 0..output {
            let s: f64 = (0..input).map(|i| x[r * input + i] * w[o * input + i]).sum::<f64>() + b[o];
            y[r * output + o] = if relu { s.max(0.0) } else { s };
        }
    }
    y
}

/// Adds `dW = dy^T x` and `db = sum dy` into `grads`; returns `dx = dy W`.
pub fn linear_backward(p: &[f64], l: Linear, x: &[f64], dy: &[f64], rows: usize, grads: &mut [f64]) -> Vec<f64> {
    let (input, output) = (l.input as usize, l.output as usize);
    let (w_off, b_off) = (l.w_off as usize, l.b_off as usize);
    let mut dx = vec![0.0; rows * input];
    for r in 0..rows {
        for o in 0..output {
            let g = dy[r * output + o];
            grads[b_off + o] += g;
            for i in 0..input {
                grads[w_off + o * input + i] += g * x[r * input + i];
                dx[r * input + i] += g * p[w_off + o * input + i];
            }
        }
    }
    dx
}

/// Runs layers in order (ReLU after those that have one); returns every layer's output, the last one last.
pub fn forward_layers(p: &[f64], layers: &[Linear], x: &[f64], rows: usize) -> Vec<Vec<f64>> {
    let mut outs: Vec<Vec<f64>> = Vec::with_capacity(layers.len());
    for (i, &l) in layers.iter().enumerate() {
        let input = if i == 0 { x } else { &outs[i - 1] };
        let y = linear_forward(p, l, input, rows, l.relu);
        outs.push(y);
    }
    outs
}

/// Back through `layers` given their input `x`, outputs `outs` and the gradient at the last output; adds the
/// parameter gradients into `grads` and returns the gradient at `x`.
pub fn backward_layers(
    p: &[f64],
    layers: &[Linear],
    x: &[f64],
    outs: &[Vec<f64>],
    dy: Vec<f64>,
    rows: usize,
    grads: &mut [f64],
) -> Vec<f64> {
    let mut dy = dy;
    for i in (0..layers.len()).rev() {
        let input = if i == 0 { x } else { &outs[i - 1] };
        let mut dx = linear_backward(p, layers[i], input, &dy, rows, grads);
        if i > 0 && layers[i - 1].relu {
            // ReLU backward from the ReLU's output, as the GPU does.
            for (g, &y) in dx.iter_mut().zip(&outs[i - 1]) {
                if y <= 0.0 {
                    *g = 0.0;
                }
            }
        }
        dy = dx;
    }
    dy
}

/// The loss terms of one batch (docs/PROTOCOL.md §2).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Losses {
    /// L_rec, the mean squared reconstruction error over the batch's `B x d` elements.
    pub rec: f64,
    /// L_cb (equal to L_commit in value).
    pub cb: f64,
    /// `rec + cb + beta commit` in grad mode; `rec + beta commit` in EMA mode (no L_cb).
    pub total: f64,
}

/// Everything the backward pass produced for one batch.
#[derive(Clone, Debug)]
pub struct Step {
    /// The batch's loss terms.
    pub losses: Losses,
    /// The reconstructions (B x d).
    pub xhat: Vec<f64>,
    /// Gradients of the flat parameters.
    pub grads: Vec<f64>,
    /// The learned estimator's dL_M/dM (m x m; zero for the other estimators).
    pub transport_grad: Vec<f64>,
    /// The decoder's input gradient g = dL_rec/dq (B x m), which the estimators map to dz.
    pub g: Vec<f64>,
    /// Every level's input, codes and codebook gradient, level 0 first (its input is the encodings z; residual VQ
    /// has more).
    pub levels: Vec<LevelStep>,
}

/// What the Gumbel and learned estimators need at a step: the temperature, where the noise comes from (the run's
/// mixed seed and the step number t, 1-based), and the learned estimator's matrix. The others ignore it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Relaxation<'a> {
    /// The temperature tau at this step.
    pub tau: f64,
    /// The run's mixed seed ([`crate::contract::seed_mix`]).
    pub seed: u32,
    /// The step number t.
    pub step: u32,
    /// The learned estimator's M (m x m, row-major); `None` is I.
    pub transport: Option<&'a [f64]>,
    /// How level 0 picks the codes of the estimators that do not sample themselves.
    pub sampling: Sampling,
}

impl Default for Relaxation<'_> {
    fn default() -> Self {
        Relaxation { tau: 1.0, seed: 0, step: 1, transport: None, sampling: Sampling::Nearest }
    }
}

/// I (m x m).
pub fn identity(m: usize) -> Vec<f64> {
    (0..m * m).map(|e| if e.is_multiple_of(m + 1) { 1.0 } else { 0.0 }).collect()
}

/// The model's state in f64.
#[derive(Clone, Debug)]
pub struct CpuModel {
    /// Where each layer lives in `params`.
    pub layout: Layout,
    /// Latent dimension m.
    pub latent: usize,
    /// The flat parameters in [`Layout`] order.
    pub params: Vec<f64>,
    /// Every level's codebook (each K x m), level 0 first; residual VQ has more than one.
    pub codebooks: Vec<Vec<f64>>,
    /// The map of the encodings before the quantizer (FSQ's bound), part of the encoder here.
    pub map: LatentMap,
}

impl CpuModel {
    /// Encodings of `rows` samples, through the map: what the quantizer sees.
    pub fn encode(&self, x: &[f64], rows: usize) -> Vec<f64> {
        let z = forward_layers(&self.params, &self.layout.encoder, x, rows).pop().unwrap_or_default();
        self.map.forward(z, self.latent)
    }

    /// The codes of `rows` encodings through every level: the first level's assignment, each later level's
    /// assignment of its residual, and the sum of the codes.
    pub fn quantize(&self, z: &[f64]) -> (Vec<super::Assignment>, Vec<f64>) {
        let m = self.latent;
        let first = assign_f64(z, &self.codebooks[0], m);
        let mut q = codes(&self.codebooks[0], &first.index, m);
        let mut r: Vec<f64> = z.iter().zip(&q).map(|(a, b)| a - b).collect();
        let mut out = vec![first];
        for codebook in &self.codebooks[1..] {
            let a = assign_f64(&r, codebook, m);
            let ql = codes(codebook, &a.index, m);
            q.iter_mut().zip(&ql).for_each(|(t, v)| *t += v);
            r.iter_mut().zip(&ql).for_each(|(t, v)| *t -= v);
            out.push(a);
        }
        (out, q)
    }

    /// Reconstructions from decoder inputs.
    pub fn decode(&self, q: &[f64], rows: usize) -> Vec<f64> {
        forward_layers(&self.params, &self.layout.decoder, q, rows).pop().unwrap_or_default()
    }

    /// One batch forward and backward with `estimator`, the commitment weight `beta` (given this batch's codes:
    /// the adaptive beta moves with them; a fixed one is `&mut |_| beta`) and the batch size `rows`; the Gumbel
    /// estimators sample each row's code and take `relax`'s temperature and noise.
    pub fn step(
        &self,
        x: &[f64],
        rows: usize,
        estimator: Estimator,
        beta: &mut dyn FnMut(&[u32]) -> f64,
        mode: CodebookMode,
        relax: Relaxation<'_>,
    ) -> Step {
        let m = self.latent;
        let d = x.len() / rows;
        let enc_outs = forward_layers(&self.params, &self.layout.encoder, x, rows);
        let z = self.map.forward(enc_outs.last().cloned().unwrap_or_default(), m);
        let (levels, q_total) = self.quantize_batch(z, rows, estimator, mode, relax);
        let z = &levels[0].input;
        let beta = beta(&levels[0].index);
        let dec_outs = forward_layers(&self.params, &self.layout.decoder, &q_total, rows);
        let xhat = dec_outs.last().cloned().unwrap_or_default();

        let rec = xhat.iter().zip(x).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / (rows * d) as f64;
        let per_row = |dist: &[f64]| dist.iter().sum::<f64>() / (rows * m) as f64;
        // L_cb sums the levels' own terms; L_commit is ||z - sum_l q_l||^2, the last level's distance.
        let cb = per_row(&levels[0].dist) + levels[1..].iter().map(|l| per_row(&l.dist)).sum::<f64>();
        let commit_loss = per_row(&levels[levels.len() - 1].dist);
        let total = rec + if mode == CodebookMode::Grad { cb } else { 0.0 } + beta * commit_loss;

        let mut grads = vec![0.0; self.params.len()];
        let dxhat: Vec<f64> = xhat.iter().zip(x).map(|(a, b)| 2.0 / (rows * d) as f64 * (a - b)).collect();
        let g = backward_layers(&self.params, &self.layout.decoder, &q_total, &dec_outs, dxhat, rows, &mut grads);
        let commit = 2.0 * beta / (rows * m) as f64;
        let transport = relax.transport.map_or_else(|| identity(m), <[f64]>::to_vec);
        // The learned estimator's fit: M toward the relaxation's exact backward of the same g (no noise).
        let transport_grad = if estimator == Estimator::Learned {
            let s: Vec<f64> = (0..rows)
                .flat_map(|i| {
                    let r = i * m..(i + 1) * m;
                    soft::backward_row(&g[r.clone()], &z[r], &self.codebooks[0], relax.tau, None)
                })
                .collect();
            learned_grad(&transport, &g, &s, m)
        } else {
            vec![0.0; m * m]
        };
        let mut dz = Vec::with_capacity(rows * m);
        for i in 0..rows {
            let e = self.row_gradient(estimator, i, (&g, z), &levels, relax, &transport);
            dz.extend((0..m).map(|j| e[j] + commit * (z[i * m + j] - q_total[i * m + j])));
        }
        let dz = self.map.backward(enc_outs.last().map_or(&[][..], Vec::as_slice), dz, m);
        backward_layers(&self.params, &self.layout.encoder, x, &enc_outs, dz, rows, &mut grads);

        Step { losses: Losses { rec, cb, total }, xhat, grads, transport_grad, g, levels }
    }

    /// Every level's codes for the batch's encodings `z` (level 0's sampled for the Gumbel estimators and with
    /// stochastic sampling), with the codebook gradients in grad mode, and the decoder's input, the sum of the
    /// codes. Level l quantizes `r_l = r_{l-1} - q_{l-1}` (r_0 = z).
    fn quantize_batch(
        &self,
        z: Vec<f64>,
        rows: usize,
        estimator: Estimator,
        mode: CodebookMode,
        relax: Relaxation<'_>,
    ) -> (Vec<LevelStep>, Vec<f64>) {
        let m = self.latent;
        let codebook = &self.codebooks[0];
        let mut a = assign_f64(&z, codebook, m);
        if estimator.samples_gumbel() || relax.sampling == Sampling::Stochastic {
            for i in 0..rows {
                let zi = &z[i * m..(i + 1) * m];
                let noise = Noise { seed: relax.seed, step: relax.step, row: i as u32 };
                let k = if estimator.samples_gumbel() {
                    soft::sample_row(zi, codebook, relax.tau, Some(noise)) as usize
                } else {
                    soft::stochastic_row(zi, codebook, relax.tau, noise) as usize
                };
                a.index[i] = k as u32;
                a.distance[i] = zi.iter().zip(&codebook[k * m..]).map(|(z, c)| (z - c).powi(2)).sum();
            }
        }
        let q = codes(codebook, &a.index, m);
        let level = |input: Vec<f64>, a: super::Assignment, q: Vec<f64>, codebook: &[f64]| {
            let codebook_grad = if mode == CodebookMode::Grad {
                crate::reference::codebook_grad_f64(&input, &a.index, codebook, m, rows)
            } else {
                vec![0.0; codebook.len()]
            };
            LevelStep { input, index: a.index, dist: a.distance, q, codebook_grad }
        };
        let mut q_total = q.clone();
        let mut levels = vec![level(z, a, q, codebook)];
        for codebook in &self.codebooks[1..] {
            let prev = &levels[levels.len() - 1];
            let r: Vec<f64> = prev.input.iter().zip(&prev.q).map(|(a, b)| a - b).collect();
            let al = assign_f64(&r, codebook, m);
            let ql = codes(codebook, &al.index, m);
            q_total.iter_mut().zip(&ql).for_each(|(t, v)| *t += v);
            levels.push(level(r, al, ql, codebook));
        }
        (levels, q_total)
    }

    /// Row `i`'s estimator gradient, without the commitment term: level 0's estimator (the relaxation's backward
    /// for `gumbel`, `M g` for `learned`) plus every later level's at its own input and code.
    fn row_gradient(
        &self,
        estimator: Estimator,
        i: usize,
        (g, z): (&[f64], &[f64]),
        levels: &[LevelStep],
        relax: Relaxation<'_>,
        transport: &[f64],
    ) -> Vec<f64> {
        let r = i * self.latent..(i + 1) * self.latent;
        let noise = Some(Noise { seed: relax.seed, step: relax.step, row: i as u32 });
        let mut e = match estimator {
            Estimator::Gumbel => soft::backward_row(&g[r.clone()], &z[r.clone()], &self.codebooks[0], relax.tau, noise),
            Estimator::Learned => learned_row(transport, &g[r.clone()]),
            _ => estimator_row(estimator, &g[r.clone()], &z[r.clone()], &levels[0].q[r.clone()]),
        };
        for l in &levels[1..] {
            let el = estimator_row(estimator, &g[r.clone()], &l.input[r.clone()], &l.q[r.clone()]);
            e.iter_mut().zip(el).for_each(|(a, b)| *a += b);
        }
        e
    }
}

/// The rows of `codebook` picked by `index`.
fn codes(codebook: &[f64], index: &[u32], m: usize) -> Vec<f64> {
    index.iter().flat_map(|&k| codebook[k as usize * m..(k as usize + 1) * m].to_vec()).collect()
}

/// One VQ level of a step.
#[derive(Clone, Debug)]
pub struct LevelStep {
    /// The level's input r_l: z for level 0, else the residual of the levels before it (B x m).
    pub input: Vec<f64>,
    /// Its codes a_i (B; level 0's are the sampled ones for the Gumbel estimators).
    pub index: Vec<u32>,
    /// Each row's squared distance to its code (B).
    pub dist: Vec<f64>,
    /// The codes q_l (B x m).
    pub q: Vec<f64>,
    /// dL_cb/dC_l (K x m; zero in EMA mode).
    pub codebook_grad: Vec<f64>,
}

/// Adam with PyTorch's semantics on f64 values.
#[derive(Clone, Debug)]
pub struct CpuAdam {
    /// First-moment estimate, one per value.
    pub m: Vec<f64>,
    /// Second-moment estimate, one per value.
    pub v: Vec<f64>,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the bias-corrected `sqrt(v)` in the denominator.
    pub eps: f64,
}

impl CpuAdam {
    /// Zero moments for `len` values.
    pub fn new(len: usize, beta1: f64, beta2: f64, eps: f64) -> Self {
        CpuAdam { m: vec![0.0; len], v: vec![0.0; len], beta1, beta2, eps }
    }

    /// One update at step `t` (1-based).
    pub fn update(&mut self, p: &mut [f64], g: &[f64], lr: f64, t: u64) {
        let step_size = lr / (1.0 - self.beta1.powf(t as f64));
        let bc2_sqrt = (1.0 - self.beta2.powf(t as f64)).sqrt();
        for e in 0..p.len() {
            self.m[e] += (1.0 - self.beta1) * (g[e] - self.m[e]);
            self.v[e] = self.beta2 * self.v[e] + (1.0 - self.beta2) * g[e] * g[e];
            p[e] -= step_size * self.m[e] / (self.v[e].sqrt() / bc2_sqrt + self.eps);
        }
    }
}

/// SGD with momentum in f64, PyTorch's semantics (no dampening, no Nesterov): `v <- mu v + g`, `p <- p - lr v`.
#[derive(Clone, Debug)]
pub struct CpuSgd {
    /// The momentum buffer v.
    pub velocity: Vec<f64>,
    /// The momentum mu.
    pub momentum: f64,
}

impl CpuSgd {
    /// A zero buffer for `len` values.
    pub fn new(len: usize, momentum: f64) -> Self {
        CpuSgd { velocity: vec![0.0; len], momentum }
    }

    /// One step of `p` by its gradient `g` at rate `lr`.
    pub fn update(&mut self, p: &mut [f64], g: &[f64], lr: f64) {
        for ((p, v), g) in p.iter_mut().zip(&mut self.velocity).zip(g) {
            *v = self.momentum * *v + g;
            *p -= lr * *v;
        }
    }
}

/// The EMA codebook state in f64.
#[derive(Clone, Debug)]
pub struct CpuEma {
    /// N_k, the decayed count of each code (k).
    pub size: Vec<f64>,
    /// M_k, the decayed sum of the encodings assigned to each code (k x m).
    pub sum: Vec<f64>,
    /// The decay g.
    pub decay: f64,
    /// The Laplace smoothing epsilon.
    pub eps: f64,
}

impl CpuEma {
    /// N_k = 1, M_k = c_k.
    pub fn new(codebook: &[f64], k: usize, decay: f64, eps: f64) -> Self {
        CpuEma { size: vec![1.0; k], sum: codebook.to_vec(), decay, eps }
    }

    /// One update from a batch's encodings and assignments; rewrites `codebook`.
    pub fn update(&mut self, codebook: &mut [f64], z: &[f64], index: &[u32], m: usize) {
        let k = self.size.len();
        let g = self.decay;
        let mut counts = vec![0.0f64; k];
        let mut sums = vec![0.0f64; k * m];
        for (i, &a) in index.iter().enumerate() {
            counts[a as usize] += 1.0;
            for j in 0..m {
                sums[a as usize * m + j] += z[i * m + j];
            }
        }
        for (size, count) in self.size.iter_mut().zip(&counts) {
            *size = g * *size + (1.0 - g) * count;
        }
        let n: f64 = self.size.iter().sum();
        for c in 0..k {
            let smoothed = (self.size[c] + self.eps) / (n + k as f64 * self.eps) * n;
            for j in 0..m {
                let e = c * m + j;
                self.sum[e] = g * self.sum[e] + (1.0 - g) * sums[e];
                codebook[e] = self.sum[e] / smoothed;
            }
        }
    }
}
