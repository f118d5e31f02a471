//! The maps of the encodings before the quantizer on the CPU engine (docs/PROTOCOL.md §6.6), as
//! [`crate::reference::latent`] defines them, in f32 from the f64 constants cast to f32, as the GPU holds them.

use crate::model::LatentMap;
use crate::reference::latent::fsq_constants;

/// One dimension's FSQ constants in f32: (h, offset, shift, w).
fn constants(levels: u32) -> (f32, f32, f32, f32) {
    let (h, offset, shift, w) = fsq_constants(levels);
    (h as f32, offset as f32, shift as f32, w as f32)
}

/// `out = map(z)` (rows x m); the identity copies.
pub fn forward(map: &LatentMap, z: &[f32], out: &mut [f32]) {
    match map {
        LatentMap::None => out.copy_from_slice(z),
        LatentMap::Fsq(levels) => {
            for (row, zr) in out.chunks_exact_mut(levels.len()).zip(z.chunks_exact(levels.len())) {
                for ((o, &v), &l) in row.iter_mut().zip(zr).zip(levels) {
                    let (h, offset, shift, w) = constants(l);
                    *o = ((v + shift).tanh() * h - offset) / w;
                }
            }
        }
    }
}

/// `dz = map'(z) dy` into `out`; the identity copies.
pub fn backward(map: &LatentMap, z: &[f32], dy: &[f32], out: &mut [f32]) {
    match map {
        LatentMap::None => out.copy_from_slice(dy),
        LatentMap::Fsq(levels) => {
            let m = levels.len();
            for ((o, (&v, &d)), e) in out.iter_mut().zip(z.iter().zip(dy)).zip(0..) {
                let (h, _, shift, w) = constants(levels[e % m]);
                let t = (v + shift).tanh();
                *o = d * (1.0 - t * t) * h / w;
            }
        }
    }
}
