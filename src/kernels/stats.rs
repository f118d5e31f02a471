//! Codebook-use statistics (`shaders/stats.wgsl`, docs/PROTOCOL.md §4), computed on the GPU and read back as one
//! 32-byte struct: dead codes, usage, entropy (nats), perplexity, quantization error and, with labels, purity.
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! # let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
//! use vqgrad::gpu::{upload, zeroed};
//! use vqgrad::kernels::codebook::{Codebook, CountBuffers};
//! use vqgrad::kernels::stats::{Stats, StatsBuffers, StatsShape};
//! // Four rows on codes 0, 0, 1, 1 of K = 4, each at squared distance 0.5 (m = 1).
//! let index = upload(&device, "index", &[0u32, 0, 1, 1])?;
//! let distance = upload(&device, "distance", &[0.5f32; 4])?;
//! let counts = zeroed::<u32>(&device, "counts", 4)?;
//! let count = Codebook::new(&device)?.bind_counts(&device, &CountBuffers { index: &index, counts: &counts }, 4, 4)?;
//! let buffers = StatsBuffers { index: &index, distance: &distance, counts: &counts, labels: None };
//! let stats = Stats::new(&device)?.bind(&device, &buffers, StatsShape { n: 4, k: 4, m: 1, classes: 0 })?;
//! let mut encoder = device.create_command_encoder(&Default::default());
//! {
//!     let mut pass = encoder.begin_compute_pass(&Default::default());
//!     count.encode(&mut pass);
//!     stats.encode(&mut pass);
//! }
//! stats.copy_out(&mut encoder);
//! queue.submit([encoder.finish()]);
//! let s = stats.read(&device)?;
//! assert_eq!((s.dead_codes, s.usage), (2, 0.5));
//! assert!((s.perplexity - 2.0).abs() < 1e-6 && (s.quant_err - 0.5).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_shape, check_workgroup_size, dispatch, pipeline, shader,
    uniform,
};
pub use crate::contract::CodeStats;
use crate::error::{Error, Result};
use crate::gpu::{grid, map_read, zeroed};
use crate::shaders;

/// The sizes: `n` rows (of index, distance and labels), `k` codes, latent dimension `m` (for quant_err), and
/// `classes` label classes (0 without labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsShape {
    /// Rows of index, distance and labels.
    pub n: u32,
    /// Codes.
    pub k: u32,
    /// Latent dimension (quant_err divides by it).
    pub m: u32,
    /// Label classes (0 without labels).
    pub classes: u32,
}

/// The caller's buffers, each with `STORAGE` usage: `index` (n u32, from assign), `distance` (n f32, from
/// assign), `counts` (k u32, from [`crate::kernels::codebook::Codebook::bind_counts`]) and optional `labels`
/// (n u32, each < classes).
#[derive(Clone, Copy)]
pub struct StatsBuffers<'a> {
    /// Each row's code (from assign): n u32.
    pub index: &'a wgpu::Buffer,
    /// Each row's squared distance (from assign): n f32.
    pub distance: &'a wgpu::Buffer,
    /// Per-code counts: k u32.
    pub counts: &'a wgpu::Buffer,
    /// Optional labels: n u32, each < classes (for purity).
    pub labels: Option<&'a wgpu::Buffer>,
}

/// The shader's `Stats` struct, byte for byte.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RawStats {
    total: u32,
    dead_codes: u32,
    usage: f32,
    entropy: f32,
    perplexity: f32,
    quant_err: f32,
    purity: f32,
    has_labels: u32,
}

const RAW_SIZE: u64 = std::mem::size_of::<RawStats>() as u64;

impl From<RawStats> for CodeStats {
    fn from(r: RawStats) -> Self {
        CodeStats {
            total: r.total,
            dead_codes: r.dead_codes,
            usage: r.usage as f64,
            entropy: r.entropy as f64,
            perplexity: r.perplexity as f64,
            quant_err: r.quant_err as f64,
            purity: (r.has_labels != 0).then_some(r.purity as f64),
        }
    }
}

#[derive(encase::ShaderType)]
struct Params {
    n: u32,
    k: u32,
    m: u32,
    classes: u32,
}

/// The statistics pipelines and layouts. Make once per device.
pub struct Stats {
    labels_layout: wgpu::BindGroupLayout,
    summary_layout: wgpu::BindGroupLayout,
    clear_label_counts: wgpu::ComputePipeline,
    count_labels: wgpu::ComputePipeline,
    summarize: wgpu::ComputePipeline,
    workgroup_size: u32,
    max_groups: u32,
}

impl Stats {
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
        let labels_layout =
            bind_group_layout(device, "stats labels", &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite)])?;
        let summary_layout = bind_group_layout(
            device,
            "stats summary",
            &[(0, Uniform), (3, ReadWrite), (4, Read), (5, Read), (6, ReadWrite)],
        )?;
        let module = shader(device, "stats.wgsl", shaders::STATS)?;
        let make = |layout, entry| pipeline(device, layout, &module, entry, workgroup_size);
        Ok(Stats {
            clear_label_counts: make(&labels_layout, "clear_label_counts")?,
            count_labels: make(&labels_layout, "count_labels")?,
            summarize: make(&summary_layout, "summarize")?,
            labels_layout,
            summary_layout,
            workgroup_size,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// Checks the buffers against `shape` and makes the bind groups, the label histogram (k x classes u32),
    /// the output struct and its staging buffer.
    pub fn bind(&self, device: &wgpu::Device, buffers: &StatsBuffers<'_>, shape: StatsShape) -> Result<BoundStats> {
        let StatsShape { n, k, m, classes } = shape;
        check_shape(&[("n", n), ("k", k), ("m", m)], &[("k x classes", k, classes)])?;
        if buffers.labels.is_some() != (classes > 0) {
            return Err(Error::Shape("labels need classes >= 1, and classes >= 1 needs labels".into()));
        }
        let params = uniform(device, "stats params", &Params { n, k, m, classes })?;
        let cells = k as u64 * classes as u64;
        let label_counts = zeroed::<u32>(device, "stats label counts", cells as usize)?;
        let output = zeroed::<RawStats>(device, "stats output", 1)?;
        let staging = crate::gpu::scoped(
            device,
            || "stats staging buffer".into(),
            || {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("stats staging"),
                    size: RAW_SIZE,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            },
        )?;
        let labels = match buffers.labels {
            Some(labels) => {
                let bg = bind_group(
                    device,
                    "stats labels",
                    &self.labels_layout,
                    &params,
                    &[
                        Binding::new(1, "index", buffers.index, n as u64 * 4),
                        Binding::new(2, "labels", labels, n as u64 * 4),
                        Binding::new(3, "label counts", &label_counts, cells * 4),
                    ],
                )?;
                let groups = |count: u64| {
                    grid(u32::try_from(count.div_ceil(self.workgroup_size as u64)).unwrap_or(u32::MAX), self.max_groups)
                };
                Some(LabelPass {
                    clear: self.clear_label_counts.clone(),
                    count: self.count_labels.clone(),
                    bind_group: bg,
                    clear_grid: groups(cells)?,
                    count_grid: groups(n as u64)?,
                })
            }
            None => None,
        };
        let summary = bind_group(
            device,
            "stats summary",
            &self.summary_layout,
            &params,
            &[
                Binding::new(3, "label counts", &label_counts, cells * 4),
                Binding::new(4, "counts", buffers.counts, k as u64 * 4),
                Binding::new(5, "distance", buffers.distance, n as u64 * F32),
                Binding::new(6, "stats output", &output, RAW_SIZE),
            ],
        )?;
        Ok(BoundStats {
            labels,
            summarize: self.summarize.clone(),
            summary,
            output,
            staging,
            _buffers: [params, label_counts],
        })
    }
}

struct LabelPass {
    clear: wgpu::ComputePipeline,
    count: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    clear_grid: (u32, u32),
    count_grid: (u32, u32),
}

/// Statistics bound to buffers. Per evaluation: [`encode`](Self::encode) into a pass,
/// [`copy_out`](Self::copy_out) into the encoder after the pass, submit, then [`read`](Self::read).
pub struct BoundStats {
    labels: Option<LabelPass>,
    summarize: wgpu::ComputePipeline,
    summary: wgpu::BindGroup,
    output: wgpu::Buffer,
    staging: wgpu::Buffer,
    _buffers: [wgpu::Buffer; 2],
}

impl BoundStats {
    /// Records the label histogram (with labels) and the summary into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(l) = &self.labels {
            dispatch(pass, &l.clear, &l.bind_group, l.clear_grid);
            dispatch(pass, &l.count, &l.bind_group, l.count_grid);
        }
        dispatch(pass, &self.summarize, &self.summary, (1, 1));
    }

    /// Records the copy of the 32-byte result into the staging buffer (outside any pass).
    pub fn copy_out(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.copy_buffer_to_buffer(&self.output, 0, &self.staging, 0, RAW_SIZE);
    }

    /// Maps the staging buffer after the submit that holds [`copy_out`](Self::copy_out), waiting for the GPU.
    pub fn read(&self, device: &wgpu::Device) -> Result<CodeStats> {
        let raw: Vec<RawStats> = map_read(device, &self.staging)?;
        raw.first().copied().map(CodeStats::from).ok_or_else(|| Error::Readback("the stats buffer is empty".into()))
    }
}
