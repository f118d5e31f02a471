//! The VQ layer of the fast CPU engine in f32: the nearest-code search fused with its argmin, and each estimator's
//! backward for one row, written into the caller's buffers (docs/PROTOCOL.md §2, §2.1). The formulas are those of
//! [`crate::reference`]; the tests hold the two against each other.

use crate::Estimator;
use crate::contract::mix32;
use rayon::prelude::*;

/// From this latent width up, the search prunes with the expanded form `||c||^2 - 2 z.c` through a GEMM (fast when
/// m is large) and decides with the direct `||z - c||^2` among the codes the pruning cannot tell apart; below it,
/// the direct form alone. Both give the same codes and distances, bit for bit.
pub const GEMM_FROM_M: usize = 16;
/// Rows per block of the GEMM form (its dot products, rows x K, stay in cache) and per parallel task.
const BLOCK: usize = 128;

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The nearest code of every row of `z` (n x m) in `codebook` (k x m), ties to the lowest k, with its squared
/// distance (always the direct `||z - c||^2`), by the direct form on one thread; no allocation.
pub fn nearest_direct(z: &[f32], codebook: &[f32], m: usize, index: &mut [u32], dist: &mut [f32]) {
    for ((zi, a), d) in z.chunks_exact(m).zip(index.iter_mut()).zip(dist.iter_mut()) {
        let (mut best, mut best_d) = (0u32, f32::INFINITY);
        for (c, code) in codebook.chunks_exact(m).enumerate() {
            let e = dist2(zi, code);
            if e < best_d {
                best_d = e;
                best = c as u32;
            }
        }
        *a = best;
        *d = best_d;
    }
}

/// [`nearest_direct`]'s result, bit for bit, for many rows: blocks of rows in parallel, each pruned through a GEMM
/// when m is at least [`GEMM_FROM_M`] (docs/PROTOCOL.md §7.4: the direct form decides).
pub fn nearest(z: &[f32], codebook: &[f32], m: usize, index: &mut [u32], dist: &mut [f32]) {
    let chunks = z.par_chunks(BLOCK * m).zip(index.par_chunks_mut(BLOCK)).zip(dist.par_chunks_mut(BLOCK));
    if m < GEMM_FROM_M {
        chunks.for_each(|((z, index), dist)| nearest_direct(z, codebook, m, index, dist));
        return;
    }
    let k = codebook.len() / m;
    let norms: Vec<f32> = codebook.chunks_exact(m).map(|c| dot(c, c)).collect();
    let largest = norms.iter().copied().fold(0.0f32, f32::max);
    chunks.for_each_init(
        || vec![0.0f32; BLOCK * k],
        |products, ((z, index), dist)| {
            super::dense::product_t(z, codebook, (index.len(), m, k), products);
            for (i, (a, d)) in index.iter_mut().zip(dist.iter_mut()).enumerate() {
                let zi = &z[i * m..(i + 1) * m];
                let scores = products[i * k..(i + 1) * k].iter().zip(&norms).map(|(&p, &n)| n - 2.0 * p);
                let best = scores.clone().fold(f32::INFINITY, f32::min);
                // A bound, with room to spare, on the rounding of both forms (each a sum of m products): every
                // code the direct form could prefer scores within it of the best.
                let margin = 8.0 * (m as f32 + 2.0) * f32::EPSILON * (dot(zi, zi) + 2.0 * largest);
                let (mut best_k, mut best_d) = (0u32, f32::INFINITY);
                for (c, s) in scores.enumerate() {
                    if s <= best + margin {
                        let e = dist2(zi, &codebook[c * m..(c + 1) * m]);
                        if e < best_d {
                            (best_k, best_d) = (c as u32, e);
                        }
                    }
                }
                (*a, *d) = (best_k, best_d);
            }
        },
    );
}

/// `E(g, z, q)` for one row without the commitment term, into `out`, for the estimators that need only the row
/// (not `gumbel`, not `learned`: see [`gumbel_backward`] and [`learned_row`]).
pub fn estimator_row(estimator: Estimator, g: &[f32], z: &[f32], q: &[f32], out: &mut [f32]) {
    let rotation = |out: &mut [f32], sign: f32| {
        // u = (q - z) / (||q - z|| + 1e-8); the part (g.u) u, subtracted from g for diveq.
        let denom = q.iter().zip(z).map(|(q, z)| (q - z) * (q - z)).sum::<f32>().sqrt() + 1e-8;
        let gu = g.iter().zip(q.iter().zip(z)).map(|(g, (q, z))| g * (q - z)).sum::<f32>() / denom;
        for j in 0..out.len() {
            let p = gu * (q[j] - z[j]) / denom;
            out[j] = if sign > 0.0 { p } else { g[j] - p };
        }
    };
    match estimator {
        Estimator::Ste => out.copy_from_slice(g),
        Estimator::Rotation => rotation(out, 1.0),
        Estimator::DivEq => rotation(out, -1.0),
        Estimator::RotationTrick | Estimator::GumbelRotationTrick => rotation_trick(g, z, q, out),
        Estimator::Gumbel | Estimator::Learned => unreachable!("{estimator} needs more than the row"),
    }
}

/// The rotation trick's backward `lambda (g - 2 r (r.g) + 2 z^ (q^.g))`, with the reference's guards.
fn rotation_trick(g: &[f32], z: &[f32], q: &[f32], out: &mut [f32]) {
    let (zn, qn) = (dot(z, z).sqrt(), dot(q, q).sqrt());
    if zn < 1e-8 {
        out.copy_from_slice(g);
        return;
    }
    let qs = qn.max(1e-12);
    let w = |j: usize| z[j] / zn + q[j] / qs;
    let s = (0..z.len()).map(|j| w(j) * w(j)).sum::<f32>().sqrt();
    if s < 1e-6 {
        out.copy_from_slice(g);
        return;
    }
    let rg = (0..z.len()).map(|j| w(j) / s * g[j]).sum::<f32>();
    let qg = (0..z.len()).map(|j| q[j] / qs * g[j]).sum::<f32>();
    let lambda = qn / zn;
    for j in 0..out.len() {
        out[j] = lambda * (g[j] - 2.0 * w(j) / s * rg + 2.0 * z[j] / zn * qg);
    }
}

/// Where a row's Gumbel noise comes from, as [`crate::reference::soft::Noise`]: the run's mixed seed, the step and
/// the row.
#[derive(Clone, Copy, Debug)]
pub struct Noise {
    /// The run's mixed seed.
    pub seed: u32,
    /// The step number t.
    pub step: u32,
    /// The row within the batch.
    pub row: u32,
}

/// Standard Gumbel noise for `code`, from the same hash and uniform as the other engines.
fn gumbel_noise(n: Noise, code: u32) -> f32 {
    let h = mix32(n.seed ^ mix32(n.step ^ mix32(n.row ^ mix32(code ^ 0x9e37_79b9))));
    let u = ((h >> 9) as f32 + 0.5) / 8_388_608.0;
    -(-u.ln()).ln()
}

/// The scores `s_k = -||z - c_k||^2 / tau + G_k` of one row into `scores` (k); returns the hard sample's index
/// (the first maximum).
pub fn gumbel_scores(z: &[f32], codebook: &[f32], tau: f32, noise: Option<Noise>, scores: &mut [f32]) -> usize {
    let m = z.len();
    let (mut best, mut best_s) = (0, f32::NEG_INFINITY);
    for (k, (s, c)) in scores.iter_mut().zip(codebook.chunks_exact(m)).enumerate() {
        *s = -dist2(z, c) / tau + noise.map_or(0.0, |n| gumbel_noise(n, k as u32));
        if k == 0 || *s > best_s {
            (best, best_s) = (k, *s);
        }
    }
    best
}

/// Stochastic code sampling's draw (`--sampling stochastic`): `argmax_k (-||z - c_k|| / tau + G_k)`, the first
/// maximum, as [`crate::reference::soft::stochastic_row`].
pub fn stochastic_sample(z: &[f32], codebook: &[f32], tau: f32, noise: Noise) -> usize {
    let m = z.len();
    let (mut best, mut best_s) = (0, f32::NEG_INFINITY);
    for (k, c) in codebook.chunks_exact(m).enumerate() {
        let s = -dist2(z, c).sqrt() / tau + gumbel_noise(noise, k as u32);
        if k == 0 || s > best_s {
            (best, best_s) = (k, s);
        }
    }
    best
}

/// `J^T g` of the relaxation at z (the noise held fixed) into `out` (m), the relaxed code's Jacobian applied
/// through the chain rule: `(2 / tau) sum_k y_k (g.c_k) (c_k - c_bar)`. `scores` is scratch of k values and
/// `c_bar` of m.
#[allow(clippy::too_many_arguments)]
pub fn gumbel_backward(
    g: &[f32],
    z: &[f32],
    codebook: &[f32],
    tau: f32,
    noise: Option<Noise>,
    scores: &mut [f32],
    c_bar: &mut [f32],
    out: &mut [f32],
) {
    gumbel_scores(z, codebook, tau, noise, scores);
    relaxed_backward(g, codebook, tau, scores, c_bar, out);
}

/// [`gumbel_backward`] from the row's scores as [`gumbel_scores`] wrote them (the sample's, kept: the noise costs
/// more than the rest); `scores` becomes the softmax weights.
pub fn relaxed_backward(g: &[f32], codebook: &[f32], tau: f32, scores: &mut [f32], c_bar: &mut [f32], out: &mut [f32]) {
    let m = g.len();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    c_bar.fill(0.0);
    for (y, c) in scores.iter_mut().zip(codebook.chunks_exact(m)) {
        *y /= total;
        c_bar.iter_mut().zip(c).for_each(|(b, c)| *b += *y * c);
    }
    out.fill(0.0);
    for (&y, c) in scores.iter().zip(codebook.chunks_exact(m)) {
        let w = 2.0 / tau * y * dot(g, c);
        out.iter_mut().zip(c.iter().zip(c_bar.iter())).for_each(|(o, (c, b))| *o += w * (c - b));
    }
}

/// The learned estimator's `M g` for one row into `out`, M (m x m, row-major).
pub fn learned_row(transport: &[f32], g: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(transport.chunks_exact(g.len())) {
        *o = dot(row, g);
    }
}
