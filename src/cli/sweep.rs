//! `vqgrad sweep`: a grid of `train` runs, appended to a JSONL file one finished run per line, resumable and
//! shardable.

use super::train::{TrainArgs, config};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use vqgrad::gpu::GpuOptions;
use vqgrad::train::Engine;
use vqgrad::train::TrainConfig;

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// The results file (JSON Lines), appended to; runs already in it are skipped.
    #[arg(long, default_value = "results.jsonl")]
    pub out: PathBuf,
    /// A grid file (JSON): an object of train flags (without `--`) to a value or a list of values, e.g.
    /// {"preset": "E1", "estimator": ["ste", "rotation"], "k": [16, 32], "seeds": "0..5"}.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// A named comparison instead of a grid: `remedies` (every codebook-collapse remedy and the plain estimators
    /// beside it, with `ste` and `rotation-trick`, on E1, E4's K and E3, as `reproduce` runs them). Takes `--seeds`
    /// and `--set` (one value each), and no other grid flag.
    #[arg(long)]
    pub study: Option<String>,
    /// Seeds: a range `A..B` (B excluded) or a comma list [default: 0..5, or the grid file's].
    #[arg(long)]
    pub seeds: Option<String>,
    /// Presets, comma-separated.
    #[arg(long)]
    pub preset: Option<String>,
    /// Estimators, comma-separated.
    #[arg(long)]
    pub estimator: Option<String>,
    /// Codebook sizes K, comma-separated.
    #[arg(long, allow_hyphen_values = true)]
    pub k: Option<String>,
    /// Commitment weights beta, comma-separated.
    #[arg(long, allow_hyphen_values = true)]
    pub beta: Option<String>,
    /// Subspace noise levels sigma, comma-separated.
    #[arg(long, allow_hyphen_values = true)]
    pub sigma: Option<String>,
    /// Any other train flag with comma-separated values, as KEY=V1,V2 (e.g. --set steps=500 --set
    /// codebook-mode=grad,ema); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUES")]
    pub set: Vec<String>,
    /// Run only share I of N (0-based) of the grid: the runs whose index in the grid is I mod N. The grid's order
    /// is fixed, so N machines with I = 0..N-1 cover it exactly once.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Stop after this many new runs (the rest stays for the next invocation).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the grid's runs (one config per line) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    /// Train compatible runs (differing only in seed, estimator, beta, noise and code sampling) together in the same dispatches: `auto` (as many as the device's binding size allows) or at most N at a
    /// time. Each run's results are identical to training it alone. Default 1: one run at a time.
    #[arg(long, value_name = "auto|N", default_value = "1", value_parser = parse_batch_runs)]
    pub batch_runs: BatchRuns,
    /// Trainers at once, each on its own thread (default: one per core on the CPU engine, 1 on the GPU, whose
    /// batches fill it). Each run is trained as alone, so the results are those of a serial sweep.
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// How many runs `sweep` trains in one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchRuns {
    /// As many as fit the device.
    Auto,
    /// At most this many.
    AtMost(usize),
}

pub fn parse_batch_runs(s: &str) -> Result<BatchRuns, String> {
    match s.trim() {
        "auto" => Ok(BatchRuns::Auto),
        n => match n.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("`{s}`: expected `auto` or a number of runs of at least 1")),
            Ok(n) => Ok(BatchRuns::AtMost(n)),
        },
    }
}

/// Groups `todo` in order into batches of compatible runs, at most `cap(first run)` to a batch (`cap` is asked
/// once per batch).
fn batches<'a>(todo: &[&'a TrainConfig], cap: impl Fn(&TrainConfig) -> usize) -> Vec<Vec<&'a TrainConfig>> {
    let mut groups: Vec<(Vec<&TrainConfig>, usize)> = Vec::new();
    for &config in todo {
        let open = groups.iter_mut().find(|(g, cap)| g.len() < *cap && vqgrad::train::batchable(g[0], config));
        match open {
            Some((group, _)) => group.push(config),
            None => groups.push((vec![config], cap(config).max(1))),
        }
    }
    groups.into_iter().map(|(g, _)| g).collect()
}

/// A `train` flag and the values it takes across the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub flag: String,
    pub values: Vec<String>,
}

/// The most runs one grid may hold.
pub const MAX_GRID_RUNS: usize = 1_000_000;

/// Seeds from `A..B` (B excluded), a comma list, or one number; each at most once.
pub fn parse_seeds(spec: &str) -> anyhow::Result<Vec<String>> {
    let spec = spec.trim();
    let bad = |why: String| vqgrad::Error::Input(format!("seeds `{spec}`: {why}"));
    if let Some((a, b)) = spec.split_once("..") {
        let number = |v: &str| v.trim().parse::<u64>().map_err(|_| bad(format!("`{v}` is not a non-negative integer")));
        let (a, b) = (number(a)?, number(b)?);
        if a >= b {
            return Err(bad("the range is empty".into()).into());
        }
        if b - a > MAX_GRID_RUNS as u64 {
            return Err(bad(format!("{} seeds; a grid takes at most {MAX_GRID_RUNS} runs", b - a)).into());
        }
        return Ok((a..b).map(|s| s.to_string()).collect());
    }
    let seeds: Vec<String> = spec.split(',').map(|s| s.trim().to_string()).collect();
    let mut seen = HashSet::new();
    for s in &seeds {
        let n = s.parse::<u64>().map_err(|_| bad(format!("`{s}` is not a non-negative integer")))?;
        if !seen.insert(n) {
            return Err(bad(format!("seed {n} is given twice")).into());
        }
    }
    Ok(seeds)
}

fn list(values: &str) -> Vec<String> {
    values.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect()
}

fn json_values(key: &str, v: &serde_json::Value) -> anyhow::Result<Vec<String>> {
    let one = |v: &serde_json::Value| -> anyhow::Result<String> {
        Ok(match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => return Err(vqgrad::Error::Input(format!("grid key `{key}`: unsupported value {other}")).into()),
        })
    };
    match v {
        serde_json::Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// The grid's axes: the grid file's, then the flags' (a flag replaces the file's axis of the same name); seeds
/// come last, so consecutive runs differ in seed first.
pub fn axes(args: &SweepArgs) -> anyhow::Result<Vec<Axis>> {
    let mut axes: Vec<Axis> = Vec::new();
    let mut seeds: Option<Vec<String>> = None;
    let mut put = |flag: &str, values: Vec<String>| {
        let flag = flag.trim().trim_start_matches("--").replace('_', "-");
        match axes.iter_mut().find(|a| a.flag == flag) {
            Some(axis) => axis.values = values,
            None => axes.push(Axis { flag, values }),
        }
    };
    if let Some(path) = &args.grid {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vqgrad::Error::Input(format!("reading the grid file {}: {e}", path.display())))?;
        let grid: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| vqgrad::Error::Input(format!("{}: not a JSON object: {e}", path.display())))?;
        for (key, value) in &grid {
            let values = json_values(key, value)?;
            if key == "seeds" || key == "seed" {
                seeds = Some(match value {
                    serde_json::Value::String(s) => parse_seeds(s)?,
                    _ => values,
                });
            } else {
                put(key, values);
            }
        }
    }
    for (flag, values) in [
        ("preset", &args.preset),
        ("estimator", &args.estimator),
        ("k", &args.k),
        ("beta", &args.beta),
        ("sigma", &args.sigma),
    ] {
        if let Some(v) = values {
            put(flag, list(v));
        }
    }
    for set in &args.set {
        let Some((key, values)) = set.split_once('=') else {
            return Err(vqgrad::Error::Input(format!("--set {set}: expected KEY=V1,V2")).into());
        };
        put(key, list(values));
    }
    if let Some(spec) = &args.seeds {
        seeds = Some(parse_seeds(spec)?);
    }
    let seeds = match seeds {
        Some(s) => s,
        None => parse_seeds("0..5")?,
    };
    for axis in &axes {
        if axis.values.is_empty() {
            return Err(vqgrad::Error::Input(format!("the grid gives `{}` no values", axis.flag)).into());
        }
        if ["out", "quiet", "cpu", "seed"].contains(&axis.flag.as_str()) {
            return Err(vqgrad::Error::Input(format!("`{}` cannot be a grid axis", axis.flag)).into());
        }
    }
    axes.push(Axis { flag: "seed".into(), values: seeds });
    Ok(axes)
}

#[derive(clap::Parser)]
#[command(name = "train", allow_negative_numbers = true)]
struct TrainOnly {
    #[command(flatten)]
    args: TrainArgs,
}

/// Every configuration of the grid, in its fixed order (the first axis varies slowest).
pub fn grid(axes: &[Axis]) -> anyhow::Result<Vec<TrainConfig>> {
    let total = axes
        .iter()
        .try_fold(1usize, |n, a| n.checked_mul(a.values.len()))
        .filter(|&n| n <= MAX_GRID_RUNS)
        .ok_or_else(|| vqgrad::Error::Input(format!("the grid has more than {MAX_GRID_RUNS} runs")))?;
    let mut out = Vec::with_capacity(total);
    for index in 0..total {
        let mut argv = vec!["train".to_string()];
        let mut rest = index;
        let mut picks = vec![0; axes.len()];
        for (i, axis) in axes.iter().enumerate().rev() {
            picks[i] = rest % axis.values.len();
            rest /= axis.values.len();
        }
        for (axis, &pick) in axes.iter().zip(&picks) {
            argv.push(format!("--{}", axis.flag));
            argv.push(axis.values[pick].clone());
        }
        let parsed = <TrainOnly as clap::Parser>::try_parse_from(&argv).map_err(|e| {
            vqgrad::Error::Input(format!("grid run `{}`: {}", argv[1..].join(" "), one_line(&e.render().to_string())))
        })?;
        out.push(config(&parsed.args)?);
    }
    let mut seen = HashSet::new();
    for c in &out {
        if !seen.insert(key(&serde_json::to_value(c)?)) {
            let what = serde_json::to_string(c)?;
            return Err(
                vqgrad::Error::Input(format!("the grid repeats a run (an axis repeats a value): {what}")).into()
            );
        }
    }
    Ok(out)
}

/// The key a run is recognized by: its whole configuration as canonical JSON.
pub fn key(config: &serde_json::Value) -> String {
    serde_json::to_string(config).unwrap_or_default()
}

/// The configurations already in a results file. A last line without its newline (a crash mid-write) is
/// reported and cut off; any other line that does not parse is reported and skipped.
pub fn done_runs(path: &Path) -> anyhow::Result<HashSet<String>> {
    let mut done = HashSet::new();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    // A file that is not a results file is refused before a byte of it changes: every complete line must be a
    // run, and a cut-off last line must at least start as a JSON object.
    let foreign = |why: String| vqgrad::Error::Input(format!("{}: not a vqgrad results file ({why})", path.display()));
    for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(v) if v.get("config").is_some() => {
                done.insert(key(&v["config"]));
            }
            _ => return Err(foreign(format!("line {} is not a run", n + 1)).into()),
        }
    }
    if complete < bytes.len() && !bytes[complete..].starts_with(b"{") {
        return Err(foreign("its last line is not the start of a run".into()).into());
    }
    if complete < bytes.len() {
        eprintln!(
            "{}: ignoring a truncated last line ({} bytes, an interrupted write); it is removed",
            path.display(),
            bytes.len() - complete
        );
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(complete as u64)?;
        file.sync_all()?;
    }
    Ok(done)
}

/// An exclusive lock on the results file `path` (made if missing), held while the returned file lives: a second
/// sweep on the same file is refused at once instead of training every run twice.
pub fn lock(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| vqgrad::Error::Input(format!("{}: cannot open it: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(vqgrad::Error::Input(format!(
            "{} is in use by another sweep (it holds the file's lock); wait for it, or use another --out",
            path.display()
        ))
        .into()),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Appends one run as a line, flushed and synced to disk before the next run starts.
pub fn append(path: &Path, run: &serde_json::Value) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut line = serde_json::to_string(run)?;
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.flush()?;
    file.sync_all()?;
    Ok(())
}

/// `I/N` with I < N.
pub fn parse_shard(spec: &str) -> anyhow::Result<(usize, usize)> {
    let bad = || vqgrad::Error::Input(format!("--shard {spec}: expected I/N with 0 <= I < N"));
    let (i, n) = spec.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i >= n {
        return Err(bad().into());
    }
    Ok((i, n))
}

/// How [`run_missing`] goes about it.
pub struct Pace {
    /// At most this many new runs (the rest stays for the next invocation).
    pub limit: usize,
    /// No progress bar.
    pub quiet: bool,
    /// Runs per trainer.
    pub batch_runs: BatchRuns,
    /// Trainers at once (`--jobs`); `None`: [`default_jobs`].
    pub jobs: Option<usize>,
}

/// The most trainers `--jobs` runs at once.
pub const MAX_JOBS: usize = 1024;

/// What suits `engine`: one trainer at a time on the GPU (whose batches fill the device), one per core on the CPU
/// engine (whose trainers are single-threaded).
pub fn default_jobs(engine: &Engine) -> usize {
    if engine.batches() { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

/// Trains the configurations of `all` that `out` does not hold yet (at most `pace.limit` of them), appending each
/// run as it finishes, with a progress bar over all of them. Returns (new runs, runs already there, runs left).
pub fn run_missing(
    engine: &Engine,
    all: &[&TrainConfig],
    out: &Path,
    pace: &Pace,
) -> anyhow::Result<(usize, usize, usize)> {
    let jobs = pace.jobs.unwrap_or_else(|| default_jobs(engine));
    if !(1..=MAX_JOBS).contains(&jobs) {
        return Err(vqgrad::Error::Input(format!("--jobs must be 1 to {MAX_JOBS}, got {jobs}")).into());
    }
    let _lock = lock(out)?;
    let done = done_runs(out)?;
    let todo: Vec<&TrainConfig> =
        all.iter().copied().filter(|c| !done.contains(&key(&serde_json::to_value(c).unwrap_or_default()))).collect();
    let skipped = all.len() - todo.len();
    let new = pace.limit.min(todo.len());
    if new > 0 {
        super::train::announce(engine, pace.quiet);
    }
    let bar = if pace.quiet { ProgressBar::hidden() } else { ProgressBar::new(all.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} runs, {eta} left {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(skipped as u64);
    if skipped > 0 {
        bar.println(format!("{skipped} of {} runs already in {}", all.len(), out.display()));
    }
    let cap = |config: &TrainConfig| -> usize {
        match pace.batch_runs {
            BatchRuns::AtMost(n) => n,
            BatchRuns::Auto if !engine.batches() => 1,
            BatchRuns::Auto => config.load_data().map(|data| engine.max_runs(config, &data) as usize).unwrap_or(1),
        }
    };
    let groups: Vec<Vec<TrainConfig>> =
        batches(&todo[..new], cap).into_iter().map(|g| g.into_iter().cloned().collect()).collect();
    train_groups(engine, &groups, out, &bar, jobs)?;
    bar.finish_and_clear();
    Ok((new, skipped, todo.len() - new))
}

/// Trains `groups` (each one trainer), `jobs` at a time, appending each run to `out` as its group finishes. Every
/// run is trained exactly as alone, so the lines are those of a serial sweep (in the order they finish). The first
/// error stops the other workers after their current group; the runs that finished are kept.
fn train_groups(
    engine: &Engine,
    groups: &[Vec<TrainConfig>],
    out: &Path,
    bar: &ProgressBar,
    jobs: usize,
) -> anyhow::Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    let lock = || failed.lock().unwrap_or_else(|p| p.into_inner());
    let worker = || {
        while lock().is_none() {
            let Some(group) = groups.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) else { break };
            let first = &group[0];
            let more =
                if group.len() > 1 { format!(" and {} more in one batch", group.len() - 1) } else { String::new() };
            bar.set_message(format!("{} K={} seed {}{more}", first.estimator, first.codes, first.seed));
            let result = super::train::train_batch(engine, group, &mut |_, _| {}, &mut |_| Ok(()));
            // The failure lock also serialises the appends, so that lines never interleave.
            let mut failure = lock();
            match result.and_then(|lines| lines.iter().try_for_each(|line| record(out, line, bar))) {
                Err(e) if failure.is_none() => *failure = Some(e),
                _ => {}
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..jobs.min(groups.len()) {
            s.spawn(worker);
        }
    });
    failed.into_inner().unwrap_or_else(|p| p.into_inner()).map_or(Ok(()), Err)
}

/// Appends one finished run to `out`; a diverged run is recorded like any other (so a resume does not redo it)
/// and said on stderr; the report counts it per cell.
fn record(out: &Path, line: &serde_json::Value, bar: &ProgressBar) -> anyhow::Result<()> {
    append(out, line)?;
    bar.inc(1);
    if line["status"] == "diverged" {
        let c = &line["config"];
        let (e, k, seed, at) = (c["estimator"].as_str().unwrap_or("?"), &c["codes"], &c["seed"], &line["diverged_at"]);
        bar.suspend(|| eprintln!("diverged: {e} K={k} seed {seed} at step {at} (recorded, status \"diverged\")"));
    }
    Ok(())
}

/// The runs a sweep asks for: its grid's, or its study's (each configuration once, in the study's order).
fn configs(args: &SweepArgs) -> anyhow::Result<Vec<TrainConfig>> {
    let Some(study) = &args.study else { return grid(&axes(args)?) };
    let flags = [("--grid", args.grid.is_some()), ("--preset", args.preset.is_some())];
    let flags = flags.into_iter().chain([("--estimator", args.estimator.is_some()), ("--k", args.k.is_some())]);
    let flags = flags.chain([("--beta", args.beta.is_some()), ("--sigma", args.sigma.is_some())]);
    if let Some((flag, _)) = flags.into_iter().find(|(_, given)| *given) {
        return Err(vqgrad::Error::Input(format!("--study {study} sets the grid itself; drop {flag}")).into());
    }
    let mut overrides = args.set.clone();
    overrides.push(format!("seed={}", args.seeds.as_deref().unwrap_or("0..5")));
    let mut out: Vec<TrainConfig> = Vec::new();
    for axes in super::reproduce::study(study, &overrides)? {
        for c in grid(&axes)? {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

pub fn run(options: &GpuOptions, args: &SweepArgs) -> anyhow::Result<()> {
    let configs = configs(args)?;
    let (shard, shards) = args.shard.as_deref().map(parse_shard).transpose()?.unwrap_or((0, 1));
    let mine: Vec<&TrainConfig> =
        configs.iter().enumerate().filter(|(i, _)| i % shards == shard).map(|(_, c)| c).collect();
    if args.dry_run {
        for c in &mine {
            println!("{}", serde_json::to_string(c)?);
        }
        eprintln!("{} runs in this shard ({} in the grid)", mine.len(), configs.len());
        return Ok(());
    }
    super::output::check_writable(&args.out, "--out")?;
    let engine = super::train::engine(options, &args.engine)?;
    let limit = args.limit.unwrap_or(usize::MAX);
    let pace = Pace { limit, quiet: args.quiet, batch_runs: args.batch_runs, jobs: args.jobs };
    let (new, skipped, left) = run_missing(&engine, &mine, &args.out, &pace)?;
    eprintln!("{new} new runs, {skipped} already done, {left} left in this shard; results in {}", args.out.display());
    Ok(())
}

/// clap's message as one line: its first line, with a value list that follows it appended.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("For more"));
    let first = lines.next().unwrap_or_default().to_string();
    match lines.find(|l| l.starts_with("[possible values")) {
        Some(values) => format!("{first} {values}"),
        None => first,
    }
}
