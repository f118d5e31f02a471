//! Elementwise steps of residual VQ (`shaders/residual.wgsl`): `out = a - b` (the next level's residual) and
//! `out += a` (the sum of the levels' codes, and of their estimators' gradients). Stacked runs are one array.

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_shape, dispatch, pipeline, shader, thread_grid, uniform,
};
use crate::error::Result;
use crate::shaders;

#[derive(encase::ShaderType)]
struct Params {
    len: u32,
    p0: u32,
    p1: u32,
    p2: u32,
}

const WORKGROUP_SIZE: u32 = 256;

/// The two pipelines. Make once per device.
pub struct Residual {
    layout: wgpu::BindGroupLayout,
    subtract: wgpu::ComputePipeline,
    accumulate: wgpu::ComputePipeline,
    max_groups: u32,
}

impl Residual {
    /// Creates the pipelines.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        use Slot::*;
        let layout = bind_group_layout(device, "residual", &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite)])?;
        let module = shader(device, "residual.wgsl", shaders::RESIDUAL)?;
        Ok(Residual {
            subtract: pipeline(device, &layout, &module, "subtract", WORKGROUP_SIZE)?,
            accumulate: pipeline(device, &layout, &module, "accumulate", WORKGROUP_SIZE)?,
            layout,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// `out = a - b` over `len` floats.
    pub fn bind_subtract(
        &self,
        device: &wgpu::Device,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        out: &wgpu::Buffer,
        len: u32,
    ) -> Result<BoundResidual> {
        self.bind(device, &self.subtract, (a, b), out, len)
    }

    /// `out += a` over `len` floats.
    pub fn bind_accumulate(
        &self,
        device: &wgpu::Device,
        a: &wgpu::Buffer,
        out: &wgpu::Buffer,
        len: u32,
    ) -> Result<BoundResidual> {
        self.bind(device, &self.accumulate, (a, a), out, len)
    }

    fn bind(
        &self,
        device: &wgpu::Device,
        which: &wgpu::ComputePipeline,
        (a, b): (&wgpu::Buffer, &wgpu::Buffer),
        out: &wgpu::Buffer,
        len: u32,
    ) -> Result<BoundResidual> {
        check_shape(&[("len", len)], &[])?;
        let params = uniform(device, "residual params", &Params { len, p0: 0, p1: 0, p2: 0 })?;
        let bytes = len as u64 * F32;
        let bind_group = bind_group(
            device,
            "residual",
            &self.layout,
            &params,
            &[Binding::new(1, "a", a, bytes), Binding::new(2, "b", b, bytes), Binding::new(3, "out", out, bytes)],
        )?;
        let grid = thread_grid(len as u64, WORKGROUP_SIZE, self.max_groups)?;
        Ok(BoundResidual { pipeline: which.clone(), bind_group, _params: params, grid })
    }
}

/// A residual step bound to buffers.
pub struct BoundResidual {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    grid: (u32, u32),
}

impl BoundResidual {
    /// Records the dispatch into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch(pass, &self.pipeline, &self.bind_group, self.grid);
    }
}
