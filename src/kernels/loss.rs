//! The reconstruction loss (`shaders/loss.wgsl`): its gradient `2/(B d) (xhat - x)`, and fixed-order sums into a
//! small metrics buffer (the squared error, or the sum of an array such as the assignment distances).

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_shape, dispatch, pipeline, shader, thread_grid, uniform,
};
use crate::error::Result;
use crate::shaders;

#[derive(encase::ShaderType)]
struct Params {
    len: u32,
    slot: u32,
    scale: f32,
    pad: u32,
}

/// The loss pipelines. Make once per device.
pub struct Loss {
    layout: wgpu::BindGroupLayout,
    rec_grad: wgpu::ComputePipeline,
    sum_sq_diff: wgpu::ComputePipeline,
    sum: wgpu::ComputePipeline,
    dummy: wgpu::Buffer,
    max_groups: u32,
}

/// A loss operation bound to buffers.
pub struct BoundLoss {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    grid: (u32, u32),
}

impl BoundLoss {
    /// Records the dispatch into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch(pass, &self.pipeline, &self.bind_group, self.grid);
    }
}

/// Elements of `rec_grad` per invocation (`PER_INVOCATION` in the shader).
const REC_GRAD_PER_INVOCATION: u32 = 4;
const WORKGROUP_SIZE: u32 = 256;

impl Loss {
    /// Creates the pipelines.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let layout = bind_group_layout(
            device,
            "loss",
            &[(0, Slot::Uniform), (1, Slot::Read), (2, Slot::Read), (3, Slot::ReadWrite)],
        )?;
        let module = shader(device, "loss.wgsl", shaders::LOSS)?;
        Ok(Loss {
            rec_grad: pipeline(device, &layout, &module, "rec_grad", WORKGROUP_SIZE)?,
            sum_sq_diff: pipeline(device, &layout, &module, "sum_sq_diff", WORKGROUP_SIZE)?,
            sum: pipeline(device, &layout, &module, "sum", WORKGROUP_SIZE)?,
            dummy: crate::gpu::zeroed::<f32>(device, "loss unused binding", 1)?,
            layout,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    fn bind(
        &self,
        device: &wgpu::Device,
        pipeline: &wgpu::ComputePipeline,
        params: Params,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        out: &wgpu::Buffer,
        out_len: u64,
        grid: (u32, u32),
    ) -> Result<BoundLoss> {
        let len = params.len as u64;
        let uniform = uniform(device, "loss params", &params)?;
        let bind_group = bind_group(
            device,
            "loss",
            &self.layout,
            &uniform,
            &[
                Binding::new(1, "xhat", a, len * F32),
                Binding::new(2, "x", b, if std::ptr::eq(b, &self.dummy) { F32 } else { len * F32 }),
                Binding::new(3, "out", out, out_len * F32),
            ],
        )?;
        Ok(BoundLoss { pipeline: pipeline.clone(), bind_group, _params: uniform, grid })
    }

    /// `grad = 2/(B d) (xhat - x)` over `len = B d` elements.
    pub fn bind_rec_grad(
        &self,
        device: &wgpu::Device,
        xhat: &wgpu::Buffer,
        x: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        batch: u32,
        dim: u32,
    ) -> Result<BoundLoss> {
        check_shape(&[("batch", batch), ("dim", dim)], &[("batch x dim", batch, dim)])?;
        let len = batch * dim;
        let scale = (2.0 / (batch as f64 * dim as f64)) as f32;
        let grid = thread_grid(len.div_ceil(REC_GRAD_PER_INVOCATION) as u64, WORKGROUP_SIZE, self.max_groups)?;
        self.bind(device, &self.rec_grad, Params { len, slot: 0, scale, pad: 0 }, xhat, x, grad, len as u64, grid)
    }

    /// `out[slot] = sum (xhat - x)^2` over `len` elements.
    pub fn bind_sum_sq_diff(
        &self,
        device: &wgpu::Device,
        xhat: &wgpu::Buffer,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
        slot: u32,
        len: u32,
    ) -> Result<BoundLoss> {
        check_shape(&[("len", len)], &[])?;
        self.bind(
            device,
            &self.sum_sq_diff,
            Params { len, slot, scale: 1.0, pad: 0 },
            xhat,
            x,
            out,
            slot as u64 + 1,
            (1, 1),
        )
    }

    /// `out[slot] = sum values` over `len` elements.
    pub fn bind_sum(
        &self,
        device: &wgpu::Device,
        values: &wgpu::Buffer,
        out: &wgpu::Buffer,
        slot: u32,
        len: u32,
    ) -> Result<BoundLoss> {
        check_shape(&[("len", len)], &[])?;
        self.bind(
            device,
            &self.sum,
            Params { len, slot, scale: 1.0, pad: 0 },
            values,
            &self.dummy,
            out,
            slot as u64 + 1,
            (1, 1),
        )
    }
}
