//! The whole VQ layer (`vqgrad::kernels::vq`) on caller-made buffers, against the CPU reference.

use crate::common::{Data, assert_clean, assert_close_each, bits, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::codebook::EmaSettings;
use vqgrad::kernels::vq::{CodebookUpdate, VqBuffers, VqLayer, VqSettings, VqShape};
use vqgrad::{Error, Estimator, Gpu, reference};

struct Buffers {
    z: wgpu::Buffer,
    codebook: wgpu::Buffer,
    q: wgpu::Buffer,
    index: wgpu::Buffer,
    distance: wgpu::Buffer,
    grad_q: wgpu::Buffer,
    grad_z: wgpu::Buffer,
    codebook_grad: wgpu::Buffer,
}

/// The first `len` values of a buffer (buffers are allocated in whole blocks).
fn read<T: bytemuck::Pod>(gpu: &Gpu, buffer: &wgpu::Buffer, len: usize) -> Vec<T> {
    gpu.read::<T>(buffer).unwrap()[..len].to_vec()
}

impl Buffers {
    /// Buffers for `n` rows: z and g are `n x m`.
    fn new(gpu: &Gpu, n: usize, z: &[f32], codebook: &[f32], g: &[f32]) -> Buffers {
        Buffers {
            z: gpu.upload("z", z).unwrap(),
            codebook: gpu.upload("codebook", codebook).unwrap(),
            q: gpu.upload("q", &vec![f32::NAN; g.len()]).unwrap(),
            index: gpu.zeroed::<u32>("index", n).unwrap(),
            distance: gpu.zeroed::<f32>("distance", n).unwrap(),
            grad_q: gpu.upload("grad_q", g).unwrap(),
            grad_z: gpu.upload("grad_z", &vec![f32::NAN; g.len()]).unwrap(),
            codebook_grad: gpu.upload("codebook_grad", &vec![f32::NAN; codebook.len()]).unwrap(),
        }
    }
    fn vq(&self) -> VqBuffers<'_> {
        VqBuffers {
            z: &self.z,
            codebook: &self.codebook,
            q: &self.q,
            index: &self.index,
            distance: &self.distance,
            grad_q: &self.grad_q,
            grad_z: &self.grad_z,
            codebook_grad: Some(&self.codebook_grad),
        }
    }
}

/// Forward and backward in one pass, with the gradient update, for every estimator: the codes, distances and q
/// equal the f64 reference's assignment; dL/dz (the estimator plus the commitment term) and dL_cb/dC agree with
/// the reference to a few f32 roundings (relative 2e-5 of each value's scale); the codebook is left alone. Shapes
/// include K = 1, m not a multiple of 4, and n not a multiple of any tile.
#[test]
fn forward_and_backward_match_the_reference() {
    let gpu = gpu_or_skip!();
    let layer = VqLayer::new(&gpu.device).unwrap();
    for &(n, k, m) in &[(300, 32, 4), (257, 1, 3), (100, 50, 64)] {
        for estimator in Estimator::ROW {
            let mut d = Data::new((n * k + m) as u64);
            let (z, codebook, g) = (d.normal(n * m, 1.0), d.normal(k * m, 1.0), d.normal(n * m, 1.0));
            let b = Buffers::new(&gpu, n, &z, &codebook, &g);
            let shape = VqShape { n: n as u32, k: k as u32, m: m as u32 };
            let settings = VqSettings { estimator, beta: 0.25, update: CodebookUpdate::Gradient };
            let bound = layer.bind(&gpu.device, &b.vq(), shape, settings).unwrap();
            run_pass(&gpu, |pass| {
                bound.encode_forward(pass);
                bound.encode_backward(pass);
            });
            let what = format!("n={n} k={k} m={m} {estimator}");
            let want = reference::assign(&z, &codebook, m);
            let index: Vec<u32> = read(&gpu, &b.index, n);
            assert_eq!(index, want.index, "{what}: codes");
            let distance: Vec<f32> = read(&gpu, &b.distance, n);
            assert_close_each(&format!("{what}: distance"), &distance, &want.distance, |i| {
                1e-5 * (want.distance[i] + 1.0)
            });
            let q: Vec<f32> = read(&gpu, &b.q, n * m);
            let q_want: Vec<f32> = index.iter().flat_map(|&a| codebook[a as usize * m..][..m].to_vec()).collect();
            assert_eq!(bits(&q), bits(&q_want), "{what}: q");
            let grad_z: Vec<f32> = read(&gpu, &b.grad_z, n * m);
            let grad_want = reference::estimator_grad(estimator, &g, &z, &index, &codebook, m, 0.25, n);
            assert_close_each(&format!("{what}: dL/dz"), &grad_z, &grad_want, |i| 2e-5 * (grad_want[i].abs() + 1.0));
            let cb_grad: Vec<f32> = read(&gpu, &b.codebook_grad, k * m);
            let cb_want = reference::codebook_grad(&z, &index, &codebook, m, n);
            assert_close_each(&format!("{what}: dL/dC"), &cb_grad, &cb_want, |i| 2e-5 * (cb_want[i].abs() + 1e-3));
            let after: Vec<f32> = read(&gpu, &b.codebook, k * m);
            assert_eq!(bits(&after), bits(&codebook), "{what}: the gradient update leaves the codebook alone");
        }
    }
    assert_clean(&gpu);
}

/// With the EMA update, three steps from `record_ema_init` follow the reference's EMA (N_k = 1, M_k = c_k at the
/// start) to relative 1e-5; a second `record_ema_init` restarts the averages from the codebook as it is then.
#[test]
fn ema_steps_follow_the_reference_and_restart() {
    let gpu = gpu_or_skip!();
    let layer = VqLayer::new(&gpu.device).unwrap();
    let (n, k, m) = (400, 16, 4);
    let mut d = Data::new(11);
    let (z, codebook, g) = (d.normal(n * m, 1.0), d.normal(k * m, 0.5), d.normal(n * m, 1.0));
    let b = Buffers::new(&gpu, n, &z, &codebook, &g);
    let ema = EmaSettings::default();
    let settings = VqSettings { estimator: Estimator::Ste, beta: 0.0, update: CodebookUpdate::Ema(ema) };
    let bound = layer.bind(&gpu.device, &b.vq(), VqShape { n: n as u32, k: k as u32, m: m as u32 }, settings).unwrap();
    let step = |init: bool| {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        if init {
            bound.record_ema_init(&mut encoder);
        }
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            bound.encode_forward(&mut pass);
            bound.encode_backward(&mut pass);
        }
        gpu.queue.submit([encoder.finish()]);
    };
    let (mut state, mut want) = (reference::EmaState::new(&codebook, k), codebook.clone());
    for round in 0..2 {
        for s in 0..3 {
            step(s == 0);
            if s == 0 {
                state = reference::EmaState::new(&want, k); // the restart takes the codebook as it is
            }
            let a = reference::assign(&z, &want, m);
            reference::ema_update(&mut state, &mut want, &z, &a.index, m, ema);
            let got: Vec<f32> = read(&gpu, &b.codebook, k * m);
            let tol = |e: usize| 1e-5 * (want[e].abs() as f64 + 1e-3);
            assert_close_each(&format!("round {round} step {s}: codebook"), &got, &reference::to_f64(&want), tol);
            want = got; // each step starts from the GPU's codebook, so the rounding never compounds
        }
    }
    assert_clean(&gpu);
}

/// Bad bindings are errors that name what is wrong.
#[test]
fn bad_bindings_are_clear_errors() {
    let gpu = gpu_or_skip!();
    let layer = VqLayer::new(&gpu.device).unwrap();
    let b = Buffers::new(&gpu, 4, &[0.0; 8], &[0.0; 4], &[0.0; 8]);
    let shape = VqShape { n: 4, k: 2, m: 2 };
    let settings = VqSettings { estimator: Estimator::Ste, beta: 0.25, update: CodebookUpdate::Gradient };
    let no_grad = VqBuffers { codebook_grad: None, ..b.vq() };
    assert!(matches!(layer.bind(&gpu.device, &no_grad, shape, settings), Err(Error::Input(_))));
    let short = gpu.zeroed::<f32>("short", 3).unwrap();
    let small_q = VqBuffers { q: &short, ..b.vq() };
    match layer.bind(&gpu.device, &small_q, shape, settings) {
        Err(Error::BufferTooSmall { buffer: "q", expected: 32, .. }) => {}
        other => panic!("expected q too small, got {:?}", other.err()),
    }
    let zero = VqShape { k: 0, ..shape };
    assert!(matches!(layer.bind(&gpu.device, &b.vq(), zero, settings), Err(Error::Shape(_))));
    let negative = VqSettings { beta: -1.0, ..settings };
    assert!(matches!(layer.bind(&gpu.device, &b.vq(), shape, negative), Err(Error::Input(_))));
    // The EMA state starts as a copy of the codebook, so that update needs COPY_SRC on it.
    let storage_only = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("storage-only codebook"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let ema = VqSettings { update: CodebookUpdate::Ema(EmaSettings::default()), ..settings };
    let no_copy = VqBuffers { codebook: &storage_only, ..b.vq() };
    match layer.bind(&gpu.device, &no_copy, shape, ema) {
        Err(Error::BufferUsage { buffer: "codebook", .. }) => {}
        other => panic!("expected a usage error naming the codebook, got {:?}", other.err()),
    }
    assert_clean(&gpu);
}
