// Gathers rows by index.
//   gather_rows   out[r, :] = data[schedule[step.row_offset + r], :]    (the minibatch; the schedule is uploaded
//                 per chunk of steps, the offset comes per step through a dynamic-offset uniform)
//   gather_codes  out[i, :] = codebook[index[i], :]                     (q = c[a])

// `Row` is the unit of a load. This file is the vec4 variant (width % 4 == 0); the host builds the scalar variant
// by replacing the block between the VARIANT markers (see `vqgrad::shaders::gather_source`).
// VARIANT BEGIN
alias Row = vec4<f32>;
const LANES: u32 = 4u;
// VARIANT END

struct Params {
    rows: u32,          // rows to write
    width: u32,         // floats per row (a multiple of LANES)
    limit: u32,         // rows in the source (indices are clamped below it)
    index_stride: u32,  // indices per run
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> source: array<Row>;
@group(0) @binding(2) var<storage, read> index: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<Row>;
@group(1) @binding(0) var<uniform> step: Step;

override WORKGROUP_SIZE: u32 = 64u;

// One invocation copies one row: no integer division per element, which CPU drivers (lavapipe) vectorize badly.
// Batched: run `run` has its own source (limit rows), indices (index_stride) and output (rows).
fn copy_row(r: u32, offset: u32, run: u32) {
    let row_len = params.width / LANES;
    let src = (run * params.limit + min(index[run * params.index_stride + offset + r], params.limit - 1u)) * row_len;
    let dst = (run * params.rows + r) * row_len;
    for (var j = 0u; j < row_len; j++) {
        out[dst + j] = source[src + j];
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (r < params.rows) {
        copy_row(r, step.row_offset, gid.z);
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn gather_codes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
    if (r < params.rows) {
        copy_row(r, 0u, gid.z);
    }
}
