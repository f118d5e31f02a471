// Codebook updates (docs/PROTOCOL.md §2). Entry points, each with its own bindings:
//   clear_counts, count_codes   counts[k] = #{i : index[i] = k}                    (u32 atomics: exact)
//   segment_sums(_small)        out[k] = scale * sum_{i : index[i] = k} (z_i - center * c_k)
//                               grad mode: center = 1, scale = -2/(B m) gives dL_cb/dC = 2/(B m) sum (c_k - z_i)
//                               ema mode:  center = 0, scale = 1 gives the per-code sums of z
//   ema_sizes                   N_k <- g N_k + (1 - g) n_k, and n = sum_k N_k      (one workgroup)
//   ema_codebook                M_k <- g M_k + (1 - g) sum_k;  c_k = M_k / N'_k,  N'_k = (N_k + eps) / (n + K eps) n
//   lloyd_update                k-means: c_k = sums_k / n_k where n_k > 0 (unused codes stay)
//   mark_used, reset_dead       dead-code reset: codes unused since the last reset take the encoding of a
//                               pseudo-random batch row (lowbias32 hash of the run's seed, the step and the code;
//                               as vqgrad::kernels::codebook::reset_row); with EMA their state restarts
//                               (N_k = 1, M_k = c_k)
// Batched runs (gid.z or workgroup_id.z = run) read and write their own slices of every array (lloyd_update
// has no batched form).
// No float atomics anywhere: segment_sums adds the rows of a code in increasing row order, the same order as a
// sequential loop, so the result is bit-identical run to run (and equals a sequential f32 sum).
// Indices must be < k; larger ones are clamped to k - 1, never read out of bounds.

struct Params {
    n: u32,            // rows
    k: u32,            // codes
    m: u32,            // latent dimension
    center: u32,       // segment_sums: 1 subtracts the code from each row
    scale: f32,        // segment_sums: multiplies the sums
    decay: f32,        // EMA decay g
    eps: f32,          // Laplace smoothing epsilon
    dim_tile: u32,     // segment_sums: dimensions per workgroup (the codes per workgroup are TILE / dim_tile)
    _pad2: u32,
    flags: u32,        // reset_dead: bit 0, an EMA state to restart
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> codebook: array<f32>;
@group(0) @binding(4) var<storage, read_write> counts: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> sums: array<f32>;
@group(0) @binding(6) var<storage, read_write> ema_size: array<f32>;
@group(0) @binding(7) var<storage, read_write> ema_sum: array<f32>;
@group(0) @binding(8) var<storage, read_write> ema_total: array<f32>;
// The reset's own state: runs x k marks (a code used since the last reset), then each run's mixed seed.
@group(0) @binding(9) var<storage, read_write> reset_state: array<u32>;
@group(1) @binding(0) var<uniform> step: Step;

override WORKGROUP_SIZE: u32 = 256u;
const CHUNK: u32 = 256u;   // rows staged per step of segment_sums
const TILE: u32 = 2048u;   // accumulators per workgroup of segment_sums (8 KiB)
const REDUCE: u32 = 256u;  // the largest WORKGROUP_SIZE ema_sizes reduces over

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn clear_counts(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = linear_id(gid, nwg);
    if (k < params.k) {
        atomicStore(&counts[gid.z * params.k + k], 0u);
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn count_codes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i < params.n) {
        // Batched: run gid.z counts its own rows into its own counts.
        atomicAdd(&counts[gid.z * params.k + min(index[gid.z * params.n + i], params.k - 1u)], 1u);
    }
}

var<workgroup> staged_index: array<u32, CHUNK>;
var<workgroup> acc: array<f32, TILE>;

// One workgroup per (code tile, dimension tile): workgroup_id.x over code tiles, .y over dimension tiles.
// Accumulator e = code_in_tile * dim_tile + dim_in_tile belongs to invocation e % WORKGROUP_SIZE, so every
// invocation works whatever m is, and each accumulator sees its rows in increasing order.
@compute @workgroup_size(WORKGROUP_SIZE)
fn segment_sums(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let dim_tile = params.dim_tile;
    let codes_per_tile = TILE / dim_tile;
    let code0 = wid.x * codes_per_tile;
    let dim0 = wid.y * dim_tile;
    let m = params.m;
    let used = codes_per_tile * dim_tile; // <= TILE
    // Batched: run wid.z has its own rows, indices, codebook and sums.
    let rows_base = wid.z * params.n;
    let codes_base = wid.z * params.k * m;

    for (var e = lid; e < used; e += WORKGROUP_SIZE) {
        acc[e] = 0.0;
    }
    for (var row0 = 0u; row0 < params.n; row0 += CHUNK) {
        workgroupBarrier(); // the previous chunk is done
        for (var e = lid; e < CHUNK; e += WORKGROUP_SIZE) {
            let row = row0 + e;
            let at = rows_base + min(row, params.n - 1u);
            staged_index[e] = select(0xffffffffu, min(index[at], params.k - 1u), row < params.n);
        }
        workgroupBarrier();
        let rows = min(CHUNK, params.n - row0);
        for (var r = 0u; r < rows; r++) {
            let code = staged_index[r];
            if (code >= code0 && code < code0 + codes_per_tile) {
                let base = (code - code0) * dim_tile;
                // The first dimension whose accumulator this invocation owns.
                var j = (lid + WORKGROUP_SIZE - base % WORKGROUP_SIZE) % WORKGROUP_SIZE;
                for (; j < dim_tile && dim0 + j < m; j += WORKGROUP_SIZE) {
                    let dim = dim0 + j;
                    var v = z[(rows_base + row0 + r) * m + dim];
                    if (params.center != 0u) {
                        v -= codebook[codes_base + code * m + dim];
                    }
                    acc[base + j] += v;
                }
            }
        }
    }
    // Each invocation reads back only accumulators it wrote itself: no barrier needed.
    for (var e = lid; e < used; e += WORKGROUP_SIZE) {
        let code = code0 + e / dim_tile;
        let dim = dim0 + e % dim_tile;
        if (code < params.k && dim < m) {
            sums[codes_base + code * m + dim] = params.scale * acc[e];
        }
    }
}

// segment_sums for small codebooks (k m <= SMALL_SUMS): one invocation per (code, dimension) scans every row in
// increasing order. No workgroup memory or barriers, which CPU drivers run far faster than the tiled kernel; the
// same order, so the same bits.
@compute @workgroup_size(WORKGROUP_SIZE)
fn segment_sums_small(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_id(gid, nwg);
    if (e >= params.k * params.m) {
        return;
    }
    // Batched: run gid.z has its own rows, indices, codebook and sums.
    let rows = gid.z * params.n;
    let codes = gid.z * params.k * params.m;
    let code = e / params.m;
    let dim = e % params.m;
    var c = 0.0;
    if (params.center != 0u) {
        c = codebook[codes + e];
    }
    var total = 0.0;
    for (var row = 0u; row < params.n; row++) {
        if (min(index[rows + row], params.k - 1u) == code) {
            total += z[(rows + row) * params.m + dim] - c;
        }
    }
    sums[codes + e] = params.scale * total;
}

var<workgroup> partial: array<f32, REDUCE>;

// One workgroup: updates every N_k, then n = sum_k N_k in a fixed order.
@compute @workgroup_size(WORKGROUP_SIZE)
fn ema_sizes(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let g = params.decay;
    let base = wid.z * params.k; // batched: one workgroup per run
    var local_sum = 0.0;
    for (var k = lid; k < params.k; k += WORKGROUP_SIZE) {
        let size = g * ema_size[base + k] + (1.0 - g) * f32(atomicLoad(&counts[base + k]));
        ema_size[base + k] = size;
        local_sum += size;
    }
    partial[lid] = local_sum;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var t = 0u; t < min(WORKGROUP_SIZE, REDUCE); t++) {
            total += partial[t];
        }
        ema_total[wid.z] = total;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn ema_codebook(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_id(gid, nwg);
    if (e >= params.k * params.m) {
        return;
    }
    let k = gid.z * params.k + e / params.m;
    let at = gid.z * params.k * params.m + e; // batched: run gid.z's codes
    let g = params.decay;
    let total = ema_total[gid.z];
    let m_new = g * ema_sum[at] + (1.0 - g) * sums[at];
    ema_sum[at] = m_new;
    let smoothed = (ema_size[k] + params.eps) / (total + f32(params.k) * params.eps) * total;
    codebook[at] = m_new / smoothed;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn lloyd_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_id(gid, nwg);
    if (e >= params.k * params.m) {
        return;
    }
    let n = atomicLoad(&counts[e / params.m]);
    if (n > 0u) {
        codebook[e] = sums[e] / f32(n);
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn mark_used(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = linear_id(gid, nwg);
    let at = gid.z * params.k + k;
    if (k < params.k && atomicLoad(&counts[at]) > 0u) {
        reset_state[at] = 1u;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn reset_dead(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = linear_id(gid, nwg);
    if (k >= params.k) {
        return;
    }
    let run = gid.z;
    let code = run * params.k + k;
    if (reset_state[code] == 0u) {
        let seed_mix = reset_state[nwg.z * params.k + run];
        let row = mix32(seed_mix ^ mix32(step.step ^ mix32(k))) % params.n;
        let src = (run * params.n + row) * params.m;
        for (var j = 0u; j < params.m; j++) {
            let v = z[src + j];
            codebook[code * params.m + j] = v;
            if ((params.flags & 1u) != 0u) {
                ema_sum[code * params.m + j] = v;
            }
        }
        if ((params.flags & 1u) != 0u) {
            ema_size[code] = 1.0;
        }
    }
    reset_state[code] = 0u;
}
