//! Backward of the quantization layer (`shaders/estimator.wgsl`): from g = dL/dq~, z, the assigned index and the
//! codebook, writes `dL/dz = E(g, z, q) + 2 beta / (B m) (z - q)` for every [`Estimator`] (docs/PROTOCOL.md §2).
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::Estimator;
//! use vqgrad::gpu::{read_buffer, upload, zeroed};
//! use vqgrad::kernels::estimator::{EstimatorBackward, EstimatorBuffers, EstimatorSettings, EstimatorShape};
//! // One row z = (1, 0) quantized to q = (0, 1); the gradient at q is g = (0, 1).
//! let (g, z) = (upload(&device, "g", &[0.0f32, 1.0])?, upload(&device, "z", &[1.0f32, 0.0])?);
//! let (index, codebook) = (upload(&device, "index", &[0u32])?, upload(&device, "codebook", &[0.0f32, 1.0])?);
//! let grad_z = zeroed::<f32>(&device, "dL/dz", 2)?;
//! let kernel = EstimatorBackward::new(&device)?;
//! let buffers = EstimatorBuffers { g: &g, z: &z, index: &index, codebook: &codebook, grad_z: &grad_z };
//! let settings = EstimatorSettings { estimator: Estimator::RotationTrick, beta: 0.0, batch: 1 };
//! let bound = kernel.bind(&device, &buffers, EstimatorShape { n: 1, k: 1, m: 2 }, settings)?;
//! let mut encoder = device.create_command_encoder(&Default::default());
//! bound.encode(&mut encoder.begin_compute_pass(&Default::default()));
//! queue.submit([encoder.finish()]);
//! // The rotation that takes z's direction to q's carries g back to (1, 0) (within f32 rounding).
//! let dz = read_buffer::<f32>(&device, &queue, &grad_z)?;
//! assert!((dz[0] - 1.0).abs() < 1e-5 && dz[1].abs() < 1e-5, "{dz:?}");
//! # Ok(())
//! # }
//! ```

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, check_workgroup_size, dispatch_runs,
    pipeline, shader, uniform,
};
use crate::error::{Error, Result};
use crate::estimator::Estimator;
use crate::gpu::grid;
use crate::shaders;

/// The sizes: `n` rows, `k` codes, latent dimension `m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EstimatorShape {
    /// Rows.
    pub n: u32,
    /// Codes.
    pub k: u32,
    /// Latent dimension.
    pub m: u32,
}

/// What the kernel computes: the estimator and the commitment term's `beta` and batch size `B`
/// (its gradient is `2 beta / (B m) (z - q)`; `beta = 0` leaves the estimator alone).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EstimatorSettings {
    /// The gradient estimator.
    pub estimator: Estimator,
    /// The commitment weight (>= 0).
    pub beta: f32,
    /// The batch size B in the commitment gradient's 2 beta / (B m).
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
    /// dL/dq~, the gradient at the layer's output: n x m f32.
    pub g: &'a wgpu::Buffer,
    /// The encodings: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// Each row's code: n u32, each < k.
    pub index: &'a wgpu::Buffer,
    /// The codes: k x m f32.
    pub codebook: &'a wgpu::Buffer,
    /// Written: dL/dz, n x m f32.
    pub grad_z: &'a wgpu::Buffer,
}

#[derive(encase::ShaderType)]
struct Params {
    n: u32,
    m: u32,
    k: u32,
    pad: u32,
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
                (6, Slot::Read),
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
        self.bind_runs(device, buffers, shape, &[settings])
    }

    /// One run per entry of `settings`, stacked in the buffers and computed in one dispatch: run r's rows of g, z,
    /// index and grad_z are rows `r n .. (r + 1) n`, its codebook codes `r k .. (r + 1) k` (indices within its own
    /// codebook). Each run may have its own estimator and beta, and gives the bits it gives alone.
    pub fn bind_runs(
        &self,
        device: &wgpu::Device,
        buffers: &EstimatorBuffers<'_>,
        shape: EstimatorShape,
        settings: &[EstimatorSettings],
    ) -> Result<BoundEstimator> {
        let EstimatorShape { n, k, m } = shape;
        let runs = u32::try_from(settings.len()).unwrap_or(u32::MAX);
        check_shape(&[("n", n), ("k", k), ("m", m)], &[("n x m", n, m), ("k x m", k, m)])?;
        check_runs(runs, self.max_groups, &[("z", n as u64 * m as u64), ("codebook", k as u64 * m as u64)])?;
        let r = runs as u64;
        let params = uniform(device, "estimator params", &Params { n, m, k, pad: 0 })?;
        let run_settings = crate::gpu::upload(device, "estimator run settings", &run_settings(m, settings)?)?;
        let rows = r * n as u64 * m as u64 * F32;
        let bind_group = bind_group(
            device,
            "estimator",
            &self.layout,
            &params,
            &[
                Binding::new(1, "g", buffers.g, rows),
                Binding::new(2, "z", buffers.z, rows),
                Binding::new(3, "index", buffers.index, r * n as u64 * 4),
                Binding::new(4, "codebook", buffers.codebook, r * k as u64 * m as u64 * F32),
                Binding::new(5, "grad_z", buffers.grad_z, rows),
                Binding::new(6, "run settings", &run_settings, r * 8),
            ],
        )?;
        let (x, y) = grid(n.div_ceil(self.workgroup_size), self.max_groups)?;
        Ok(BoundEstimator {
            pipeline: self.pipeline.clone(),
            bind_group,
            _params: params,
            run_settings,
            grid: (x, y, runs),
            shape,
        })
    }
}

/// Each run's (estimator id, commitment coefficient bits), as the shader's `RunSettings`.
fn run_settings(m: u32, settings: &[EstimatorSettings]) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(2 * settings.len());
    for s in settings {
        out.push(s.estimator.shader_id());
        out.push(s.commit_coeff(m)?.to_bits());
    }
    Ok(out)
}

/// An estimator backward bound to buffers: record it with [`BoundEstimator::encode`].
pub struct BoundEstimator {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    run_settings: wgpu::Buffer,
    /// Workgroups in x and y over the rows, and one z layer per run.
    grid: (u32, u32, u32),
    shape: EstimatorShape,
}

impl BoundEstimator {
    /// Records the dispatch into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch_runs(pass, &self.pipeline, &self.bind_group, self.grid);
    }

    /// The per-run settings buffer: `(estimator id, commitment coefficient bits)` per run, two words each (the
    /// adaptive beta rewrites the second on the GPU).
    pub fn run_settings(&self) -> &wgpu::Buffer {
        &self.run_settings
    }

    /// Where each run's commitment coefficient lives, for a kernel that rewrites it on the GPU (the adaptive
    /// beta): word 1 of the shader's two-word `RunSettings`.
    pub fn commitment_slot(&self) -> super::schedule::SettingsSlot<'_> {
        super::schedule::SettingsSlot { buffer: &self.run_settings, stride: 2, offset: 1 }
    }

    /// Changes the estimator, beta or batch size of every run; takes effect with the next submit.
    pub fn set(&self, queue: &wgpu::Queue, settings: EstimatorSettings) -> Result<()> {
        let all = vec![settings; self.grid.2 as usize];
        queue.write_buffer(&self.run_settings, 0, bytemuck::cast_slice(&run_settings(self.shape.m, &all)?));
        Ok(())
    }
}
