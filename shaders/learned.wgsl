// The learned transport estimator (the seed's "learned transport" direction): E(g) = M g, M an m x m matrix per
// run, fitted during training as the best linear stand-in for the soft-assignment surrogate's Jacobian:
//   learned_backward   grad_z[i] += M g_i      (estimator.wgsl wrote the commitment term first)
//   learned_grad       dM = 2/(B m) sum_i (M g_i - s_i) g_i^T,  the gradient of L_M = 1/(B m) sum_i ||M g_i - s_i||^2,
//                      s_i = J_tau(z_i)^T g_i the relaxation's exact backward of the same g (soft.wgsl, no noise).
// Adam then steps M on dM. Batched: run r's rows at r n, its M at r m m; a disabled run is left alone (backward)
// or gets dM = 0 (so Adam leaves its M as it is).

struct Params {
    n: u32, // rows per run: the batch B
    m: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> transport: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> enabled: array<u32>;
@group(0) @binding(5) var<storage, read> s: array<f32>;

override WORKGROUP_SIZE: u32 = 64u;

// One invocation per row: grad_z[i] += M g_i.
@compute @workgroup_size(WORKGROUP_SIZE)
fn learned_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    let run = gid.z;
    if (i >= params.n || enabled[run] == 0u) {
        return;
    }
    let m = params.m;
    let row = (run * params.n + i) * m;
    let mat = run * m * m;
    for (var a = 0u; a < m; a++) {
        var acc = 0.0;
        for (var b = 0u; b < m; b++) {
            acc = fma(transport[mat + a * m + b], g[row + b], acc);
        }
        out[row + a] += acc;
    }
}

// One invocation per element (a, b) of M: dM[a][b] = 2/(B m) sum_i ((M g_i)_a - s_i[a]) g_i[b], rows in order.
@compute @workgroup_size(WORKGROUP_SIZE)
fn learned_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    let run = gid.z;
    let m = params.m;
    if (e >= m * m) {
        return;
    }
    let a = e / m;
    let b = e % m;
    let mat = run * m * m;
    var acc = 0.0;
    if (enabled[run] != 0u) {
        for (var i = 0u; i < params.n; i++) {
            let row = (run * params.n + i) * m;
            var mg = 0.0;
            for (var c = 0u; c < m; c++) {
                mg = fma(transport[mat + a * m + c], g[row + c], mg);
            }
            acc = fma(mg - s[row + a], g[row + b], acc);
        }
    }
    out[mat + e] = acc * (2.0 / (f32(params.n) * f32(m)));
}
