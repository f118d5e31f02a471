use crate::common::{Data, assert_clean, assert_close_each, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::latent::{Latent, LatentBuffers};
use vqgrad::reference::{latent, to_f64};

/// Runs FSQ's bound (forward, or backward with `dy`) over `z` with `levels`; returns the output.
fn run(gpu: &vqgrad::Gpu, z: &[f32], dy: Option<&[f32]>, levels: &[u32]) -> Vec<f32> {
    let (zb, out) = (gpu.upload("z", z).unwrap(), gpu.upload("out", &vec![f32::NAN; z.len()]).unwrap());
    let dyb = dy.map(|d| gpu.upload("dy", d).unwrap());
    let buffers = LatentBuffers { z: &zb, out: &out, dy: dyb.as_ref() };
    let bound = Latent::new(&gpu.device).unwrap().bind_fsq(&gpu.device, &buffers, levels, z.len() as u32).unwrap();
    run_pass(gpu, |pass| bound.encode(pass));
    assert_clean(gpu);
    gpu.read(&out).unwrap()
}

/// FSQ's bound and its backward against the f64 reference, for odd and even levels (2 included, where the shift is
/// largest) and inputs from 0 to far in tanh's tails, over rows of m; within 16 eps of the output's scale.
#[test]
fn fsq_bound_matches_the_reference() {
    let gpu = gpu_or_skip!();
    for (seed, levels) in
        [vec![2u32], vec![4, 2, 2, 2], vec![8, 5, 5, 5], vec![3, 7], vec![65536, 2]].iter().enumerate()
    {
        let mut d = Data::new(seed as u64 + 80);
        let rows = 300;
        let mut z = d.normal(rows * levels.len(), 1.5);
        z[0] = 0.0;
        let last = z.len() - 1;
        z[last] = 40.0;
        let dy = d.normal(z.len(), 0.1);
        let what = format!("levels {levels:?}");
        let forward = latent::fsq_bound(&to_f64(&z), levels);
        let got = run(&gpu, &z, None, levels);
        assert_close_each(&format!("{what} forward"), &got, &forward, |_| 16.0 * f32::EPSILON as f64 * 2.0);
        let backward = latent::fsq_bound_backward(&to_f64(&z), levels, &to_f64(&dy));
        let got = run(&gpu, &z, Some(&dy), levels);
        assert_close_each(&format!("{what} backward"), &got, &backward, |e| {
            let (h, _, _, w) = latent::fsq_constants(levels[e % levels.len()]);
            64.0 * f32::EPSILON as f64 * (dy[e].abs() as f64 * h / w) + 1e-30
        });
    }
}

/// Levels outside 2 to 65536, and a length that is not rows of m, are refused.
#[test]
fn bad_fsq_levels_are_errors() {
    let gpu = gpu_or_skip!();
    let kernel = Latent::new(&gpu.device).unwrap();
    let b = gpu.upload("b", &[0.0f32; 6]).unwrap();
    let buffers = LatentBuffers { z: &b, out: &b, dy: None };
    for (levels, len) in [(vec![1u32, 2], 6), (vec![2, 65537], 6), (vec![2, 2, 2, 2], 6)] {
        assert!(kernel.bind_fsq(&gpu.device, &buffers, &levels, len).is_err(), "{levels:?} over {len}");
    }
}

/// Cosine codes' unit rows and their backward against the f64 reference, with a zero row (0 out, and the floor's
/// gradient), a tiny row and a large one, over m of 1, 3, 4 and 64.
#[test]
fn unit_rows_match_the_reference() {
    let gpu = gpu_or_skip!();
    for (seed, &m) in [1usize, 3, 4, 64].iter().enumerate() {
        let mut d = Data::new(seed as u64 + 90);
        let rows = 200;
        let mut z = d.normal(rows * m, 1.0);
        z[..m].fill(0.0);
        z[m..2 * m].iter_mut().for_each(|v| *v *= 1e-6);
        z[2 * m..3 * m].iter_mut().for_each(|v| *v *= 1e6);
        let dy = d.normal(z.len(), 0.1);
        let kernel = Latent::new(&gpu.device).unwrap();
        let run = |dy: Option<&[f32]>| {
            let (zb, out) = (gpu.upload("z", &z).unwrap(), gpu.upload("out", &vec![f32::NAN; z.len()]).unwrap());
            let dyb = dy.map(|v| gpu.upload("dy", v).unwrap());
            let buffers = LatentBuffers { z: &zb, out: &out, dy: dyb.as_ref() };
            let bound = kernel.bind_unit(&gpu.device, &buffers, m as u32, z.len() as u32).unwrap();
            run_pass(&gpu, |pass| bound.encode(pass));
            gpu.read::<f32>(&out).unwrap()
        };
        let (zf, dyf) = (to_f64(&z), to_f64(&dy));
        let eps = f32::EPSILON as f64;
        let forward = latent::unit(&zf, m);
        assert_close_each(&format!("m {m} forward"), &run(None), &forward, |_| 8.0 * (m as f64 + 2.0) * eps);
        let backward = latent::unit_backward(&zf, &dyf, m);
        let got = run(Some(&dy));
        assert_close_each(&format!("m {m} backward"), &got, &backward, |e| {
            let row = &zf[e / m * m..(e / m + 1) * m];
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(latent::UNIT_EPS);
            let scale: f64 = dyf[e / m * m..(e / m + 1) * m].iter().map(|v| v.abs()).sum::<f64>() / norm;
            16.0 * (m as f64 + 2.0) * eps * scale + 1e-30
        });
        assert!(got[..m].iter().all(|v| v.is_finite()), "m {m}: the zero row's gradient is finite");
    }
    assert_clean(&gpu);
}
