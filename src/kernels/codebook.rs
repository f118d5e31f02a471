//! Codebook updates (`shaders/codebook.wgsl`, docs/PROTOCOL.md §2), all deterministic (no float atomics):
//! - [`Codebook::bind_counts`]: per-code usage counts `n_k` (u32);
//! - [`Codebook::bind_grad`]: `dL_cb/dC = 2/(B m) sum_{i : a_i = k} (c_k - z_i)`, for the optimizer to apply
//!   ([`Codebook::bind_row_sums_runs`]: any rows' per-code sums);
//! - [`Codebook::bind_ema`]: the EMA update with Laplace smoothing, which rewrites the codebook in place.
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::gpu::{read_buffer, upload, zeroed};
//! use vqgrad::kernels::codebook::{Codebook, CodebookShape, GradBuffers};
//! // Two rows on code 0 of a codebook of two codes (m = 1): dL_cb/dc_0 = 2/(2 * 1) ((0 - 1) + (0 - 3)) = -4.
//! let (z, index) = (upload(&device, "z", &[1.0f32, 3.0])?, upload(&device, "index", &[0u32, 0])?);
//! let codebook = upload(&device, "codebook", &[0.0f32, 5.0])?;
//! let grad = zeroed::<f32>(&device, "dL/dC", 2)?;
//! let kernel = Codebook::new(&device)?;
//! let buffers = GradBuffers { z: &z, index: &index, codebook: &codebook, grad: &grad };
//! let bound = kernel.bind_grad(&device, &buffers, CodebookShape { n: 2, k: 2, m: 1 }, 2)?;
//! let mut encoder = device.create_command_encoder(&Default::default());
//! bound.encode(&mut encoder.begin_compute_pass(&Default::default()));
//! queue.submit([encoder.finish()]);
//! assert_eq!(read_buffer::<f32>(&device, &queue, &grad)?[..2], [-4.0, 0.0]); // code 1 is unused
//! # Ok(())
//! # }
//! ```

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, check_workgroup_size, dispatch,
    dispatch_runs, pipeline, shader, thread_grid, uniform,
};
pub use crate::contract::{EmaSettings, ema_initial_state, mix32, reset_row, seed_mix};
use crate::error::{Error, Result};
use crate::gpu::zeroed;
use crate::shaders;

/// The sizes: `n` rows of z and index, `k` codes, latent dimension `m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodebookShape {
    /// Rows of z and index.
    pub n: u32,
    /// Codes.
    pub k: u32,
    /// Latent dimension.
    pub m: u32,
}

/// Buffers for the usage counts: `index` (n u32, each < k) and `counts` (k u32, written).
#[derive(Clone, Copy)]
pub struct CountBuffers<'a> {
    /// Each row's code: n u32, each < k.
    pub index: &'a wgpu::Buffer,
    /// Written: k u32.
    pub counts: &'a wgpu::Buffer,
}

/// Buffers for the codebook gradient: `z` (n x m f32), `index` (n u32), `codebook` (k x m f32, read; bound
/// read-write), `grad` (k x m f32, written).
#[derive(Clone, Copy)]
pub struct GradBuffers<'a> {
    /// The rows: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// Each row's code: n u32.
    pub index: &'a wgpu::Buffer,
    /// The codes: k x m f32 (read; bound read-write).
    pub codebook: &'a wgpu::Buffer,
    /// Written: dL_cb/dC, k x m f32.
    pub grad: &'a wgpu::Buffer,
}

/// Buffers for the EMA update: `z` (n x m f32), `index` (n u32), `codebook` (k x m f32, rewritten), `counts`
/// (k u32, written: this step's n_k), and the EMA state `ema_size` (k f32, N_k) and `ema_sum` (k x m f32, M_k),
/// both updated. Start the state with [`ema_initial_state`].
#[derive(Clone, Copy)]
pub struct EmaBuffers<'a> {
    /// The rows: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// Each row's code: n u32.
    pub index: &'a wgpu::Buffer,
    /// Rewritten: k x m f32.
    pub codebook: &'a wgpu::Buffer,
    /// Written: this step's n_k, k u32.
    pub counts: &'a wgpu::Buffer,
    /// N_k: k f32, updated.
    pub ema_size: &'a wgpu::Buffer,
    /// M_k: k x m f32, updated.
    pub ema_sum: &'a wgpu::Buffer,
}

#[derive(encase::ShaderType)]
struct Params {
    n: u32,
    k: u32,
    m: u32,
    center: u32,
    scale: f32,
    decay: f32,
    eps: f32,
    dim_tile: u32,
    pad2: u32,
    flags: u32,
    pad0: u32,
    pad1: u32,
}

/// Accumulators per `segment_sums` workgroup (`TILE` in the shader).
const TILE: u32 = 2048;
/// Codebooks of at most this many floats get `segment_sums_small` (an invocation per float scanning every row):
/// on lavapipe that took E1's codebook gradient (32 x 4) from 853 to 152 µs. Both kernels give the same bits.
const SMALL_SUMS: u64 = 1024;
/// Dimensions per `segment_sums` workgroup, at most.
const MAX_DIM_TILE: u32 = 256;

/// The codebook pipelines and layouts. Make once per device.
pub struct Codebook {
    count_layout: wgpu::BindGroupLayout,
    sums_layout: wgpu::BindGroupLayout,
    ema_layout: wgpu::BindGroupLayout,
    clear_counts: wgpu::ComputePipeline,
    count_codes: wgpu::ComputePipeline,
    segment_sums: wgpu::ComputePipeline,
    segment_sums_small: wgpu::ComputePipeline,
    ema_sizes: wgpu::ComputePipeline,
    ema_codebook: wgpu::ComputePipeline,
    lloyd_update: wgpu::ComputePipeline,
    module: wgpu::ShaderModule,
    workgroup_size: u32,
    max_groups: u32,
}

impl Codebook {
    /// The default workgroup size.
    pub const WORKGROUP_SIZE: u32 = 256;

    /// Creates the pipelines with the default workgroup size.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Self::with_workgroup_size(device, Self::WORKGROUP_SIZE)
    }

    /// Creates the pipelines with a given workgroup size (a power of two up to 256).
    pub fn with_workgroup_size(device: &wgpu::Device, workgroup_size: u32) -> Result<Self> {
        check_workgroup_size(device, workgroup_size, 256)?;
        use Slot::*;
        let count_layout = bind_group_layout(device, "codebook counts", &[(0, Uniform), (1, Read), (4, ReadWrite)])?;
        let sums_layout = bind_group_layout(
            device,
            "codebook sums",
            &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite), (5, ReadWrite)],
        )?;
        let ema_layout = bind_group_layout(
            device,
            "codebook ema",
            &[
                (0, Uniform),
                (3, ReadWrite),
                (4, ReadWrite),
                (5, ReadWrite),
                (6, ReadWrite),
                (7, ReadWrite),
                (8, ReadWrite),
            ],
        )?;
        let module = shader(device, "codebook.wgsl", shaders::CODEBOOK)?;
        let make = |layout, entry| pipeline(device, layout, &module, entry, workgroup_size);
        Ok(Codebook {
            clear_counts: make(&count_layout, "clear_counts")?,
            count_codes: make(&count_layout, "count_codes")?,
            segment_sums: make(&sums_layout, "segment_sums")?,
            segment_sums_small: make(&sums_layout, "segment_sums_small")?,
            ema_sizes: make(&ema_layout, "ema_sizes")?,
            ema_codebook: make(&ema_layout, "ema_codebook")?,
            lloyd_update: make(&ema_layout, "lloyd_update")?,
            count_layout,
            sums_layout,
            ema_layout,
            module,
            workgroup_size,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    fn params(shape: CodebookShape, center: bool, scale: f32, ema: EmaSettings) -> Params {
        Params {
            n: shape.n,
            k: shape.k,
            m: shape.m,
            center: center as u32,
            scale,
            decay: ema.decay,
            eps: ema.eps,
            dim_tile: shape.m.min(MAX_DIM_TILE),
            pad2: 0,
            flags: 0,
            pad0: 0,
            pad1: 0,
        }
    }

    fn threads(&self, count: u64) -> Result<(u32, u32)> {
        thread_grid(count, self.workgroup_size, self.max_groups)
    }

    /// The (code tiles, dimension tiles) grid of `segment_sums`.
    fn sums_grid(&self, shape: CodebookShape) -> Result<(u32, u32)> {
        let dim_tile = shape.m.min(MAX_DIM_TILE);
        let code_tiles = shape.k.div_ceil(TILE / dim_tile);
        let dim_tiles = shape.m.div_ceil(dim_tile);
        if code_tiles > self.max_groups || dim_tiles > self.max_groups {
            return Err(Error::Shape(format!("k = {} codes of m = {} exceed one dispatch's grid", shape.k, shape.m)));
        }
        Ok((code_tiles, dim_tiles))
    }

    fn counts_pass(
        &self,
        device: &wgpu::Device,
        buffers: CountBuffers<'_>,
        shape: CodebookShape,
        runs: u32,
    ) -> Result<CountPass> {
        let r = runs as u64;
        let params =
            uniform(device, "codebook count params", &Self::params(shape, false, 1.0, EmaSettings::default()))?;
        let bind_group = bind_group(
            device,
            "codebook counts",
            &self.count_layout,
            &params,
            &[
                Binding::new(1, "index", buffers.index, r * shape.n as u64 * 4),
                Binding::new(4, "counts", buffers.counts, r * shape.k as u64 * 4),
            ],
        )?;
        let ((cx, cy), (nx, ny)) = (self.threads(shape.k as u64)?, self.threads(shape.n as u64)?);
        Ok(CountPass {
            clear: self.clear_counts.clone(),
            count: self.count_codes.clone(),
            bind_group,
            _params: params,
            clear_grid: (cx, cy, runs),
            count_grid: (nx, ny, runs),
        })
    }

    /// The private core of the grad, EMA and Lloyd sums: `scale sum (rows - center c_k)` of `b.z` into `b.grad`.
    fn sums_pass(
        &self,
        device: &wgpu::Device,
        label: &str,
        b: &GradBuffers<'_>,
        (shape, params): (CodebookShape, Params),
        runs: u32,
    ) -> Result<SumsPass> {
        let (n, k, m) = (shape.n as u64, shape.k as u64, shape.m as u64);
        check_runs(runs, self.max_groups, &[("z", n * m), ("codebook", k * m)])?;
        let r = runs as u64;
        let small = shape.k as u64 * shape.m as u64 <= SMALL_SUMS;
        let (pipeline, grid) = if small {
            (&self.segment_sums_small, self.threads(shape.k as u64 * shape.m as u64)?)
        } else {
            (&self.segment_sums, self.sums_grid(shape)?)
        };
        let params = uniform(device, label, &params)?;
        let codes = r * shape.k as u64 * shape.m as u64 * F32;
        let bind_group = bind_group(
            device,
            label,
            &self.sums_layout,
            &params,
            &[
                Binding::new(1, "index", b.index, r * shape.n as u64 * 4),
                Binding::new(2, "z", b.z, r * shape.n as u64 * shape.m as u64 * F32),
                Binding::new(3, "codebook", b.codebook, codes),
                Binding::new(5, "grad", b.grad, codes),
            ],
        )?;
        Ok(SumsPass { pipeline: pipeline.clone(), bind_group, _params: params, grid: (grid.0, grid.1, runs) })
    }

    /// Binds the usage counts: `counts[k] = #{i : index[i] = k}`.
    pub fn bind_counts(
        &self,
        device: &wgpu::Device,
        buffers: &CountBuffers<'_>,
        n: u32,
        k: u32,
    ) -> Result<BoundCounts> {
        self.bind_counts_runs(device, buffers, n, k, 1)
    }

    /// [`Codebook::bind_counts`] for `runs` runs stacked in the buffers (index `runs x n`, counts `runs x k`).
    pub fn bind_counts_runs(
        &self,
        device: &wgpu::Device,
        buffers: &CountBuffers<'_>,
        n: u32,
        k: u32,
        runs: u32,
    ) -> Result<BoundCounts> {
        check_shape(&[("n", n), ("k", k)], &[])?;
        check_runs(runs, self.max_groups, &[("index", n as u64), ("counts", k as u64)])?;
        Ok(BoundCounts { pass: self.counts_pass(device, *buffers, CodebookShape { n, k, m: 1 }, runs)? })
    }

    /// Binds the codebook gradient of `L_cb = 1/(B m) sum_i ||sg(z_i) - c_{a_i}||^2` with batch size `batch`.
    pub fn bind_grad(
        &self,
        device: &wgpu::Device,
        buffers: &GradBuffers<'_>,
        shape: CodebookShape,
        batch: u32,
    ) -> Result<BoundGrad> {
        self.bind_grad_runs(device, buffers, shape, batch, 1)
    }

    /// [`Codebook::bind_grad`] for `runs` runs stacked in the buffers (z `runs x n x m`, index `runs x n`, the
    /// codebooks and gradients `runs x k x m`), in one dispatch; each run gives the bits it gives alone.
    pub fn bind_grad_runs(
        &self,
        device: &wgpu::Device,
        buffers: &GradBuffers<'_>,
        shape: CodebookShape,
        batch: u32,
        runs: u32,
    ) -> Result<BoundGrad> {
        check_shape(&[("batch", batch)], &[])?;
        let scale = (-2.0 / (batch as f64 * shape.m as f64)) as f32;
        self.bind_sums(device, "codebook grad", buffers, shape, (true, scale), runs)
    }

    /// Binds `out[k] = scale * sum_{i : index[i] = k} rows_i` for stacked runs (`codebook` bound, not read): the
    /// synchronized update's sums of the decoder's gradient (docs/PROTOCOL.md §6.6).
    pub fn bind_row_sums_runs(
        &self,
        device: &wgpu::Device,
        buffers: &GradBuffers<'_>,
        shape: CodebookShape,
        scale: f32,
        runs: u32,
    ) -> Result<BoundGrad> {
        if !scale.is_finite() {
            return Err(Error::Input(format!("the row sums' scale must be finite, got {scale}")));
        }
        self.bind_sums(device, "codebook row sums", buffers, shape, (false, scale), runs)
    }

    /// `scale * sum_{i : index[i] = k} (z_i - center c_k)` into `buffers.grad`, checked against `shape`.
    fn bind_sums(
        &self,
        device: &wgpu::Device,
        label: &str,
        b: &GradBuffers<'_>,
        shape: CodebookShape,
        (center, scale): (bool, f32),
        runs: u32,
    ) -> Result<BoundGrad> {
        check_shape(
            &[("n", shape.n), ("k", shape.k), ("m", shape.m)],
            &[("n x m", shape.n, shape.m), ("k x m", shape.k, shape.m)],
        )?;
        let params = Self::params(shape, center, scale, EmaSettings::default());
        Ok(BoundGrad { sums: self.sums_pass(device, label, b, (shape, params), runs)? })
    }

    /// Binds the EMA update. Owns two scratch buffers: the per-code sums (k x m f32) and the total n (one f32).
    pub fn bind_ema(
        &self,
        device: &wgpu::Device,
        buffers: &EmaBuffers<'_>,
        shape: CodebookShape,
        settings: EmaSettings,
    ) -> Result<BoundEma> {
        self.bind_ema_runs(device, buffers, shape, settings, 1)
    }

    /// [`Codebook::bind_ema`] for `runs` runs stacked in the buffers (z `runs x n x m`, index `runs x n`, counts and
    /// N `runs x k`, the codebooks and M `runs x k x m`), in one pass of five dispatches; each run gives the bits
    /// it gives alone.
    pub fn bind_ema_runs(
        &self,
        device: &wgpu::Device,
        buffers: &EmaBuffers<'_>,
        shape: CodebookShape,
        settings: EmaSettings,
        runs: u32,
    ) -> Result<BoundEma> {
        check_shape(
            &[("n", shape.n), ("k", shape.k), ("m", shape.m)],
            &[("n x m", shape.n, shape.m), ("k x m", shape.k, shape.m)],
        )?;
        if !(settings.decay.is_finite() && (0.0..=1.0).contains(&settings.decay)) {
            return Err(Error::Input(format!("the EMA decay must be in [0, 1], got {}", settings.decay)));
        }
        if !(settings.eps.is_finite() && settings.eps > 0.0) {
            return Err(Error::Input(format!("the EMA epsilon must be > 0, got {}", settings.eps)));
        }
        let r = runs as u64;
        let codes = shape.k as u64 * shape.m as u64;
        let sums = zeroed::<f32>(device, "codebook ema sums", (r * codes) as usize)?;
        let total = zeroed::<f32>(device, "codebook ema total", runs as usize)?;
        let params = Self::params(shape, false, 1.0, settings);
        let rows = GradBuffers { z: buffers.z, index: buffers.index, codebook: buffers.codebook, grad: &sums };
        let sums_pass = self.sums_pass(device, "codebook ema sums", &rows, (shape, params), runs)?;
        let params = uniform(device, "codebook ema params", &Self::params(shape, false, 1.0, settings))?;
        let bind_group = bind_group(
            device,
            "codebook ema",
            &self.ema_layout,
            &params,
            &[
                Binding::new(3, "codebook", buffers.codebook, r * codes * F32),
                Binding::new(4, "counts", buffers.counts, r * shape.k as u64 * 4),
                Binding::new(5, "sums", &sums, r * codes * F32),
                Binding::new(6, "ema_size", buffers.ema_size, r * shape.k as u64 * F32),
                Binding::new(7, "ema_sum", buffers.ema_sum, r * codes * F32),
                Binding::new(8, "ema_total", &total, r * F32),
            ],
        )?;
        let counts = CountBuffers { index: buffers.index, counts: buffers.counts };
        let (x, y) = self.threads(codes)?;
        Ok(BoundEma {
            counts: self.counts_pass(device, counts, shape, runs)?,
            sums: sums_pass,
            sizes: self.ema_sizes.clone(),
            update: self.ema_codebook.clone(),
            bind_group,
            update_grid: (x, y, runs),
            _scratch: [sums, total, params],
        })
    }

    /// Binds one Lloyd iteration on the rows `z` with their current assignment `index` (from assign): counts,
    /// per-code sums, then every used code moves to its rows' mean. Owns the sums scratch buffer.
    pub fn bind_lloyd(
        &self,
        device: &wgpu::Device,
        buffers: &LloydBuffers<'_>,
        shape: CodebookShape,
    ) -> Result<BoundLloyd> {
        check_shape(
            &[("n", shape.n), ("k", shape.k), ("m", shape.m)],
            &[("n x m", shape.n, shape.m), ("k x m", shape.k, shape.m)],
        )?;
        let codes = shape.k as u64 * shape.m as u64;
        let sums = zeroed::<f32>(device, "lloyd sums", codes as usize)?;
        let dummy = zeroed::<f32>(device, "lloyd unused", 1)?;
        let params = Self::params(shape, false, 1.0, EmaSettings::default());
        let rows = GradBuffers { z: buffers.z, index: buffers.index, codebook: buffers.codebook, grad: &sums };
        let sums_pass = self.sums_pass(device, "lloyd sums", &rows, (shape, params), 1)?;
        let params = uniform(device, "lloyd params", &Self::params(shape, false, 1.0, EmaSettings::default()))?;
        let bind_group = bind_group(
            device,
            "lloyd",
            &self.ema_layout,
            &params,
            &[
                Binding::new(3, "codebook", buffers.codebook, codes * F32),
                Binding::new(4, "counts", buffers.counts, shape.k as u64 * 4),
                Binding::new(5, "sums", &sums, codes * F32),
                Binding::new(6, "unused", &dummy, F32),
                Binding::new(7, "unused", &dummy, F32),
                Binding::new(8, "unused", &dummy, F32),
            ],
        )?;
        Ok(BoundLloyd {
            counts: self.counts_pass(
                device,
                CountBuffers { index: buffers.index, counts: buffers.counts },
                shape,
                1,
            )?,
            sums: sums_pass,
            update: self.lloyd_update.clone(),
            bind_group,
            grid: self.threads(codes)?,
            _scratch: [sums, dummy, params],
        })
    }

    /// Binds the dead-code reset for a batch of `shape.n` rows: [`BoundReset::encode_mark`] after each step's
    /// counts marks the used codes; [`BoundReset::encode_reset`] replaces the unused ones and clears the marks.
    /// `seed_mix` comes from [`seed_mix`]; `step` gives group 1 (the step number).
    pub fn bind_reset(
        &self,
        device: &wgpu::Device,
        buffers: &ResetBuffers<'_>,
        shape: CodebookShape,
        seed_mix: u32,
        step: &super::step::StepUniform,
    ) -> Result<BoundReset> {
        self.bind_reset_runs(device, buffers, shape, &[seed_mix], step)
    }

    /// [`Codebook::bind_reset`] for one run per entry of `seed_mixes` stacked in the buffers (z `runs x n x m`,
    /// counts, marks and N `runs x k`, the codebooks and M `runs x k x m`), each with its own seed, in one dispatch;
    /// each run gives the bits it gives alone.
    pub fn bind_reset_runs(
        &self,
        device: &wgpu::Device,
        buffers: &ResetBuffers<'_>,
        shape: CodebookShape,
        seed_mixes: &[u32],
        step: &super::step::StepUniform,
    ) -> Result<BoundReset> {
        check_shape(
            &[("n", shape.n), ("k", shape.k), ("m", shape.m)],
            &[("n x m", shape.n, shape.m), ("k x m", shape.k, shape.m)],
        )?;
        let runs = seed_mixes.len() as u32;
        let (n, k, m) = (shape.n as u64, shape.k as u64, shape.m as u64);
        check_runs(runs, self.max_groups, &[("z", n * m), ("codebook", k * m)])?;
        let r = runs as u64;
        use Slot::*;
        let layout = bind_group_layout(
            device,
            "codebook reset",
            &[(0, Uniform), (2, Read), (3, ReadWrite), (4, ReadWrite), (6, ReadWrite), (7, ReadWrite), (9, ReadWrite)],
        )?;
        let mark = pipeline(device, &layout, &self.module, "mark_used", self.workgroup_size)?;
        let reset =
            super::pipeline_with(device, &[&layout, step.layout()], &self.module, "reset_dead", self.workgroup_size)?;
        let mut p = Self::params(shape, false, 1.0, EmaSettings::default());
        p.flags = buffers.ema.is_some() as u32;
        let params = uniform(device, "codebook reset params", &p)?;
        // The marks start clear; the seeds follow them.
        let state: Vec<u32> = std::iter::repeat_n(0, (r * k) as usize).chain(seed_mixes.iter().copied()).collect();
        let state = crate::gpu::upload(device, "codebook reset marks and seeds", &state)?;
        let codes = r * k * m * F32;
        let dummy = zeroed::<f32>(device, "codebook reset unused", 1)?;
        let (size, sum, ema_bytes) = match buffers.ema {
            Some((size, sum)) => (size, sum, (r * k * F32, codes)),
            None => (&dummy, &dummy, (F32, F32)),
        };
        let bind_group = bind_group(
            device,
            "codebook reset",
            &layout,
            &params,
            &[
                Binding::new(2, "z", buffers.z, r * n * m * F32),
                Binding::new(3, "codebook", buffers.codebook, codes),
                Binding::new(4, "counts", buffers.counts, r * k * 4),
                Binding::new(6, "ema_size", size, ema_bytes.0),
                Binding::new(7, "ema_sum", sum, ema_bytes.1),
                Binding::new(9, "marks and seeds", &state, (r * k + r) * 4),
            ],
        )?;
        let (x, y) = self.threads(k)?;
        Ok(BoundReset { mark, reset, bind_group, grid: (x, y, runs), _buffers: [params, dummy, state] })
    }
}

/// Buffers for a Lloyd iteration: `z` (n x m), `index` (n u32, the current assignment), `codebook` (k x m,
/// rewritten) and `counts` (k u32, written).
#[derive(Clone, Copy)]
pub struct LloydBuffers<'a> {
    /// The rows: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// Each row's current code (from assign): n u32.
    pub index: &'a wgpu::Buffer,
    /// The centres, rewritten: k x m f32.
    pub codebook: &'a wgpu::Buffer,
    /// Written: k u32.
    pub counts: &'a wgpu::Buffer,
}

/// A Lloyd iteration bound to buffers (record the assign kernel before it).
pub struct BoundLloyd {
    counts: CountPass,
    sums: SumsPass,
    update: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: (u32, u32),
    _scratch: [wgpu::Buffer; 3],
}

impl BoundLloyd {
    /// Records counts, sums and the centroid update (four dispatches).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.counts.encode(pass);
        dispatch_runs(pass, &self.sums.pipeline, &self.sums.bind_group, self.sums.grid);
        dispatch(pass, &self.update, &self.bind_group, self.grid);
    }
}

/// Buffers for the dead-code reset: the batch's `z` (n x m), the `codebook`, this step's `counts` (k u32) and, in
/// EMA mode, the EMA state `(ema_size, ema_sum)`. The marks of the codes used since the last reset live in the
/// bound reset.
#[derive(Clone, Copy)]
pub struct ResetBuffers<'a> {
    /// This step's batch encodings: n x m f32.
    pub z: &'a wgpu::Buffer,
    /// Codes, rewritten where reset: k x m f32.
    pub codebook: &'a wgpu::Buffer,
    /// This step's usage counts: k u32.
    pub counts: &'a wgpu::Buffer,
    /// In EMA mode the state `(ema_size, ema_sum)` (k and k x m f32), restarted where a code resets.
    pub ema: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
}

/// The dead-code reset bound to buffers.
pub struct BoundReset {
    mark: wgpu::ComputePipeline,
    reset: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// Workgroups in x and y, and one z layer per run.
    grid: (u32, u32, u32),
    _buffers: [wgpu::Buffer; 3],
}

impl BoundReset {
    /// Marks the codes this step's counts show as used.
    pub fn encode_mark(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch_runs(pass, &self.mark, &self.bind_group, self.grid);
    }

    /// Replaces the codes unused since the last reset, with step `slot` of `step` at group 1.
    pub fn encode_reset(&self, pass: &mut wgpu::ComputePass<'_>, step: &super::step::StepUniform, slot: u32) {
        super::dispatch_step(pass, &self.reset, &self.bind_group, self.grid, step, slot);
    }
}

struct CountPass {
    clear: wgpu::ComputePipeline,
    count: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    clear_grid: (u32, u32, u32),
    count_grid: (u32, u32, u32),
}

impl CountPass {
    fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch_runs(pass, &self.clear, &self.bind_group, self.clear_grid);
        dispatch_runs(pass, &self.count, &self.bind_group, self.count_grid);
    }
}

struct SumsPass {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    /// Workgroups in x and y, and one z layer per run.
    grid: (u32, u32, u32),
}

/// Usage counts bound to buffers.
pub struct BoundCounts {
    pass: CountPass,
}

impl BoundCounts {
    /// Records clearing and counting (two dispatches) into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.pass.encode(pass);
    }
}

/// The codebook gradient bound to buffers.
pub struct BoundGrad {
    sums: SumsPass,
}

impl BoundGrad {
    /// Records the gradient (one dispatch) into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch_runs(pass, &self.sums.pipeline, &self.sums.bind_group, self.sums.grid);
    }
}

/// The EMA update bound to buffers.
pub struct BoundEma {
    counts: CountPass,
    sums: SumsPass,
    sizes: wgpu::ComputePipeline,
    update: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    update_grid: (u32, u32, u32),
    _scratch: [wgpu::Buffer; 3],
}

impl BoundEma {
    /// Records the whole update (counts, sums, N_k and n, then M_k and the codebook: five dispatches).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.counts.encode(pass);
        dispatch_runs(pass, &self.sums.pipeline, &self.sums.bind_group, self.sums.grid);
        dispatch_runs(pass, &self.sizes, &self.bind_group, (1, 1, self.update_grid.2));
        dispatch_runs(pass, &self.update, &self.bind_group, self.update_grid);
    }
}
