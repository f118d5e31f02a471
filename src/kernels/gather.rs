//! Row gathers (`shaders/gather.wgsl`): the minibatch `x[r] = data[schedule[offset + r]]`, with the offset from a
//! [`StepUniform`] slot, and the quantized codes `q[i] = codebook[index[i]]`.

use super::step::StepUniform;
use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, dispatch_runs, pipeline, pipeline_with,
    shader, thread_grid, uniform,
};
use crate::error::Result;
use crate::shaders::{self, Lanes};

#[derive(encase::ShaderType)]
struct Params {
    rows: u32,
    width: u32,
    limit: u32,
    index_stride: u32,
}

/// The gather pipelines. Make once per device, with the step uniform `gather_rows` reads.
pub struct Gather {
    layout: wgpu::BindGroupLayout,
    /// `gather_rows` and `gather_codes` with vec4 loads (widths that are multiples of 4) and with f32 loads.
    vec4: [wgpu::ComputePipeline; 2],
    scalar: [wgpu::ComputePipeline; 2],
    max_groups: u32,
}

const WORKGROUP_SIZE: u32 = 16;
const ROWS: usize = 0;
const CODES: usize = 1;

/// A gather bound to buffers.
pub struct BoundGather {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    /// Workgroups in x and y over the rows, and one z layer per run.
    grid: (u32, u32, u32),
}

impl BoundGather {
    /// Records a code gather (no step uniform needed).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch_runs(pass, &self.pipeline, &self.bind_group, self.grid);
    }

    /// Records a minibatch gather for step `slot` of `step`.
    pub fn encode_step(&self, pass: &mut wgpu::ComputePass<'_>, step: &StepUniform, slot: u32) {
        super::dispatch_step(pass, &self.pipeline, &self.bind_group, self.grid, step, slot);
    }
}

impl Gather {
    /// Creates the pipelines; `step` provides group 1's layout for `gather_rows`.
    pub fn new(device: &wgpu::Device, step: &StepUniform) -> Result<Self> {
        use Slot::*;
        let layout = bind_group_layout(device, "gather", &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite)])?;
        let both = |lanes: Lanes, label: &str| -> Result<[wgpu::ComputePipeline; 2]> {
            let module = shader(device, label, &shaders::gather_source(lanes))?;
            Ok([
                pipeline_with(device, &[&layout, step.layout()], &module, "gather_rows", WORKGROUP_SIZE)?,
                pipeline(device, &layout, &module, "gather_codes", WORKGROUP_SIZE)?,
            ])
        };
        Ok(Gather {
            vec4: both(Lanes::Vec4, "gather.wgsl (vec4)")?,
            scalar: both(Lanes::Scalar, "gather.wgsl (scalar)")?,
            layout,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    #[allow(clippy::too_many_arguments)] // the private core of bind_rows and bind_codes
    fn bind(
        &self,
        device: &wgpu::Device,
        which: usize,
        source: &wgpu::Buffer,
        source_rows: u32,
        index: &wgpu::Buffer,
        index_len: u32,
        out: &wgpu::Buffer,
        (rows, width, runs): (u32, u32, u32),
    ) -> Result<BoundGather> {
        check_shape(
            &[("rows", rows), ("width", width), ("source rows", source_rows)],
            &[("rows x width", rows, width), ("source", source_rows, width)],
        )?;
        let per_run = [
            ("out", rows as u64 * width as u64),
            ("source", source_rows as u64 * width as u64),
            ("index", index_len as u64),
        ];
        check_runs(runs, self.max_groups, &per_run)?;
        let r = runs as u64;
        let params =
            uniform(device, "gather params", &Params { rows, width, limit: source_rows, index_stride: index_len })?;
        let bind_group = bind_group(
            device,
            "gather",
            &self.layout,
            &params,
            &[
                Binding::new(1, "source", source, r * source_rows as u64 * width as u64 * F32),
                Binding::new(2, "index", index, r * index_len as u64 * 4),
                Binding::new(3, "out", out, r * rows as u64 * width as u64 * F32),
            ],
        )?;
        let (x, y) = thread_grid(rows as u64, WORKGROUP_SIZE, self.max_groups)?;
        let pipeline = match Lanes::for_dim(width) {
            Lanes::Vec4 => &self.vec4[which],
            Lanes::Scalar => &self.scalar[which],
        };
        Ok(BoundGather { pipeline: pipeline.clone(), bind_group, _params: params, grid: (x, y, runs) })
    }

    /// Minibatch gather: `batch` rows of `data` (`data_rows x width`) picked by `schedule` (which holds
    /// `schedule_len` row indices; each step reads `batch` of them from its slot's `row_offset`).
    pub fn bind_rows(
        &self,
        device: &wgpu::Device,
        data: &wgpu::Buffer,
        data_rows: u32,
        schedule: &wgpu::Buffer,
        schedule_len: u32,
        out: &wgpu::Buffer,
        batch: u32,
        width: u32,
    ) -> Result<BoundGather> {
        self.bind(device, ROWS, data, data_rows, schedule, schedule_len, out, (batch, width, 1))
    }

    /// [`Gather::bind_rows`] for `runs` runs stacked in the buffers, in one dispatch: run r gathers from its own
    /// `data_rows` rows of `data`, by its own `schedule_len` indices, into its own `batch` rows of `out`.
    #[allow(clippy::too_many_arguments)] // bind_rows' arguments and the run count
    pub fn bind_rows_runs(
        &self,
        device: &wgpu::Device,
        data: &wgpu::Buffer,
        data_rows: u32,
        schedule: &wgpu::Buffer,
        schedule_len: u32,
        out: &wgpu::Buffer,
        (batch, width): (u32, u32),
        runs: u32,
    ) -> Result<BoundGather> {
        self.bind(device, ROWS, data, data_rows, schedule, schedule_len, out, (batch, width, runs))
    }

    /// `q[i] = codebook[index[i]]` for `n` rows of width `m` from `k` codes.
    pub fn bind_codes(
        &self,
        device: &wgpu::Device,
        codebook: &wgpu::Buffer,
        index: &wgpu::Buffer,
        q: &wgpu::Buffer,
        n: u32,
        k: u32,
        m: u32,
    ) -> Result<BoundGather> {
        self.bind(device, CODES, codebook, k, index, n, q, (n, m, 1))
    }
}
