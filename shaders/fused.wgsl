// A whole training step of a small linear VQ autoencoder in one dispatch, one workgroup per run (STUDY.md's model
// with a linear encoder and decoder and the gradient codebook update, at shapes like E1's). Up to the parameter
// update, which the Adam kernel applies after it, it computes what the separate kernels compute:
//   x_i = train[schedule[row_offset + i]]                  (read in place: the batch is never copied)
//   z_i = W_e x_i + b_e,  a_i = argmin_k ||z_i - c_k||^2 (ties: the lowest k),  q_i = c_{a_i}
//   xhat_i = W_d q_i + b_d,  dxhat_i = 2/(B d) (xhat_i - x_i),  g_i = W_d^T dxhat_i
//   dz_i = E(g_i, z_i, q_i) + 2 beta/(B m) (z_i - q_i)      (the estimators of estimator.wgsl, same formulas)
//   dW_d = sum_i dxhat_i q_i^T, db_d = sum_i dxhat_i, dW_e = sum_i dz_i x_i^T, db_e = sum_i dz_i
//   dL_cb/dc_k = 2/(B m) sum_{i : a_i = k} (c_k - z_i)
// Phase 1 gives each invocation rows (z, the code, the decoder and the estimator in registers); phase 2 gives it
// columns of the weight gradients, recomputing dxhat_ij from q_i instead of storing the B x d matrix. z, q, dz and
// the codes stay in workgroup memory between the phases, so the only large memory traffic is reading x twice.
// Every sum runs in a fixed order: the results are the same bits run to run, whatever else shares the dispatch.
// Outputs for the metrics, dead-code resets and tests: `batch` holds z (runs x B x m), then each row's squared
// distance (runs x B), then each row's squared reconstruction error (runs x B); `codes` holds the codes
// (runs x B), then each run's estimator and commitment coefficient (two words per run, written by the host).
// Host-checked limits: B <= MAX_ROWS, B m <= MAX_CELLS, m = LATENT <= MAX_LATENT.

struct Params {
    b: u32,               // batch rows B
    d: u32,               // data dimension
    k: u32,               // codes
    n_train: u32,         // rows of each run's training set
    schedule_stride: u32, // indices per run in the schedule
    param_stride: u32,    // floats per run in the parameters and their gradients
    enc_w: u32,           // offsets in a run's parameters: W_e (m x d), b_e (m), W_d (d x m), b_d (d)
    enc_b: u32,
    dec_w: u32,
    dec_b: u32,
    loss_scale: f32,      // 2 / (B d)
    cb_scale: f32,        // 2 / (B m)
}

struct Step {
    step_size: f32,
    bc2_sqrt: f32,
    row_offset: u32,
    step: u32,
}

const STE: u32 = 0u;
const ROTATION: u32 = 1u;
const ROTATION_TRICK: u32 = 2u;
const DIVEQ: u32 = 3u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> train: array<f32>;
@group(0) @binding(2) var<storage, read> schedule: array<u32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<storage, read> codebook: array<f32>;
@group(0) @binding(5) var<storage, read_write> grads: array<f32>;
@group(0) @binding(6) var<storage, read_write> codebook_grad: array<f32>;
@group(0) @binding(7) var<storage, read_write> batch: array<f32>;
@group(0) @binding(8) var<storage, read_write> codes: array<u32>;
@group(1) @binding(0) var<uniform> step: Step;

override WORKGROUP_SIZE: u32 = 256u;
// The latent dimension m, fixed per pipeline so that the per-row vectors live in registers.
override LATENT: u32 = 4u;
const MAX_LATENT: u32 = 8u;
const MAX_ROWS: u32 = 256u;
const MAX_CELLS: u32 = 1024u;

var<workgroup> z_s: array<f32, MAX_CELLS>;
var<workgroup> q_s: array<f32, MAX_CELLS>;
var<workgroup> dz_s: array<f32, MAX_CELLS>;
var<workgroup> code_s: array<u32, MAX_ROWS>;
var<workgroup> source_s: array<u32, MAX_ROWS>; // each batch row's first float in `train`

@compute @workgroup_size(WORKGROUP_SIZE)
fn train_step(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let run = wid.z;
    let b = params.b;
    let d = params.d;
    let k = params.k;
    let m = LATENT;
    let pw = run * params.param_stride;
    let cb = run * k * m;
    let runs = max(1u, arrayLength(&codes) / (b + 2u)); // codes holds runs x (B + 2) words
    let estimator = codes[runs * b + 2u * run];
    let commit_coeff = bitcast<f32>(codes[runs * b + 2u * run + 1u]);

    for (var i = lid; i < b; i += WORKGROUP_SIZE) {
        let row = min(schedule[run * params.schedule_stride + step.row_offset + i], params.n_train - 1u);
        source_s[i] = (run * params.n_train + row) * d;
    }
    workgroupBarrier();

    // Phase 1: one batch row per invocation.
    for (var i = lid; i < b; i += WORKGROUP_SIZE) {
        let x0 = source_s[i];
        var z: array<f32, MAX_LATENT>;
        for (var c = 0u; c < m; c++) {
            z[c] = 0.0;
        }
        for (var j = 0u; j < d; j++) {
            let xj = train[x0 + j];
            for (var c = 0u; c < m; c++) {
                z[c] = fma(weights[pw + params.enc_w + c * d + j], xj, z[c]);
            }
        }
        for (var c = 0u; c < m; c++) {
            z[c] += weights[pw + params.enc_b + c];
        }
        // The nearest code, in increasing order with a strict `<`: ties keep the lowest index.
        var best = bitcast<f32>(0x7f800000u);
        var best_k = 0u;
        for (var kk = 0u; kk < k; kk++) {
            var dist = 0.0;
            for (var c = 0u; c < m; c++) {
                let diff = z[c] - codebook[cb + kk * m + c];
                dist = fma(diff, diff, dist);
            }
            if (dist < best) {
                best = dist;
                best_k = kk;
            }
        }
        var q: array<f32, MAX_LATENT>;
        for (var c = 0u; c < m; c++) {
            q[c] = codebook[cb + best_k * m + c];
        }
        // The decoder, the loss gradient and g = W_d^T dxhat, one output at a time.
        var g: array<f32, MAX_LATENT>;
        for (var c = 0u; c < m; c++) {
            g[c] = 0.0;
        }
        var sq = 0.0;
        for (var j = 0u; j < d; j++) {
            var xhat = 0.0;
            for (var c = 0u; c < m; c++) {
                xhat = fma(q[c], weights[pw + params.dec_w + j * m + c], xhat);
            }
            let diff = (xhat + weights[pw + params.dec_b + j]) - train[x0 + j];
            sq = fma(diff, diff, sq);
            let dx = params.loss_scale * diff;
            for (var c = 0u; c < m; c++) {
                g[c] = fma(dx, weights[pw + params.dec_w + j * m + c], g[c]);
            }
        }

        // The estimator (estimator.wgsl's formulas: a g + b (q - z) + c z + e (z^ + q^)).
        var vv = 0.0;
        var gv = 0.0;
        var zz = 0.0;
        var qq = 0.0;
        var gq = 0.0;
        for (var c = 0u; c < m; c++) {
            let v = q[c] - z[c];
            vv = fma(v, v, vv);
            gv = fma(g[c], v, gv);
            zz = fma(z[c], z[c], zz);
            qq = fma(q[c], q[c], qq);
            gq = fma(g[c], q[c], gq);
        }
        var ca = 1.0;
        var cv = 0.0;
        var cz = 0.0;
        var cw = 0.0;
        var inv_zn = 0.0;
        var inv_qn = 0.0;
        if (estimator == ROTATION || estimator == DIVEQ) {
            let denom = sqrt(vv) + 1e-8;
            let proj = gv / (denom * denom);
            if (estimator == ROTATION) {
                ca = 0.0;
                cv = proj;
            } else {
                cv = -proj;
            }
        } else if (estimator == ROTATION_TRICK) {
            let zn = sqrt(zz);
            let qn = sqrt(qq);
            if (zn >= 1e-8) {
                let izn = 1.0 / zn;
                let iqn = 1.0 / max(qn, 1e-12);
                var ww = 0.0;
                var gw = 0.0;
                for (var c = 0u; c < m; c++) {
                    let w = z[c] * izn + q[c] * iqn;
                    ww = fma(w, w, ww);
                    gw = fma(g[c], w, gw);
                }
                if (sqrt(ww) >= 1e-6) {
                    let lambda = qn * izn;
                    ca = lambda;
                    cw = -2.0 * lambda * gw / ww;
                    cz = 2.0 * lambda * izn * gq * iqn;
                    inv_zn = izn;
                    inv_qn = iqn;
                }
            }
        }
        cv -= commit_coeff;
        for (var c = 0u; c < m; c++) {
            let w = z[c] * inv_zn + q[c] * inv_qn;
            dz_s[i * m + c] = ca * g[c] + cv * (q[c] - z[c]) + cz * z[c] + cw * w;
            z_s[i * m + c] = z[c];
            q_s[i * m + c] = q[c];
            batch[(run * b + i) * m + c] = z[c];
        }
        code_s[i] = best_k;
        codes[run * b + i] = best_k;
        let rows = runs * b;
        batch[rows * m + run * b + i] = best;
        batch[rows * m + rows + run * b + i] = sq;
    }
    workgroupBarrier();

    // Phase 2: one data column j per invocation: row j of dW_d and b_d, column j of dW_e; rows in order.
    for (var j = lid; j < d; j += WORKGROUP_SIZE) {
        var wd: array<f32, MAX_LATENT>;
        var dwd: array<f32, MAX_LATENT>;
        var dwe: array<f32, MAX_LATENT>;
        for (var c = 0u; c < m; c++) {
            wd[c] = weights[pw + params.dec_w + j * m + c];
            dwd[c] = 0.0;
            dwe[c] = 0.0;
        }
        let bd = weights[pw + params.dec_b + j];
        var dbd = 0.0;
        for (var i = 0u; i < b; i++) {
            let xj = train[source_s[i] + j];
            var xhat = 0.0;
            for (var c = 0u; c < m; c++) {
                xhat = fma(q_s[i * m + c], wd[c], xhat);
            }
            let dx = params.loss_scale * ((xhat + bd) - xj);
            dbd += dx;
            for (var c = 0u; c < m; c++) {
                dwd[c] = fma(dx, q_s[i * m + c], dwd[c]);
                dwe[c] = fma(dz_s[i * m + c], xj, dwe[c]);
            }
        }
        for (var c = 0u; c < m; c++) {
            grads[pw + params.dec_w + j * m + c] = dwd[c];
            grads[pw + params.enc_w + c * d + j] = dwe[c];
        }
        grads[pw + params.dec_b + j] = dbd;
    }
    // db_e, then the codebook gradient: each code's rows in increasing order.
    for (var c = lid; c < m; c += WORKGROUP_SIZE) {
        var acc = 0.0;
        for (var i = 0u; i < b; i++) {
            acc += dz_s[i * m + c];
        }
        grads[pw + params.enc_b + c] = acc;
    }
    for (var e = lid; e < k * m; e += WORKGROUP_SIZE) {
        let code = e / m;
        let c = e % m;
        let center = codebook[cb + e];
        var acc = 0.0;
        for (var i = 0u; i < b; i++) {
            if (code_s[i] == code) {
                acc += center - z_s[i * m + c];
            }
        }
        codebook_grad[cb + e] = params.cb_scale * acc;
    }
}
