// Maps of the encodings before the quantizer (codebook-collapse remedies, docs/PROTOCOL.md §6.6), elementwise over
// rows of m (runs stacked: every run shares the map). FSQ's bound of dimension j, from its constants
// (h, offset, shift, w) = constants[j]:
//   fsq_forward    out = (tanh(z + shift) h - offset) / w
//   fsq_backward   out = dy (1 - tanh^2(z + shift)) h / w
// One invocation per element.

struct Params {
    len: u32, // elements: runs x rows x m
    m: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> constants: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;

override WORKGROUP_SIZE: u32 = 256u;

fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn fsq_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = element(gid, nwg);
    if (e >= params.len) {
        return;
    }
    let c = constants[e % params.m];
    out[e] = (tanh(z[e] + c.z) * c.x - c.y) / c.w;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn fsq_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = element(gid, nwg);
    if (e >= params.len) {
        return;
    }
    let c = constants[e % params.m];
    let t = tanh(z[e] + c.z);
    out[e] = dy[e] * (1.0 - t * t) * c.x / c.w;
}
