//! One training step of the fast CPU engine (docs/PROTOCOL.md §2): forward, backward and updates, each on the
//! run's [`Work`] buffers.

use super::quantize::{self, Noise};
use super::{FastTrainer, Level, LevelUpdate, dense};
use crate::Estimator;
use crate::contract::seed_mix;
use crate::model::{BetaSchedule, CodebookMode, LatentMap, Sampling};

/// How level 0's codes are drawn at a step, when they are: the temperature, the run's mixed seed, the step, and
/// whether by stochastic sampling's distance scores (else the Gumbel estimators' squared-distance ones).
type Draw = Option<(f32, u32, u32, bool)>;

impl FastTrainer {
    /// The batch's forward pass and losses; returns this step's beta (the adaptive one moves with the codes).
    pub(super) fn forward(&mut self, t: u64) -> f64 {
        let c = &self.config;
        let (b, d, m, k) = (c.batch as usize, self.data.dim as usize, c.latent as usize, c.codes as usize);
        let w = &mut self.work;
        for (row, &r) in w.x.chunks_exact_mut(d).zip(self.schedule.next_batch()) {
            row.copy_from_slice(&self.data.train[r as usize * d..(r as usize + 1) * d]);
        }
        dense::forward_layers(&self.params, &self.layout.encoder, &w.x, b, &mut w.enc);
        let stochastic = c.sampling == Sampling::Stochastic;
        let draw = (c.estimator.samples_gumbel() || stochastic)
            .then(|| (c.tau_at(t) as f32, seed_mix(c.seed), t as u32, stochastic));
        let mut z = &w.enc[w.enc.len() - 1][..];
        if self.map != LatentMap::None {
            super::latent::forward(&self.map, z, &mut w.mapped, m);
            z = &w.mapped;
        }
        if let LevelUpdate::Alternate(sgd) = &mut self.level_updates[0] {
            // Alternated optimization (PROTOCOL §6.6): the codebook's own step on L_cb of the batch's nearest codes,
            // before quantize_batch assigns them again.
            let (level, codebook) = (&mut w.levels[0], &mut self.codebooks[0]);
            level.input.copy_from_slice(z);
            quantize::nearest(&level.input, codebook, m, &mut level.index, &mut level.dist);
            codebook_grad(level, codebook, m, 2.0 / (b * m) as f32);
            sgd.grad.copy_from_slice(&level.codebook_grad);
            sgd.update(codebook, c.alternate_lr);
        }
        quantize_batch(z, &self.codebooks, &mut w.levels, &mut w.q_total, m, draw, &mut w.sampled);
        w.seen.fill(false);
        w.levels[0].index.iter().for_each(|&a| w.seen[a as usize] = true);
        let used = w.seen.iter().filter(|&&s| s).count();
        let beta = if c.beta_schedule == BetaSchedule::Adaptive {
            let (lo, hi) = (self.beta.1, self.beta.2);
            let rate = (c.target_usage, c.beta_rate);
            self.beta.0 = crate::reference::adapt_beta_used(self.beta.0, (lo, hi), used, b, k, rate.0, rate.1);
            self.beta.0
        } else {
            c.beta
        };
        dense::forward_layers(&self.params, &self.layout.decoder, &w.q_total, b, &mut w.dec);
        let xhat = &w.dec[w.dec.len() - 1];
        // The reconstruction's loss and its gradient 2/(B d) (xhat - x) in one pass.
        let scale = 2.0 / (b * d) as f32;
        let mut sq = 0.0f64;
        for ((g, a), x) in w.grad.iter_mut().zip(xhat).zip(&w.x) {
            let e = a - x;
            sq += (e as f64).powi(2);
            *g = scale * e;
        }
        let rec = sq / (b * d) as f64;
        let per_row = |l: &Level| l.dist.iter().map(|&v| v as f64).sum::<f64>() / (b * m) as f64;
        // L_cb sums the levels' own terms; L_commit is the last level's distance, ||z - sum_l q_l||^2.
        let cb: f64 = w.levels.iter().map(per_row).sum();
        let commit = per_row(&w.levels[w.levels.len() - 1]);
        let total = rec + if c.codebook_mode == CodebookMode::Grad { cb } else { 0.0 } + beta * commit;
        self.last = Some((total, used as f64 / k as f64));
        beta
    }

    /// The backward pass: every parameter's gradient, the codebooks' (grad mode) and the learned M's.
    pub(super) fn backward(&mut self, t: u64, beta: f64) {
        let c = &self.config;
        let (b, m) = (c.batch as usize, c.latent as usize);
        let w = &mut self.work;
        let (decoder, encoder) = (&self.layout.decoder, &self.layout.encoder);
        let p = &self.params;
        dense::backward_layers(p, decoder, &w.q_total, &w.dec, b, &mut w.grads, &mut w.grad, &mut w.spare, true);
        let tau = c.tau_at(t) as f32;
        let codebook = &self.codebooks[0];
        if c.estimator == Estimator::Learned {
            // M is fitted toward the relaxation's exact backward of the same g (no noise).
            let scale = 2.0 / (b * m) as f32;
            w.transport_grad.fill(0.0);
            for (gi, zi) in w.grad[..b * m].chunks_exact(m).zip(w.levels[0].input.chunks_exact(m)) {
                quantize::gumbel_backward(gi, zi, codebook, tau, None, &mut w.scores, &mut w.c_bar, &mut w.soft);
                quantize::learned_row(&self.transport, gi, &mut w.row);
                for (a, tg) in w.transport_grad.chunks_exact_mut(m).enumerate() {
                    let diff = scale * (w.row[a] - w.soft[a]);
                    tg.iter_mut().zip(gi).for_each(|(t, g)| *t += diff * g);
                }
            }
        }
        let commit = (2.0 * beta / (b * m) as f64) as f32;
        for i in 0..b {
            let r = i * m..(i + 1) * m;
            let (g, z, q0) = (&w.grad[r.clone()], &w.levels[0].input[r.clone()], &w.levels[0].q[r.clone()]);
            match c.estimator {
                Estimator::Gumbel => {
                    let k = w.scores.len();
                    w.scores.copy_from_slice(&w.sampled[i * k..(i + 1) * k]);
                    quantize::relaxed_backward(g, codebook, tau, &mut w.scores, &mut w.c_bar, &mut w.row);
                }
                Estimator::Learned => quantize::learned_row(&self.transport, g, &mut w.row),
                e => quantize::estimator_row(e, g, z, q0, &mut w.row),
            }
            for l in &w.levels[1..] {
                quantize::estimator_row(c.estimator, g, &l.input[r.clone()], &l.q[r.clone()], &mut w.soft);
                w.row.iter_mut().zip(&w.soft).for_each(|(e, s)| *e += s);
            }
            let dz = &mut w.dz[r.clone()];
            for (j, out) in dz.iter_mut().enumerate() {
                *out = w.row[j] + commit * (z[j] - w.q_total[i * m + j]);
            }
        }
        if c.codebook_mode == CodebookMode::Grad {
            let scale = 2.0 / (b * m) as f32;
            for (level, codebook) in w.levels.iter_mut().zip(&self.codebooks) {
                codebook_grad(level, codebook, m, scale);
            }
            if c.orth_weight > 0.0 {
                let grad = &mut w.levels[0].codebook_grad;
                super::orthogonal::add_grad(codebook, m, c.orth_weight as f32, &mut w.orthogonal, grad);
            }
            if c.sync_nu > 0.0 {
                // The synchronized update: each code also takes nu times the decoder's gradient at it (§6.6).
                let (level, nu) = (&mut w.levels[0], c.sync_nu as f32);
                for (gi, &a) in w.grad[..b * m].chunks_exact(m).zip(&level.index) {
                    let code = &mut level.codebook_grad[a as usize * m..(a as usize + 1) * m];
                    code.iter_mut().zip(gi).for_each(|(d, g)| *d += nu * g);
                }
            }
        }
        super::latent::backward(&self.map, &w.enc[w.enc.len() - 1], &w.dz, &mut w.grad[..b * m], m);
        dense::backward_layers(p, encoder, &w.x, &w.enc, b, &mut w.grads, &mut w.grad, &mut w.spare, false);
    }

    /// Adam on the parameters (and M), each level's codebook update, and the dead-code reset.
    pub(super) fn update(&mut self, t: u64) {
        let c = &self.config;
        let (b, m) = (c.batch as usize, c.latent as usize);
        let w = &mut self.work;
        self.adam_params.update(&mut self.params, &w.grads, c.lr, t);
        if c.estimator == Estimator::Learned {
            self.adam_transport.update(&mut self.transport, &w.transport_grad, c.lr, t);
        }
        for ((codebook, update), level) in self.codebooks.iter_mut().zip(&mut self.level_updates).zip(&w.levels) {
            match update {
                LevelUpdate::Ema(ema) => ema.update(codebook, &level.input, &level.index, m),
                LevelUpdate::Grad(adam) => adam.update(codebook, &level.codebook_grad, c.lr, t),
                LevelUpdate::Simvq(s) => s.update(codebook, &level.codebook_grad, m, c.lr, t),
                LevelUpdate::Affine(a) => a.update(codebook, &level.codebook_grad, m, c.lr, t),
                LevelUpdate::Cosine(u) => u.update(codebook, &level.codebook_grad, m, c.lr, t),
                LevelUpdate::Alternate(_) | LevelUpdate::Fixed => {} // stepped before the forward pass, or never
            }
        }
        w.levels[0].index.iter().for_each(|&a| self.used[a as usize] = true);
        if c.reset_dead > 0 && t.is_multiple_of(c.reset_dead as u64) {
            let ema = match &mut self.level_updates[0] {
                LevelUpdate::Ema(ema) => Some((&mut ema.size[..], &mut ema.sum[..])),
                _ => None,
            };
            let z = &w.levels[0].input;
            super::super::reset_unused(&mut self.codebooks[0], &mut self.used, z, m, b as u32, c.seed, t, ema);
        }
    }
}

/// `dL_cb/dC = 2/(B m) sum_{i : a_i = k} (c_k - r_i)` for one level, into its buffer.
fn codebook_grad(level: &mut Level, codebook: &[f32], m: usize, scale: f32) {
    level.codebook_grad.fill(0.0);
    for (r, &a) in level.input.chunks_exact(m).zip(&level.index) {
        let a = a as usize;
        let (grad, code) = (&mut level.codebook_grad[a * m..(a + 1) * m], &codebook[a * m..(a + 1) * m]);
        for j in 0..m {
            grad[j] += scale * (code[j] - r[j]);
        }
    }
}

/// Every level's codes for the batch's encodings `z` (level 0's drawn when `draw`, each row's Gumbel scores kept in
/// `sampled`, B x K, for the relaxation's backward), and the decoder's input `q_total`, the sum of the codes. Level
/// l quantizes
/// `r_l = r_{l-1} - q_{l-1}` (r_0 = z).
pub(super) fn quantize_batch(
    z: &[f32],
    codebooks: &[Vec<f32>],
    levels: &mut [Level],
    q_total: &mut [f32],
    m: usize,
    draw: Draw,
    sampled: &mut [f32],
) {
    for (l, codebook) in codebooks.iter().enumerate().take(levels.len()) {
        let (before, rest) = levels.split_at_mut(l);
        let level = &mut rest[0];
        match before.last() {
            None => level.input.copy_from_slice(z),
            Some(prev) => {
                let pairs = prev.input.iter().zip(&prev.q);
                level.input.iter_mut().zip(pairs).for_each(|(r, (a, b))| *r = a - b);
            }
        }
        quantize::nearest(&level.input, codebook, m, &mut level.index, &mut level.dist);
        if let (0, Some((tau, seed, step, stochastic))) = (l, draw) {
            for (i, zi) in level.input.chunks_exact(m).enumerate() {
                let noise = Noise { seed, step, row: i as u32 };
                let k = if stochastic {
                    quantize::stochastic_sample(zi, codebook, tau, noise)
                } else {
                    let k = codebook.len() / m;
                    quantize::gumbel_scores(zi, codebook, tau, Some(noise), &mut sampled[i * k..(i + 1) * k])
                };
                level.index[i] = k as u32;
                level.dist[i] = zi.iter().zip(&codebook[k * m..]).map(|(z, c)| (z - c) * (z - c)).sum();
            }
        }
        for (q, &a) in level.q.chunks_exact_mut(m).zip(&level.index) {
            q.copy_from_slice(&codebook[a as usize * m..(a as usize + 1) * m]);
        }
        if l == 0 {
            q_total.copy_from_slice(&level.q);
        } else {
            q_total.iter_mut().zip(&level.q).for_each(|(t, v)| *t += v);
        }
    }
}
