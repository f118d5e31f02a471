//! The kernel families. Each module owns one WGSL file's pipelines and bind-group layouts, made once in `new`;
//! `bind` checks the caller's buffers against a shape and makes the bind group once; the bound object records
//! into the caller's `ComputePass` with `encode`, as often as needed, with no allocation.

pub mod adam;
pub mod affine;
pub mod assign;
pub mod codebook;
pub mod dense;
pub mod estimator;
pub mod gather;
pub mod latent;
pub mod learned;
pub mod loss;
pub mod orthogonal;
pub mod residual;
pub mod schedule;
pub mod sgd;
pub mod soft;
pub mod stats;
pub mod step;
pub mod vq;

use crate::error::{Error, Result};
use crate::gpu::scoped;
use encase::ShaderType;
use encase::internal::WriteInto;
use wgpu::util::DeviceExt;

/// How a binding is used by a shader.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

pub(crate) fn bind_group_layout(
    device: &wgpu::Device,
    label: &str,
    slots: &[(u32, Slot)],
) -> Result<wgpu::BindGroupLayout> {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
        .iter()
        .map(|&(binding, slot)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match slot {
                    Slot::Uniform => wgpu::BufferBindingType::Uniform,
                    Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    scoped(
        device,
        || format!("bind-group layout `{label}`"),
        || device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries }),
    )
}

/// Compiles WGSL. On failure the error carries wgpu's diagnostic, which quotes the offending source lines.
pub(crate) fn shader(device: &wgpu::Device, label: &str, source: &str) -> Result<wgpu::ShaderModule> {
    scoped(
        device,
        || format!("shader `{label}`"),
        || {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        },
    )
}

pub(crate) fn pipeline(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    module: &wgpu::ShaderModule,
    entry: &str,
    workgroup_size: u32,
) -> Result<wgpu::ComputePipeline> {
    pipeline_with(device, &[layout], module, entry, workgroup_size)
}

/// A pipeline whose layout has several bind groups (group i is `layouts[i]`).
pub(crate) fn pipeline_with(
    device: &wgpu::Device,
    layouts: &[&wgpu::BindGroupLayout],
    module: &wgpu::ShaderModule,
    entry: &str,
    workgroup_size: u32,
) -> Result<wgpu::ComputePipeline> {
    let layouts: Vec<Option<&wgpu::BindGroupLayout>> = layouts.iter().map(|l| Some(*l)).collect();
    let pipeline_layout = scoped(
        device,
        || format!("pipeline layout for `{entry}`"),
        || {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &layouts,
                immediate_size: 0,
            })
        },
    )?;
    scoped(
        device,
        || format!("compute pipeline `{entry}`"),
        || {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("WORKGROUP_SIZE", workgroup_size as f64)],
                    // Every kernel initializes the workgroup memory it reads.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        },
    )
}

/// Checks a workgroup size against the device: a power of two from 1 to `max` (the kernel's own cap).
pub(crate) fn check_workgroup_size(device: &wgpu::Device, workgroup_size: u32, max: u32) -> Result<()> {
    let limits = device.limits();
    let device_max = limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x);
    if !workgroup_size.is_power_of_two() || workgroup_size > max.min(device_max) {
        return Err(Error::Shape(format!(
            "workgroup size {workgroup_size} must be a power of two at most {}",
            max.min(device_max)
        )));
    }
    Ok(())
}

/// A buffer the caller binds, with the number of bytes the shape needs from it.
pub(crate) struct Binding<'a> {
    pub slot: u32,
    pub name: &'static str,
    pub buffer: &'a wgpu::Buffer,
    pub bytes: u64,
}

impl<'a> Binding<'a> {
    pub(crate) fn new(slot: u32, name: &'static str, buffer: &'a wgpu::Buffer, bytes: u64) -> Self {
        Binding { slot, name, buffer, bytes: bytes.max(4).next_multiple_of(4) }
    }
}

/// Checks every binding (size, usage, the device's binding limit) and makes the bind group. Only the bytes the
/// shape needs are bound, so a larger buffer is fine.
pub(crate) fn bind_group(
    device: &wgpu::Device,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    uniform: &wgpu::Buffer,
    bindings: &[Binding<'_>],
) -> Result<wgpu::BindGroup> {
    let max_binding = device.limits().max_storage_buffer_binding_size;
    for b in bindings {
        if b.buffer.size() < b.bytes {
            return Err(Error::BufferTooSmall { buffer: b.name, expected: b.bytes, actual: b.buffer.size() });
        }
        if !b.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::BufferUsage { buffer: b.name, missing: "STORAGE".into() });
        }
        if b.bytes > max_binding {
            return Err(Error::Shape(format!(
                "buffer `{}` needs {} bytes in one binding; the device allows {max_binding} \
                 (max_storage_buffer_binding_size)",
                b.name, b.bytes
            )));
        }
    }
    let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
    entries.extend(bindings.iter().map(|b| wgpu::BindGroupEntry {
        binding: b.slot,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: b.buffer,
            offset: 0,
            size: std::num::NonZeroU64::new(b.bytes),
        }),
    }));
    scoped(
        device,
        || format!("bind group `{label}`"),
        || device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries }),
    )
}

fn uniform_bytes<T: ShaderType + WriteInto>(value: &T) -> Vec<u8> {
    let mut buffer = encase::UniformBuffer::new(Vec::<u8>::new());
    buffer.write(value).expect("a parameter struct always fits a growable buffer");
    buffer.into_inner()
}

/// A uniform buffer holding `value`, laid out by encase. Needs no queue: it is written at creation.
pub(crate) fn uniform<T: ShaderType + WriteInto>(
    device: &wgpu::Device,
    label: &str,
    value: &T,
) -> Result<wgpu::Buffer> {
    let contents = uniform_bytes(value);
    scoped(
        device,
        || format!("uniform buffer `{label}`"),
        || {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &contents,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
        },
    )
}

/// Checks that every named size is at least 1, and that `a * b` elements stay addressable by a u32 index.
pub(crate) fn check_shape(dims: &[(&str, u32)], products: &[(&str, u32, u32)]) -> Result<()> {
    for &(name, v) in dims {
        if v == 0 {
            return Err(Error::Shape(format!("{name} must be at least 1")));
        }
    }
    for &(name, a, b) in products {
        if (a as u64) * (b as u64) > u32::MAX as u64 {
            return Err(Error::Shape(format!("{name} = {a} x {b} exceeds 2^32 elements")));
        }
    }
    Ok(())
}

/// Checks a batched bind: `runs` at least 1 and within one dispatch's z dimension (`max_groups`), and each named
/// per-run element count times `runs` addressable by a u32 index.
pub(crate) fn check_runs(runs: u32, max_groups: u32, per_run: &[(&str, u64)]) -> Result<()> {
    if runs == 0 || runs > max_groups {
        return Err(Error::Shape(format!("runs must be 1 to {max_groups} (one dispatch's z dimension), got {runs}")));
    }
    for &(name, elements) in per_run {
        if runs as u64 * elements > u32::MAX as u64 {
            return Err(Error::Shape(format!("{runs} runs of `{name}` ({elements} elements each) exceed 2^32")));
        }
    }
    Ok(())
}

pub(crate) const F32: u64 = 4;

/// Records one dispatch of `groups` workgroups, as an (x, y) grid when it passes the per-dimension limit.
pub(crate) fn dispatch(
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    bind_group: &wgpu::BindGroup,
    grid: (u32, u32),
) {
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    pass.dispatch_workgroups(grid.0, grid.1, 1);
}

/// [`dispatch`] with a z dimension: one layer of the (x, y) grid per run of a batched kernel.
pub(crate) fn dispatch_runs(
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    bind_group: &wgpu::BindGroup,
    grid: (u32, u32, u32),
) {
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    pass.dispatch_workgroups(grid.0, grid.1, grid.2);
}

/// The grid for one invocation per element: `count` elements in workgroups of `workgroup_size`.
pub(crate) fn thread_grid(count: u64, workgroup_size: u32, max_per_dim: u32) -> Result<(u32, u32)> {
    let groups = u32::try_from(count.div_ceil(workgroup_size as u64))
        .map_err(|_| Error::Shape(format!("{count} elements are too many for one dispatch")))?;
    crate::gpu::grid(groups, max_per_dim)
}

/// [`dispatch`] with a [`step::StepUniform`] slot at group 1 (kernels that read per-step constants).
pub(crate) fn dispatch_step(
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    bind_group: &wgpu::BindGroup,
    grid: (u32, u32, u32),
    step: &step::StepUniform,
    slot: u32,
) {
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    step.bind(pass, slot);
    pass.dispatch_workgroups(grid.0, grid.1, grid.2);
}
