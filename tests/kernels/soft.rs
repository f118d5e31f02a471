use crate::common::{Data, assert_clean, assert_close_each, bits};
use crate::gpu_or_skip;
use vqgrad::kernels::soft::{Soft, SoftBackwardBuffers, SoftForwardBuffers, SoftRun, SoftSampleBuffers, SoftShape};
use vqgrad::kernels::step::{StepConstants, StepUniform};
use vqgrad::reference::soft::{self, Noise};
use vqgrad::reference::to_f64;
use vqgrad::{Error, Gpu};

#[derive(Clone)]
struct Case {
    z: Vec<f32>,
    codebook: Vec<f32>,
    g: Vec<f32>,
    n: usize,
    k: usize,
    m: usize,
    runs: usize,
}

impl Case {
    /// `runs` runs stacked, each n rows against its own k codes.
    fn random(seed: u64, runs: usize, n: usize, k: usize, m: usize) -> Case {
        let mut d = Data::new(seed);
        Case {
            z: d.normal(runs * n * m, 1.0),
            codebook: d.normal(runs * k * m, 1.0),
            g: d.normal(runs * n * m, 1.0),
            n,
            k,
            m,
            runs,
        }
    }
    fn shape(&self) -> SoftShape {
        SoftShape { n: self.n as u32, k: self.k as u32, m: self.m as u32 }
    }
    fn z_row(&self, run: usize, i: usize) -> Vec<f64> {
        let at = (run * self.n + i) * self.m;
        to_f64(&self.z[at..at + self.m])
    }
    fn g_row(&self, run: usize, i: usize) -> Vec<f64> {
        let at = (run * self.n + i) * self.m;
        to_f64(&self.g[at..at + self.m])
    }
    fn codes(&self, run: usize) -> Vec<f64> {
        to_f64(&self.codebook[run * self.k * self.m..(run + 1) * self.k * self.m])
    }
}

const STEP: u32 = 9;

fn noise(run: &SoftRun, i: usize) -> Option<Noise> {
    run.noise_seed.map(|seed| Noise { seed, step: STEP, row: i as u32 })
}

fn step_uniform(gpu: &Gpu, tau: f32) -> StepUniform {
    let step = StepUniform::new(&gpu.device, 1).unwrap();
    let mut constants = StepConstants::default().with_tau(tau);
    constants.step = STEP;
    step.write(&gpu.queue, &[constants]).unwrap();
    step
}

/// Runs the three kernels on `case` and returns (index, dist, q of the sample; the relaxed q; grad_z). The index
/// buffer starts at 0 and q at -7 so that inactive runs show they were left alone.
/// What the three kernels wrote: the sample's index, distance and q; the relaxed q; grad_z.
type Outputs = (Vec<u32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn run_all(gpu: &Gpu, case: &Case, tau: f32, runs: &[SoftRun]) -> Outputs {
    let step = step_uniform(gpu, tau);
    let soft = Soft::new(&gpu.device, &step).unwrap();
    let rows = case.runs * case.n;
    let z = gpu.upload("z", &case.z).unwrap();
    let codebook = gpu.upload("codebook", &case.codebook).unwrap();
    let g = gpu.upload("g", &case.g).unwrap();
    let index = gpu.zeroed::<u32>("index", rows).unwrap();
    let dist = gpu.zeroed::<f32>("dist", rows).unwrap();
    let q = gpu.upload("q", &vec![-7.0f32; rows * case.m]).unwrap();
    let relaxed = gpu.zeroed::<f32>("relaxed", rows * case.m).unwrap();
    let grad_z = gpu.upload("grad_z", &vec![-7.0f32; rows * case.m]).unwrap();
    let sample = soft
        .bind_sample(
            &gpu.device,
            &SoftSampleBuffers { z: &z, codebook: &codebook, index: &index, distance: &dist, q: &q },
            case.shape(),
            runs,
        )
        .unwrap();
    let forward = soft
        .bind_forward(&gpu.device, &SoftForwardBuffers { z: &z, codebook: &codebook, q: &relaxed }, case.shape(), runs)
        .unwrap();
    let backward = soft
        .bind_backward(
            &gpu.device,
            &SoftBackwardBuffers { z: &z, codebook: &codebook, g: &g, index: &index, grad_z: &grad_z },
            case.shape(),
            runs,
        )
        .unwrap();
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        sample.encode(&mut pass, &step, 0);
        forward.encode(&mut pass, &step, 0);
        backward.encode(&mut pass, &step, 0);
    }
    gpu.queue.submit([encoder.finish()]);
    assert_clean(gpu);
    (
        gpu.read(&index).unwrap(),
        gpu.read(&dist).unwrap(),
        gpu.read(&q).unwrap(),
        gpu.read(&relaxed).unwrap(),
        gpu.read(&grad_z).unwrap(),
    )
}

/// Every output against the f64 reference. A row whose two best scores lie within 1e-4 (relative) of each other
/// may sample either code on f32; its outputs are then checked against the GPU's choice. Tolerances: the sample's
/// distance 8 m eps of ||z||^2 + ||c||^2; the relaxed code 64 (m + k) eps of the largest |c|; the backward
/// 64 (m + k) eps of (2 / tau) ||g|| max_k ||c_k - c_a||^2 (`reference::soft::backward_scale`) plus the
/// commitment term's rounding, plus the f64 reference's own cancellation, 16 k eps_f64 (2 / tau) ||g|| max|c|^2.
fn check(what: &str, case: &Case, tau: f32, runs: &[SoftRun]) {
    let gpu = gpu_or_skip!();
    let (index, dist, q, relaxed, grad_z) = run_all(&gpu, case, tau, runs);
    let (n, m, tau64) = (case.n, case.m, tau as f64);
    let eps = f32::EPSILON as f64;
    let (mut want_dist, mut want_q, mut want_relaxed, mut want_grad) = (vec![], vec![], vec![], vec![]);
    let (mut tol_dist, mut tol_relaxed, mut tol_grad) = (vec![], vec![], vec![]);
    for (r, run) in runs.iter().enumerate() {
        let codes = case.codes(r);
        for i in 0..n {
            let row = r * n + i;
            let (z, g) = (case.z_row(r, i), case.g_row(r, i));
            if !run.active {
                assert_eq!((index[row], dist[row]), (0, 0.0), "{what}: inactive run {r} was written");
                assert!(q[row * m..(row + 1) * m].iter().chain(&grad_z[row * m..(row + 1) * m]).all(|&v| v == -7.0));
                continue;
            }
            let s = soft::scores(&z, &codes, tau64, noise(run, i));
            let a = soft::sample_row(&z, &codes, tau64, noise(run, i)) as usize;
            let got = index[row] as usize;
            if got != a {
                let gap = (s[a] - s[got]).abs();
                assert!(gap <= 1e-4 * s[a].abs().max(1.0), "{what}: row {row} sampled {got}, not {a} (gap {gap:.3e})");
            }
            let c = &codes[got * m..(got + 1) * m];
            let d: f64 = z.iter().zip(c).map(|(a, b)| (a - b).powi(2)).sum();
            want_dist.push(d);
            tol_dist.push(8.0 * m as f64 * eps * (z.iter().chain(c).map(|v| v * v).sum::<f64>() + 1e-30));
            want_q.extend_from_slice(c);
            want_relaxed.extend(soft::forward_row(&z, &codes, tau64, noise(run, i)));
            let cmax = codes.iter().map(|v| v.abs()).fold(0.0, f64::max);
            tol_relaxed.extend(std::iter::repeat_n(64.0 * (m + case.k) as f64 * eps * cmax + 1e-30, m));
            let commit = 2.0 * run.beta as f64 / (run.batch as f64 * m as f64);
            let back = soft::backward_row(&g, &z, &codes, tau64, noise(run, i));
            want_grad.extend((0..m).map(|j| back[j] + commit * (z[j] - c[j])));
            let scale = soft::backward_scale(&g, &z, &codes, tau64, noise(run, i));
            let zq: f64 = z.iter().zip(c).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            // The reference's own rounding: its textbook form cancels (c_a - c_bar) in f64.
            let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            let own = 16.0 * f64::EPSILON * case.k as f64 * 2.0 / tau64 * gn * cmax * cmax;
            let tol = 64.0 * (m + case.k) as f64 * eps * (scale + commit * zq) + own + 1e-30;
            tol_grad.extend(std::iter::repeat_n(tol, m));
        }
    }
    let pick = |x: &[f32], width: usize| -> Vec<f32> {
        runs.iter()
            .enumerate()
            .filter(|(_, run)| run.active)
            .flat_map(|(r, _)| x[r * n * width..(r + 1) * n * width].to_vec())
            .collect()
    };
    assert_close_each(&format!("{what} distance"), &pick(&dist, 1), &want_dist, |e| tol_dist[e]);
    assert_eq!(bits(&pick(&q, m)), bits(&want_q.iter().map(|&v| v as f32).collect::<Vec<_>>()), "{what}: q");
    assert_close_each(&format!("{what} relaxed q"), &pick(&relaxed, m), &want_relaxed, |e| tol_relaxed[e]);
    assert_close_each(&format!("{what} backward"), &pick(&grad_z, m), &want_grad, |e| tol_grad[e]);
}

fn active(noise_seed: Option<u32>, beta: f32, batch: u32) -> SoftRun {
    SoftRun { active: true, noise_seed, beta, batch, unsquared: false }
}

#[test]
fn soft_kernels_match_the_reference_on_random_inputs() {
    for (seed, &(n, k, m)) in
        [(1, 1, 1), (10, 3, 2), (257, 37, 3), (100, 16, 4), (70, 512, 8), (9, 8, 64)].iter().enumerate()
    {
        let case = Case::random(seed as u64, 1, n, k, m);
        for tau in [2.0, 0.3, 0.02] {
            check(&format!("n {n} k {k} m {m} tau {tau} exact"), &case, tau, &[SoftRun::exact()]);
            check(&format!("n {n} k {k} m {m} tau {tau} noisy"), &case, tau, &[active(Some(77), 0.25, n as u32)]);
        }
    }
}

/// Stacked runs each use their own codes, seed and commitment; an inactive run is left as it was.
#[test]
fn soft_kernels_batch_runs_and_skip_inactive_ones() {
    let case = Case::random(3, 3, 65, 12, 4);
    let runs = [
        active(Some(1), 0.25, 65),
        SoftRun { active: false, noise_seed: Some(2), beta: 0.25, batch: 65, unsquared: false },
        active(Some(3), 1.0, 65),
    ];
    check("three runs", &case, 0.5, &runs);
    // Two runs with different seeds sample differently somewhere; the same seed samples the same.
    let gpu = gpu_or_skip!();
    let same = Case {
        codebook: [case.codes(0), case.codes(0)].concat().iter().map(|&v| v as f32).collect(),
        ..Case::random(3, 2, 65, 12, 4)
    };
    let z0: Vec<f32> = same.z[..65 * 4].to_vec();
    let twin = Case { z: [z0.clone(), z0].concat(), ..same };
    let (i1, ..) = run_all(&gpu, &twin, 1.0, &[active(Some(5), 0.0, 65), active(Some(6), 0.0, 65)]);
    assert_ne!(i1[..65], i1[65..], "different seeds, the same samples");
    let (i2, ..) = run_all(&gpu, &twin, 1.0, &[active(Some(5), 0.0, 65), active(Some(5), 0.0, 65)]);
    assert_eq!(i2[..65], i2[65..], "the same seed, different samples");
}

/// Stochastic code sampling's draw (`unsquared`): the sample kernel against `reference::soft::stochastic_row` on
/// random inputs, beside a run of the Gumbel estimators' squared scores in the same dispatch, and on edge cases (z
/// on a code, K = 1, ties). A row whose two best scores lie within 1e-4 (relative) may draw either code on f32.
#[test]
fn unsquared_samples_match_stochastic_sampling() {
    let gpu = gpu_or_skip!();
    let tie = Case {
        z: vec![0.0, 0.0, 1.0, 0.0, 0.3, 0.3],
        codebook: vec![1.0, 0.0, -1.0, 0.0, 1.0, 0.0],
        g: vec![0.0; 6],
        n: 3,
        k: 3,
        m: 2,
        runs: 1,
    };
    let mut cases: Vec<(String, Case)> = [(1, 1, 1), (10, 3, 2), (257, 37, 3), (100, 16, 4), (70, 512, 8)]
        .iter()
        .enumerate()
        .map(|(seed, &(n, k, m))| (format!("n {n} k {k} m {m}"), Case::random(40 + seed as u64, 2, n, k, m)))
        .collect();
    cases.push(("ties and z on a code".into(), Case { runs: 2, ..tie.clone() }));
    cases.last_mut().unwrap().1.z.extend(tie.z.clone());
    cases.last_mut().unwrap().1.codebook.extend(tie.codebook.clone());
    cases.last_mut().unwrap().1.g.extend(tie.g);
    cases.push(("K = 1".into(), Case::random(9, 2, 33, 1, 5)));
    for (what, case) in &cases {
        for tau in [2.0f32, 0.3, 0.02] {
            let drawn = SoftRun { unsquared: true, ..active(Some(31), 0.0, case.n as u32) };
            let (index, dist, q, ..) = run_all(&gpu, case, tau, &[drawn, active(Some(31), 0.0, case.n as u32)]);
            let m = case.m;
            for r in 0..2 {
                let codes = case.codes(r);
                for i in 0..case.n {
                    let (row, z) = (r * case.n + i, case.z_row(r, i));
                    let noise = Noise { seed: 31, step: STEP, row: i as u32 };
                    let d = |k: usize| z.iter().zip(&codes[k * m..]).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
                    let g = |k: usize| soft::gumbel_noise(noise, k as u32);
                    let score = |k: usize| (if r == 0 { -d(k).sqrt() } else { -d(k) }) / tau as f64 + g(k);
                    let want = if r == 0 {
                        soft::stochastic_row(&z, &codes, tau as f64, noise)
                    } else {
                        soft::sample_row(&z, &codes, tau as f64, Some(noise))
                    } as usize;
                    let got = index[row] as usize;
                    let gap = (score(want) - score(got)).abs();
                    assert!(
                        got == want || gap <= 1e-4 * score(want).abs().max(1.0),
                        "{what}, tau {tau}, run {r}: row {i} drew {got}, not {want} (gap {gap:.3e})"
                    );
                    let c: Vec<f32> = codes[got * m..(got + 1) * m].iter().map(|&v| v as f32).collect();
                    assert_eq!(bits(&q[row * m..(row + 1) * m]), bits(&c), "{what}: q of row {row}");
                    let tol = 8.0 * m as f64 * f32::EPSILON as f64 * (d(got) + z.iter().map(|v| v * v).sum::<f64>());
                    assert!((dist[row] as f64 - d(got)).abs() <= tol + 1e-30, "{what}: the squared distance");
                }
            }
        }
    }
    // The two scorings draw differently somewhere: the flag reaches the shader.
    let case = Case::random(5, 1, 200, 16, 4);
    let drawn = SoftRun { unsquared: true, ..active(Some(3), 0.0, 200) };
    let (a, ..) = run_all(&gpu, &case, 0.3, &[drawn]);
    let (b, ..) = run_all(&gpu, &case, 0.3, &[active(Some(3), 0.0, 200)]);
    assert_ne!(a, b, "unsquared and squared scores drew the same 200 codes");
}

/// Edge cases: K = 1 (the backward is the commitment alone), ties (the lowest code), z on a code, zero vectors,
/// and a small tau where all but one weight underflows.
#[test]
fn soft_kernels_edge_cases() {
    let gpu = gpu_or_skip!();
    // Ties: codes 0 and 2 equal; z = 0 with zero codes too.
    let case = Case {
        z: vec![0.0, 0.0, 1.0, 0.0, 0.3, 0.3],
        codebook: vec![1.0, 0.0, -1.0, 0.0, 1.0, 0.0],
        g: vec![1.0, -1.0, 0.5, 2.0, 0.0, 0.0],
        n: 3,
        k: 3,
        m: 2,
        runs: 1,
    };
    let (index, dist, ..) = run_all(&gpu, &case, 0.1, &[SoftRun::exact()]);
    assert_eq!(index, vec![0, 0, 0], "ties go to the lowest code");
    assert_eq!(dist[1], 0.0, "z on a code");
    check("ties", &case, 0.1, &[SoftRun::exact()]);
    check("tiny tau", &case, 1e-4, &[active(None, 0.5, 3)]);
    let one = Case::random(4, 1, 33, 1, 5);
    check("K = 1", &one, 0.2, &[active(Some(9), 0.5, 33)]);
    let zeros = Case { z: vec![0.0; 20], codebook: vec![0.0; 12], g: vec![1.0; 20], n: 5, k: 3, m: 4, runs: 1 };
    check("zero vectors", &zeros, 0.5, &[active(Some(1), 0.25, 5)]);
}

#[test]
fn soft_kernels_reject_bad_input() {
    let gpu = gpu_or_skip!();
    let step = step_uniform(&gpu, 1.0);
    let soft = Soft::new(&gpu.device, &step).unwrap();
    let z = gpu.zeroed::<f32>("z", 8).unwrap();
    let small = gpu.zeroed::<f32>("q", 4).unwrap();
    let forward = |q: &wgpu::Buffer, shape: SoftShape, runs: &[SoftRun]| {
        soft.bind_forward(&gpu.device, &SoftForwardBuffers { z: &z, codebook: &z, q }, shape, runs).err()
    };
    let shape = SoftShape { n: 2, k: 2, m: 4 };
    assert!(matches!(forward(&small, shape, &[SoftRun::exact()]), Some(Error::BufferTooSmall { buffer: "q", .. })));
    assert!(matches!(forward(&z, SoftShape { k: 0, ..shape }, &[SoftRun::exact()]), Some(Error::Shape(_))));
    assert!(matches!(forward(&z, shape, &[]), Some(Error::Shape(_))));
    let bad_beta = SoftRun { beta: f32::NAN, ..SoftRun::exact() };
    assert!(matches!(forward(&z, shape, &[bad_beta]), Some(Error::Input(_))));
    assert_clean(&gpu);
}
