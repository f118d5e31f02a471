// The codebook's orthogonality penalty (a codebook-collapse remedy, docs/PROTOCOL.md §6.6), its gradient added to
// the codebook's gradient:
//   u_k = c_k / max(||c_k||, eps),  s_ij = u_i . u_j,  L = 1/K^2 sum_ij s_ij^2 - 1/K
//   dL/du_i = 4/K^2 sum_j s_ij u_j,  and along u_i:  dL/du_i . u_i = 4/K^2 sum_j s_ij^2
//   grad[i] += weight (dL/du_i - (dL/du_i . u_i) u_i) / ||c_i||      (dL/du_i / eps where ||c_i|| <= eps)
// One invocation per element (i, e) of every run's codebook (global_invocation_id.z the run, its codes at
// run * k); each passes over the codebook once, K (3 m) multiply-adds, and writes its own element alone.

struct Params {
    k: u32,
    m: u32,
    weight: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> codebook: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// PyTorch's F.normalize floor.
const EPS: f32 = 1e-12;

fn norm(start: u32) -> f32 {
    var s = 0.0;
    for (var e = 0u; e < params.m; e++) {
        s = fma(codebook[start + e], codebook[start + e], s);
    }
    return sqrt(s);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn orthogonal_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let element = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    let m = params.m;
    if (element >= params.k * m) {
        return;
    }
    let base = gid.z * params.k * m;
    let i = element / m;
    let e = element % m;
    let ci = base + i * m;
    let ni = norm(ci);
    let si = 1.0 / max(ni, EPS);
    var gu = 0.0;    // sum_j s_ij u_j[e]
    var along = 0.0; // sum_j s_ij^2
    for (var j = 0u; j < params.k; j++) {
        let cj = base + j * m;
        let sj = 1.0 / max(norm(cj), EPS);
        var s = 0.0;
        for (var f = 0u; f < m; f++) {
            s = fma(codebook[ci + f] * si, codebook[cj + f] * sj, s);
        }
        gu = fma(s, codebook[cj + e] * sj, gu);
        along = fma(s, s, along);
    }
    let scale = 4.0 / (f32(params.k) * f32(params.k));
    var d = scale * gu / EPS;
    if (ni > EPS) {
        d = scale * (gu - along * codebook[ci + e] * si) / ni;
    }
    grad[base + element] += params.weight * d;
}
