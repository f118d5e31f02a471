// Elementwise steps of residual VQ (the seed's "hierarchical VQ" direction), over every element of the stacked runs:
//   subtract     out = a - b     (the next level's input: the residual r_l = r_{l-1} - q_{l-1})
//   accumulate   out = out + a   (the decoder's input q = sum_l q_l; dL/dz = sum_l E_l)

struct Params {
    len: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WORKGROUP_SIZE: u32 = 256u;

fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn subtract(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = element(gid, nwg);
    if (e < params.len) {
        out[e] = a[e] - b[e];
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = element(gid, nwg);
    if (e < params.len) {
        out[e] = out[e] + a[e];
    }
}
