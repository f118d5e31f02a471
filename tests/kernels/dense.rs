use crate::common::{Data, assert_clean, assert_close_each, bits, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::dense::{Dense, Linear, LossTarget};

/// y = x W^T + b, dx = dy W, dW = dy^T x, db = column sums of dy, in f64 on the host.
fn reference(x: &[f32], w: &[f32], bias: &[f32], dy: &[f32], (n, i, o): (usize, usize, usize)) -> [Vec<f64>; 4] {
    let mut y = vec![0.0; n * o];
    let mut dx = vec![0.0; n * i];
    let mut dw = vec![0.0; o * i];
    let mut db = vec![0.0; o];
    for r in 0..n {
        for c in 0..o {
            y[r * o + c] = bias[c] as f64 + (0..i).map(|k| x[r * i + k] as f64 * w[c * i + k] as f64).sum::<f64>();
            db[c] += dy[r * o + c] as f64;
            for k in 0..i {
                dx[r * i + k] += dy[r * o + c] as f64 * w[c * i + k] as f64;
                dw[c * i + k] += dy[r * o + c] as f64 * x[r * i + k] as f64;
            }
        }
    }
    [y, dx, dw, db]
}

/// Every product of a layer against the f64 reference, on shapes that are not multiples of the 4 x 4 block
/// (1, 3, 5, 7, 13 rows or columns), a ReLU layer, and the layer at a non-zero offset in the parameter buffer.
/// Tolerance: 4 (inner + 4) eps_f32 times the element's sum of absolute terms.
#[test]
fn dense_products_match_the_reference_on_odd_shapes() {
    let gpu = gpu_or_skip!();
    let dense = Dense::new(&gpu.device).unwrap();
    for (seed, &(n, i, o)) in
        [(1, 1, 1), (3, 5, 7), (13, 4, 1), (5, 256, 4), (64, 4, 256), (7, 9, 13)].iter().enumerate()
    {
        let mut d = Data::new(seed as u64 + 40);
        let offset = 3 * seed; // the layer sits after other parameters
        let (w_off, b_off) = (offset as u32, (offset + o * i) as u32);
        let layer = Linear { input: i as u32, output: o as u32, w_off, b_off, relu: false };
        let (x, dy) = (d.normal(n * i, 1.0), d.normal(n * o, 1.0));
        let mut params = d.normal(offset, 1.0);
        let (w, bias) = (d.normal(o * i, 1.0), d.normal(o, 1.0));
        params.extend_from_slice(&w);
        params.extend_from_slice(&bias);
        let up = |label, v: &[f32]| gpu.upload(label, v).unwrap();
        let (xb, dyb, pb) = (up("x", &x), up("dy", &dy), up("params", &params));
        let yb = gpu.zeroed::<f32>("y", n * o).unwrap();
        let dxb = gpu.zeroed::<f32>("dx", n * i).unwrap();
        let gb = gpu.zeroed::<f32>("grads", params.len()).unwrap();
        let dev = &gpu.device;
        let ops = [
            dense.bind_forward(dev, layer, &xb, &pb, &yb, n as u32, false).unwrap(),
            dense.bind_input_grad(dev, layer, &dyb, &pb, &dxb, n as u32).unwrap(),
            dense.bind_weight_grad(dev, layer, &dyb, &xb, &gb, n as u32).unwrap(),
            dense.bind_bias_grad(dev, layer, &dyb, &gb, n as u32).unwrap(),
        ];
        run_pass(&gpu, |pass| ops.iter().for_each(|op| op.encode(pass)));
        let [y, dx, dw, db] = reference(&x, &w, &bias, &dy, (n, i, o));
        // The same products of absolute values: each element's sum of |terms|, the scale of its rounding error.
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
        let [ya, dxa, dwa, dba] = reference(&abs(&x), &abs(&w), &abs(&bias), &abs(&dy), (n, i, o));
        let grads: Vec<f32> = gpu.read(&gb).unwrap();
        let shape = format!("n={n} in={i} out={o}");
        let tol = |inner: usize, scale: &[f64]| {
            let scale = scale.to_vec();
            move |e: usize| 4.0 * (inner as f64 + 4.0) * f32::EPSILON as f64 * scale[e] + 1e-30
        };
        assert_close_each(&format!("y {shape}"), &gpu.read::<f32>(&yb).unwrap()[..n * o], &y, tol(i, &ya));
        assert_close_each(&format!("dx {shape}"), &gpu.read::<f32>(&dxb).unwrap()[..n * i], &dx, tol(o, &dxa));
        assert_close_each(&format!("dW {shape}"), &grads[offset..offset + o * i], &dw, tol(n, &dwa));
        assert_close_each(&format!("db {shape}"), &grads[offset + o * i..offset + o * i + o], &db, tol(n, &dba));
        assert!(grads[..offset].iter().all(|&g| g == 0.0), "{shape}: gradients written before the layer");
        // The fused weight and bias gradient: the same bits as the two separate kernels.
        let fused_grads = gpu.zeroed::<f32>("fused grads", params.len()).unwrap();
        let fused = dense.bind_weight_and_bias_grad(dev, layer, &dyb, &xb, &fused_grads, n as u32).unwrap();
        run_pass(&gpu, |pass| fused.encode(pass));
        assert_eq!(bits(&gpu.read::<f32>(&fused_grads).unwrap()), bits(&grads), "{shape}: fused weight and bias grads");
        // ReLU: the same forward, clamped at zero.
        let relu = dense.bind_forward(dev, layer, &xb, &pb, &yb, n as u32, true).unwrap();
        run_pass(&gpu, |pass| relu.encode(pass));
        let y_relu: Vec<f64> = y.iter().map(|v| v.max(0.0)).collect();
        assert_close_each(&format!("relu y {shape}"), &gpu.read::<f32>(&yb).unwrap()[..n * o], &y_relu, tol(i, &ya));
        // The output layer with the loss gradient fused: y as before, and grad = scale (y - target).
        let target = d.normal(n * o, 1.0);
        let tb = up("target", &target);
        let gradb = gpu.zeroed::<f32>("dy out", n * o).unwrap();
        let scale = 2.0 / (n * o) as f32;
        let loss = LossTarget { target: &tb, grad: &gradb, scale };
        let fused = dense.bind_forward_with_loss(dev, layer, &xb, &pb, &yb, n as u32, &loss).unwrap();
        run_pass(&gpu, |pass| fused.encode(pass));
        let y_gpu: Vec<f32> = gpu.read(&yb).unwrap();
        assert_close_each(&format!("loss y {shape}"), &y_gpu[..n * o], &y, tol(i, &ya));
        let g_ref: Vec<f64> = y.iter().zip(&target).map(|(v, t)| scale as f64 * (v - *t as f64)).collect();
        let g_scale: Vec<f64> = ya.iter().zip(&target).map(|(v, t)| scale as f64 * (v + t.abs() as f64)).collect();
        assert_close_each(
            &format!("loss grad {shape}"),
            &gpu.read::<f32>(&gradb).unwrap()[..n * o],
            &g_ref,
            tol(i, &g_scale),
        );
        // Bit for bit what the separate loss kernel would write from the same y.
        let expect: Vec<f32> = y_gpu[..n * o].iter().zip(&target).map(|(v, t)| scale * (v - t)).collect();
        assert_eq!(bits(&gpu.read::<f32>(&gradb).unwrap()[..n * o]), bits(&expect), "{shape}: fused loss bits");
    }
    let (b1, b2) = (gpu.zeroed::<f32>("b1", 4).unwrap(), gpu.zeroed::<f32>("b2", 4).unwrap());
    let bad = LossTarget { target: &b1, grad: &b2, scale: f32::NAN };
    let layer = Linear { input: 2, output: 2, w_off: 0, b_off: 4, relu: false };
    let params = gpu.zeroed::<f32>("p", 6).unwrap();
    assert!(dense.bind_forward_with_loss(&gpu.device, layer, &b1, &params, &b2, 2, &bad).is_err(), "NaN scale");
    assert_clean(&gpu);
}

/// Runs stacked in every buffer (`Dense::for_runs`) give each run the bits it gives alone, for every product.
#[test]
fn batched_runs_equal_single_runs_bit_for_bit() {
    let gpu = gpu_or_skip!();
    let single = Dense::new(&gpu.device).unwrap();
    for &(n, i, o, runs) in &[(3, 5, 7, 3), (64, 4, 256, 2), (5, 256, 4, 4)] {
        let mut d = Data::new((n * i * o) as u64);
        let layer = Linear { input: i as u32, output: o as u32, w_off: 2, b_off: (2 + o * i) as u32, relu: false };
        let stride = 2 + o * i + o + 3; // each run's parameters, then a gap
        let (x, dy, params) = (d.normal(runs * n * i, 1.0), d.normal(runs * n * o, 1.0), d.normal(runs * stride, 1.0));
        let target = d.normal(runs * n * o, 1.0);
        let len = n * i.min(o); // the ReLU mask's elements per run
        let (relu_g, relu_y) = (d.normal(runs * len, 1.0), d.normal(runs * len, 1.0));
        let scale = 0.5;
        let batched = single.for_runs(runs as u32, stride as u32).unwrap();
        // Every product, on the runs together or on one run's slices; returns (y, dy out, dx, grads, relu).
        let outputs = |dense: &Dense, [x, dy, params, target, rg, ry]: [&[f32]; 6]| -> Vec<Vec<f32>> {
            let up = |label, v: &[f32]| gpu.upload(label, v).unwrap();
            let (xb, dyb, pb, tb) = (up("x", x), up("dy", dy), up("params", params), up("target", target));
            let yb = gpu.zeroed::<f32>("y", dy.len()).unwrap();
            let gb_out = gpu.zeroed::<f32>("loss grad", dy.len()).unwrap();
            let dxb = gpu.zeroed::<f32>("dx", x.len()).unwrap();
            let gb = gpu.zeroed::<f32>("grads", params.len()).unwrap();
            let bias_only = gpu.zeroed::<f32>("bias grads", params.len()).unwrap();
            let (relu_g, relu_y) = (up("relu g", rg), up("relu y", ry));
            let rows = (x.len() / i) as u32 / (params.len() / stride) as u32;
            let loss = LossTarget { target: &tb, grad: &gb_out, scale };
            let dev = &gpu.device;
            let ops = [
                dense.bind_forward_with_loss(dev, layer, &xb, &pb, &yb, rows, &loss).unwrap(),
                dense.bind_input_grad(dev, layer, &dyb, &pb, &dxb, rows).unwrap(),
                dense.bind_weight_and_bias_grad(dev, layer, &dyb, &xb, &gb, rows).unwrap(),
                dense.bind_relu_mask(dev, &relu_g, &relu_y, len as u32).unwrap(),
                dense.bind_bias_grad(dev, layer, &dyb, &bias_only, rows).unwrap(),
            ];
            run_pass(&gpu, |pass| ops.iter().for_each(|op| op.encode(pass)));
            [&yb, &gb_out, &dxb, &gb, &relu_g, &bias_only].iter().map(|b| gpu.read::<f32>(b).unwrap()).collect()
        };
        let together = outputs(&batched, [&x, &dy, &params, &target, &relu_g, &relu_y]);
        for r in 0..runs {
            let alone = outputs(
                &single,
                [
                    &x[r * n * i..(r + 1) * n * i],
                    &dy[r * n * o..(r + 1) * n * o],
                    &params[r * stride..(r + 1) * stride],
                    &target[r * n * o..(r + 1) * n * o],
                    &relu_g[r * len..(r + 1) * len],
                    &relu_y[r * len..(r + 1) * len],
                ],
            );
            let what = format!("n={n} in={i} out={o} run {r} of {runs}");
            let slices = [n * o, n * o, n * i, stride, len, stride];
            for (k, ((t, a), len)) in together.iter().zip(&alone).zip(slices).enumerate() {
                let (t, a) = (&t[r * len..(r + 1) * len], &a[..len]);
                if k == 3 || k == 5 {
                    // Gradients: only the layer's own slots are written.
                    assert_eq!(bits(&t[2..2 + o * i + o]), bits(&a[2..2 + o * i + o]), "{what}: grads {k}");
                } else {
                    assert_eq!(bits(t), bits(a), "{what}: output {k}");
                }
            }
        }
    }
    assert!(single.for_runs(0, 1).is_err(), "zero runs");
    assert_clean(&gpu);
}
