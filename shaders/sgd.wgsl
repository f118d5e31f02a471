// SGD with momentum, PyTorch's semantics (torch.optim.SGD, no dampening, not Nesterov, no weight decay),
// elementwise:  v <- momentum v + g;  p <- p - lr v
// The alternate codebook mode's own step on L_cb (docs/PROTOCOL.md §6.6); lr and momentum are fixed for a run.

struct Params {
    len: u32,
    momentum: f32,
    lr: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;

override WORKGROUP_SIZE: u32 = 256u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (e >= params.len) {
        return;
    }
    let v = params.momentum * velocity[e] + grad[e];
    velocity[e] = v;
    param[e] = param[e] - params.lr * v;
}
