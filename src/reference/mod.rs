//! Every kernel in plain Rust with f64 accumulation, written straight from docs/PROTOCOL.md's formulas (not from the
//! shaders' rearrangements): the oracle the GPU tests compare against, and the engine used where no adapter
//! exists. Inputs are the same f32 buffers the GPU sees; matrices are row-major. Inputs are assumed valid (m >= 1,
//! indices < K, lengths that agree): the kernels' `bind` and the trainers check them first, and a violation here
//! panics rather than computing something wrong.

pub mod affine;
pub mod latent;
pub mod orthogonal;
pub mod soft;
#[cfg(feature = "study")]
pub mod train;

use crate::contract::CodeStats;
use crate::contract::EmaSettings;
use crate::estimator::Estimator;

/// Nearest codes and their squared distances.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// `argmin_k ||z_i - c_k||^2`, ties to the lowest k.
    pub index: Vec<u32>,
    /// The minimum squared distance, accumulated in f64.
    pub distance: Vec<f64>,
}

fn row(x: &[f32], i: usize, m: usize) -> &[f32] {
    &x[i * m..(i + 1) * m]
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Nearest code of every row of `z` (n x m) in `codebook` (k x m).
pub fn assign(z: &[f32], codebook: &[f32], m: usize) -> Assignment {
    assign_f64(&to_f64(z), &to_f64(codebook), m)
}

/// [`assign`] on f64 values.
pub fn assign_f64(z: &[f64], codebook: &[f64], m: usize) -> Assignment {
    let (n, k) = (z.len() / m, codebook.len() / m);
    let mut index = Vec::with_capacity(n);
    let mut distance = Vec::with_capacity(n);
    for i in 0..n {
        let zi = &z[i * m..(i + 1) * m];
        let (mut best_k, mut best_d) = (0u32, f64::INFINITY);
        for c in 0..k {
            let d = dist2(zi, &codebook[c * m..(c + 1) * m]);
            if d < best_d {
                best_d = d;
                best_k = c as u32;
            }
        }
        index.push(best_k);
        distance.push(best_d);
    }
    Assignment { index, distance }
}

/// `E(g, z, q)` for one row (docs/PROTOCOL.md §2), without the commitment term. `gumbel-rotation-trick` is the
/// rotation trick at the sampled code. `gumbel`'s backward needs the whole codebook ([`soft::backward_row`]) and
/// `learned`'s its matrix ([`learned_row`]): asking for them here panics.
pub fn estimator_row(estimator: Estimator, g: &[f64], z: &[f64], q: &[f64]) -> Vec<f64> {
    let rotation_part = || {
        let v: Vec<f64> = q.iter().zip(z).map(|(q, z)| q - z).collect();
        let denom = norm(&v) + 1e-8;
        let u: Vec<f64> = v.iter().map(|v| v / denom).collect();
        let gu = dot(g, &u);
        u.iter().map(|u| gu * u).collect::<Vec<f64>>()
    };
    match estimator {
        Estimator::Ste => g.to_vec(),
        Estimator::Rotation => rotation_part(),
        Estimator::DivEq => g.iter().zip(rotation_part()).map(|(g, p)| g - p).collect(),
        Estimator::Gumbel => panic!("the gumbel backward needs the codebook: use reference::soft::backward_row"),
        Estimator::Learned => panic!("the learned backward needs its matrix: use reference::learned_row"),
        Estimator::RotationTrick | Estimator::GumbelRotationTrick => {
            let (zn, qn) = (norm(z), norm(q));
            if zn < 1e-8 {
                return g.to_vec();
            }
            let z_hat: Vec<f64> = z.iter().map(|z| z / zn).collect();
            // As torch.nn.functional.normalize: q = 0 gives q^ = 0.
            let q_hat: Vec<f64> = q.iter().map(|q| q / qn.max(1e-12)).collect();
            let w: Vec<f64> = z_hat.iter().zip(&q_hat).map(|(a, b)| a + b).collect();
            let s = norm(&w);
            if s < 1e-6 {
                return g.to_vec();
            }
            let r: Vec<f64> = w.iter().map(|w| w / s).collect();
            let lambda = qn / zn;
            let (rg, qg) = (dot(&r, g), dot(&q_hat, g));
            (0..g.len()).map(|j| lambda * (g[j] - 2.0 * r[j] * rg + 2.0 * z_hat[j] * qg)).collect()
        }
    }
}

/// The learned estimator's `M g` for one row, M (m x m, row-major).
pub fn learned_row(transport: &[f64], g: &[f64]) -> Vec<f64> {
    let m = g.len();
    (0..m).map(|a| (0..m).map(|b| transport[a * m + b] * g[b]).sum()).collect()
}

/// The gradient of `L_M = 1/(B m) sum_i ||M g_i - s_i||^2` with respect to M (m x m), over the rows of `g` and `s`
/// (each `B x m`): `2/(B m) sum_i (M g_i - s_i) g_i^T`.
pub fn learned_grad(transport: &[f64], g: &[f64], s: &[f64], m: usize) -> Vec<f64> {
    let rows = g.len() / m;
    let mut out = vec![0.0; m * m];
    for i in 0..rows {
        let gi = &g[i * m..(i + 1) * m];
        let r = learned_row(transport, gi);
        for a in 0..m {
            for b in 0..m {
                out[a * m + b] += 2.0 / (rows * m) as f64 * (r[a] - s[i * m + a]) * gi[b];
            }
        }
    }
    out
}

/// `L_M = 1/(B m) sum_i ||M g_i - s_i||^2`, the learned estimator's fitting loss (for finite differences).
pub fn learned_loss(transport: &[f64], g: &[f64], s: &[f64], m: usize) -> f64 {
    let rows = g.len() / m;
    let mut total = 0.0;
    for i in 0..rows {
        let r = learned_row(transport, &g[i * m..(i + 1) * m]);
        total += (0..m).map(|a| (r[a] - s[i * m + a]).powi(2)).sum::<f64>();
    }
    total / (rows * m) as f64
}

/// One step of the adaptive beta (`shaders/schedule.wgsl`) from this step's codes `index` among `k`:
/// `u = min(1, used / (K (1 - (1 - 1/K)^B)))`, then `clamp(beta exp(rate (u - target)), lo, hi)`.
pub fn adapt_beta(beta: f64, (lo, hi): (f64, f64), index: &[u32], k: usize, target: f64, rate: f64) -> f64 {
    let mut seen = vec![false; k];
    index.iter().for_each(|&a| seen[a as usize] = true);
    let used = seen.iter().filter(|&&s| s).count();
    adapt_beta_used(beta, (lo, hi), used, index.len(), k, target, rate)
}

/// [`adapt_beta`] from the number of distinct codes `used` by a batch of `batch` rows.
pub fn adapt_beta_used(
    beta: f64,
    (lo, hi): (f64, f64),
    used: usize,
    batch: usize,
    k: usize,
    target: f64,
    rate: f64,
) -> f64 {
    let expected = k as f64 * (1.0 - (1.0 - 1.0 / k as f64).powf(batch as f64));
    let u = (used as f64 / expected).min(1.0);
    (beta * (rate * (u - target)).exp()).clamp(lo, hi)
}

/// The rotation trick's forward value `lambda R z` with `R = I - 2 r r^T + 2 q^ z^^T`, applied as a product
/// (never as a matrix). It equals q up to rounding: a test checks it.
pub fn rotation_trick_forward(z: &[f64], q: &[f64]) -> Vec<f64> {
    let (zn, qn) = (norm(z), norm(q));
    let z_hat: Vec<f64> = z.iter().map(|z| z / zn).collect();
    let q_hat: Vec<f64> = q.iter().map(|q| q / qn).collect();
    let w: Vec<f64> = z_hat.iter().zip(&q_hat).map(|(a, b)| a + b).collect();
    let s = norm(&w);
    let r: Vec<f64> = w.iter().map(|w| w / s).collect();
    let (rz, zz) = (dot(&r, z), dot(&z_hat, z));
    (0..z.len()).map(|j| qn / zn * (z[j] - 2.0 * r[j] * rz + 2.0 * q_hat[j] * zz)).collect()
}

/// Widens f32 values.
pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Narrows f64 values to f32 (rounding to nearest), as the GPU and saved models hold them.
pub fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// `dL/dz` for every row: `E(g_i, z_i, q_i) + 2 beta / (B m) (z_i - q_i)`, `q_i = codebook[index[i]]`.
pub fn estimator_grad(
    estimator: Estimator,
    g: &[f32],
    z: &[f32],
    index: &[u32],
    codebook: &[f32],
    m: usize,
    beta: f64,
    batch: usize,
) -> Vec<f64> {
    let commit = 2.0 * beta / (batch as f64 * m as f64);
    let mut out = Vec::with_capacity(z.len());
    for (i, &a) in index.iter().enumerate() {
        let (gi, zi, qi) = (to_f64(row(g, i, m)), to_f64(row(z, i, m)), to_f64(row(codebook, a as usize, m)));
        let e = estimator_row(estimator, &gi, &zi, &qi);
        out.extend((0..m).map(|j| e[j] + commit * (zi[j] - qi[j])));
    }
    out
}

/// `dL_cb/dC = 2/(B m) sum_{i : a_i = k} (c_k - z_i)` (k x m).
pub fn codebook_grad(z: &[f32], index: &[u32], codebook: &[f32], m: usize, batch: usize) -> Vec<f64> {
    let scale = 2.0 / (batch as f64 * m as f64);
    let mut grad = vec![0.0; codebook.len()];
    for (i, &a) in index.iter().enumerate() {
        let a = a as usize;
        for j in 0..m {
            grad[a * m + j] += scale * (codebook[a * m + j] as f64 - z[i * m + j] as f64);
        }
    }
    grad
}

/// [`codebook_grad`] on f64 values.
pub fn codebook_grad_f64(z: &[f64], index: &[u32], codebook: &[f64], m: usize, batch: usize) -> Vec<f64> {
    let scale = 2.0 / (batch as f64 * m as f64);
    let mut out = vec![0.0; codebook.len()];
    for (i, &k) in index.iter().enumerate() {
        for j in 0..m {
            let e = k as usize * m + j;
            out[e] += scale * (codebook[e] - z[i * m + j]);
        }
    }
    out
}

/// `n_k = #{i : index[i] = k}`.
pub fn counts(index: &[u32], k: usize) -> Vec<u32> {
    let mut c = vec![0u32; k];
    for &a in index {
        c[a as usize] += 1;
    }
    c
}

/// The EMA state: `size` N_k (k) and `sum` M_k (k x m), kept in f32 as on the GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct EmaState {
    /// N_k, the decayed count of each code (k).
    pub size: Vec<f32>,
    /// M_k, the decayed sum of the encodings assigned to each code (k x m).
    pub sum: Vec<f32>,
}

impl EmaState {
    /// N_k = 1 and M_k = the initial c_k (docs/PROTOCOL.md §2).
    pub fn new(codebook: &[f32], k: usize) -> Self {
        EmaState { size: vec![1.0; k], sum: codebook.to_vec() }
    }
}

/// One EMA step (docs/PROTOCOL.md §2): updates the state and rewrites `codebook`. Each new value is computed in
/// f64 from the stored f32 values and stored as f32, as the GPU stores it. Returns this step's counts.
pub fn ema_update(
    state: &mut EmaState,
    codebook: &mut [f32],
    z: &[f32],
    index: &[u32],
    m: usize,
    settings: EmaSettings,
) -> Vec<u32> {
    let k = state.size.len();
    let (g, eps) = (settings.decay as f64, settings.eps as f64);
    let n_k = counts(index, k);
    let mut sums = vec![0.0f64; k * m];
    for (i, &a) in index.iter().enumerate() {
        for j in 0..m {
            sums[a as usize * m + j] += z[i * m + j] as f64;
        }
    }
    for (size, &count) in state.size.iter_mut().zip(&n_k) {
        *size = (g * *size as f64 + (1.0 - g) * count as f64) as f32;
    }
    let n: f64 = state.size.iter().map(|&s| s as f64).sum();
    for c in 0..k {
        let smoothed = (state.size[c] as f64 + eps) / (n + k as f64 * eps) * n;
        for j in 0..m {
            let e = c * m + j;
            let sum = g * state.sum[e] as f64 + (1.0 - g) * sums[e];
            state.sum[e] = sum as f32;
            codebook[e] = (sum / smoothed) as f32;
        }
    }
    n_k
}

/// The statistics of docs/PROTOCOL.md §4 from an assignment (and labels `(labels, classes)` when given).
pub fn stats(assignment: &Assignment, k: usize, m: usize, labels: Option<(&[u32], usize)>) -> CodeStats {
    let n_k = counts(&assignment.index, k);
    let total: u64 = n_k.iter().map(|&c| c as u64).sum();
    let dead = n_k.iter().filter(|&&c| c == 0).count();
    let entropy: f64 = n_k
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum();
    let quant_err = assignment.distance.iter().sum::<f64>() / (assignment.distance.len() as f64 * m as f64);
    let purity = labels.map(|(labels, classes)| {
        let mut table = vec![0u64; k * classes];
        for (&a, &y) in assignment.index.iter().zip(labels) {
            table[a as usize * classes + y as usize] += 1;
        }
        let pure: u64 = table.chunks(classes).map(|r| r.iter().copied().max().unwrap_or(0)).sum();
        pure as f64 / total as f64
    });
    CodeStats {
        total: total as u32,
        dead_codes: dead as u32,
        usage: 1.0 - dead as f64 / k as f64,
        entropy,
        perplexity: entropy.exp(),
        quant_err,
        purity,
    }
}

/// `L_cb = 1/(B m) sum_i ||sg(z_i) - c_{a_i}||^2` at fixed assignments, in f64 (for finite differences).
pub fn loss_codebook(z: &[f64], codebook: &[f64], index: &[u32], m: usize, batch: usize) -> f64 {
    let mut sum = 0.0;
    for (i, &a) in index.iter().enumerate() {
        for j in 0..m {
            sum += (z[i * m + j] - codebook[a as usize * m + j]).powi(2);
        }
    }
    sum / (batch as f64 * m as f64)
}

/// `beta L_commit = beta/(B m) sum_i ||z_i - sg(c_{a_i})||^2` at fixed assignments, in f64.
pub fn loss_commit(z: &[f64], codebook: &[f64], index: &[u32], m: usize, batch: usize, beta: f64) -> f64 {
    beta * loss_codebook(z, codebook, index, m, batch)
}
