//! The codebook's orthogonality penalty (`shaders/orthogonal.wgsl`, docs/PROTOCOL.md §6.6): adds
//! `weight dL_orth/dC` to a codebook gradient, with `L_orth = 1/K^2 sum_ij cos(c_i, c_j)^2 - 1/K` (the f64
//! oracle is `reference::orthogonal`). Stacked runs each use their own codebook; the weight is the batch's.
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::gpu::{read_buffer, upload};
//! use vqgrad::kernels::orthogonal::Orthogonal;
//! // Two orthogonal codes: the penalty is at its minimum, and its gradient is 0.
//! let codebook = upload(&device, "codebook", &[1.0f32, 0.0, 0.0, 2.0])?;
//! let grad = upload(&device, "grad", &[0.5f32; 4])?;
//! let bound = Orthogonal::new(&device)?.bind(&device, &codebook, &grad, (2, 2), 1, 10.0)?;
//! let mut encoder = device.create_command_encoder(&Default::default());
//! bound.encode(&mut encoder.begin_compute_pass(&Default::default()));
//! queue.submit([encoder.finish()]);
//! assert_eq!(read_buffer::<f32>(&device, &queue, &grad)?, vec![0.5; 4]);
//! # Ok(())
//! # }
//! ```

use super::{Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, pipeline, shader, uniform};
use crate::error::{Error, Result};
use crate::gpu::grid;
use crate::shaders;

#[derive(encase::ShaderType)]
struct Params {
    k: u32,
    m: u32,
    weight: f32,
    pad: u32,
}

const WORKGROUP_SIZE: u32 = 64;

/// The pipeline. Make once per device.
pub struct Orthogonal {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    max_groups: u32,
}

impl Orthogonal {
    /// Creates the pipeline.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        use Slot::*;
        let layout = bind_group_layout(device, "orthogonal", &[(0, Uniform), (1, Read), (2, ReadWrite)])?;
        let module = shader(device, "orthogonal.wgsl", shaders::ORTHOGONAL)?;
        Ok(Orthogonal {
            pipeline: pipeline(device, &layout, &module, "orthogonal_grad", WORKGROUP_SIZE)?,
            layout,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// `grad += weight dL_orth/dC` for `runs` stacked codebooks of `(k, m)` (k x m f32 each, in `codebook` and
    /// `grad`); `weight` finite and >= 0.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        codebook: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        (k, m): (u32, u32),
        runs: u32,
        weight: f32,
    ) -> Result<BoundOrthogonal> {
        check_shape(&[("k", k), ("m", m)], &[("k x m", k, m)])?;
        check_runs(runs, self.max_groups, &[("codebook", k as u64 * m as u64)])?;
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(Error::Input(format!("the orthogonality weight must be finite and >= 0, got {weight}")));
        }
        let params = uniform(device, "orthogonal params", &Params { k, m, weight, pad: 0 })?;
        let bytes = runs as u64 * k as u64 * m as u64 * F32;
        let bindings = [Binding::new(1, "codebook", codebook, bytes), Binding::new(2, "grad", grad, bytes)];
        let bind_group = bind_group(device, "orthogonal", &self.layout, &params, &bindings)?;
        let (x, y) = grid((k * m).div_ceil(WORKGROUP_SIZE), self.max_groups)?;
        Ok(BoundOrthogonal { pipeline: self.pipeline.clone(), bind_group, _params: params, grid: (x, y, runs) })
    }
}

/// The penalty's gradient bound to a codebook and its gradient: record it with [`BoundOrthogonal::encode`].
pub struct BoundOrthogonal {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    grid: (u32, u32, u32),
}

impl BoundOrthogonal {
    /// Records the dispatch into the caller's pass (after the codebook's own gradient, before its Adam step).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        super::dispatch_runs(pass, &self.pipeline, &self.bind_group, self.grid);
    }
}
