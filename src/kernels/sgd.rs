//! SGD with momentum, PyTorch's semantics (`shaders/sgd.wgsl`): `v <- momentum v + g`, `p <- p - lr v`, over a
//! flat buffer, its gradient and its velocity. The alternate codebook mode steps its codebook with it
//! (docs/PROTOCOL.md §6.6); the f64 oracle is `reference::train::CpuSgd`.
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::gpu::{read_buffer, upload, zeroed};
//! use vqgrad::kernels::sgd::Sgd;
//! let (param, grad) = (upload(&device, "p", &[1.0f32, 2.0])?, upload(&device, "g", &[0.5f32, -1.0])?);
//! let velocity = zeroed::<f32>(&device, "v", 2)?;
//! let bound = Sgd::new(&device)?.bind(&device, &param, &grad, &velocity, 2, 0.1, 0.9)?;
//! let mut encoder = device.create_command_encoder(&Default::default());
//! bound.encode(&mut encoder.begin_compute_pass(&Default::default()));
//! queue.submit([encoder.finish()]);
//! assert_eq!(read_buffer::<f32>(&device, &queue, &param)?, vec![0.95, 2.1]);
//! # Ok(())
//! # }
//! ```

use super::{Binding, F32, Slot, bind_group, bind_group_layout, check_shape, pipeline, shader, thread_grid, uniform};
use crate::error::{Error, Result};
use crate::shaders;

#[derive(encase::ShaderType)]
struct Params {
    len: u32,
    momentum: f32,
    lr: f32,
    pad: u32,
}

const WORKGROUP_SIZE: u32 = 256;

/// The pipeline. Make once per device.
pub struct Sgd {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    max_groups: u32,
}

impl Sgd {
    /// Creates the pipeline.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        use Slot::*;
        let layout = bind_group_layout(device, "sgd", &[(0, Uniform), (1, ReadWrite), (2, Read), (3, ReadWrite)])?;
        let module = shader(device, "sgd.wgsl", shaders::SGD)?;
        Ok(Sgd {
            pipeline: pipeline(device, &layout, &module, "sgd_momentum", WORKGROUP_SIZE)?,
            layout,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// Binds `len` values with their gradient and velocity (zeroed by the caller at the start), at rate `lr` (finite
    /// and > 0) with `momentum` in [0, 1).
    #[allow(clippy::too_many_arguments)] // the buffers, their length and the two settings
    pub fn bind(
        &self,
        device: &wgpu::Device,
        param: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        velocity: &wgpu::Buffer,
        len: u32,
        lr: f32,
        momentum: f32,
    ) -> Result<BoundSgd> {
        check_shape(&[("len", len)], &[])?;
        if !(lr.is_finite() && lr > 0.0 && (0.0..1.0).contains(&momentum)) {
            return Err(Error::Input(format!("SGD needs lr > 0 and momentum in [0, 1), got {lr} and {momentum}")));
        }
        let params = uniform(device, "sgd params", &Params { len, momentum, lr, pad: 0 })?;
        let bytes = len as u64 * F32;
        let bindings = [
            Binding::new(1, "param", param, bytes),
            Binding::new(2, "grad", grad, bytes),
            Binding::new(3, "velocity", velocity, bytes),
        ];
        let bind_group = bind_group(device, "sgd", &self.layout, &params, &bindings)?;
        let grid = thread_grid(len as u64, WORKGROUP_SIZE, self.max_groups)?;
        Ok(BoundSgd { pipeline: self.pipeline.clone(), bind_group, _params: params, grid })
    }
}

/// SGD bound to a buffer and its state: record it with [`BoundSgd::encode`].
pub struct BoundSgd {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    grid: (u32, u32),
}

impl BoundSgd {
    /// Records one step into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        super::dispatch(pass, &self.pipeline, &self.bind_group, self.grid);
    }
}
