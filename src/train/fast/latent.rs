//! The maps of the encodings before the quantizer on the CPU engine (docs/PROTOCOL.md §6.6), as
//! [`crate::reference::latent`] defines them, in f32 from the f64 constants cast to f32, as the GPU holds them.

use crate::model::LatentMap;
use crate::reference::latent::{UNIT_EPS, fsq_constants};

/// One dimension's FSQ constants in f32: (h, offset, shift, w).
fn constants(levels: u32) -> (f32, f32, f32, f32) {
    let (h, offset, shift, w) = fsq_constants(levels);
    (h as f32, offset as f32, shift as f32, w as f32)
}

/// `out = map(z)` (rows x m); the identity copies.
pub fn forward(map: &LatentMap, z: &[f32], out: &mut [f32], m: usize) {
    match map {
        LatentMap::None => out.copy_from_slice(z),
        LatentMap::Unit => unit(z, out, m),
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
pub fn backward(map: &LatentMap, z: &[f32], dy: &[f32], out: &mut [f32], m: usize) {
    match map {
        LatentMap::None => out.copy_from_slice(dy),
        LatentMap::Unit => unit_backward(z, dy, out, m),
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

/// A row's norm, summed in order in f32.
fn norm(row: &[f32]) -> f32 {
    row.iter().fold(0.0f32, |s, v| s + v * v).sqrt()
}

/// Each row of `z` over `max(||z_i||, 1e-12)` (cosine codes).
pub fn unit(z: &[f32], out: &mut [f32], m: usize) {
    for (o, row) in out.chunks_exact_mut(m).zip(z.chunks_exact(m)) {
        let n = norm(row).max(UNIT_EPS as f32);
        o.iter_mut().zip(row).for_each(|(o, v)| *o = v / n);
    }
}

/// The backward of [`unit()`]: `(dy - u (u . dy)) / ||z||`, or `dy / 1e-12` at the floor.
pub fn unit_backward(z: &[f32], dy: &[f32], out: &mut [f32], m: usize) {
    for ((o, row), d) in out.chunks_exact_mut(m).zip(z.chunks_exact(m)).zip(dy.chunks_exact(m)) {
        let n = norm(row);
        if n > UNIT_EPS as f32 {
            let along = row.iter().zip(d).fold(0.0f32, |s, (z, d)| s + z / n * d);
            o.iter_mut().zip(row.iter().zip(d)).for_each(|(o, (z, d))| *o = (d - z / n * along) / n);
        } else {
            o.iter_mut().zip(d).for_each(|(o, d)| *o = d / UNIT_EPS as f32);
        }
    }
}
