//! Batched nearest code (`shaders/assign.wgsl`): `index[i] = argmin_k ||z_i - c_k||^2` (ties: the lowest k) and
//! `distance[i]` = that squared distance, for z `[n x m]` and a codebook `[k x m]`, row-major f32.
//!
//! On the caller's device and buffers: make the pipelines once, bind once, record into any pass.
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::gpu::{read_buffer, upload, zeroed};
//! use vqgrad::kernels::assign::{Assign, AssignBuffers, AssignShape};
//! let z = upload(&device, "z", &[0.9f32, 1.1, -0.2, 0.1, -1.0, -0.8])?; // 3 rows, m = 2
//! let codebook = upload(&device, "codebook", &[0.0f32, 0.0, 1.0, 1.0, -1.0, -1.0])?;
//! let (index, distance) = (zeroed::<u32>(&device, "index", 3)?, zeroed::<f32>(&device, "distance", 3)?);
//! let assign = Assign::new(&device)?;
//! let buffers = AssignBuffers { z: &z, codebook: &codebook, index: &index, distance: &distance };
//! let bound = assign.bind(&device, &buffers, AssignShape { n: 3, k: 3, m: 2 })?;
//! let mut encoder = device.create_command_encoder(&Default::default());
//! bound.encode(&mut encoder.begin_compute_pass(&Default::default()));
//! queue.submit([encoder.finish()]);
//! assert_eq!(read_buffer::<u32>(&device, &queue, &index)?[..3], [1, 0, 2]);
//! # Ok(())
//! # }
//! ```

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, check_workgroup_size, dispatch_runs,
    pipeline, shader, uniform,
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
    /// The rows to quantize: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// The codes: k x m f32.
    pub codebook: &'a wgpu::Buffer,
    /// Written: each row's nearest code (n u32; ties take the lowest index).
    pub index: &'a wgpu::Buffer,
    /// Written: each row's squared distance to that code (n f32).
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
        self.bind_runs(device, buffers, shape, None, 1)
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
        self.bind_runs(device, buffers, shape, Some(q), 1)
    }

    /// `runs` independent assignments of the same shape in one dispatch, stacked in the buffers: run r's rows of z
    /// are rows `r n .. (r + 1) n`, its codebook codes `r k .. (r + 1) k`, its outputs rows `r n .. (r + 1) n`;
    /// each index is within its own run's codebook (`0..k`). With `q`, the chosen codes are written too. Each run
    /// gives the bits it gives alone.
    pub fn bind_runs(
        &self,
        device: &wgpu::Device,
        buffers: &AssignBuffers<'_>,
        shape: AssignShape,
        q: Option<&wgpu::Buffer>,
        runs: u32,
    ) -> Result<BoundAssign> {
        let AssignShape { n, k, m } = shape;
        check_shape(&[("n", n), ("k", k), ("m", m)], &[("n x m", n, m), ("k x m", k, m)])?;
        check_runs(runs, self.max_groups, &[("z", n as u64 * m as u64), ("codebook", k as u64 * m as u64)])?;
        let r = runs as u64;
        let params = uniform(device, "assign params", &Params { n, k, m, write_codes: q.is_some() as u32 })?;
        let bind_group = bind_group(
            device,
            "assign",
            &self.layout,
            &params,
            &[
                Binding::new(1, "z", buffers.z, r * n as u64 * m as u64 * F32),
                Binding::new(2, "codebook", buffers.codebook, r * k as u64 * m as u64 * F32),
                Binding::new(3, "index", buffers.index, r * n as u64 * 4),
                Binding::new(4, "distance", buffers.distance, r * n as u64 * F32),
                match q {
                    Some(q) => Binding::new(5, "q", q, r * n as u64 * m as u64 * F32),
                    None => Binding::new(5, "unused", &self.dummy_codes, 16),
                },
            ],
        )?;
        let pipeline = match Lanes::for_dim(m) {
            Lanes::Vec4 => self.vec4.clone(),
            Lanes::Scalar => self.scalar.clone(),
        };
        let groups = n.div_ceil(self.workgroup_size * ROWS_PER_INVOCATION);
        let (x, y) = grid(groups, self.max_groups)?;
        Ok(BoundAssign { pipeline, bind_group, _params: params, grid: (x, y, runs), shape })
    }
}

/// An assignment bound to buffers: record it with [`BoundAssign::encode`].
pub struct BoundAssign {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    /// Workgroups in x and y over the rows, and one z layer per run.
    grid: (u32, u32, u32),
    shape: AssignShape,
}

impl BoundAssign {
    /// Records the dispatch into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch_runs(pass, &self.pipeline, &self.bind_group, self.grid);
    }

    /// The shape this was bound with.
    pub fn shape(&self) -> AssignShape {
        self.shape
    }
}
