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
        [one] if name == "K" => format!("K = {one}"),
        [one] => format!("{name} {one}"),
        [first, .., last] if axis.values.len() > 3 && name != "estimators" => format!("{name} = {first} ... {last}"),
        many => format!("{name} = {}", many.join(", ")),
    }
}

/// An experiment's chapter title: its name and [`what`] it runs.
pub fn chapter_title(name: &str, axes: &[Axis], first: &vqgrad::train::TrainConfig) -> String {
    format!("{name}: {}", what(axes, first))
}

/// What an experiment varies (or its K, where it varies nothing), its data and its estimators: "K = 4 ... 256;
/// subspace data; ste, rotation, rotation-trick". The seeds, steps, sizes and batch are the header's other columns.
fn what(axes: &[Axis], first: &vqgrad::train::TrainConfig) -> String {
    let shown = ["seed", "steps", "eval-every", "n-train", "n-eval", "batch", "preset", "estimator"];
    let mut parts: Vec<String> = axes.iter().filter(|a| !shown.contains(&a.flag.as_str())).map(describe).collect();
    if !axes.iter().any(|a| a.flag == "k") {
        parts.insert(0, format!("K = {}", first.codes));
    }
    let config = serde_json::to_value(first).unwrap_or_default();
    parts.push(format!("{} data", config["data"]["kind"].as_str().unwrap_or("?")));
    if let Some(estimators) = axes.iter().find(|a| a.flag == "estimator") {
        parts.push(estimators.values.join(", "));
    }
    parts.join("; ")
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
    let _ = writeln!(
        md,
        "\n| experiment (its settings below) | what it runs | steps | seeds | training / eval rows | batch |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (name, axes) in experiments {
        let configs = grid(axes)?;
        let Some(first) = configs.first() else { continue };
        let seeds = axes.iter().find(|a| a.flag == "seed").map_or(1, |a| a.values.len());
        let _ = writeln!(
            md,
            "| [{name}](#{}) | {} | {} | {seeds} | {} / {} | {} |",
            super::report::slug(&chapter_title(name, axes, first)),
            what(axes, first),
            first.steps,
            first.n_train,
            first.n_eval,
            first.batch
        );
    }
    md.push('\n');
    Ok(md)
}
