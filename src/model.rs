//! The model of STUDY.md section 1: its shapes, where each layer lives in the flat parameter buffer, and the
//! seeded initialization (PyTorch's `nn.Linear` for layers; `uniform` or `normal` for the codebook).

use crate::kernels::dense::Linear;
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use std::fmt;
use std::str::FromStr;

/// The encoder (and the decoder that mirrors it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderKind {
    /// `z = W_e x + b_e`; the decoder `xhat = W_d q + b_d`.
    Linear,
    /// `d -> h -> m` with ReLU after the hidden layer; the decoder `m -> h -> d` likewise.
    Mlp,
}

/// How the codebook starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodebookInit {
    /// U(-1/K, 1/K) per entry (the original VQ-VAE).
    Uniform,
    /// N(0, 1) per entry.
    Normal,
    /// k-means++ then 10 Lloyd iterations on the encodings of the first 4096 training samples.
    Kmeans,
}

/// How the codebook learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodebookMode {
    /// A parameter: Adam on L_cb.
    Grad,
    /// Exponential moving averages of counts and sums (no L_cb).
    Ema,
}

macro_rules! named_enum {
    ($t:ty, $what:literal, $expected:literal, [$($v:path => $n:literal),*]) => {
        impl $t {
            /// The name used on the command line and in results.
            pub fn name(self) -> &'static str {
                match self { $($v => $n),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
        impl FromStr for $t {
            type Err = crate::Error;
            fn from_str(s: &str) -> crate::Result<Self> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($n => Ok($v),)*
                    _ => Err(crate::Error::InvalidSetting { what: $what, value: s.to_string(), expected: $expected }),
                }
            }
        }
    };
}

named_enum!(EncoderKind, "encoder", "linear, mlp", [EncoderKind::Linear => "linear", EncoderKind::Mlp => "mlp"]);
named_enum!(CodebookInit, "codebook init", "uniform, normal, kmeans",
    [CodebookInit::Uniform => "uniform", CodebookInit::Normal => "normal", CodebookInit::Kmeans => "kmeans"]);
named_enum!(CodebookMode, "codebook mode", "grad, ema", [CodebookMode::Grad => "grad", CodebookMode::Ema => "ema"]);

/// The sizes of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    /// Data dimension d.
    pub dim: u32,
    /// Latent dimension m.
    pub latent: u32,
    /// Codes K.
    pub codes: u32,
    pub encoder: EncoderKind,
    /// Hidden width h of the `mlp` encoder and decoder.
    pub hidden: u32,
}

/// Where every layer's weights live in the flat parameter buffer: encoder layers first, then decoder layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub encoder: Vec<Linear>,
    pub decoder: Vec<Linear>,
    /// Floats in the flat buffer.
    pub len: u32,
}

impl ModelShape {
    /// The layers, each `W` then `b`, packed in order.
    pub fn layout(&self) -> Layout {
        let (d, m, h) = (self.dim, self.latent, self.hidden);
        // (input, output) of each layer.
        let (enc, dec) = match self.encoder {
            EncoderKind::Linear => (vec![(d, m)], vec![(m, d)]),
            EncoderKind::Mlp => (vec![(d, h), (h, m)], vec![(m, h), (h, d)]),
        };
        let mut off = 0u32;
        let mut place = |dims: Vec<(u32, u32)>| -> Vec<Linear> {
            dims.into_iter()
                .map(|(input, output)| {
                    let layer = Linear { input, output, w_off: off, b_off: off + input * output };
                    off += input * output + output;
                    layer
                })
                .collect()
        };
        let encoder = place(enc);
        let decoder = place(dec);
        Layout { encoder, decoder, len: off }
    }
}

/// PyTorch's `nn.Linear` initialization for every layer, in layout order: for each layer, all of W (row-major),
/// then b, each ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
pub fn init_params(layout: &Layout, rng: &mut impl rand::Rng) -> Vec<f32> {
    let mut params = vec![0.0f32; layout.len as usize];
    for layer in layout.encoder.iter().chain(&layout.decoder) {
        let bound = 1.0 / (layer.input as f64).sqrt();
        let (w, b) = (layer.w_off as usize, layer.b_off as usize);
        let end = b + layer.output as usize;
        for v in &mut params[w..end] {
            *v = rng.random_range(-bound..bound) as f32;
        }
    }
    params
}

/// The codebook (`k x m`) for `uniform` or `normal`; `kmeans` starts from `uniform` and is refined by the trainer.
pub fn init_codebook(init: CodebookInit, k: u32, m: u32, rng: &mut impl rand::Rng) -> Vec<f32> {
    let len = k as usize * m as usize;
    match init {
        CodebookInit::Normal => (0..len).map(|_| StandardNormal.sample(rng)).map(|v: f64| v as f32).collect(),
        CodebookInit::Uniform | CodebookInit::Kmeans => {
            let bound = 1.0 / k as f64;
            (0..len).map(|_| rng.random_range(-bound..bound) as f32).collect()
        }
    }
}
