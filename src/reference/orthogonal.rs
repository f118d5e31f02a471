//! The codebook's orthogonality penalty (docs/PROTOCOL.md §6.6; vector-quantize-pytorch's `orthogonal_reg_weight`)
//! in f64, straight from its definition: with `u_k = c_k / max(||c_k||, eps)` and `s_ij = u_i . u_j`,
//!
//! ```text
//! L_orth = 1/K^2 sum_ij s_ij^2 - 1/K
//! ```
//!
//! (0 when the codes are orthogonal, which needs K <= m). Its gradient: `dL/du_i = 4/K^2 sum_j s_ij u_j`, then
//! through the normalization `dL/dc_i = (dL/du_i - (dL/du_i . u_i) u_i) / ||c_i||` (`dL/du_i / eps` for a code
//! shorter than eps, where the normalization is `c / eps`).

use super::dot;

/// The normalization's floor, as PyTorch's `F.normalize`.
pub const EPS: f64 = 1e-12;

/// The unit codes `u_k` of `codebook` (k x m).
fn units(codebook: &[f64], m: usize) -> Vec<f64> {
    codebook.chunks_exact(m).flat_map(|c| c.iter().map(move |v| v / dot(c, c).sqrt().max(EPS))).collect()
}

/// `L_orth` of `codebook` (k x m).
pub fn loss(codebook: &[f64], m: usize) -> f64 {
    let u = units(codebook, m);
    let k = codebook.len() / m;
    let mut sum = 0.0;
    for i in 0..k {
        for j in 0..k {
            sum += dot(&u[i * m..(i + 1) * m], &u[j * m..(j + 1) * m]).powi(2);
        }
    }
    sum / (k * k) as f64 - 1.0 / k as f64
}

/// `dL_orth / dC` (k x m).
pub fn grad(codebook: &[f64], m: usize) -> Vec<f64> {
    let u = units(codebook, m);
    let k = codebook.len() / m;
    let mut out = vec![0.0; codebook.len()];
    for i in 0..k {
        let ui = &u[i * m..(i + 1) * m];
        let mut gu = vec![0.0; m];
        for j in 0..k {
            let uj = &u[j * m..(j + 1) * m];
            let s = dot(ui, uj);
            gu.iter_mut().zip(uj).for_each(|(g, v)| *g += 4.0 / (k * k) as f64 * s * v);
        }
        let c = &codebook[i * m..(i + 1) * m];
        let n = dot(c, c).sqrt();
        let along = dot(&gu, ui);
        for j in 0..m {
            out[i * m + j] = if n > EPS { (gu[j] - along * ui[j]) / n } else { gu[j] / EPS };
        }
    }
    out
}
