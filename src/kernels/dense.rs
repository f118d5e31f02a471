//! Dense layers (`shaders/dense.wgsl`): the forward product with bias and optional ReLU, the input and weight
//! gradients, the bias gradient and the ReLU mask. Weights and biases live in one flat parameter buffer at the
//! offsets a [`Linear`] names; W is `out x in`, row-major, as PyTorch's `nn.Linear` stores it.

use super::{
    Binding, F32, Slot, bind_group, bind_group_layout, check_runs, check_shape, dispatch_runs, pipeline, shader,
    thread_grid, uniform,
};
pub use crate::contract::Linear;
use crate::error::{Error, Result};
use crate::shaders;

#[derive(encase::ShaderType, Default)]
struct Params {
    rows: u32,
    cols: u32,
    inner: u32,
    flags: u32,
    a_off: u32,
    a_row: u32,
    a_col: u32,
    b_off: u32,
    b_row: u32,
    b_col: u32,
    c_off: u32,
    c_row: u32,
    bias_off: u32,
    scale: f32,
    a_run: u32,
    b_run: u32,
    c_run: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const FLAG_BIAS: u32 = 1;
const FLAG_RELU: u32 = 2;
const FLAG_LOSS: u32 = 4;
const FLAG_ROW_SUMS: u32 = 8;
/// The edge of the output block one `matmul` invocation computes.
const BLOCK: u32 = 4;

/// Where the output layer's fused loss gradient goes: `grad = scale (y - target)`.
#[derive(Clone, Copy)]
pub struct LossTarget<'a> {
    /// The reconstruction target (the input batch), shaped as the layer's output.
    pub target: &'a wgpu::Buffer,
    /// The gradient at the output, shaped as the layer's output.
    pub grad: &'a wgpu::Buffer,
    /// 2 / (B d) for docs/PROTOCOL.md's mean squared error.
    pub scale: f32,
}

/// The dense pipelines. Make once per device.
#[derive(Clone)]
pub struct Dense {
    layout: wgpu::BindGroupLayout,
    matmul: wgpu::ComputePipeline,
    column_sums: wgpu::ComputePipeline,
    relu_mask: wgpu::ComputePipeline,
    dummy: wgpu::Buffer,
    dummy_out: wgpu::Buffer,
    workgroup_size: u32,
    max_groups: u32,
    /// Runs stacked in the buffers, and the floats between two runs' parameters (see [`Dense::for_runs`]).
    runs: u32,
    param_stride: u32,
}

/// One dense operation bound to buffers.
pub struct BoundDense {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    /// Workgroups in x and y, and one z layer per run.
    grid: (u32, u32, u32),
}

impl BoundDense {
    /// Records the dispatch into the caller's pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        dispatch_runs(pass, &self.pipeline, &self.bind_group, self.grid);
    }
}

/// A binding: its name, buffer, elements one run reads, and floats between two runs' data.
type Operand<'a> = (&'static str, &'a wgpu::Buffer, u64, u32);

/// The last element a strided access reads, plus one.
fn extent(off: u32, rows: u32, row_stride: u32, cols: u32, col_stride: u32) -> u64 {
    off as u64 + (rows as u64 - 1) * row_stride as u64 + (cols as u64 - 1) * col_stride as u64 + 1
}

impl Dense {
    /// Creates the pipelines, all with 64-wide workgroups.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        use Slot::*;
        let layout = bind_group_layout(
            device,
            "dense",
            &[(0, Uniform), (1, Read), (2, Read), (3, Read), (4, ReadWrite), (5, Read), (6, ReadWrite)],
        )?;
        let module = shader(device, "dense.wgsl", shaders::DENSE)?;
        let workgroup_size = 16;
        Ok(Dense {
            matmul: pipeline(device, &layout, &module, "matmul", workgroup_size)?,
            column_sums: pipeline(device, &layout, &module, "column_sums", workgroup_size)?,
            relu_mask: pipeline(device, &layout, &module, "relu_mask", workgroup_size)?,
            dummy: crate::gpu::zeroed::<f32>(device, "dense unused binding", 1)?,
            dummy_out: crate::gpu::zeroed::<f32>(device, "dense unused output", 1)?,
            layout,
            workgroup_size,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
            runs: 1,
            param_stride: 0,
        })
    }

    /// The same pipelines binding `runs` runs stacked in every buffer, computed in one dispatch: each run's
    /// activations follow the previous run's (x as `runs x batch x input`, and so on), and its parameters (and
    /// their gradients) sit `param_stride` floats after the previous run's. Each run gives the bits it gives alone.
    pub fn for_runs(&self, runs: u32, param_stride: u32) -> Result<Dense> {
        check_runs(runs, self.max_groups, &[])?;
        Ok(Dense { runs, param_stride, ..self.clone() })
    }

    #[allow(clippy::too_many_arguments)] // the private core of every bind: one tuple per binding
    fn bind(
        &self,
        device: &wgpu::Device,
        pipeline: &wgpu::ComputePipeline,
        mut p: Params,
        a: Operand<'_>,
        b: Operand<'_>,
        bias: Operand<'_>,
        c: Operand<'_>,
        loss: Option<&LossTarget<'_>>,
        grid: (u32, u32),
    ) -> Result<BoundDense> {
        // Each operand's elements over all runs: the last run's extent after the others' strides.
        let total = |(_, _, extent, stride): Operand<'_>| (self.runs as u64 - 1) * stride as u64 + extent;
        let (a_len, b_len, bias_len, c_len) = (total(a), total(b), total(bias), total(c));
        for (name, elements) in [(a.0, a_len), (b.0, b_len), (bias.0, bias_len), (c.0, c_len)] {
            if elements > u32::MAX as u64 {
                return Err(Error::Shape(format!("`{name}` needs {elements} elements, past a u32 index")));
            }
        }
        (p.a_run, p.b_run, p.c_run) = (a.3, b.3, c.3);
        let params = uniform(device, "dense params", &p)?;
        let bind_group = bind_group(
            device,
            "dense",
            &self.layout,
            &params,
            &[
                Binding::new(1, a.0, a.1, a_len * F32),
                Binding::new(2, b.0, b.1, b_len * F32),
                Binding::new(3, bias.0, bias.1, bias_len * F32),
                Binding::new(4, c.0, c.1, c_len * F32),
                match loss {
                    Some(l) => Binding::new(5, "target", l.target, c_len * F32),
                    None => Binding::new(5, "unused", &self.dummy, F32),
                },
                match loss {
                    Some(l) => Binding::new(6, "grad", l.grad, c_len * F32),
                    None => Binding::new(6, "unused", &self.dummy_out, F32),
                },
            ],
        )?;
        Ok(BoundDense { pipeline: pipeline.clone(), bind_group, _params: params, grid: (grid.0, grid.1, self.runs) })
    }

    /// One invocation per 4 x 4 block of the output.
    fn matmul_grid(&self, rows: u32, cols: u32) -> Result<(u32, u32)> {
        let blocks = rows.div_ceil(BLOCK) as u64 * cols.div_ceil(BLOCK) as u64;
        thread_grid(blocks, self.workgroup_size, self.max_groups)
    }

    /// `y = act(x W^T + b)` for `batch` rows: x is `batch x input`, y is `batch x output`.
    pub fn bind_forward(
        &self,
        device: &wgpu::Device,
        layer: Linear,
        x: &wgpu::Buffer,
        params: &wgpu::Buffer,
        y: &wgpu::Buffer,
        batch: u32,
        relu: bool,
    ) -> Result<BoundDense> {
        self.forward(device, layer, x, params, y, batch, if relu { FLAG_RELU } else { 0 }, None)
    }

    /// The output layer's `y = x W^T + b` with the reconstruction-loss gradient fused in: also
    /// `loss.grad = loss.scale (y - loss.target)` (both `batch x output`), in the same pass.
    pub fn bind_forward_with_loss(
        &self,
        device: &wgpu::Device,
        layer: Linear,
        x: &wgpu::Buffer,
        params: &wgpu::Buffer,
        y: &wgpu::Buffer,
        batch: u32,
        loss: &LossTarget<'_>,
    ) -> Result<BoundDense> {
        if !loss.scale.is_finite() {
            return Err(Error::Input(format!("the loss scale must be finite, got {}", loss.scale)));
        }
        self.forward(device, layer, x, params, y, batch, FLAG_LOSS, Some(loss))
    }

    #[allow(clippy::too_many_arguments)] // the private core of bind_forward and bind_forward_with_loss
    fn forward(
        &self,
        device: &wgpu::Device,
        layer: Linear,
        x: &wgpu::Buffer,
        params: &wgpu::Buffer,
        y: &wgpu::Buffer,
        batch: u32,
        flags: u32,
        loss: Option<&LossTarget<'_>>,
    ) -> Result<BoundDense> {
        let Linear { input, output, w_off, b_off, .. } = layer;
        check_shape(&[("batch", batch), ("input", input), ("output", output)], &[("batch x input", batch, input)])?;
        let p = Params {
            rows: batch,
            cols: output,
            inner: input,
            flags: FLAG_BIAS | flags,
            a_row: input,
            a_col: 1,
            b_off: w_off,
            b_row: 1,
            b_col: input,
            c_row: output,
            bias_off: b_off,
            scale: loss.map_or(0.0, |l| l.scale),
            ..Default::default()
        };
        let w_end = extent(w_off, output, input, input, 1).max(b_off as u64 + output as u64);
        let grid = self.matmul_grid(batch, output)?;
        self.bind(
            device,
            &self.matmul,
            p,
            ("x", x, batch as u64 * input as u64, batch * input),
            ("params", params, w_end, self.param_stride),
            ("params", params, w_end, self.param_stride),
            ("y", y, batch as u64 * output as u64, batch * output),
            loss,
            grid,
        )
    }

    /// `dx = dy W`: dy is `batch x output`, dx is `batch x input`.
    pub fn bind_input_grad(
        &self,
        device: &wgpu::Device,
        layer: Linear,
        dy: &wgpu::Buffer,
        params: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        batch: u32,
    ) -> Result<BoundDense> {
        let Linear { input, output, w_off, .. } = layer;
        check_shape(&[("batch", batch), ("input", input), ("output", output)], &[("batch x output", batch, output)])?;
        let p = Params {
            rows: batch,
            cols: input,
            inner: output,
            a_row: output,
            a_col: 1,
            b_off: w_off,
            b_row: input,
            b_col: 1,
            c_row: input,
            ..Default::default()
        };
        let grid = self.matmul_grid(batch, input)?;
        self.bind(
            device,
            &self.matmul,
            p,
            ("dy", dy, batch as u64 * output as u64, batch * output),
            ("params", params, extent(w_off, output, input, input, 1), self.param_stride),
            ("unused", &self.dummy, 1, 0),
            ("dx", dx, batch as u64 * input as u64, batch * input),
            None,
            grid,
        )
    }

    /// `dW = dy^T x` into `grads` at the layer's weight offset: dy is `batch x output`, x is `batch x input`.
    pub fn bind_weight_grad(
        &self,
        device: &wgpu::Device,
        layer: Linear,
        dy: &wgpu::Buffer,
        x: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        batch: u32,
    ) -> Result<BoundDense> {
        self.weight_grad(device, layer, dy, x, grads, batch, false)
    }

    /// [`Dense::bind_weight_grad`] and [`Dense::bind_bias_grad`] in one dispatch: the invocations of the first
    /// column block also sum their rows of `dy^T` (in the same order as `column_sums`: the same bits).
    pub fn bind_weight_and_bias_grad(
        &self,
        device: &wgpu::Device,
        layer: Linear,
        dy: &wgpu::Buffer,
        x: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        batch: u32,
    ) -> Result<BoundDense> {
        self.weight_grad(device, layer, dy, x, grads, batch, true)
    }

    #[allow(clippy::too_many_arguments)] // the private core of the two weight-gradient binds
    fn weight_grad(
        &self,
        device: &wgpu::Device,
        layer: Linear,
        dy: &wgpu::Buffer,
        x: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        batch: u32,
        with_bias: bool,
    ) -> Result<BoundDense> {
        let Linear { input, output, w_off, b_off, .. } = layer;
        check_shape(&[("batch", batch), ("input", input), ("output", output)], &[("output x input", output, input)])?;
        let p = Params {
            rows: output,
            cols: input,
            inner: batch,
            flags: if with_bias { FLAG_ROW_SUMS } else { 0 },
            a_row: 1,
            a_col: output,
            b_row: input,
            b_col: 1,
            c_off: w_off,
            c_row: input,
            bias_off: b_off,
            ..Default::default()
        };
        let mut grads_end = extent(w_off, output, input, input, 1);
        if with_bias {
            grads_end = grads_end.max(b_off as u64 + output as u64);
        }
        let grid = self.matmul_grid(output, input)?;
        self.bind(
            device,
            &self.matmul,
            p,
            ("dy", dy, batch as u64 * output as u64, batch * output),
            ("x", x, batch as u64 * input as u64, batch * input),
            ("unused", &self.dummy, 1, 0),
            ("grads", grads, grads_end, self.param_stride),
            None,
            grid,
        )
    }

    /// `db = sum over rows of dy`, written into `grads` at the layer's `b_off`.
    pub fn bind_bias_grad(
        &self,
        device: &wgpu::Device,
        layer: Linear,
        dy: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        batch: u32,
    ) -> Result<BoundDense> {
        let Linear { output, b_off, .. } = layer;
        check_shape(&[("batch", batch), ("output", output)], &[("batch x output", batch, output)])?;
        let p = Params { rows: batch, cols: output, a_row: output, a_col: 1, c_off: b_off, ..Default::default() };
        let grid = thread_grid(output as u64, self.workgroup_size, self.max_groups)?;
        self.bind(
            device,
            &self.column_sums,
            p,
            ("dy", dy, batch as u64 * output as u64, batch * output),
            ("unused", &self.dummy, 1, 0),
            ("unused", &self.dummy, 1, 0),
            ("grads", grads, b_off as u64 + output as u64, self.param_stride),
            None,
            grid,
        )
    }

    /// ReLU backward in place: `grad[e] = 0` where `output[e] <= 0`, for `len` elements.
    pub fn bind_relu_mask(
        &self,
        device: &wgpu::Device,
        grad: &wgpu::Buffer,
        output: &wgpu::Buffer,
        len: u32,
    ) -> Result<BoundDense> {
        check_shape(&[("len", len)], &[])?;
        let p = Params { rows: len, ..Default::default() };
        let grid = thread_grid(len as u64, self.workgroup_size, self.max_groups)?;
        self.bind(
            device,
            &self.relu_mask,
            p,
            ("unused", &self.dummy, 1, 0),
            ("relu output", output, len as u64, len),
            ("unused", &self.dummy, 1, 0),
            ("grad", grad, len as u64, len),
            None,
            grid,
        )
    }
}
