//! What the WGSL kernels, their Rust owners and the f64 reference must agree on, in one neutral place: the
//! hashes behind dead-code resets and Gumbel noise, the statistics the stats kernel reports, the EMA's and the
//! adaptive beta's constants, and a dense layer's place in the flat parameters. The kernels re-export these; the
//! reference imports them from here and never imports kernel code. The WGSL side of the hashes is
//! `shaders/common.wgsl`.

/// A linear layer inside a flat parameter buffer: `W` (`out x in`) at `w_off`, `b` (`out`) at `b_off`, in floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    /// Input width.
    pub input: u32,
    /// Output width.
    pub output: u32,
    /// Offset of `W` (`output x input`, row-major) in the parameter buffer, in floats.
    pub w_off: u32,
    /// Offset of `b` (`output`) in the parameter buffer, in floats.
    pub b_off: u32,
    /// Whether a ReLU follows the layer (a model's hidden layers; not its last layers, nor the projections of a
    /// low-dimensional lookup).
    pub relu: bool,
}

/// A 32-bit integer mix (Chris Wellons' lowbias32), the same as `mix32` in `shaders/common.wgsl`.
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The mixed seed the reset hash starts from: lowbias32 of both halves of the seed.
pub fn seed_mix(seed: u64) -> u32 {
    mix32(seed as u32 ^ mix32((seed >> 32) as u32))
}

/// The batch row whose encoding replaces unused code `code` at a reset after step `step` (as `reset_dead`).
pub fn reset_row(seed: u64, step: u64, code: u32, batch: u32) -> u32 {
    mix32(seed_mix(seed) ^ mix32(step as u32 ^ mix32(code))) % batch
}

/// The EMA's constants: decay `g` and the Laplace smoothing epsilon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmaSettings {
    /// The decay g in [0, 1] (docs/PROTOCOL.md: 0.99).
    pub decay: f32,
    /// Laplace smoothing epsilon > 0 (docs/PROTOCOL.md: 1e-5).
    pub eps: f32,
}

impl Default for EmaSettings {
    /// docs/PROTOCOL.md's: g = 0.99, eps = 1e-5.
    fn default() -> Self {
        EmaSettings { decay: 0.99, eps: 1e-5 }
    }
}

/// The EMA state docs/PROTOCOL.md starts from: N_k = 1 and M_k = the initial c_k. Returns `(ema_size, ema_sum)`.
pub fn ema_initial_state(codebook: &[f32], k: usize) -> (Vec<f32>, Vec<f32>) {
    (vec![1.0; k], codebook.to_vec())
}

/// The statistics, as read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodeStats {
    /// N = sum_k n_k, the rows counted.
    pub total: u32,
    /// #{k : n_k = 0}.
    pub dead_codes: u32,
    /// 1 - dead_codes / K.
    pub usage: f64,
    /// -sum_k p_k ln p_k, in nats.
    pub entropy: f64,
    /// exp(entropy).
    pub perplexity: f64,
    /// 1/(N m) sum_i ||z_i - q_i||^2.
    pub quant_err: f64,
    /// 1/N sum_k max_y n_{k,y}; `None` without labels.
    pub purity: Option<f64>,
}

/// The bounds each run's beta is kept in, relative to where it starts: `[beta0 / 100, 100 beta0]`.
pub const BETA_RANGE: f32 = 100.0;
