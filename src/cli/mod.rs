//! The command-line tool's subcommands (the binary only).

pub mod bench;
pub mod beyond;
pub mod bias;
pub mod export;
pub mod gradfield;
pub mod kmeans;
pub mod output;
pub mod overhead;
pub mod provenance;
pub mod remedies;
pub mod report;
pub mod reproduce;
pub mod sweep;
pub mod train;

/// `--engine auto|gpu|cpu|reference` and `--cpu`, for every command that trains.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Where runs train: `auto` (a hardware GPU when there is one; the CPU engine when the only adapter renders in
    /// software, as lavapipe does, or there is none), `gpu` (the best adapter, whatever it is), `cpu` (f32 on every
    /// core) or `reference` (the f64 oracle, several times slower).
    #[arg(long, default_value = "auto", value_parser = parse_engine)]
    pub engine: vqgrad::train::EngineChoice,
    /// The same as `--engine cpu`.
    #[arg(long, conflicts_with = "engine")]
    pub cpu: bool,
}

impl EngineArgs {
    /// The engine asked for.
    pub fn choice(&self) -> vqgrad::train::EngineChoice {
        if self.cpu { vqgrad::train::EngineChoice::Cpu } else { self.engine }
    }
}

fn parse_engine(s: &str) -> Result<vqgrad::train::EngineChoice, String> {
    s.parse().map_err(|e: vqgrad::Error| e.to_string())
}

/// The exit code of a command whose runs finished but at least one diverged (its results are written, each with
/// `"status": "diverged"`). README: "Exit codes".
pub const EXIT_DIVERGED: u8 = 3;

/// The exit code after Ctrl-C, the shell's 128 + SIGINT. README: "Exit codes".
pub const EXIT_INTERRUPTED: u8 = 130;

/// How long after the first Ctrl-C a command that has not reached an evaluation is ended anyway: long enough for
/// one evaluation round, short enough that no one presses it twice.
const INTERRUPT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Ctrl-C stops training at its next evaluation ([`vqgrad::train::request_stop`]), so that a file being written is
/// finished and the command ends through its error path with [`EXIT_INTERRUPTED`]; what had finished is already
/// on disk. A command that reaches no evaluation within [`INTERRUPT_GRACE`] (an analysis, say) ends then, and a
/// second Ctrl-C ends any at once: every output is written atomically or appended as whole lines, so neither loses finished work.
pub fn stop_on_ctrl_c() {
    let pressed = std::sync::atomic::AtomicBool::new(false);
    // Installing fails only when a handler exists already; Ctrl-C then keeps its default action.
    let _ = ctrlc::set_handler(move || {
        if pressed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(EXIT_INTERRUPTED.into());
        }
        vqgrad::train::request_stop();
        std::thread::spawn(|| {
            std::thread::sleep(INTERRUPT_GRACE);
            eprintln!("interrupted");
            std::process::exit(EXIT_INTERRUPTED.into());
        });
    });
}

/// Some runs diverged: the command wrote its results, then ends with [`EXIT_DIVERGED`] and this one line.
#[derive(Debug)]
pub struct Diverged(pub String);

impl std::fmt::Display for Diverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Diverged {}

/// `Err(Diverged)` naming the diverged runs among the results `lines` (each with `config` and `diverged_at`).
pub fn check_diverged(lines: &[serde_json::Value]) -> anyhow::Result<()> {
    let diverged: Vec<String> = lines
        .iter()
        .filter(|l| l["status"] == "diverged")
        .map(|l| format!("seed {} at step {}", l["config"]["seed"], l["diverged_at"]))
        .collect();
    if diverged.is_empty() {
        return Ok(());
    }
    Err(Diverged(format!(
        "{} of {} runs diverged (non-finite loss or metrics): {}; their results are written with status \"diverged\"",
        diverged.len(),
        lines.len(),
        diverged.join(", ")
    ))
    .into())
}
