//! Maps of the encodings before the quantizer, in f64 (docs/PROTOCOL.md §6.6), the oracle of `shaders/latent.wgsl`
//! and of the engines: the unit rows of cosine codes ([`unit()`]), and FSQ's bound. FSQ (Mentzer et al. 2023)
//! bounds each dimension j with L_j levels,
//!
//! ```text
//! z^_j = (tanh(z_j + shift_j) h_j - offset_j) / w_j,   h_j = (L_j - 1)(1 - 1e-3) / 2,
//! offset_j = 0.5 if L_j is even else 0,   shift_j = tan(offset_j / h_j),   w_j = floor(L_j / 2)
//! ```
//!
//! as the authors' code does (its `tan`, where some ports take `atanh`, which is not finite at L = 2), so that
//! rounding `z^_j w_j` to an integer is the nearest point of the grid [`fsq_grid`].

/// One dimension's constants (h, offset, shift, w) for `levels` >= 2.
pub fn fsq_constants(levels: u32) -> (f64, f64, f64, f64) {
    let half_l = (levels as f64 - 1.0) * (1.0 - 1e-3) / 2.0;
    let offset = if levels.is_multiple_of(2) { 0.5 } else { 0.0 };
    (half_l, offset, (offset / half_l).tan(), (levels / 2) as f64)
}

/// FSQ's bound of `z` (rows x m, m = `levels.len()`), normalized to the grid's scale.
pub fn fsq_bound(z: &[f64], levels: &[u32]) -> Vec<f64> {
    let m = levels.len();
    z.iter()
        .enumerate()
        .map(|(e, &v)| {
            let (h, offset, shift, w) = fsq_constants(levels[e % m]);
            ((v + shift).tanh() * h - offset) / w
        })
        .collect()
}

/// The bound's backward: `dz_j = dy_j (1 - tanh^2(z_j + shift_j)) h_j / w_j`.
pub fn fsq_bound_backward(z: &[f64], levels: &[u32], dy: &[f64]) -> Vec<f64> {
    let m = levels.len();
    z.iter()
        .zip(dy)
        .enumerate()
        .map(|(e, (&v, &d))| {
            let (h, _, shift, w) = fsq_constants(levels[e % m]);
            let t = (v + shift).tanh();
            d * (1.0 - t * t) * h / w
        })
        .collect()
}

/// The implicit codebook: every point of the product grid, `(i_j - w_j) / w_j` for i_j in 0..L_j, in FSQ's index
/// order (dimension 0 varies fastest), prod L_j rows of m.
pub fn fsq_grid(levels: &[u32]) -> Vec<f64> {
    let k: usize = levels.iter().map(|&l| l as usize).product();
    let mut out = Vec::with_capacity(k * levels.len());
    for index in 0..k {
        let mut rest = index;
        for &l in levels {
            let (i, w) = (rest % l as usize, (l / 2) as f64);
            out.push((i as f64 - w) / w);
            rest /= l as usize;
        }
    }
    out
}

/// The floor of a row's norm, PyTorch's `F.normalize` eps.
pub const UNIT_EPS: f64 = 1e-12;

/// Each row of `z` (rows x m) over `max(||z_i||, 1e-12)`: the unit vectors of cosine codes (ViT-VQGAN's l2-normalized
/// encodings and codes).
pub fn unit(z: &[f64], m: usize) -> Vec<f64> {
    z.chunks_exact(m)
        .flat_map(|row| {
            let n = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(UNIT_EPS);
            row.iter().map(move |v| v / n)
        })
        .collect()
}

/// The backward of [`unit()`]: `dz_i = (dy_i - u_i (u_i . dy_i)) / ||z_i||`, or `dy_i / 1e-12` where the norm is at
/// the floor (the denominator is constant there).
pub fn unit_backward(z: &[f64], dy: &[f64], m: usize) -> Vec<f64> {
    z.chunks_exact(m)
        .zip(dy.chunks_exact(m))
        .flat_map(|(row, d)| {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            let out: Vec<f64> = if norm > UNIT_EPS {
                let along: f64 = row.iter().zip(d).map(|(z, d)| z / norm * d).sum();
                row.iter().zip(d).map(|(z, d)| (d - z / norm * along) / norm).collect()
            } else {
                d.iter().map(|d| d / UNIT_EPS).collect()
            };
            out
        })
        .collect()
}
