//! Per-step constants for kernels recorded many steps to a submit: one 256-byte slot per step in a uniform
//! buffer, selected by a dynamic offset (`@group(1) @binding(0)`; the WGSL `Step` struct is in `common.wgsl`, composed
//! into `adam.wgsl`, `codebook.wgsl`, `gather.wgsl` and `soft.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::scoped;

/// One step's constants (the shaders' `Step` struct).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepConstants {
    /// Adam's `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// Adam's `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
    /// The first row of this step's minibatch in the schedule buffer.
    pub row_offset: u32,
    /// The step number t (1-based).
    pub step: u32,
    /// The relaxation's temperature at this step (`soft.wgsl`).
    pub tau: f32,
    /// Pads the slot to 32 bytes.
    pub pad: [u32; 3],
}

impl StepConstants {
    /// Adam's constants for step `t` (1-based), computed in f64 as PyTorch does.
    pub fn adam(t: u64, lr: f64, beta1: f64, beta2: f64, row_offset: u32) -> Self {
        let bc1 = 1.0 - beta1.powf(t as f64);
        let bc2 = 1.0 - beta2.powf(t as f64);
        StepConstants {
            step_size: (lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            row_offset,
            step: t as u32,
            ..Default::default()
        }
    }

    /// This step's temperature for `soft.wgsl`.
    pub fn with_tau(self, tau: f32) -> Self {
        StepConstants { tau, ..self }
    }
}

/// A ring of step slots. Write the slots with [`StepUniform::write`] before a submit; record step `s` of that
/// submit with [`StepUniform::bind`]`(pass, s)`.
pub struct StepUniform {
    layout: wgpu::BindGroupLayout,
    buffer: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    slots: u32,
    stride: u32,
}

const SLOT_BYTES: u64 = std::mem::size_of::<StepConstants>() as u64;

impl StepUniform {
    /// A buffer of `slots` step slots.
    pub fn new(device: &wgpu::Device, slots: u32) -> Result<Self> {
        if slots == 0 {
            return Err(Error::Shape("at least one step slot".into()));
        }
        let stride = device.limits().min_uniform_buffer_offset_alignment.max(SLOT_BYTES as u32);
        let layout = scoped(
            device,
            || "step uniform layout".into(),
            || {
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("step"),
                    entries: &[wgpu::BindGroupLayoutEntry {
                        binding: 0,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: true,
                            min_binding_size: wgpu::BufferSize::new(SLOT_BYTES),
                        },
                        count: None,
                    }],
                })
            },
        )?;
        let buffer = scoped(
            device,
            || "step uniform buffer".into(),
            || {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("step"),
                    size: stride as u64 * slots as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            },
        )?;
        let bind_group = scoped(
            device,
            || "step bind group".into(),
            || {
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("step"),
                    layout: &layout,
                    entries: &[wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &buffer,
                            offset: 0,
                            size: wgpu::BufferSize::new(SLOT_BYTES),
                        }),
                    }],
                })
            },
        )?;
        Ok(StepUniform { layout, buffer, bind_group, slots, stride })
    }

    /// The layout kernels put at group 1.
    pub fn layout(&self) -> &wgpu::BindGroupLayout {
        &self.layout
    }

    /// How many steps fit one submit.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Writes the slots for the next submit (at most [`slots`](Self::slots)).
    pub fn write(&self, queue: &wgpu::Queue, steps: &[StepConstants]) -> Result<()> {
        if steps.len() > self.slots as usize {
            return Err(Error::Shape(format!("{} steps exceed the {} step slots", steps.len(), self.slots)));
        }
        let mut bytes = vec![0u8; self.stride as usize * steps.len()];
        for (i, s) in steps.iter().enumerate() {
            let at = i * self.stride as usize;
            bytes[at..at + SLOT_BYTES as usize].copy_from_slice(bytemuck::bytes_of(s));
        }
        queue.write_buffer(&self.buffer, 0, &bytes);
        Ok(())
    }

    /// Sets group 1 to slot `slot` in the caller's pass.
    pub fn bind(&self, pass: &mut wgpu::ComputePass<'_>, slot: u32) {
        pass.set_bind_group(1, &self.bind_group, &[slot * self.stride]);
    }
}
