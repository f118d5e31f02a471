use crate::common::{Data, assert_clean, assert_close_each, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::sgd::Sgd;

/// Five steps of SGD with momentum (PyTorch's semantics: `v <- mu v + g`, `p <- p - lr v`) against an f64 loop, on
/// lengths around the workgroup (1, 255, 257, 70000), with momentum 0 and 0.9; the velocity carries over steps.
#[test]
fn sgd_matches_the_reference_over_steps() {
    let gpu = gpu_or_skip!();
    let kernel = Sgd::new(&gpu.device).unwrap();
    for (seed, &len) in [1usize, 255, 257, 70000].iter().enumerate() {
        for (lr, momentum) in [(1.0f32, 0.9f32), (0.05, 0.0)] {
            let mut d = Data::new(seed as u64 + 60);
            let (p0, g) = (d.normal(len, 1.0), d.normal(len, 0.1));
            let (pb, gb) = (gpu.upload("p", &p0).unwrap(), gpu.upload("g", &g).unwrap());
            let vb = gpu.upload("v", &vec![0.0f32; len]).unwrap();
            let bound = kernel.bind(&gpu.device, &pb, &gb, &vb, len as u32, lr, momentum).unwrap();
            let (mut p, mut v) = (p0.iter().map(|&x| x as f64).collect::<Vec<_>>(), vec![0.0f64; len]);
            for _ in 0..5 {
                run_pass(&gpu, |pass| bound.encode(pass));
                for e in 0..len {
                    v[e] = momentum as f64 * v[e] + g[e] as f64;
                    p[e] -= lr as f64 * v[e];
                }
            }
            let got: Vec<f32> = gpu.read(&pb).unwrap();
            let what = format!("len {len} lr {lr} momentum {momentum}");
            assert_close_each(&what, &got[..len], &p, |e| 64.0 * f32::EPSILON as f64 * (p[e].abs() + 1.0));
        }
    }
    assert_clean(&gpu);
}

/// A rate that is not finite and > 0, or a momentum outside [0, 1), is refused.
#[test]
fn bad_sgd_settings_are_errors() {
    let gpu = gpu_or_skip!();
    let kernel = Sgd::new(&gpu.device).unwrap();
    let b = gpu.upload("b", &[0.0f32; 4]).unwrap();
    for (lr, momentum) in [(0.0, 0.9), (f32::NAN, 0.9), (1.0, 1.0), (1.0, -0.1), (f32::INFINITY, 0.0)] {
        assert!(kernel.bind(&gpu.device, &b, &b, &b, 4, lr, momentum).is_err(), "lr {lr} momentum {momentum}");
    }
}
