use crate::common::{Data, assert_clean, assert_close_each, bits, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::affine::{Affine, AffineBuffers};
use vqgrad::reference::{affine, to_f64};

/// What the kernel leaves: C0's gradient, [ds, db] and C.
struct Out {
    raw_grad: Vec<f32>,
    scale_shift_grad: Vec<f32>,
    codebook: Vec<f32>,
}

/// Both entry points on `runs` stacked runs of (k, m): the gradient from `grad`, then C.
fn run(gpu: &vqgrad::Gpu, raw: &[f32], scale_shift: &[f32], grad: &[f32], (k, m): (u32, u32), a: f32) -> Out {
    let runs = (raw.len() / (k * m) as usize) as u32;
    let up = |name, v: &[f32]| gpu.upload(name, v).unwrap();
    let (rb, sb, gb) = (up("raw", raw), up("scale and shift", scale_shift), up("grad", grad));
    let (pb, cb) = (up("s, b grad", &vec![f32::NAN; scale_shift.len()]), up("codebook", &vec![f32::NAN; raw.len()]));
    let buffers = AffineBuffers { raw: &rb, scale_shift: &sb, grad: &gb, scale_shift_grad: &pb, codebook: &cb };
    let bound = Affine::new(&gpu.device).unwrap().bind(&gpu.device, &buffers, (k, m), runs, a).unwrap();
    run_pass(gpu, |pass| {
        bound.encode_grad(pass);
        bound.encode_apply(pass);
    });
    assert_clean(gpu);
    Out { raw_grad: gpu.read(&gb).unwrap(), scale_shift_grad: gpu.read(&pb).unwrap(), codebook: gpu.read(&cb).unwrap() }
}

/// The map and its gradients against the f64 reference on random inputs (K below, at and above m; runs stacked,
/// each its own codes and parameters), with a tolerance of 4 (K + 2) eps of each sum's magnitude.
#[test]
fn affine_matches_the_reference() {
    let gpu = gpu_or_skip!();
    for (seed, &(k, m, runs, a)) in
        [(1, 1, 1, 1.0f32), (3, 2, 2, 10.0), (32, 4, 3, 10.0), (8, 64, 2, 2.0), (300, 3, 1, 0.5)].iter().enumerate()
    {
        let mut d = Data::new(seed as u64 + 40);
        let (raw, scale_shift, grad) =
            (d.normal(runs * k * m, 1.0), d.normal(runs * 2 * m, 0.1), d.normal(runs * k * m, 0.01));
        let out = run(&gpu, &raw, &scale_shift, &grad, (k as u32, m as u32), a);
        let what = format!("k {k} m {m} runs {runs} a {a}");
        let (mut raw_grad, mut params_grad, mut codebook) = (Vec::new(), Vec::new(), Vec::new());
        let mut sums = Vec::new(); // each [ds, db] element's sum of magnitudes
        for r in 0..runs {
            let (c0, p, g) =
                (&raw[r * k * m..][..k * m], &scale_shift[r * 2 * m..][..2 * m], &grad[r * k * m..][..k * m]);
            let (c0, p, g) = (to_f64(c0), to_f64(p), to_f64(g));
            let (dr, dp) = affine::grad(&c0, &p, &g, m, a as f64);
            raw_grad.extend(dr);
            params_grad.extend(dp);
            codebook.extend(affine::codebook(&c0, &p, m, a as f64));
            let abs: Vec<f64> = c0.iter().map(|v| v.abs()).collect();
            let gabs: Vec<f64> = g.iter().map(|v| v.abs()).collect();
            sums.extend(affine::grad(&abs, &vec![0.0; 2 * m], &gabs, m, a as f64).1);
        }
        let eps = f32::EPSILON as f64;
        assert_close_each(&format!("{what}: dC0"), &out.raw_grad, &raw_grad, |e| 4.0 * eps * raw_grad[e].abs() + 1e-30);
        assert_close_each(&format!("{what}: [ds, db]"), &out.scale_shift_grad, &params_grad, |e| {
            4.0 * (k as f64 + 2.0) * eps * sums[e] + 1e-30
        });
        assert_close_each(&format!("{what}: C"), &out.codebook, &codebook, |e| 8.0 * eps * (codebook[e].abs() + 1.0));
    }
}

/// Edge cases: at s = b = 0 C is C0 bit for bit and C0's gradient is G; a zero gradient gives zero gradients; and a
/// scale that is not finite and > 0 is refused.
#[test]
fn affine_edges() {
    let gpu = gpu_or_skip!();
    let mut d = Data::new(9);
    let (k, m) = (5u32, 3u32);
    let (raw, grad) = (d.normal(15, 1.0), d.normal(15, 0.1));
    let out = run(&gpu, &raw, &[0.0; 6], &grad, (k, m), 10.0);
    assert_eq!(bits(&out.codebook), bits(&raw), "C = C0 at s = b = 0");
    assert_eq!(bits(&out.raw_grad), bits(&grad), "dC0 = G at s = 0");
    let out = run(&gpu, &raw, &d.normal(6, 1.0), &[0.0; 15], (k, m), 10.0);
    assert!(out.raw_grad.iter().chain(&out.scale_shift_grad).all(|&v| v == 0.0), "a zero gradient");
    let b = |n| gpu.upload("b", &vec![0.0f32; n]).unwrap();
    let (r, s, g, p, c) = (b(15), b(6), b(15), b(6), b(15));
    let buffers = AffineBuffers { raw: &r, scale_shift: &s, grad: &g, scale_shift_grad: &p, codebook: &c };
    let kernel = Affine::new(&gpu.device).unwrap();
    for a in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(kernel.bind(&gpu.device, &buffers, (k, m), 1, a).is_err(), "scale {a}");
    }
}
