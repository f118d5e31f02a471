//! `cargo bench`: the assign and estimator kernels and one training chunk on the default adapter, with the CPU
//! engine (and for assign the f64 reference) beside them. Throughput is reported in elements (rows for assign,
//! steps for training). Without an adapter the GPU benchmarks are skipped with a note. `vqgrad bench` gives the full table (GFLOP/s, ratios, profiles).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vqgrad::Gpu;
use vqgrad::kernels::assign::{Assign, AssignBuffers, AssignShape};
use vqgrad::train::TrainConfig;
use vqgrad::train::Trainer;
use vqgrad::train::gpu::BatchTrainer;

fn values(len: u32, seed: u32) -> Vec<f32> {
    // A cheap deterministic spread in [-1, 1): the timing does not depend on the values.
    (0..len).map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2000) as f32 / 1000.0 - 1.0).collect()
}

fn gpu() -> Option<Gpu> {
    match Gpu::new(&vqgrad::GpuOptions::default()) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            eprintln!("GPU benchmarks skipped: {e}");
            None
        }
    }
}

fn assign(c: &mut Criterion) {
    let mut group = c.benchmark_group("assign");
    group.sample_size(10);
    let (n, k, m) = (16384u32, 512u32, 64u32);
    let (z, codebook) = (values(n * m, 1), values(k * m, 2));
    group.throughput(Throughput::Elements(n as u64));
    if let Some(gpu) = gpu() {
        let zb = gpu.upload("z", &z).unwrap();
        let cb = gpu.upload("codebook", &codebook).unwrap();
        let index = gpu.zeroed::<u32>("index", n as usize).unwrap();
        let distance = gpu.zeroed::<f32>("distance", n as usize).unwrap();
        let buffers = AssignBuffers { z: &zb, codebook: &cb, index: &index, distance: &distance };
        let bound = Assign::new(&gpu.device).unwrap().bind(&gpu.device, &buffers, AssignShape { n, k, m }).unwrap();
        group.bench_function(format!("gpu N={n} K={k} m={m}"), |b| {
            b.iter(|| {
                let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
                bound.encode(&mut encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default()));
                gpu.queue.submit([encoder.finish()]);
                gpu.wait().unwrap();
            })
        });
    }
    let (mut index, mut distance) = (vec![0u32; n as usize], vec![0.0f32; n as usize]);
    group.bench_function(format!("cpu engine N={n} K={k} m={m}"), |b| {
        b.iter(|| {
            vqgrad::train::fast::quantize::nearest(&z, &codebook, m as usize, &mut index, &mut distance);
            black_box(&index);
        })
    });
    group.bench_function(format!("cpu reference N={n} K={k} m={m}"), |b| {
        b.iter(|| black_box(vqgrad::reference::assign(&z, &codebook, m as usize)))
    });
    group.finish();
}

fn estimators(c: &mut Criterion) {
    use vqgrad::kernels::estimator::{EstimatorBackward, EstimatorBuffers, EstimatorSettings, EstimatorShape};
    let Some(gpu) = gpu() else { return };
    let mut group = c.benchmark_group("estimator backward");
    group.sample_size(10);
    let (n, k, m) = (16384u32, 512u32, 64u32);
    group.throughput(Throughput::Elements(n as u64));
    let up = |label, v: &[f32]| gpu.upload(label, v).unwrap();
    let (g, z, codebook) = (up("g", &values(n * m, 3)), up("z", &values(n * m, 4)), up("codebook", &values(k * m, 5)));
    let index = gpu.upload("index", &(0..n).map(|i| i % k).collect::<Vec<u32>>()).unwrap();
    let out = gpu.zeroed::<f32>("grad z", (n * m) as usize).unwrap();
    let kernel = EstimatorBackward::new(&gpu.device).unwrap();
    let buffers = EstimatorBuffers { g: &g, z: &z, index: &index, codebook: &codebook, grad_z: &out };
    for estimator in vqgrad::Estimator::ROW {
        let settings = EstimatorSettings { estimator, beta: 0.25, batch: n };
        let bound = kernel.bind(&gpu.device, &buffers, EstimatorShape { n, k, m }, settings).unwrap();
        group.bench_function(format!("{} N={n} m={m}", estimator.name()), |b| {
            b.iter(|| {
                let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
                bound.encode(&mut encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default()));
                gpu.queue.submit([encoder.finish()]);
                gpu.wait().unwrap();
            })
        });
    }
    group.finish();
}

/// E1 training, 64 steps a sample, per estimator: on the CPU engine always, on the GPU engine where there is one.
fn training(c: &mut Criterion) {
    let mut group = c.benchmark_group("train E1");
    group.sample_size(10);
    let steps = 64;
    group.throughput(Throughput::Elements(steps as u64));
    let gpu = gpu();
    for estimator in vqgrad::Estimator::ALL {
        let config = TrainConfig { estimator, steps: u32::MAX, ..TrainConfig::default() };
        let data = config.load_data().unwrap();
        let mut cpu = vqgrad::train::fast::FastTrainer::new(&config, data.clone()).unwrap();
        group.bench_function(format!("cpu engine {}", estimator.name()), |b| {
            b.iter(|| (0..steps).for_each(|_| cpu.step()))
        });
        if let Some(gpu) = &gpu {
            let mut trainer = BatchTrainer::one(gpu, &config, &data).unwrap();
            group.bench_function(format!("gpu {}", estimator.name()), |b| {
                b.iter(|| {
                    trainer.train_steps(steps).unwrap();
                    gpu.wait().unwrap();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, assign, estimators, training);
criterion_main!(benches);
