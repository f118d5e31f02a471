//! Backward of the quantization layer (`shaders/estimator.wgsl`): from g = dL/dq~, z, the assigned index and the
//! codebook, writes `dL/dz = E(g, z, q) + 2 beta / (B m) (z - q)` for every [`Estimator`] (STUDY.md section 2).

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_shape, check_workgroup_size, dispatch, pipeline, shader,
    uniform, write_uniform,
};
use crate::error::{Error, Result};
use crate::estimator::Estimator;
use crate::gpu::grid;
use crate::shaders;

/// The sizes: `n` rows, `k` codes, latent dimension `m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EstimatorShape {
    pub n: u32,
    pub k: u32,
    pub m: u32,
}

/// What the kernel computes: the estimator and the commitment term's `beta` and batch size `B`
/// (its gradient is `2 beta / (B m) (z - q)`; `beta = 0` leaves the estimator alone).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EstimatorSettings {
    pub estimator: Estimator,
    pub beta: f32,
    pub batch: u32,
}

impl EstimatorSettings {
    /// The commitment gradient's coefficient `2 beta / (B m)`, after checking beta and B.
    pub fn commit_coeff(&self, m: u32) -> Result<f32> {
        if !self.beta.is_finite() || self.beta < 0.0 {
            return Err(Error::Input(format!("beta must be finite and >= 0, got {}", self.beta)));
        }
        if self.batch == 0 {
            return Err(Error::Shape("the batch size must be at least 1".into()));
        }
        Ok((2.0 * self.beta as f64 / (self.batch as f64 * m as f64)) as f32)
    }
}

/// The caller's buffers, each with `STORAGE` usage: `g` and `z` (n x m f32), `index` (n u32, each < k),
/// `codebook` (k x m f32), `grad_z` (n x m f32, written).
#[derive(Clone, Copy)]
pub struct EstimatorBuffers<'a> {
    pub g: &'a wgpu::Buffer,
    pub z: &'a wgpu::Buffer,
    pub index: &'a wgpu::Buffer,
    pub codebook: &'a wgpu::Buffer,
    pub grad_z: &'a wgpu::Buffer,
}

#[derive(encase::ShaderType)]
struct Params {
    n: u32,
    m: u32,
    k: u32,
    estimator: u32,
    commit_coeff: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

/// The estimator-backward pipeline. Make once per device.
pub struct EstimatorBackward {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    workgroup_size: u32,
    max_groups: u32,
}

impl EstimatorBackward {
    /// The default workgroup size.
    pub const WORKGROUP_SIZE: u32 = 64;

    /// Creates the pipeline with the default workgroup size.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Self::with_workgroup_size(device, Self::WORKGROUP_SIZE)
    }

    /// Creates the pipeline with a given workgroup size (a power of two up to 256).
    pub fn with_workgroup_size(device: &wgpu::Device, workgroup_size: u32) -> Result<Self> {
        check_workgroup_size(device, workgroup_size, 256)?;
        let layout = bind_group_layout(
            device,
            "estimator",
            &[
                (0, Slot::Uniform),
                (1, Slot::Read),
                (2, Slot::Read),
                (3, Slot::Read),
                (4, Slot::Read),
                (5, Slot::ReadWrite),
            ],
        )?;
        let module = shader(device, "estimator.wgsl", shaders::ESTIMATOR)?;
        Ok(EstimatorBackward {
            pipeline: pipeline(device, &layout, &module, "estimator_backward", workgroup_size)?,
            layout,
            workgroup_size,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// Checks the buffers against `shape` and the settings, and makes the bind group.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        buffers: &EstimatorBuffers<'_>,
        shape: EstimatorShape,
        settings: EstimatorSettings,
    ) -> Result<BoundEstimator> {
        let EstimatorShape { n, k, m } = shape;
        check_shape(&[("n", n), ("k", k), ("m", m)], &[("n x m", n, m), ("k x m", k, m)])?;
        let params = uniform(device, "estimator params", &params(shape, settings)?)?;
        let rows = n as u64 * m as u64 * F32;
        let bind_group = bind_group(
            device,
            "estimator",
            &self.layout,
            &params,
            &[
                Binding::new(1, "g", buffers.g, rows),
                Binding::new(2, "z", buffers.z, rows),
                Binding::new(3, "index", buffers.index, n as u64 * 4),
                Binding::new(4, "codebook", buffers.codebook, k as u64 * m as u64 * F32),
                Binding::new(5, "grad_z", buffers.grad_z, rows),
            ],
        )?;
        let grid = grid(n.div_ceil(self.workgroup_size), self.max_groups)?;
        Ok(BoundEstimator { pipeline: self.pipeline.clone(), bind_group, params, grid, shape })
    }
}

fn params(shape: EstimatorShape, settings: EstimatorSettings) -> Result<Params> {
    Ok(Params {
        n: shape.n,
        m: shape.m,
        k: shape.k,
        estimator: settings.estimator.shader_id(),
        commit_coeff: settings.commit_coeff(shape.m)?,
        pad0: 0,
        pad1: 0,
        pad2: 0,
    })
}

/// An estimator backward bound to buffers: record it with [`BoundEstimator::encode`].
pub struct BoundEstimator {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    grid: (u32, u32),
    shape: EstimatorShape,
}

impl BoundEstimator {
    /// Records the dispatch into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch(pass, &self.pipeline, &self.bind_group, self.grid);
    }

    /// Changes the estimator, beta or batch size; takes effect with the next submit.
    pub fn set(&self, queue: &wgpu::Queue, settings: EstimatorSettings) -> Result<()> {
        write_uniform(queue, &self.params, &params(self.shape, settings)?);
        Ok(())
    }
}
