//! The WGSL sources of every kernel family, as public constants, so that they can be loaded in other runtimes.
//!
//! Each constant is the file in `shaders/` verbatim, with [`COMMON`] in front where the file uses it (shared WGSL
//! has one source). [`assign_source`] and [`gather_source`] build the `assign` and `gather` variants for a given
//! load width.

/// What several kernels share (the step uniform's `Step` struct, the `mix32` hash): composed in front of [`ADAM`],
/// [`CODEBOOK`], [`GATHER`] and [`SOFT`], so each of those constants is a whole module on its own.
pub const COMMON: &str = include_str!("../shaders/common.wgsl");

/// Batched nearest code (distance + argmin). This text is the vec4 variant; see [`assign_source`].
pub const ASSIGN: &str = include_str!("../shaders/assign.wgsl");
/// Backward of the quantization layer for every estimator, with the commitment gradient fused in.
pub const ESTIMATOR: &str = include_str!("../shaders/estimator.wgsl");
/// The Gumbel-softmax relaxation of the quantizer: the hard sample, the relaxed code, and its exact backward.
pub const SOFT: &str = concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/soft.wgsl"));
/// The learned transport estimator: `M g` and the gradient of M's fit to the relaxation's backward.
pub const LEARNED: &str = include_str!("../shaders/learned.wgsl");
/// Residual VQ's elementwise steps: the next level's residual, and sums over levels.
pub const RESIDUAL: &str = include_str!("../shaders/residual.wgsl");
/// The codebook's orthogonality penalty: its gradient, added to the codebook's.
pub const ORTHOGONAL: &str = include_str!("../shaders/orthogonal.wgsl");
/// The affine re-parameterization of a codebook: its gradient, and the codebook from its codes, scale and shift.
pub const AFFINE: &str = include_str!("../shaders/affine.wgsl");
/// Maps of the encodings before the quantizer (FSQ's bound), forward and backward.
pub const LATENT: &str = include_str!("../shaders/latent.wgsl");
/// SGD with momentum (the alternate codebook mode's step).
pub const SGD: &str = include_str!("../shaders/sgd.wgsl");
/// The adaptive commitment weight: beta from each step's batch usage toward a target.
pub const SCHEDULE: &str = include_str!("../shaders/schedule.wgsl");
/// Codebook updates: usage counts, per-code sums (the codebook gradient) and the EMA update.
pub const CODEBOOK: &str = concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/codebook.wgsl"));
/// Codebook-use statistics: dead codes, entropy, perplexity, quantization error, purity.
pub const STATS: &str = include_str!("../shaders/stats.wgsl");

/// Dense layers: the register-blocked product (forward, input and weight gradients), bias gradient, ReLU mask.
pub const DENSE: &str = include_str!("../shaders/dense.wgsl");
/// The reconstruction loss gradient and fixed-order sums.
pub const LOSS: &str = include_str!("../shaders/loss.wgsl");
/// Adam with PyTorch's semantics.
pub const ADAM: &str = concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/adam.wgsl"));
/// Row gathers: the minibatch from the training set, and `q = c[a]`. This text is the vec4 variant; see
/// [`gather_source`].
pub const GATHER: &str = concat!(include_str!("../shaders/common.wgsl"), include_str!("../shaders/gather.wgsl"));

/// Every kernel family's file name and source, in a fixed order.
pub const ALL: &[(&str, &str)] = &[
    ("assign.wgsl", ASSIGN),
    ("estimator.wgsl", ESTIMATOR),
    ("soft.wgsl", SOFT),
    ("schedule.wgsl", SCHEDULE),
    ("learned.wgsl", LEARNED),
    ("residual.wgsl", RESIDUAL),
    ("orthogonal.wgsl", ORTHOGONAL),
    ("affine.wgsl", AFFINE),
    ("sgd.wgsl", SGD),
    ("latent.wgsl", LATENT),
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

/// Every source the crate compiles, named as files: each file in `shaders/` and the scalar variants of `assign`
/// and `gather` (`assign.scalar.wgsl`, `gather.scalar.wgsl`).
pub fn variants() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ALL.iter().map(|(name, src)| (name.to_string(), src.to_string())).collect();
    out.push(("assign.scalar.wgsl".into(), assign_source(Lanes::Scalar)));
    out.push(("gather.scalar.wgsl".into(), gather_source(Lanes::Scalar)));
    out
}

/// naga's translations of the kernels, for loading them in other runtimes (feature `translate`, on by default
/// with the CLI; `vqgrad export-shaders` writes them to files).
#[cfg(feature = "translate")]
pub mod translate {
    use crate::error::{Error, Result};
    use naga::back::{hlsl, msl, spv};
    use naga::valid::{Capabilities, ValidationFlags, Validator};

    /// A target of the translation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Target {
        /// SPIR-V (Vulkan), a binary module per entry point.
        SpirV,
        /// Metal Shading Language.
        Msl,
        /// HLSL (DX12, shader model 5.1 as naga's default).
        Hlsl,
    }

    impl Target {
        /// The file extension of a translation.
        pub fn extension(self) -> &'static str {
            match self {
                Target::SpirV => "spv",
                Target::Msl => "metal",
                Target::Hlsl => "hlsl",
            }
        }
    }

    /// Parses and validates WGSL with only the capabilities vqgrad needs; `name` labels the errors.
    pub fn validate(name: &str, source: &str) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
        let fail = |message: String| Error::Translate { what: name.to_string(), message };
        let module = naga::front::wgsl::parse_str(source).map_err(|e| fail(e.emit_to_string(source)))?;
        let info = Validator::new(ValidationFlags::all(), Capabilities::empty())
            .validate(&module)
            .map_err(|e| fail(e.emit_to_string(source)))?;
        Ok((module, info))
    }

    /// Metal's buffer slots: every bound variable in (group, binding) order from slot 0 (for example `params`,
    /// then the storage buffers, then group 1's step constants), and after them the buffer of runtime-array sizes
    /// that naga's MSL reads.
    fn metal_buffers(module: &naga::Module) -> msl::EntryPointResources {
        let mut bound: Vec<(naga::ResourceBinding, bool)> = module
            .global_variables
            .iter()
            .filter_map(|(_, var)| {
                let writable = match var.space {
                    naga::AddressSpace::Storage { access } => access.contains(naga::StorageAccess::STORE),
                    _ => false,
                };
                var.binding.map(|b| (b, writable))
            })
            .collect();
        bound.sort_by_key(|(b, _)| (b.group, b.binding));
        let resources = bound
            .iter()
            .enumerate()
            .map(|(slot, (binding, writable))| {
                let target = msl::BindTarget { buffer: Some(slot as u8), mutable: *writable, ..Default::default() };
                (*binding, target)
            })
            .collect();
        msl::EntryPointResources { resources, immediates_buffer: None, sizes_buffer: Some(bound.len() as u8) }
    }

    /// Every compute entry point of the WGSL `source` translated to `target`, each override (the workgroup size)
    /// at its default: `(entry point, the translation's bytes)`; SPIR-V words are little-endian. HLSL registers
    /// are the WGSL bindings (`bN` for the uniform, `tN` read-only, `uN` read-write; group G past 0 in `spaceG`);
    /// Metal buffer slots number the bound variables in (group, binding) order from 0, and naga's buffer of
    /// runtime-array sizes takes the slot after them.
    pub fn entry_points(name: &str, source: &str, target: Target) -> Result<Vec<(String, Vec<u8>)>> {
        let (module, info) = validate(name, source)?;
        let mut out = Vec::new();
        for ep in &module.entry_points {
            let what = format!("{name}::{}", ep.name);
            let fail = |message: String| Error::Translate { what: what.clone(), message };
            let stage_ep = Some((ep.stage, ep.name.as_str()));
            let (module, info) =
                naga::back::pipeline_constants::process_overrides(&module, &info, stage_ep, &Default::default())
                    .map_err(|e| fail(e.to_string()))?;
            let bytes = match target {
                Target::SpirV => {
                    let pipeline = spv::PipelineOptions { shader_stage: ep.stage, entry_point: ep.name.clone() };
                    let words = spv::write_vec(&module, &info, &spv::Options::default(), Some(&pipeline))
                        .map_err(|e| fail(e.to_string()))?;
                    words.iter().flat_map(|w| w.to_le_bytes()).collect()
                }
                Target::Msl => {
                    let options = msl::Options {
                        per_entry_point_map: [(ep.name.clone(), metal_buffers(&module))].into(),
                        ..Default::default()
                    };
                    let pipeline =
                        msl::PipelineOptions { entry_point: Some((ep.stage, ep.name.clone())), ..Default::default() };
                    let (text, _) =
                        msl::write_string(&module, &info, &options, &pipeline).map_err(|e| fail(e.to_string()))?;
                    text.into_bytes()
                }
                Target::Hlsl => {
                    let options = hlsl::Options { fake_missing_bindings: true, ..Default::default() };
                    let pipeline = hlsl::PipelineOptions { entry_point: Some((ep.stage, ep.name.clone())) };
                    let mut text = String::new();
                    hlsl::Writer::new(&mut text, &options, &pipeline)
                        .write(&module, &info, None)
                        .map_err(|e| fail(e.to_string()))?;
                    text.into_bytes()
                }
            };
            out.push((ep.name.clone(), bytes));
        }
        Ok(out)
    }
}
