// What several kernels share, in one source: `vqgrad::shaders` composes this file in front of adam.wgsl,
// codebook.wgsl, gather.wgsl and soft.wgsl (the constants, naga's validation and export-shaders all see the
// composed text). The Rust side of each item is named beside it.

// One step's constants, a 32-byte slot of the step uniform bound at @group(1) @binding(0)
// (`vqgrad::kernels::step::StepConstants`).
struct Step {
    step_size: f32,
    bc2_sqrt: f32,
    row_offset: u32,
    step: u32,
    tau: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

// lowbias32, the integer mix behind dead-code resets and Gumbel noise (`vqgrad::contract::mix32`).
fn mix32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

