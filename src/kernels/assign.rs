//! Batched nearest code (`shaders/assign.wgsl`): `index[i] = argmin_k ||z_i - c_k||^2` (ties: the lowest k) and
//! `distance[i]` = that squared distance, for z `[n x m]` and a codebook `[k x m]`, row-major f32.

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_shape, check_workgroup_size, dispatch, pipeline, shader,
    uniform,
};
use crate::error::Result;
use crate::gpu::grid;
use crate::shaders::{Lanes, assign_source};

/// The sizes of one assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssignShape {
    /// Rows of z.
    pub n: u32,
    /// Codes.
    pub k: u32,
    /// Latent dimension.
    pub m: u32,
}

/// The caller's buffers, each with `STORAGE` usage: `z` (n x m f32), `codebook` (k x m f32), `index` (n u32, written),
/// `distance` (n f32, written).
#[derive(Clone, Copy)]
pub struct AssignBuffers<'a> {
    pub z: &'a wgpu::Buffer,
    pub codebook: &'a wgpu::Buffer,
    pub index: &'a wgpu::Buffer,
    pub distance: &'a wgpu::Buffer,
}

#[derive(encase::ShaderType)]
struct Params {
    n: u32,
    k: u32,
    m: u32,
    write_codes: u32,
}

/// The assign pipelines (vec4 and scalar loads) and their layout. Make once per device.
pub struct Assign {
    layout: wgpu::BindGroupLayout,
    vec4: wgpu::ComputePipeline,
    scalar: wgpu::ComputePipeline,
    workgroup_size: u32,
    max_groups: u32,
    /// Bound in place of `q` when the codes are not wanted.
    dummy_codes: wgpu::Buffer,
}

/// Rows each invocation handles (`ROWS` in the shader).
pub const ROWS_PER_INVOCATION: u32 = 4;

impl Assign {
    /// The default workgroup size.
    pub const WORKGROUP_SIZE: u32 = 64;

    /// Creates the pipelines with the default workgroup size.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Self::with_workgroup_size(device, Self::WORKGROUP_SIZE)
    }

    /// Creates the pipelines with a given workgroup size (a power of two up to 256).
    pub fn with_workgroup_size(device: &wgpu::Device, workgroup_size: u32) -> Result<Self> {
        check_workgroup_size(device, workgroup_size, 256)?;
        let layout = bind_group_layout(
            device,
            "assign",
            &[
                (0, Slot::Uniform),
                (1, Slot::Read),
                (2, Slot::Read),
                (3, Slot::ReadWrite),
                (4, Slot::ReadWrite),
                (5, Slot::ReadWrite),
            ],
        )?;
        let vec4 = shader(device, "assign.wgsl (vec4)", &assign_source(Lanes::Vec4))?;
        let scalar = shader(device, "assign.wgsl (scalar)", &assign_source(Lanes::Scalar))?;
        Ok(Assign {
            vec4: pipeline(device, &layout, &vec4, "assign", workgroup_size)?,
            scalar: pipeline(device, &layout, &scalar, "assign", workgroup_size)?,
            layout,
            workgroup_size,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
            dummy_codes: crate::gpu::zeroed::<f32>(device, "assign unused codes", 4)?,
        })
    }

    /// Checks the buffers against `shape` and makes the bind group. Uses vec4 loads when `m % 4 == 0`.
    pub fn bind(&self, device: &wgpu::Device, buffers: &AssignBuffers<'_>, shape: AssignShape) -> Result<BoundAssign> {
        self.bind_inner(device, buffers, shape, None)
    }

    /// [`Assign::bind`], and the same dispatch also writes the chosen codes, `q[i] = codebook[index[i]]`
    /// (`q` is `n x m`): the quantized rows without a separate gather.
    pub fn bind_with_codes(
        &self,
        device: &wgpu::Device,
        buffers: &AssignBuffers<'_>,
        shape: AssignShape,
        q: &wgpu::Buffer,
    ) -> Result<BoundAssign> {
        self.bind_inner(device, buffers, shape, Some(q))
    }

    fn bind_inner(
        &self,
        device: &wgpu::Device,
        buffers: &AssignBuffers<'_>,
        shape: AssignShape,
        q: Option<&wgpu::Buffer>,
    ) -> Result<BoundAssign> {
        let AssignShape { n, k, m } = shape;
        check_shape(&[("n", n), ("k", k), ("m", m)], &[("n x m", n, m), ("k x m", k, m)])?;
        let params = uniform(device, "assign params", &Params { n, k, m, write_codes: q.is_some() as u32 })?;
        let bind_group = bind_group(
            device,
            "assign",
            &self.layout,
            &params,
            &[
                Binding::new(1, "z", buffers.z, n as u64 * m as u64 * F32),
                Binding::new(2, "codebook", buffers.codebook, k as u64 * m as u64 * F32),
                Binding::new(3, "index", buffers.index, n as u64 * 4),
                Binding::new(4, "distance", buffers.distance, n as u64 * F32),
                match q {
                    Some(q) => Binding::new(5, "q", q, n as u64 * m as u64 * F32),
                    None => Binding::new(5, "unused", &self.dummy_codes, 16),
                },
            ],
        )?;
        let pipeline = match Lanes::for_dim(m) {
            Lanes::Vec4 => self.vec4.clone(),
            Lanes::Scalar => self.scalar.clone(),
        };
        let groups = n.div_ceil(self.workgroup_size * ROWS_PER_INVOCATION);
        Ok(BoundAssign { pipeline, bind_group, _params: params, grid: grid(groups, self.max_groups)?, shape })
    }
}

/// An assignment bound to buffers: record it with [`BoundAssign::encode`].
pub struct BoundAssign {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    grid: (u32, u32),
    shape: AssignShape,
}

impl BoundAssign {
    /// Records the dispatch into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch(pass, &self.pipeline, &self.bind_group, self.grid);
    }

    /// The shape this was bound with.
    pub fn shape(&self) -> AssignShape {
        self.shape
    }
}
