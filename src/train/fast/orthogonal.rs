//! The codebook's orthogonality penalty on the CPU engine (docs/PROTOCOL.md §6.6), as
//! [`crate::reference::orthogonal`] defines it, in f32 on buffers made once.

/// The normalization's floor, as the reference's.
const EPS: f32 = 1e-12;

/// Adds `weight dL_orth/dC` of `codebook` (k x m) to `grad`. `scratch` holds (k + 1) x m values: the unit codes,
/// then one row for `dL/du_i`.
pub fn add_grad(codebook: &[f32], m: usize, weight: f32, scratch: &mut [f32], grad: &mut [f32]) {
    let k = codebook.len() / m;
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let (unit, gu) = scratch.split_at_mut(k * m);
    for (u, c) in unit.chunks_exact_mut(m).zip(codebook.chunks_exact(m)) {
        let n = dot(c, c).sqrt().max(EPS);
        u.iter_mut().zip(c).for_each(|(u, v)| *u = v / n);
    }
    let scale = 4.0 / (k * k) as f32;
    for (i, (c, g)) in codebook.chunks_exact(m).zip(grad.chunks_exact_mut(m)).enumerate() {
        let ui = &unit[i * m..(i + 1) * m];
        // dL/du_i = 4/K^2 sum_j s_ij u_j.
        gu.fill(0.0);
        for uj in unit.chunks_exact(m) {
            let s = scale * dot(ui, uj);
            gu.iter_mut().zip(uj).for_each(|(g, v)| *g += s * v);
        }
        let n = dot(c, c).sqrt();
        let along = dot(gu, ui);
        for j in 0..m {
            let d = if n > EPS { (gu[j] - along * ui[j]) / n } else { gu[j] / EPS };
            g[j] += weight * d;
        }
    }
}
