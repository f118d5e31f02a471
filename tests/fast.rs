//! The fast CPU engine's parts against the f64 reference on random and edge-case inputs: the nearest-code search
//! (both of its forms), the dense layers forward and backward, each estimator's row backward, Lloyd; and its
//! results independent of the number of threads.

mod common;

use common::{Data, assert_close_each};
use vqgrad::contract::Linear;
use vqgrad::reference::soft::{self, Noise as RefNoise};
use vqgrad::reference::train::{linear_backward, linear_forward};
use vqgrad::reference::{assign, estimator_row, learned_row, to_f64};
use vqgrad::train::fast::{dense, quantize};
use vqgrad::train::{Engine, TrainConfig};
use vqgrad::{Estimator, data::DataSpec};

/// The search against the f64 reference: the same code wherever the reference's best is clear of its runner-up by
/// more than f32 rounding (1e-5 relative); elsewhere a code whose exact distance is within that of the best. The
/// distances within 1e-5 relative (plus 1e-7 absolute, for a code at distance 0).
fn check_nearest(what: &str, z: &[f32], codebook: &[f32], m: usize) {
    let n = z.len() / m;
    let (mut index, mut dist) = (vec![0u32; n], vec![0.0f32; n]);
    quantize::nearest(z, codebook, m, &mut index, &mut dist);
    let (mut direct_index, mut direct_dist) = (vec![0u32; n], vec![0.0f32; n]);
    quantize::nearest_direct(z, codebook, m, &mut direct_index, &mut direct_dist);
    // The GEMM-pruned form decides by the direct one: the same codes and distances, bit for bit.
    assert_eq!(index, direct_index, "{what}: nearest and nearest_direct differ");
    assert_eq!(common::bits(&dist), common::bits(&direct_dist), "{what}: distances differ between the forms");
    let reference = assign(z, codebook, m);
    let (zw, cw) = (to_f64(z), to_f64(codebook));
    let exact = |i: usize, k: u32| -> f64 { (0..m).map(|j| (zw[i * m + j] - cw[k as usize * m + j]).powi(2)).sum() };
    for i in 0..n {
        for (form, a) in [("nearest", index[i]), ("nearest_direct", direct_index[i])] {
            let best = reference.distance[i];
            let slack = 1e-5 * best + 1e-7;
            assert!(exact(i, a) <= best + slack, "{what} {form}: row {i} took code {a}, not {}", reference.index[i]);
        }
    }
    assert_close_each(&format!("{what}: distances"), &dist, &reference.distance, |i| {
        1e-5 * reference.distance[i] + 1e-7
    });
    let clear = (0..n).filter(|&i| {
        let best = reference.distance[i];
        (0..codebook.len() / m)
            .all(|k| k as u32 == reference.index[i] || exact(i, k as u32) > best * (1.0 + 1e-5) + 1e-7)
    });
    for i in clear {
        assert_eq!(index[i], reference.index[i], "{what}: row {i}");
        assert_eq!(direct_index[i], reference.index[i], "{what}: row {i} (direct)");
    }
}

#[test]
fn the_nearest_code_search_matches_the_reference() {
    let mut data = Data::new(11);
    // Below and above the GEMM form's threshold, more rows than one block, one code, one row.
    for (n, k, m) in [(300, 37, 3), (1000, 64, 16), (513, 100, 64), (129, 1, 20), (1, 8, 32), (0, 4, 4)] {
        let (z, codebook) = (data.normal(n * m, 1.0), data.normal(k * m, 1.0));
        check_nearest(&format!("n {n} k {k} m {m}"), &z, &codebook, m);
    }
    // Ties: duplicated codes go to the lowest index, in both forms.
    for m in [4, 32] {
        let code = data.normal(m, 1.0);
        let codebook: Vec<f32> = [data.normal(m, 5.0), code.clone(), code.clone()].concat();
        let mut index = [9u32; 1];
        let mut dist = [0.0f32; 1];
        quantize::nearest(&code, &codebook, m, &mut index, &mut dist);
        assert_eq!((index[0], dist[0]), (1, 0.0), "m {m}: a tie goes to the lowest code, at distance 0");
        let codebook = vec![0.5f32; 3 * m];
        quantize::nearest(&data.normal(m, 1.0), &codebook, m, &mut index, &mut dist);
        assert_eq!(index[0], 0, "m {m}: equal codes");
    }
}

#[test]
fn dense_layers_match_the_reference_forward_and_backward() {
    let mut data = Data::new(12);
    for (rows, input, output) in [(37, 16, 5), (1, 1, 1), (256, 64, 3), (5, 3, 130)] {
        let l = Linear { input, output, w_off: 2, b_off: 2 + input * output, relu: false };
        let p = data.normal(2 + (input * output + output) as usize, 0.5);
        let (rows_u, input_u, output_u) = (rows as usize, input as usize, output as usize);
        let x = data.normal(rows_u * input_u, 1.0);
        let dy = data.normal(rows_u * output_u, 1.0);
        for relu in [false, true] {
            let mut y = vec![0.0f32; rows_u * output_u];
            dense::forward(&p, l, &x, rows_u, relu, &mut y);
            let want = linear_forward(&to_f64(&p), l, &to_f64(&x), rows_u, relu);
            let tol = |_: usize| 1e-5 * (input as f64).sqrt() * 4.0;
            assert_close_each(&format!("forward {rows}x{input}->{output} relu {relu}"), &y, &want, tol);
        }
        let mut grads = vec![f32::NAN; p.len()];
        let mut dx = vec![0.0f32; rows_u * input_u];
        dense::backward(&p, l, &x, &dy, rows_u, &mut grads, Some(&mut dx));
        let mut want_grads = vec![0.0; p.len()];
        let want_dx = linear_backward(&to_f64(&p), l, &to_f64(&x), &to_f64(&dy), rows_u, &mut want_grads);
        let what = format!("backward {rows}x{input}->{output}");
        let tol = |n: u32| move |_: usize| 1e-5 * (n as f64).sqrt() * 4.0;
        assert_close_each(&format!("{what}: dx"), &dx, &want_dx, tol(output));
        assert_close_each(&format!("{what}: dW, db"), &grads[2..], &want_grads[2..], tol(rows));
    }
}

#[test]
fn each_estimators_row_matches_the_reference() {
    let mut data = Data::new(13);
    let (m, k) = (6, 9);
    let codebook = data.normal(k * m, 1.0);
    let transport = data.normal(m * m, 1.0);
    for row in 0..200u32 {
        let (g, z) = (data.normal(m, 1.0), data.normal(m, 1.0));
        // Edge rows: z at a code (q - z = 0), z = 0 (the rotation trick's guard), q = -z (w = 0).
        let z = match row {
            0 => codebook[..m].to_vec(),
            1 => vec![0.0; m],
            2 => codebook[..m].iter().map(|v| -v).collect(),
            _ => z,
        };
        let q: Vec<f32> = if row == 2 { codebook[..m].to_vec() } else { data.normal(m, 1.0) };
        let (gw, zw, qw) = (to_f64(&g), to_f64(&z), to_f64(&q));
        let scale = 1e-5 * (1.0 + gw.iter().map(|v| v.abs()).sum::<f64>());
        let mut out = vec![0.0f32; m];
        for estimator in Estimator::ROW.into_iter().filter(|e| !e.soft_backward()) {
            quantize::estimator_row(estimator, &g, &z, &q, &mut out);
            let want = estimator_row(estimator, &gw, &zw, &qw);
            assert_close_each(&format!("{estimator} row {row}"), &out, &want, |_| scale * 10.0);
        }
        let (mut scores, mut c_bar) = (vec![0.0f32; k], vec![0.0f32; m]);
        let (tau, seed) = (0.5, 0x1234_5678);
        let noise = quantize::Noise { seed, step: 3, row };
        let ref_noise = RefNoise { seed, step: 3, row };
        quantize::gumbel_backward(&g, &z, &codebook, tau, Some(noise), &mut scores, &mut c_bar, &mut out);
        let cw = to_f64(&codebook);
        let want = soft::backward_row(&gw, &zw, &cw, tau as f64, Some(ref_noise));
        let tol = 1e-5 * (1.0 + soft::backward_scale(&gw, &zw, &cw, tau as f64, Some(ref_noise)));
        assert_close_each(&format!("gumbel row {row}"), &out, &want, |_| tol);
        // From the sample's kept scores the backward is the same, bit for bit.
        let mut kept = vec![0.0f32; m];
        quantize::gumbel_scores(&z, &codebook, tau, Some(noise), &mut scores);
        quantize::relaxed_backward(&g, &codebook, tau, &mut scores, &mut c_bar, &mut kept);
        assert_eq!(common::bits(&kept), common::bits(&out), "gumbel row {row}: from kept scores");
        let sampled = quantize::gumbel_scores(&z, &codebook, tau, Some(noise), &mut scores);
        assert_eq!(sampled as u32, soft::sample_row(&zw, &cw, tau as f64, Some(ref_noise)), "gumbel sample, row {row}");
        // Stochastic code sampling's draw (rows 0 and 1 put z on a code and at 0).
        let drawn = quantize::stochastic_sample(&z, &codebook, tau, noise) as u32;
        assert_eq!(drawn, soft::stochastic_row(&zw, &cw, tau as f64, ref_noise), "stochastic draw, row {row}");
        quantize::learned_row(&transport, &g, &mut out);
        assert_close_each(&format!("learned row {row}"), &out, &learned_row(&to_f64(&transport), &gw), |_| {
            scale * 10.0
        });
    }
}

/// The orthogonality penalty's gradient, added onto a gradient, against the reference: random codebooks, a zero
/// code and K = 1.
#[test]
fn orthogonal_penalty_matches_the_reference() {
    use vqgrad::train::fast::orthogonal::add_grad;
    let mut data = Data::new(29);
    for &(k, m) in &[(1usize, 4usize), (5, 3), (32, 4), (64, 8)] {
        let mut codebook = data.normal(k * m, 0.7);
        codebook[..m].fill(0.0);
        let start = data.normal(k * m, 0.01);
        let (mut got, mut scratch) = (start.clone(), vec![0.0f32; (k + 1) * m]);
        add_grad(&codebook, m, 10.0, &mut scratch, &mut got);
        let penalty = vqgrad::reference::orthogonal::grad(&to_f64(&codebook), m);
        let want: Vec<f64> = start.iter().zip(&penalty).map(|(s, p)| *s as f64 + 10.0 * p).collect();
        let scale = want.iter().map(|v| v.abs()).fold(1e-3, f64::max);
        assert_close_each(&format!("orthogonal k {k} m {m}"), &got, &want, |_| 1e-5 * scale);
        assert_eq!(common::bits(&got[..m]), common::bits(&start[..m]), "k {k}: the zero code's gradient is 0");
    }
}

#[test]
fn lloyd_matches_the_reference() {
    let mut data = Data::new(14);
    let (n, k, m, iters) = (2000, 16, 4, 10);
    let z = data.normal(n * m, 1.0);
    let centres = data.normal(k * m, 1.0);
    let got = vqgrad::train::fast::lloyd(&z, &centres, m, iters);
    let mut want = to_f64(&centres);
    vqgrad::train::lloyd(&to_f64(&z), &mut want, m, iters);
    let got: Vec<f32> = got.iter().map(|&v| v as f32).collect();
    assert_close_each("lloyd centres", &got, &want, |_| 1e-5);
}

/// The engine's sums run over fixed blocks, in order: one thread and many give the same bits.
#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    let config = TrainConfig {
        data: DataSpec::Subspace { dim: 32, rank: 3, sigma: 0.05 },
        n_train: 2048,
        n_eval: 1500,
        latent: 20,
        codes: 24,
        steps: 20,
        eval_every: 10,
        batch: 300,
        estimator: Estimator::RotationTrick,
        ..TrainConfig::default()
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let result = pool.install(|| Engine::Cpu.run(std::slice::from_ref(&config), &mut |_, _| {}, &mut |_, _| {}));
        serde_json::to_value(&result.unwrap()[0].curve).unwrap()
    };
    assert_eq!(run(1), run(3));
}
