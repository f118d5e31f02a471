//! The affine re-parameterization of a codebook in f64 (docs/PROTOCOL.md §6.6), the oracle of
//! `shaders/affine.wgsl` and of the engines: `C = C0 diag(1 + a s) + a b`, and what the codebook's gradient G gives
//! C0, s and b: `dC0 = G diag(1 + a s)`, `ds_j = a sum_k G_kj C0_kj`, `db_j = a sum_k G_kj`.

/// `C = C0 diag(1 + a s) + a b` in f64, from the codes `raw` (K x m) and `scale_shift` = [s (m), b (m)].
pub fn codebook(raw: &[f64], scale_shift: &[f64], m: usize, a: f64) -> Vec<f64> {
    let (s, b) = scale_shift.split_at(m);
    raw.chunks_exact(m).flat_map(|c| (0..m).map(move |j| c[j] * (1.0 + a * s[j]) + a * b[j])).collect()
}

/// The gradients of C's map from the codebook's gradient `codebook_grad` (K x m): `dC0` (K x m) and [ds (m), db
/// (m)].
pub fn grad(raw: &[f64], scale_shift: &[f64], codebook_grad: &[f64], m: usize, a: f64) -> (Vec<f64>, Vec<f64>) {
    let s = &scale_shift[..m];
    let mut params = vec![0.0; 2 * m];
    let mut raw_grad = Vec::with_capacity(raw.len());
    for (c, g) in raw.chunks_exact(m).zip(codebook_grad.chunks_exact(m)) {
        for j in 0..m {
            params[j] += a * g[j] * c[j];
            params[m + j] += a * g[j];
            raw_grad.push(g[j] * (1.0 + a * s[j]));
        }
    }
    (raw_grad, params)
}
