// The Gumbel-softmax relaxation of the quantizer (the seed's "continuous relaxation" direction):
//   s_k = -||z - c_k||^2 / tau + G_k     G_k standard Gumbel noise hashed from (run seed, step, row, k), or 0
//   y = softmax(s),  a = argmax_k s_k    (ties: the lowest k)
//   soft_sample    index[i] = a, dist[i] = ||z_i - c_a||^2, q[i] = c_a         (the straight-through hard sample)
//                  with the run's unsquared flag, s_k = -||z - c_k|| / tau + G_k: stochastic code sampling's draw
//   soft_forward   q[i] = sum_k y_k c_k = c_a + sum_k y_k (c_k - c_a)          (the relaxed code)
//   soft_backward  grad_z[i] = J^T g_i + commit_coeff (z_i - c_{index[i]}),     J = d(sum_k y_k c_k)/dz:
//                  J^T g = (2 / tau) sum_k y_k (delta_k - delta_bar) (c_k - c_a),  delta_k = g.(c_k - c_a),
//                  delta_bar = sum_k y_k delta_k: the covariance of g.c and c under y, centred on c_a so that a
//                  concentrated y (small tau) loses nothing to cancellation.
// tau and the step come per step from the step uniform (an annealed temperature, recorded many steps to a submit).
// Each run has its own settings: whether the kernel touches it (a batch may mix estimators), its flags (bit 0: add
// noise; bit 1: score with the unsquared distance), its seed and its commitment coefficient. Batched:
// global_invocation_id.z is the run, its rows at run * n, its codes at run * k. One invocation per row; every pass
// over the codebook costs k m, and codes whose weight underflows to 0 are skipped.

struct Params {
    n: u32,
    m: u32,
    k: u32,
    _pad: u32,
}

struct RunSettings {
    enabled: u32,
    flags: u32,
    seed: u32,
    commit_coeff: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> codebook: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> index: array<u32>;
@group(0) @binding(5) var<storage, read_write> dist: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read> settings: array<RunSettings>;
@group(1) @binding(0) var<uniform> step: Step;

override WORKGROUP_SIZE: u32 = 64u;

// Standard Gumbel noise -ln(-ln u), u = (h / 2^9 + 1/2) / 2^23 in (0, 1), exact in f32 (`reference::gumbel_uniform`).
fn gumbel(seed: u32, t: u32, row: u32, k: u32) -> f32 {
    let h = mix32(seed ^ mix32(t ^ mix32(row ^ mix32(k ^ 0x9e3779b9u))));
    let u = (f32(h >> 9u) + 0.5) * (1.0 / 8388608.0);
    return -log(-log(u));
}

struct Row {
    run: u32,
    i: u32,  // the row within its run (the noise hash's row)
    zs: u32, // the row's first element
    cs: u32, // the run's first code element
}

fn row_of(gid: vec3<u32>, nwg: vec3<u32>) -> Row {
    let i = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    return Row(gid.z, i, (gid.z * params.n + i) * params.m, gid.z * params.k * params.m);
}

fn sq_dist(r: Row, k: u32) -> f32 {
    var d = 0.0;
    for (var j = 0u; j < params.m; j++) {
        let v = z[r.zs + j] - codebook[r.cs + k * params.m + j];
        d = fma(v, v, d);
    }
    return d;
}

fn score(r: Row, k: u32) -> f32 {
    var d = sq_dist(r, k);
    if ((settings[r.run].flags & 2u) != 0u) {
        d = sqrt(d);
    }
    var s = -d / step.tau;
    if ((settings[r.run].flags & 1u) != 0u) {
        s += gumbel(settings[r.run].seed, step.step, r.i, k);
    }
    return s;
}

struct Best {
    a: u32,
    top: f32,
}

// The argmax of the scores (ties: the lowest k) and the largest score.
fn best(r: Row) -> Best {
    var top = score(r, 0u);
    var a = 0u;
    for (var k = 1u; k < params.k; k++) {
        let s = score(r, k);
        if (s > top) {
            top = s;
            a = k;
        }
    }
    return Best(a, top);
}

fn runs_row(gid: vec3<u32>, nwg: vec3<u32>) -> bool {
    let i = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    return i < params.n && settings[gid.z].enabled != 0u;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn soft_sample(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    if (!runs_row(gid, nwg)) {
        return;
    }
    let r = row_of(gid, nwg);
    let a = best(r).a;
    index[r.run * params.n + r.i] = a;
    dist[r.run * params.n + r.i] = sq_dist(r, a);
    for (var j = 0u; j < params.m; j++) {
        out[r.zs + j] = codebook[r.cs + a * params.m + j];
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn soft_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    if (!runs_row(gid, nwg)) {
        return;
    }
    let r = row_of(gid, nwg);
    let b = best(r);
    let a = b.a;
    var total = 0.0;
    for (var k = 0u; k < params.k; k++) {
        total += exp(score(r, k) - b.top);
    }
    let ca = r.cs + a * params.m;
    for (var j = 0u; j < params.m; j++) {
        out[r.zs + j] = codebook[ca + j];
    }
    for (var k = 0u; k < params.k; k++) {
        let y = exp(score(r, k) - b.top) / total;
        if (y > 0.0 && k != a) {
            let ck = r.cs + k * params.m;
            for (var j = 0u; j < params.m; j++) {
                out[r.zs + j] += y * (codebook[ck + j] - codebook[ca + j]);
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn soft_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    if (!runs_row(gid, nwg)) {
        return;
    }
    let r = row_of(gid, nwg);
    let b = best(r);
    let a = b.a;
    let ca = r.cs + a * params.m;
    // delta_k = g.(c_k - c_a), and the softmax's normalizer and mean of delta.
    var total = 0.0;
    var delta_sum = 0.0;
    for (var k = 0u; k < params.k; k++) {
        let e = exp(score(r, k) - b.top);
        if (e > 0.0) {
            var delta = 0.0;
            for (var j = 0u; j < params.m; j++) {
                delta = fma(g[r.zs + j], codebook[r.cs + k * params.m + j] - codebook[ca + j], delta);
            }
            total += e;
            delta_sum = fma(e, delta, delta_sum);
        }
    }
    let delta_bar = delta_sum / total;
    // The commitment term at the forward's code, then the covariance accumulated code by code.
    let commit = settings[r.run].commit_coeff;
    let q = r.cs + min(index[r.run * params.n + r.i], params.k - 1u) * params.m;
    for (var j = 0u; j < params.m; j++) {
        out[r.zs + j] = commit * (z[r.zs + j] - codebook[q + j]);
    }
    let scale = 2.0 / (step.tau * total);
    for (var k = 0u; k < params.k; k++) {
        let e = exp(score(r, k) - b.top);
        if (e > 0.0 && k != a) {
            let ck = r.cs + k * params.m;
            var delta = 0.0;
            for (var j = 0u; j < params.m; j++) {
                delta = fma(g[r.zs + j], codebook[ck + j] - codebook[ca + j], delta);
            }
            let w = scale * e * (delta - delta_bar);
            for (var j = 0u; j < params.m; j++) {
                out[r.zs + j] = fma(w, codebook[ck + j] - codebook[ca + j], out[r.zs + j]);
            }
        }
    }
}
