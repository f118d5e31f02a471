use crate::common::{Data, assert_clean, assert_close_each, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::orthogonal::Orthogonal;
use vqgrad::reference::{orthogonal, to_f64};

/// Runs the kernel on `runs` stacked k x m codebooks onto the gradient `start`; returns the gradient after.
fn run(gpu: &vqgrad::Gpu, codebook: &[f32], start: &[f32], (k, m): (u32, u32), runs: u32, weight: f32) -> Vec<f32> {
    let kernel = Orthogonal::new(&gpu.device).unwrap();
    let (cb, grad) = (gpu.upload("codebook", codebook).unwrap(), gpu.upload("grad", start).unwrap());
    let bound = kernel.bind(&gpu.device, &cb, &grad, (k, m), runs, weight).unwrap();
    run_pass(gpu, |pass| bound.encode(pass));
    assert_clean(gpu);
    gpu.read(&grad).unwrap()
}

/// `start + weight dL_orth/dC` from the f64 reference per run, with each element's tolerance: 64 (k + m) eps of
/// the terms' magnitude, `weight 4/K^2 sum_j (|s_ij| + s_ij^2) / ||c_i||`.
fn expected(codebook: &[f32], start: &[f32], (k, m): (usize, usize), weight: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut tol) = (Vec::new(), Vec::new());
    for (r, c) in codebook.chunks_exact(k * m).enumerate() {
        let c = to_f64(c);
        let g = orthogonal::grad(&c, m);
        out.extend(g.iter().enumerate().map(|(e, v)| start[r * k * m + e] as f64 + weight * v));
        let norm = |i: usize| c[i * m..(i + 1) * m].iter().map(|v| v * v).sum::<f64>().sqrt();
        for i in 0..k {
            let cos = |j: usize| {
                let d: f64 = (0..m).map(|e| c[i * m + e] * c[j * m + e]).sum();
                d / (norm(i) * norm(j)).max(1e-300)
            };
            let terms: f64 = (0..k).map(|j| cos(j).abs() + cos(j).powi(2)).sum();
            let size = weight * 4.0 / (k * k) as f64 * terms / norm(i).max(1e-30);
            let t = 64.0 * (k + m) as f64 * f32::EPSILON as f64 * (size + start[r * k * m + i * m].abs() as f64);
            tol.extend(std::iter::repeat_n(t + 1e-30, m));
        }
    }
    (out, tol)
}

/// The penalty's gradient against the f64 reference on random codebooks (K below, at and above m; several runs
/// stacked, each its own codebook), added onto an existing gradient.
#[test]
fn orthogonal_grad_matches_the_reference() {
    let gpu = gpu_or_skip!();
    for (seed, &(k, m, runs)) in
        [(1, 1, 1), (2, 3, 1), (7, 4, 2), (32, 4, 3), (64, 8, 1), (5, 64, 2), (300, 3, 1)].iter().enumerate()
    {
        let mut d = Data::new(seed as u64);
        let codebook = d.normal(runs * k * m, 0.7);
        let start = d.normal(runs * k * m, 0.01);
        for weight in [1.0f32, 10.0] {
            let got = run(&gpu, &codebook, &start, (k as u32, m as u32), runs as u32, weight);
            let (want, tol) = expected(&codebook, &start, (k, m), weight as f64);
            assert_close_each(&format!("k {k} m {m} runs {runs} weight {weight}"), &got, &want, |e| tol[e]);
        }
    }
}

/// Edge cases: orthogonal codes (the minimum: no gradient), a zero code (its gradient is 0 and nothing is NaN),
/// two equal codes, K = 1 (L = 0 for any code), and weight 0 (the gradient is left as it was, bit for bit).
#[test]
fn orthogonal_grad_edge_cases() {
    let gpu = gpu_or_skip!();
    let start = vec![0.25f32; 12];
    let orthogonal_codes = [2.0f32, 0.0, 0.0, 0.0, -3.0, 0.0, 0.0, 0.0, 0.5];
    let got = run(&gpu, &orthogonal_codes, &start[..9], (3, 3), 1, 5.0);
    assert!(got.iter().all(|&v| (v - 0.25).abs() < 1e-6), "orthogonal codes: {got:?}");
    let with_zero = [0.0f32, 0.0, 1.0, 1.0, 1.0, -1.0, 0.3, 0.0, 2.0, 0.0, 0.0, 0.0];
    let got = run(&gpu, &with_zero, &start, (4, 3), 1, 2.0);
    let (want, tol) = expected(&with_zero, &start, (4, 3), 2.0);
    assert_close_each("a zero code", &got, &want, |e| tol[e]);
    assert_eq!(&got[9..], &start[9..], "the zero code's (the last) gradient is 0");
    let equal = [1.0f32, 2.0, 1.0, 2.0, -1.0, 0.5];
    let (want, tol) = expected(&equal, &start[..6], (3, 2), 1.0);
    assert_close_each("equal codes", &run(&gpu, &equal, &start[..6], (3, 2), 1, 1.0), &want, |e| tol[e]);
    let one = run(&gpu, &[0.3f32, -0.4], &start[..2], (1, 2), 1, 3.0);
    assert!(one.iter().all(|&v| (v - 0.25).abs() < 1e-6), "K = 1: {one:?}");
    let mut d = Data::new(9);
    let codes = d.normal(40, 1.0);
    assert_eq!(run(&gpu, &codes, &[0.5; 40], (10, 4), 1, 0.0), vec![0.5; 40], "weight 0");
}

/// Bad input is an error, before anything is recorded: a weight that is NaN or negative, zero runs or sizes.
#[test]
fn orthogonal_grad_rejects_bad_input() {
    let gpu = gpu_or_skip!();
    let kernel = Orthogonal::new(&gpu.device).unwrap();
    let b = gpu.zeroed::<f32>("b", 8).unwrap();
    for (shape, runs, weight) in [((2, 4), 1, f32::NAN), ((2, 4), 1, -1.0), ((2, 4), 0, 1.0), ((0, 4), 1, 1.0)] {
        assert!(kernel.bind(&gpu.device, &b, &b, shape, runs, weight).is_err(), "{shape:?} {runs} {weight}");
    }
}
