//! The `vqgrad` command-line tool.

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use std::process::ExitCode;
use vqgrad::gpu::{self, GpuOptions};

mod cli;
use cli::train;

#[derive(Parser)]
#[command(
    name = "vqgrad",
    version,
    about = "Vector-quantized autoencoders on the GPU: how the gradient estimator changes codebook use"
)]
struct Cli {
    /// GPU backend: vulkan, metal, dx12 or gl (default: the best adapter of any).
    #[arg(long, global = true, env = gpu::ENV_BACKEND, value_parser = parse_backend)]
    backend: Option<wgpu::Backend>,
    /// Use the adapter whose name contains this text (case-insensitive).
    #[arg(long, global = true, env = gpu::ENV_ADAPTER)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Negative numbers parse as values everywhere, so that the range checks judge them (`--sigma -0.1` is "sigma must
/// be >= 0", not "unexpected argument '-0'").
#[derive(Subcommand)]
enum Command {
    /// List every adapter, and the limits and features vqgrad uses on the chosen one.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Train the VQ autoencoder of docs/PROTOCOL.md once and report its metrics.
    #[command(allow_negative_numbers = true)]
    Train(Box<train::TrainArgs>),
    /// Train a grid of runs (estimators x K x beta x sigma x seeds x any train flag), one JSON line per run;
    /// rerunning resumes.
    #[command(allow_negative_numbers = true)]
    Sweep(Box<cli::sweep::SweepArgs>),
    /// Statistics across seeds, Welch's t-tests between estimators, tables and plots from results files.
    Report(cli::report::ReportArgs),
    /// Run the experiments of docs/PROTOCOL.md §5 (E1, E3-E6) and write the report, the seed's claims beside the
    /// measurements.
    #[command(allow_negative_numbers = true)]
    Reproduce(cli::reproduce::ReproduceArgs),
    /// E2: a 2-D model's descent directions -dL/dz per estimator over the codebook's Voronoi cells.
    #[command(allow_negative_numbers = true)]
    Gradfield(cli::gradfield::GradfieldArgs),
    /// E7: k-means++ and Lloyd on the GPU, on a trained model's eval encodings (--model) or on raw data.
    #[command(allow_negative_numbers = true)]
    Kmeans(Box<cli::kmeans::KmeansArgs>),
    /// Each estimator's gradient against the exact gradient of the soft-assignment surrogate as tau -> 0, on a
    /// trained model (--model, or one trained with the train flags).
    #[command(allow_negative_numbers = true)]
    Bias(Box<cli::bias::BiasArgs>),
    /// Throughput of the assign kernel, of training (per estimator) and of sweeps, with the CPU engine beside it.
    Bench(cli::bench::BenchArgs),
    /// Write the kernels' WGSL, and naga's SPIR-V, MSL or HLSL translations, for loading them in other runtimes.
    ExportShaders(cli::export::ExportArgs),
}

fn parse_backend(s: &str) -> Result<wgpu::Backend, String> {
    gpu::parse_backend(s).map_err(|e| e.to_string())
}

/// Mesa's Vulkan loader prints "XDG_RUNTIME_DIR is invalid or not set" at every instance on a machine without a
/// desktop session. Where it is unset or not a directory, point it at a private one (created 0700 under the temp
/// directory) before any thread or instance exists.
fn private_runtime_dir() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir()) {
        return;
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let dir = std::env::temp_dir().join(format!("vqgrad-runtime-{user}"));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    if builder.create(&dir).is_ok() || dir.is_dir() {
        // SAFETY: called first in `main`, before any other thread exists, so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

fn main() -> ExitCode {
    private_runtime_dir();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout with exit 0, and usage errors to stderr with exit 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    cli::stop_on_ctrl_c();
    let options = GpuOptions { backend: cli.backend, adapter: cli.adapter.clone().filter(|a| !a.trim().is_empty()) };
    let result = match cli.command {
        Command::Info { json } => info(&options, json),
        Command::Train(args) => train::run(&options, &args),
        Command::Sweep(args) => cli::sweep::run(&options, &args),
        Command::Report(args) => cli::report::run(&args),
        Command::Reproduce(args) => cli::reproduce::run(&options, &args),
        Command::Gradfield(args) => cli::gradfield::run(&options, &args),
        Command::Kmeans(args) => cli::kmeans::run(&options, &args),
        Command::Bias(args) => cli::bias::run(&options, &args),
        Command::Bench(args) => cli::bench::run(&options, &args),
        Command::ExportShaders(args) => cli::export::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<cli::Diverged>().is_some() => {
            eprintln!("diverged: {e}");
            ExitCode::from(cli::EXIT_DIVERGED)
        }
        Err(e) if matches!(e.downcast_ref::<vqgrad::Error>(), Some(vqgrad::Error::Interrupted)) => {
            eprintln!("interrupted: finished runs are kept");
            ExitCode::from(cli::EXIT_INTERRUPTED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            // Bad input (settings, shapes, data) exits 2, like a usage error; anything else 1.
            let bad_input = e.downcast_ref::<vqgrad::Error>().is_some_and(|e| {
                matches!(e, vqgrad::Error::Input(_) | vqgrad::Error::InvalidSetting { .. } | vqgrad::Error::Shape(_))
            });
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

fn adapter_json(info: &wgpu::AdapterInfo) -> serde_json::Value {
    json!({
        "name": info.name,
        "backend": gpu::backend_name(info.backend),
        "device_type": gpu::device_type_name(info.device_type),
        "driver": info.driver,
        "driver_info": info.driver_info,
        "vendor": info.vendor,
        "device": info.device,
    })
}

fn info(options: &GpuOptions, as_json: bool) -> anyhow::Result<()> {
    let adapters: Vec<wgpu::AdapterInfo> =
        gpu::enumerate_adapters(wgpu::Backends::all()).iter().map(|a| a.get_info()).collect();
    let chosen = vqgrad::Gpu::new(options);
    let (chosen_json, chosen_err) = match &chosen {
        Ok(g) => {
            let limits = g.device.limits();
            let features = g.device.features();
            let limits_json: serde_json::Map<String, serde_json::Value> =
                gpu::reported_limits(&limits).into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            let features_json: serde_json::Map<String, serde_json::Value> = gpu::OPTIONAL_FEATURES
                .iter()
                .map(|(name, f)| (name.to_string(), json!(features.contains(*f))))
                .collect();
            let mut adapter = adapter_json(g.info());
            adapter["limits"] = limits_json.into();
            adapter["features"] = features_json.into();
            (adapter, None)
        }
        Err(e) => (serde_json::Value::Null, Some(e.to_string())),
    };
    if let Err(e) = &chosen {
        eprintln!("{e}; vqgrad runs on the CPU reference engine");
    }
    // What `--engine auto` takes (vqgrad::train::Engine::choose): a software adapter only when named.
    let auto = match &chosen {
        Ok(g) if g.info().device_type != wgpu::DeviceType::Cpu || options.adapter.is_some() => "gpu",
        _ => "cpu",
    };
    if as_json {
        let out = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "adapters": adapters.iter().map(adapter_json).collect::<Vec<_>>(),
            "chosen": chosen_json,
            "error": chosen_err,
            "engine": auto,
        });
        println!("{}", serde_json::to_string_pretty(&out).context("writing JSON")?);
        return Ok(());
    }
    println!("vqgrad {}", env!("CARGO_PKG_VERSION"));
    println!("adapters ({}):", adapters.len());
    for a in &adapters {
        println!(
            "  - {} [{}, {}] driver: {} {}",
            a.name,
            gpu::backend_name(a.backend),
            gpu::device_type_name(a.device_type),
            a.driver,
            a.driver_info
        );
    }
    match &chosen {
        Ok(g) => {
            println!("chosen: {}", g.describe());
            println!("limits vqgrad uses:");
            for (name, value) in gpu::reported_limits(&g.device.limits()) {
                println!("  {name:<40} {value}");
            }
            println!("optional features:");
            for (name, f) in gpu::OPTIONAL_FEATURES {
                println!("  {name:<40} {}", if g.device.features().contains(*f) { "yes" } else { "no" });
            }
        }
        Err(_) => println!("chosen: none"),
    }
    println!("engine (--engine auto): {auto}");
    Ok(())
}
