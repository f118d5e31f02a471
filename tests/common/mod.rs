//! Shared test helpers: a GPU per test (or a printed skip), seeded data, and comparisons that report the largest
//! error and where it is.
#![allow(dead_code)] // each test crate uses a part

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vqgrad::{Gpu, GpuOptions};

/// A fresh device for one test (tests run in parallel; each has its own device, so one test's errors never
/// show up in another's). `None` means: skip, the reason printed. With `VQGRAD_REQUIRE_GPU=1` a missing adapter
/// fails the test instead.
pub fn gpu() -> Option<Gpu> {
    let options = GpuOptions::from_env().expect("VQGRAD_BACKEND / VQGRAD_ADAPTER are valid");
    match Gpu::new(&options) {
        Ok(gpu) => Some(gpu),
        Err(e) if std::env::var("VQGRAD_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("VQGRAD_REQUIRE_GPU=1 but no usable adapter: {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED (no GPU adapter: {e}); install mesa-vulkan-drivers for lavapipe, or set VQGRAD_REQUIRE_GPU=1 to fail"
            );
            None
        }
    }
}

/// `let gpu = gpu_or_skip!();` returns from the test when no adapter exists (and VQGRAD_REQUIRE_GPU is not 1).
#[macro_export]
macro_rules! gpu_or_skip {
    () => {
        match $crate::common::gpu() {
            Some(gpu) => gpu,
            None => return,
        }
    };
}

/// Fails the test if the device was lost or reported any error outside vqgrad's error scopes.
pub fn assert_clean(gpu: &Gpu) {
    if let Err(e) = gpu.wait() {
        panic!("the device reported an error: {e}");
    }
}

/// Seeded data.
pub struct Data(ChaCha8Rng);

impl Data {
    pub fn new(seed: u64) -> Self {
        Data(ChaCha8Rng::seed_from_u64(seed))
    }

    /// N(0, scale^2) samples (Box-Muller).
    pub fn normal(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| {
                let u1: f64 = self.0.random_range(f64::EPSILON..1.0);
                let u2: f64 = self.0.random();
                (scale as f64 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect()
    }

    /// Uniform integers in 0..k.
    pub fn indices(&mut self, len: usize, k: u32) -> Vec<u32> {
        (0..len).map(|_| self.0.random_range(0..k)).collect()
    }
}

/// Asserts `|gpu[i] - cpu[i]| <= tol[i]` everywhere; on failure prints the worst element (the largest ratio of
/// error to tolerance), its index and the values.
pub fn assert_close_each(what: &str, gpu: &[f32], cpu: &[f64], tol: impl Fn(usize) -> f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let mut worst: Option<(f64, usize)> = None;
    let mut max_abs = 0.0f64;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(g.is_finite(), "{what}: GPU value at {i} is {g} (CPU {c})");
        let err = (g as f64 - c).abs();
        max_abs = max_abs.max(err);
        let ratio = err / tol(i);
        if worst.is_none_or(|(r, _)| ratio > r) {
            worst = Some((ratio, i));
        }
    }
    if let Some((ratio, i)) = worst {
        eprintln!("{what}: largest absolute error {max_abs:.3e}, largest error/tolerance {ratio:.3}");
        assert!(
            ratio <= 1.0,
            "{what}: largest error at element {i}: GPU {} vs CPU {} (error {:.3e}, tolerance {:.3e}); largest absolute error {max_abs:.3e}",
            gpu[i],
            cpu[i],
            (gpu[i] as f64 - cpu[i]).abs(),
            tol(i)
        );
    }
}

/// Runs `record` in one compute pass, submits, and waits.
pub fn run_pass(gpu: &Gpu, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        record(&mut pass);
    }
    gpu.queue.submit([encoder.finish()]);
    assert_clean(gpu);
}

/// The bit patterns of a float slice, for bit-identity checks.
pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// A minimal .npy (format 1.0) writer for the tests: `descr` like "<f4", `shape`, raw little-endian bytes.
pub fn write_npy(path: &std::path::Path, descr: &str, shape: &[usize], data: &[u8]) {
    let shape_txt = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
