//! The one interface both training engines implement ([`Trainer`]), and the one place an engine is chosen
//! ([`Engine::choose`]). The command-line tool and `bias` train through these and never name an engine's own types
//! (the tests do, to hold the engines against each other).
//!
//! ```
//! # fn main() -> vqgrad::Result<()> {
//! use vqgrad::train::{Engine, TrainConfig};
//! use vqgrad::train::EngineChoice;
//! // A hardware GPU when one exists, else the CPU engine (the reason comes back to be printed).
//! let (engine, _why) = Engine::choose(&vqgrad::GpuOptions::default(), EngineChoice::Auto)?;
//! let config = TrainConfig { steps: 20, eval_every: 10, n_train: 1024, n_eval: 256, ..TrainConfig::default() };
//! let results = engine.run(&[config], &mut |_run, metrics| println!("{metrics:?}"), &mut |_, _| {})?;
//! assert_eq!(results[0].curve.len(), 2);
//! # Ok(())
//! # }
//! ```

use super::{Metrics, RunResult, TrainConfig};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuOptions};
use crate::reference::to_f64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Set by [`request_stop`]; process-wide, as the signal that usually sets it.
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks every [`Trainer::run`] in this process to stop at its next evaluation with [`Error::Interrupted`]; runs a
/// trainer had finished before are kept (by [`Engine::run`]'s `on_done`). Safe to call from a signal-handling
/// thread; the command-line tool calls it on Ctrl-C.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether [`request_stop`] has been called (a request lasts for the rest of the process).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// A run's flat parameters and its first level's codebook (f32, as a model is saved; residual VQ's later codebooks
/// are not part of it).
pub type State = (Vec<f32>, Vec<f32>);

/// One or more runs being trained: what every engine offers. Runs of one trainer share their step count; each has
/// its own configuration, data, state and metrics.
pub trait Trainer {
    /// The runs' configurations, in order.
    fn configs(&self) -> &[TrainConfig];

    /// Steps taken so far (by every run).
    fn steps_done(&self) -> u64;

    /// Takes `steps` training steps of every run.
    fn train_steps(&mut self, steps: u32) -> Result<()>;

    /// The metrics of run `run` now, on its eval set and last batch.
    fn evaluate_run(&self, run: usize) -> Result<Metrics>;

    /// Each run's parameters and codebook in f32.
    fn read_states(&self) -> Result<Vec<State>>;

    /// Each run's parameters and codebook in f64: the reference engine's own values, the f32 engines' widened.
    fn read_states_f64(&self) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
        Ok(self.read_states()?.iter().map(|(p, c)| (to_f64(p), to_f64(c))).collect())
    }

    /// Waits until the work recorded so far has finished (for timing; the CPU engines are always done).
    fn wait(&self) -> Result<()> {
        Ok(())
    }

    /// Takes up to `steps` steps (the GPU engine: at most one submit's) timing each kernel group, and returns the
    /// device nanoseconds per step of each; `None`, having taken no step, where the engine cannot time its parts
    /// (the CPU engines, a device without timestamps inside passes).
    fn profile_steps(&mut self, steps: u32) -> Result<Option<Vec<(&'static str, f64)>>> {
        let _ = steps;
        Ok(None)
    }

    /// Bytes of the trainer's device buffers (data, state, activations, the evaluation workspace); 0 for the CPU
    /// engines, which hold its state in host memory.
    fn buffer_bytes(&self) -> u64 {
        0
    }

    /// The number of runs.
    fn runs(&self) -> usize {
        self.configs().len()
    }

    /// Every run's metrics now.
    fn evaluate(&self) -> Result<Vec<Metrics>> {
        (0..self.runs()).map(|run| self.evaluate_run(run)).collect()
    }

    /// Trains every run to its configured steps, evaluating every `eval_every` steps and after the last; `on_eval`
    /// sees each evaluation (the run's position, its metrics) as it comes. A batch's wall time is shared: each run
    /// is credited with all of it, as if alone. A run whose evaluation is not finite has diverged
    /// ([`RunResult::diverged_at`]): it is evaluated no more, and training stops once every run has diverged.
    /// After [`request_stop`], it returns [`Error::Interrupted`] at the next evaluation.
    fn run(&mut self, on_eval: &mut dyn FnMut(usize, &Metrics)) -> Result<Vec<RunResult>> {
        let start = Instant::now();
        let (total, every) = (self.configs()[0].steps, self.configs()[0].eval_every);
        let mut curves: Vec<Vec<Metrics>> = vec![Vec::new(); self.runs()];
        let mut diverged: Vec<Option<Metrics>> = vec![None; self.runs()];
        while (self.steps_done() as u32) < total && diverged.iter().any(Option::is_none) {
            let done = self.steps_done() as u32;
            let next_eval = ((done / every) + 1) * every;
            self.train_steps(next_eval.min(total) - done)?;
            for i in 0..curves.len() {
                if diverged[i].is_some() {
                    continue;
                }
                let metrics = self.evaluate_run(i)?;
                on_eval(i, &metrics);
                if metrics.is_finite() {
                    curves[i].push(metrics);
                } else {
                    diverged[i] = Some(metrics);
                }
            }
            if stop_requested() {
                return Err(Error::Interrupted);
            }
        }
        let wall_s = start.elapsed().as_secs_f64();
        let steps_per_sec = self.steps_done() as f64 / wall_s;
        curves
            .into_iter()
            .zip(diverged)
            .map(|(curve, diverged)| {
                let diverged_at = diverged.as_ref().map(|m| m.step);
                let metrics = curve
                    .last()
                    .cloned()
                    .or(diverged)
                    .ok_or_else(|| Error::Input("steps must be at least 1".into()))?;
                Ok(RunResult { metrics, curve, diverged_at, steps_per_sec, wall_s })
            })
            .collect()
    }
}

/// Which engine to train on: `auto`, `gpu` or `cpu` ([`Engine::choose`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// A hardware adapter when there is one, else the CPU engine.
    #[default]
    Auto,
    /// The best adapter of the options, whatever it is; an error without one.
    Gpu,
    /// The fast CPU engine (f32).
    Cpu,
    /// The f64 reference engine: the oracle, slower.
    Reference,
}

impl std::str::FromStr for EngineChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(EngineChoice::Auto),
            "gpu" => Ok(EngineChoice::Gpu),
            "cpu" => Ok(EngineChoice::Cpu),
            "reference" => Ok(EngineChoice::Reference),
            _ => Err(Error::InvalidSetting { what: "engine", value: s.into(), expected: "auto, gpu, cpu, reference" }),
        }
    }
}

/// Where runs train: the GPU engine on an adapter, the fast CPU engine, or the f64 reference.
pub enum Engine {
    /// [`super::gpu::BatchTrainer`] on this device.
    Gpu(Box<Gpu>),
    /// [`super::fast::FastRuns`]: each run a [`super::fast::FastTrainer`], in f32 on every core.
    Cpu,
    /// [`super::cpu::CpuRuns`]: each run a [`super::cpu::CpuTrainer`], the plain f64 oracle.
    Reference,
}

/// The adapter a run trained on, as results record it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Adapter {
    /// The adapter's name.
    pub name: String,
    /// `vulkan`, `metal`, `dx12`, `gl`, or `cpu` for the CPU engines.
    pub backend: String,
}

impl Engine {
    /// The engine `choice` names on the adapters of `options`, and a line saying what was chosen and why (to be
    /// shown once, and recorded with the runs). `Auto` takes a hardware adapter when there is one, and the CPU
    /// engine when the best adapter renders in software (lavapipe, llvmpipe, WARP, SwiftShader: slower than the
    /// CPU engine) or none can be used; an adapter named in `options` is taken as asked. `Gpu` without a usable
    /// adapter is an error.
    pub fn choose(options: &GpuOptions, choice: EngineChoice) -> Result<(Engine, String)> {
        match choice {
            EngineChoice::Cpu => Ok((Engine::Cpu, "the CPU engine, as asked".into())),
            EngineChoice::Reference => Ok((Engine::Reference, "the f64 reference engine, as asked".into())),
            EngineChoice::Gpu => {
                let gpu = Gpu::new(options)?;
                let why = format!("`{}`, as asked", gpu.info().name);
                Ok((Engine::Gpu(Box::new(gpu)), why))
            }
            EngineChoice::Auto => Ok(match Gpu::new(options) {
                Err(e) => (Engine::Cpu, format!("the CPU engine: {e}")),
                Ok(gpu) if gpu.info().device_type == wgpu::DeviceType::Cpu && options.adapter.is_none() => {
                    let name = &gpu.info().name;
                    let why = format!(
                        "the CPU engine: the best adapter, `{name}`, runs on the CPU and is slower (--engine gpu \
                         takes it)"
                    );
                    (Engine::Cpu, why)
                }
                Ok(gpu) => {
                    let why = format!("`{}`, the best adapter", gpu.info().name);
                    (Engine::Gpu(Box::new(gpu)), why)
                }
            }),
        }
    }

    /// `gpu`, `cpu` or `reference`, as results record it.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Gpu(_) => "gpu",
            Engine::Cpu => "cpu",
            Engine::Reference => "reference",
        }
    }

    /// The adapter runs train on.
    pub fn adapter(&self) -> Adapter {
        match self {
            Engine::Gpu(gpu) => Adapter {
                name: gpu.info().name.clone(),
                backend: crate::gpu::backend_name(gpu.info().backend).to_string(),
            },
            Engine::Cpu => {
                let (simd, threads) = (super::fast::dense::simd(), rayon::current_num_threads());
                let name = format!("vqgrad CPU (f32, {simd}, {threads} threads)");
                Adapter { name, backend: "cpu".into() }
            }
            Engine::Reference => Adapter { name: "vqgrad CPU reference (f64)".into(), backend: "cpu".into() },
        }
    }

    /// The device, for work that has a GPU path beside its f64 one (the bias analysis).
    pub fn gpu(&self) -> Option<&Gpu> {
        match self {
            Engine::Gpu(gpu) => Some(gpu),
            Engine::Cpu | Engine::Reference => None,
        }
    }

    /// A trainer of `configs` on `data` (one data set per configuration). Several runs must be
    /// [`super::batchable`] with each other; the GPU engine trains them in the same dispatches, the fast CPU engine on
    /// threads side by side, the reference one after another.
    pub fn trainer<'a>(&'a self, configs: &[TrainConfig], data: &[Dataset]) -> Result<Box<dyn Trainer + 'a>> {
        Ok(match self {
            Engine::Gpu(gpu) => Box::new(super::gpu::BatchTrainer::new(gpu, configs, data)?),
            Engine::Cpu => Box::new(super::fast::FastRuns::new(configs, data)?),
            Engine::Reference => Box::new(super::cpu::CpuRuns::new(configs, data)?),
        })
    }

    /// Whether runs gain from sharing a trainer: the GPU engine's dispatches cover every run of a batch; on the CPU
    /// engines runs in parallel come from parallel jobs instead (`sweep --jobs`).
    pub fn batches(&self) -> bool {
        self.gpu().is_some()
    }

    /// The most runs like `config` on `data` one trainer should hold: what one GPU binding holds; 1 on the CPU,
    /// where a batch gains nothing.
    pub fn max_runs(&self, config: &TrainConfig, data: &Dataset) -> u32 {
        match self {
            Engine::Gpu(gpu) => super::gpu::BatchTrainer::max_runs(gpu, config, data),
            Engine::Cpu | Engine::Reference => 1,
        }
    }

    /// Loads `config`'s data, after refusing (with one line naming the array and the limit) a generated data set
    /// whose run could not fit this engine: checked from the settings alone, so that nothing is generated first.
    pub fn load_data(&self, config: &TrainConfig) -> Result<Dataset> {
        if let (Engine::Gpu(gpu), Some(dim)) = (self, config.data.generated_dim()) {
            config.validate()?;
            let rows = (config.n_train as u64, config.n_eval as u64);
            super::gpu::BatchTrainer::check_fits(gpu, config, dim, rows)?;
        }
        config.load_data()
    }

    /// Trains `configs` (each batchable with the others), loading each one's data, in trainers of as many runs
    /// as [`Engine::max_runs`] allows; `on_eval` sees each evaluation (the run's position in `configs`, its
    /// metrics), and `on_done` each run as soon as its trainer finishes (to keep finished work). Returns the runs
    /// in order.
    pub fn run(
        &self,
        configs: &[TrainConfig],
        on_eval: &mut dyn FnMut(usize, &Metrics),
        on_done: &mut dyn FnMut(usize, &RunResult),
    ) -> Result<Vec<RunResult>> {
        let mut out = Vec::with_capacity(configs.len());
        let mut rest = configs;
        while let Some(first) = rest.first() {
            if stop_requested() {
                return Err(Error::Interrupted);
            }
            let first_data = self.load_data(first)?;
            let fits = (self.max_runs(first, &first_data) as usize).clamp(1, rest.len());
            let (now, later) = rest.split_at(fits);
            let data = std::iter::once(Ok(first_data))
                .chain(now[1..].iter().map(|c| self.load_data(c)))
                .collect::<Result<Vec<_>>>()?;
            let done = out.len();
            let results = self.trainer(now, &data)?.run(&mut |i, m| on_eval(done + i, m))?;
            for (i, r) in results.iter().enumerate() {
                on_done(done + i, r);
            }
            out.extend(results);
            rest = later;
        }
        Ok(out)
    }

    /// Lloyd's algorithm: `iters` rounds of nearest-centre assignment and centroid update from `centres` (k x m) on
    /// the rows of `z` (n x m); centres no row picks stay put. The search in f32 on the GPU (the assign kernel) and the
    /// CPU engine, in f64 on the reference.
    pub fn lloyd(&self, z: &[f64], centres: &[f64], m: usize, iters: usize) -> Result<Vec<f64>> {
        match self {
            Engine::Gpu(gpu) => super::gpu::lloyd_f64(gpu, z, centres, m, iters),
            Engine::Cpu => {
                let z = crate::reference::to_f32(z);
                Ok(super::fast::lloyd(&z, &crate::reference::to_f32(centres), m, iters))
            }
            Engine::Reference => super::init::lloyd_cpu(z, centres, m, iters),
        }
    }
}
