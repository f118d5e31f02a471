// Dense layers: one strided, tiled matrix product covers the forward pass and both backward products.
//   matmul        C[i, j] = act(sum_k A[i, k] B[k, j] + bias[j])        (C is rows x cols, row-major with stride c_row)
//                 A[i, k] = a[a_off + i a_row + k a_col], B[k, j] = b[b_off + k b_row + j b_col]
//   forward:      Y = X W^T + b        (W is out x in, as PyTorch stores it)
//   input grad:   dX = dY W
//   weight grad:  dW = dY^T X
//   column_sums   out[c_off + j] = sum_i A[i, j]                        (the bias gradient; rows in order)
//   relu_mask     g[i] = g[i] if y[i] > 0 else 0                        (ReLU backward, from the ReLU's output)
// Every output element is one invocation's sum over k (or i) in increasing order: deterministic.

struct Params {
    rows: u32,
    cols: u32,
    inner: u32,
    flags: u32,      // bit 0: add bias; bit 1: ReLU
    a_off: u32,
    a_row: u32,
    a_col: u32,
    b_off: u32,
    b_row: u32,
    b_col: u32,
    c_off: u32,
    c_row: u32,
    bias_off: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const FLAG_BIAS: u32 = 1u;
const FLAG_RELU: u32 = 2u;
const T: u32 = 16u; // output tile edge; the workgroup is T x T

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

var<workgroup> tile_a: array<f32, 256>; // T x T
var<workgroup> tile_b: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = wid.y * T + lid.y;
    let j = wid.x * T + lid.x;
    var acc = 0.0;
    for (var k0 = 0u; k0 < params.inner; k0 += T) {
        // Stage A[i, k0 + lid.x] and B[k0 + lid.y, j]; zeros outside the matrices.
        let ka = k0 + lid.x;
        let kb = k0 + lid.y;
        var va = 0.0;
        if (i < params.rows && ka < params.inner) {
            va = a[params.a_off + i * params.a_row + ka * params.a_col];
        }
        var vb = 0.0;
        if (kb < params.inner && j < params.cols) {
            vb = b[params.b_off + kb * params.b_row + j * params.b_col];
        }
        tile_a[lid.y * T + lid.x] = va;
        tile_b[lid.y * T + lid.x] = vb;
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk++) {
            acc = fma(tile_a[lid.y * T + kk], tile_b[kk * T + lid.x], acc);
        }
        workgroupBarrier();
    }
    if (i < params.rows && j < params.cols) {
        if ((params.flags & FLAG_BIAS) != 0u) {
            acc += bias[params.bias_off + j];
        }
        if ((params.flags & FLAG_RELU) != 0u) {
            acc = max(acc, 0.0);
        }
        c[params.c_off + i * params.c_row + j] = acc;
    }
}

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn column_sums(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= params.cols) {
        return;
    }
    var acc = 0.0;
    for (var i = 0u; i < params.rows; i++) {
        acc += a[params.a_off + i * params.a_row + j * params.a_col];
    }
    c[params.c_off + j] = acc;
}

// In place on c (the gradient), masked by b (the ReLU's output): `rows` elements from c_off and b_off.
@compute @workgroup_size(WORKGROUP_SIZE)
fn relu_mask(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (e >= params.rows) {
        return;
    }
    if (b[params.b_off + e] <= 0.0) {
        c[params.c_off + e] = 0.0;
    }
}
