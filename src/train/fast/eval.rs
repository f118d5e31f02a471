//! The fast CPU engine's evaluation (docs/PROTOCOL.md §4): the eval set in blocks of rows on every core, each
//! block encoded, quantized through every level and decoded on buffers of its own; the statistics from the
//! gathered codes as the other engines compute them.

use super::{FastTrainer, dense, quantize};
use crate::Estimator;
use crate::model::{BetaSchedule, EncoderKind};
use crate::reference::Assignment;
use crate::train::Metrics;
use rayon::prelude::*;

/// Eval rows per parallel block. Fixed, so that sums (added block by block, in order) do not depend on the
/// number of threads.
const BLOCK: usize = 512;

/// One block's encodings, each level's codes and distances, and its summed squared reconstruction error.
struct Block {
    z: Vec<f32>,
    index: Vec<Vec<u32>>,
    dist: Vec<Vec<f32>>,
    sq: f64,
}

impl FastTrainer {
    fn eval_block(&self, x: &[f32]) -> Block {
        let (d, m) = (self.data.dim as usize, self.config.latent as usize);
        let rows = x.len() / d;
        let outs = |layers: &[crate::contract::Linear]| -> Vec<Vec<f32>> {
            layers.iter().map(|l| vec![0.0; rows * l.output as usize]).collect()
        };
        let (mut enc, mut dec) = (outs(&self.layout.encoder), outs(&self.layout.decoder));
        dense::forward_layers(&self.params, &self.layout.encoder, x, rows, &mut enc);
        let mut z = enc.pop().unwrap_or_default();
        if self.map != crate::model::LatentMap::None {
            let raw = z.clone();
            super::latent::forward(&self.map, &raw, &mut z, m);
        }
        let (mut index, mut dist) = (Vec::new(), Vec::new());
        let mut r = z.clone();
        let mut q_total = vec![0.0f32; rows * m];
        for codebook in &self.codebooks {
            let (mut a, mut e) = (vec![0u32; rows], vec![0.0f32; rows]);
            quantize::nearest_direct(&r, codebook, m, &mut a, &mut e);
            for (i, &k) in a.iter().enumerate() {
                let code = &codebook[k as usize * m..(k as usize + 1) * m];
                for j in 0..m {
                    q_total[i * m + j] += code[j];
                    r[i * m + j] -= code[j];
                }
            }
            index.push(a);
            dist.push(e);
        }
        dense::forward_layers(&self.params, &self.layout.decoder, &q_total, rows, &mut dec);
        let xhat = &dec[dec.len() - 1];
        let sq = xhat.iter().zip(x).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        Block { z, index, dist, sq }
    }

    /// The metrics on the eval set now.
    pub fn evaluate(&self) -> Metrics {
        let (d, m, k) = (self.data.dim as usize, self.config.latent as usize, self.config.codes as usize);
        let n = self.data.eval_rows();
        let blocks: Vec<Block> = self.data.eval.par_chunks(BLOCK * d).map(|x| self.eval_block(x)).collect();
        let recon_mse = blocks.iter().map(|b| b.sq).sum::<f64>() / (n * d) as f64;
        let assignments: Vec<Assignment> = (0..self.codebooks.len())
            .map(|l| Assignment {
                index: blocks.iter().flat_map(|b| b.index[l].iter().copied()).collect(),
                distance: blocks.iter().flat_map(|b| b.dist[l].iter().map(|&v| v as f64)).collect(),
            })
            .collect();
        let labels = self.data.eval_labels.as_deref().map(|l| (l, self.data.classes as usize));
        let (s, levels) = crate::train::code_metrics(&assignments, k, m, labels);
        let (loss, batch_usage) = self.last.unwrap_or((f64::NAN, f64::NAN));
        let subspace_err = match (&self.data.basis, self.config.encoder) {
            // One decoder layer: W_d is the whole decoder (not with a lookup's projection).
            (Some(basis), EncoderKind::Linear) if self.layout.decoder.len() == 1 => {
                let w = self.layout.decoder[0];
                let wd = crate::reference::to_f64(&self.params[w.w_off as usize..w.b_off as usize]);
                Some(crate::train::subspace_err(&wd, d, m, basis, self.data.rank as usize))
            }
            _ => None,
        };
        let lloyd_dist = (self.config.lloyd_iters > 0).then(|| {
            let z: Vec<f32> = blocks.iter().flat_map(|b| b.z.iter().copied()).collect();
            let codebook = &self.codebooks[0];
            let fixed = lloyd(&z, codebook, m, self.config.lloyd_iters as usize);
            let sq: f64 = fixed.iter().zip(codebook).map(|(&a, &b)| (a - b as f64).powi(2)).sum();
            sq / (k * m) as f64
        });
        Metrics {
            step: self.step as u32,
            loss,
            dead_codes: s.dead_codes,
            usage: s.usage,
            entropy: s.entropy,
            perplexity: s.perplexity,
            recon_mse,
            quant_err: s.quant_err,
            purity: s.purity,
            subspace_err,
            batch_usage,
            beta: (self.config.beta_schedule == BetaSchedule::Adaptive).then_some(self.beta.0),
            transport: (self.config.estimator == Estimator::Learned).then(|| crate::reference::to_f64(&self.transport)),
            levels,
            lloyd_dist,
        }
    }
}

/// Lloyd's algorithm from `centres` (k x m) on the rows of `z`: the search in f32 on every core, the means in
/// f64; centres no row picks stay put. Returns the centres in f64.
pub fn lloyd(z: &[f32], centres: &[f32], m: usize, iters: usize) -> Vec<f64> {
    let (n, k) = (z.len() / m, centres.len() / m);
    let mut now = centres.to_vec();
    let mut wide: Vec<f64> = crate::reference::to_f64(centres);
    let (mut index, mut dist) = (vec![0u32; n], vec![0.0f32; n]);
    for _ in 0..iters {
        quantize::nearest(z, &now, m, &mut index, &mut dist);
        let mut sums = vec![0.0f64; k * m];
        let mut counts = vec![0usize; k];
        for (zi, &c) in z.chunks_exact(m).zip(&index) {
            counts[c as usize] += 1;
            sums[c as usize * m..(c as usize + 1) * m].iter_mut().zip(zi).for_each(|(s, &v)| *s += v as f64);
        }
        for c in (0..k).filter(|&c| counts[c] > 0) {
            for j in 0..m {
                wide[c * m + j] = sums[c * m + j] / counts[c] as f64;
                now[c * m + j] = wide[c * m + j] as f32;
            }
        }
    }
    wide
}
