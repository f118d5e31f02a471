//! The gradient estimators at the quantization layer (docs/PROTOCOL.md §2).

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// How the gradient passes the quantization `q = c[argmin_k ||z - c_k||]` (the Gumbel estimators sample the code
/// instead), given g = dL/dq~.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "study", derive(serde::Serialize, serde::Deserialize), serde(rename_all = "kebab-case"))]
pub enum Estimator {
    /// Straight-through: `g` (dq/dz = I).
    Ste,
    /// The seed's: `(g.u) u` with `u = (q - z) / (||q - z|| + 1e-8)` (dq/dz = u u^T; z == q gives 0).
    Rotation,
    /// Fifty et al. (ICLR 2025): `lambda R^T g`, R the rotation taking z^ to q^, lambda = ||q|| / ||z||.
    RotationTrick,
    /// The complement of `Rotation`: `g - (g.u) u` (vector-quantize-pytorch's `directional_reparam`, no noise).
    #[cfg_attr(feature = "study", serde(rename = "diveq"))]
    DivEq,
    /// Straight-through Gumbel-softmax: the forward takes the hard sample `argmax_k (-||z - c_k||^2 / tau + G_k)`
    /// (G_k standard Gumbel noise); the backward is the exact gradient of the relaxed
    /// `sum_k softmax(-||z - c||^2 / tau + G)_k c_k` (`shaders/soft.wgsl`).
    Gumbel,
    /// The Gumbel hard sample in the forward, the rotation trick's backward at the sampled code.
    GumbelRotationTrick,
    /// Learned transport: `M g`, M an m x m matrix per run that starts at I and is fitted by Adam, each step, to
    /// the soft-assignment surrogate's exact backward of the same g at temperature tau (`shaders/learned.wgsl`).
    Learned,
}

impl Estimator {
    /// Every estimator, in the order of their shader ids.
    pub const ALL: [Estimator; 7] = [
        Estimator::Ste,
        Estimator::Rotation,
        Estimator::RotationTrick,
        Estimator::DivEq,
        Estimator::Gumbel,
        Estimator::GumbelRotationTrick,
        Estimator::Learned,
    ];

    /// The estimators that are a function of `(g, z, q)` alone, computed by `shaders/estimator.wgsl` and
    /// [`crate::reference::estimator_row`] at the nearest code.
    pub const ROW: [Estimator; 4] = [Estimator::Ste, Estimator::Rotation, Estimator::RotationTrick, Estimator::DivEq];

    /// Whether the forward takes a Gumbel hard sample instead of the nearest code.
    pub fn samples_gumbel(self) -> bool {
        matches!(self, Estimator::Gumbel | Estimator::GumbelRotationTrick)
    }

    /// Whether the backward is the relaxation's (`shaders/soft.wgsl`), not `shaders/estimator.wgsl`'s.
    pub fn soft_backward(self) -> bool {
        self == Estimator::Gumbel
    }

    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Ste => "ste",
            Estimator::Rotation => "rotation",
            Estimator::RotationTrick => "rotation-trick",
            Estimator::DivEq => "diveq",
            Estimator::Gumbel => "gumbel",
            Estimator::GumbelRotationTrick => "gumbel-rotation-trick",
            Estimator::Learned => "learned",
        }
    }

    /// The id `shaders/estimator.wgsl` switches on.
    pub fn shader_id(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Estimator {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Estimator::ALL.into_iter().find(|e| e.name() == s.trim().to_ascii_lowercase()).ok_or_else(|| {
            Error::InvalidSetting {
                what: "estimator",
                value: s.to_string(),
                expected: "ste, rotation, rotation-trick, diveq, gumbel, gumbel-rotation-trick, learned",
            }
        })
    }
}
