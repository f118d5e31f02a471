//! The dense layers of the fast CPU engine: every product is one blocked, vectorized f32 GEMM
//! (`matrixmultiply::sgemm`) on row-major slices, with strides standing in for transposes, so nothing is copied
//! and nothing is allocated.

use crate::contract::Linear;

/// `C (m x n) = A (m x k) B (k x n) + beta C`, each operand a slice with its (row, column) strides. The lengths are
/// checked here so that the unchecked product below can never read or write out of bounds.
#[allow(clippy::too_many_arguments)]
fn gemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(k == 0 || (a.len() > last(m, k, rsa, csa) && b.len() > last(k, n, rsb, csb)), "gemm operand too short");
    assert!(c.len() > last(m, n, rsc, csc), "gemm output too short");
    let s = |v: usize| v as isize;
    // SAFETY: the asserts above keep every index the product touches inside its slice; `c` does not alias `a`
    // or `b` (it is borrowed mutably beside them).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            s(rsa),
            s(csa),
            b.as_ptr(),
            s(rsb),
            s(csb),
            beta,
            c.as_mut_ptr(),
            s(rsc),
            s(csc),
        );
    }
}

/// `y = act(x W^T + b)` for `rows` rows of `x` (rows x input) into `y` (rows x output).
pub fn forward(p: &[f32], l: Linear, x: &[f32], rows: usize, relu: bool, y: &mut [f32]) {
    let (input, output) = (l.input as usize, l.output as usize);
    let (w, b) = (&p[l.w_off as usize..l.b_off as usize], &p[l.b_off as usize..l.b_off as usize + output]);
    let y = &mut y[..rows * output];
    gemm((rows, input, output), x, (input, 1), w, (1, input), 0.0, y, (output, 1));
    // The bias and the activation in one pass over the output.
    for row in y.chunks_exact_mut(output) {
        row.iter_mut().zip(b).for_each(|(v, b)| *v = if relu { (*v + b).max(0.0) } else { *v + b });
    }
}

/// Writes `dW = dy^T x` and `db = sum dy` into `grads` (overwriting: each parameter belongs to one layer) and,
/// when asked, `dx = dy W` (rows x input).
pub fn backward(p: &[f32], l: Linear, x: &[f32], dy: &[f32], rows: usize, grads: &mut [f32], dx: Option<&mut [f32]>) {
    let (input, output) = (l.input as usize, l.output as usize);
    let (w_off, b_off) = (l.w_off as usize, l.b_off as usize);
    let dy = &dy[..rows * output];
    gemm((output, rows, input), dy, (1, output), x, (input, 1), 0.0, &mut grads[w_off..b_off], (input, 1));
    let db = &mut grads[b_off..b_off + output];
    db.fill(0.0);
    for row in dy.chunks_exact(output) {
        db.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    if let Some(dx) = dx {
        gemm((rows, output, input), dy, (output, 1), &p[w_off..b_off], (input, 1), 0.0, dx, (input, 1));
    }
}

/// Runs `layers` in order (ReLU after those that have one) on `rows` rows of `x`, each layer's output into its
/// buffer of `outs` (each at least rows x its output).
pub fn forward_layers(p: &[f32], layers: &[Linear], x: &[f32], rows: usize, outs: &mut [Vec<f32>]) {
    for i in 0..layers.len() {
        let (done, rest) = outs.split_at_mut(i);
        let input = if i == 0 { x } else { &done[i - 1] };
        forward(p, layers[i], input, rows, layers[i].relu, &mut rest[0]);
    }
}

/// Back through `layers` from their input `x` and outputs `outs`: on entry `grad` holds the gradient at the last
/// output; the parameter gradients go into `grads`, and on return `grad` holds the gradient at `x` when
/// `want_input` (else it is left as scratch). `spare` is scratch as large as `grad`.
#[allow(clippy::too_many_arguments)]
pub fn backward_layers(
    p: &[f32],
    layers: &[Linear],
    x: &[f32],
    outs: &[Vec<f32>],
    rows: usize,
    grads: &mut [f32],
    grad: &mut Vec<f32>,
    spare: &mut Vec<f32>,
    want_input: bool,
) {
    for i in (0..layers.len()).rev() {
        let input = if i == 0 { x } else { &outs[i - 1] };
        let need_dx = i > 0 || want_input;
        backward(p, layers[i], input, grad, rows, grads, need_dx.then_some(&mut spare[..]));
        if i > 0 && layers[i - 1].relu {
            // ReLU backward from the ReLU's output, as the other engines do.
            let width = layers[i].input as usize;
            spare[..rows * width].iter_mut().zip(&outs[i - 1]).for_each(|(g, &y)| {
                if y <= 0.0 {
                    *g = 0.0;
                }
            });
        }
        if need_dx {
            std::mem::swap(grad, spare);
        }
    }
}

/// `out (rows x k) = a (rows x inner) b^T` for `b` (k x inner): each row of `a` against each row of `b`.
pub fn product_t(a: &[f32], b: &[f32], (rows, inner, k): (usize, usize, usize), out: &mut [f32]) {
    gemm((rows, inner, k), a, (inner, 1), b, (1, inner), 0.0, out, (k, 1));
}

/// The instruction set the GEMM runs on here (`matrixmultiply` picks its kernel at run time, in this order):
/// `avx512f`, `avx2+fma`, `avx`, `sse2` on x86-64, else the architecture. Results of the fast engine are exact functions of it, so results and
/// the golden pins record it.
pub fn simd() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            "avx512f"
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            "avx2+fma"
        } else if is_x86_feature_detected!("avx") {
            "avx"
        } else {
            "sse2"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}
