//! Maps of the encodings before the quantizer (`shaders/latent.wgsl`, docs/PROTOCOL.md §6.6): FSQ's per-dimension
//! bound, elementwise, and cosine codes' unit rows, a row per invocation (which also normalizes a codebook's rows);
//! forward and backward, over stacked rows of m. The f64 oracle is `reference::latent`.
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::gpu::{read_buffer, upload, zeroed};
//! use vqgrad::kernels::latent::{Latent, LatentBuffers};
//! // Three levels (odd: no offset): z = 0 maps to 0, the middle of the grid {-1, 0, 1}.
//! let (z, out) = (upload(&device, "z", &[0.0f32, 0.0])?, zeroed::<f32>(&device, "z^", 2)?);
//! let buffers = LatentBuffers { z: &z, out: &out, dy: None };
//! let bound = Latent::new(&device)?.bind_fsq(&device, &buffers, &[3, 3], 2)?;
//! let mut encoder = device.create_command_encoder(&Default::default());
//! bound.encode(&mut encoder.begin_compute_pass(&Default::default()));
//! queue.submit([encoder.finish()]);
//! assert_eq!(read_buffer::<f32>(&device, &queue, &out)?, vec![0.0, 0.0]);
//! # Ok(())
//! # }
//! ```

use super::{Binding, F32, Slot, bind_group, bind_group_layout, check_shape, pipeline, shader, thread_grid, uniform};
use crate::error::{Error, Result};
use crate::reference::latent::fsq_constants;
use crate::shaders;

#[derive(encase::ShaderType)]
struct Params {
    len: u32,
    m: u32,
    pad0: u32,
    pad1: u32,
}

const WORKGROUP_SIZE: u32 = 256;

/// The buffers of one map: `z` the encodings (read), `out` written, and for the backward `dy`, the gradient at
/// the map's output (then `out` is the gradient at z). All `len` f32.
#[derive(Clone, Copy)]
pub struct LatentBuffers<'a> {
    /// The encodings z.
    pub z: &'a wgpu::Buffer,
    /// Written: map(z), or the gradient at z.
    pub out: &'a wgpu::Buffer,
    /// The backward's gradient at map(z); `None` binds the forward.
    pub dy: Option<&'a wgpu::Buffer>,
}

/// The pipelines. Make once per device.
pub struct Latent {
    layout: wgpu::BindGroupLayout,
    fsq_forward: wgpu::ComputePipeline,
    fsq_backward: wgpu::ComputePipeline,
    unit_forward: wgpu::ComputePipeline,
    unit_backward: wgpu::ComputePipeline,
    max_groups: u32,
}

impl Latent {
    /// Creates the pipelines.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        use Slot::*;
        let slots = [(0, Uniform), (1, Read), (2, Read), (3, ReadWrite), (4, Read)];
        let layout = bind_group_layout(device, "latent", &slots)?;
        let module = shader(device, "latent.wgsl", shaders::LATENT)?;
        Ok(Latent {
            fsq_forward: pipeline(device, &layout, &module, "fsq_forward", WORKGROUP_SIZE)?,
            fsq_backward: pipeline(device, &layout, &module, "fsq_backward", WORKGROUP_SIZE)?,
            unit_forward: pipeline(device, &layout, &module, "unit_forward", WORKGROUP_SIZE)?,
            unit_backward: pipeline(device, &layout, &module, "unit_backward", WORKGROUP_SIZE)?,
            layout,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// Binds FSQ's bound (forward, or backward with `buffers.dy`) over `len` values of rows of `levels.len()`, each
    /// level 2 to 65536.
    pub fn bind_fsq(
        &self,
        device: &wgpu::Device,
        buffers: &LatentBuffers<'_>,
        levels: &[u32],
        len: u32,
    ) -> Result<BoundLatent> {
        let m = levels.len() as u32;
        check_shape(&[("m", m), ("len", len)], &[])?;
        if !len.is_multiple_of(m) {
            return Err(Error::Shape(format!("{len} values are not rows of m = {m}")));
        }
        if let Some(l) = levels.iter().find(|&&l| !(2..=65536).contains(&l)) {
            return Err(Error::Input(format!("FSQ levels must be 2 to 65536, got {l}")));
        }
        let constants: Vec<[f32; 4]> = levels
            .iter()
            .map(|&l| {
                let (h, offset, shift, w) = fsq_constants(l);
                [h as f32, offset as f32, shift as f32, w as f32]
            })
            .collect();
        let pipeline = if buffers.dy.is_some() { &self.fsq_backward } else { &self.fsq_forward };
        self.bind(device, buffers, (m, len), &constants, (pipeline, len))
    }

    /// Binds cosine codes' unit rows (forward, or backward with `buffers.dy`) over `len` values of rows of `m`.
    pub fn bind_unit(
        &self,
        device: &wgpu::Device,
        buffers: &LatentBuffers<'_>,
        m: u32,
        len: u32,
    ) -> Result<BoundLatent> {
        check_shape(&[("m", m), ("len", len)], &[])?;
        if !len.is_multiple_of(m) {
            return Err(Error::Shape(format!("{len} values are not rows of m = {m}")));
        }
        let pipeline = if buffers.dy.is_some() { &self.unit_backward } else { &self.unit_forward };
        self.bind(device, buffers, (m, len), &[[0.0; 4]], (pipeline, len / m))
    }

    /// The bind group of either map, with `constants` (one per dimension for FSQ) and `threads` invocations.
    fn bind(
        &self,
        device: &wgpu::Device,
        buffers: &LatentBuffers<'_>,
        (m, len): (u32, u32),
        constants: &[[f32; 4]],
        (pipeline, threads): (&wgpu::ComputePipeline, u32),
    ) -> Result<BoundLatent> {
        let constants = crate::gpu::upload(device, "latent constants", constants)?;
        let params = uniform(device, "latent params", &Params { len, m, pad0: 0, pad1: 0 })?;
        let bytes = len as u64 * F32;
        let bindings = [
            Binding::new(1, "constants", &constants, constants.size()),
            Binding::new(2, "z", buffers.z, bytes),
            Binding::new(3, "out", buffers.out, bytes),
            Binding::new(4, "dy", buffers.dy.unwrap_or(buffers.z), bytes),
        ];
        let bind_group = bind_group(device, "latent", &self.layout, &params, &bindings)?;
        let grid = thread_grid(threads as u64, WORKGROUP_SIZE, self.max_groups)?;
        Ok(BoundLatent { pipeline: pipeline.clone(), bind_group, _params: params, _constants: constants, grid })
    }
}

/// A map bound to its buffers: record it with [`BoundLatent::encode`].
pub struct BoundLatent {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    _constants: wgpu::Buffer,
    grid: (u32, u32),
}

impl BoundLatent {
    /// Records the dispatch into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        super::dispatch(pass, &self.pipeline, &self.bind_group, self.grid);
    }
}
