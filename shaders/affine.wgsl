// The affine re-parameterization of a codebook (a codebook-collapse remedy, docs/PROTOCOL.md §6.6): the codebook
// the quantizer uses is C = C0 diag(1 + a s) + a b, the learned codes C0 (K x m) under a per-dimension scale s and
// shift b (scale_shift = [s (m), b (m)] per run) with the step scale a.
//   affine_grad    from the codebook's gradient G: ds_j = a sum_k G_kj C0_kj, db_j = a sum_k G_kj (over k in
//                  order), and G becomes dC0 = G diag(1 + a s) in place. One invocation per dimension j.
//   affine_apply   C from C0, s and b. One invocation per element.
// Batched runs (global_invocation_id.z = run) read and write their own slices.

struct Params {
    k: u32,
    m: u32,
    lr_scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> raw: array<f32>;
@group(0) @binding(2) var<storage, read> scale_shift: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> scale_shift_grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> codebook: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn affine_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = params.m;
    let j = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (j >= m) {
        return;
    }
    let a = params.lr_scale;
    let codes = gid.z * params.k * m;
    let own = gid.z * 2u * m;
    let factor = 1.0 + a * scale_shift[own + j];
    var gc = 0.0;
    var gs = 0.0;
    for (var k = 0u; k < params.k; k++) {
        let e = codes + k * m + j;
        let g = grad[e];
        gc += g * raw[e];
        gs += g;
        grad[e] = g * factor;
    }
    scale_shift_grad[own + j] = a * gc;
    scale_shift_grad[own + m + j] = a * gs;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn affine_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = params.m;
    let element = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (element >= params.k * m) {
        return;
    }
    let a = params.lr_scale;
    let j = element % m;
    let own = gid.z * 2u * m;
    let e = gid.z * params.k * m + element;
    codebook[e] = raw[e] * (1.0 + a * scale_shift[own + j]) + a * scale_shift[own + m + j];
}
