// Batched nearest code (docs/PROTOCOL.md §1):
//   index[i] = argmin_k ||z_i - c_k||^2   (ties: the lowest k)
//   dist[i]  = that squared distance
//   q[i]     = codebook[index[i]]   (when params.write_codes is 1: the quantized rows, with no separate gather)
// z is [n x m] and the codebook [k x m], both row-major f32. Batched: workgroup_id.z picks one of several
// independent problems of the same shape stacked in the same buffers (z [runs x n x m], codebook [runs x k x m],
// index, dist [runs x n], q [runs x n x m]); indices are within each run's own codebook. The N x K distance matrix is never stored:
// each workgroup stages a tile of the codebook in workgroup memory and every invocation keeps ROWS rows
// against CODES codes at a time in registers.
//
// `Row` is the unit of a load. This file is the vec4 variant (m % 4 == 0); the host builds the scalar
// variant by replacing the block between the VARIANT markers (see `vqgrad::shaders::assign_source`).
// VARIANT BEGIN
alias Row = vec4<f32>;
const LANES: u32 = 4u;
fn lane_sum(v: Row) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}
// VARIANT END

struct Params {
    n: u32,
    k: u32,
    m: u32,
    write_codes: u32, // 1: also q[i] = codebook[index[i]]
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> z: array<Row>;
@group(0) @binding(2) var<storage, read> codebook: array<Row>;
@group(0) @binding(3) var<storage, read_write> index_out: array<u32>;
@group(0) @binding(4) var<storage, read_write> dist_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> q_out: array<Row>;

override WORKGROUP_SIZE: u32 = 64u;
// Rows per invocation and codes per inner step: ROWS x CODES partial distances live in registers.
const ROWS: u32 = 4u;
const CODES: u32 = 4u;
// The codebook tile: 16 KiB of workgroup memory, the WebGPU default limit.
const TILE: u32 = 4096u / LANES;

var<workgroup> tile: array<Row, TILE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn assign(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let group = wid.x + wid.y * nwg.x;
    let row_len = params.m / LANES;
    // This run's z rows, codes and outputs.
    let z_base = wid.z * params.n * row_len;
    let code_base = wid.z * params.k * row_len;
    let out_base = wid.z * params.n;
    // A code is staged whole when it fits the tile; otherwise one code at a time, in chunks of TILE.
    let chunk = min(row_len, TILE);
    let codes_per_tile = TILE / chunk;
    let first_row = group * WORKGROUP_SIZE * ROWS + lid;

    var row_start: array<u32, ROWS>;
    var best_dist: array<f32, ROWS>;
    var best_code: array<u32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        // Rows past n compute on the last row (every invocation must reach the barriers) and write nothing.
        row_start[r] = z_base + min(first_row + r * WORKGROUP_SIZE, params.n - 1u) * row_len;
        best_dist[r] = bitcast<f32>(0x7f800000u); // +inf
        best_code[r] = 0u;
    }

    for (var tile_start = 0u; tile_start < params.k; tile_start += codes_per_tile) {
        let tile_codes = min(codes_per_tile, params.k - tile_start);
        for (var c0 = 0u; c0 < tile_codes; c0 += CODES) {
            var acc: array<array<Row, CODES>, ROWS>;
            for (var d0 = 0u; d0 < row_len; d0 += chunk) {
                let width = min(chunk, row_len - d0);
                if (c0 == 0u || chunk < row_len) {
                    workgroupBarrier(); // everyone is done reading the previous tile
                    for (var e = lid; e < tile_codes * width; e += WORKGROUP_SIZE) {
                        let c = e / width;
                        let j = e % width;
                        tile[c * chunk + j] = codebook[code_base + (tile_start + c) * row_len + d0 + j];
                    }
                    workgroupBarrier();
                }
                for (var j = 0u; j < width; j++) {
                    var zr: array<Row, ROWS>;
                    for (var r = 0u; r < ROWS; r++) {
                        zr[r] = z[row_start[r] + d0 + j];
                    }
                    for (var c = 0u; c < CODES; c++) {
                        let cv = tile[min(c0 + c, tile_codes - 1u) * chunk + j];
                        for (var r = 0u; r < ROWS; r++) {
                            let d = zr[r] - cv;
                            acc[r][c] = fma(d, d, acc[r][c]);
                        }
                    }
                }
            }
            // Codes in increasing order with a strict `<`: ties keep the lowest index.
            for (var c = 0u; c < CODES; c++) {
                if (c0 + c < tile_codes) {
                    for (var r = 0u; r < ROWS; r++) {
                        let d = lane_sum(acc[r][c]);
                        if (d < best_dist[r]) {
                            best_dist[r] = d;
                            best_code[r] = tile_start + c0 + c;
                        }
                    }
                }
            }
        }
    }

    for (var r = 0u; r < ROWS; r++) {
        let row = first_row + r * WORKGROUP_SIZE;
        if (row < params.n) {
            index_out[out_base + row] = best_code[r];
            dist_out[out_base + row] = best_dist[r];
            if (params.write_codes != 0u) {
                for (var j = 0u; j < row_len; j++) {
                    q_out[z_base + row * row_len + j] = codebook[code_base + best_code[r] * row_len + j];
                }
            }
        }
    }
}
