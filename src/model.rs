//! The model of docs/PROTOCOL.md §1: its shapes, where each layer lives in the flat parameter buffer, and the
//! seeded initialization (PyTorch's `nn.Linear` for layers; `uniform` or `normal` for the codebook).

use crate::contract::Linear;
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
    /// Alternated optimization (Huh et al. 2023, a codebook-collapse remedy, docs/PROTOCOL.md §6.6): before each
    /// step's forward pass the codebook takes its own SGD step with momentum on L_cb of the batch's nearest codes,
    /// and the step assigns its codes again with it (no L_cb in the step).
    Alternate,
    /// The codebook never moves (no L_cb): FSQ's grid (docs/PROTOCOL.md §6.6), or a frozen initial codebook.
    Fixed,
}

/// A map of the encodings before the quantizer (docs/PROTOCOL.md §6.6): the quantizer, its statistics and the
/// decoder see `map(z)`; the encoder's gradient goes back through it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LatentMap {
    /// The encodings as they are.
    #[default]
    None,
    /// FSQ's bound with these levels per dimension ([`crate::reference::latent::fsq_bound`]).
    Fsq(Vec<u32>),
    /// Each encoding over its norm: cosine codes ([`crate::reference::latent::unit`]).
    Unit,
}

impl LatentMap {
    /// `map(z)` of `z` (rows x m).
    pub fn forward(&self, z: Vec<f64>, m: usize) -> Vec<f64> {
        match self {
            LatentMap::None => z,
            LatentMap::Fsq(levels) => crate::reference::latent::fsq_bound(&z, levels),
            LatentMap::Unit => crate::reference::latent::unit(&z, m),
        }
    }

    /// The gradient at `z` from the gradient `dy` at `map(z)`.
    pub fn backward(&self, z: &[f64], dy: Vec<f64>, m: usize) -> Vec<f64> {
        match self {
            LatentMap::None => dy,
            LatentMap::Fsq(levels) => crate::reference::latent::fsq_bound_backward(z, levels, &dy),
            LatentMap::Unit => crate::reference::latent::unit_backward(z, &dy, m),
        }
    }
}

/// How the commitment weight beta moves during training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BetaSchedule {
    /// beta stays as given.
    #[default]
    Fixed,
    /// Each step beta moves from the batch's code usage toward a target usage ([`crate::kernels::schedule`]).
    Adaptive,
}

/// How level 0 picks a row's code during training (evaluation always takes the nearest, docs/PROTOCOL.md §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// The nearest code (ties: the lowest k).
    #[default]
    Nearest,
    /// Stochastic code sampling (a remedy for codebook collapse, vector-quantize-pytorch's
    /// `stochastic_sample_codes`): the code drawn from softmax(-||z - c_k|| / tau) by the Gumbel-max trick, with
    /// the same hashed noise as the Gumbel estimators; the estimator's backward then runs at the drawn code.
    Stochastic,
}

impl Sampling {
    /// Whether this is the default, which results leave out (so that earlier results keep their keys).
    pub fn is_nearest(&self) -> bool {
        *self == Sampling::Nearest
    }
}

/// How the codebook the quantizer uses is parameterized (a codebook-collapse remedy, docs/PROTOCOL.md §6.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reparam {
    /// The codebook is itself the parameter.
    #[default]
    None,
    /// SimVQ (Zhu et al. 2024): the codebook is `C0 W^T + b`, a frozen random basis C0 through one learned linear
    /// layer, which the codebook's gradient trains.
    Simvq,
}

impl Reparam {
    /// Whether this is the default, which results leave out.
    pub fn is_none(&self) -> bool {
        *self == Reparam::None
    }
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
named_enum!(CodebookMode, "codebook mode", "grad, ema, alternate, fixed",
    [CodebookMode::Grad => "grad", CodebookMode::Ema => "ema", CodebookMode::Alternate => "alternate",
     CodebookMode::Fixed => "fixed"]);
named_enum!(BetaSchedule, "beta schedule", "fixed, adaptive", [BetaSchedule::Fixed => "fixed", BetaSchedule::Adaptive => "adaptive"]);
named_enum!(Sampling, "sampling", "nearest, stochastic", [Sampling::Nearest => "nearest", Sampling::Stochastic => "stochastic"]);
named_enum!(Reparam, "reparam", "none, simvq", [Reparam::None => "none", Reparam::Simvq => "simvq"]);

/// The sizes of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    /// Data dimension d.
    pub dim: u32,
    /// Latent dimension m.
    pub latent: u32,
    /// Codes K.
    pub codes: u32,
    /// The encoder kind; the decoder mirrors it.
    pub encoder: EncoderKind,
    /// Hidden width h of the `mlp` encoder and decoder.
    pub hidden: u32,
    /// A low-dimensional lookup's width w (docs/PROTOCOL.md §6.6): the encoder ends at w and a linear layer projects
    /// it to m; another brings the code back to w for the decoder. 0 is none.
    pub lookup_width: u32,
}

/// Where every layer's weights live in the flat parameter buffer: encoder layers first, then decoder layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The encoder's layers, input first: one for `linear` (d -> m), two for `mlp` (d -> h -> m).
    pub encoder: Vec<Linear>,
    /// The decoder's layers, input first: one for `linear` (m -> d), two for `mlp` (m -> h -> d).
    pub decoder: Vec<Linear>,
    /// Floats in the flat buffer.
    pub len: u32,
}

impl ModelShape {
    /// The number of parameters, or `None` where it overflows u64 (check before [`ModelShape::layout`], whose
    /// offsets are u32).
    pub fn param_count(&self) -> Option<u64> {
        let layer = |(i, o): (u32, u32)| (i as u64).checked_mul(o as u64)?.checked_add(o as u64);
        let (enc, dec) = self.dims();
        enc.into_iter().chain(dec).try_fold(0u64, |a, (dims, _)| a.checked_add(layer(dims)?))
    }

    /// Each encoder and decoder layer's (input, output) and whether a ReLU follows it.
    #[allow(clippy::type_complexity)]
    fn dims(&self) -> (Vec<((u32, u32), bool)>, Vec<((u32, u32), bool)>) {
        let (d, m, h) = (self.dim, self.latent, self.hidden);
        // Without a lookup, the encoder ends at m and the decoder starts there; with one, at its width w.
        let w = if self.lookup_width > 0 { self.lookup_width } else { m };
        let (mut enc, mut dec) = match self.encoder {
            EncoderKind::Linear => (vec![((d, w), false)], vec![((w, d), false)]),
            EncoderKind::Mlp => (vec![((d, h), true), ((h, w), false)], vec![((w, h), true), ((h, d), false)]),
        };
        if self.lookup_width > 0 {
            enc.push(((w, m), false));
            dec.insert(0, ((m, w), false));
        }
        (enc, dec)
    }

    /// The layers, each `W` then `b`, packed in order. The settings' checks keep the count within u32
    /// ([`crate::train::TrainConfig::check_sizes`]).
    pub fn layout(&self) -> Layout {
        let (enc, dec) = self.dims();
        let mut off = 0u32;
        let mut place = |dims: Vec<((u32, u32), bool)>| -> Vec<Linear> {
            dims.into_iter()
                .map(|((input, output), relu)| {
                    let layer = Linear { input, output, w_off: off, b_off: off + input * output, relu };
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

/// A trained model as stored by `vqgrad train --save-params`: safetensors with `encoder.{i}.weight` (`out x in`),
/// `encoder.{i}.bias`, `decoder.{i}.weight`, `decoder.{i}.bias` and `codebook` (`K x m`), all f32, and the run's
/// configuration (JSON) under the metadata key `config`.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedModel {
    /// Where each layer lives in `params`.
    pub layout: Layout,
    /// The flat parameters in [`Layout`] order.
    pub params: Vec<f32>,
    /// The codebook, `codes x latent` row-major.
    pub codebook: Vec<f32>,
    /// Codes K.
    pub codes: u32,
    /// Latent dimension m.
    pub latent: u32,
    /// The training configuration, as JSON text.
    pub config: String,
}

fn layer_names(layout: &Layout) -> Vec<(String, Linear)> {
    let enc = layout.encoder.iter().enumerate().map(|(i, l)| (format!("encoder.{i}"), *l));
    enc.chain(layout.decoder.iter().enumerate().map(|(i, l)| (format!("decoder.{i}"), *l))).collect()
}

impl SavedModel {
    /// Writes the safetensors file.
    pub fn save(&self, path: &std::path::Path) -> crate::Result<()> {
        use safetensors::tensor::{Dtype, TensorView};
        let bytes = |v: &[f32]| -> Vec<u8> { bytemuck::cast_slice(v).to_vec() };
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, l) in layer_names(&self.layout) {
            let (w, b) = (l.w_off as usize, l.b_off as usize);
            owned.push((
                format!("{name}.weight"),
                vec![l.output as usize, l.input as usize],
                bytes(&self.params[w..b]),
            ));
            owned.push((
                format!("{name}.bias"),
                vec![l.output as usize],
                bytes(&self.params[b..b + l.output as usize]),
            ));
        }
        owned.push(("codebook".into(), vec![self.codes as usize, self.latent as usize], bytes(&self.codebook)));
        let views: Vec<(String, TensorView<'_>)> = owned
            .iter()
            .map(|(n, shape, data)| TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (n.clone(), v)))
            .collect::<Result<_, _>>()
            .map_err(|e| crate::Error::Input(format!("{}: {e}", path.display())))?;
        let meta = std::collections::HashMap::from([("config".to_string(), self.config.clone())]);
        let data = safetensors::serialize(views, Some(meta))
            .map_err(|e| crate::Error::Input(format!("{}: {e}", path.display())))?;
        std::fs::write(path, data).map_err(|e| crate::Error::Input(format!("{}: cannot write: {e}", path.display())))
    }

    /// Reads a file written by [`SavedModel::save`], given the layout its configuration implies.
    pub fn load(path: &std::path::Path, shape: impl FnOnce(&str) -> crate::Result<ModelShape>) -> crate::Result<Self> {
        let name = path.display();
        let bad = |what: String| crate::Error::Input(format!("{name}: {what}"));
        let data = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&data).map_err(|e| bad(format!("not safetensors: {e}")))?;
        let config = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("config").cloned())
            .ok_or_else(|| bad("no `config` in the metadata: not written by vqgrad".into()))?;
        let model_shape = shape(&config)?;
        let layout = model_shape.layout();
        let tensors = safetensors::SafeTensors::deserialize(&data).map_err(|e| bad(format!("not safetensors: {e}")))?;
        let read = |tensor: &str, want: &[usize]| -> crate::Result<Vec<f32>> {
            let t = tensors.tensor(tensor).map_err(|_| bad(format!("no tensor `{tensor}`")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != want {
                return Err(bad(format!("`{tensor}` is {:?} {:?}, expected F32 {want:?}", t.dtype(), t.shape())));
            }
            Ok(bytemuck::pod_collect_to_vec(t.data()))
        };
        // Every tensor is read (and its shape checked) before `params` is allocated, so that metadata claiming a
        // large model costs no more memory than the file holds.
        let mut layers = Vec::new();
        for (n, l) in layer_names(&layout) {
            let (o, i) = (l.output as usize, l.input as usize);
            layers.push((l, read(&format!("{n}.weight"), &[o, i])?, read(&format!("{n}.bias"), &[o])?));
        }
        let mut params = vec![0.0f32; layout.len as usize];
        for (l, weight, bias) in layers {
            let (w, b) = (l.w_off as usize, l.b_off as usize);
            params[w..b].copy_from_slice(&weight);
            params[b..b + bias.len()].copy_from_slice(&bias);
        }
        let (k, m) = (model_shape.codes as usize, model_shape.latent as usize);
        let codebook = read("codebook", &[k, m])?;
        // Weights are untrusted input: a non-finite one is an error here, not a panic or a hang downstream.
        for (what, values) in [("the parameters", &params), ("the codebook", &codebook)] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("{what} hold a non-finite value ({} at index {i})", values[i])));
            }
        }
        Ok(SavedModel { layout, params, codebook, codes: model_shape.codes, latent: model_shape.latent, config })
    }
}
