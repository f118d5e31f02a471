// The adaptive commitment weight (the seed's "adaptive commitment" direction). One invocation per run, once a
// step, after this step's codes are counted:
//   u = min(1, used / expected)           used: codes the batch uses; expected = K (1 - (1 - 1/K)^B), the
//                                         distinct codes B uniform draws hit (so u = 1 is uniform use at any K, B)
//   beta <- clamp(beta exp(rate (u - target)), beta_min, beta_max)
//                                         below the target usage the commitment loosens (lower beta lets the
//                                         encodings spread to unused codes); above it, it tightens
//   out[run * stride + offset] = 2 beta / (B m)   the commitment coefficient the estimator kernels read this step
// `state` holds each run's (beta, beta_min, beta_max); `out_b`, when flagged, is a second kernel's run settings.

struct Params {
    k: u32,
    runs: u32,
    scale: f32,     // 2 / (B m)
    rate: f32,
    target_usage: f32,
    expected: f32,
    stride_a: u32,
    offset_a: u32,
    stride_b: u32,
    offset_b: u32,
    has_b: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> counts: array<u32>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_a: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_b: array<u32>;

override WORKGROUP_SIZE: u32 = 64u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn adapt_beta(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let run = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (run >= params.runs) {
        return;
    }
    var used = 0u;
    for (var k = 0u; k < params.k; k++) {
        used += select(0u, 1u, counts[run * params.k + k] > 0u);
    }
    let u = min(1.0, f32(used) / params.expected);
    let beta = clamp(state[3u * run] * exp(params.rate * (u - params.target_usage)), state[3u * run + 1u], state[3u * run + 2u]);
    state[3u * run] = beta;
    let coeff = bitcast<u32>(beta * params.scale);
    out_a[run * params.stride_a + params.offset_a] = coeff;
    if (params.has_b != 0u) {
        out_b[run * params.stride_b + params.offset_b] = coeff;
    }
}
