//! The affine re-parameterization of a codebook (`shaders/affine.wgsl`, docs/PROTOCOL.md §6.6): the codebook the
//! quantizer uses is `C = C0 diag(1 + a s) + a b`. [`BoundAffine::encode_grad`] turns the codebook's gradient G into
//! C0's (`G diag(1 + a s)`, in place) and writes s's and b's (`a sum_k G_kj C0_kj`, `a sum_k G_kj`);
//! [`BoundAffine::encode_apply`] computes C again. The f64 oracle is `vqgrad::train::affine`. Stacked runs each use
//! their own codes and parameters; the scale a is the batch's.
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::gpu::{read_buffer, upload, zeroed};
//! use vqgrad::kernels::affine::{Affine, AffineBuffers};
//! // One code (1, 2) under the scale [0.5, 0] and the shift [0, 1], with a = 2: C = (1 * 2, 2 * 1 + 2) = (2, 4).
//! let raw = upload(&device, "codes", &[1.0f32, 2.0])?;
//! let scale_shift = upload(&device, "scale and shift", &[0.5f32, 0.0, 0.0, 1.0])?;
//! let (grad, scale_shift_grad) = (zeroed::<f32>(&device, "grad", 2)?, zeroed::<f32>(&device, "s, b grad", 4)?);
//! let codebook = zeroed::<f32>(&device, "codebook", 2)?;
//! let buffers = AffineBuffers { raw: &raw, scale_shift: &scale_shift, grad: &grad, scale_shift_grad: &scale_shift_grad, codebook: &codebook };
//! let bound = Affine::new(&device)?.bind(&device, &buffers, (1, 2), 1, 2.0)?;
//! let mut encoder = device.create_command_encoder(&Default::default());
//! bound.encode_apply(&mut encoder.begin_compute_pass(&Default::default()));
//! queue.submit([encoder.finish()]);
//! assert_eq!(read_buffer::<f32>(&device, &queue, &codebook)?, vec![2.0, 4.0]);
//! # Ok(())
//! # }
//! ```

use super::{Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, pipeline, shader, uniform};
use crate::error::{Error, Result};
use crate::gpu::grid;
use crate::shaders;

#[derive(encase::ShaderType)]
struct Params {
    k: u32,
    m: u32,
    lr_scale: f32,
    pad: u32,
}

const WORKGROUP_SIZE: u32 = 64;

/// The buffers of `runs` stacked runs: `raw` the codes C0 (K x m each), `scale_shift` [s, b] (2 m each), `grad`
/// the codebook's gradient (K x m each; becomes C0's), `scale_shift_grad` (2 m each, written), `codebook` C (K x m
/// each, written).
#[derive(Clone, Copy)]
pub struct AffineBuffers<'a> {
    /// The codes C0 (read).
    pub raw: &'a wgpu::Buffer,
    /// [s, b] (read).
    pub scale_shift: &'a wgpu::Buffer,
    /// The codebook's gradient, turned into C0's in place.
    pub grad: &'a wgpu::Buffer,
    /// Written: [ds, db].
    pub scale_shift_grad: &'a wgpu::Buffer,
    /// Written: C.
    pub codebook: &'a wgpu::Buffer,
}

/// The two pipelines. Make once per device.
pub struct Affine {
    layout: wgpu::BindGroupLayout,
    grad: wgpu::ComputePipeline,
    apply: wgpu::ComputePipeline,
    max_groups: u32,
}

impl Affine {
    /// Creates the pipelines.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        use Slot::*;
        let slots = [(0, Uniform), (1, Read), (2, Read), (3, ReadWrite), (4, ReadWrite), (5, ReadWrite)];
        let layout = bind_group_layout(device, "affine", &slots)?;
        let module = shader(device, "affine.wgsl", shaders::AFFINE)?;
        Ok(Affine {
            grad: pipeline(device, &layout, &module, "affine_grad", WORKGROUP_SIZE)?,
            apply: pipeline(device, &layout, &module, "affine_apply", WORKGROUP_SIZE)?,
            layout,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// Binds `runs` stacked runs of `(k, m)` with the scale `lr_scale` (finite and > 0).
    pub fn bind(
        &self,
        device: &wgpu::Device,
        buffers: &AffineBuffers<'_>,
        (k, m): (u32, u32),
        runs: u32,
        lr_scale: f32,
    ) -> Result<BoundAffine> {
        check_shape(&[("k", k), ("m", m)], &[("k x m", k, m)])?;
        check_runs(runs, self.max_groups, &[("codebook", k as u64 * m as u64), ("scale and shift", 2 * m as u64)])?;
        if !(lr_scale.is_finite() && lr_scale > 0.0) {
            return Err(Error::Input(format!("the affine scale must be finite and > 0, got {lr_scale}")));
        }
        let params = uniform(device, "affine params", &Params { k, m, lr_scale, pad: 0 })?;
        let r = runs as u64;
        let (codes, pairs) = (r * k as u64 * m as u64 * F32, r * 2 * m as u64 * F32);
        let bindings = [
            Binding::new(1, "codes", buffers.raw, codes),
            Binding::new(2, "scale and shift", buffers.scale_shift, pairs),
            Binding::new(3, "codebook grad", buffers.grad, codes),
            Binding::new(4, "scale and shift grad", buffers.scale_shift_grad, pairs),
            Binding::new(5, "codebook", buffers.codebook, codes),
        ];
        let bind_group = bind_group(device, "affine", &self.layout, &params, &bindings)?;
        let (gx, gy) = grid(m.div_ceil(WORKGROUP_SIZE), self.max_groups)?;
        let (ax, ay) = grid((k * m).div_ceil(WORKGROUP_SIZE), self.max_groups)?;
        Ok(BoundAffine {
            grad: self.grad.clone(),
            apply: self.apply.clone(),
            bind_group,
            _params: params,
            grad_grid: (gx, gy, runs),
            apply_grid: (ax, ay, runs),
        })
    }
}

/// The map bound to a batch's buffers.
pub struct BoundAffine {
    grad: wgpu::ComputePipeline,
    apply: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    grad_grid: (u32, u32, u32),
    apply_grid: (u32, u32, u32),
}

impl BoundAffine {
    /// Records the gradients (after every term of the codebook's gradient, before the Adam steps).
    pub fn encode_grad(&self, pass: &mut wgpu::ComputePass<'_>) {
        super::dispatch_runs(pass, &self.grad, &self.bind_group, self.grad_grid);
    }

    /// Records C from C0, s and b (after the Adam steps).
    pub fn encode_apply(&self, pass: &mut wgpu::ComputePass<'_>) {
        super::dispatch_runs(pass, &self.apply, &self.bind_group, self.apply_grid);
    }
}
