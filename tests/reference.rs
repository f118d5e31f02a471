//! The CPU reference checked against the mathematics it stands for: estimator identities, the rotation trick's
//! forward value, and finite differences of the losses. No GPU needed.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vqgrad::Estimator;
use vqgrad::kernels::codebook::EmaSettings;
use vqgrad::reference::{self, Assignment};

fn normal(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    (0..len)
        .map(|_| {
            let u1: f64 = rng.random_range(f64::EPSILON..1.0);
            let u2: f64 = rng.random();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Random (g, z, q) rows for m in 1..=9 and 64, leaving out nearly opposite z and q (||z^ + q^|| < 0.01),
/// where the rotation is ill-defined and the fallback applies (tested on its own below).
fn rows() -> Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut out = Vec::new();
    for m in (1..=9).chain([64]) {
        for _ in 0..50 {
            let (g, z, q) = (normal(&mut rng, m), normal(&mut rng, m), normal(&mut rng, m));
            let w: Vec<f64> = z.iter().zip(&q).map(|(a, b)| a / norm(&z) + b / norm(&q)).collect();
            if norm(&w) > 0.01 {
                out.push((g, z, q));
            }
        }
    }
    assert!(out.len() > 400);
    out
}

#[test]
fn rotation_trick_forward_equals_q() {
    for (_, z, q) in rows() {
        let f = reference::rotation_trick_forward(&z, &q);
        for j in 0..q.len() {
            assert!((f[j] - q[j]).abs() <= 1e-10 * (1.0 + norm(&q)), "lambda R z != q: {f:?} vs {q:?}");
        }
    }
}

#[test]
fn ste_is_rotation_plus_diveq_and_rotation_is_parallel_to_q_minus_z() {
    for (g, z, q) in rows() {
        let ste = reference::estimator_row(Estimator::Ste, &g, &z, &q);
        let rot = reference::estimator_row(Estimator::Rotation, &g, &z, &q);
        let div = reference::estimator_row(Estimator::DivEq, &g, &z, &q);
        assert_eq!(ste, g);
        for j in 0..g.len() {
            assert!((ste[j] - rot[j] - div[j]).abs() < 1e-12);
        }
        let v: Vec<f64> = q.iter().zip(&z).map(|(a, b)| a - b).collect();
        // Parallel: |rot . v| = ||rot|| ||v||.
        assert!((dot(&rot, &v).abs() - norm(&rot) * norm(&v)).abs() <= 1e-9 * (1.0 + norm(&rot) * norm(&v)));
        // diveq is orthogonal to v, up to the 1e-8 in u's denominator: |div . v| ~ 2e-8 |g . v| / ||v|| <= 2e-8 ||g||.
        assert!(dot(&div, &v).abs() <= 3e-8 * norm(&g) + 1e-12 * (1.0 + norm(&g) * norm(&v)));
    }
    // z == q: rotation gives 0, diveq gives g.
    let g = vec![1.0, -2.0, 0.5];
    let z = vec![0.3, 0.3, -1.0];
    assert_eq!(reference::estimator_row(Estimator::Rotation, &g, &z, &z), vec![0.0; 3]);
    assert_eq!(reference::estimator_row(Estimator::DivEq, &g, &z, &z), g);
}

/// R x for the rotation taking z^ to q^, applied as a product.
fn rotate(z: &[f64], q: &[f64], x: &[f64]) -> Vec<f64> {
    let zh: Vec<f64> = z.iter().map(|v| v / norm(z)).collect();
    let qh: Vec<f64> = q.iter().map(|v| v / norm(q)).collect();
    let w: Vec<f64> = zh.iter().zip(&qh).map(|(a, b)| a + b).collect();
    let r: Vec<f64> = w.iter().map(|v| v / norm(&w)).collect();
    let (rx, zx) = (dot(&r, x), dot(&zh, x));
    (0..x.len()).map(|j| x[j] - 2.0 * r[j] * rx + 2.0 * qh[j] * zx).collect()
}

#[test]
fn rotation_trick_gradient_is_the_transpose_of_its_forward_map() {
    // With lambda and R frozen at (z, q), q~(x) = lambda R x is linear in x, so its gradient against g is exactly
    // lambda R^T g: central differences of x -> g . (lambda R x) must give the estimator's output.
    for (g, z, q) in rows() {
        let lambda = norm(&q) / norm(&z);
        let est = reference::estimator_row(Estimator::RotationTrick, &g, &z, &q);
        let h = 1e-3;
        for j in 0..z.len() {
            let at = |d: f64| {
                let mut x = z.clone();
                x[j] += d;
                lambda * dot(&g, &rotate(&z, &q, &x))
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!((fd - est[j]).abs() <= 1e-8 * (1.0 + lambda * norm(&g)), "component {j}: FD {fd} vs {}", est[j]);
        }
        // R is orthogonal: the gradient's norm is lambda ||g||.
        assert!((norm(&est) - lambda * norm(&g)).abs() <= 1e-10 * (1.0 + lambda * norm(&g)));
    }
}

#[test]
fn rotation_trick_fallbacks() {
    let g = vec![1.0, 2.0, 3.0];
    // ||z|| < 1e-8 and z^ = -q^ both fall back to ste; q = 0 gives lambda = 0, so a zero gradient.
    assert_eq!(reference::estimator_row(Estimator::RotationTrick, &g, &[0.0; 3], &[1.0, 0.0, 0.0]), g);
    assert_eq!(reference::estimator_row(Estimator::RotationTrick, &g, &[1.0, -2.0, 0.5], &[-2.0, 4.0, -1.0]), g);
    assert_eq!(reference::estimator_row(Estimator::RotationTrick, &g, &[1.0, -2.0, 0.5], &[0.0; 3]), vec![0.0; 3]);
    // z^ = q^ (same direction): R = I, so lambda g.
    let out = reference::estimator_row(Estimator::RotationTrick, &g, &[1.0, 1.0, 1.0], &[2.0, 2.0, 2.0]);
    for (o, gi) in out.iter().zip(&g) {
        assert!((o - 2.0 * gi).abs() < 1e-12);
    }
}

fn central_difference(f: impl Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    (0..x.len())
        .map(|j| {
            let mut a = x.to_vec();
            let mut b = x.to_vec();
            a[j] += h;
            b[j] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}

#[test]
fn codebook_and_commitment_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &(n, k, m, batch) in &[(20, 5, 3, 20), (64, 16, 4, 32), (7, 1, 2, 7)] {
        // Values exactly representable in f32, so the f32 and f64 paths see the same numbers.
        let z: Vec<f64> = normal(&mut rng, n * m).iter().map(|&v| v as f32 as f64).collect();
        let c: Vec<f64> = normal(&mut rng, k * m).iter().map(|&v| v as f32 as f64).collect();
        let (z32, c32): (Vec<f32>, Vec<f32>) =
            (z.iter().map(|&v| v as f32).collect(), c.iter().map(|&v| v as f32).collect());
        let index = reference::assign(&z32, &c32, m).index;
        let h = 1e-4; // central differences are exact for quadratics up to rounding
        let fd_c = central_difference(|cc| reference::loss_codebook(&z, cc, &index, m, batch), &c, h);
        let grad_c = reference::codebook_grad(&z32, &index, &c32, m, batch);
        for (a, b) in fd_c.iter().zip(&grad_c) {
            assert!((a - b).abs() < 1e-8, "dL_cb/dC: FD {a} vs analytic {b}");
        }
        let beta = 0.25;
        let fd_z = central_difference(|zz| reference::loss_commit(zz, &c, &index, m, batch, beta), &z, h);
        // With g = 0 every estimator leaves only the commitment gradient.
        for estimator in Estimator::ROW {
            let grad_z = reference::estimator_grad(estimator, &vec![0.0; n * m], &z32, &index, &c32, m, beta, batch);
            for (a, b) in fd_z.iter().zip(&grad_z) {
                assert!((a - b).abs() < 1e-8, "{estimator}: d(beta L_commit)/dz: FD {a} vs analytic {b}");
            }
        }
    }
}

#[test]
fn assign_breaks_ties_to_the_lowest_code() {
    let codebook = [1.0f32, 0.0, -1.0, 0.0, 1.0, 0.0]; // codes 0 and 2 equal, code 1 its mirror
    let a = reference::assign(&[0.0, 0.0, 1.0, 0.1], &codebook, 2);
    assert_eq!(a.index, vec![0, 0]);
    assert_eq!(a.distance[0], 1.0);
    assert!((a.distance[1] - 0.01).abs() < 1e-9);
}

#[test]
fn ema_step_by_hand() {
    // K = 2, m = 1, codebook [0, 10]; three rows at 1, 2 and 3 all go to code 0.
    let mut codebook = vec![0.0f32, 10.0];
    let mut state = reference::EmaState::new(&codebook, 2);
    let s = EmaSettings { decay: 0.5, eps: 1e-5 };
    let counts = reference::ema_update(&mut state, &mut codebook, &[1.0, 2.0, 3.0], &[0, 0, 0], 1, s);
    assert_eq!(counts, vec![3, 0]);
    // N = [0.5 + 1.5, 0.5] = [2, 0.5]; M = [0 + 3, 5]; n = 2.5.
    assert_eq!(state.size, vec![2.0, 0.5]);
    assert_eq!(state.sum, vec![3.0, 5.0]);
    let smooth = |nk: f64| (nk + 1e-5) / (2.5 + 2e-5) * 2.5;
    assert!((codebook[0] as f64 - 3.0 / smooth(2.0)).abs() < 1e-6);
    assert!((codebook[1] as f64 - 5.0 / smooth(0.5)).abs() < 1e-5);
}

#[test]
fn stats_by_hand() {
    let a = Assignment { index: vec![0, 0, 1, 3], distance: vec![1.0, 1.0, 2.0, 4.0] };
    let s = reference::stats(&a, 4, 2, Some((&[1, 1, 0, 1], 2)));
    assert_eq!((s.total, s.dead_codes), (4, 1));
    assert_eq!(s.usage, 0.75);
    let h = -(0.5f64 * 0.5f64.ln() + 2.0 * 0.25 * 0.25f64.ln());
    assert!((s.entropy - h).abs() < 1e-12);
    assert!((s.perplexity - h.exp()).abs() < 1e-12);
    assert_eq!(s.quant_err, 8.0 / 8.0);
    assert_eq!(s.purity, Some(1.0));
}

/// The orthogonality penalty's gradient is the gradient of its loss (central differences), on random codebooks
/// with K below, at and above m, with two nearly equal codes and with a short code; orthogonal codes sit at the
/// minimum, 0 when K <= m (the loss is exactly 0 there and its gradient 0).
#[test]
fn orthogonal_penalty_gradient_matches_finite_differences() {
    use vqgrad::reference::orthogonal::{grad, loss};
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for &(k, m) in &[(1, 3), (2, 2), (3, 4), (7, 4), (16, 3)] {
        let mut c = normal(&mut rng, k * m);
        if k >= 2 {
            // Two nearly equal codes and a short one (1e-3): the normalization's steep part.
            for j in 0..m {
                c[m + j] = c[j] + 1e-3 * c[m + j];
                c[j] *= 1e-3;
            }
        }
        let analytic = grad(&c, m);
        let fd = central_difference(|cc| loss(cc, m), &c, 1e-7);
        let scale = analytic.iter().map(|v| v.abs()).fold(1.0, f64::max);
        for (e, (a, f)) in analytic.iter().zip(&fd).enumerate() {
            assert!((a - f).abs() <= 1e-5 * scale, "k {k} m {m} element {e}: analytic {a}, differences {f}");
        }
    }
    let orthogonal = [3.0, 0.0, 0.0, 0.0, -0.5, 0.0];
    assert!(loss(&orthogonal, 3).abs() < 1e-15 && grad(&orthogonal, 3).iter().all(|v| v.abs() < 1e-15));
    assert_eq!(grad(&[0.0, 0.0, 1.0, 2.0], 2)[..2], [0.0, 0.0], "a zero code has no gradient");
}

/// SimVQ's layer gradient (what the codebook's gradient G gives W and b) is the gradient of `sum G . C(W, b)`, C
/// the codebook `C0 W^T + b` (central differences).
#[cfg(feature = "study")] // the layer's f64 forward and backward live in the study part of the reference
#[test]
fn simvq_layer_gradient_matches_finite_differences() {
    use vqgrad::reference::train::linear_backward;
    use vqgrad::train::simvq::{codebook_f64, layer};
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    for &(k, m) in &[(1, 1), (5, 3), (16, 4)] {
        let (basis, projection, g) = (normal(&mut rng, k * m), normal(&mut rng, m * m + m), normal(&mut rng, k * m));
        let mut analytic = vec![0.0; projection.len()];
        linear_backward(&projection, layer(m as u32), &basis, &g, k, &mut analytic);
        let f = |p: &[f64]| codebook_f64(&basis, p, m).iter().zip(&g).map(|(c, g)| c * g).sum::<f64>();
        let fd = central_difference(f, &projection, 1e-6);
        for (e, (a, d)) in analytic.iter().zip(&fd).enumerate() {
            assert!((a - d).abs() <= 1e-6 * (1.0 + a.abs()), "k {k} m {m} element {e}: {a} against {d}");
        }
    }
}

/// The affine map's gradients (what the codebook's gradient G gives C0, s and b) are the gradient of
/// `sum G . C(C0, s, b)`, C the codebook `C0 diag(1 + a s) + a b` (central differences).
#[test]
fn affine_gradient_matches_finite_differences() {
    use vqgrad::reference::affine::{codebook, grad};
    let mut rng = ChaCha8Rng::seed_from_u64(37);
    for &(k, m, a) in &[(1, 1, 1.0), (5, 3, 10.0), (16, 4, 0.5)] {
        let (raw, scale_shift, g) = (normal(&mut rng, k * m), normal(&mut rng, 2 * m), normal(&mut rng, k * m));
        let (raw_grad, params_grad) = grad(&raw, &scale_shift, &g, m, a);
        let dot = |c: Vec<f64>| c.iter().zip(&g).map(|(c, g)| c * g).sum::<f64>();
        let fd_raw = central_difference(|r| dot(codebook(r, &scale_shift, m, a)), &raw, 1e-6);
        let fd_params = central_difference(|p| dot(codebook(&raw, p, m, a)), &scale_shift, 1e-6);
        for (what, analytic, fd) in [("C0", &raw_grad, &fd_raw), ("[s, b]", &params_grad, &fd_params)] {
            for (e, (x, d)) in analytic.iter().zip(fd).enumerate() {
                assert!((x - d).abs() <= 1e-6 * (1.0 + x.abs()), "k {k} m {m} a {a} {what} {e}: {x} against {d}");
            }
        }
    }
}

/// FSQ's bound: its backward is the derivative of its forward (central differences), and the nearest point of the
/// grid to the bound is the bound rounded per dimension (FSQ's definition of its code), for odd and even levels.
#[test]
fn fsq_bound_gradient_and_grid() {
    use vqgrad::reference::latent::{fsq_bound, fsq_bound_backward, fsq_constants, fsq_grid};
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    for levels in [vec![2u32], vec![4, 2, 2, 2], vec![8, 5, 3]] {
        let m = levels.len();
        let z: Vec<f64> = normal(&mut rng, 64 * m).iter().map(|v| 1.5 * v).collect();
        let dy = normal(&mut rng, z.len());
        let analytic = fsq_bound_backward(&z, &levels, &dy);
        let dot = |z: &[f64]| fsq_bound(z, &levels).iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>();
        let fd = central_difference(dot, &z, 1e-6);
        for (e, (a, d)) in analytic.iter().zip(&fd).enumerate() {
            assert!((a - d).abs() <= 1e-6 * (1.0 + a.abs()), "{levels:?} element {e}: {a} against {d}");
        }
        let grid = fsq_grid(&levels);
        assert_eq!(grid.len(), levels.iter().product::<u32>() as usize * m);
        let bounded = fsq_bound(&z, &levels);
        for row in bounded.chunks_exact(m) {
            let rounded: Vec<f64> = (0..m)
                .map(|j| {
                    let w = fsq_constants(levels[j]).3;
                    (row[j] * w).round() / w
                })
                .collect();
            let distance = |c: &[f64]| c.iter().zip(row).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
            let nearest = grid.chunks_exact(m).min_by(|a, b| distance(a).total_cmp(&distance(b))).unwrap();
            assert_eq!(nearest, &rounded[..], "{levels:?}: row {row:?}");
        }
    }
}

/// Cosine codes' unit map: its backward is the derivative of its forward (central differences), and a row's unit
/// vector has norm 1, a zero row maps to 0.
#[test]
fn unit_rows_gradient() {
    use vqgrad::reference::latent::{unit, unit_backward};
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    for m in [1usize, 3, 8] {
        let (z, dy) = (normal(&mut rng, 20 * m), normal(&mut rng, 20 * m));
        let analytic = unit_backward(&z, &dy, m);
        let dot = |z: &[f64]| unit(z, m).iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>();
        let fd = central_difference(dot, &z, 1e-6);
        for (e, (a, d)) in analytic.iter().zip(&fd).enumerate() {
            assert!((a - d).abs() <= 1e-5 * (1.0 + a.abs()), "m {m} element {e}: {a} against {d}");
        }
        for row in unit(&z, m).chunks_exact(m) {
            assert!((row.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-12, "m {m}: a unit row");
        }
        assert!(unit(&vec![0.0; m], m).iter().all(|&v| v == 0.0), "m {m}: a zero row");
    }
}

/// Stochastic code sampling draws code k with probability softmax(-||z - c_k|| / tau)_k: over 40000 noise draws
/// (rows) the frequencies are within 5 standard errors of it, at three temperatures; a tiny tau draws the nearest.
#[test]
fn stochastic_sampling_draws_from_the_distance_softmax() {
    use vqgrad::reference::soft::{Noise, stochastic_row};
    let (z, c): ([f64; 2], [f64; 8]) = ([0.2, -0.1], [0.0, 0.0, 1.0, 0.0, -0.5, 0.5, 0.3, -0.9]);
    let d: Vec<f64> = c.chunks(2).map(|c| ((z[0] - c[0]).powi(2) + (z[1] - c[1]).powi(2)).sqrt()).collect();
    for tau in [2.0, 0.3, 0.1] {
        let e: Vec<f64> = d.iter().map(|d| (-d / tau).exp()).collect();
        let p: Vec<f64> = e.iter().map(|v| v / e.iter().sum::<f64>()).collect();
        let n = 40_000u32;
        let mut counts = [0u32; 4];
        for row in 0..n {
            counts[stochastic_row(&z, &c, tau, Noise { seed: 17, step: 4, row }) as usize] += 1;
        }
        for k in 0..4 {
            let freq = counts[k] as f64 / n as f64;
            let se = (p[k] * (1.0 - p[k]) / n as f64).sqrt();
            assert!((freq - p[k]).abs() <= 5.0 * se + 1e-9, "tau {tau}, code {k}: {freq} drawn, p = {}", p[k]);
        }
    }
    // The squared distance would fail this: at tau 0.3 code 2 has softmax(-d / tau)'s 0.070 and
    // softmax(-d^2 / tau)'s 0.052, 14 standard errors apart.
    let nearest = (0..100).all(|row| stochastic_row(&z, &c, 1e-4, Noise { seed: 1, step: 1, row }) == 0);
    assert!(nearest, "tau -> 0 draws the nearest code");
}

/// The relaxation's backward is the gradient of `g . q~(z)` (central differences, noise held fixed), for several
/// temperatures, with and without noise; as tau -> 0 the relaxed code tends to the hard sample.
#[test]
fn soft_backward_matches_finite_differences() {
    use vqgrad::reference::soft::{self, Noise};
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(k, m) in &[(1, 3), (2, 2), (7, 4), (32, 8)] {
        for &tau in &[3.0, 0.5, 0.05] {
            for noise in [None, Some(Noise { seed: 5, step: 3, row: 2 })] {
                let z = normal(&mut rng, m);
                let c: Vec<f64> = normal(&mut rng, k * m).iter().map(|v| 0.5 * v).collect();
                let g = normal(&mut rng, m);
                let analytic = soft::backward_row(&g, &z, &c, tau, noise);
                let fd = central_difference(|zz| dot(&g, &soft::forward_row(zz, &c, tau, noise)), &z, 1e-6);
                let scale = 1.0 + analytic.iter().map(|v| v.abs()).fold(0.0, f64::max);
                for (a, b) in fd.iter().zip(&analytic) {
                    assert!((a - b).abs() < 1e-6 * scale, "K {k} m {m} tau {tau} {noise:?}: FD {a} vs analytic {b}");
                }
                if k == 1 {
                    assert!(analytic.iter().all(|&v| v == 0.0), "one code: the relaxed code is constant");
                }
            }
        }
    }
    // tau -> 0: the relaxed code becomes the hard sample, and without noise the hard sample the nearest code.
    let c = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
    let z = [0.8, 0.1];
    assert_eq!(soft::sample_row(&z, &c, 1e-4, None), 1);
    let q = soft::forward_row(&z, &c, 1e-4, None);
    assert!((q[0] - 1.0).abs() < 1e-12 && q[1].abs() < 1e-12, "{q:?}");
    // The noise is standard Gumbel: mean Euler's gamma, variance pi^2 / 6.
    let draws: Vec<f64> =
        (0..20000).map(|i| soft::gumbel_noise(Noise { seed: 1, step: 7, row: i / 16 }, i % 16)).collect();
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    let var = draws.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (draws.len() - 1) as f64;
    assert!((mean - 0.577_215_66).abs() < 0.03, "mean {mean}");
    assert!((var - std::f64::consts::PI.powi(2) / 6.0).abs() < 0.08, "variance {var}");
}

/// The learned estimator's fitting gradient is the gradient of its loss (central differences).
#[test]
fn learned_grad_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for &(rows, m) in &[(1, 1), (9, 3), (40, 5)] {
        let (g, s, t) = (normal(&mut rng, rows * m), normal(&mut rng, rows * m), normal(&mut rng, m * m));
        let analytic = reference::learned_grad(&t, &g, &s, m);
        let fd = central_difference(|tt| reference::learned_loss(tt, &g, &s, m), &t, 1e-5);
        for (a, b) in fd.iter().zip(&analytic) {
            assert!((a - b).abs() < 1e-7 * (1.0 + b.abs()), "rows {rows} m {m}: FD {a} vs analytic {b}");
        }
    }
}
