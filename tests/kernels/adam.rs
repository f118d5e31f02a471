use crate::common::{Data, assert_clean, assert_close_each, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::adam::{Adam, AdamSettings};
use vqgrad::kernels::step::{StepConstants, StepUniform};
use vqgrad::reference::to_f64;
use vqgrad::reference::train::CpuAdam;

/// Adam's kernel against the f64 `CpuAdam` over 20 steps with a fresh gradient each step: every parameter and
/// both moments within 1e-5 of the largest value plus 1e-5 relative (f32 rounding of the update; the
/// normalized step is at most lr per element). Covers zero gradients (the moments decay, nothing moves), huge and
/// tiny gradients (the update saturates at lr), lengths that do not fill a workgroup, and 2-D grids past one
/// dimension's workgroups.
#[test]
fn adam_matches_the_f64_reference_over_20_steps() {
    let gpu = gpu_or_skip!();
    let step = StepUniform::new(&gpu.device, 1).unwrap();
    let adam = Adam::new(&gpu.device, &step).unwrap();
    let (lr, b1, b2, eps) = (1e-2, 0.9, 0.999, 1e-8);
    let settings = AdamSettings { beta1: b1 as f32, beta2: b2 as f32, eps: eps as f32 };
    for (seed, len) in [(1u64, 1usize), (2, 7), (3, 256), (4, 1000)] {
        let mut d = Data::new(seed + 300);
        let p0 = d.normal(len, 1.0);
        let param = gpu.upload("param", &p0).unwrap();
        let grad = gpu.zeroed::<f32>("grad", len).unwrap();
        let (m1, m2) = (gpu.zeroed::<f32>("m", len).unwrap(), gpu.zeroed::<f32>("v", len).unwrap());
        let bound = adam.bind(&gpu.device, &param, &grad, &m1, &m2, len as u32, settings).unwrap();
        let mut cpu = CpuAdam::new(len, b1, b2, eps);
        let mut p = to_f64(&p0);
        for t in 1..=20u64 {
            let mut g = d.normal(len, 1.0);
            g[0] = match t % 4 {
                0 => 0.0,
                1 => 1e6,
                2 => 1e-20,
                _ => g[0],
            };
            gpu.queue.write_buffer(&grad, 0, bytemuck::cast_slice(&g));
            step.write(&gpu.queue, &[StepConstants::adam(t, lr, b1, b2, 0)]).unwrap();
            run_pass(&gpu, |pass| bound.encode(pass, &step, 0));
            cpu.update(&mut p, &to_f64(&g), lr, t);
        }
        let what = format!("len {len}");
        fn tol(cpu: &[f64]) -> impl Fn(usize) -> f64 + '_ {
            let scale = cpu.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            move |i| 1e-5 * scale + 1e-5 * cpu[i].abs()
        }
        let got: Vec<f32> = gpu.read(&param).unwrap();
        assert_close_each(&format!("{what}: parameters"), &got, &p, tol(&p));
        let got: Vec<f32> = gpu.read(&m1).unwrap();
        assert_close_each(&format!("{what}: first moment"), &got, &cpu.m, tol(&cpu.m));
        let got: Vec<f32> = gpu.read(&m2).unwrap();
        assert_close_each(&format!("{what}: second moment"), &got, &cpu.v, tol(&cpu.v));
        assert!(p.iter().zip(&p0).any(|(a, &b)| *a != b as f64), "{what}: nothing moved");
    }
    assert_clean(&gpu);
}
