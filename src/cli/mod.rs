//! The command-line tool's subcommands (the binary only).

pub mod bench;
pub mod beyond;
pub mod bias;
pub mod export;
pub mod gradfield;
pub mod kmeans;
pub mod output;
pub mod overhead;
pub mod report;
pub mod reproduce;
pub mod sweep;
pub mod train;

/// The exit code of a command whose runs finished but at least one diverged (its results are written, each with
/// `"status": "diverged"`). README: "Exit codes".
pub const EXIT_DIVERGED: u8 = 3;

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
