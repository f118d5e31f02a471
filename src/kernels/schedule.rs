//! The adaptive commitment weight (`shaders/schedule.wgsl`): once a step, each run's beta moves from its batch's
//! code usage toward a target, and the new commitment coefficient `2 beta / (B m)` is written into the estimator
//! kernels' run settings, all on the GPU:
//!
//! `u = min(1, used / (K (1 - (1 - 1/K)^B)))`, `beta <- clamp(beta exp(rate (u - target)), beta_min, beta_max)`.
//!
//! `used` counts the codes with a non-zero count in this step's counts; the denominator is the number of distinct
//! codes B uniform draws hit, so `u = 1` means uniform use whatever K and B. Below the target the commitment
//! loosens: a lower beta lets the encodings spread toward unused codes (at E1 with K = 64, beta 0.02 left no code
//! dead where 0.25 left 48).

use super::{Binding, Slot, bind_group, bind_group_layout, check_shape, pipeline, shader, thread_grid, uniform};
pub use crate::contract::BETA_RANGE;
use crate::error::{Error, Result};
use crate::shaders;

/// The rule's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BetaRule {
    /// The usage `u` the rule steers toward, in (0, 1].
    pub target: f32,
    /// The log-step per unit of usage error, per step (> 0).
    pub rate: f32,
}

/// The initial state of `betas` (one per run): `(beta, beta / 100, 100 beta)` each, as the shader reads it.
pub fn beta_state(betas: &[f32]) -> Vec<f32> {
    betas.iter().flat_map(|&b| [b, b / BETA_RANGE, b * BETA_RANGE]).collect()
}

/// The distinct codes `batch` uniform draws from `k` codes hit on average, `K (1 - (1 - 1/K)^B)`.
pub fn expected_used(k: u32, batch: u32) -> f64 {
    k as f64 * (1.0 - (1.0 - 1.0 / k as f64).powf(batch as f64))
}

/// A run-settings buffer the new coefficient is written into: word `run * stride + offset` for each run.
#[derive(Clone, Copy)]
pub struct SettingsSlot<'a> {
    /// The buffer (STORAGE).
    pub buffer: &'a wgpu::Buffer,
    /// Words per run.
    pub stride: u32,
    /// The coefficient's word within a run's settings.
    pub offset: u32,
}

/// The sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleShape {
    /// Codes K.
    pub k: u32,
    /// Batch size B.
    pub batch: u32,
    /// Latent dimension m.
    pub m: u32,
    /// Runs.
    pub runs: u32,
}

#[derive(encase::ShaderType)]
struct Params {
    k: u32,
    runs: u32,
    scale: f32,
    rate: f32,
    target_usage: f32,
    expected: f32,
    stride_a: u32,
    offset_a: u32,
    stride_b: u32,
    offset_b: u32,
    has_b: u32,
    pad: u32,
}

const WORKGROUP_SIZE: u32 = 64;

/// The pipeline. Make once per device.
pub struct AdaptiveBeta {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    max_groups: u32,
}

impl AdaptiveBeta {
    /// Creates the pipeline.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        use Slot::*;
        let layout = bind_group_layout(
            device,
            "schedule",
            &[(0, Uniform), (1, Read), (2, ReadWrite), (3, ReadWrite), (4, ReadWrite)],
        )?;
        let module = shader(device, "schedule.wgsl", shaders::SCHEDULE)?;
        Ok(AdaptiveBeta {
            pipeline: pipeline(device, &layout, &module, "adapt_beta", WORKGROUP_SIZE)?,
            layout,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// Binds `counts` (runs x k u32, this step's), `state` (runs x 3 f32, from [`beta_state`]) and the settings
    /// buffers written: `a`, and `b` when given.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        (counts, state): (&wgpu::Buffer, &wgpu::Buffer),
        shape: ScheduleShape,
        rule: BetaRule,
        a: SettingsSlot<'_>,
        b: Option<SettingsSlot<'_>>,
    ) -> Result<BoundAdaptiveBeta> {
        let ScheduleShape { k, batch, m, runs } = shape;
        check_shape(&[("k", k), ("batch", batch), ("m", m), ("runs", runs)], &[("runs x k", runs, k)])?;
        let valid = rule.target > 0.0 && rule.target <= 1.0 && rule.rate.is_finite() && rule.rate > 0.0;
        if !valid {
            return Err(Error::Input(format!(
                "the adaptive beta needs a target usage in (0, 1] and a rate > 0, got {} and {}",
                rule.target, rule.rate
            )));
        }
        for slot in [Some(a), b].into_iter().flatten() {
            if slot.offset >= slot.stride {
                return Err(Error::Shape(format!("offset {} is outside a run's {} words", slot.offset, slot.stride)));
            }
        }
        // Without a second buffer, binding 4 gets a word of its own: two writable bindings must not alias.
        let spare = crate::gpu::zeroed::<u32>(device, "schedule spare settings", 1)?;
        let b_slot = b.unwrap_or(SettingsSlot { buffer: &spare, stride: 1, offset: 0 });
        let params = uniform(
            device,
            "schedule params",
            &Params {
                k,
                runs,
                scale: (2.0 / (batch as f64 * m as f64)) as f32,
                rate: rule.rate,
                target_usage: rule.target,
                expected: expected_used(k, batch) as f32,
                stride_a: a.stride,
                offset_a: a.offset,
                stride_b: b_slot.stride,
                offset_b: b_slot.offset,
                has_b: b.is_some() as u32,
                pad: 0,
            },
        )?;
        let r = runs as u64;
        let bind_group = bind_group(
            device,
            "schedule",
            &self.layout,
            &params,
            &[
                Binding::new(1, "counts", counts, r * k as u64 * 4),
                Binding::new(2, "beta state", state, r * 3 * 4),
                Binding::new(3, "run settings", a.buffer, r * a.stride as u64 * 4),
                Binding::new(
                    4,
                    "second run settings",
                    b_slot.buffer,
                    if b.is_some() { r * b_slot.stride as u64 * 4 } else { 4 },
                ),
            ],
        )?;
        let (x, y) = thread_grid(runs as u64, WORKGROUP_SIZE, self.max_groups)?;
        Ok(BoundAdaptiveBeta { pipeline: self.pipeline.clone(), bind_group, _buffers: [params, spare], grid: (x, y) })
    }
}

/// The adaptive beta bound to buffers.
pub struct BoundAdaptiveBeta {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _buffers: [wgpu::Buffer; 2],
    grid: (u32, u32),
}

impl BoundAdaptiveBeta {
    /// Records the update into the caller's pass (after this step's counts, before the estimator kernels).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        super::dispatch(pass, &self.pipeline, &self.bind_group, self.grid);
    }
}
