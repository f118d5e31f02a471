//! GPU kernels against the CPU reference (`vqgrad::reference`), on seeded random inputs and edge cases.
//! Each test runs on its own device, states its tolerance, and fails on any wgpu validation error.
//! Without an adapter each test prints SKIPPED and passes, unless VQGRAD_REQUIRE_GPU=1.

#[path = "../common/mod.rs"]
mod common;

#[cfg(feature = "study")] // the f64 Adam lives in the study part of the reference
mod adam;
mod affine;
mod assign;
mod codebook;
mod dense;
mod device;
mod estimator;
mod gather;
mod latent;
mod learned;
mod orthogonal;
mod residual;
mod schedule;
mod sgd;
mod soft;
mod stats;
mod vq;
