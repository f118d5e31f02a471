//! The data sets of docs/PROTOCOL.md §3, generated on the host from a seed, and a user's `.npy` files.
//!
//! Reproducibility: every random draw comes from ChaCha8 (`rand_chacha`, identical on every platform) seeded with
//! the run's seed, one stream per purpose ([`Stream`]): the data's structure (the subspace basis, the cluster
//! centres), the training set, the eval set, the parameters, the codebook, the shuffles, k-means seeding and
//! dead-code resets. Normal draws are `rand_distr::StandardNormal`. So a run is reproducible from its JSON.

use crate::error::{Error, Result};
use nalgebra::DMatrix;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::{Path, PathBuf};

/// The purposes that get their own random stream.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// The data's structure: the subspace basis A or the cluster centres.
    Structure = 1,
    /// The training samples.
    Train = 2,
    /// The eval samples.
    Eval = 3,
    /// The initial layer parameters.
    Params = 4,
    /// The initial codebook (`uniform` or `normal`).
    Codebook = 5,
    /// The shuffle of the training rows at each epoch.
    Shuffle = 6,
    /// k-means++ seeding (the `kmeans` codebook init and `vqgrad kmeans`).
    Kmeans = 7,
    /// Dead-code resets. Reserved: a reset picks its rows by a hash of the seed, not from this stream.
    Reset = 8,
    /// SimVQ's projection layer (`--reparam simvq`).
    Projection = 9,
}

/// The generator for `seed` and `stream`.
pub fn rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream as u64);
    r
}

/// What data to train on.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DataSpec {
    /// `x = A s + sigma e`: A (d x r) orthonormal, s ~ N(0, I_r), e ~ N(0, I_d).
    Subspace {
        /// Data dimension d.
        dim: u32,
        /// Subspace rank r (1 <= r <= d).
        rank: u32,
        /// Noise standard deviation sigma (>= 0).
        sigma: f64,
    },
    /// `x = mu_y + spread e`: centres mu_c ~ N(0, I_d), labels y uniform over the clusters.
    Clusters {
        /// Data dimension d.
        dim: u32,
        /// Number of clusters C (also the label classes).
        clusters: u32,
        /// Noise standard deviation around each centre (>= 0).
        spread: f64,
    },
    /// `x ~ N(0, I_d)`.
    Gaussian {
        /// Data dimension d.
        dim: u32,
    },
    /// A 2-D float32/float64 `.npy` (n x d), optional integer labels (n); the last `eval_split` of the rows is the
    /// eval set.
    File {
        /// The data `.npy` (n x d).
        path: PathBuf,
        /// Integer labels `.npy` (n), for purity.
        labels: Option<PathBuf>,
        /// Share of the rows, the last ones, kept as the eval set; in (0, 1).
        eval_split: f64,
    },
}

/// A data set ready for training: row-major f32 matrices.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Data dimension d: the columns of every row.
    pub dim: u32,
    /// The training set, `train_rows() x dim`.
    pub train: Vec<f32>,
    /// The eval set, `eval_rows() x dim`.
    pub eval: Vec<f32>,
    /// A label per training row (cluster data or a labels file); `None` without labels.
    pub train_labels: Option<Vec<u32>>,
    /// A label per eval row; `None` without labels.
    pub eval_labels: Option<Vec<u32>>,
    /// Label classes (0 without labels).
    pub classes: u32,
    /// The subspace basis A (d x r, row-major) for `subspace` data.
    pub basis: Option<Vec<f64>>,
    /// Subspace rank r for `subspace` data; 0 otherwise.
    pub rank: u32,
}

impl Dataset {
    /// Rows in the training set.
    pub fn train_rows(&self) -> usize {
        self.train.len() / self.dim as usize
    }
    /// Rows in the eval set.
    pub fn eval_rows(&self) -> usize {
        self.eval.len() / self.dim as usize
    }

    /// The bytes its arrays hold.
    pub fn bytes(&self) -> usize {
        let labels = |l: &Option<Vec<u32>>| l.as_ref().map_or(0, Vec::len) * 4;
        let basis = self.basis.as_ref().map_or(0, Vec::len) * 8;
        (self.train.len() + self.eval.len()) * 4 + labels(&self.train_labels) + labels(&self.eval_labels) + basis
    }
}

fn normals(rng: &mut ChaCha8Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| StandardNormal.sample(rng)).collect()
}

impl DataSpec {
    /// The dimension d of a generated data set; `None` for a file (known once read).
    pub fn generated_dim(&self) -> Option<u32> {
        match *self {
            DataSpec::Subspace { dim, .. } | DataSpec::Clusters { dim, .. } | DataSpec::Gaussian { dim } => Some(dim),
            DataSpec::File { .. } => None,
        }
    }

    /// The values a generated data set's structure holds: the subspace basis (d x r) or the cluster centres
    /// (C x d), saturating.
    pub fn structure_len(&self) -> u64 {
        match *self {
            DataSpec::Subspace { dim, rank, .. } => (dim as u64).saturating_mul(rank as u64),
            DataSpec::Clusters { dim, clusters, .. } => (dim as u64).saturating_mul(clusters as u64),
            _ => 0,
        }
    }
}

/// The most bytes of generated data sets [`load_shared`] keeps: ten of E1's.
pub const SHARED_BYTES: usize = 256 << 20;

type SharedKey = (DataSpec, u32, u32, u64);

/// Generated data sets kept for reuse, the newest last.
static SHARED: std::sync::Mutex<Vec<(SharedKey, Dataset)>> = std::sync::Mutex::new(Vec::new());

/// [`load`], keeping generated sets (up to [`SHARED_BYTES`], the oldest dropped first) for the next run that asks for
/// the same one: a sweep's runs that differ only in estimator, beta or K share their data, and generating E1's takes
/// longer than 256 of its training steps. Files are read each time (they may change on disk).
pub fn load_shared(spec: &DataSpec, n_train: u32, n_eval: u32, seed: u64) -> Result<Dataset> {
    if spec.generated_dim().is_none() {
        return load(spec, n_train, n_eval, seed);
    }
    let key: SharedKey = (spec.clone(), n_train, n_eval, seed);
    // A panic elsewhere while the lock was held leaves whole entries: the list is still sound.
    let shared = || SHARED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, data)) = shared().iter().find(|(k, _)| *k == key) {
        return Ok(data.clone());
    }
    let data = load(spec, n_train, n_eval, seed)?;
    if data.bytes() <= SHARED_BYTES {
        let mut list = shared();
        if !list.iter().any(|(k, _)| *k == key) {
            list.push((key, data.clone()));
        }
        while list.iter().map(|(_, d)| d.bytes()).sum::<usize>() > SHARED_BYTES {
            list.remove(0);
        }
    }
    Ok(data)
}

/// Generates or loads the data. `n_train` and `n_eval` apply to generated sets.
pub fn load(spec: &DataSpec, n_train: u32, n_eval: u32, seed: u64) -> Result<Dataset> {
    if let DataSpec::File { path, labels, eval_split } = spec {
        return load_npy(path, labels.as_deref(), *eval_split);
    }
    if n_train == 0 || n_eval == 0 {
        return Err(Error::Input("the training and eval sets need at least one sample each".into()));
    }
    let (n_train, n_eval) = (n_train as usize, n_eval as usize);
    let streams = (rng(seed, Stream::Structure), rng(seed, Stream::Train), rng(seed, Stream::Eval));
    match *spec {
        DataSpec::Subspace { dim, rank, sigma } => subspace(dim, rank, sigma, (n_train, n_eval), streams),
        DataSpec::Clusters { dim, clusters, spread } => {
            clusters_data(dim, clusters, spread, (n_train, n_eval), streams)
        }
        DataSpec::Gaussian { dim } => {
            let (_, mut train_rng, mut eval_rng) = streams;
            if dim == 0 {
                return Err(Error::Input("gaussian data needs dim >= 1".into()));
            }
            let d = dim as usize;
            let sample = |rng: &mut ChaCha8Rng, n: usize| normals(rng, n * d).into_iter().map(|v| v as f32).collect();
            Ok(Dataset {
                dim,
                train: sample(&mut train_rng, n_train),
                eval: sample(&mut eval_rng, n_eval),
                train_labels: None,
                eval_labels: None,
                classes: 0,
                basis: None,
                rank: 0,
            })
        }
        DataSpec::File { .. } => unreachable!("handled above"),
    }
}

/// The seeded streams a generated data set draws from: its structure (basis or centres), training and eval rows.
type Streams = (ChaCha8Rng, ChaCha8Rng, ChaCha8Rng);

/// `subspace` data: x = A s + sigma e, A the Q of a QR of a d x r N(0, 1) matrix (docs/PROTOCOL.md §3).
fn subspace(dim: u32, rank: u32, sigma: f64, (n_train, n_eval): (usize, usize), streams: Streams) -> Result<Dataset> {
    let (mut structure, mut train_rng, mut eval_rng) = streams;
    let (d, r) = (dim as usize, rank as usize);
    if d == 0 || r == 0 || r > d || !(sigma.is_finite() && sigma >= 0.0) {
        return Err(Error::Input(format!(
            "subspace data needs 1 <= rank <= dim and sigma >= 0, got dim {d}, rank {r}, sigma {sigma}"
        )));
    }
    let g = DMatrix::from_row_slice(d, r, &normals(&mut structure, d * r));
    let a = g.qr().q(); // d x r, orthonormal columns
    let basis: Vec<f64> = (0..d).flat_map(|i| (0..r).map(move |j| (i, j))).map(|(i, j)| a[(i, j)]).collect();
    // Row by row in each stream's order, into buffers made once; the two streams are independent, so they are
    // drawn side by side.
    let sample = |rng: &mut ChaCha8Rng, n: usize| -> Vec<f32> {
        let mut out = vec![0.0f32; n * d];
        let (mut s, mut e) = (vec![0.0f64; r], vec![0.0f64; d]);
        for row in out.chunks_exact_mut(d) {
            s.iter_mut().chain(e.iter_mut()).for_each(|v| *v = StandardNormal.sample(rng));
            for ((x, a), e) in row.iter_mut().zip(basis.chunks_exact(r)).zip(&e) {
                *x = (a.iter().zip(&s).map(|(a, s)| a * s).sum::<f64>() + sigma * e) as f32;
            }
        }
        out
    };
    let (train, eval) = rayon::join(|| sample(&mut train_rng, n_train), || sample(&mut eval_rng, n_eval));
    Ok(Dataset { dim, train, eval, train_labels: None, eval_labels: None, classes: 0, basis: Some(basis), rank })
}

/// `clusters` data: x = mu_y + spread e, centres mu_c ~ N(0, I), labels uniform (docs/PROTOCOL.md §3).
fn clusters_data(
    dim: u32,
    clusters: u32,
    spread: f64,
    (n_train, n_eval): (usize, usize),
    streams: Streams,
) -> Result<Dataset> {
    let (mut structure, mut train_rng, mut eval_rng) = streams;
    let (d, c) = (dim as usize, clusters as usize);
    if d == 0 || c == 0 || !(spread.is_finite() && spread >= 0.0) {
        return Err(Error::Input(format!(
            "cluster data needs dim >= 1, clusters >= 1, spread >= 0, got {d}, {c}, {spread}"
        )));
    }
    let centres = normals(&mut structure, c * d);
    let sample = |rng: &mut ChaCha8Rng, n: usize| -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let label = rng.random_range(0..c);
            let e = normals(rng, d);
            x.extend((0..d).map(|i| (centres[label * d + i] + spread * e[i]) as f32));
            y.push(label as u32);
        }
        (x, y)
    };
    let (train, train_labels) = sample(&mut train_rng, n_train);
    let (eval, eval_labels) = sample(&mut eval_rng, n_eval);
    Ok(Dataset {
        dim,
        train,
        eval,
        train_labels: Some(train_labels),
        eval_labels: Some(eval_labels),
        classes: clusters,
        basis: None,
        rank: 0,
    })
}

/// The largest magnitude a data set of `len` values may hold: any sum of squared differences of two such values
/// over all of them stays within f32's range (docs/PROTOCOL.md §3), so that no distance or error overflows.
pub fn magnitude_limit(len: usize) -> f32 {
    ((f32::MAX as f64 / len.max(1) as f64).sqrt() / 2.0) as f32
}

fn open_npy(path: &Path) -> Result<npyz::NpyFile<std::io::BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path).map_err(|e| Error::Input(format!("{}: cannot open: {e}", path.display())))?;
    npyz::NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| Error::Input(format!("{}: not a valid .npy file: {e}", path.display())))
}

/// Reads a 2-D float32/float64 `.npy` (C or Fortran order) and optional integer labels; splits off the last
/// `eval_split` of the rows as the eval set. Every problem is an error naming the file.
pub fn load_npy(path: &Path, labels: Option<&Path>, eval_split: f64) -> Result<Dataset> {
    let name = path.display();
    if !(eval_split > 0.0 && eval_split < 1.0) {
        return Err(Error::Input(format!("the eval split must be in (0, 1), got {eval_split}")));
    }
    let npy = open_npy(path)?;
    let shape = npy.shape().to_vec();
    if shape.len() != 2 {
        return Err(Error::Input(format!("{name}: expected a 2-D array (n x d), got shape {shape:?}")));
    }
    let (n, d) = (shape[0] as usize, shape[1] as usize);
    if n == 0 || d == 0 {
        return Err(Error::Input(format!("{name}: the array is empty (shape {shape:?})")));
    }
    if d > u32::MAX as usize || n.checked_mul(d).is_none_or(|e| e > u32::MAX as usize) {
        return Err(Error::Input(format!("{name}: shape {shape:?} is too large")));
    }
    let fortran = npy.order() == npyz::Order::Fortran;
    let dtype = npy.dtype();
    let values: Vec<f32> = match &dtype {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 4 => npy.into_vec::<f32>(),
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => {
            npy.into_vec::<f64>().map(|v| v.into_iter().map(|x| x as f32).collect())
        }
        other => return Err(Error::Input(format!("{name}: expected float32 or float64, got dtype {}", other.descr()))),
    }
    .map_err(|e| Error::Input(format!("{name}: cannot read the data: {e}")))?;
    if values.len() != n * d {
        return Err(Error::Input(format!("{name}: expected {} values, read {}", n * d, values.len())));
    }
    let values = if fortran { (0..n * d).map(|e| values[(e % d) * n + e / d]).collect() } else { values };
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Input(format!(
            "{name}: row {}, column {} is {} (NaN and Inf are not allowed)",
            bad / d,
            bad % d,
            values[bad]
        )));
    }
    let limit = magnitude_limit(values.len());
    if let Some(bad) = values.iter().position(|v| v.abs() > limit) {
        return Err(Error::Input(format!(
            "{name}: row {}, column {} is {:e}; values of this data set must stay within ±{limit:.3e}, or its \
             squared distances overflow f32",
            bad / d,
            bad % d,
            values[bad]
        )));
    }
    let labels = labels.map(|p| load_labels(p, n)).transpose()?;
    let n_eval = ((n as f64 * eval_split).round() as usize).max(1);
    if n_eval >= n {
        return Err(Error::Input(format!("{name}: {n} rows are too few to split off an eval set of {n_eval}")));
    }
    let n_train = n - n_eval;
    let classes = labels.as_ref().map_or(0, |l| l.iter().max().map_or(0, |&m| m + 1));
    Ok(Dataset {
        dim: d as u32,
        train: values[..n_train * d].to_vec(),
        eval: values[n_train * d..].to_vec(),
        train_labels: labels.as_ref().map(|l| l[..n_train].to_vec()),
        eval_labels: labels.as_ref().map(|l| l[n_train..].to_vec()),
        classes,
        basis: None,
        rank: 0,
    })
}

fn load_labels(path: &Path, n: usize) -> Result<Vec<u32>> {
    let name = path.display();
    let npy = open_npy(path)?;
    let shape = npy.shape().to_vec();
    if shape.len() != 1 || shape[0] as usize != n {
        return Err(Error::Input(format!("{name}: expected {n} labels (a 1-D array), got shape {shape:?}")));
    }
    let read_err = |e: std::io::Error| Error::Input(format!("{name}: cannot read the labels: {e}"));
    let wide: Vec<i128> = match npy.dtype() {
        npyz::DType::Plain(t) => match (t.type_char(), t.size_field()) {
            (npyz::TypeChar::Int, 1) => npy.into_vec::<i8>().map_err(read_err)?.into_iter().map(i128::from).collect(),
            (npyz::TypeChar::Int, 2) => npy.into_vec::<i16>().map_err(read_err)?.into_iter().map(i128::from).collect(),
            (npyz::TypeChar::Int, 4) => npy.into_vec::<i32>().map_err(read_err)?.into_iter().map(i128::from).collect(),
            (npyz::TypeChar::Int, 8) => npy.into_vec::<i64>().map_err(read_err)?.into_iter().map(i128::from).collect(),
            (npyz::TypeChar::Uint, 1) => npy.into_vec::<u8>().map_err(read_err)?.into_iter().map(i128::from).collect(),
            (npyz::TypeChar::Uint, 2) => npy.into_vec::<u16>().map_err(read_err)?.into_iter().map(i128::from).collect(),
            (npyz::TypeChar::Uint, 4) => npy.into_vec::<u32>().map_err(read_err)?.into_iter().map(i128::from).collect(),
            (npyz::TypeChar::Uint, 8) => npy.into_vec::<u64>().map_err(read_err)?.into_iter().map(i128::from).collect(),
            _ => return Err(Error::Input(format!("{name}: labels must be integers, got dtype {t}"))),
        },
        other => return Err(Error::Input(format!("{name}: labels must be integers, got dtype {}", other.descr()))),
    };
    if let Some(bad) = wide.iter().position(|&v| !(0..=u32::MAX as i128 / 2).contains(&v)) {
        return Err(Error::Input(format!("{name}: label {} at row {bad} is out of range", wide[bad])));
    }
    Ok(wide.into_iter().map(|v| v as u32).collect())
}
