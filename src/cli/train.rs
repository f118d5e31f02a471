//! `vqgrad train`: a run of the model of docs/PROTOCOL.md (or `--runs R` of them, over consecutive seeds, in the same
//! dispatches), on the GPU or, where no adapter exists, on the CPU engine.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use vqgrad::Estimator;
use vqgrad::data::DataSpec;
use vqgrad::gpu::GpuOptions;
use vqgrad::model::{BetaSchedule, CodebookInit, CodebookMode, EncoderKind, Reparam, Sampling};
use vqgrad::train::{Engine, Metrics, RunResult, TrainConfig};

/// The experiments of docs/PROTOCOL.md §5, as presets of a single run (sweeps vary K, beta or sigma around them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Subspace data (d = 256, r = 4, sigma = 0.05), m = 4, K = 32, beta = 0.25.
    #[value(name = "E1")]
    E1,
    /// 2-D data and latent (d = m = 2), K = 4.
    #[value(name = "E2")]
    E2,
    /// Clusters (d = 32, 8 clusters, spread 0.5), m = 8, K = 32.
    #[value(name = "E3")]
    E3,
    /// E1 with K = 64 (the K sweep's headline setting).
    #[value(name = "E4")]
    E4,
    /// E1 with K = 64 (the beta sweep's base).
    #[value(name = "E5")]
    E5,
    /// E1 with K = 64 (the noise sweep's base).
    #[value(name = "E6")]
    E6,
    /// E1 (the k-means comparison trains this model).
    #[value(name = "E7")]
    E7,
    /// E1 (the overhead measurement times this model).
    #[value(name = "E8")]
    E8,
}

impl Preset {
    fn config(self) -> TrainConfig {
        let e1 = TrainConfig::default();
        match self {
            Preset::E1 | Preset::E7 | Preset::E8 => e1,
            Preset::E2 => TrainConfig { data: DataSpec::Gaussian { dim: 2 }, latent: 2, codes: 4, ..e1 },
            Preset::E3 => TrainConfig {
                data: DataSpec::Clusters { dim: 32, clusters: 8, spread: 0.5 },
                latent: 8,
                codes: 32,
                ..e1
            },
            Preset::E4 | Preset::E5 | Preset::E6 => TrainConfig { codes: 64, ..e1 },
        }
    }
}

/// Generated data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataKind {
    Subspace,
    Clusters,
    Gaussian,
}

fn parse<T: std::str::FromStr<Err = vqgrad::Error>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: vqgrad::Error| e.to_string())
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Start from a docs/PROTOCOL.md experiment's settings; the flags below override them.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Generated data set (default: the preset's, else subspace).
    #[arg(long, value_enum, conflicts_with = "data")]
    pub dataset: Option<DataKind>,
    /// Train on a 2-D float32/float64 .npy file (n x d) instead.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Integer labels (.npy, n) for the --data file, for purity.
    #[arg(long, requires = "data")]
    pub labels: Option<PathBuf>,
    /// The share of the --data rows (the last ones) kept for evaluation.
    #[arg(long, default_value_t = 0.2, requires = "data", allow_negative_numbers = true)]
    pub eval_split: f64,
    /// Data dimension d (generated data; checked against a --data file).
    #[arg(long)]
    pub dim: Option<u32>,
    /// Subspace rank r.
    #[arg(long)]
    pub rank: Option<u32>,
    /// Subspace noise sigma.
    #[arg(long, allow_negative_numbers = true)]
    pub sigma: Option<f64>,
    /// Number of clusters.
    #[arg(long)]
    pub clusters: Option<u32>,
    /// Cluster spread.
    #[arg(long, allow_negative_numbers = true)]
    pub spread: Option<f64>,
    /// Training samples (generated data).
    #[arg(long)]
    pub n_train: Option<u32>,
    /// Eval samples (generated data).
    #[arg(long)]
    pub n_eval: Option<u32>,
    /// Latent dimension m (default: the subspace rank, the number of clusters, or the preset's).
    #[arg(long)]
    pub latent: Option<u32>,
    /// Encoder: linear or mlp.
    #[arg(long, value_parser = parse::<EncoderKind>)]
    pub encoder: Option<EncoderKind>,
    /// Hidden width of the mlp encoder and decoder.
    #[arg(long)]
    pub hidden: Option<u32>,
    /// Codebook size K.
    #[arg(long)]
    pub k: Option<u32>,
    /// Commitment weight beta.
    #[arg(long, allow_negative_numbers = true)]
    pub beta: Option<f64>,
    /// Gradient estimator: ste, rotation, rotation-trick, diveq, gumbel, gumbel-rotation-trick or learned.
    #[arg(long, value_parser = parse::<Estimator>)]
    pub estimator: Option<Estimator>,
    /// Codebook update: grad (Adam on L_cb) or ema.
    #[arg(long, value_parser = parse::<CodebookMode>)]
    pub codebook_mode: Option<CodebookMode>,
    /// Codebook init: uniform, normal or kmeans.
    #[arg(long, value_parser = parse::<CodebookInit>)]
    pub codebook_init: Option<CodebookInit>,
    /// Training steps.
    #[arg(long)]
    pub steps: Option<u32>,
    /// Batch size B.
    #[arg(long)]
    pub batch: Option<u32>,
    /// Adam learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Seed of every random draw (data, init, shuffles).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate every this many steps (and at the end).
    #[arg(long)]
    pub eval_every: Option<u32>,
    /// Every N steps, replace the codes unused since the last reset with batch encodings (0: off).
    #[arg(long)]
    pub reset_dead: Option<u32>,
    /// Temperature of the relaxation softmax(-||z - c||^2 / tau + G) (at the first step): the Gumbel estimators'
    /// samples and backward, the learned estimator's fitting targets, and --sampling stochastic's draws.
    #[arg(long, allow_negative_numbers = true)]
    pub tau: Option<f64>,
    /// Anneal the temperature geometrically from --tau to this at the last step (default: no anneal).
    #[arg(long, allow_negative_numbers = true)]
    pub tau_final: Option<f64>,
    /// Commitment weight schedule: fixed, or adaptive (beta moves each step from the batch's code usage toward
    /// --target-usage: lower when fewer codes are used, within [beta / 100, 100 beta]).
    #[arg(long, value_parser = parse::<BetaSchedule>)]
    pub beta_schedule: Option<BetaSchedule>,
    /// The adaptive beta's target usage in (0, 1]: distinct codes per batch over those of uniform use.
    #[arg(long, allow_negative_numbers = true)]
    pub target_usage: Option<f64>,
    /// The adaptive beta's log-step per unit of usage error, per step.
    #[arg(long, allow_negative_numbers = true)]
    pub beta_rate: Option<f64>,
    /// Residual VQ levels: each quantizes the residual the levels before it leave, with its own K codes; the
    /// estimator is applied at every level (ste, rotation, rotation-trick, diveq).
    #[arg(long)]
    pub levels: Option<u32>,
    /// Lloyd iterations from the codebook on the eval encodings behind `lloyd_dist` at each evaluation (0: off).
    #[arg(long)]
    pub lloyd_iters: Option<u32>,
    /// How each training row's code is picked: nearest, or stochastic (drawn from softmax(-||z - c|| / tau), tau
    /// from --tau and --tau-final; a codebook-collapse remedy). Not with the Gumbel estimators, which sample already.
    #[arg(long, value_parser = parse::<Sampling>)]
    pub sampling: Option<Sampling>,
    /// Weight of the codebook's orthogonality penalty, 1/K^2 sum_ij cos(c_i, c_j)^2 - 1/K, added to the codebook's
    /// gradient (a codebook-collapse remedy; 0: off). Grad-mode codebooks and one level only.
    #[arg(long, allow_negative_numbers = true)]
    pub orth_weight: Option<f64>,
    /// How the codebook is parameterized: none, or simvq (a frozen random basis through one learned linear layer; a
    /// codebook-collapse remedy). simvq takes grad-mode codebooks, one level, no resets and no k-means init.
    #[arg(long, value_parser = parse::<Reparam>)]
    pub reparam: Option<Reparam>,
    /// The synchronized update's weight nu: each code also takes nu times the decoder's gradient at it, as
    /// vqtorch's sync_nu (a codebook-collapse remedy; 0: off). Grad-mode codebooks and one level only.
    #[arg(long, allow_negative_numbers = true)]
    pub sync_nu: Option<f64>,
    /// The affine re-parameterization's scale a: the codebook is C0 diag(1 + a s) + a b, its codes under a learned
    /// per-dimension scale and shift, as vqtorch's affine_lr (a codebook-collapse remedy; 0: off). Grad-mode
    /// codebooks, one level, no resets and no --reparam.
    #[arg(long, allow_negative_numbers = true)]
    pub affine_lr: Option<f64>,
    /// The learning rate of --codebook-mode alternate's own SGD step (momentum 0.9) on the codebook loss, taken
    /// before each step's forward pass (alternated optimization, a codebook-collapse remedy). Default 1.
    #[arg(long, allow_negative_numbers = true)]
    pub alternate_lr: Option<f64>,
    /// FSQ's levels, one per latent dimension ("8,5,5,5"), or auto (levels of 4, and a 2 for an odd log2 K, whose
    /// product is K; K a power of 2): the encodings are bounded per dimension and rounded to the fixed grid of
    /// their product, K codes (a codebook-collapse remedy). It sets --latent to the number of levels, the codebook
    /// mode to fixed and beta to 0 unless they are given.
    #[arg(long)]
    pub fsq_levels: Option<String>,
    /// Cosine codes: the encodings and the codes are unit vectors, the codebook learned through the normalization
    /// (ViT-VQGAN's l2-normalized codes; a codebook-collapse remedy). Grad-mode codebooks, one level, no resets, no
    /// --reparam, --affine-lr or --fsq-levels.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub cosine: Option<bool>,
    /// A low-dimensional lookup: codes of this many dimensions, below --latent; a linear layer projects the
    /// encoder's --latent outputs down to them and another brings the code back up for the decoder (ViT-VQGAN's
    /// factorized codes; a codebook-collapse remedy).
    #[arg(long)]
    pub lookup_dim: Option<u32>,
    /// Write the run as one JSON object to this file (with --runs above 1: one JSON line per run).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Train this many runs, with seeds --seed, --seed + 1, ..., together in the same dispatches (as many to a
    /// batch as the device's storage-binding size allows). Each run's results are those it gets alone.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    /// Save the trained model (safetensors: layers, codebook, and the configuration) for `kmeans --model`.
    #[arg(long)]
    pub save_params: Option<PathBuf>,
}

/// The run's settings: the preset (or E1's defaults), then every flag given.
pub fn config(args: &TrainArgs) -> vqgrad::Result<TrainConfig> {
    let mut c = args.preset.unwrap_or(Preset::E1).config();
    let bad = |msg: String| vqgrad::Error::Input(msg);
    if let Some(path) = &args.data {
        c.data = DataSpec::File { path: path.clone(), labels: args.labels.clone(), eval_split: args.eval_split };
    } else if let Some(kind) = args.dataset {
        let dim = |default| args.dim.unwrap_or(default);
        c.data = match kind {
            DataKind::Subspace => DataSpec::Subspace { dim: dim(256), rank: 4, sigma: 0.05 },
            DataKind::Clusters => DataSpec::Clusters { dim: dim(32), clusters: 8, spread: 0.5 },
            DataKind::Gaussian => DataSpec::Gaussian { dim: dim(16) },
        };
        c.latent = match c.data {
            DataSpec::Clusters { clusters, .. } => clusters,
            DataSpec::Gaussian { dim } => dim.min(c.latent),
            _ => c.latent,
        };
    }
    match &mut c.data {
        DataSpec::Subspace { dim, rank, sigma } => {
            *dim = args.dim.unwrap_or(*dim);
            *rank = args.rank.unwrap_or(*rank);
            *sigma = args.sigma.unwrap_or(*sigma);
            if args.latent.is_none() && args.rank.is_some() {
                c.latent = *rank; // docs/PROTOCOL.md: latent m = r
            }
        }
        DataSpec::Clusters { dim, clusters, spread } => {
            *dim = args.dim.unwrap_or(*dim);
            *clusters = args.clusters.unwrap_or(*clusters);
            *spread = args.spread.unwrap_or(*spread);
            if args.latent.is_none() && args.clusters.is_some() {
                c.latent = *clusters; // docs/PROTOCOL.md: latent m = C
            }
        }
        DataSpec::Gaussian { dim } => *dim = args.dim.unwrap_or(*dim),
        DataSpec::File { .. } => {}
    }
    let generated_only = [("--rank", args.rank.is_some()), ("--sigma", args.sigma.is_some())];
    if !matches!(c.data, DataSpec::Subspace { .. })
        && let Some((flag, _)) = generated_only.iter().find(|(_, given)| *given)
    {
        return Err(bad(format!("{flag} applies to subspace data only")));
    }
    if !matches!(c.data, DataSpec::Clusters { .. }) && (args.clusters.is_some() || args.spread.is_some()) {
        return Err(bad("--clusters and --spread apply to cluster data only".into()));
    }
    macro_rules! set {
        ($($field:ident <- $arg:ident),*) => { $(if let Some(v) = args.$arg { c.$field = v; })* };
    }
    set!(n_train <- n_train, n_eval <- n_eval, latent <- latent, encoder <- encoder, hidden <- hidden,
         codes <- k, beta <- beta, estimator <- estimator, codebook_mode <- codebook_mode,
         codebook_init <- codebook_init, steps <- steps, batch <- batch, lr <- lr, seed <- seed,
         eval_every <- eval_every, reset_dead <- reset_dead, tau <- tau,
         lloyd_iters <- lloyd_iters, beta_schedule <- beta_schedule, target_usage <- target_usage,
         beta_rate <- beta_rate, levels <- levels, sampling <- sampling, orth_weight <- orth_weight,
         reparam <- reparam, sync_nu <- sync_nu, affine_lr <- affine_lr,
         alternate_lr <- alternate_lr, cosine <- cosine);
    if args.tau_final.is_some() {
        c.tau_final = args.tau_final;
    }
    if let Some(dim) = args.lookup_dim {
        (c.lookup_width, c.latent) = (c.latent, dim);
    }
    if let Some(levels) = &args.fsq_levels {
        c = c.with_fsq(fsq_levels(levels, c.codes)?);
        args.latent.inspect(|&m| c.latent = m);
        args.codebook_mode.inspect(|&mode| c.codebook_mode = mode);
        args.beta.inspect(|&beta| c.beta = beta);
    }
    c.validate()?;
    Ok(c)
}

/// `--fsq-levels`: a list of levels, or `auto` ([`TrainConfig::fsq_auto_levels`]).
fn fsq_levels(text: &str, k: u32) -> vqgrad::Result<Vec<u32>> {
    if text.trim() == "auto" {
        return TrainConfig::fsq_auto_levels(k);
    }
    text.split(',')
        .map(|v| {
            let v = v.trim();
            v.parse::<u32>().map_err(|_| vqgrad::Error::Input(format!("--fsq-levels: `{v}` is not a level count")))
        })
        .collect()
}

fn metrics_json(m: &Metrics, r: Option<&RunResult>) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let Some(r) = r {
        v["steps_per_sec"] = json!(r.steps_per_sec);
        v["wall_s"] = json!(r.wall_s);
    }
    v
}

/// The run's final metrics as a table, read from its JSON as written (a diverged run's NaN is null there and
/// prints as NaN; metrics without a value, such as purity without labels, print as `-`).
fn print_table(run: &serde_json::Value) {
    let m = &run["metrics"];
    // `+ 0.0` turns a -0.0 (entropy of a single used code) into 0.0 for printing.
    let f = |key: &str| m[key].as_f64().unwrap_or(f64::NAN) + 0.0;
    let opt = |key: &str| m[key].as_f64().map_or("-".to_string(), |v| format!("{v:.4}"));
    println!("{:<14} {}", "engine", run["engine"].as_str().unwrap_or("?"));
    println!("{:<14} {}", "status", run["status"].as_str().unwrap_or("?"));
    println!("{:<14} {}", "steps", m["step"]);
    println!("{:<14} {:.5}", "loss", f("loss"));
    println!("{:<14} {}", "dead_codes", m["dead_codes"]);
    println!("{:<14} {:.4}", "usage", f("usage"));
    println!("{:<14} {:.4}", "entropy", f("entropy"));
    println!("{:<14} {:.3}", "perplexity", f("perplexity"));
    println!("{:<14} {:.6}", "recon_mse", f("recon_mse"));
    println!("{:<14} {:.6}", "quant_err", f("quant_err"));
    println!("{:<14} {}", "purity", opt("purity"));
    println!("{:<14} {}", "subspace_err", opt("subspace_err"));
    println!("{:<14} {:.4}", "batch_usage", f("batch_usage"));
    if let Some(beta) = m["beta"].as_f64() {
        println!("{:<14} {beta:.4}", "beta (adaptive)");
    }
    println!("{:<14} {}", "lloyd_dist", m["lloyd_dist"].as_f64().map_or("-".to_string(), |v| format!("{v:.3e}")));
    println!("{:<14} {:.1}", "steps_per_sec", f("steps_per_sec"));
    println!("{:<14} {:.2}", "wall_s", f("wall_s"));
}

/// What the engine of this process is and why ([`Engine::choose`]): set once by [`engine`], shown once before
/// training, and recorded in each run's `engine_choice`.
static CHOICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The engine `args` ask for on `options` ([`Engine::choose`]); its reason is kept for [`announce`] and the
/// results.
pub fn engine(options: &GpuOptions, args: &super::EngineArgs) -> anyhow::Result<Engine> {
    let (engine, why) = Engine::choose(options, args.choice())?;
    let _ = CHOICE.set(why);
    Ok(engine)
}

/// The engine and why, once per process, on stderr (unless `quiet`), as training starts.
pub fn announce(engine: &Engine, quiet: bool) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if !quiet {
        ONCE.call_once(|| eprintln!("engine: {} ({})", engine.name(), CHOICE.get().map_or("", String::as_str)));
    }
}

/// Trains `config` on `data` and returns the run as one JSON object: `config`, `adapter`, `engine`, `metrics`
/// (with `steps_per_sec` and `wall_s`) and `curve`; also saves the trained model to `save` when given.
pub fn train_and_save(
    engine: &Engine,
    config: &TrainConfig,
    data: vqgrad::data::Dataset,
    mut on_eval: impl FnMut(&Metrics),
    save: Option<&std::path::Path>,
) -> anyhow::Result<serde_json::Value> {
    if save.is_some() && config.levels > 1 {
        return Err(vqgrad::Error::Input("--save-params stores one codebook: not with --levels above 1".into()).into());
    }
    let layout = config.shape(&data).layout();
    let mut trainer = engine.trainer(std::slice::from_ref(config), std::slice::from_ref(&data))?;
    let result = trainer.run(&mut |_, m| on_eval(m))?.swap_remove(0);
    if let Some(path) = save {
        let (params, codebook) = trainer.read_states()?.swap_remove(0);
        let saved = vqgrad::model::SavedModel {
            layout,
            params,
            codebook,
            codes: config.codes,
            latent: config.latent,
            config: serde_json::to_string(config)?,
        };
        saved.save(path)?;
    }
    Ok(run_json(engine, config, &result))
}

/// Trains `configs` (each [`vqgrad::train::batchable`] with the others) together where the engine can
/// ([`Engine::run`]); one results line per run, as [`train_and_save`] gives. `on_eval` sees each evaluation: the
/// run's position in `configs`, its metrics.
/// `on_line` sees each run's line as soon as its batch finishes (to keep finished work).
pub fn train_batch(
    engine: &Engine,
    configs: &[TrainConfig],
    on_eval: &mut dyn FnMut(usize, &Metrics),
    on_line: &mut dyn FnMut(&serde_json::Value) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    // A failure to keep a finished run is reported once training ends (the rest of the runs still train).
    let mut failed = None;
    let mut on_done = |i: usize, r: &RunResult| {
        if let Err(e) = on_line(&run_json(engine, &configs[i], r)) {
            failed.get_or_insert(e);
        }
    };
    let results = engine.run(configs, on_eval, &mut on_done)?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(configs.iter().zip(&results).map(|(c, r)| run_json(engine, c, r)).collect())
}

/// One results line: the configuration, the adapter and engine, the final metrics and the curve.
fn run_json(engine: &Engine, config: &TrainConfig, result: &vqgrad::train::RunResult) -> serde_json::Value {
    json!({
        "config": config,
        "adapter": engine.adapter(),
        "engine": engine.name(),
        "engine_choice": CHOICE.get(),
        "status": if result.diverged_at.is_some() { "diverged" } else { "ok" },
        "diverged_at": result.diverged_at,
        "metrics": metrics_json(&result.metrics, Some(result)),
        "curve": result.curve.iter().map(|m| metrics_json(m, None)).collect::<Vec<_>>(),
    })
}

pub fn run(options: &GpuOptions, args: &TrainArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    // Output paths are checked before any work: a bad one must not cost a run.
    if let Some(path) = &args.out {
        super::output::check_writable(path, "--out")?;
    }
    if let Some(path) = &args.save_params {
        super::output::check_writable(path, "--save-params")?;
    }
    let engine = engine(options, &args.engine)?;
    if args.runs != 1 {
        return run_many(&engine, args, &config);
    }
    let data = engine.load_data(&config)?;
    if let Some(want) = args.dim
        && want != data.dim
    {
        return Err(vqgrad::Error::Input(format!("--dim {want} does not match the data's d = {}", data.dim)).into());
    }
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(config.steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let on_eval = |m: &Metrics| {
        bar.set_position(m.step as u64);
        bar.set_message(format!("loss {:.4}  dead {}  perplexity {:.2}", m.loss, m.dead_codes, m.perplexity));
    };
    announce(&engine, args.quiet);
    let run = train_and_save(&engine, &config, data, on_eval, args.save_params.as_deref())?;
    bar.finish_and_clear();
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&run)? + "\n";
        super::output::write_atomic(path, text.as_bytes())?;
    }
    print_table(&run);
    super::check_diverged(std::slice::from_ref(&run))
}

/// The most runs one `train --runs` takes (a sweep takes any number).
const MAX_RUNS: u32 = 100_000;

/// `train --runs R`: R runs over consecutive seeds, batched; one table row and one JSON line per run.
fn run_many(engine: &Engine, args: &TrainArgs, config: &TrainConfig) -> anyhow::Result<()> {
    let bad = |msg: &str| -> anyhow::Result<()> { Err(vqgrad::Error::Input(msg.into()).into()) };
    if !(1..=MAX_RUNS).contains(&args.runs) {
        return Err(vqgrad::Error::Input(format!("--runs must be 1 to {MAX_RUNS}, got {}", args.runs)).into());
    }
    if args.save_params.is_some() {
        return bad("--save-params saves one run; train it alone (--runs 1)");
    }
    let data = engine.load_data(config)?;
    if let Some(want) = args.dim
        && want != data.dim
    {
        return Err(vqgrad::Error::Input(format!("--dim {want} does not match the data's d = {}", data.dim)).into());
    }
    drop(data);
    announce(engine, args.quiet);
    let configs: Vec<TrainConfig> = (0..args.runs as u64)
        .map(|i| {
            let seed =
                config.seed.checked_add(i).ok_or_else(|| vqgrad::Error::Input("--seed + --runs overflows".into()))?;
            Ok(TrainConfig { seed, ..config.clone() })
        })
        .collect::<vqgrad::Result<_>>()?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(config.steps as u64 * args.runs as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} run-steps {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let mut done = vec![0u64; configs.len()];
    // Each batch's lines are written as it finishes, the file rewritten whole and atomically each time, so an
    // interruption keeps the finished runs and never leaves half a line.
    let mut written = String::new();
    let mut keep = |line: &serde_json::Value| -> anyhow::Result<()> {
        if let Some(path) = &args.out {
            written.push_str(&(line.to_string() + "\n"));
            super::output::write_atomic(path, written.as_bytes())?;
        }
        Ok(())
    };
    let lines = train_batch(
        engine,
        &configs,
        &mut |i, m| {
            done[i] = m.step as u64;
            bar.set_position(done.iter().sum());
        },
        &mut keep,
    )?;
    bar.finish_and_clear();
    println!(
        "{:>6} {:>9} {:>5} {:>7} {:>10} {:>10} {:>11} {:>9}",
        "seed", "loss", "dead", "usage", "perplexity", "recon_mse", "steps/s", "engine"
    );
    for line in &lines {
        // Read from the JSON as written: a diverged run's NaN is null there, and prints as NaN.
        let m = &line["metrics"];
        let f = |key: &str| m[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>6} {:>9.5} {:>5} {:>7.4} {:>10.3} {:>10.6} {:>11.1} {:>9}",
            line["config"]["seed"].as_u64().unwrap_or(0),
            f("loss"),
            m["dead_codes"].as_u64().unwrap_or(0),
            f("usage"),
            f("perplexity"),
            f("recon_mse"),
            f("steps_per_sec"),
            line["engine"].as_str().unwrap_or("?")
        );
    }
    super::check_diverged(&lines)
}
