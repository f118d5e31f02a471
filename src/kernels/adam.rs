//! Adam with PyTorch's semantics (`shaders/adam.wgsl`) over a flat parameter buffer, its gradient and its two
//! moment buffers. The step's constants come from a [`StepUniform`] slot, so many steps fit one submit.

use super::step::StepUniform;
use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_shape, pipeline_with, shader, thread_grid, uniform,
};
use crate::error::{Error, Result};
use crate::shaders;

/// Adam's constant hyperparameters (the learning rate enters through [`super::step::StepConstants::adam`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamSettings {
    /// The first moment's decay (PyTorch's default 0.9).
    pub beta1: f32,
    /// The second moment's decay (PyTorch's default 0.999).
    pub beta2: f32,
    /// Added to the second moment's square root (PyTorch's default 1e-8).
    pub eps: f32,
}

impl Default for AdamSettings {
    /// docs/PROTOCOL.md's: betas (0.9, 0.999), eps 1e-8.
    fn default() -> Self {
        AdamSettings { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

#[derive(encase::ShaderType)]
struct Params {
    len: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

/// The Adam pipeline. Make once per device, with the step uniform it will read.
pub struct Adam {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    max_groups: u32,
}

const WORKGROUP_SIZE: u32 = 256;

/// Adam bound to a parameter buffer and its state.
pub struct BoundAdam {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    grid: (u32, u32),
}

impl BoundAdam {
    /// Records one update, with step `slot` of `step` at group 1.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32) {
        super::dispatch_step(pass, &self.pipeline, &self.bind_group, (self.grid.0, self.grid.1, 1), step, slot);
    }
}

impl Adam {
    /// Creates the pipeline; `step` provides group 1's layout.
    pub fn new(device: &wgpu::Device, step: &StepUniform) -> Result<Self> {
        use Slot::*;
        let layout = bind_group_layout(
            device,
            "adam",
            &[(0, Uniform), (1, ReadWrite), (2, Read), (3, ReadWrite), (4, ReadWrite)],
        )?;
        let module = shader(device, "adam.wgsl", shaders::ADAM)?;
        Ok(Adam {
            pipeline: pipeline_with(device, &[&layout, step.layout()], &module, "adam", WORKGROUP_SIZE)?,
            layout,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// Binds `len` parameters with their gradient and moments (zeroed by the caller at the start).
    pub fn bind(
        &self,
        device: &wgpu::Device,
        param: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        moment1: &wgpu::Buffer,
        moment2: &wgpu::Buffer,
        len: u32,
        settings: AdamSettings,
    ) -> Result<BoundAdam> {
        check_shape(&[("len", len)], &[])?;
        let AdamSettings { beta1, beta2, eps } = settings;
        if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && eps.is_finite() && eps > 0.0) {
            return Err(Error::Input(format!("Adam needs betas in [0, 1) and eps > 0, got {settings:?}")));
        }
        let params = uniform(device, "adam params", &Params { len, beta1, beta2, eps })?;
        let bytes = len as u64 * F32;
        let bind_group = bind_group(
            device,
            "adam",
            &self.layout,
            &params,
            &[
                Binding::new(1, "param", param, bytes),
                Binding::new(2, "grad", grad, bytes),
                Binding::new(3, "moment1", moment1, bytes),
                Binding::new(4, "moment2", moment2, bytes),
            ],
        )?;
        let grid = thread_grid(len as u64, WORKGROUP_SIZE, self.max_groups)?;
        Ok(BoundAdam { pipeline: self.pipeline.clone(), bind_group, _params: params, grid })
    }
}
