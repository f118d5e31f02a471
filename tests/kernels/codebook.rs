use crate::common::{Data, assert_clean, assert_close_each, bits, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::codebook::{
    Codebook, CodebookShape, CountBuffers, EmaBuffers, EmaSettings, GradBuffers, ema_initial_state,
};
use vqgrad::{Error, Gpu, reference};

fn counts_on_gpu(gpu: &Gpu, kernel: &Codebook, index: &[u32], k: usize) -> Vec<u32> {
    let ib = gpu.upload("index", index).unwrap();
    // Stale values must be cleared by the kernel.
    let cb = gpu.upload("counts", &vec![7u32; k]).unwrap();
    let bound = kernel
        .bind_counts(&gpu.device, &CountBuffers { index: &ib, counts: &cb }, index.len() as u32, k as u32)
        .unwrap();
    run_pass(gpu, |pass| bound.encode(pass));
    gpu.read::<u32>(&cb).unwrap()[..k].to_vec()
}

#[test]
fn counts_are_exact() {
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    for (seed, &(n, k)) in [(1, 1), (5, 1), (1000, 16), (70000, 4096), (300, 3)].iter().enumerate() {
        let index = Data::new(seed as u64).indices(n, k as u32);
        assert_eq!(counts_on_gpu(&gpu, &kernel, &index, k), reference::counts(&index, k), "n={n} k={k}");
    }
    // Collapse: every row on one code.
    let index = vec![2u32; 5000];
    assert_eq!(counts_on_gpu(&gpu, &kernel, &index, 5), vec![0, 0, 5000, 0, 0]);
}

struct GradRun {
    grad: Vec<f32>,
}

fn grad_on_gpu(
    gpu: &Gpu,
    kernel: &Codebook,
    z: &[f32],
    index: &[u32],
    codebook: &[f32],
    m: usize,
    batch: usize,
) -> GradRun {
    let (n, k) = (index.len(), codebook.len() / m);
    let zb = gpu.upload("z", z).unwrap();
    let ib = gpu.upload("index", index).unwrap();
    let cb = gpu.upload("codebook", codebook).unwrap();
    let gb = gpu.upload("grad", &vec![f32::NAN; k * m]).unwrap();
    let shape = CodebookShape { n: n as u32, k: k as u32, m: m as u32 };
    let bound = kernel
        .bind_grad(&gpu.device, &GradBuffers { z: &zb, index: &ib, codebook: &cb, grad: &gb }, shape, batch as u32)
        .unwrap();
    run_pass(gpu, |pass| bound.encode(pass));
    GradRun { grad: gpu.read::<f32>(&gb).unwrap()[..k * m].to_vec() }
}

/// The kernel's documented order: each code's rows in increasing row order, summed in f32, then scaled.
fn sequential_f32_grad(z: &[f32], index: &[u32], codebook: &[f32], m: usize, batch: usize) -> Vec<f32> {
    let scale = (-2.0 / (batch as f64 * m as f64)) as f32;
    let mut acc = vec![0.0f32; codebook.len()];
    for (i, &a) in index.iter().enumerate() {
        for j in 0..m {
            acc[a as usize * m + j] += z[i * m + j] - codebook[a as usize * m + j];
        }
    }
    acc.iter().map(|&s| scale * s).collect()
}

/// Tolerance per element: 2 (n_k + 2) eps_f32 times 2/(B m) sum |c - z|, a bound on a sequential f32 sum.
fn check_grad(what: &str, z: &[f32], index: &[u32], codebook: &[f32], m: usize, batch: usize, gpu_grad: &[f32]) {
    let cpu = reference::codebook_grad(z, index, codebook, m, batch);
    let k = codebook.len() / m;
    let n_k = reference::counts(index, k);
    let mut abs_sum = vec![0.0f64; codebook.len()];
    for (i, &a) in index.iter().enumerate() {
        for j in 0..m {
            abs_sum[a as usize * m + j] +=
                2.0 / (batch as f64 * m as f64) * (codebook[a as usize * m + j] as f64 - z[i * m + j] as f64).abs();
        }
    }
    let eps = f32::EPSILON as f64;
    assert_close_each(what, gpu_grad, &cpu, |e| 2.0 * (n_k[e / m] as f64 + 2.0) * eps * abs_sum[e] + 1e-30);
}

#[test]
fn gradient_matches_the_reference_and_the_sequential_order() {
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    // (n, k, m, scale): k m <= 1024 takes segment_sums_small, larger the tiled kernel; one code; several code
    // tiles (2048 / m codes per workgroup); two dimension tiles
    // (m > 256); many chunks of 256 rows; m not a multiple of 4; magnitudes 1e4 and 1e-6.
    let cases = [
        (5, 1, 1, 1.0),
        (1000, 16, 8, 1.0),
        (300, 4096, 4, 1.0),
        (2000, 3, 256, 1.0),
        (50, 10, 300, 1.0),
        (777, 700, 3, 1.0),
        (1, 5, 2, 1.0),
        (400, 50, 64, 1.0),
        (500, 20, 64, 1e4),
        (500, 20, 5, 1e-6),
    ];
    for (seed, &(n, k, m, scale)) in cases.iter().enumerate() {
        let mut d = Data::new(seed as u64 + 100);
        let z = d.normal(n * m, scale);
        let codebook = d.normal(k * m, scale);
        let index = d.indices(n, k as u32);
        let batch = n;
        let out = grad_on_gpu(&gpu, &kernel, &z, &index, &codebook, m, batch);
        let what = format!("n={n} k={k} m={m} scale={scale}");
        check_grad(&what, &z, &index, &codebook, m, batch, &out.grad);
        let expected = sequential_f32_grad(&z, &index, &codebook, m, batch);
        assert_eq!(bits(&out.grad), bits(&expected), "{what}: not the sequential f32 sum");
        // Dead codes get exactly zero gradient.
        let n_k = reference::counts(&index, k);
        for c in (0..k).filter(|&c| n_k[c] == 0) {
            assert!(out.grad[c * m..(c + 1) * m].iter().all(|&g| g == 0.0), "{what}: dead code {c}");
        }
    }
}

#[test]
fn gradient_of_a_collapsed_codebook_is_deterministic() {
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    let (n, k, m) = (5000, 64, 4);
    let mut d = Data::new(8);
    let z = d.normal(n * m, 1.0);
    let codebook = d.normal(k * m, 1.0);
    let index = vec![17u32; n];
    let a = grad_on_gpu(&gpu, &kernel, &z, &index, &codebook, m, 256);
    let b = grad_on_gpu(&gpu, &kernel, &z, &index, &codebook, m, 256);
    assert_eq!(bits(&a.grad), bits(&b.grad), "two runs differ");
    check_grad("collapsed", &z, &index, &codebook, m, 256, &a.grad);
}

#[test]
fn ema_steps_match_the_reference() {
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    for &(n, k, m) in &[(256, 32, 4), (300, 5, 7), (64, 1, 3), (1000, 600, 8)] {
        let mut d = Data::new(n as u64);
        let mut codebook = d.normal(k * m, 0.1);
        let (size, sum) = ema_initial_state(&codebook, k);
        let cb = gpu.upload("codebook", &codebook).unwrap();
        let sizes = gpu.upload("ema_size", &size).unwrap();
        let sums = gpu.upload("ema_sum", &sum).unwrap();
        let counts = gpu.zeroed::<u32>("counts", k).unwrap();
        let zb = gpu.zeroed::<f32>("z", n * m).unwrap();
        let ib = gpu.zeroed::<u32>("index", n).unwrap();
        let shape = CodebookShape { n: n as u32, k: k as u32, m: m as u32 };
        let buffers =
            EmaBuffers { z: &zb, index: &ib, codebook: &cb, counts: &counts, ema_size: &sizes, ema_sum: &sums };
        let bound = kernel.bind_ema(&gpu.device, &buffers, shape, EmaSettings::default()).unwrap();
        let mut state = reference::EmaState::new(&codebook, k);
        for step in 0..5 {
            // A new batch each step, assigned to the current codebook (half the codes may stay unused).
            let z = d.normal(n * m, 1.0);
            let index = d.indices(n, (k as u32).div_ceil(2));
            gpu.queue.write_buffer(&zb, 0, bytemuck::cast_slice(&z));
            gpu.queue.write_buffer(&ib, 0, bytemuck::cast_slice(&index));
            run_pass(&gpu, |pass| bound.encode(pass));
            let cpu_counts = reference::ema_update(&mut state, &mut codebook, &z, &index, m, EmaSettings::default());
            let what = format!("n={n} k={k} m={m} step {step}");
            assert_eq!(gpu.read::<u32>(&counts).unwrap()[..k], cpu_counts[..], "{what}: counts");
            let to64 = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
            // Relative 1e-5: each value is a few f32 operations on f32 state, plus the n-term sum of N_k.
            let rel = |x: &[f32]| {
                let x = x.to_vec();
                move |e: usize| 1e-5 * (x[e].abs() as f64 + 1e-3)
            };
            assert_close_each(
                &format!("{what}: N_k"),
                &gpu.read::<f32>(&sizes).unwrap()[..k],
                &to64(&state.size),
                rel(&state.size),
            );
            assert_close_each(
                &format!("{what}: M_k"),
                &gpu.read::<f32>(&sums).unwrap()[..k * m],
                &to64(&state.sum),
                rel(&state.sum),
            );
            assert_close_each(
                &format!("{what}: codebook"),
                &gpu.read::<f32>(&cb).unwrap()[..k * m],
                &to64(&codebook),
                rel(&codebook),
            );
            // Keep the GPU state as the reference's, so each step is compared from the same start.
            gpu.queue.write_buffer(&sizes, 0, bytemuck::cast_slice(&state.size));
            gpu.queue.write_buffer(&sums, 0, bytemuck::cast_slice(&state.sum));
            gpu.queue.write_buffer(&cb, 0, bytemuck::cast_slice(&codebook));
        }
    }
    assert_clean(&gpu);
}

#[test]
fn bad_ema_settings_and_shapes_are_errors() {
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    let b = gpu.zeroed::<f32>("b", 64).unwrap();
    let buffers = EmaBuffers { z: &b, index: &b, codebook: &b, counts: &b, ema_size: &b, ema_sum: &b };
    let shape = CodebookShape { n: 4, k: 4, m: 2 };
    for s in [
        EmaSettings { decay: 1.5, eps: 1e-5 },
        EmaSettings { decay: f32::NAN, eps: 1e-5 },
        EmaSettings { decay: 0.99, eps: 0.0 },
    ] {
        assert!(matches!(kernel.bind_ema(&gpu.device, &buffers, shape, s), Err(Error::Input(_))), "{s:?}");
    }
    let grad = GradBuffers { z: &b, index: &b, codebook: &b, grad: &b };
    assert!(matches!(
        kernel.bind_grad(&gpu.device, &grad, CodebookShape { n: 4, k: 4, m: 2 }, 0),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        kernel.bind_grad(&gpu.device, &grad, CodebookShape { n: 4, k: 40, m: 2 }, 4),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(matches!(
        kernel.bind_counts(&gpu.device, &CountBuffers { index: &b, counts: &b }, 0, 4),
        Err(Error::Shape(_))
    ));
    assert_clean(&gpu);
}

#[test]
fn ema_updates_are_bit_identical_run_to_run() {
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    let (n, k, m) = (700, 50, 6);
    let mut d = Data::new(31);
    let codebook = d.normal(k * m, 0.5);
    let z = d.normal(n * m, 1.0);
    let index = d.indices(n, k as u32);
    let (size0, sum0) = ema_initial_state(&codebook, k);
    let run = || {
        let cb = gpu.upload("codebook", &codebook).unwrap();
        let size = gpu.upload("ema_size", &size0).unwrap();
        let sum = gpu.upload("ema_sum", &sum0).unwrap();
        let counts = gpu.zeroed::<u32>("counts", k).unwrap();
        let zb = gpu.upload("z", &z).unwrap();
        let ib = gpu.upload("index", &index).unwrap();
        let buffers = EmaBuffers { z: &zb, index: &ib, codebook: &cb, counts: &counts, ema_size: &size, ema_sum: &sum };
        let shape = CodebookShape { n: n as u32, k: k as u32, m: m as u32 };
        let bound = kernel.bind_ema(&gpu.device, &buffers, shape, EmaSettings::default()).unwrap();
        for _ in 0..3 {
            run_pass(&gpu, |pass| bound.encode(pass));
        }
        (
            bits(&gpu.read::<f32>(&cb).unwrap()),
            bits(&gpu.read::<f32>(&size).unwrap()),
            bits(&gpu.read::<f32>(&sum).unwrap()),
        )
    };
    assert_eq!(run(), run(), "two runs of three EMA steps differ");
}

/// Runs stacked in one dispatch give each run the bits it gives alone, on both paths (k m <= 1024 and larger).
#[test]
fn batched_gradients_equal_single_runs_bit_for_bit() {
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    for &(n, k, m, runs) in &[(5, 1, 1, 2), (300, 32, 4, 3), (700, 40, 64, 2), (50, 10, 300, 2)] {
        let mut d = Data::new((n * k + m) as u64);
        let z = d.normal(runs * n * m, 1.0);
        let codebook = d.normal(runs * k * m, 1.0);
        let index = d.indices(runs * n, k as u32);
        let (zb, ib, cb) = (
            gpu.upload("z", &z).unwrap(),
            gpu.upload("index", &index).unwrap(),
            gpu.upload("codebook", &codebook).unwrap(),
        );
        let gb = gpu.upload("grad", &vec![f32::NAN; runs * k * m]).unwrap();
        let shape = CodebookShape { n: n as u32, k: k as u32, m: m as u32 };
        let buffers = GradBuffers { z: &zb, index: &ib, codebook: &cb, grad: &gb };
        let bound = kernel.bind_grad_runs(&gpu.device, &buffers, shape, n as u32, runs as u32).unwrap();
        run_pass(&gpu, |pass| bound.encode(pass));
        let together: Vec<f32> = gpu.read(&gb).unwrap();
        for r in 0..runs {
            let alone = grad_on_gpu(
                &gpu,
                &kernel,
                &z[r * n * m..(r + 1) * n * m],
                &index[r * n..(r + 1) * n],
                &codebook[r * k * m..(r + 1) * k * m],
                m,
                n,
            );
            assert_eq!(bits(&together[r * k * m..(r + 1) * k * m]), bits(&alone.grad), "n={n} k={k} m={m} run {r}");
        }
    }
    assert_clean(&gpu);
}

/// Three EMA steps of runs stacked in one pass end where each run ends alone: codebook, N and M bit for bit.
#[test]
fn batched_ema_updates_equal_single_runs_bit_for_bit() {
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    for &(n, k, m, runs) in &[(300, 32, 4, 3), (700, 50, 6, 2), (100, 40, 64, 2)] {
        let mut d = Data::new((n + k + m) as u64);
        let codebook = d.normal(runs * k * m, 0.5);
        let z = d.normal(runs * n * m, 1.0);
        let index = d.indices(runs * n, k as u32);
        // Each run's initial N and M, from its own codebook.
        let (mut size0, mut sum0) = (Vec::new(), Vec::new());
        for r in 0..runs {
            let (size, sum) = ema_initial_state(&codebook[r * k * m..(r + 1) * k * m], k);
            size0.extend(size);
            sum0.extend(sum);
        }
        let steps = |runs_here: usize, cb: &[f32], z: &[f32], index: &[u32], size0: &[f32], sum0: &[f32]| {
            let cbb = gpu.upload("codebook", cb).unwrap();
            let size = gpu.upload("ema_size", size0).unwrap();
            let sum = gpu.upload("ema_sum", sum0).unwrap();
            let counts = gpu.zeroed::<u32>("counts", runs_here * k).unwrap();
            let (zb, ib) = (gpu.upload("z", z).unwrap(), gpu.upload("index", index).unwrap());
            let buffers =
                EmaBuffers { z: &zb, index: &ib, codebook: &cbb, counts: &counts, ema_size: &size, ema_sum: &sum };
            let shape = CodebookShape { n: n as u32, k: k as u32, m: m as u32 };
            let bound =
                kernel.bind_ema_runs(&gpu.device, &buffers, shape, EmaSettings::default(), runs_here as u32).unwrap();
            for _ in 0..3 {
                run_pass(&gpu, |pass| bound.encode(pass));
            }
            [&cbb, &size, &sum].map(|b| gpu.read::<f32>(b).unwrap())
        };
        let together = steps(runs, &codebook, &z, &index, &size0, &sum0);
        for r in 0..runs {
            let (codes, rows) = (r * k * m..(r + 1) * k * m, r * n..(r + 1) * n);
            let alone = steps(
                1,
                &codebook[codes.clone()],
                &z[r * n * m..(r + 1) * n * m],
                &index[rows],
                &size0[r * k..(r + 1) * k],
                &sum0[codes.clone()],
            );
            let what = format!("n={n} k={k} m={m} run {r} of {runs}");
            assert_eq!(bits(&together[0][codes.clone()]), bits(&alone[0]), "{what}: codebook");
            assert_eq!(bits(&together[1][r * k..(r + 1) * k]), bits(&alone[1]), "{what}: N");
            assert_eq!(bits(&together[2][codes]), bits(&alone[2]), "{what}: M");
        }
    }
    assert_clean(&gpu);
}

/// The dead-code reset of runs stacked in one dispatch, each with its own seed, against the oracle: a code with no
/// count since the last reset takes row `reset_row(seed, step, code, n)` of its own run's batch (and, with EMA,
/// N_k = 1 and M_k = that row); used codes keep their values; every mark is cleared. The counts mark two steps'
/// use (mark, then a second mark) before the reset, so a code used only in the first step survives.
#[test]
fn batched_dead_code_resets_follow_each_runs_seed() {
    use vqgrad::kernels::codebook::{ResetBuffers, reset_row, seed_mix};
    use vqgrad::kernels::step::{StepConstants, StepUniform};
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    for &(n, k, m, runs, ema) in &[(40, 12, 3, 3, false), (7, 300, 5, 2, true), (1, 1, 1, 1, false)] {
        let mut d = Data::new((n * k + m) as u64);
        let z = d.normal(runs * n * m, 1.0);
        let codebook = d.normal(runs * k * m, 1.0);
        // Two steps' counts: roughly a third of the codes used in each.
        let first: Vec<u32> = d.indices(runs * k, 3).iter().map(|&c| (c == 0) as u32).collect();
        let second: Vec<u32> = d.indices(runs * k, 3).iter().map(|&c| (c == 0) as u32).collect();
        let seeds: Vec<u64> = (0..runs as u64).map(|r| 1000 + 7 * r).collect();
        let step_t = 30u64;
        let (zb, cb) = (gpu.upload("z", &z).unwrap(), gpu.upload("codebook", &codebook).unwrap());
        let counts = gpu.upload("counts", &first).unwrap();
        let size = gpu.upload("ema_size", &vec![5.0f32; runs * k]).unwrap();
        let sum = gpu.upload("ema_sum", &codebook).unwrap();
        let step = StepUniform::new(&gpu.device, 1).unwrap();
        step.write(&gpu.queue, &[StepConstants::adam(step_t, 1e-3, 0.9, 0.999, 0)]).unwrap();
        let buffers = ResetBuffers { z: &zb, codebook: &cb, counts: &counts, ema: ema.then_some((&size, &sum)) };
        let shape = CodebookShape { n: n as u32, k: k as u32, m: m as u32 };
        let mixes: Vec<u32> = seeds.iter().map(|&s| seed_mix(s)).collect();
        let bound = kernel.bind_reset_runs(&gpu.device, &buffers, shape, &mixes, &step).unwrap();
        run_pass(&gpu, |pass| bound.encode_mark(pass));
        gpu.queue.write_buffer(&counts, 0, bytemuck::cast_slice(&second));
        run_pass(&gpu, |pass| {
            bound.encode_mark(pass);
            bound.encode_reset(pass, &step, 0);
        });
        let got = gpu.read::<f32>(&cb).unwrap();
        let (got_size, got_sum) = (gpu.read::<f32>(&size).unwrap(), gpu.read::<f32>(&sum).unwrap());
        let mut resets = 0;
        for r in 0..runs {
            for code in 0..k {
                let c = r * k + code;
                let want: &[f32] = if first[c] + second[c] > 0 {
                    &codebook[c * m..(c + 1) * m]
                } else {
                    resets += 1;
                    let row = reset_row(seeds[r], step_t, code as u32, n as u32) as usize;
                    &z[(r * n + row) * m..(r * n + row + 1) * m]
                };
                let what = format!("n={n} k={k} m={m} run {r} code {code}");
                assert_eq!(bits(&got[c * m..(c + 1) * m]), bits(want), "{what}: codebook");
                if ema {
                    let reset = first[c] + second[c] == 0;
                    assert_eq!(got_size[c], if reset { 1.0 } else { 5.0 }, "{what}: N");
                    assert_eq!(bits(&got_sum[c * m..(c + 1) * m]), bits(want), "{what}: M");
                }
            }
        }
        assert!(resets > 0 || k == 1, "n={n} k={k}: the data reset no code");
        // The reset cleared every mark: with no use since, the next reset (step 31) replaces every code.
        gpu.queue.write_buffer(&counts, 0, bytemuck::cast_slice(&vec![0u32; runs * k]));
        step.write(&gpu.queue, &[StepConstants::adam(step_t + 1, 1e-3, 0.9, 0.999, 0)]).unwrap();
        run_pass(&gpu, |pass| {
            bound.encode_mark(pass);
            bound.encode_reset(pass, &step, 0);
        });
        let got = gpu.read::<f32>(&cb).unwrap();
        for r in 0..runs {
            for code in 0..k {
                let row = reset_row(seeds[r], step_t + 1, code as u32, n as u32) as usize;
                let c = r * k + code;
                assert_eq!(bits(&got[c * m..(c + 1) * m]), bits(&z[(r * n + row) * m..(r * n + row + 1) * m]));
            }
        }
    }
    // One seed per run; no runs is an error.
    let one = gpu.zeroed::<f32>("one", 1).unwrap();
    let one_u = gpu.zeroed::<u32>("one u32", 1).unwrap();
    let step = StepUniform::new(&gpu.device, 1).unwrap();
    let buffers = ResetBuffers { z: &one, codebook: &one, counts: &one_u, ema: None };
    let shape = CodebookShape { n: 1, k: 1, m: 1 };
    assert!(matches!(kernel.bind_reset_runs(&gpu.device, &buffers, shape, &[], &step), Err(Error::Shape(_))));
    assert_clean(&gpu);
}

/// The synchronized update's per-code sums `scale sum_{i : a_i = k} g_i` (docs/PROTOCOL.md §6.6) against an f64
/// loop, on both kernels (small and tiled), with stacked runs, dead codes and a collapse; a finite scale only.
#[test]
fn row_sums_match_the_reference() {
    let gpu = gpu_or_skip!();
    let kernel = Codebook::new(&gpu.device).unwrap();
    for &(n, k, m, runs, collapsed) in
        &[(5, 1, 1, 1, false), (300, 32, 4, 3, false), (700, 40, 64, 2, false), (64, 8, 3, 2, true)]
    {
        let mut d = Data::new((n * k + m) as u64 + 7);
        let rows = d.normal(runs * n * m, 1e-3);
        let codebook = d.normal(runs * k * m, 1.0);
        let index = if collapsed { vec![5u32; runs * n] } else { d.indices(runs * n, k as u32) };
        let (rb, ib, cb) = (
            gpu.upload("rows", &rows).unwrap(),
            gpu.upload("index", &index).unwrap(),
            gpu.upload("codebook", &codebook).unwrap(),
        );
        let out = gpu.upload("sums", &vec![f32::NAN; runs * k * m]).unwrap();
        let shape = CodebookShape { n: n as u32, k: k as u32, m: m as u32 };
        let buffers = GradBuffers { z: &rb, index: &ib, codebook: &cb, grad: &out };
        let scale = 0.3f32;
        let bound = kernel.bind_row_sums_runs(&gpu.device, &buffers, shape, scale, runs as u32).unwrap();
        run_pass(&gpu, |pass| bound.encode(pass));
        let got: Vec<f32> = gpu.read(&out).unwrap();
        let (mut expected, mut abs) = (vec![0.0f64; runs * k * m], vec![0.0f64; runs * k * m]);
        for (i, &a) in index.iter().enumerate() {
            let (r, a) = (i / n, a as usize);
            for j in 0..m {
                let e = (r * k + a) * m + j;
                expected[e] += scale as f64 * rows[i * m + j] as f64;
                abs[e] += (scale as f64 * rows[i * m + j] as f64).abs();
            }
        }
        let what = format!("n={n} k={k} m={m} runs {runs}");
        let eps = f32::EPSILON as f64;
        assert_close_each(&what, &got[..runs * k * m], &expected, |e| 2.0 * (n as f64 + 2.0) * eps * abs[e] + 1e-30);
        let nan = kernel.bind_row_sums_runs(&gpu.device, &buffers, shape, f32::NAN, runs as u32);
        assert!(matches!(nan, Err(Error::Input(_))), "{what}: a NaN scale");
    }
    assert_clean(&gpu);
}
