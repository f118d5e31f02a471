use crate::common::{Data, assert_clean, assert_close_each, bits, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::estimator::{EstimatorBackward, EstimatorBuffers, EstimatorSettings, EstimatorShape};
use vqgrad::{Error, Estimator, Gpu, reference};

struct Case {
    g: Vec<f32>,
    z: Vec<f32>,
    index: Vec<u32>,
    codebook: Vec<f32>,
    m: usize,
}

impl Case {
    fn random(seed: u64, n: usize, k: usize, m: usize) -> Case {
        let mut d = Data::new(seed);
        Case {
            g: d.normal(n * m, 1.0),
            z: d.normal(n * m, 1.0),
            index: d.indices(n, k as u32),
            codebook: d.normal(k * m, 1.0),
            m,
        }
    }
    fn n(&self) -> usize {
        self.index.len()
    }
    fn shape(&self) -> EstimatorShape {
        EstimatorShape { n: self.n() as u32, k: (self.codebook.len() / self.m) as u32, m: self.m as u32 }
    }
}

struct Bound {
    bound: vqgrad::kernels::estimator::BoundEstimator,
    out: wgpu::Buffer,
    _inputs: Vec<wgpu::Buffer>,
}

fn bind(gpu: &Gpu, kernel: &EstimatorBackward, case: &Case, settings: EstimatorSettings) -> Bound {
    let g = gpu.upload("g", &case.g).unwrap();
    let z = gpu.upload("z", &case.z).unwrap();
    let index = gpu.upload("index", &case.index).unwrap();
    let codebook = gpu.upload("codebook", &case.codebook).unwrap();
    let out = gpu.zeroed::<f32>("grad_z", case.z.len()).unwrap();
    let buffers = EstimatorBuffers { g: &g, z: &z, index: &index, codebook: &codebook, grad_z: &out };
    let bound = kernel.bind(&gpu.device, &buffers, case.shape(), settings).unwrap();
    Bound { bound, out, _inputs: vec![g, z, index, codebook] }
}

fn run(gpu: &Gpu, b: &Bound, len: usize) -> Vec<f32> {
    run_pass(gpu, |pass| b.bound.encode(pass));
    gpu.read::<f32>(&b.out).unwrap()[..len].to_vec()
}

fn settings(estimator: Estimator, beta: f32, batch: usize) -> EstimatorSettings {
    EstimatorSettings { estimator, beta, batch: batch as u32 }
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Tolerance per element: 4 (m + 16) eps_f32 times the row's scale, ||g|| max(1, lambda) cond + commit ||z - q||.
/// Every output is a sum of a few terms of at most that size, each carrying f32 rounding from m-term dot
/// products. `cond` is the condition number of the estimator's geometry on f32 inputs: 1 for ste;
/// (||z|| + ||q||) / ||q - z|| for rotation and diveq (u comes from a difference); 1 + 4 / ||z^ + q^|| for
/// rotation-trick (r comes from a sum that cancels as z^ and q^ become opposite).
fn check(what: &str, case: &Case, gpu_out: &[f32], s: EstimatorSettings) {
    let m = case.m;
    let cpu = reference::estimator_grad(
        s.estimator,
        &case.g,
        &case.z,
        &case.index,
        &case.codebook,
        m,
        s.beta as f64,
        s.batch as usize,
    );
    let commit = 2.0 * s.beta as f64 / (s.batch as f64 * m as f64);
    let scales: Vec<f64> = (0..case.n())
        .map(|i| {
            let f = |x: &[f32], r: usize| x[r * m..(r + 1) * m].iter().map(|&v| v as f64).collect::<Vec<f64>>();
            let (g, z, q) = (f(&case.g, i), f(&case.z, i), f(&case.codebook, case.index[i] as usize));
            let (zn, qn) = (norm(&z), norm(&q));
            let lambda = if zn > 1e-8 { qn / zn } else { 1.0 };
            let diff: Vec<f64> = z.iter().zip(&q).map(|(a, b)| a - b).collect();
            let cond = match s.estimator {
                Estimator::Ste => 1.0,
                Estimator::Rotation | Estimator::DivEq => 1.0 + (zn + qn) / (norm(&diff) + 1e-8),
                Estimator::RotationTrick | Estimator::GumbelRotationTrick => {
                    let w: Vec<f64> = z.iter().zip(&q).map(|(a, b)| a / zn.max(1e-30) + b / qn.max(1e-12)).collect();
                    1.0 + 4.0 / norm(&w).max(1e-6)
                }
                Estimator::Gumbel | Estimator::Learned => unreachable!("not a row estimator"),
            };
            norm(&g) * lambda.max(1.0) * cond + commit * norm(&diff) + 1e-30
        })
        .collect();
    let rtol = 4.0 * (m as f64 + 16.0) * f32::EPSILON as f64;
    assert_close_each(&format!("{what} {}", s.estimator), gpu_out, &cpu, |e| rtol * scales[e / m]);
}

#[test]
fn every_estimator_matches_the_reference_on_random_inputs() {
    let gpu = gpu_or_skip!();
    let kernel = EstimatorBackward::new(&gpu.device).unwrap();
    for (seed, &(n, k, m)) in
        [(1, 1, 1), (10, 3, 2), (257, 37, 3), (100, 16, 4), (1000, 512, 8), (64, 8, 256)].iter().enumerate()
    {
        let case = Case::random(seed as u64, n, k, m);
        for estimator in Estimator::ROW {
            let s = settings(estimator, 0.25, n);
            let out = run(&gpu, &bind(&gpu, &kernel, &case, s), case.z.len());
            check(&format!("n={n} k={k} m={m}"), &case, &out, s);
        }
    }
}

/// Rows that break naive formulas: z = q, z = 0, q = 0, z = q = 0, q = -2z (z^ = -q^), magnitudes 1e4 and
/// 1e-6, g = 0, q = -2z + 1e-4 noise (just above rotation-trick's fallback), then random rows.
fn edge_case(m: usize) -> Case {
    let mut d = Data::new(99 + m as u64);
    let n = 40;
    let k = 8;
    let mut case = Case::random(5, n, k, m);
    let mut codebook = d.normal(k * m, 1.0);
    codebook[..m].fill(0.0); // code 0 is the zero vector
    let anti: Vec<f32> = d.normal(m, 1.0);
    for (j, &a) in anti.iter().enumerate() {
        codebook[m + j] = -2.0 * a; // code 1 = -2 * row 3
    }
    codebook[2 * m..3 * m].iter_mut().for_each(|v| *v *= 1e4);
    codebook[3 * m..4 * m].iter_mut().for_each(|v| *v *= 1e-6);
    let row = |c: &[f32], r: usize| c[r * m..(r + 1) * m].to_vec();
    let set = |z: &mut Vec<f32>, r: usize, v: Vec<f32>| z[r * m..(r + 1) * m].copy_from_slice(&v);
    let mut z = case.z.clone();
    let mut index = case.index.clone();
    set(&mut z, 0, row(&codebook, 5));
    index[0] = 5; // z = q
    set(&mut z, 1, vec![0.0; m]);
    index[1] = 6; // z = 0
    index[2] = 0; // q = 0
    set(&mut z, 4, vec![0.0; m]);
    index[4] = 0; // z = q = 0
    set(&mut z, 3, anti);
    index[3] = 1; // q = -2 z
    set(&mut z, 5, d.normal(m, 1e4));
    index[5] = 2; // large
    set(&mut z, 6, d.normal(m, 1e-6));
    index[6] = 3; // tiny
    case.g[7 * m..8 * m].fill(0.0); // g = 0
    // Row 8: nearly opposite, just above the fallback (||z^ + q^|| ~ 1e-4): code 4 = -2 z + 1e-4 noise.
    let near: Vec<f32> = d.normal(m, 1.0);
    let noise: Vec<f32> = d.normal(m, 1e-4);
    set(&mut z, 8, near.clone());
    for (c, (&a, &e)) in codebook[4 * m..5 * m].iter_mut().zip(near.iter().zip(&noise)) {
        *c = -2.0 * a + e;
    }
    index[8] = 4;
    case.z = z;
    case.index = index;
    case.codebook = codebook;
    case
}

#[test]
fn edge_cases_give_finite_values_that_match_the_reference() {
    let gpu = gpu_or_skip!();
    let kernel = EstimatorBackward::new(&gpu.device).unwrap();
    for m in [1, 2, 4, 5, 64] {
        let case = edge_case(m);
        for estimator in Estimator::ROW {
            for beta in [0.0, 0.25] {
                let s = settings(estimator, beta, case.n());
                let out = run(&gpu, &bind(&gpu, &kernel, &case, s), case.z.len());
                assert!(out.iter().all(|v| v.is_finite()), "m={m} {estimator}: NaN or Inf in {out:?}");
                check(&format!("edge m={m} beta={beta}"), &case, &out, s);
                // z = q: no rotation (and no commitment) gradient; diveq passes g unchanged.
                if estimator == Estimator::Rotation {
                    assert!(out[..m].iter().all(|&v| v == 0.0), "rotation at z = q must be 0");
                }
                if estimator == Estimator::DivEq {
                    assert_eq!(&out[..m], &case.g[..m], "diveq at z = q must be g");
                }
            }
        }
    }
}

#[test]
fn estimator_identities_hold_on_the_gpu() {
    let gpu = gpu_or_skip!();
    let kernel = EstimatorBackward::new(&gpu.device).unwrap();
    let case = Case::random(21, 300, 20, 6);
    let m = case.m;
    let out = |e| run(&gpu, &bind(&gpu, &kernel, &case, settings(e, 0.0, 300)), case.z.len());
    let (ste, rot, trick, diveq) =
        (out(Estimator::Ste), out(Estimator::Rotation), out(Estimator::RotationTrick), out(Estimator::DivEq));
    let tol = 1e-5;
    for i in 0..case.n() {
        let r = i * m..(i + 1) * m;
        let v: Vec<f64> = r
            .clone()
            .map(|e| case.codebook[case.index[i] as usize * m + e - i * m] as f64 - case.z[e] as f64)
            .collect();
        let f = |x: &[f32]| x[r.clone()].iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (s, ro, t, d) = (f(&ste), f(&rot), f(&trick), f(&diveq));
        // ste = rotation + diveq
        for j in 0..m {
            assert!((s[j] - ro[j] - d[j]).abs() <= tol * norm(&s), "row {i}: ste != rotation + diveq");
        }
        // rotation is parallel to q - z: its component orthogonal to v vanishes
        let vn = norm(&v);
        let along: f64 = ro.iter().zip(&v).map(|(a, b)| a * b / vn).sum();
        let orth: Vec<f64> = ro.iter().zip(&v).map(|(a, b)| a - along * b / vn).collect();
        assert!(norm(&orth) <= tol * norm(&s), "row {i}: rotation is not parallel to q - z");
        // rotation-trick: ||lambda R^T g|| = lambda ||g|| (R is orthogonal)
        let zrow = f(&case.z);
        let q: Vec<f64> = (0..m).map(|j| case.codebook[case.index[i] as usize * m + j] as f64).collect();
        let lambda = norm(&q) / norm(&zrow);
        assert!((norm(&t) - lambda * norm(&s)).abs() <= tol * lambda * norm(&s), "row {i}: rotation-trick norm");
    }
}

#[test]
fn settings_can_change_between_submits_and_runs_are_bit_identical() {
    let gpu = gpu_or_skip!();
    let kernel = EstimatorBackward::new(&gpu.device).unwrap();
    let case = Case::random(4, 129, 9, 7);
    let b = bind(&gpu, &kernel, &case, settings(Estimator::Ste, 0.25, 129));
    for estimator in Estimator::ROW {
        let s = settings(estimator, 0.5, 64);
        b.bound.set(&gpu.queue, s).unwrap();
        let first = run(&gpu, &b, case.z.len());
        let second = run(&gpu, &b, case.z.len());
        assert_eq!(bits(&first), bits(&second), "{estimator}: two runs differ");
        check("after set", &case, &first, s);
    }
    assert_clean(&gpu);
}

#[test]
fn bad_settings_are_errors() {
    let gpu = gpu_or_skip!();
    let kernel = EstimatorBackward::new(&gpu.device).unwrap();
    let case = Case::random(4, 8, 2, 4);
    let g = gpu.upload("g", &case.g).unwrap();
    let index = gpu.upload("index", &case.index).unwrap();
    let buffers = EstimatorBuffers { g: &g, z: &g, index: &index, codebook: &g, grad_z: &g };
    let shape = case.shape();
    for (beta, batch) in [(f32::NAN, 8), (-1.0, 8), (f32::INFINITY, 8)] {
        let r = kernel.bind(&gpu.device, &buffers, shape, settings(Estimator::Ste, beta, batch));
        assert!(matches!(r, Err(Error::Input(_))), "beta {beta} must be rejected");
    }
    let r = kernel.bind(&gpu.device, &buffers, shape, settings(Estimator::Ste, 0.25, 0));
    assert!(matches!(r, Err(Error::Shape(_))), "batch 0 must be rejected");
    let r = kernel.bind(&gpu.device, &buffers, EstimatorShape { n: 9, ..shape }, settings(Estimator::Ste, 0.25, 8));
    assert!(matches!(r, Err(Error::BufferTooSmall { buffer: "g", .. })));
    assert_clean(&gpu);
}

/// Runs stacked in one dispatch, each with its own estimator and beta, give each run exactly what it gives alone.
#[test]
fn batched_runs_with_their_own_settings_equal_single_runs_bit_for_bit() {
    let gpu = gpu_or_skip!();
    let kernel = EstimatorBackward::new(&gpu.device).unwrap();
    for (seed, &(n, k, m)) in [(1, 1, 1), (257, 37, 3), (100, 16, 4), (64, 8, 64)].iter().enumerate() {
        // Every estimator, then ste again with another beta: five runs.
        let settings: Vec<EstimatorSettings> =
            Estimator::ROW.iter().map(|&e| settings(e, 0.25, n)).chain([settings(Estimator::Ste, 1.5, n)]).collect();
        let runs = settings.len();
        let cases: Vec<Case> = (0..runs).map(|r| Case::random(seed as u64 * 10 + r as u64, n, k, m)).collect();
        let cat = |f: &dyn Fn(&Case) -> Vec<f32>| cases.iter().flat_map(f).collect::<Vec<f32>>();
        let up = |label, v: &[f32]| gpu.upload(label, v).unwrap();
        let (g, z, codebook) = (
            up("g", &cat(&|c| c.g.clone())),
            up("z", &cat(&|c| c.z.clone())),
            up("codebook", &cat(&|c| c.codebook.clone())),
        );
        let index = gpu.upload("index", &cases.iter().flat_map(|c| c.index.clone()).collect::<Vec<u32>>()).unwrap();
        let out = gpu.zeroed::<f32>("grad_z", runs * n * m).unwrap();
        let buffers = EstimatorBuffers { g: &g, z: &z, index: &index, codebook: &codebook, grad_z: &out };
        let shape = EstimatorShape { n: n as u32, k: k as u32, m: m as u32 };
        let bound = kernel.bind_runs(&gpu.device, &buffers, shape, &settings).unwrap();
        run_pass(&gpu, |pass| bound.encode(pass));
        let batched: Vec<f32> = gpu.read(&out).unwrap();
        for (r, (case, s)) in cases.iter().zip(&settings).enumerate() {
            let alone = run(&gpu, &bind(&gpu, &kernel, case, *s), n * m);
            let what = format!("n={n} k={k} m={m} run {r} ({} beta {})", s.estimator, s.beta);
            assert_eq!(bits(&batched[r * n * m..(r + 1) * n * m]), bits(&alone), "{what}");
        }
    }
    assert_clean(&gpu);
}

/// `gumbel-rotation-trick` is the rotation trick at the given code, bit for bit; a `gumbel` run is left alone
/// (its backward is `soft.wgsl`'s); a `learned` run gets the commitment term alone (`learned.wgsl` adds M g).
#[test]
fn gumbel_runs_take_the_rotation_trick_or_are_skipped() {
    let gpu = gpu_or_skip!();
    let kernel = EstimatorBackward::new(&gpu.device).unwrap();
    let case = Case::random(5, 70, 9, 4);
    let rt = run(&gpu, &bind(&gpu, &kernel, &case, settings(Estimator::RotationTrick, 0.25, 70)), 280);
    let grt = run(&gpu, &bind(&gpu, &kernel, &case, settings(Estimator::GumbelRotationTrick, 0.25, 70)), 280);
    assert_eq!(bits(&rt), bits(&grt));
    let skipped = run(&gpu, &bind(&gpu, &kernel, &case, settings(Estimator::Gumbel, 0.25, 70)), 280);
    assert!(skipped.iter().all(|&v| v == 0.0), "a gumbel run was written");
    let commit = run(&gpu, &bind(&gpu, &kernel, &case, settings(Estimator::Learned, 0.25, 70)), 280);
    let zero_g = Case { g: vec![0.0; 280], ..Case::random(5, 70, 9, 4) };
    let ste_no_g = run(&gpu, &bind(&gpu, &kernel, &zero_g, settings(Estimator::Ste, 0.25, 70)), 280);
    assert_eq!(bits(&commit), bits(&ste_no_g), "learned: the commitment term alone");
    assert_clean(&gpu);
}
