use crate::common::{Data, assert_clean, assert_close_each, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::learned::{Learned, LearnedBuffers, LearnedGradBuffers, identity};
use vqgrad::reference::{self, to_f64};

/// Both kernels against the reference for stacked runs, one of them disabled: `grad_z += M g` (on top of what
/// grad_z held) and `dM = 2/(n m) sum_i (M g_i - s_i) g_i^T`; a disabled run keeps its grad_z and gets dM = 0.
/// Tolerances: 4 (m + 4) eps of each output's magnitude scale (sums of m products; n for dM).
#[test]
fn learned_kernels_match_the_reference() {
    let gpu = gpu_or_skip!();
    let kernel = Learned::new(&gpu.device).unwrap();
    for (seed, &(n, m)) in [(1usize, 1usize), (37, 3), (256, 4), (65, 16)].iter().enumerate() {
        let runs = 3;
        let enabled = [true, false, true];
        let mut d = Data::new(seed as u64);
        let (g, s, t, before) = (
            d.normal(runs * n * m, 1.0),
            d.normal(runs * n * m, 1.0),
            d.normal(runs * m * m, 0.5),
            d.normal(runs * n * m, 1.0),
        );
        let up = |label, v: &[f32]| gpu.upload(label, v).unwrap();
        let (gb, sb, tb, dz) = (up("g", &g), up("s", &s), up("transport", &t), up("grad_z", &before));
        let dm = up("transport grad", &vec![9.0f32; runs * m * m]);
        let shape = (n as u32, m as u32);
        let backward = kernel
            .bind_backward(&gpu.device, &LearnedBuffers { g: &gb, transport: &tb, grad_z: &dz }, shape, &enabled)
            .unwrap();
        let grad = kernel
            .bind_grad(&gpu.device, &LearnedGradBuffers { g: &gb, s: &sb, transport: &tb, grad: &dm }, shape, &enabled)
            .unwrap();
        run_pass(&gpu, |pass| {
            grad.encode(pass);
            backward.encode(pass);
        });
        let (got_dz, got_dm): (Vec<f32>, Vec<f32>) = (gpu.read(&dz).unwrap(), gpu.read(&dm).unwrap());
        let (mut want_dz, mut want_dm) = (Vec::new(), Vec::new());
        for r in 0..runs {
            let rows = r * n * m..(r + 1) * n * m;
            let mat = to_f64(&t[r * m * m..(r + 1) * m * m]);
            let (gr, sr) = (to_f64(&g[rows.clone()]), to_f64(&s[rows.clone()]));
            for i in 0..n {
                let add = reference::learned_row(&mat, &gr[i * m..(i + 1) * m]);
                want_dz.extend(
                    (0..m).map(|j| before[r * n * m + i * m + j] as f64 + if enabled[r] { add[j] } else { 0.0 }),
                );
            }
            let dm = reference::learned_grad(&mat, &gr, &sr, m);
            want_dm.extend(dm.iter().map(|&v| if enabled[r] { v } else { 0.0 }));
        }
        let eps = f32::EPSILON as f64;
        let what = format!("n {n} m {m}");
        assert_close_each(&format!("{what} dz"), &got_dz, &want_dz, |e| {
            4.0 * (m + 4) as f64 * eps * (want_dz[e].abs() + 3.0 * (m as f64).sqrt())
        });
        let scale = 2.0 / m as f64 * 3.0 * (m as f64).sqrt(); // |M g - s| |g| per row, averaged: a few units
        assert_close_each(&format!("{what} dM"), &got_dm, &want_dm, |_| {
            4.0 * (m + 4) as f64 * eps * scale * (n as f64).sqrt() + 1e-30
        });
        let disabled = &got_dm[m * m..2 * m * m];
        assert!(disabled.iter().all(|&v| v == 0.0), "{what}: the disabled run's dM");
        assert_eq!(got_dz[n * m..2 * n * m], before[n * m..2 * n * m], "{what}: the disabled run's grad_z");
    }
    assert_eq!(identity(2, 2), vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
    assert_clean(&gpu);
}
