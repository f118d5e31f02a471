// Dense layers: one strided, register-blocked matrix product covers the forward pass and both backward products.
//   matmul        C[i, j] = act(sum_k A[i, k] B[k, j] + bias[j])        (C is rows x cols, row-major with stride c_row)
//                 A[i, k] = a[a_off + i a_row + k a_col], B[k, j] = b[b_off + k b_row + j b_col]
//   forward:      Y = X W^T + b        (W is out x in, as PyTorch stores it); with FLAG_LOSS also the reconstruction
//                 loss gradient grad = scale (Y - target), fused so that Y is not read back by another pass
//   input grad:   dX = dY W
//   weight grad:  dW = dY^T X; with FLAG_ROW_SUMS also the bias gradient, c[bias_off + i] = sum_k A[i, k], from the
//                 invocations of the first column block (the sum is in column_sums' order, so the same bits)
//   column_sums   out[c_off + j] = sum_i A[i, j]                        (the bias gradient; rows in order)
//   relu_mask     g[i] = g[i] if y[i] > 0 else 0                        (ReLU backward, from the ReLU's output)
// Every output element is one invocation's sum over k (or i) in increasing order: deterministic.
// Indices are u32, so an operand has at most 2^32 elements.

struct Params {
    rows: u32,
    cols: u32,
    inner: u32,
    flags: u32,      // bit 0: add bias; bit 1: ReLU; bit 2: the loss gradient; bit 3: row sums of A
    a_off: u32,
    a_row: u32,
    a_col: u32,
    b_off: u32,
    b_row: u32,
    b_col: u32,
    c_off: u32,
    c_row: u32,
    bias_off: u32,
    scale: f32,      // FLAG_LOSS: the loss gradient's scale, 2 / (B d)
    a_run: u32,      // floats between two runs' A (runs stacked along global_invocation_id.z)
    b_run: u32,      // ... B and the bias (which live in the same parameter buffer)
    c_run: u32,      // ... C, the loss target and gradient, and the row sums
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_RELU: u32 = 2u;
const FLAG_LOSS: u32 = 4u;
const FLAG_ROW_SUMS: u32 = 8u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read> loss_target: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

fn finish(i: u32, j0: u32, v: vec4<f32>, run: u32) {
    if (i >= params.rows) {
        return;
    }
    for (var t = 0u; t < 4u; t++) {
        let j = j0 + t;
        if (j < params.cols) {
            var out = v[t];
            if ((params.flags & FLAG_BIAS) != 0u) {
                out += bias[run * params.b_run + params.bias_off + j];
            }
            if ((params.flags & FLAG_RELU) != 0u) {
                out = max(out, 0.0);
            }
            let e = run * params.c_run + params.c_off + i * params.c_row + j;
            c[e] = out;
            if ((params.flags & FLAG_LOSS) != 0u) {
                grad[e] = params.scale * (out - loss_target[e]);
            }
        }
    }
}

// Each invocation computes a 4 x 4 block of C in registers, reading A and B straight from memory: no workgroup
// memory and no barriers, which CPU drivers (lavapipe) run far faster, and the products here are small. Rows and
// columns past the edge are clamped on load and skipped on store.
@compute @workgroup_size(WORKGROUP_SIZE)
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let col_blocks = (params.cols + 3u) / 4u;
    let e = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    let i0 = (e / col_blocks) * 4u;
    let j0 = (e % col_blocks) * 4u;
    if (i0 >= params.rows) {
        return;
    }
    let run = gid.z;
    let last_i = params.rows - 1u;
    let last_j = params.cols - 1u;
    let a_off = run * params.a_run + params.a_off;
    let b_off = run * params.b_run + params.b_off;
    let a0 = a_off + min(i0, last_i) * params.a_row;
    let a1 = a_off + min(i0 + 1u, last_i) * params.a_row;
    let a2 = a_off + min(i0 + 2u, last_i) * params.a_row;
    let a3 = a_off + min(i0 + 3u, last_i) * params.a_row;
    let b0 = b_off + min(j0, last_j) * params.b_col;
    let b1 = b_off + min(j0 + 1u, last_j) * params.b_col;
    let b2 = b_off + min(j0 + 2u, last_j) * params.b_col;
    let b3 = b_off + min(j0 + 3u, last_j) * params.b_col;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var row_sums = vec4<f32>(0.0);
    for (var k = 0u; k < params.inner; k++) {
        let ka = k * params.a_col;
        let kb = k * params.b_row;
        let bk = vec4<f32>(b[b0 + kb], b[b1 + kb], b[b2 + kb], b[b3 + kb]);
        let ak = vec4<f32>(a[a0 + ka], a[a1 + ka], a[a2 + ka], a[a3 + ka]);
        c0 = fma(vec4<f32>(ak.x), bk, c0);
        c1 = fma(vec4<f32>(ak.y), bk, c1);
        c2 = fma(vec4<f32>(ak.z), bk, c2);
        c3 = fma(vec4<f32>(ak.w), bk, c3);
        row_sums += ak;
    }
    if ((params.flags & FLAG_ROW_SUMS) != 0u && j0 == 0u) {
        for (var t = 0u; t < 4u; t++) {
            if (i0 + t < params.rows) {
                c[run * params.c_run + params.bias_off + i0 + t] = row_sums[t];
            }
        }
    }
    finish(i0, j0, c0, run);
    finish(i0 + 1u, j0, c1, run);
    finish(i0 + 2u, j0, c2, run);
    finish(i0 + 3u, j0, c3, run);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn column_sums(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= params.cols) {
        return;
    }
    var acc = 0.0;
    let a_off = gid.z * params.a_run + params.a_off;
    for (var i = 0u; i < params.rows; i++) {
        acc += a[a_off + i * params.a_row + j * params.a_col];
    }
    c[gid.z * params.c_run + params.c_off + j] = acc;
}

// In place on c (the gradient), masked by b (the ReLU's output): `rows` elements from c_off and b_off.
@compute @workgroup_size(WORKGROUP_SIZE)
fn relu_mask(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (e >= params.rows) {
        return;
    }
    if (b[gid.z * params.b_run + params.b_off + e] <= 0.0) {
        c[gid.z * params.c_run + params.c_off + e] = 0.0;
    }
}
