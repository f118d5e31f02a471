//! What a report is, on its first screen: the version and commit that made it, the engine and adapter, the date,
//! and per experiment the settings behind its figures; and a banner when the settings are not the protocol's, so
//! that a smoke test never reads as the study's answer (docs/PROTOCOL.md §5).

use super::sweep::{Axis, grid};
use std::fmt::Write as _;
use vqgrad::train::Engine;

/// The crate version, with the git commit the binary was built from when it was built from a checkout
/// (`build.rs`).
pub fn version() -> String {
    match option_env!("VQGRAD_GIT_COMMIT") {
        Some(commit) => format!("{} (commit {commit})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// An axis as a reader names it: `K = 4 ... 256`, `beta = 0.05, 0.1`.
fn describe(axis: &Axis) -> String {
    let name = match axis.flag.as_str() {
        "k" => "K",
        "estimator" => "estimators",
        other => other,
    };
    match axis.values.as_slice() {
        [one] => format!("{name} {one}"),
        [first, .., last] if axis.values.len() > 3 && name != "estimators" => format!("{name} = {first} ... {last}"),
        many => format!("{name} = {}", many.join(", ")),
    }
}

/// The report's opening: what made it, when, on what, and each experiment's settings; with `smoke` (why these
/// are not the protocol's settings), a banner saying the figures are a smoke test and draw no verdict.
pub fn header(engine: &Engine, experiments: &[(&str, Vec<Axis>)], smoke: Option<&str>) -> anyhow::Result<String> {
    let mut md = String::from("# vqgrad: the VQ gradient-estimator study\n\n");
    if let Some(why) = smoke {
        let _ = writeln!(
            md,
            "> **A smoke test, not the protocol.** This report was made with {why}. Its figures show that the \
             instrument runs end to end; they are not what the protocol measures, and its claims table draws no \
             verdict. Run `vqgrad reproduce` without `--quick` or `--set` for the study's answer.\n"
        );
    }
    let adapter = engine.adapter();
    let _ = writeln!(md, "- vqgrad {}", version());
    let _ = writeln!(md, "- engine: {} on `{}` ({})", engine.name(), adapter.name, adapter.backend);
    let _ = writeln!(md, "- made: {} (UTC)", humantime::format_rfc3339_seconds(std::time::SystemTime::now()));
    let _ = writeln!(md, "\n| experiment | what it varies | steps | seeds | training / eval rows | batch |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (name, axes) in experiments {
        let configs = grid(axes)?;
        let Some(first) = configs.first() else { continue };
        // The settings the other columns show are left out of the first.
        let shown = ["seed", "steps", "eval-every", "n-train", "n-eval", "batch"];
        let varies: Vec<String> = axes.iter().filter(|a| !shown.contains(&a.flag.as_str())).map(describe).collect();
        let seeds = axes.iter().find(|a| a.flag == "seed").map_or(1, |a| a.values.len());
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {seeds} | {} / {} | {} |",
            varies.join("; "),
            first.steps,
            first.n_train,
            first.n_eval,
            first.batch
        );
    }
    md.push('\n');
    Ok(md)
}
