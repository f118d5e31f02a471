//! A run's initial state, written once for every engine: the parameters, the first level's codebook (k-means++
//! and Lloyd on the first encodings with a `kmeans` init, the Lloyd step passed in by the engine) and residual VQ's
//! later codebooks (docs/PROTOCOL.md §1, §6.3).

use super::TrainConfig;
use crate::data::{self, Dataset, Stream};
use crate::error::Result;
use crate::model::{CodebookInit, Layout};
use crate::reference::to_f64;
use crate::reference::train::CpuModel;
use rand_chacha::ChaCha8Rng;

/// Samples k-means init runs on.
pub const KMEANS_SAMPLES: usize = 4096;
/// Lloyd iterations after k-means++.
pub const KMEANS_ITERS: usize = 10;

/// The codebooks of residual VQ's levels after the first (f32; none for one level), drawn from the codebook
/// stream after the first level's.
pub fn residual_codebooks(config: &TrainConfig) -> Vec<Vec<f32>> {
    let mut rng = data::rng(config.seed, Stream::Codebook);
    let (k, m) = (config.codes, config.latent);
    let mut draw = || crate::model::init_codebook(config.codebook_init, k, m, &mut rng);
    draw(); // the first level's, as `initial_state` draws it
    (1..config.levels).map(|_| draw()).collect()
}

/// The initial flat parameters and codebook of a run (f32, as both engines start), before any k-means.
pub fn initial_state(config: &TrainConfig, layout: &Layout) -> (Vec<f32>, Vec<f32>) {
    let params = crate::model::init_params(layout, &mut data::rng(config.seed, Stream::Params));
    let codebook = crate::model::init_codebook(
        config.codebook_init,
        config.codes,
        config.latent,
        &mut data::rng(config.seed, Stream::Codebook),
    );
    (params, codebook)
}

/// Lloyd's algorithm from `centres` on the rows of `z`: each step moves every used centre to its rows' mean.
pub fn lloyd(z: &[f64], centres: &mut [f64], m: usize, iters: usize) {
    let k = centres.len() / m;
    for _ in 0..iters {
        let a = crate::reference::assign_f64(z, centres, m);
        let mut sums = vec![0.0; k * m];
        let mut counts = vec![0usize; k];
        for (i, &c) in a.index.iter().enumerate() {
            counts[c as usize] += 1;
            for j in 0..m {
                sums[c as usize * m + j] += z[i * m + j];
            }
        }
        for c in (0..k).filter(|&c| counts[c] > 0) {
            for j in 0..m {
                centres[c * m + j] = sums[c * m + j] / counts[c] as f64;
            }
        }
    }
}

/// k-means++ seeding (seeded) of `k` centres among the rows of `z` (`n x m`).
pub fn kmeans_plus_plus(z: &[f64], m: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    use rand::RngExt;
    let n = z.len() / m;
    let row = |i: usize| &z[i * m..(i + 1) * m];
    let dist = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let mut centres = Vec::with_capacity(k * m);
    centres.extend_from_slice(row(rng.random_range(0..n)));
    let mut nearest: Vec<f64> = (0..n).map(|i| dist(row(i), &centres[..m])).collect();
    for _ in 1..k {
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let mut target = rng.random_range(0.0..total);
            let mut chosen = n - 1;
            for (i, &w) in nearest.iter().enumerate() {
                if target < w {
                    chosen = i;
                    break;
                }
                target -= w;
            }
            chosen
        } else {
            rng.random_range(0..n)
        };
        let c = row(pick).to_vec();
        for (i, nd) in nearest.iter_mut().enumerate() {
            *nd = nd.min(dist(row(i), &c));
        }
        centres.extend(c);
    }
    centres
}

/// [`lloyd`] as a [`LloydStep`]: the CPU engine's.
pub fn lloyd_cpu(z: &[f64], centres: &[f64], m: usize, iters: usize) -> Result<Vec<f64>> {
    let mut c = centres.to_vec();
    lloyd(z, &mut c, m, iters);
    Ok(c)
}

/// Lloyd's step as an engine runs it: `(z, centres, m, iters)` to the moved centres.
pub type LloydStep<'a> = &'a dyn Fn(&[f64], &[f64], usize, usize) -> Result<Vec<f64>>;

/// A run's initial flat parameters and every level's codebook, level 0 first, in f64 (each value an f32 widened,
/// or with a k-means init what `lloyd` made of them). k-means seeds on the encodings of the first
/// [`KMEANS_SAMPLES`] training rows, then runs [`KMEANS_ITERS`] rounds of `lloyd`.
pub fn initial_run(
    config: &TrainConfig,
    layout: &Layout,
    data: &Dataset,
    lloyd: LloydStep<'_>,
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let (params, codebook) = initial_state(config, layout);
    let params = to_f64(&params);
    let first = if config.codebook_init == CodebookInit::Kmeans {
        let (d, m) = (data.dim as usize, config.latent as usize);
        let (params, map) = (params.clone(), config.latent_map());
        let model = CpuModel { layout: layout.clone(), latent: m, params, codebooks: vec![], map };
        let rows = data.train_rows().min(KMEANS_SAMPLES);
        let z = model.encode(&to_f64(&data.train[..rows * d]), rows);
        let seeds = kmeans_plus_plus(&z, m, config.codes as usize, &mut data::rng(config.seed, Stream::Kmeans));
        lloyd(&z, &seeds, m, KMEANS_ITERS)?
    } else if !config.fsq_levels.is_empty() {
        // FSQ's implicit codebook, fixed (PROTOCOL §6.6).
        crate::reference::latent::fsq_grid(&config.fsq_levels)
    } else if config.reparam == crate::model::Reparam::Simvq {
        // SimVQ's codebook is its basis through its layer (PROTOCOL §6.6), not the protocol's init.
        let (basis, projection) = super::simvq::initial(config);
        super::simvq::codebook_f64(&to_f64(&basis), &to_f64(&projection), config.latent as usize)
    } else {
        to_f64(&codebook)
    };
    // Cosine codes start at the initial codebook's unit rows (PROTOCOL §6.6).
    let first = if config.cosine { crate::reference::latent::unit(&first, config.latent as usize) } else { first };
    let codebooks = std::iter::once(first).chain(residual_codebooks(config).iter().map(|c| to_f64(c))).collect();
    Ok((params, codebooks))
}
