// Backward of the quantization layer (docs/PROTOCOL.md §2): for each row i, with q = codebook[index[i]],
//   grad_z[i] = E(g_i, z_i, q_i) + commit_coeff * (z_i - q_i),    commit_coeff = 2 beta / (B m)
// where g = dL/dq~ comes back through the decoder and E is the estimator:
//   ste             g
//   rotation        (g.u) u,  u = (q - z) / (||q - z|| + 1e-8)             (the seed's; z == q gives 0)
//   rotation-trick  lambda R^T g = lambda (g - 2 r (r.g) + 2 z^ (q^.g))    (Fifty et al., ICLR 2025)
//   diveq           g - (g.u) u                                            (the complement of rotation)
//   gumbel          nothing: its backward needs the whole codebook and is soft.wgsl's (this kernel skips the run)
//   gumbel-rotation-trick   as rotation-trick, at the code the forward sampled
//   learned         the commitment term alone: learned.wgsl adds M g after
// Every estimator is a per-row combination  a g + b (q - z) + c z + e (z^ + q^),  so a row costs one pass of
// dot products (two for rotation-trick), then one pass that writes. One invocation per row.
// Batched: global_invocation_id.z picks one of several runs stacked in the buffers (g, z, grad_z [runs x n x m],
// index [runs x n], codebook [runs x k x m]), each with its own estimator and commitment coefficient.

struct Params {
    n: u32,
    m: u32,
    k: u32,
    _pad: u32,
}

struct RunSettings {
    estimator: u32,
    commit_coeff: f32,
}

const STE: u32 = 0u;
const ROTATION: u32 = 1u;
const ROTATION_TRICK: u32 = 2u;
const DIVEQ: u32 = 3u;
const GUMBEL: u32 = 4u;
const GUMBEL_ROTATION_TRICK: u32 = 5u;
const LEARNED: u32 = 6u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> index: array<u32>;
@group(0) @binding(4) var<storage, read> codebook: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_z: array<f32>;
@group(0) @binding(6) var<storage, read> settings: array<RunSettings>;

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn estimator_backward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (i >= params.n) {
        return;
    }
    let run = gid.z;
    var estimator = settings[run].estimator;
    if (estimator == GUMBEL) {
        return;
    }
    if (estimator == GUMBEL_ROTATION_TRICK) {
        estimator = ROTATION_TRICK;
    }
    let commit_coeff = settings[run].commit_coeff;
    let m = params.m;
    let row = run * params.n + i;
    let zs = row * m;
    let qs = (run * params.k + min(index[row], params.k - 1u)) * m;

    // Pass 1: the dot products every estimator needs.
    var vv = 0.0; // ||q - z||^2
    var gv = 0.0; // g . (q - z)
    var zz = 0.0;
    var qq = 0.0;
    var gq = 0.0;
    for (var j = 0u; j < m; j++) {
        let zj = z[zs + j];
        let qj = codebook[qs + j];
        let gj = g[zs + j];
        let vj = qj - zj;
        vv = fma(vj, vj, vv);
        gv = fma(gj, vj, gv);
        zz = fma(zj, zj, zz);
        qq = fma(qj, qj, qq);
        gq = fma(gj, qj, gq);
    }

    var a = select(1.0, 0.0, estimator == LEARNED); // coefficient of g
    var b = 0.0; // of (q - z)
    var c = 0.0; // of z
    var e = 0.0; // of w = z^ + q^ (rotation-trick)
    var inv_zn = 0.0;
    var inv_qn = 0.0;
    if (estimator == ROTATION || estimator == DIVEQ) {
        let denom = sqrt(vv) + 1e-8;
        let proj = gv / (denom * denom); // (g.u) u = proj (q - z)
        if (estimator == ROTATION) {
            a = 0.0;
            b = proj;
        } else {
            b = -proj;
        }
    } else if (estimator == ROTATION_TRICK) {
        let zn = sqrt(zz);
        let qn = sqrt(qq);
        if (zn >= 1e-8) {
            // q^ as torch.nn.functional.normalize makes it: q = 0 gives q^ = 0 (and lambda = 0).
            let izn = 1.0 / zn;
            let iqn = 1.0 / max(qn, 1e-12);
            // Pass 2: w = z^ + q^ elementwise, which stays accurate when z^ and q^ are nearly opposite; r = w / ||w||.
            var ww = 0.0;
            var gw = 0.0;
            for (var j = 0u; j < m; j++) {
                let w = z[zs + j] * izn + codebook[qs + j] * iqn;
                ww = fma(w, w, ww);
                gw = fma(g[zs + j], w, gw);
            }
            if (sqrt(ww) >= 1e-6) {
                // lambda R^T g = lambda (g - 2 w (w.g) / ||w||^2 + 2 z^ (q^.g))
                let lambda = qn * izn;
                a = lambda;
                e = -2.0 * lambda * gw / ww;
                c = 2.0 * lambda * izn * gq * iqn;
                inv_zn = izn;
                inv_qn = iqn;
            }
        }
    }
    b -= commit_coeff; // + commit_coeff (z - q)

    // Pass 3: write.
    for (var j = 0u; j < m; j++) {
        let zj = z[zs + j];
        let qj = codebook[qs + j];
        let w = zj * inv_zn + qj * inv_qn;
        grad_z[zs + j] = a * g[zs + j] + b * (qj - zj) + c * zj + e * w;
    }
}
