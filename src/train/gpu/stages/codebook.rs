//! A level's codebook update (docs/PROTOCOL.md §2.2): the gradient of L_cb (plus, on the first level, the
//! orthogonality penalty's and the synchronized update's, §6.6) and Adam on it (or, with SimVQ, §6.6, on the layer
//! the codebook is computed from), or the EMA update with its state, or the alternate mode's SGD step before the
//! forward pass (§6.6). Every level of a run shares the codebook mode.

use super::super::buffers::LevelBuffers;
use super::Ctx;
use crate::error::Result;
use crate::kernels::adam::{AdamSettings, BoundAdam};
use crate::kernels::affine::{AffineBuffers, BoundAffine};
use crate::kernels::codebook::{BoundEma, BoundGrad, CodebookShape, EmaBuffers, EmaSettings, GradBuffers};
use crate::kernels::dense::BoundDense;
use crate::kernels::latent::{BoundLatent, LatentBuffers};
use crate::kernels::orthogonal::BoundOrthogonal;
use crate::kernels::residual::BoundResidual;
use crate::kernels::sgd::BoundSgd;
use crate::kernels::step::StepUniform;
use crate::model::{CodebookMode, Reparam};
use crate::train::{ADAM_BETAS, ADAM_EPS, ALTERNATE_MOMENTUM, EMA};

/// Adam's constants, as every parameter takes them.
pub(in super::super) fn adam_settings() -> AdamSettings {
    AdamSettings { beta1: ADAM_BETAS.0 as f32, beta2: ADAM_BETAS.1 as f32, eps: ADAM_EPS as f32 }
}

pub(in super::super) enum CodebookStage {
    /// dL_cb/dC into `grad` (with the orthogonality penalty's gradient added where it is on), then Adam with its
    /// moments.
    Grad {
        grad: wgpu::Buffer,
        moments: [wgpu::Buffer; 2],
        bound: BoundGrad,
        orthogonal: Option<BoundOrthogonal>,
        sync: Option<SyncUpdate>,
        /// Adam on the codebook, with SimVQ on its layer, or with the affine map on its codes C0 (then the codebook
        /// computed again from them).
        adam: BoundAdam,
        simvq: Option<Box<Simvq>>,
        affine: Option<Box<AffineMap>>,
        cosine: Option<Box<CosineCodes>>,
    },
    /// The EMA update with its state (N_k, M_k), which starts at N_k = 1, M_k = c_k.
    Ema { size: wgpu::Buffer, sum: wgpu::Buffer, bound: BoundEma },
    /// dL_cb/dC of the batch's nearest codes into `grad`, then SGD with momentum, before the forward pass assigns
    /// the codes again ([`CodebookStage::record_alternate`]).
    Alternate { grad: wgpu::Buffer, velocity: wgpu::Buffer, bound: BoundGrad, sgd: BoundSgd },
    /// Nothing: the codebook never moves (FSQ's grid).
    Fixed,
}

impl CodebookStage {
    /// The update of `level` (`first`: level 0, the one the orthogonality penalty and SimVQ act on), whose stacked
    /// initial codebooks are `initial` (the EMA state starts from them).
    pub fn new(cx: Ctx<'_>, level: &LevelBuffers, first: bool, initial: &[f32]) -> Result<Self> {
        let (device, sz) = (cx.device(), cx.sz);
        let shape = CodebookShape { n: sz.b, k: sz.k, m: sz.m };
        let len = (sz.runs * sz.k * sz.m) as usize;
        Ok(match cx.first().codebook_mode {
            CodebookMode::Grad => Self::grad(cx, level, first, initial)?,
            CodebookMode::Fixed => CodebookStage::Fixed,
            CodebookMode::Alternate => {
                let (grad, bound) = codebook_grad(cx, level)?;
                let velocity = cx.gpu.zeroed::<f32>("codebook sgd velocity", len)?;
                let (lr, momentum) = (cx.first().alternate_lr as f32, ALTERNATE_MOMENTUM as f32);
                let sgd = cx.ks.sgd.bind(device, &level.codebook, &grad, &velocity, len as u32, lr, momentum)?;
                CodebookStage::Alternate { grad, velocity, bound, sgd }
            }
            CodebookMode::Ema => {
                let (size0, sum0) = crate::contract::ema_initial_state(initial, (sz.runs * sz.k) as usize);
                let (size, sum) = (cx.gpu.upload("ema size", &size0)?, cx.gpu.upload("ema sum", &sum0)?);
                let buffers = EmaBuffers {
                    z: &level.input,
                    index: &level.index,
                    codebook: &level.codebook,
                    counts: &level.counts,
                    ema_size: &size,
                    ema_sum: &sum,
                };
                let settings = EmaSettings { decay: EMA.0 as f32, eps: EMA.1 as f32 };
                let bound = cx.ks.codebook.bind_ema_runs(device, &buffers, shape, settings, sz.runs)?;
                CodebookStage::Ema { size, sum, bound }
            }
        })
    }

    /// Grad mode: dL_cb/dC with, on level 0, the remedies' terms, and Adam on the codebook or on what it is
    /// computed from (SimVQ's layer, the affine map's C0, cosine codes' rows).
    fn grad(cx: Ctx<'_>, level: &LevelBuffers, first: bool, initial: &[f32]) -> Result<Self> {
        let (device, sz) = (cx.device(), cx.sz);
        let len = (sz.runs * sz.k * sz.m) as usize;
        let (grad, bound) = codebook_grad(cx, level)?;
        let moments = [cx.gpu.zeroed::<f32>("codebook adam m", len)?, cx.gpu.zeroed::<f32>("codebook adam v", len)?];
        // The penalty's weight is the batch's (runs that differ in it do not batch).
        let weight = cx.first().orth_weight as f32;
        let orthogonal = (first && weight > 0.0)
            .then(|| cx.ks.orthogonal.bind(device, &level.codebook, &grad, (sz.k, sz.m), sz.runs, weight))
            .transpose()?;
        let nu = cx.first().sync_nu as f32;
        let sync = (first && nu > 0.0).then(|| SyncUpdate::new(cx, level, &grad, nu)).transpose()?;
        let simvq = (first && cx.first().reparam == Reparam::Simvq).then(|| Simvq::new(cx, level, &grad).map(Box::new));
        let simvq = simvq.transpose()?;
        let a = cx.first().affine_lr as f32;
        let affine = (first && a > 0.0).then(|| AffineMap::new(cx, level, &grad, initial, a).map(Box::new));
        let affine = affine.transpose()?;
        let cosine = (first && cx.first().cosine).then(|| CosineCodes::new(cx, level, &grad, initial).map(Box::new));
        let cosine = cosine.transpose()?;
        // Adam is elementwise with the same constants for every run: the stacked arrays are one array.
        let [m, v] = &moments;
        let (params, grads) = match (&affine, &cosine) {
            (Some(a), _) => (&a.raw, &grad),
            (None, Some(c)) => (&c.raw, &c.raw_grad),
            (None, None) => (&level.codebook, &grad),
        };
        let adam = match &simvq {
            Some(s) => s.adam(cx)?,
            None => cx.ks.adam.bind(device, params, grads, m, v, len as u32, adam_settings())?,
        };
        Ok(CodebookStage::Grad { grad, moments, bound, orthogonal, sync, adam, simvq, affine, cosine })
    }

    /// The EMA state (N_k, M_k), which a reset restarts; `None` in grad mode.
    pub fn ema_state(&self) -> Option<(&wgpu::Buffer, &wgpu::Buffer)> {
        match self {
            CodebookStage::Ema { size, sum, .. } => Some((size, sum)),
            CodebookStage::Grad { .. } | CodebookStage::Alternate { .. } | CodebookStage::Fixed => None,
        }
    }

    /// Records the first half of the update: the gradient (grad mode) or the whole EMA update.
    pub fn record_first(&self, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            CodebookStage::Grad { bound, orthogonal, sync, simvq, affine, cosine, .. } => {
                bound.encode(pass);
                if let Some(o) = orthogonal {
                    o.encode(pass);
                }
                if let Some(s) = sync {
                    s.sums.encode(pass);
                    s.add.encode(pass);
                }
                if let Some(s) = simvq {
                    s.layer_grad.encode(pass);
                }
                if let Some(a) = affine {
                    a.bound.encode_grad(pass);
                }
                if let Some(c) = cosine {
                    c.backward.encode(pass);
                }
            }
            CodebookStage::Ema { bound, .. } => bound.encode(pass),
            CodebookStage::Alternate { .. } | CodebookStage::Fixed => {}
        }
    }

    /// Whether the codebook never moves.
    pub fn is_fixed(&self) -> bool {
        matches!(self, CodebookStage::Fixed)
    }

    /// Whether this is the alternate mode, whose step comes before the forward pass.
    pub fn alternates(&self) -> bool {
        matches!(self, CodebookStage::Alternate { .. })
    }

    /// The alternate mode's step, recorded after the level's codes are assigned and before they are assigned
    /// again: dL_cb/dC and SGD on it (nothing in the other modes).
    pub fn record_alternate(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let CodebookStage::Alternate { bound, sgd, .. } = self {
            bound.encode(pass);
            sgd.encode(pass);
        }
    }

    /// Records the second half: Adam on the codebook, or on SimVQ's layer and then the codebook from it (grad
    /// mode; nothing with EMA).
    pub fn record_second(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32) {
        if let CodebookStage::Grad { adam, simvq, affine, cosine, .. } = self {
            adam.encode(pass, step, slot);
            if let Some(s) = simvq {
                s.project.encode(pass);
            }
            if let Some(a) = affine {
                a.adam.encode(pass, step, slot);
                a.bound.encode_apply(pass);
            }
            if let Some(c) = cosine {
                c.forward.encode(pass);
            }
        }
    }

    pub fn buffers(&self) -> Vec<&wgpu::Buffer> {
        match self {
            CodebookStage::Grad { grad, moments, sync, simvq, affine, cosine, .. } => {
                let mut out = vec![grad, &moments[0], &moments[1]];
                out.extend(sync.iter().map(|s| &s.per_code));
                if let Some(s) = simvq {
                    out.extend([&s.basis, &s.layer, &s.layer_grads, &s.moments[0], &s.moments[1]]);
                }
                if let Some(a) = affine {
                    out.extend([&a.raw, &a.scale_shift, &a.scale_shift_grad, &a.moments[0], &a.moments[1]]);
                }
                if let Some(c) = cosine {
                    out.extend([&c.raw, &c.raw_grad]);
                }
                out
            }
            CodebookStage::Ema { size, sum, .. } => vec![size, sum],
            CodebookStage::Alternate { grad, velocity, .. } => vec![grad, velocity],
            CodebookStage::Fixed => vec![],
        }
    }
}

/// dL_cb/dC of `level` into a gradient buffer of its own (every run's, stacked): grad and alternate modes.
fn codebook_grad(cx: Ctx<'_>, level: &LevelBuffers) -> Result<(wgpu::Buffer, BoundGrad)> {
    let sz = cx.sz;
    let grad = cx.gpu.zeroed::<f32>("codebook grad", (sz.runs * sz.k * sz.m) as usize)?;
    let buffers = GradBuffers { z: &level.input, index: &level.index, codebook: &level.codebook, grad: &grad };
    let shape = CodebookShape { n: sz.b, k: sz.k, m: sz.m };
    let bound = cx.ks.codebook.bind_grad_runs(cx.device(), &buffers, shape, sz.b, sz.runs)?;
    Ok((grad, bound))
}

/// The synchronized update on level 0 (PROTOCOL §6.6): `nu sum_{i : a_i = k} g_i` added to the codebook's gradient,
/// from the decoder's input gradient g, which the encoder's backward leaves as it was.
pub(in super::super) struct SyncUpdate {
    per_code: wgpu::Buffer,
    sums: BoundGrad,
    add: BoundResidual,
}

impl SyncUpdate {
    fn new(cx: Ctx<'_>, level: &LevelBuffers, grad: &wgpu::Buffer, nu: f32) -> Result<Self> {
        let (device, sz) = (cx.device(), cx.sz);
        let len = sz.runs * sz.k * sz.m;
        let per_code = cx.gpu.zeroed::<f32>("sync sums", len as usize)?;
        let buffers = GradBuffers { z: &cx.bf.g, index: &level.index, codebook: &level.codebook, grad: &per_code };
        let shape = CodebookShape { n: sz.b, k: sz.k, m: sz.m };
        let sums = cx.ks.codebook.bind_row_sums_runs(device, &buffers, shape, nu, sz.runs)?;
        let add = cx.ks.residual.bind_accumulate(device, &per_code, grad, len)?;
        Ok(SyncUpdate { per_code, sums, add })
    }
}

/// The affine map on level 0 (PROTOCOL §6.6): the codebook is `C0 diag(1 + a s) + a b` of every run's codes C0 and
/// its [s, b], which start at the initial codebook and 0. The codebook's Adam moments serve C0.
pub(in super::super) struct AffineMap {
    raw: wgpu::Buffer,
    scale_shift: wgpu::Buffer,
    scale_shift_grad: wgpu::Buffer,
    moments: [wgpu::Buffer; 2],
    bound: BoundAffine,
    /// Adam on [s, b].
    adam: BoundAdam,
}

impl AffineMap {
    fn new(cx: Ctx<'_>, level: &LevelBuffers, grad: &wgpu::Buffer, initial: &[f32], a: f32) -> Result<Self> {
        let (device, sz) = (cx.device(), cx.sz);
        let len = (sz.runs * 2 * sz.m) as usize;
        let raw = cx.gpu.upload("affine codes", initial)?;
        let scale_shift = cx.gpu.zeroed::<f32>("affine scale and shift", len)?;
        let scale_shift_grad = cx.gpu.zeroed::<f32>("affine scale and shift grad", len)?;
        let moments = [cx.gpu.zeroed::<f32>("affine adam m", len)?, cx.gpu.zeroed::<f32>("affine adam v", len)?];
        let buffers = AffineBuffers {
            raw: &raw,
            scale_shift: &scale_shift,
            grad,
            scale_shift_grad: &scale_shift_grad,
            codebook: &level.codebook,
        };
        let bound = cx.ks.affine.bind(device, &buffers, (sz.k, sz.m), sz.runs, a)?;
        let [m, v] = &moments;
        let adam = cx.ks.adam.bind(device, &scale_shift, &scale_shift_grad, m, v, len as u32, adam_settings())?;
        Ok(AffineMap { raw, scale_shift, scale_shift_grad, moments, bound, adam })
    }
}

/// Cosine codes on level 0 (PROTOCOL §6.6): the codebook is every run's rows C0 over their norms; the codebook's
/// gradient reaches C0 through the normalization, and the codebook's Adam moments serve C0.
pub(in super::super) struct CosineCodes {
    raw: wgpu::Buffer,
    raw_grad: wgpu::Buffer,
    /// C0's gradient from the codebook's.
    backward: BoundLatent,
    /// The unit codebook from C0, after Adam.
    forward: BoundLatent,
}

impl CosineCodes {
    fn new(cx: Ctx<'_>, level: &LevelBuffers, grad: &wgpu::Buffer, initial: &[f32]) -> Result<Self> {
        let (device, sz) = (cx.device(), cx.sz);
        let len = sz.runs * sz.k * sz.m;
        let raw = cx.gpu.upload("cosine codes", initial)?;
        let raw_grad = cx.gpu.zeroed::<f32>("cosine codes grad", len as usize)?;
        let backward = LatentBuffers { z: &raw, out: &raw_grad, dy: Some(grad) };
        let forward = LatentBuffers { z: &raw, out: &level.codebook, dy: None };
        Ok(CosineCodes {
            backward: cx.ks.latent.bind_unit(device, &backward, sz.m, len)?,
            forward: cx.ks.latent.bind_unit(device, &forward, sz.m, len)?,
            raw,
            raw_grad,
        })
    }
}

/// SimVQ's layer on level 0 (PROTOCOL §6.6): the codebook is `C0 W^T + b` of every run's frozen basis C0 and its
/// layer (W, b), which the codebook's gradient trains. The dense kernels compute both ways, stacked over runs.
pub(in super::super) struct Simvq {
    basis: wgpu::Buffer,
    layer: wgpu::Buffer,
    layer_grads: wgpu::Buffer,
    moments: [wgpu::Buffer; 2],
    /// `dW = dC^T C0`, `db = sum_k dC_k`.
    layer_grad: BoundDense,
    /// `C = C0 W^T + b`, after Adam on the layer.
    project: BoundDense,
}

impl Simvq {
    fn new(cx: Ctx<'_>, level: &LevelBuffers, grad: &wgpu::Buffer) -> Result<Self> {
        let (device, sz) = (cx.device(), cx.sz);
        let (mut basis, mut layer) = (Vec::new(), Vec::new());
        for c in cx.configs {
            let (b, l) = crate::train::simvq::initial(c);
            basis.extend(b);
            layer.extend(l);
        }
        let stride = sz.m * sz.m + sz.m;
        let (basis, layer) = (cx.gpu.upload("simvq basis", &basis)?, cx.gpu.upload("simvq layer", &layer)?);
        let len = (sz.runs * stride) as usize;
        let layer_grads = cx.gpu.zeroed::<f32>("simvq layer grad", len)?;
        let moments = [cx.gpu.zeroed::<f32>("simvq adam m", len)?, cx.gpu.zeroed::<f32>("simvq adam v", len)?];
        let dense = cx.ks.dense.for_runs(sz.runs, stride)?;
        let linear = crate::train::simvq::layer(sz.m);
        let layer_grad = dense.bind_weight_and_bias_grad(device, linear, grad, &basis, &layer_grads, sz.k)?;
        let project = dense.bind_forward(device, linear, &basis, &layer, &level.codebook, sz.k, false)?;
        Ok(Simvq { basis, layer, layer_grads, moments, layer_grad, project })
    }

    /// Adam on the layer, every run's stacked as one array.
    fn adam(&self, cx: Ctx<'_>) -> Result<BoundAdam> {
        let [m, v] = &self.moments;
        let len = cx.sz.runs * (cx.sz.m * cx.sz.m + cx.sz.m);
        cx.ks.adam.bind(cx.device(), &self.layer, &self.layer_grads, m, v, len, adam_settings())
    }
}
