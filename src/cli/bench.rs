//! `vqgrad bench`: the nearest-code search, training and sweeps on the CPU engine and, where there is an adapter,
//! on the GPU engine, in the same run.
//! Every figure is a median over repetitions after a warm-up (shader compilation happens at the first dispatch
//! on some drivers); ratios are taken within one run, since absolute times on shared machines drift.

use super::overhead::{self, median};
use serde::Serialize;
use std::time::Instant;
use vqgrad::kernels::assign::{Assign, AssignBuffers, AssignShape};
use vqgrad::train::Engine;
use vqgrad::train::TrainConfig;
use vqgrad::{Estimator, Gpu, gpu::timing::Timestamps};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Fewer repetitions and shorter sweeps (about a minute on lavapipe instead of several).
    #[arg(long)]
    pub quick: bool,
    /// Tiny shapes and a few steps: checks that every section runs (for tests; the figures mean nothing).
    #[arg(long, hide = true)]
    pub smoke: bool,
}

/// The assign shapes: the two PyTorch anchors and a VQ-typical one (N, K, m).
const ASSIGN_SHAPES: [(u32, u32, u32); 3] = [(65536, 512, 64), (16384, 1024, 256), (65536, 1024, 8)];

#[derive(Serialize)]
struct AssignFigure {
    n: u32,
    k: u32,
    m: u32,
    /// 2 N K m over the wall time of one dispatch, submitted and waited for (without an adapter: none).
    gpu_gflops: Option<f64>,
    /// 2 N K m over the GPU's own timestamps around the dispatch, where the adapter has them.
    gpu_kernel_gflops: Option<f64>,
    /// The CPU engine's search (`vqgrad::train::fast::quantize::nearest`: f32, every core).
    cpu_gflops: f64,
    gpu_over_cpu: Option<f64>,
}

/// The estimator backward kernel alone at one shape, timed by the GPU's timestamps where it has them.
#[derive(Serialize)]
struct EstimatorFigure {
    estimator: String,
    n: u32,
    m: u32,
    k: u32,
    /// Microseconds per dispatch: timestamps where the adapter has them, else the wall time of submit and wait.
    us: f64,
    /// Median over rounds of this estimator's time over `ste`'s in the same round.
    ratio_to_ste: f64,
}

/// One estimator's training speed on each engine, with its step time over `ste`'s taken within each round (median
/// and range over the rounds). The GPU's figures are absent without an adapter.
#[derive(Serialize)]
struct TrainingFigure {
    setting: String,
    estimator: String,
    gpu_steps_per_sec: Option<f64>,
    gpu_ratio_to_ste: Option<f64>,
    gpu_ratio_range: Option<(f64, f64)>,
    cpu_steps_per_sec: f64,
    cpu_ratio_to_ste: f64,
    cpu_ratio_range: (f64, f64),
}

#[derive(Serialize)]
struct SweepFigure {
    /// `gpu` or `cpu`.
    engine: String,
    runs: usize,
    steps_per_run: u32,
    /// Run-steps per second over the whole grid, building each run and evaluating it included.
    unbatched_run_steps_per_sec: f64,
    /// The runs in batches: on the GPU as many to a batch as the device's binding size allows; on the CPU all of
    /// them, each on a thread of its own.
    batched_run_steps_per_sec: f64,
    runs_per_batch: usize,
    /// Training alone, after a warm-up: one batch of `runs_per_batch` E1 runs, in run-steps per second.
    batch_training_run_steps_per_sec: f64,
}

#[derive(Serialize)]
struct KernelTime {
    estimator: String,
    kernel: String,
    us_per_step: f64,
}

#[derive(Serialize)]
struct Memory {
    peak_host_bytes: Option<u64>,
    /// Storage buffers of one E1 run on the GPU (0 without an adapter).
    e1_gpu_buffer_bytes: u64,
}

#[derive(Serialize)]
struct Report {
    /// The adapter, or none: then the CPU engine's figures alone.
    adapter: Option<String>,
    /// The CPU engine: its GEMM's instruction set and threads.
    cpu: String,
    timestamps: bool,
    assign: Vec<AssignFigure>,
    estimator_kernel: Vec<EstimatorFigure>,
    training: Vec<TrainingFigure>,
    /// The E1 sweep on each engine: the GPU's first where there is one.
    sweep: Vec<SweepFigure>,
    profile: Vec<KernelTime>,
    memory: Memory,
}

pub fn run(options: &vqgrad::gpu::GpuOptions, args: &BenchArgs) -> anyhow::Result<()> {
    let gpu = match Gpu::new(options) {
        Ok(gpu) => Some(gpu),
        // An adapter asked for by name must be there.
        Err(e) if options.adapter.is_some() => return Err(e.into()),
        Err(e) => {
            eprintln!("no adapter ({e}): the CPU engine's figures alone");
            None
        }
    };
    let adapter = gpu.as_ref().map(Gpu::describe);
    let cpu = Engine::Cpu.adapter().name;
    eprintln!("bench on {} and {cpu}", adapter.as_deref().unwrap_or("no adapter"));
    let reps = if args.quick || args.smoke { 3 } else { 7 };
    let timestamps = match &gpu {
        Some(gpu) => Timestamps::new(gpu, 2)?.is_some(),
        None => false,
    };
    let shapes: &[(u32, u32, u32)] = if args.smoke { &[(300, 17, 4), (100, 5, 3)] } else { &ASSIGN_SHAPES };
    let assign =
        shapes.iter().map(|&shape| bench_assign(gpu.as_ref(), shape, reps)).collect::<anyhow::Result<Vec<_>>>()?;
    let estimator_shape = if args.smoke { (300, 8, 5) } else { (65536, 64, 512) };
    let estimator_kernel = match &gpu {
        Some(gpu) => bench_estimators(gpu, estimator_shape, reps)?,
        None => Vec::new(),
    };
    let engine = gpu.map(|gpu| Engine::Gpu(Box::new(gpu)));
    let training = bench_training(engine.as_ref(), args)?;
    eprintln!("sweep: 4 estimators x 5 seeds, one at a time and batched");
    let sweep_steps = if args.smoke {
        2
    } else if args.quick {
        64
    } else {
        256
    };
    let mut sweep = Vec::new();
    for engine in engine.iter().chain([&Engine::Cpu]) {
        sweep.push(bench_sweep(engine, sweep_steps)?);
    }
    eprintln!("profile");
    let (profile, e1_gpu_buffer_bytes) = match &engine {
        Some(engine) => bench_profile(engine)?,
        None => (Vec::new(), 0),
    };
    let memory = Memory { peak_host_bytes: peak_host_bytes(), e1_gpu_buffer_bytes };
    let report = Report { adapter, cpu, timestamps, assign, estimator_kernel, training, sweep, profile, memory };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_tables(&report);
    }
    Ok(())
}

/// Whole training steps through the engine interface, on the GPU engine (where there is one) and the CPU engine,
/// for E1 and E1 with K = 64.
fn bench_training(gpu: Option<&Engine>, args: &BenchArgs) -> anyhow::Result<Vec<TrainingFigure>> {
    let mut training = Vec::new();
    let e1 = TrainConfig::default();
    let k64 = TrainConfig { codes: 64, ..TrainConfig::default() };
    let (steps, rounds) = match (args.smoke, args.quick) {
        (true, _) => (4, 2),
        (false, true) => (64, 3),
        (false, false) => (128, 7),
    };
    for (setting, base) in [("E1", &e1), ("E1, K = 64", &k64)] {
        eprintln!("training: {setting}");
        let on_gpu = gpu.map(|engine| overhead::measure(engine, base, steps, rounds)).transpose()?;
        // The CPU engine's steps take a fraction of lavapipe's: 8 times the rounds, so that the medians of its
        // ratios ride out a shared machine's drift.
        let on_cpu = overhead::measure(&Engine::Cpu, base, steps, rounds * 8)?;
        for (i, c) in on_cpu.iter().enumerate() {
            let g = on_gpu.as_ref().map(|g| &g[i]);
            training.push(TrainingFigure {
                setting: setting.to_string(),
                estimator: c.estimator.clone(),
                gpu_steps_per_sec: g.map(|g| 1.0 / g.seconds_per_step),
                gpu_ratio_to_ste: g.map(|g| g.ratio_to_ste),
                gpu_ratio_range: g.map(|g| (g.ratio_min, g.ratio_max)),
                cpu_steps_per_sec: 1.0 / c.seconds_per_step,
                cpu_ratio_to_ste: c.ratio_to_ste,
                cpu_ratio_range: (c.ratio_min, c.ratio_max),
            });
        }
    }
    Ok(training)
}

/// The nearest-code search at one shape: the GPU kernel's wall time per dispatch (submit and wait) and its own
/// timestamps where there is an adapter, and the CPU engine's search on the same data.
fn bench_assign(gpu: Option<&Gpu>, (n, k, m): (u32, u32, u32), reps: usize) -> anyhow::Result<AssignFigure> {
    eprintln!("assign: N = {n}, K = {k}, m = {m}");
    let mut rng = vqgrad::data::rng(7, vqgrad::data::Stream::Train);
    let normal = |len: u32, rng: &mut _| -> Vec<f32> {
        use rand_distr::Distribution;
        let d = rand_distr::StandardNormal;
        (0..len).map(|_| d.sample(rng)).collect()
    };
    let z = normal(n * m, &mut rng);
    let codebook = normal(k * m, &mut rng);
    let flops = 2.0 * n as f64 * k as f64 * m as f64;
    let (gpu_gflops, gpu_kernel_gflops) = match gpu {
        Some(gpu) => {
            let (wall, kernel) = time_assign_kernel(gpu, (&z, &codebook), (n, k, m), reps)?;
            (Some(flops / wall / 1e9), kernel.map(|ns| flops / ns))
        }
        None => (None, None),
    };
    let mut cpu = Vec::new();
    let (mut cpu_index, mut cpu_dist) = (vec![0u32; n as usize], vec![0.0f32; n as usize]);
    for rep in 0..=reps {
        let start = Instant::now();
        vqgrad::train::fast::quantize::nearest(&z, &codebook, m as usize, &mut cpu_index, &mut cpu_dist);
        std::hint::black_box((&cpu_index, &cpu_dist));
        if rep > 0 {
            cpu.push(start.elapsed().as_secs_f64());
        }
    }
    let cpu_gflops = flops / median(&cpu) / 1e9;
    Ok(AssignFigure {
        n,
        k,
        m,
        gpu_gflops,
        gpu_kernel_gflops,
        cpu_gflops,
        gpu_over_cpu: gpu_gflops.map(|g| g / cpu_gflops),
    })
}

/// The assign kernel on `z` and `codebook`: the median wall seconds per dispatch, and the median GPU nanoseconds
/// between timestamps where the adapter has them.
fn time_assign_kernel(
    gpu: &Gpu,
    (z, codebook): (&[f32], &[f32]),
    (n, k, m): (u32, u32, u32),
    reps: usize,
) -> anyhow::Result<(f64, Option<f64>)> {
    let device = &gpu.device;
    let zb = gpu.upload("bench z", z)?;
    let cb = gpu.upload("bench codebook", codebook)?;
    let index = gpu.zeroed::<u32>("bench index", n as usize)?;
    let dist = gpu.zeroed::<f32>("bench distance", n as usize)?;
    let bound = Assign::new(device)?.bind(
        device,
        &AssignBuffers { z: &zb, codebook: &cb, index: &index, distance: &dist },
        AssignShape { n, k, m },
    )?;
    let mut stamps = Timestamps::new(gpu, 2)?;
    let mut wall = Vec::new();
    let mut kernel = Vec::new();
    for rep in 0..=reps {
        let (seconds, gpu_ns) = time_dispatch(gpu, &mut stamps, |pass| bound.encode(pass))?;
        if rep > 0 {
            // rep 0 is the warm-up
            wall.push(seconds);
            kernel.extend(gpu_ns);
        }
    }
    Ok((median(&wall), (!kernel.is_empty()).then(|| median(&kernel))))
}

/// Records what `encode` dispatches in its own pass, with a timestamp on each side where the adapter has them,
/// submits and waits: the wall seconds of submit and wait, and the GPU's nanoseconds between the timestamps.
fn time_dispatch(
    gpu: &Gpu,
    stamps: &mut Option<Timestamps>,
    encode: impl FnOnce(&mut wgpu::ComputePass<'_>),
) -> anyhow::Result<(f64, Option<f64>)> {
    let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("bench") });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        if let Some(s) = stamps.as_mut() {
            s.mark(&mut pass, "start");
        }
        encode(&mut pass);
        if let Some(s) = stamps.as_mut() {
            s.mark(&mut pass, "kernel");
        }
    }
    if let Some(s) = stamps.as_ref() {
        s.resolve(&mut encoder);
    }
    let start = Instant::now();
    gpu.queue.submit([encoder.finish()]);
    gpu.wait()?;
    let seconds = start.elapsed().as_secs_f64();
    let gpu_ns = match stamps.as_mut() {
        Some(s) => s.read(gpu)?.first().map(|(_, ns)| *ns),
        None => None,
    };
    Ok((seconds, gpu_ns))
}

/// Each estimator's backward kernel on the same random inputs (N rows of width m, K codes), in rounds that time
/// every estimator in turn, so that each ratio to `ste` is taken within one round.
fn bench_estimators(gpu: &Gpu, (n, m, k): (u32, u32, u32), rounds: usize) -> anyhow::Result<Vec<EstimatorFigure>> {
    use vqgrad::kernels::estimator::{EstimatorBackward, EstimatorBuffers, EstimatorSettings, EstimatorShape};
    eprintln!("estimator kernels: N = {n}, m = {m}, K = {k}");
    let mut rng = vqgrad::data::rng(8, vqgrad::data::Stream::Train);
    let normal = |len: u32, rng: &mut _| -> Vec<f32> {
        use rand_distr::Distribution;
        (0..len).map(|_| rand_distr::StandardNormal.sample(rng)).collect()
    };
    let index: Vec<u32> = (0..n).map(|i| i.wrapping_mul(2654435761) % k).collect();
    let (g, z, codebook) = (normal(n * m, &mut rng), normal(n * m, &mut rng), normal(k * m, &mut rng));
    let device = &gpu.device;
    let (gb, zb, cb) = (gpu.upload("g", &g)?, gpu.upload("z", &z)?, gpu.upload("codebook", &codebook)?);
    let ib = gpu.upload("index", &index)?;
    let out = gpu.zeroed::<f32>("grad z", (n * m) as usize)?;
    let kernel = EstimatorBackward::new(device)?;
    let buffers = EstimatorBuffers { g: &gb, z: &zb, index: &ib, codebook: &cb, grad_z: &out };
    let bound = Estimator::ROW
        .iter()
        .map(|&estimator| {
            let settings = EstimatorSettings { estimator, beta: 0.25, batch: n };
            kernel.bind(device, &buffers, EstimatorShape { n, k, m }, settings)
        })
        .collect::<vqgrad::Result<Vec<_>>>()?;
    let mut stamps = Timestamps::new(gpu, 2)?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); bound.len()];
    for round in 0..=rounds {
        for (b, out) in bound.iter().zip(&mut times) {
            let (seconds, gpu_ns) = time_dispatch(gpu, &mut stamps, |pass| b.encode(pass))?;
            let ns = gpu_ns.unwrap_or(seconds * 1e9);
            if round > 0 {
                out.push(ns); // round 0 is the warm-up
            }
        }
    }
    let ste = times[0].clone();
    Ok(Estimator::ROW
        .iter()
        .zip(&times)
        .map(|(e, t)| {
            let ratios: Vec<f64> = t.iter().zip(&ste).map(|(a, b)| a / b).collect();
            EstimatorFigure {
                estimator: e.name().to_string(),
                n,
                m,
                k,
                us: median(t) / 1e3,
                ratio_to_ste: median(&ratios),
            }
        })
        .collect())
}

/// The E1 grid of 4 estimators x 5 seeds on `engine`: one run after another as `sweep --jobs 1` runs them without
/// batching, then in batches. Building and evaluating the runs is counted in both.
fn bench_sweep(engine: &Engine, steps: u32) -> anyhow::Result<SweepFigure> {
    let configs: Vec<TrainConfig> = Estimator::ROW
        .iter()
        .flat_map(|&estimator| {
            (0..5).map(move |seed| TrainConfig { estimator, seed, steps, eval_every: steps, ..TrainConfig::default() })
        })
        .collect();
    let start = Instant::now();
    for config in &configs {
        let data = engine.load_data(config)?;
        engine.trainer(std::slice::from_ref(config), std::slice::from_ref(&data))?.run(&mut |_, _| {})?;
    }
    let unbatched = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let data = configs.iter().map(|c| engine.load_data(c)).collect::<vqgrad::Result<Vec<_>>>()?;
    // On the GPU as many runs to a batch as the device's binding size allows; on the CPU all, on threads.
    let per_batch = if engine.batches() { engine.max_runs(&configs[0], &data[0]) as usize } else { configs.len() };
    for (c, d) in configs.chunks(per_batch).zip(data.chunks(per_batch)) {
        engine.trainer(c, d)?.run(&mut |_, _| {})?;
    }
    let batched = start.elapsed().as_secs_f64();
    let run_steps = (configs.len() as u32 * steps) as f64;
    // Training alone: one full batch, warmed up, then timed.
    let n = per_batch.min(configs.len());
    let forever: Vec<TrainConfig> = configs[..n].iter().map(|c| TrainConfig { steps: u32::MAX, ..c.clone() }).collect();
    let mut batch = engine.trainer(&forever, &data[..n])?;
    batch.train_steps(steps.min(64))?;
    batch.wait()?;
    let start = Instant::now();
    batch.train_steps(steps)?;
    batch.wait()?;
    let batch_training = (n as u32 * steps) as f64 / start.elapsed().as_secs_f64();
    Ok(SweepFigure {
        engine: engine.name().to_string(),
        runs: configs.len(),
        steps_per_run: steps,
        unbatched_run_steps_per_sec: run_steps / unbatched,
        batched_run_steps_per_sec: run_steps / batched,
        runs_per_batch: n,
        batch_training_run_steps_per_sec: batch_training,
    })
}

/// GPU time per kernel per E1 step for each estimator (empty without timestamps), and one E1 run's buffer bytes.
fn bench_profile(engine: &Engine) -> anyhow::Result<(Vec<KernelTime>, u64)> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for estimator in Estimator::ALL {
        let config = TrainConfig { estimator, steps: u32::MAX, ..TrainConfig::default() };
        let data = engine.load_data(&config)?;
        let mut trainer = engine.trainer(std::slice::from_ref(&config), std::slice::from_ref(&data))?;
        bytes = trainer.buffer_bytes();
        trainer.train_steps(16)?; // warm-up
        let mut runs: Vec<Vec<(&'static str, f64)>> = Vec::new();
        for _ in 0..3 {
            match trainer.profile_steps(32)? {
                Some(p) => runs.push(p),
                None => return Ok((Vec::new(), bytes)),
            }
        }
        for (i, (kernel, _)) in runs[0].iter().enumerate() {
            let times: Vec<f64> = runs.iter().map(|r| r[i].1).collect();
            let kernel = if *kernel == "start" { "between steps" } else { kernel };
            out.push(KernelTime {
                estimator: estimator.name().to_string(),
                kernel: kernel.to_string(),
                us_per_step: median(&times) / 1e3,
            });
        }
    }
    Ok((out, bytes))
}

/// The process's peak resident memory (Linux: VmHWM in /proc/self/status).
fn peak_host_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn print_tables(r: &Report) {
    let adapter = r.adapter.as_deref().unwrap_or("none");
    println!("adapter: {adapter} (timestamps: {}); CPU engine: {}\n", if r.timestamps { "yes" } else { "no" }, r.cpu);
    let opt = |v: Option<f64>, digits: usize| v.map_or("—".into(), |v| format!("{v:.digits$}"));
    println!("assign (GFLOP/s, 2 N K m per call)");
    println!("| N | K | m | GPU wall | GPU kernel | CPU engine | GPU / CPU |");
    println!("|---|---|---|---|---|---|---|");
    for a in &r.assign {
        let (wall, kernel, ratio) = (opt(a.gpu_gflops, 1), opt(a.gpu_kernel_gflops, 1), opt(a.gpu_over_cpu, 2));
        println!("| {} | {} | {} | {wall} | {kernel} | {:.1} | {ratio} |", a.n, a.k, a.m, a.cpu_gflops);
    }
    if let Some(first) = r.estimator_kernel.first() {
        println!(
            "\nestimator backward kernel alone (N = {}, m = {}, K = {}; µs per dispatch)",
            first.n, first.m, first.k
        );
        println!("| estimator | µs | ratio to ste |");
        println!("|---|---|---|");
        for e in &r.estimator_kernel {
            println!("| {} | {:.1} | {:.3} |", e.estimator, e.us, e.ratio_to_ste);
        }
    }
    println!("\ntraining (steps/s; ratio = step time / ste's in the same round: median, range over rounds)");
    println!("| setting | estimator | GPU steps/s | GPU ratio | range | CPU steps/s | CPU ratio | range |");
    println!("|---|---|---|---|---|---|---|---|");
    let range = |r: (f64, f64)| format!("{:.3}–{:.3}", r.0, r.1);
    for t in &r.training {
        let gpu =
            (opt(t.gpu_steps_per_sec, 1), opt(t.gpu_ratio_to_ste, 3), t.gpu_ratio_range.map_or("—".into(), range));
        let cpu = (t.cpu_steps_per_sec, t.cpu_ratio_to_ste, range(t.cpu_ratio_range));
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.3} | {} |",
            t.setting, t.estimator, gpu.0, gpu.1, gpu.2, cpu.0, cpu.1, cpu.2
        );
    }
    for s in &r.sweep {
        println!(
            "\nsweep on the {} engine: {} runs x {} steps: {:.0} run-steps/s one run at a time, {:.0} in batches of \
             {} ({:.2}x); training alone, one batch of {}: {:.0} run-steps/s",
            s.engine,
            s.runs,
            s.steps_per_run,
            s.unbatched_run_steps_per_sec,
            s.batched_run_steps_per_sec,
            s.runs_per_batch,
            s.batched_run_steps_per_sec / s.unbatched_run_steps_per_sec,
            s.runs_per_batch,
            s.batch_training_run_steps_per_sec
        );
    }
    if r.profile.is_empty() {
        println!("\nprofile: no adapter with timestamps inside passes");
    } else {
        println!("\nGPU time per E1 step (µs, timestamps between kernels)");
        let estimators: Vec<&str> = Estimator::ALL.iter().map(|e| e.name()).collect();
        println!("| kernel | {} |", estimators.join(" | "));
        println!("|---|{}", "---|".repeat(estimators.len()));
        let kernels: Vec<&str> = r.profile.iter().filter(|p| p.estimator == "ste").map(|p| p.kernel.as_str()).collect();
        for kernel in kernels.iter().chain(["total"].iter()) {
            let cells: Vec<String> = estimators
                .iter()
                .map(|e| {
                    let rows = r.profile.iter().filter(|p| p.estimator == *e);
                    let us: f64 =
                        rows.filter(|p| *kernel == "total" || p.kernel == *kernel).map(|p| p.us_per_step).sum();
                    format!("{us:.1}")
                })
                .collect();
            println!("| {kernel} | {} |", cells.join(" | "));
        }
    }
    let m = &r.memory;
    println!(
        "\nmemory: peak host {}, GPU buffers of one E1 run {:.2} MiB",
        m.peak_host_bytes.map_or("unknown".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
        m.e1_gpu_buffer_bytes as f64 / 1048576.0
    );
}
