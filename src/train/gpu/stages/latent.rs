//! The map of the encodings before the quantizer (docs/PROTOCOL.md §6.6): FSQ's bound or cosine codes' unit rows
//! from the encoder's z into
//! level 0's input, and back from level 0's dz into the encoder's. Only where a map is on; the runs of a batch
//! share it.

use super::Ctx;
use crate::error::Result;
use crate::kernels::latent::{BoundLatent, LatentBuffers};
use crate::model::LatentMap;

pub(in super::super) struct LatentStage {
    forward: BoundLatent,
    backward: BoundLatent,
}

impl LatentStage {
    /// The stage of the batch's map, or `None` without one.
    pub fn new(cx: Ctx<'_>) -> Result<Option<Self>> {
        let (device, bf, sz) = (cx.device(), cx.bf, cx.sz);
        let (level, len) = (&bf.levels[0], sz.runs * sz.b * sz.m);
        let forward = LatentBuffers { z: &bf.z, out: &level.input, dy: None };
        let backward = LatentBuffers { z: &bf.z, out: &bf.dz, dy: Some(&level.dz) };
        let k = &cx.ks.latent;
        Ok(match cx.first().latent_map() {
            LatentMap::None => None,
            LatentMap::Fsq(levels) => Some(LatentStage {
                forward: k.bind_fsq(device, &forward, &levels, len)?,
                backward: k.bind_fsq(device, &backward, &levels, len)?,
            }),
            LatentMap::Unit => Some(LatentStage {
                forward: k.bind_unit(device, &forward, sz.m, len)?,
                backward: k.bind_unit(device, &backward, sz.m, len)?,
            }),
        })
    }

    /// After the encoder: level 0's input from z.
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.forward.encode(pass);
    }

    /// Before the encoder's backward: its dz from level 0's.
    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.backward.encode(pass);
    }
}
