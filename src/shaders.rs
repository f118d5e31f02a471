//! The WGSL sources of every kernel family, as public constants, so that they can be loaded in other runtimes.
//!
//! Each constant is the file in `shaders/` verbatim. [`assign_source`] and [`gather_source`] build the `assign`
//! and `gather` variants for a given load width.

/// Batched nearest code (distance + argmin). This text is the vec4 variant; see [`assign_source`].
pub const ASSIGN: &str = include_str!("../shaders/assign.wgsl");
/// Backward of the quantization layer for every estimator, with the commitment gradient fused in.
pub const ESTIMATOR: &str = include_str!("../shaders/estimator.wgsl");
/// Codebook updates: usage counts, per-code sums (the codebook gradient) and the EMA update.
pub const CODEBOOK: &str = include_str!("../shaders/codebook.wgsl");
/// Codebook-use statistics: dead codes, entropy, perplexity, quantization error, purity.
pub const STATS: &str = include_str!("../shaders/stats.wgsl");

/// Dense layers: the register-blocked product (forward, input and weight gradients), bias gradient, ReLU mask.
pub const DENSE: &str = include_str!("../shaders/dense.wgsl");
/// The reconstruction loss gradient and fixed-order sums.
pub const LOSS: &str = include_str!("../shaders/loss.wgsl");
/// Adam with PyTorch's semantics.
pub const ADAM: &str = include_str!("../shaders/adam.wgsl");
/// Row gathers: the minibatch from the training set, and `q = c[a]`. This text is the vec4 variant; see
/// [`gather_source`].
pub const GATHER: &str = include_str!("../shaders/gather.wgsl");

/// Every kernel family's file name and source, in a fixed order.
pub const ALL: &[(&str, &str)] = &[
    ("assign.wgsl", ASSIGN),
    ("estimator.wgsl", ESTIMATOR),
    ("codebook.wgsl", CODEBOOK),
    ("stats.wgsl", STATS),
    ("dense.wgsl", DENSE),
    ("loss.wgsl", LOSS),
    ("adam.wgsl", ADAM),
    ("gather.wgsl", GATHER),
];

const VARIANT_BEGIN: &str = "// VARIANT BEGIN";
const VARIANT_END: &str = "// VARIANT END";

/// The load width of the `assign` kernel: 4 floats per load needs `m % 4 == 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lanes {
    /// `vec4<f32>` loads; needs `m % 4 == 0`.
    Vec4,
    /// `f32` loads; any `m`.
    Scalar,
}

impl Lanes {
    /// The widest load that `m` allows.
    pub fn for_dim(m: u32) -> Self {
        if m.is_multiple_of(4) { Lanes::Vec4 } else { Lanes::Scalar }
    }
}

/// The `assign` source for a load width: [`ASSIGN`] itself for [`Lanes::Vec4`], and for [`Lanes::Scalar`] the
/// same file with the block between its `VARIANT` markers replaced by the `f32` definitions.
pub fn assign_source(lanes: Lanes) -> String {
    variant(ASSIGN, lanes, "alias Row = f32;\nconst LANES: u32 = 1u;\nfn lane_sum(v: Row) -> f32 {\n    return v;\n}\n")
}

/// The `gather` source for a load width, as [`assign_source`] builds assign's.
pub fn gather_source(lanes: Lanes) -> String {
    variant(GATHER, lanes, "alias Row = f32;\nconst LANES: u32 = 1u;\n")
}

/// `source` (the vec4 variant) as it is, or with the block between its `VARIANT` markers replaced by `scalar`.
fn variant(source: &str, lanes: Lanes, scalar: &str) -> String {
    match lanes {
        Lanes::Vec4 => source.to_string(),
        Lanes::Scalar => {
            // The block starts after the BEGIN marker's line and ends where the END marker's line starts, so a
            // checkout with CRLF line endings works too.
            let begin = source.find(VARIANT_BEGIN).and_then(|i| source[i..].find('\n').map(|n| i + n + 1));
            let end = source.find(VARIANT_END);
            let (Some(start), Some(end)) = (begin, end) else {
                unreachable!("the variant shaders have VARIANT BEGIN and END markers (tests/shaders.rs checks)")
            };
            format!("{}{scalar}{}", &source[..start], &source[end..])
        }
    }
}
