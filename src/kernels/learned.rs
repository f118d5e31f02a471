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
        let runs = self.check(n, m, enabled)?;
        let (r, rows) = (runs as u64, runs as u64 * n as u64 * m as u64 * F32);
        let (params, flags) = self.uniforms(device, n, m, enabled)?;
        let bind_group = bind_group(
            device,
            "learned backward",
            &self.layouts[0],
            &params,
            &[
                Binding::new(1, "g", buffers.g, rows),
                Binding::new(2, "transport", buffers.transport, r * (m * m) as u64 * F32),
                Binding::new(3, "grad_z", buffers.grad_z, rows),
                Binding::new(4, "enabled", &flags, r * 4),
            ],
        )?;
        let (x, y) = grid(n.div_ceil(WORKGROUP_SIZE), self.max_groups)?;
        Ok(BoundLearned {
            pipeline: self.pipelines[0].clone(),
            bind_group,
            _uniforms: [params, flags],
            grid: (x, y, runs),
        })
    }

    /// `dM = 2/(n m) sum_i (M g_i - s_i) g_i^T` per run; 0 for the runs `enabled` leaves out.
    pub fn bind_grad(
        &self,
        device: &wgpu::Device,
        buffers: &LearnedGradBuffers<'_>,
        (n, m): (u32, u32),
        enabled: &[bool],
    ) -> Result<BoundLearned> {
        let runs = self.check(n, m, enabled)?;
        let (r, rows) = (runs as u64, runs as u64 * n as u64 * m as u64 * F32);
        let (params, flags) = self.uniforms(device, n, m, enabled)?;
        let matrices = r * (m * m) as u64 * F32;
        let bind_group = bind_group(
            device,
            "learned grad",
            &self.layouts[1],
            &params,
            &[
                Binding::new(1, "g", buffers.g, rows),
                Binding::new(2, "transport", buffers.transport, matrices),
                Binding::new(3, "transport grad", buffers.grad, matrices),
                Binding::new(4, "enabled", &flags, r * 4),
                Binding::new(5, "s", buffers.s, rows),
            ],
        )?;
        let (x, y) = grid((m * m).div_ceil(WORKGROUP_SIZE), self.max_groups)?;
        Ok(BoundLearned {
            pipeline: self.pipelines[1].clone(),
            bind_group,
            _uniforms: [params, flags],
            grid: (x, y, runs),
        })
    }

    fn check(&self, n: u32, m: u32, enabled: &[bool]) -> Result<u32> {
        let runs = u32::try_from(enabled.len()).unwrap_or(u32::MAX);
        check_shape(&[("n", n), ("m", m)], &[("n x m", n, m), ("m x m", m, m)])?;
        check_runs(runs, self.max_groups, &[("g", n as u64 * m as u64), ("transport", m as u64 * m as u64)])?;
        Ok(runs)
    }

    fn uniforms(
        &self,
        device: &wgpu::Device,
        n: u32,
        m: u32,
        enabled: &[bool],
    ) -> Result<(wgpu::Buffer, wgpu::Buffer)> {
        let params = super::uniform(device, "learned params", &Params { n, m, p0: 0, p1: 0 })?;
        let flags: Vec<u32> = enabled.iter().map(|&e| e as u32).collect();
        Ok((params, crate::gpu::upload(device, "learned enabled", &flags)?))
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
