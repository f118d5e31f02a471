//! Chains of dense layers (an encoder or decoder, ReLU after its hidden layers) bound forward and backward, for the step
//! and the evaluator.

use crate::contract::Linear;
use crate::error::Result;
use crate::kernels::dense::{BoundDense, Dense, LossTarget};

/// Forward through `layers` (ReLU after those that have one), from `input` into `outs`; with `loss`, the last layer
/// also writes the loss gradient.
#[allow(clippy::too_many_arguments)] // one call per chain; a struct would only rename the arguments
pub(super) fn forward_chain(
    dense: &Dense,
    device: &wgpu::Device,
    layers: &[Linear],
    input: &wgpu::Buffer,
    outs: &[&wgpu::Buffer],
    params: &wgpu::Buffer,
    rows: u32,
    loss: Option<LossTarget<'_>>,
) -> Result<Vec<BoundDense>> {
    let mut out = Vec::new();
    for (i, &layer) in layers.iter().enumerate() {
        let x = if i == 0 { input } else { outs[i - 1] };
        let last = i + 1 == layers.len();
        out.push(match (&loss, last) {
            (Some(l), true) => dense.bind_forward_with_loss(device, layer, x, params, outs[i], rows, l)?,
            _ => dense.bind_forward(device, layer, x, params, outs[i], rows, layer.relu)?,
        });
    }
    Ok(out)
}

/// Backward through `layers` from the gradient `dy_last` at the last output: parameter gradients into `grads`;
/// the gradient at each hidden input into `hidden_grads[i - 1]` (then ReLU-masked), and at the chain's input into
/// `input_grad` when given.
#[allow(clippy::too_many_arguments)] // one call per chain; a struct would only rename the arguments
pub(super) fn backward_chain(
    dense: &Dense,
    device: &wgpu::Device,
    layers: &[Linear],
    input: &wgpu::Buffer,
    outs: &[&wgpu::Buffer],
    dy_last: &wgpu::Buffer,
    hidden_grads: &[&wgpu::Buffer],
    input_grad: Option<&wgpu::Buffer>,
    params: &wgpu::Buffer,
    grads: &wgpu::Buffer,
    rows: u32,
) -> Result<Vec<BoundDense>> {
    let mut out = Vec::new();
    for i in (0..layers.len()).rev() {
        let layer = layers[i];
        let x = if i == 0 { input } else { outs[i - 1] };
        let dy = if i + 1 == layers.len() { dy_last } else { hidden_grads[i] };
        out.push(dense.bind_weight_and_bias_grad(device, layer, dy, x, grads, rows)?);
        if i > 0 {
            let dx = hidden_grads[i - 1];
            out.push(dense.bind_input_grad(device, layer, dy, params, dx, rows)?);
            if layers[i - 1].relu {
                out.push(dense.bind_relu_mask(device, dx, outs[i - 1], rows * layer.input)?);
            }
        } else if let Some(dx) = input_grad {
            out.push(dense.bind_input_grad(device, layer, dy, params, dx, rows)?);
        }
    }
    Ok(out)
}
