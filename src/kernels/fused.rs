//! A whole training step of a small linear VQ autoencoder in one dispatch (`shaders/fused.wgsl`), one workgroup
//! per run: the batch gather, encoder, assign, decoder, loss gradient, decoder backward, estimator backward (with
//! the commitment term), encoder backward and codebook gradient, for shapes whose batch fits one workgroup
//! (E1's: B = 256, m = 4). The parameter update is the [`super::adam`] kernel's, after it. On CPU drivers such as
//! lavapipe, where every dispatch costs tens of microseconds and every buffer pass is slow, this replaces eleven
//! dispatches and the B x d intermediates with one dispatch that reads each batch row twice.

use super::dense::Linear;
use super::estimator::EstimatorSettings;
use super::step::StepUniform;
use super::{Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, shader, uniform};
use crate::error::{Error, Result};
use crate::shaders;
use std::collections::HashMap;
use std::sync::Mutex;

/// Rows of a batch, at most (one per invocation).
pub const MAX_ROWS: u32 = 256;
/// The latent dimension, at most.
pub const MAX_LATENT: u32 = 8;
/// Batch rows times the latent dimension, at most (z, q and dL/dz of the batch live in workgroup memory).
pub const MAX_CELLS: u32 = 1024;
const WORKGROUP_SIZE: u32 = 256;

/// The sizes of a fused step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedShape {
    /// Batch rows B.
    pub batch: u32,
    /// Data dimension d.
    pub dim: u32,
    /// Latent dimension m.
    pub latent: u32,
    /// Codes K.
    pub codes: u32,
    /// Rows of each run's training set.
    pub train_rows: u32,
    /// Row indices per run in the schedule buffer (the step's batch starts at its `row_offset`).
    pub schedule_len: u32,
}

impl FusedShape {
    /// Whether the fused step can run these sizes on `device`: B, m and B m within the workgroup's storage, and
    /// a 256-wide workgroup.
    pub fn fits(&self, device: &wgpu::Device) -> bool {
        let limits = device.limits();
        (1..=MAX_ROWS).contains(&self.batch)
            && (1..=MAX_LATENT).contains(&self.latent)
            && self.batch * self.latent <= MAX_CELLS
            && limits.max_compute_invocations_per_workgroup >= WORKGROUP_SIZE
            && limits.max_compute_workgroup_size_x >= WORKGROUP_SIZE
    }
}

/// The caller's buffers, each with `STORAGE` usage, with `runs` runs stacked one after another: `train`
/// (`runs x train_rows x d` f32), `schedule` (`runs x schedule_len` u32 row indices), `params` (`runs x stride`
/// f32, the linear encoder and decoder as [`Linear`] layers place them), `codebook` (`runs x K x m`), and the
/// written gradients `grads` (as `params`) and `codebook_grad` (as `codebook`).
#[derive(Clone, Copy)]
pub struct FusedBuffers<'a> {
    /// The training sets.
    pub train: &'a wgpu::Buffer,
    /// The row indices of each run's batches.
    pub schedule: &'a wgpu::Buffer,
    /// The layers' parameters.
    pub params: &'a wgpu::Buffer,
    /// The codebooks.
    pub codebook: &'a wgpu::Buffer,
    /// Written: dL/dparams.
    pub grads: &'a wgpu::Buffer,
    /// Written: dL_cb/dC.
    pub codebook_grad: &'a wgpu::Buffer,
}

#[derive(encase::ShaderType)]
struct Params {
    b: u32,
    d: u32,
    k: u32,
    n_train: u32,
    schedule_stride: u32,
    param_stride: u32,
    enc_w: u32,
    enc_b: u32,
    dec_w: u32,
    dec_b: u32,
    loss_scale: f32,
    cb_scale: f32,
}

/// The fused-step pipelines, one per latent dimension, made as needed. Make once per device.
pub struct FusedStep {
    layout: wgpu::BindGroupLayout,
    step_layout: wgpu::BindGroupLayout,
    module: wgpu::ShaderModule,
    pipelines: Mutex<HashMap<u32, wgpu::ComputePipeline>>,
    max_groups: u32,
}

impl FusedStep {
    /// Compiles the shader; `step` gives group 1's layout (the batch's row offset).
    pub fn new(device: &wgpu::Device, step: &StepUniform) -> Result<Self> {
        use Slot::*;
        let slots = [
            (0, Uniform),
            (1, Read),
            (2, Read),
            (3, Read),
            (4, Read),
            (5, ReadWrite),
            (6, ReadWrite),
            (7, ReadWrite),
            (8, ReadWrite),
        ];
        Ok(FusedStep {
            layout: bind_group_layout(device, "fused step", &slots)?,
            step_layout: step.layout().clone(),
            module: shader(device, "fused.wgsl", shaders::FUSED)?,
            pipelines: Mutex::default(),
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    fn pipeline(&self, device: &wgpu::Device, latent: u32) -> Result<wgpu::ComputePipeline> {
        let mut made = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = made.get(&latent) {
            return Ok(p.clone());
        }
        let constants = [("WORKGROUP_SIZE", WORKGROUP_SIZE as f64), ("LATENT", latent as f64)];
        let layouts = [&self.layout, &self.step_layout];
        let p = super::pipeline_with_constants(device, &layouts, &self.module, "train_step", &constants)?;
        made.insert(latent, p.clone());
        Ok(p)
    }

    /// Binds one run per entry of `settings` (each with its own estimator and beta): the encoder and decoder
    /// layers `(encoder, decoder)` sit at the same offsets in each run's `param_stride` floats of parameters.
    /// Owns two output buffers: [`BoundFused::batch`] and [`BoundFused::codes`].
    pub fn bind(
        &self,
        device: &wgpu::Device,
        buffers: &FusedBuffers<'_>,
        shape: FusedShape,
        (encoder, decoder): (Linear, Linear),
        param_stride: u32,
        settings: &[EstimatorSettings],
    ) -> Result<BoundFused> {
        let FusedShape { batch: b, dim: d, latent: m, codes: k, train_rows, schedule_len } = shape;
        check_shape(
            &[("batch", b), ("dim", d), ("latent", m), ("codes", k), ("train rows", train_rows)],
            &[("train", train_rows, d), ("codebook", k, m)],
        )?;
        if !shape.fits(device) {
            return Err(Error::Shape(format!(
                "the fused step needs B <= {MAX_ROWS}, m <= {MAX_LATENT} and B m <= {MAX_CELLS}, got B = {b}, m = {m}"
            )));
        }
        let layers_fit = encoder.input == d
            && encoder.output == m
            && decoder.input == m
            && decoder.output == d
            && [encoder.w_off + m * d, encoder.b_off + m, decoder.w_off + d * m, decoder.b_off + d]
                .iter()
                .all(|&end| end <= param_stride);
        if !layers_fit || schedule_len < b {
            return Err(Error::Shape(format!(
                "the fused step's layers must be d = {d} -> m = {m} -> d within {param_stride} floats per run, \
                 and the schedule hold a batch"
            )));
        }
        let runs = settings.len() as u32;
        let per_run = [("train", train_rows as u64 * d as u64), ("codebook", k as u64 * m as u64)];
        check_runs(runs, self.max_groups, &per_run)?;
        let r = runs as u64;
        // The codes, then each run's estimator and commitment coefficient.
        let mut words = vec![0u32; (r * b as u64) as usize];
        for s in settings {
            words.push(s.estimator.shader_id());
            words.push(s.commit_coeff(m)?.to_bits());
        }
        let codes = crate::gpu::upload(device, "fused codes and settings", &words)?;
        let rows = r * b as u64;
        let batch = crate::gpu::zeroed::<f32>(device, "fused batch outputs", (rows * m as u64 + 2 * rows) as usize)?;
        let params = uniform(
            device,
            "fused step params",
            &Params {
                b,
                d,
                k,
                n_train: train_rows,
                schedule_stride: schedule_len,
                param_stride,
                enc_w: encoder.w_off,
                enc_b: encoder.b_off,
                dec_w: decoder.w_off,
                dec_b: decoder.b_off,
                loss_scale: (2.0 / (b as f64 * d as f64)) as f32,
                cb_scale: (2.0 / (b as f64 * m as f64)) as f32,
            },
        )?;
        let stride = r * param_stride as u64 * F32;
        let codebook_bytes = r * k as u64 * m as u64 * F32;
        let bind_group = bind_group(
            device,
            "fused step",
            &self.layout,
            &params,
            &[
                Binding::new(1, "train", buffers.train, r * train_rows as u64 * d as u64 * F32),
                Binding::new(2, "schedule", buffers.schedule, r * schedule_len as u64 * 4),
                Binding::new(3, "params", buffers.params, stride),
                Binding::new(4, "codebook", buffers.codebook, codebook_bytes),
                Binding::new(5, "grads", buffers.grads, stride),
                Binding::new(6, "codebook_grad", buffers.codebook_grad, codebook_bytes),
                Binding::new(7, "batch outputs", &batch, batch.size()),
                Binding::new(8, "codes", &codes, codes.size()),
            ],
        )?;
        Ok(BoundFused { pipeline: self.pipeline(device, m)?, bind_group, runs, shape, batch, codes, _params: params })
    }
}

/// A fused step bound to buffers.
pub struct BoundFused {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    runs: u32,
    shape: FusedShape,
    batch: wgpu::Buffer,
    codes: wgpu::Buffer,
    _params: wgpu::Buffer,
}

impl BoundFused {
    /// Records one step (one dispatch of one workgroup per run), the batch at slot `slot`'s row offset.
    pub fn encode_step(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32) {
        super::dispatch_step(pass, &self.pipeline, &self.bind_group, (1, 1, self.runs), step, slot);
    }

    /// The step's per-row outputs, f32: z (`runs x B x m`, from byte 0), then each row's squared distance to its
    /// code (`runs x B`, from [`BoundFused::distance_offset`]), then each row's squared reconstruction error
    /// (`runs x B`, from [`BoundFused::row_error_offset`]).
    pub fn batch(&self) -> &wgpu::Buffer {
        &self.batch
    }

    /// The byte offset of the distances in [`BoundFused::batch`].
    pub fn distance_offset(&self) -> u64 {
        self.runs as u64 * self.shape.batch as u64 * self.shape.latent as u64 * F32
    }

    /// The byte offset of the rows' squared reconstruction errors in [`BoundFused::batch`].
    pub fn row_error_offset(&self) -> u64 {
        self.distance_offset() + self.runs as u64 * self.shape.batch as u64 * F32
    }

    /// The step's codes, u32 (`runs x B`, from byte 0; the run settings follow them).
    pub fn codes(&self) -> &wgpu::Buffer {
        &self.codes
    }
}
