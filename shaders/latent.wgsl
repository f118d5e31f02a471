// Maps of the encodings before the quantizer (codebook-collapse remedies, docs/PROTOCOL.md §6.6), elementwise over
// rows of m (runs stacked: every run shares the map). FSQ's bound of dimension j, from its constants
// (h, offset, shift, w) = constants[j]:
//   fsq_forward    out = (tanh(z + shift) h - offset) / w
//   fsq_backward   out = dy (1 - tanh^2(z + shift)) h / w
// One invocation per element. Cosine codes' unit rows are below.

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

// Cosine codes' unit rows, one invocation per row r (its m values at r m), the norm floored at 1e-12 as PyTorch's
// F.normalize:
//   unit_forward    out = z / max(||z||, eps)
//   unit_backward   out = (dy - u (u . dy)) / ||z||, u = z / ||z||;  dy / eps where ||z|| <= eps

const UNIT_EPS: f32 = 1e-12;

fn row_norm(start: u32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < params.m; j++) {
        s += z[start + j] * z[start + j];
    }
    return sqrt(s);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn unit_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = element(gid, nwg);
    if (r >= params.len / params.m) {
        return;
    }
    let start = r * params.m;
    let n = max(row_norm(start), UNIT_EPS);
    for (var j = 0u; j < params.m; j++) {
        out[start + j] = z[start + j] / n;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn unit_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = element(gid, nwg);
    if (r >= params.len / params.m) {
        return;
    }
    let start = r * params.m;
    let n = row_norm(start);
    if (n <= UNIT_EPS) {
        for (var j = 0u; j < params.m; j++) {
            out[start + j] = dy[start + j] / UNIT_EPS;
        }
        return;
    }
    var along = 0.0;
    for (var j = 0u; j < params.m; j++) {
        along += z[start + j] / n * dy[start + j];
    }
    for (var j = 0u; j < params.m; j++) {
        out[start + j] = (dy[start + j] - z[start + j] / n * along) / n;
    }
}
