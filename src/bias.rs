//! The bias of each estimator (the seed's future direction "bias analysis"): on a trained model and a batch of
//! samples, each estimator's gradient at the encodings against the exact gradient of the soft-assignment
//! surrogate: the decoder fed `q~(z) = sum_k softmax(-||z - c||^2 / tau)_k c_k` instead of the nearest code. As
//! tau -> 0 the surrogate's loss tends to the model's; its gradient is what a straight-through estimator would
//! ideally approximate. Only the reconstruction loss is differentiated: the commitment term's gradient is the same
//! `2 beta / (B m) (z - q)` for every estimator and would only dilute the comparison.
//!
//! Per estimator and tau, over the whole batch's gradient `dL/dZ` (B x m, flattened): the cosine with the exact
//! gradient, the relative error `||E - S|| / ||S||`, and the mean per-row cosine (rows where both are non-zero).
//! The Gumbel estimators are stochastic: their gradient is averaged over `draws` noise draws first.
//!
//! The relaxed code, the hard samples and every estimator's backward run on the GPU kernels (`soft.wgsl`,
//! `estimator.wgsl`) when a [`Gpu`] is given, else on the f64 reference; the decoder's gradient at each code is the
//! f64 reference's (one small product per tau).

use crate::contract::seed_mix;
use crate::error::Result;
use crate::estimator::Estimator;
use crate::gpu::Gpu;
use crate::kernels::estimator::{EstimatorBackward, EstimatorBuffers, EstimatorSettings, EstimatorShape};
use crate::kernels::soft::{Soft, SoftBackwardBuffers, SoftForwardBuffers, SoftRun, SoftSampleBuffers, SoftShape};
use crate::kernels::step::{StepConstants, StepUniform};
use crate::reference::soft::{self, Noise};
use crate::reference::train::{CpuModel, backward_layers, forward_layers};
use crate::reference::{assign_f64, estimator_row, to_f32, to_f64};

/// One estimator at one temperature.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BiasRow {
    /// The estimator's name.
    pub estimator: String,
    /// The surrogate's temperature.
    pub tau: f64,
    /// Cosine between the estimator's and the exact batch gradient.
    pub cosine: f64,
    /// `||E - S|| / ||S||`.
    pub rel_err: f64,
    /// `||E|| / ||S||`.
    pub norm_ratio: f64,
    /// The mean over rows of the per-row cosine, over rows where both gradients are non-zero.
    pub row_cosine: f64,
    /// Rows where the exact gradient is exactly zero (every other code's weight underflowed).
    pub zero_rows: usize,
}

/// Where the kernels run.
enum Backend<'g> {
    Cpu,
    Gpu(&'g Gpu, Box<(Soft, EstimatorBackward, StepUniform)>),
}

impl Backend<'_> {
    fn step(&self, tau: f64, t: u32) -> Result<()> {
        if let Backend::Gpu(gpu, k) = self {
            let mut constants = StepConstants::default().with_tau(tau as f32);
            constants.step = t;
            k.2.write(&gpu.queue, &[constants])?;
        }
        Ok(())
    }

    /// The relaxed code of every row (no noise).
    fn relaxed(&self, z: &[f64], codebook: &[f64], m: usize, tau: f64) -> Result<Vec<f64>> {
        let rows = z.len() / m;
        match self {
            Backend::Cpu => {
                Ok((0..rows).flat_map(|i| soft::forward_row(&z[i * m..(i + 1) * m], codebook, tau, None)).collect())
            }
            Backend::Gpu(gpu, k) => {
                self.step(tau, 1)?;
                let (zb, cb) = (gpu.upload("z", &to_f32(z))?, gpu.upload("codebook", &to_f32(codebook))?);
                let q = gpu.zeroed::<f32>("relaxed q", z.len())?;
                let bound = k.0.bind_forward(
                    &gpu.device,
                    &SoftForwardBuffers { z: &zb, codebook: &cb, q: &q },
                    shape(rows, codebook, m),
                    &[SoftRun::exact()],
                )?;
                run(gpu, |pass| bound.encode(pass, &k.2, 0));
                Ok(to_f64(&gpu.read::<f32>(&q)?))
            }
        }
    }

    /// The Gumbel hard sample of every row at step `t`.
    fn sample(&self, z: &[f64], codebook: &[f64], m: usize, tau: f64, seed: u32, t: u32) -> Result<Vec<u32>> {
        let rows = z.len() / m;
        match self {
            Backend::Cpu => Ok((0..rows)
                .map(|i| {
                    let noise = Noise { seed, step: t, row: i as u32 };
                    soft::sample_row(&z[i * m..(i + 1) * m], codebook, tau, Some(noise))
                })
                .collect()),
            Backend::Gpu(gpu, k) => {
                self.step(tau, t)?;
                let (zb, cb) = (gpu.upload("z", &to_f32(z))?, gpu.upload("codebook", &to_f32(codebook))?);
                let index = gpu.zeroed::<u32>("index", rows)?;
                let (dist, q) = (gpu.zeroed::<f32>("distance", rows)?, gpu.zeroed::<f32>("q", z.len())?);
                let run_settings = SoftRun { noise_seed: Some(seed), ..SoftRun::exact() };
                let bound = k.0.bind_sample(
                    &gpu.device,
                    &SoftSampleBuffers { z: &zb, codebook: &cb, index: &index, distance: &dist, q: &q },
                    shape(rows, codebook, m),
                    &[run_settings],
                )?;
                run(gpu, |pass| bound.encode(pass, &k.2, 0));
                gpu.read::<u32>(&index)
            }
        }
    }

    /// `J^T g` of the relaxation at every row, with noise from `(seed, t)` when given.
    fn soft_grad(
        &self,
        (g, z, index): (&[f64], &[f64], &[u32]),
        codebook: &[f64],
        m: usize,
        tau: f64,
        noise: Option<(u32, u32)>,
    ) -> Result<Vec<f64>> {
        let rows = z.len() / m;
        match self {
            Backend::Cpu => Ok((0..rows)
                .flat_map(|i| {
                    let n = noise.map(|(seed, step)| Noise { seed, step, row: i as u32 });
                    soft::backward_row(&g[i * m..(i + 1) * m], &z[i * m..(i + 1) * m], codebook, tau, n)
                })
                .collect()),
            Backend::Gpu(gpu, k) => {
                self.step(tau, noise.map_or(1, |n| n.1))?;
                let (zb, cb) = (gpu.upload("z", &to_f32(z))?, gpu.upload("codebook", &to_f32(codebook))?);
                let (gb, ib) = (gpu.upload("g", &to_f32(g))?, gpu.upload("index", index)?);
                let out = gpu.zeroed::<f32>("grad_z", z.len())?;
                let run_settings = SoftRun { noise_seed: noise.map(|n| n.0), ..SoftRun::exact() };
                let bound = k.0.bind_backward(
                    &gpu.device,
                    &SoftBackwardBuffers { z: &zb, codebook: &cb, g: &gb, index: &ib, grad_z: &out },
                    shape(rows, codebook, m),
                    &[run_settings],
                )?;
                run(gpu, |pass| bound.encode(pass, &k.2, 0));
                Ok(to_f64(&gpu.read::<f32>(&out)?))
            }
        }
    }

    /// A row estimator's `E(g, z, c_index)` at every row.
    fn row_grad(
        &self,
        estimator: Estimator,
        (g, z, index): (&[f64], &[f64], &[u32]),
        codebook: &[f64],
        m: usize,
    ) -> Result<Vec<f64>> {
        let rows = z.len() / m;
        match self {
            Backend::Cpu => Ok((0..rows)
                .flat_map(|i| {
                    let (a, r) = (index[i] as usize, i * m..(i + 1) * m);
                    estimator_row(estimator, &g[r.clone()], &z[r], &codebook[a * m..(a + 1) * m])
                })
                .collect()),
            Backend::Gpu(gpu, k) => {
                let (zb, cb) = (gpu.upload("z", &to_f32(z))?, gpu.upload("codebook", &to_f32(codebook))?);
                let (gb, ib) = (gpu.upload("g", &to_f32(g))?, gpu.upload("index", index)?);
                let out = gpu.zeroed::<f32>("grad_z", z.len())?;
                let s = shape(rows, codebook, m);
                let bound = k.1.bind(
                    &gpu.device,
                    &EstimatorBuffers { g: &gb, z: &zb, index: &ib, codebook: &cb, grad_z: &out },
                    EstimatorShape { n: s.n, k: s.k, m: s.m },
                    EstimatorSettings { estimator, beta: 0.0, batch: 1 },
                )?;
                run(gpu, |pass| bound.encode(pass));
                Ok(to_f64(&gpu.read::<f32>(&out)?))
            }
        }
    }
}

fn shape(rows: usize, codebook: &[f64], m: usize) -> SoftShape {
    SoftShape { n: rows as u32, k: (codebook.len() / m) as u32, m: m as u32 }
}

fn run(gpu: &Gpu, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("bias") });
    {
        let mut pass =
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("bias"), timestamp_writes: None });
        record(&mut pass);
    }
    gpu.queue.submit([encoder.finish()]);
}

/// `dL_rec/dq` at the decoder input `q` for the batch `x` (`rows` rows), `L_rec = 1/(B d) sum ||x - x^||^2`.
pub fn decoder_grad(model: &CpuModel, x: &[f64], q: &[f64], rows: usize) -> Vec<f64> {
    let d = x.len() / rows;
    let outs = forward_layers(&model.params, &model.layout.decoder, q, rows);
    let xhat = outs.last().cloned().unwrap_or_default();
    let dxhat: Vec<f64> = xhat.iter().zip(x).map(|(a, b)| 2.0 / (rows * d) as f64 * (a - b)).collect();
    let mut grads = vec![0.0; model.params.len()];
    backward_layers(&model.params, &model.layout.decoder, q, &outs, dxhat, rows, &mut grads)
}

/// The comparison of `e` with the exact gradient `s` (both `rows x m`).
fn compare(estimator: Estimator, tau: f64, e: &[f64], s: &[f64], m: usize) -> BiasRow {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (es, ee, ss) = (dot(e, s), dot(e, e), dot(s, s));
    let diff: Vec<f64> = e.iter().zip(s).map(|(a, b)| a - b).collect();
    let (mut cos_sum, mut counted, mut zero_rows) = (0.0, 0usize, 0usize);
    for (er, sr) in e.chunks(m).zip(s.chunks(m)) {
        let (n_e, n_s) = (dot(er, er), dot(sr, sr));
        if n_s == 0.0 {
            zero_rows += 1;
        } else if n_e > 0.0 {
            cos_sum += dot(er, sr) / (n_e * n_s).sqrt();
            counted += 1;
        }
    }
    BiasRow {
        estimator: estimator.name().to_string(),
        tau,
        cosine: es / (ee * ss).sqrt(),
        rel_err: dot(&diff, &diff).sqrt() / ss.sqrt(),
        norm_ratio: (ee / ss).sqrt(),
        row_cosine: if counted > 0 { cos_sum / counted as f64 } else { f64::NAN },
        zero_rows,
    }
}

/// Every estimator against the surrogate's exact gradient at each of `taus`, on the batch `x` (`rows x d`) through
/// `model`. `seed` seeds the Gumbel draws; on the GPU engine the kernels run on its device (else the f64 reference does).
pub fn measure(
    model: &CpuModel,
    x: &[f64],
    rows: usize,
    taus: &[f64],
    draws: u32,
    seed: u64,
    engine: &crate::train::Engine,
) -> Result<Vec<BiasRow>> {
    let backend = match engine.gpu() {
        Some(gpu) => {
            let step = StepUniform::new(&gpu.device, 1)?;
            let kernels = (Soft::new(&gpu.device, &step)?, EstimatorBackward::new(&gpu.device)?, step);
            Backend::Gpu(gpu, Box::new(kernels))
        }
        None => Backend::Cpu,
    };
    let m = model.latent;
    let codebook = &model.codebooks[0];
    let z = model.encode(x, rows);
    let index = assign_f64(&z, codebook, m).index;
    let code_rows = |index: &[u32]| -> Vec<f64> {
        index.iter().flat_map(|&a| codebook[a as usize * m..(a as usize + 1) * m].to_vec()).collect()
    };
    let g_hard = decoder_grad(model, x, &code_rows(&index), rows);
    let row_grads: Vec<(Estimator, Vec<f64>)> = Estimator::ROW
        .iter()
        .map(|&e| Ok((e, backend.row_grad(e, (&g_hard, &z, &index), codebook, m)?)))
        .collect::<Result<_>>()?;
    let seed = seed_mix(seed);
    let mut out = Vec::new();
    for &tau in taus {
        let relaxed = backend.relaxed(&z, codebook, m, tau)?;
        let g_soft = decoder_grad(model, x, &relaxed, rows);
        let exact = backend.soft_grad((&g_soft, &z, &index), codebook, m, tau, None)?;
        for (e, grad) in &row_grads {
            out.push(compare(*e, tau, grad, &exact, m));
        }
        // The Gumbel estimators: the mean over draws of the gradient at each draw's sample.
        let (mut gumbel, mut gumbel_rt) = (vec![0.0; z.len()], vec![0.0; z.len()]);
        for t in 1..=draws.max(1) {
            let sampled = backend.sample(&z, codebook, m, tau, seed, t)?;
            let g = decoder_grad(model, x, &code_rows(&sampled), rows);
            let soft = backend.soft_grad((&g, &z, &sampled), codebook, m, tau, Some((seed, t)))?;
            let rt = backend.row_grad(Estimator::GumbelRotationTrick, (&g, &z, &sampled), codebook, m)?;
            for j in 0..z.len() {
                gumbel[j] += soft[j] / draws.max(1) as f64;
                gumbel_rt[j] += rt[j] / draws.max(1) as f64;
            }
        }
        out.push(compare(Estimator::Gumbel, tau, &gumbel, &exact, m));
        out.push(compare(Estimator::GumbelRotationTrick, tau, &gumbel_rt, &exact, m));
    }
    if let Some(gpu) = engine.gpu() {
        gpu.check()?;
    }
    Ok(out)
}
