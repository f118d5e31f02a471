//! The Gumbel-softmax relaxation (`shaders/soft.wgsl`) in f64, straight from its definition:
//! `s_k = -||z - c_k||^2 / tau + G_k`, `y = softmax(s)`, the relaxed code `q~ = sum_k y_k c_k`, and its Jacobian
//! applied to g through the chain rule (ds_k/dz = -2 (z - c_k) / tau):
//! `J^T g = (2 / tau) sum_k y_k (g.c_k) (c_k - c_bar)`, `c_bar = sum_k y_k c_k`.

use super::norm;
use crate::contract::mix32;

/// Where a row's Gumbel noise comes from: the run's mixed seed ([`crate::contract::seed_mix`]), the step
/// and the row (within its run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Noise {
    /// The run's mixed seed.
    pub seed: u32,
    /// The step number t.
    pub step: u32,
    /// The row within the run's batch.
    pub row: u32,
}

/// The uniform variate behind the noise of `code`: `(h >> 9 + 1/2) / 2^23` in (0, 1), exact in f32 and f64.
pub fn gumbel_uniform(noise: Noise, code: u32) -> f64 {
    let h = mix32(noise.seed ^ mix32(noise.step ^ mix32(noise.row ^ mix32(code ^ 0x9e37_79b9))));
    ((h >> 9) as f64 + 0.5) / 8_388_608.0
}

/// Standard Gumbel noise `-ln(-ln u)` for `code`.
pub fn gumbel_noise(noise: Noise, code: u32) -> f64 {
    -(-gumbel_uniform(noise, code).ln()).ln()
}

/// The scores `s_k` of one row `z` (m) against `codebook` (k x m).
pub fn scores(z: &[f64], codebook: &[f64], tau: f64, noise: Option<Noise>) -> Vec<f64> {
    let m = z.len();
    (0..codebook.len() / m)
        .map(|k| {
            let d: f64 = (0..m).map(|j| (z[j] - codebook[k * m + j]).powi(2)).sum();
            -d / tau + noise.map_or(0.0, |n| gumbel_noise(n, k as u32))
        })
        .collect()
}

/// The hard sample `argmax_k s_k` (ties: the lowest k).
pub fn sample_row(z: &[f64], codebook: &[f64], tau: f64, noise: Option<Noise>) -> u32 {
    let s = scores(z, codebook, tau, noise);
    let mut best = 0;
    for k in 1..s.len() {
        if s[k] > s[best] {
            best = k;
        }
    }
    best as u32
}

/// Stochastic code sampling's draw (`--sampling stochastic`): `argmax_k (-||z - c_k|| / tau + G_k)` (ties: the
/// lowest k), a draw of k from softmax(-||z - c_k|| / tau) by the Gumbel-max trick. The distance, not its square,
/// as vector-quantize-pytorch's `cdist` scores it (docs/PROTOCOL.md §6.6); the noise is the Gumbel estimators'.
pub fn stochastic_row(z: &[f64], codebook: &[f64], tau: f64, noise: Noise) -> u32 {
    let m = z.len();
    let score = |k: usize| {
        let d: f64 = (0..m).map(|j| (z[j] - codebook[k * m + j]).powi(2)).sum();
        -d.sqrt() / tau + gumbel_noise(noise, k as u32)
    };
    let mut best = (0, score(0));
    for k in 1..codebook.len() / m {
        let s = score(k);
        if s > best.1 {
            best = (k, s);
        }
    }
    best.0 as u32
}

/// `y = softmax(s)`.
pub fn weights(z: &[f64], codebook: &[f64], tau: f64, noise: Option<Noise>) -> Vec<f64> {
    let s = scores(z, codebook, tau, noise);
    let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|v| (v - top).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

/// The relaxed code `sum_k y_k c_k`.
pub fn forward_row(z: &[f64], codebook: &[f64], tau: f64, noise: Option<Noise>) -> Vec<f64> {
    let m = z.len();
    let y = weights(z, codebook, tau, noise);
    (0..m).map(|j| y.iter().enumerate().map(|(k, w)| w * codebook[k * m + j]).sum()).collect()
}

/// `J^T g`, J the Jacobian of [`forward_row`] at z (the noise held fixed), without any commitment term.
pub fn backward_row(g: &[f64], z: &[f64], codebook: &[f64], tau: f64, noise: Option<Noise>) -> Vec<f64> {
    let m = z.len();
    let y = weights(z, codebook, tau, noise);
    let c_bar = forward_row(z, codebook, tau, noise);
    let mut out = vec![0.0; m];
    for (k, &w) in y.iter().enumerate() {
        let c = &codebook[k * m..(k + 1) * m];
        let gc: f64 = g.iter().zip(c).map(|(a, b)| a * b).sum();
        for j in 0..m {
            out[j] += 2.0 / tau * w * gc * (c[j] - c_bar[j]);
        }
    }
    out
}

/// The scale the backward's f32 rounding is relative to: `(2 / tau) ||g|| max_k ||c_k - c_a||^2` over the codes
/// with weight above 1e-12 (a test tolerance).
pub fn backward_scale(g: &[f64], z: &[f64], codebook: &[f64], tau: f64, noise: Option<Noise>) -> f64 {
    let m = z.len();
    let y = weights(z, codebook, tau, noise);
    let a = sample_row(z, codebook, tau, noise) as usize;
    let spread = (0..y.len())
        .filter(|&k| y[k] > 1e-12)
        .map(|k| {
            let d: Vec<f64> = (0..m).map(|j| codebook[k * m + j] - codebook[a * m + j]).collect();
            norm(&d).powi(2)
        })
        .fold(0.0, f64::max);
    2.0 / tau * norm(g) * spread
}
