//! The Gumbel-softmax relaxation of the quantizer (`shaders/soft.wgsl`): with scores
//! `s_k = -||z - c_k||^2 / tau + G_k` (G_k standard Gumbel noise, or none) and `y = softmax(s)`,
//! - [`Soft::bind_sample`]: the hard sample `a = argmax_k s_k`, its squared distance and `q = c_a` (the forward of
//!   the `gumbel` estimators; with [`SoftRun::unsquared`], scored by `-||z - c_k|| / tau + G_k`: stochastic code
//!   sampling's draw);
//! - [`Soft::bind_forward`]: the relaxed code `sum_k y_k c_k`;
//! - [`Soft::bind_backward`]: `dL/dz = J^T g + 2 beta / (B m) (z - c_index)`, J the Jacobian of the relaxed code
//!   (the `gumbel` estimator's backward; without noise, the exact gradient of the soft-assignment surrogate).
//!
//! The temperature and the step number (which seeds the noise) come from a [`StepUniform`] slot, so that a
//! training loop records many annealed steps to one submit.
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::gpu::{read_buffer, upload, zeroed};
//! use vqgrad::kernels::soft::{Soft, SoftForwardBuffers, SoftRun, SoftShape};
//! use vqgrad::kernels::step::{StepConstants, StepUniform};
//! // z = (0.5, 0) halfway between the codes (0, 0) and (1, 0): the relaxed code is their mean.
//! let z = upload(&device, "z", &[0.5f32, 0.0])?;
//! let codebook = upload(&device, "codebook", &[0.0f32, 0.0, 1.0, 0.0])?;
//! let q = zeroed::<f32>(&device, "q", 2)?;
//! let step = StepUniform::new(&device, 1)?;
//! step.write(&queue, &[StepConstants::default().with_tau(0.1)])?;
//! let soft = Soft::new(&device, &step)?;
//! let bound = soft.bind_forward(
//!     &device,
//!     &SoftForwardBuffers { z: &z, codebook: &codebook, q: &q },
//!     SoftShape { n: 1, k: 2, m: 2 },
//!     &[SoftRun::exact()],
//! )?;
//! let mut encoder = device.create_command_encoder(&Default::default());
//! bound.encode(&mut encoder.begin_compute_pass(&Default::default()), &step, 0);
//! queue.submit([encoder.finish()]);
//! let q = read_buffer::<f32>(&device, &queue, &q)?;
//! assert!((q[0] - 0.5).abs() < 1e-6 && q[1] == 0.0, "{q:?}");
//! # Ok(())
//! # }
//! ```

use super::step::StepUniform;
use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, pipeline_with, shader, uniform,
};
use crate::error::{Error, Result};
use crate::gpu::grid;
use crate::shaders;

/// The sizes: `n` rows, `k` codes, latent dimension `m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftShape {
    /// Rows.
    pub n: u32,
    /// Codes.
    pub k: u32,
    /// Latent dimension.
    pub m: u32,
}

/// One run's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftRun {
    /// Whether the kernel computes this run at all (a batch may mix estimators; inactive runs are left as they are).
    pub active: bool,
    /// Add Gumbel noise hashed from this seed (see [`crate::kernels::codebook::seed_mix`]), the step and the row;
    /// `None`: no noise (the deterministic soft assignment).
    pub noise_seed: Option<u32>,
    /// The commitment weight (backward only; >= 0).
    pub beta: f32,
    /// The batch size B in the commitment gradient's 2 beta / (B m) (backward only).
    pub batch: u32,
    /// Score with the distance instead of its square, `s_k = -||z - c_k|| / tau + G_k`, in every kernel. Training
    /// sets it for [`Soft::bind_sample`] alone: stochastic code sampling's draw (`--sampling stochastic`,
    /// `reference::soft::stochastic_row`).
    pub unsquared: bool,
}

impl SoftRun {
    /// Active, without noise or commitment: the soft assignment itself.
    pub fn exact() -> Self {
        SoftRun { active: true, noise_seed: None, beta: 0.0, batch: 1, unsquared: false }
    }
}

/// Buffers of [`Soft::bind_sample`], each with `STORAGE` usage.
#[derive(Clone, Copy)]
pub struct SoftSampleBuffers<'a> {
    /// The encodings: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// The codes: k x m f32.
    pub codebook: &'a wgpu::Buffer,
    /// Written: each row's sampled code, n u32.
    pub index: &'a wgpu::Buffer,
    /// Written: each row's squared distance to it, n f32.
    pub distance: &'a wgpu::Buffer,
    /// Written: the sampled codes, n x m f32.
    pub q: &'a wgpu::Buffer,
}

/// Buffers of [`Soft::bind_forward`], each with `STORAGE` usage.
#[derive(Clone, Copy)]
pub struct SoftForwardBuffers<'a> {
    /// The encodings: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// The codes: k x m f32.
    pub codebook: &'a wgpu::Buffer,
    /// Written: the relaxed codes, n x m f32.
    pub q: &'a wgpu::Buffer,
}

/// Buffers of [`Soft::bind_backward`], each with `STORAGE` usage.
#[derive(Clone, Copy)]
pub struct SoftBackwardBuffers<'a> {
    /// The encodings: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// The codes: k x m f32.
    pub codebook: &'a wgpu::Buffer,
    /// dL/dq~, the gradient at the layer's output: n x m f32.
    pub g: &'a wgpu::Buffer,
    /// The forward's code of each row (the commitment term's q): n u32, each < k.
    pub index: &'a wgpu::Buffer,
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

const SAMPLE: usize = 0;
const FORWARD: usize = 1;
const BACKWARD: usize = 2;
const WORKGROUP_SIZE: u32 = 64;

/// The three pipelines. Make once per device, with the [`StepUniform`] layout their group 1 uses.
pub struct Soft {
    layouts: [wgpu::BindGroupLayout; 3],
    pipelines: [wgpu::ComputePipeline; 3],
    max_groups: u32,
}

impl Soft {
    /// Creates the pipelines.
    pub fn new(device: &wgpu::Device, step: &StepUniform) -> Result<Self> {
        use Slot::*;
        let module = shader(device, "soft.wgsl", shaders::SOFT)?;
        let layout = |label: &str, slots: &[(u32, Slot)]| {
            let mut all = vec![(0, Uniform), (1, Read), (2, Read)];
            all.extend_from_slice(slots);
            all.push((7, Read));
            bind_group_layout(device, label, &all)
        };
        let layouts = [
            layout("soft sample", &[(4, ReadWrite), (5, ReadWrite), (6, ReadWrite)])?,
            layout("soft forward", &[(6, ReadWrite)])?,
            layout("soft backward", &[(3, Read), (4, ReadWrite), (6, ReadWrite)])?,
        ];
        let make = |which: usize, entry: &str| {
            pipeline_with(device, &[&layouts[which], step.layout()], &module, entry, WORKGROUP_SIZE)
        };
        Ok(Soft {
            pipelines: [make(SAMPLE, "soft_sample")?, make(FORWARD, "soft_forward")?, make(BACKWARD, "soft_backward")?],
            layouts,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// The hard sample of each row, for one run per entry of `runs` stacked in the buffers (run r's rows at
    /// `r n`, its codes at `r k`, indices within its own codebook).
    pub fn bind_sample(
        &self,
        device: &wgpu::Device,
        buffers: &SoftSampleBuffers<'_>,
        shape: SoftShape,
        runs: &[SoftRun],
    ) -> Result<BoundSoft> {
        let r = runs.len() as u64;
        let (n, m) = (shape.n as u64, shape.m as u64);
        self.bind(
            device,
            SAMPLE,
            shape,
            runs,
            (buffers.z, buffers.codebook),
            vec![
                Binding::new(4, "index", buffers.index, r * n * 4),
                Binding::new(5, "distance", buffers.distance, r * n * F32),
                Binding::new(6, "q", buffers.q, r * n * m * F32),
            ],
        )
    }

    /// The relaxed code of each row (runs as in [`Soft::bind_sample`]).
    pub fn bind_forward(
        &self,
        device: &wgpu::Device,
        buffers: &SoftForwardBuffers<'_>,
        shape: SoftShape,
        runs: &[SoftRun],
    ) -> Result<BoundSoft> {
        let rows = runs.len() as u64 * shape.n as u64 * shape.m as u64 * F32;
        self.bind(
            device,
            FORWARD,
            shape,
            runs,
            (buffers.z, buffers.codebook),
            vec![Binding::new(6, "q", buffers.q, rows)],
        )
    }

    /// The relaxation's backward with the commitment term (runs as in [`Soft::bind_sample`]).
    pub fn bind_backward(
        &self,
        device: &wgpu::Device,
        buffers: &SoftBackwardBuffers<'_>,
        shape: SoftShape,
        runs: &[SoftRun],
    ) -> Result<BoundSoft> {
        let r = runs.len() as u64;
        let rows = r * shape.n as u64 * shape.m as u64 * F32;
        self.bind(
            device,
            BACKWARD,
            shape,
            runs,
            (buffers.z, buffers.codebook),
            vec![
                Binding::new(3, "g", buffers.g, rows),
                Binding::new(4, "index", buffers.index, r * shape.n as u64 * 4),
                Binding::new(6, "grad_z", buffers.grad_z, rows),
            ],
        )
    }

    fn bind(
        &self,
        device: &wgpu::Device,
        which: usize,
        shape: SoftShape,
        runs: &[SoftRun],
        (z, codebook): (&wgpu::Buffer, &wgpu::Buffer),
        outputs: Vec<Binding<'_>>,
    ) -> Result<BoundSoft> {
        let SoftShape { n, k, m } = shape;
        let count = u32::try_from(runs.len()).unwrap_or(u32::MAX);
        check_shape(&[("n", n), ("k", k), ("m", m)], &[("n x m", n, m), ("k x m", k, m)])?;
        check_runs(count, self.max_groups, &[("z", n as u64 * m as u64), ("codebook", k as u64 * m as u64)])?;
        let r = count as u64;
        let params = uniform(device, "soft params", &Params { n, m, k, pad: 0 })?;
        let settings = crate::gpu::upload(device, "soft run settings", &run_settings(m, runs)?)?;
        let mut bindings = vec![
            Binding::new(1, "z", z, r * n as u64 * m as u64 * F32),
            Binding::new(2, "codebook", codebook, r * k as u64 * m as u64 * F32),
            Binding::new(7, "run settings", &settings, r * 16),
        ];
        bindings.extend(outputs);
        let bind_group = bind_group(device, "soft", &self.layouts[which], &params, &bindings)?;
        let (x, y) = grid(n.div_ceil(WORKGROUP_SIZE), self.max_groups)?;
        Ok(BoundSoft {
            pipeline: self.pipelines[which].clone(),
            bind_group,
            _params: params,
            settings,
            grid: (x, y, count),
        })
    }
}

/// Each run's (active, flags: noise in bit 0 and unsquared scores in bit 1, seed, commitment coefficient bits), as
/// the shader's `RunSettings`.
fn run_settings(m: u32, runs: &[SoftRun]) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(4 * runs.len());
    for run in runs {
        if !run.beta.is_finite() || run.beta < 0.0 {
            return Err(Error::Input(format!("beta must be finite and >= 0, got {}", run.beta)));
        }
        if run.batch == 0 {
            return Err(Error::Shape("the batch size must be at least 1".into()));
        }
        let commit = (2.0 * run.beta as f64 / (run.batch as f64 * m as f64)) as f32;
        let flags = run.noise_seed.is_some() as u32 | (run.unsquared as u32) << 1;
        out.extend([run.active as u32, flags, run.noise_seed.unwrap_or(0), commit.to_bits()]);
    }
    Ok(out)
}

/// A soft kernel bound to buffers: record it with [`BoundSoft::encode`].
pub struct BoundSoft {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    settings: wgpu::Buffer,
    /// Workgroups in x and y over the rows, and one z layer per run.
    grid: (u32, u32, u32),
}

impl BoundSoft {
    /// The per-run settings buffer: `(active, flags, seed, commitment coefficient bits)` per run, four words each
    /// (the adaptive beta rewrites the fourth on the GPU).
    pub fn run_settings(&self) -> &wgpu::Buffer {
        &self.settings
    }

    /// Where each run's commitment coefficient lives, for a kernel that rewrites it on the GPU (the adaptive
    /// beta): word 3 of the shader's four-word `RunSettings`.
    pub fn commitment_slot(&self) -> super::schedule::SettingsSlot<'_> {
        super::schedule::SettingsSlot { buffer: &self.settings, stride: 4, offset: 3 }
    }

    /// Records the dispatch into the caller's pass, with the temperature and step of `step`'s slot `slot`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32) {
        super::dispatch_step(pass, &self.pipeline, &self.bind_group, self.grid, step, slot);
    }
}
