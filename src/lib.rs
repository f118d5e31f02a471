//! # vqgrad
//!
//! Vector-quantized autoencoders on the GPU through wgpu and WGSL compute shaders, to study how the gradient
//! estimator at the quantization layer changes codebook use (see docs/PROTOCOL.md).
//!
//! - [`kernels`]: the WGSL kernel families, each usable alone on the caller's own `wgpu::Device` and buffers:
//!   nearest code ([`kernels::assign`]), estimator backward ([`kernels::estimator`]), codebook updates
//!   ([`kernels::codebook`]), statistics ([`kernels::stats`]) and a whole VQ layer between the caller's own encoder
//!   and decoder ([`kernels::vq`]). These five modules' documentation starts with a runnable example.
//! - [`reference`](mod@reference): the same computations in plain Rust with f64 accumulation: the tests' oracle,
//!   and the engine used where no adapter exists.
//! - [`gpu`]: adapter choice, device limits, error capture and buffer helpers.
//! - [`shaders`]: the WGSL sources as constants; with the `translate` feature, naga's SPIR-V, MSL and HLSL.
//! - With the `study` feature (on by default): `data` (docs/PROTOCOL.md's data sets and `.npy` input), `model` (shapes,
//!   parameter layout, initialization), `train` (the GPU and CPU training engines) and `analysis` (statistics).
//!
//! Features: `cli` (default: the `vqgrad` binary, with `study` and `translate`), `study`, `translate`. With
//! `default-features = false` the library builds on wgpu, bytemuck, encase, pollster and thiserror alone.

#![warn(missing_docs)]

#[cfg(feature = "study")]
pub mod analysis;
#[cfg(feature = "study")]
pub mod bias;
pub mod contract;
#[cfg(feature = "study")]
pub mod data;
pub mod error;
pub mod estimator;
pub mod gpu;
pub mod kernels;
#[cfg(feature = "study")]
pub mod model;
pub mod reference;
pub mod shaders;
#[cfg(feature = "study")]
pub mod train;

pub use error::{Error, Result};
pub use estimator::Estimator;
pub use gpu::{Gpu, GpuOptions};
