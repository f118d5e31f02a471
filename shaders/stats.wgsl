// Codebook-use statistics (docs/PROTOCOL.md §4), computed on the GPU and read back as one small struct.
//   clear_label_counts, count_labels   label_counts[k * classes + y] = #{i : index[i] = k, label[i] = y}
//   summarize (one workgroup)          from counts[k] (codebook.wgsl's count_codes) and dist[i] (assign's):
//     dead_codes = #{k : n_k = 0}, usage = 1 - dead_codes / K, entropy = -sum p_k ln p_k (nats),
//     perplexity = exp(entropy), quant_err = sum_i dist_i / (n m), purity = sum_k max_y n_{k,y} / N
// Partial sums are combined in a fixed order: the same inputs give the same bits.

struct Params {
    n: u32,        // rows of dist (and of index/labels)
    k: u32,        // codes
    m: u32,        // latent dimension
    classes: u32,  // label classes; 0 when there are no labels
}

struct Stats {
    total: u32,    // N = sum_k n_k
    dead_codes: u32,
    usage: f32,
    entropy: f32,
    perplexity: f32,
    quant_err: f32,
    purity: f32,
    has_labels: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> label_counts: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read> dist: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: Stats;

override WORKGROUP_SIZE: u32 = 256u;
const REDUCE: u32 = 256u; // the largest WORKGROUP_SIZE summarize reduces over

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn clear_label_counts(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_id(gid, nwg);
    if (e < params.k * params.classes) {
        atomicStore(&label_counts[e], 0u);
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn count_labels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if (i < params.n) {
        let code = min(index[i], params.k - 1u);
        let label = min(labels[i], params.classes - 1u);
        atomicAdd(&label_counts[code * params.classes + label], 1u);
    }
}

var<workgroup> partial_u: array<u32, REDUCE>;
var<workgroup> partial_pure: array<u32, REDUCE>;
var<workgroup> partial_ent: array<f32, REDUCE>;
var<workgroup> partial_quant: array<f32, REDUCE>;
var<workgroup> shared_total: u32;

@compute @workgroup_size(WORKGROUP_SIZE)
fn summarize(@builtin(local_invocation_index) lid: u32) {
    let lanes = min(WORKGROUP_SIZE, REDUCE);
    // Phase 1: N = sum_k n_k.
    var count_sum = 0u;
    for (var k = lid; k < params.k; k += WORKGROUP_SIZE) {
        count_sum += counts[k];
    }
    partial_u[lid] = count_sum;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0u;
        for (var t = 0u; t < lanes; t++) {
            total += partial_u[t];
        }
        shared_total = total;
    }
    workgroupBarrier();
    let total = shared_total;
    let inv_total = 1.0 / f32(max(total, 1u));

    // Phase 2: dead codes, entropy, purity over codes; quantization error over rows.
    var dead = 0u;
    var ent = 0.0;
    var pure = 0u;
    for (var k = lid; k < params.k; k += WORKGROUP_SIZE) {
        let nk = counts[k];
        if (nk == 0u) {
            dead += 1u;
        } else {
            let p = f32(nk) * inv_total;
            ent -= p * log(p);
        }
        var most = 0u;
        for (var y = 0u; y < params.classes; y++) {
            most = max(most, atomicLoad(&label_counts[k * params.classes + y]));
        }
        pure += most;
    }
    var quant = 0.0;
    for (var i = lid; i < params.n; i += WORKGROUP_SIZE) {
        quant += dist[i];
    }
    workgroupBarrier(); // phase 1's partial_u reads are done
    partial_u[lid] = dead;
    partial_pure[lid] = pure;
    partial_ent[lid] = ent;
    partial_quant[lid] = quant;
    workgroupBarrier();
    if (lid == 0u) {
        var dead_sum = 0u;
        var pure_sum = 0u;
        var ent_sum = 0.0;
        var quant_sum = 0.0;
        for (var t = 0u; t < lanes; t++) {
            dead_sum += partial_u[t];
            pure_sum += partial_pure[t];
            ent_sum += partial_ent[t];
            quant_sum += partial_quant[t];
        }
        stats.total = total;
        stats.dead_codes = dead_sum;
        stats.usage = 1.0 - f32(dead_sum) / f32(params.k);
        stats.entropy = ent_sum;
        stats.perplexity = exp(ent_sum);
        stats.quant_err = quant_sum / (f32(params.n) * f32(params.m));
        stats.purity = f32(pure_sum) * inv_total;
        stats.has_labels = select(0u, 1u, params.classes > 0u);
    }
}
