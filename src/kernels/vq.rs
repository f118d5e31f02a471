//! One whole VQ layer for callers who bring their own encoder and decoder: the forward (nearest code and
//! `q = c[a]`) and the backward (`dL/dz` by an estimator, with the commitment gradient, then the codebook update),
//! on the caller's device and buffers. It composes [`Assign`], [`EstimatorBackward`] and [`Codebook`]; each
//! dispatch is theirs, so the results are the bits those kernels give alone.
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::Estimator;
//! use vqgrad::gpu::{read_buffer, upload, zeroed};
//! use vqgrad::kernels::vq::{CodebookUpdate, VqBuffers, VqLayer, VqSettings, VqShape};
//! let shape = VqShape { n: 4, k: 2, m: 2 };
//! // Your encoder's output z, the codebook, and your decoder's gradient at its input, dL/dq.
//! let z = upload(&device, "z", &[0.1f32, 0.0, 0.9, 1.1, 1.2, 0.8, 0.0, -0.1])?;
//! let codebook = upload(&device, "codebook", &[0.0f32, 0.0, 1.0, 1.0])?;
//! let grad_q = upload(&device, "dL/dq", &[1.0f32; 8])?;
//! let (q, grad_z) = (zeroed::<f32>(&device, "q", 8)?, zeroed::<f32>(&device, "dL/dz", 8)?);
//! let (index, distance) = (zeroed::<u32>(&device, "index", 4)?, zeroed::<f32>(&device, "distance", 4)?);
//! let codebook_grad = zeroed::<f32>(&device, "dL/dC", 4)?;
//!
//! let layer = VqLayer::new(&device)?; // once per device
//! let buffers = VqBuffers { z: &z, codebook: &codebook, q: &q, index: &index, distance: &distance,
//!                           grad_q: &grad_q, grad_z: &grad_z, codebook_grad: Some(&codebook_grad) };
//! let settings = VqSettings { estimator: Estimator::RotationTrick, beta: 0.25, update: CodebookUpdate::Gradient };
//! let bound = layer.bind(&device, &buffers, shape, settings)?; // once per set of buffers
//!
//! let mut encoder = device.create_command_encoder(&Default::default());
//! {
//!     let mut pass = encoder.begin_compute_pass(&Default::default());
//!     bound.encode_forward(&mut pass); // index, distance and q
//!     // ... your decoder's forward and backward write dL/dq into `grad_q` here ...
//!     bound.encode_backward(&mut pass); // dL/dz into `grad_z`, dL_cb/dC into `codebook_grad`
//! }
//! queue.submit([encoder.finish()]);
//! assert_eq!(read_buffer::<u32>(&device, &queue, &index)?[..4], [0, 1, 1, 0]);
//! # Ok(())
//! # }
//! ```

use super::assign::{Assign, AssignBuffers, AssignShape, BoundAssign};
use super::codebook::{BoundEma, BoundGrad, Codebook, CodebookShape, EmaBuffers, EmaSettings, GradBuffers};
use super::estimator::{BoundEstimator, EstimatorBackward, EstimatorBuffers, EstimatorSettings, EstimatorShape};
use crate::error::{Error, Result};
use crate::estimator::Estimator;
use crate::gpu::{upload, zeroed};

/// The sizes: `n` rows of z (the batch), `k` codes, latent dimension `m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VqShape {
    /// Rows of z (the batch).
    pub n: u32,
    /// Codes.
    pub k: u32,
    /// Latent dimension.
    pub m: u32,
}

/// How the codebook learns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CodebookUpdate {
    /// Writes `dL_cb/dC = 2/(n m) sum_{i : a_i = k} (c_k - z_i)` into [`VqBuffers::codebook_grad`], for the
    /// caller's optimizer (for example [`super::adam`]). The codebook itself is left alone.
    Gradient,
    /// Updates the codebook in place by exponential moving averages with Laplace smoothing (docs/PROTOCOL.md §2).
    /// The bound layer owns the EMA state; record [`BoundVq::record_ema_init`] once before the first backward.
    Ema(EmaSettings),
}

/// The layer's settings: the estimator, the commitment weight beta (its gradient `2 beta / (n m) (z - q)` is added
/// to `dL/dz`; 0 leaves it out) and the codebook update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VqSettings {
    /// The gradient estimator of the backward: one of [`Estimator::ROW`] (the layer quantizes to the nearest
    /// code; the Gumbel estimators sample, see [`super::soft`]).
    pub estimator: Estimator,
    /// The commitment weight (>= 0; 0 leaves the term out).
    pub beta: f32,
    /// How the codebook learns.
    pub update: CodebookUpdate,
}

/// The caller's buffers, each with `STORAGE` usage (and `codebook` also `COPY_SRC` with the EMA update), row-major
/// f32 unless said: `z` (n x m, the encoder's output),
/// `codebook` (k x m), `q` (n x m, written by the forward: the decoder's input), `index` (n u32, written),
/// `distance` (n, written: squared distances), `grad_q` (n x m, dL/dq from the decoder's backward, read by the
/// backward), `grad_z` (n x m, written by the backward: the encoder's incoming gradient) and, for
/// [`CodebookUpdate::Gradient`], `codebook_grad` (k x m, written).
#[derive(Clone, Copy)]
pub struct VqBuffers<'a> {
    /// The encoder's output: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// The codes: k x m f32 (rewritten by the EMA update).
    pub codebook: &'a wgpu::Buffer,
    /// Written by the forward: `codebook[index]`, n x m f32, the decoder's input.
    pub q: &'a wgpu::Buffer,
    /// Written by the forward: each row's code, n u32.
    pub index: &'a wgpu::Buffer,
    /// Written by the forward: squared distances, n f32.
    pub distance: &'a wgpu::Buffer,
    /// dL/dq from the decoder's backward: n x m f32, read by the backward.
    pub grad_q: &'a wgpu::Buffer,
    /// Written by the backward: dL/dz, n x m f32, for the encoder's backward.
    pub grad_z: &'a wgpu::Buffer,
    /// Written by the backward with [`CodebookUpdate::Gradient`]: dL_cb/dC, k x m f32.
    pub codebook_grad: Option<&'a wgpu::Buffer>,
}

/// The VQ layer's pipelines. Make once per device; bind once per set of buffers.
pub struct VqLayer {
    assign: Assign,
    estimator: EstimatorBackward,
    codebook: Codebook,
}

impl VqLayer {
    /// Creates the pipelines (assign, estimator backward, codebook updates) on the caller's device.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Ok(VqLayer {
            assign: Assign::new(device)?,
            estimator: EstimatorBackward::new(device)?,
            codebook: Codebook::new(device)?,
        })
    }

    /// Checks the buffers against `shape` (sizes and `STORAGE` usage; an error names the buffer and the bytes it
    /// needs) and the settings, and makes every bind group. With [`CodebookUpdate::Ema`] it also makes the EMA
    /// state (N_k and M_k, and this step's counts), which the bound layer owns.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        buffers: &VqBuffers<'_>,
        shape: VqShape,
        settings: VqSettings,
    ) -> Result<BoundVq> {
        let VqShape { n, k, m } = shape;
        if !Estimator::ROW.contains(&settings.estimator) {
            return Err(Error::Input(format!(
                "the VQ layer quantizes to the nearest code; `{}` samples (use kernels::soft with the assign and \
                 estimator kernels)",
                settings.estimator
            )));
        }
        let assign = self.assign.bind_with_codes(
            device,
            &AssignBuffers {
                z: buffers.z,
                codebook: buffers.codebook,
                index: buffers.index,
                distance: buffers.distance,
            },
            AssignShape { n, k, m },
            buffers.q,
        )?;
        let estimator = self.estimator.bind(
            device,
            &EstimatorBuffers {
                g: buffers.grad_q,
                z: buffers.z,
                index: buffers.index,
                codebook: buffers.codebook,
                grad_z: buffers.grad_z,
            },
            EstimatorShape { n, k, m },
            EstimatorSettings { estimator: settings.estimator, beta: settings.beta, batch: n },
        )?;
        let update = match settings.update {
            CodebookUpdate::Gradient => {
                let Some(grad) = buffers.codebook_grad else {
                    return Err(Error::Input(
                        "CodebookUpdate::Gradient needs VqBuffers::codebook_grad (k x m f32)".into(),
                    ));
                };
                let grad_buffers = GradBuffers { z: buffers.z, index: buffers.index, codebook: buffers.codebook, grad };
                Update::Gradient(self.codebook.bind_grad(device, &grad_buffers, CodebookShape { n, k, m }, n)?)
            }
            CodebookUpdate::Ema(ema) => {
                // `record_ema_init` copies the codebook into M_k.
                if !buffers.codebook.usage().contains(wgpu::BufferUsages::COPY_SRC) {
                    return Err(Error::BufferUsage {
                        buffer: "codebook",
                        missing: "COPY_SRC (for the EMA state)".into(),
                    });
                }
                let state = EmaState {
                    counts: zeroed::<u32>(device, "vq ema counts", k as usize)?,
                    size: zeroed::<f32>(device, "vq ema size", k as usize)?,
                    sum: zeroed::<f32>(device, "vq ema sum", k as usize * m as usize)?,
                    ones: upload(device, "vq ema ones", &vec![1.0f32; k as usize])?,
                };
                let bound = self.codebook.bind_ema(
                    device,
                    &EmaBuffers {
                        z: buffers.z,
                        index: buffers.index,
                        codebook: buffers.codebook,
                        counts: &state.counts,
                        ema_size: &state.size,
                        ema_sum: &state.sum,
                    },
                    CodebookShape { n, k, m },
                    ema,
                )?;
                Update::Ema(Box::new((bound, state, buffers.codebook.clone())))
            }
        };
        Ok(BoundVq { assign, estimator, update, shape })
    }
}

struct EmaState {
    counts: wgpu::Buffer,
    size: wgpu::Buffer,
    sum: wgpu::Buffer,
    /// k ones, N_k's start, copied in by `record_ema_init` (no queue needed).
    ones: wgpu::Buffer,
}

enum Update {
    Gradient(BoundGrad),
    /// The update, its state, and the codebook (for the state's initial M_k).
    Ema(Box<(BoundEma, EmaState, wgpu::Buffer)>),
}

/// A VQ layer bound to buffers. Record it into the caller's passes as often as needed; it allocates nothing.
pub struct BoundVq {
    assign: BoundAssign,
    estimator: BoundEstimator,
    update: Update,
    shape: VqShape,
}

impl BoundVq {
    /// Records the forward (one dispatch): `index`, `distance` and `q = codebook[index]`.
    pub fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.assign.encode(pass);
    }

    /// Records the backward, after the decoder's backward has written `grad_q`: `grad_z` by the estimator (one
    /// dispatch), then the codebook update (one dispatch for the gradient, five for EMA, which rewrites the
    /// codebook: `grad_z` was computed from the codes the forward used).
    pub fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.estimator.encode(pass);
        match &self.update {
            Update::Gradient(grad) => grad.encode(pass),
            Update::Ema(ema) => ema.0.encode(pass),
        }
    }

    /// With [`CodebookUpdate::Ema`], records the EMA state's start (N_k = 1, M_k = the codebook as it is when this
    /// runs) into the caller's encoder, outside any pass. Record it once, before the first backward, and again to
    /// restart the averages; with [`CodebookUpdate::Gradient`] it records nothing.
    pub fn record_ema_init(&self, encoder: &mut wgpu::CommandEncoder) {
        if let Update::Ema(ema) = &self.update {
            let (_, state, codebook) = &**ema;
            let VqShape { k, m, .. } = self.shape;
            encoder.copy_buffer_to_buffer(codebook, 0, &state.sum, 0, k as u64 * m as u64 * 4);
            encoder.copy_buffer_to_buffer(&state.ones, 0, &state.size, 0, k as u64 * 4);
        }
    }

    /// The shape the layer was bound with.
    pub fn shape(&self) -> VqShape {
        self.shape
    }
}
