// The reconstruction loss and fixed-order sums (docs/PROTOCOL.md §2).
//   rec_grad      grad[e] = scale (xhat[e] - x[e]),  scale = 2 / (B d): dL_rec/dxhat
//   sum_sq_diff   out[slot] = sum_e (xhat[e] - x[e])^2      (one workgroup; a fixed order)
//   sum           out[slot] = sum_e xhat[e]                 (one workgroup; e.g. the assignment distances)

struct Params {
    len: u32,
    slot: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> xhat: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WORKGROUP_SIZE: u32 = 256u;
const REDUCE: u32 = 256u;
const PER_INVOCATION: u32 = 4u; // rec_grad: fewer, longer invocations run faster on CPU drivers

@compute @workgroup_size(WORKGROUP_SIZE)
fn rec_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e0 = (gid.x + gid.y * nwg.x * WORKGROUP_SIZE) * PER_INVOCATION;
    for (var e = e0; e < min(e0 + PER_INVOCATION, params.len); e++) {
        out[e] = params.scale * (xhat[e] - x[e]);
    }
}

var<workgroup> partial: array<f32, REDUCE>;

fn finish(lid: u32, local_sum: f32) {
    partial[lid] = local_sum;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var t = 0u; t < min(WORKGROUP_SIZE, REDUCE); t++) {
            total += partial[t];
        }
        out[params.slot] = total;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn sum_sq_diff(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var e = lid; e < params.len; e += WORKGROUP_SIZE) {
        let d = xhat[e] - x[e];
        acc = fma(d, d, acc);
    }
    finish(lid, acc);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn sum(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var e = lid; e < params.len; e += WORKGROUP_SIZE) {
        acc += xhat[e];
    }
    finish(lid, acc);
}
