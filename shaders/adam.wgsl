// Adam with PyTorch's semantics (torch.optim.Adam, no weight decay, not amsgrad), elementwise:
//   m <- lerp(m, g, 1 - beta1);  v <- beta2 v + (1 - beta2) g^2
//   p <- p - step_size m / (sqrt(v) / bc2_sqrt + eps),   step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t)
// The per-step constants come from the host (computed in f64 as PyTorch does) through a dynamic-offset uniform,
// so many steps can be recorded into one submit.

struct Params {
    len: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> moment1: array<f32>;
@group(0) @binding(4) var<storage, read_write> moment2: array<f32>;
@group(1) @binding(0) var<uniform> step: Step;

override WORKGROUP_SIZE: u32 = 256u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (e >= params.len) {
        return;
    }
    let g = grad[e];
    let m = moment1[e] + (1.0 - params.beta1) * (g - moment1[e]);
    let v = params.beta2 * moment2[e] + (1.0 - params.beta2) * g * g;
    moment1[e] = m;
    moment2[e] = v;
    param[e] = param[e] - step.step_size * (m / (sqrt(v) / step.bc2_sqrt + params.eps));
}
