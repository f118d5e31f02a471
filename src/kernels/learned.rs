//! The learned transport estimator (`shaders/learned.wgsl`): `E(g) = M g` with M an m x m matrix per run, and the
//! gradient of M's fitting loss `L_M = 1/(B m) sum_i ||M g_i - s_i||^2`, where `s_i` is the soft-assignment
//! surrogate's exact backward of the same `g_i` ([`super::soft`], no noise). What M learns is thus the best linear
//! map, over the batches seen, from the gradient at the code to the gradient the relaxation at temperature tau
//! gives the encoding. The estimator kernel writes the commitment term of a `learned` run; `learned_backward` adds
//! `M g` to it. An optimizer (vqgrad's Adam in training) steps M on `dM`.

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, dispatch_runs, pipeline, shader,
};
use crate::error::Result;
use crate::gpu::grid;
use crate::shaders;

/// Buffers of [`Learned::bind_backward`], each with `STORAGE` usage.
#[derive(Clone, Copy)]
pub struct LearnedBuffers<'a> {
    /// dL/dq~: n x m f32.
    pub g: &'a wgpu::Buffer,
    /// M: m x m f32, row-major.
    pub transport: &'a wgpu::Buffer,
    /// dL/dz, n x m f32: `M g` is added to what it holds.
    pub grad_z: &'a wgpu::Buffer,
}

/// Buffers of [`Learned::bind_grad`], each with `STORAGE` usage.
#[derive(Clone, Copy)]
pub struct LearnedGradBuffers<'a> {
    /// dL/dq~: n x m f32.
    pub g: &'a wgpu::Buffer,
    /// The targets s (the relaxation's backward of g): n x m f32.
    pub s: &'a wgpu::Buffer,
    /// M: m x m f32.
    pub transport: &'a wgpu::Buffer,
    /// Written: dL_M/dM, m x m f32.
    pub grad: &'a wgpu::Buffer,
}

#[derive(encase::ShaderType)]
struct Params {
    n: u32,
    m: u32,
    p0: u32,
    p1: u32,
}

const WORKGROUP_SIZE: u32 = 64;
const BACKWARD: usize = 0;
const GRAD: usize = 1;

/// M = I for each of `runs` runs, stacked (the estimator starts as `ste`).
pub fn identity(m: u32, runs: u32) -> Vec<f32> {
    let m = m as usize;
    (0..runs as usize * m * m).map(|e| if (e % (m * m)).is_multiple_of(m + 1) { 1.0 } else { 0.0 }).collect()
}

/// The two pipelines. Make once per device.
pub struct Learned {
    layouts: [wgpu::BindGroupLayout; 2],
    pipelines: [wgpu::ComputePipeline; 2],
    max_groups: u32,
}

impl Learned {
    /// Creates the pipelines.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        use Slot::*;
        let module = shader(device, "learned.wgsl", shaders::LEARNED)?;
        let backward = bind_group_layout(
            device,
            "learned backward",
            &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite), (4, Read)],
        )?;
        let grad = bind_group_layout(
            device,
            "learned grad",
            &[(0, Uniform), (1, Read), (2, Read), (3, ReadWrite), (4, Read), (5, Read)],
        )?;
        Ok(Learned {
            pipelines: [
                pipeline(device, &backward, &module, "learned_backward", WORKGROUP_SIZE)?,
                pipeline(device, &grad, &module, "learned_grad", WORKGROUP_SIZE)?,
            ],
            layouts: [backward, grad],
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        })
    }

    /// `grad_z += M g` for the runs `enabled` marks (one entry per run stacked in the buffers: run r's rows at
    /// `r n`, its M at `r m m`).
    pub fn bind_backward(
        &self,
        device: &wgpu::Device,
        buffers: &LearnedBuffers<'_>,
        (n, m): (u32, u32),
        enabled: &[bool],
    ) -> Result<BoundLearned> {
        let r = enabled.len() as u64;
        let rows = r * n as u64 * m as u64 * F32;
        let bindings = vec![
            Binding::new(1, "g", buffers.g, rows),
            Binding::new(2, "transport", buffers.transport, r * (m * m) as u64 * F32),
            Binding::new(3, "grad_z", buffers.grad_z, rows),
        ];
        // One invocation per row.
        self.bind(device, BACKWARD, (n, m), enabled, bindings, n)
    }

    /// `dM = 2/(n m) sum_i (M g_i - s_i) g_i^T` per run; 0 for the runs `enabled` leaves out.
    pub fn bind_grad(
        &self,
        device: &wgpu::Device,
        buffers: &LearnedGradBuffers<'_>,
        (n, m): (u32, u32),
        enabled: &[bool],
    ) -> Result<BoundLearned> {
        let r = enabled.len() as u64;
        let (rows, matrices) = (r * n as u64 * m as u64 * F32, r * (m * m) as u64 * F32);
        let bindings = vec![
            Binding::new(1, "g", buffers.g, rows),
            Binding::new(2, "transport", buffers.transport, matrices),
            Binding::new(3, "transport grad", buffers.grad, matrices),
            Binding::new(5, "s", buffers.s, rows),
        ];
        // One invocation per element of M.
        self.bind(device, GRAD, (n, m), enabled, bindings, m * m)
    }

    /// Checks the shapes, makes the uniforms (binding 0 and the `enabled` flags at binding 4) and the bind group
    /// of pipeline `which`, with `invocations` invocations per run.
    fn bind(
        &self,
        device: &wgpu::Device,
        which: usize,
        (n, m): (u32, u32),
        enabled: &[bool],
        bindings: Vec<Binding<'_>>,
        invocations: u32,
    ) -> Result<BoundLearned> {
        let runs = u32::try_from(enabled.len()).unwrap_or(u32::MAX);
        check_shape(&[("n", n), ("m", m)], &[("n x m", n, m), ("m x m", m, m)])?;
        check_runs(runs, self.max_groups, &[("g", n as u64 * m as u64), ("transport", m as u64 * m as u64)])?;
        let params = super::uniform(device, "learned params", &Params { n, m, p0: 0, p1: 0 })?;
        let flags: Vec<u32> = enabled.iter().map(|&e| e as u32).collect();
        let flags = crate::gpu::upload(device, "learned enabled", &flags)?;
        let mut all = bindings;
        all.push(Binding::new(4, "enabled", &flags, runs as u64 * 4));
        let label = if which == BACKWARD { "learned backward" } else { "learned grad" };
        let bind_group = bind_group(device, label, &self.layouts[which], &params, &all)?;
        let (x, y) = grid(invocations.div_ceil(WORKGROUP_SIZE), self.max_groups)?;
        Ok(BoundLearned {
            pipeline: self.pipelines[which].clone(),
            bind_group,
            _uniforms: [params, flags],
            grid: (x, y, runs),
        })
    }
}

/// A learned-transport kernel bound to buffers.
pub struct BoundLearned {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _uniforms: [wgpu::Buffer; 2],
    grid: (u32, u32, u32),
}

impl BoundLearned {
    /// Records the dispatch into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch_runs(pass, &self.pipeline, &self.bind_group, self.grid);
    }
}
