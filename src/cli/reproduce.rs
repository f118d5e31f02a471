//! `vqgrad reproduce`: the experiments of docs/PROTOCOL.md §5 as sweeps into one results file (resumable), then the
//! report with a closing table that sets each of the seed's claims beside what the runs measured.

use super::report::{Chapter, Front, Run, load_runs, write_report};
use super::sweep::{Axis, Pace, grid, run_missing};
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vqgrad::analysis::{summarize, welch_p};
use vqgrad::gpu::GpuOptions;
use vqgrad::train::Engine;
use vqgrad::train::TrainConfig;

#[derive(clap::Args, Debug)]
pub struct ReproduceArgs {
    /// Directory for results.jsonl and the report.
    #[arg(long, default_value = "reproduce")]
    pub out: PathBuf,
    /// 3 seeds, 250 steps and 2048 eval samples instead of docs/PROTOCOL.md's 5 seeds, 2000 steps and 8192 samples.
    #[arg(long)]
    pub quick: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    /// Override a train flag in every experiment, as KEY=VALUE (e.g. --set steps=100 for a trial); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Train compatible runs together, as `sweep --batch-runs` does: `auto` or at most N at a time. The results
    /// are the same; only the recorded wall times become the batches'. Default 1: one run at a time.
    #[arg(long, value_name = "auto|N", default_value = "1", value_parser = super::sweep::parse_batch_runs)]
    pub batch_runs: super::sweep::BatchRuns,
    /// Trainers at once, as `sweep --jobs` (default: one per core on the CPU engine, 1 on the GPU).
    #[arg(long)]
    pub jobs: Option<usize>,
}

const ESTIMATORS: &str = "ste,rotation,rotation-trick";
/// The seed's future directions, beside `ste` and `rotation-trick` on E1 and E4 ("X" experiments).
const RELAXED_AND_LEARNED: &str = "gumbel,gumbel-rotation-trick,learned";
const BASELINES: &str = "ste,rotation-trick";
const E4_CODES: &str = "4,8,16,32,64,128,256";
/// The remedies' settings in `reproduce` (PROTOCOL §6.6): stochastic sampling's temperature, on E1's scale (an
/// encoding sits about 0.1 to 0.2 from its code), and the orthogonality weight of vector-quantize-pytorch's example.
const REMEDY_TAU: &str = "0.05";
const REMEDY_ORTH_WEIGHT: &str = "10";
/// R4's synchronized-update weight nu: vqtorch's README example.
const REMEDY_SYNC_NU: &str = "0.2";
/// R9's lookup dimension: half of E1's m = 4 (a quarter of E3's 8).
const REMEDY_LOOKUP_DIM: &str = "2";
/// R5's affine scale a: vqtorch's README example.
const REMEDY_AFFINE_LR: &str = "10";

fn axis(flag: &str, values: &str) -> Axis {
    Axis { flag: flag.into(), values: values.split(',').map(String::from).collect() }
}

/// Every experiment's grid (E2, E7 and E8 need their own commands and are not swept here). E1 comes first. The X
/// experiments are the seed's future directions on E1 and E4's settings: the Gumbel and learned estimators, the
/// adaptive beta and two residual levels, the last two with `ste` and `rotation-trick`. The R experiments are the
/// codebook-collapse remedies with `ste` and `rotation-trick` on E1, E4 and E3: R1 stochastic sampling, R2 the
/// orthogonality penalty, R3 SimVQ, R4 the synchronized update, R5 the affine
/// re-parameterization, R6 alternated optimization, R7 FSQ (its levels
/// for each K by `--fsq-levels auto`), R8 cosine codes, R9 a low-dimensional lookup.
fn experiments(quick: bool, overrides: &[String]) -> anyhow::Result<Vec<(&'static str, Vec<Axis>)>> {
    let mut common = vec![];
    if quick {
        common.extend([axis("steps", "250"), axis("eval-every", "125"), axis("n-eval", "2048")]);
    }
    let mut seeds = axis("seed", if quick { "0,1,2" } else { "0,1,2,3,4" });
    for set in overrides {
        let Some((key, value)) = set.split_once('=') else {
            return Err(vqgrad::Error::Input(format!("--set {set}: expected KEY=VALUE")).into());
        };
        let key = key.trim().trim_start_matches("--");
        if key == "seed" || key == "seeds" {
            seeds = Axis { flag: "seed".into(), values: super::sweep::parse_seeds(value)? };
            continue;
        }
        common.retain(|a| a.flag != key);
        common.push(axis(key, value.trim()));
    }
    // An estimator given with --set replaces every experiment's own.
    let with = |preset: &str, estimators: &str, extra: Vec<Axis>| {
        let mut axes = vec![axis("preset", preset)];
        if !common.iter().any(|a| a.flag == "estimator") {
            axes.push(axis("estimator", estimators));
        }
        axes.extend(common.iter().cloned());
        axes.extend(extra);
        axes.push(seeds.clone());
        axes
    };
    let e1_e4 = |estimators: &'static str, extra: Vec<Axis>| {
        let mut k = extra.clone();
        k.push(axis("k", E4_CODES));
        [with("E1", estimators, extra), with("E1", estimators, k)]
    };
    let [x1_e1, x1_e4] = e1_e4(RELAXED_AND_LEARNED, vec![]);
    let [x2_e1, x2_e4] = e1_e4(BASELINES, vec![axis("beta-schedule", "adaptive")]);
    let [x3_e1, x3_e4] = e1_e4(BASELINES, vec![axis("levels", "2")]);
    // The codebook-collapse remedies (PROTOCOL §6.6) with the baselines on E1, E4's K and E3's clusters.
    let remedy = |remedy: Vec<Axis>| {
        let [e1, e4] = e1_e4(BASELINES, remedy.clone());
        [e1, e4, with("E3", BASELINES, remedy)]
    };
    let [r1_e1, r1_e4, r1_e3] = remedy(vec![axis("sampling", "stochastic"), axis("tau", REMEDY_TAU)]);
    let [r2_e1, r2_e4, r2_e3] = remedy(vec![axis("orth-weight", REMEDY_ORTH_WEIGHT)]);
    let [r3_e1, r3_e4, r3_e3] = remedy(vec![axis("reparam", "simvq")]);
    let [r4_e1, r4_e4, r4_e3] = remedy(vec![axis("sync-nu", REMEDY_SYNC_NU)]);
    let [r5_e1, r5_e4, r5_e3] = remedy(vec![axis("affine-lr", REMEDY_AFFINE_LR)]);
    let [r6_e1, r6_e4, r6_e3] = remedy(vec![axis("codebook-mode", "alternate")]);
    let [r7_e1, r7_e4, r7_e3] = remedy(vec![axis("fsq-levels", "auto")]);
    let [r8_e1, r8_e4, r8_e3] = remedy(vec![axis("cosine", "true")]);
    let [r9_e1, r9_e4, r9_e3] = remedy(vec![axis("lookup-dim", REMEDY_LOOKUP_DIM)]);
    Ok(vec![
        ("E1", with("E1", ESTIMATORS, vec![])),
        ("E3", with("E3", ESTIMATORS, vec![])),
        ("E4", with("E1", ESTIMATORS, vec![axis("k", E4_CODES)])),
        ("E5", with("E1", ESTIMATORS, vec![axis("k", "64"), axis("beta", "0.05,0.1,0.25,0.5,1.0")])),
        ("E6", with("E1", ESTIMATORS, vec![axis("k", "64"), axis("sigma", "0,0.05,0.1,0.2,0.4")])),
        ("X1", x1_e1),
        ("X1", x1_e4),
        ("X2", x2_e1),
        ("X2", x2_e4),
        ("X3", x3_e1),
        ("X3", x3_e4),
        ("R1", r1_e1),
        ("R1", r1_e4),
        ("R1", r1_e3),
        ("R2", r2_e1),
        ("R2", r2_e4),
        ("R2", r2_e3),
        ("R3", r3_e1),
        ("R3", r3_e4),
        ("R3", r3_e3),
        ("R4", r4_e1),
        ("R4", r4_e4),
        ("R4", r4_e3),
        ("R5", r5_e1),
        ("R5", r5_e4),
        ("R5", r5_e3),
        ("R6", r6_e1),
        ("R6", r6_e4),
        ("R6", r6_e3),
        ("R7", r7_e1),
        ("R7", r7_e4),
        ("R7", r7_e3),
        ("R8", r8_e1),
        ("R8", r8_e4),
        ("R8", r8_e3),
        ("R9", r9_e1),
        ("R9", r9_e4),
        ("R9", r9_e3),
    ])
}

/// The grids of a named comparison for `sweep --study` (the protocol's settings, with `overrides` as `reproduce
/// --set` takes them): `remedies` is the R experiments and their baselines, plain `ste` and `rotation-trick` on E1,
/// E4's K and E3.
pub fn study(name: &str, overrides: &[String]) -> anyhow::Result<Vec<Vec<Axis>>> {
    if name != "remedies" {
        return Err(vqgrad::Error::Input(format!("--study {name}: the studies are: remedies")).into());
    }
    let remedy_flags = [
        "sampling",
        "tau",
        "orth-weight",
        "reparam",
        "sync-nu",
        "affine-lr",
        "codebook-mode",
        "fsq-levels",
        "cosine",
        "lookup-dim",
    ];
    let mut grids = Vec::new();
    for (id, axes) in experiments(false, overrides)? {
        if id.starts_with('R') {
            let baseline: Vec<Axis> =
                axes.iter().filter(|a| !remedy_flags.contains(&a.flag.as_str())).cloned().collect();
            grids.push(baseline);
            grids.push(axes);
        }
    }
    Ok(grids)
}

/// The values of `metric` for `estimator` among the plain runs (one level, a fixed beta: the seed's model) whose
/// configuration satisfies `pick`.
fn values(runs: &[Run], estimator: &str, metric: &str, pick: &dyn Fn(&TrainConfig) -> bool) -> Vec<f64> {
    picked(runs, estimator, pick).map(|r| r.metric(metric)).collect()
}

/// The plain runs (one level, fixed beta, no remedy) of `estimator` that `pick` selects.
fn picked<'r>(
    runs: &'r [Run],
    estimator: &'r str,
    pick: &'r dyn Fn(&TrainConfig) -> bool,
) -> impl Iterator<Item = &'r Run> + 'r {
    let plain = |c: &TrainConfig| {
        c.levels == 1 && c.beta_schedule == vqgrad::model::BetaSchedule::Fixed && super::remedies::remedy(c).is_none()
    };
    runs.iter()
        .filter(move |r| r.estimator() == estimator)
        .filter(move |r| serde_json::from_value::<TrainConfig>(r.config.clone()).is_ok_and(|c| plain(&c) && pick(&c)))
}

struct Claim {
    id: &'static str,
    text: &'static str,
    seed_figure: &'static str,
    metric: &'static str,
    pick: Box<dyn Fn(&TrainConfig) -> bool>,
    /// What holding means: `Lower`/`Higher`: rotation below/above STE with p < 0.05; `Same`: p >= 0.05;
    /// `NotHigher` (a claim that rotation is not worse): anything but rotation above STE with p < 0.05.
    expect: Expect,
}

#[derive(Clone, Copy, PartialEq)]
enum Expect {
    Lower,
    Higher,
    Same,
    NotHigher,
}

fn claims() -> Vec<Claim> {
    let e1 = |c: &TrainConfig| {
        c.codes == 32
            && c.beta == 0.25
            && matches!(c.data, vqgrad::data::DataSpec::Subspace { sigma, .. } if sigma == 0.05)
    };
    let k64 = move |c: &TrainConfig| c.codes == 64 && matches!(c.data, vqgrad::data::DataSpec::Subspace { .. });
    vec![
        Claim {
            id: "E1",
            text: "rotation has fewer dead codes than STE",
            seed_figure: "0 vs 5.7",
            metric: "dead_codes",
            pick: Box::new(e1),
            expect: Expect::Lower,
        },
        Claim {
            id: "E1",
            text: "subspace recovery kept (subspace_err not worse)",
            seed_figure: "kept",
            metric: "subspace_err",
            pick: Box::new(e1),
            expect: Expect::NotHigher,
        },
        Claim {
            id: "E3",
            text: "rotation has higher cluster purity",
            seed_figure: "0.795 vs 0.768",
            metric: "purity",
            pick: Box::new(|c| matches!(c.data, vqgrad::data::DataSpec::Clusters { .. })),
            expect: Expect::Higher,
        },
        Claim {
            id: "E4",
            text: "K = 64: rotation has far fewer dead codes",
            seed_figure: "3.0 vs 25.7",
            metric: "dead_codes",
            pick: Box::new(move |c| {
                k64(c)
                    && c.beta == 0.25
                    && matches!(c.data, vqgrad::data::DataSpec::Subspace { sigma, .. } if sigma == 0.05)
            }),
            expect: Expect::Lower,
        },
        Claim {
            id: "E4",
            text: "K = 32: rotation has higher entropy",
            seed_figure: "3.25 vs 2.93",
            metric: "entropy",
            pick: Box::new(e1),
            expect: Expect::Higher,
        },
        Claim {
            id: "E4",
            text: "K <= 16: negligible difference in dead codes",
            seed_figure: "negligible",
            metric: "dead_codes",
            pick: Box::new(|c| {
                c.codes <= 16
                    && c.beta == 0.25
                    && matches!(c.data, vqgrad::data::DataSpec::Subspace { sigma, .. } if sigma == 0.05)
            }),
            expect: Expect::Same,
        },
        Claim {
            id: "E5",
            text: "beta >= 0.5: little difference in dead codes",
            seed_figure: "little difference",
            metric: "dead_codes",
            pick: Box::new(move |c| k64(c) && c.beta >= 0.5),
            expect: Expect::Same,
        },
        Claim {
            id: "E6",
            text: "sigma > 0.2: both converge alike (dead codes)",
            seed_figure: "alike",
            metric: "dead_codes",
            pick: Box::new(move |c| {
                k64(c) && matches!(c.data, vqgrad::data::DataSpec::Subspace { sigma, .. } if sigma > 0.2)
            }),
            expect: Expect::Same,
        },
    ]
}

/// E2: the field's figures per estimator, and the figure. The seed's claim is qualitative ("rotation gradients
/// align with Voronoi boundaries"), so the section shows what was measured and draws no verdict.
fn e2_section(field: &[(vqgrad::Estimator, f64, f64)], json: &mut serde_json::Value) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "\n### E2: gradient fields (2-D model, K = 4, 200 steps)\n");
    let _ = writeln!(md, "| estimator | mean cos(-dL/dz, q - z) | arrows that stay in their own Voronoi cell |");
    let _ = writeln!(md, "|---|---|---|");
    for (e, cos, inside) in field {
        let _ = writeln!(md, "| {e} | {cos:.4} | {inside:.4} |");
    }
    let _ = writeln!(
        md,
        "\nThe seed: \"rotation gradients align with Voronoi boundaries\" is qualitative: see the panels below \
         (`gradfield.json` holds every vector). No verdict is drawn.\n\n![gradient fields](gradfield.svg)"
    );
    if let Some(rows) = json.as_array_mut() {
        let per: serde_json::Map<String, serde_json::Value> = field
            .iter()
            .map(|(e, cos, inside)| {
                (e.name().to_string(), json!({ "mean_cos_to_code": cos, "share_into_own_cell": inside }))
            })
            .collect();
        rows.push(json!({ "id": "E2", "claim": "rotation gradients align with Voronoi boundaries", "measured": per, "holds": null }));
    }
    md
}

/// E7: per estimator, the VQ distortion on the E1 model's eval encodings beside k-means at the same K, and the
/// Lloyd gap (how far the VQ distortion is above the Lloyd fixed point reached from the VQ codebook).
fn e7_table(e7: &[serde_json::Value], json: &mut serde_json::Value, smoke: bool) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "\n### E7: VQ against k-means (E1 models, K = 32, eval encodings)\n");
    let _ = writeln!(
        md,
        "| estimator | VQ quant_err | k-means distortion | Lloyd gap (VQ above its Lloyd fixed point) | VQ dead codes | k-means dead codes |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let metric = |est: &str, f: &dyn Fn(&serde_json::Value) -> Option<f64>| -> Vec<f64> {
        e7.iter().filter(|a| a["estimator"] == est).filter_map(f).collect()
    };
    for est in ESTIMATORS.split(',') {
        let s = |f: &dyn Fn(&serde_json::Value) -> Option<f64>| {
            let sm = summarize(&metric(est, f));
            format!("{:.5} ± {:.5}", sm.mean, sm.std)
        };
        let _ = writeln!(
            md,
            "| {est} | {} | {} | {} | {} | {} |",
            s(&|a| a["vq"]["distortion"].as_f64()),
            s(&|a| a["kmeans"]["distortion"].as_f64()),
            s(&|a| a["lloyd_gap"].as_f64()),
            s(&|a| a["vq"]["dead_codes"].as_f64()),
            s(&|a| a["kmeans"]["dead_codes"].as_f64()),
        );
    }
    let gap = |est: &str| metric(est, &|a: &serde_json::Value| a["lloyd_gap"].as_f64());
    let (rot, ste) = (gap("rotation"), gap("ste"));
    let p = welch_p(&rot, &ste);
    let holds = p.map(|p| p < 0.05 && summarize(&rot).mean < summarize(&ste).mean);
    let _ = writeln!(
        md,
        "\nThe seed: \"VQ approaches k-means fixed points\" (better with rotation). Rotation's Lloyd gap {:.4} vs STE's {:.4}, \
         p = {}: {}.",
        summarize(&rot).mean,
        summarize(&ste).mean,
        p.map_or("-".into(), |p| format!("{p:.3}")),
        verdict(holds, smoke)
    );
    if let Some(rows) = json.as_array_mut() {
        rows.push(json!({ "id": "E7", "claim": "rotation approaches the k-means fixed point more closely", "runs": e7, "p": p, "holds": holds,
            "verdict": verdict(holds, smoke) }));
    }
    md
}

/// A claim's verdict as the report words it; a smoke test (not the protocol's settings) draws none.
fn verdict(holds: Option<bool>, smoke: bool) -> &'static str {
    match holds {
        _ if smoke => "not a verdict",
        Some(true) => "holds",
        Some(false) => "does not hold",
        None => "not measured",
    }
}

/// The closing table's rows: claim, the seed's figure, measured rotation and STE (mean ± std), Welch p, holds?
/// With `smoke`, every verdict reads "not a verdict".
fn claims_table(runs: &[Run], overhead: &[super::overhead::Overhead], smoke: bool) -> (String, serde_json::Value) {
    let mut md = String::new();
    let _ = writeln!(md, "## The seed's claims\n");
    let _ = writeln!(
        md,
        "Holds means: rotation below (or above) STE with Welch p < 0.05 where the seed claims a difference, \
         p >= 0.05 where it claims none, and anything but rotation worse with p < 0.05 where it claims rotation is \
         not worse. Figures are mean ± sample std over seeds; the seed's figures are not \
         targets, and nothing here was tuned toward them.{}\n",
        if smoke { " This is a smoke test, so no claim gets a verdict." } else { "" }
    );
    let (table, mut rows) = claims_rows(runs, smoke);
    md.push_str(&table);
    e8_row(&mut md, &mut rows, overhead, smoke);
    let _ = writeln!(md, "\nE7 and E2 follow.");
    (md, json!(rows))
}

/// The claims table as `vqgrad report --claims` prints it and the README quotes it: every claim the results
/// decide (E8, a timing, is not in a results file), with a verdict unless the runs are a smoke test.
pub fn claims_markdown(runs: &[Run]) -> String {
    let protocol = TrainConfig::default();
    let smoke = runs.iter().any(|r| {
        let c = serde_json::from_value::<TrainConfig>(r.config.clone());
        c.map_or(true, |c| c.steps != protocol.steps || c.n_eval != protocol.n_eval)
    });
    claims_rows(runs, smoke).0
}

/// The table's header and one row per claim of [`claims`], in markdown and as JSON.
fn claims_rows(runs: &[Run], smoke: bool) -> (String, Vec<serde_json::Value>) {
    let mut md = String::new();
    let mut rows = Vec::new();
    let _ = writeln!(
        md,
        "| id | claim | the seed's figure (rotation vs STE) | rotation | STE | rotation-trick | p (rotation vs STE) | holds? |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for c in claims() {
        let rot = values(runs, "rotation", c.metric, &*c.pick);
        let ste = values(runs, "ste", c.metric, &*c.pick);
        let trick = values(runs, "rotation-trick", c.metric, &*c.pick);
        let (sr, ss, st) = (summarize(&rot), summarize(&ste), summarize(&trick));
        let p = welch_p(&rot, &ste);
        let holds = match (p, c.expect) {
            (None, _) => None,
            (Some(p), Expect::Same) => Some(p >= 0.05),
            (Some(p), Expect::Lower) => Some(p < 0.05 && sr.mean < ss.mean),
            (Some(p), Expect::Higher) => Some(p < 0.05 && sr.mean > ss.mean),
            (Some(p), Expect::NotHigher) => Some(!(p < 0.05 && sr.mean > ss.mean)),
        };
        // A diverged run is left out of the figures and counted beside them.
        let diverged = |e: &str| picked(runs, e, &*c.pick).filter(|r| r.diverged_at.is_some()).count();
        let f = |s: &vqgrad::analysis::Summary, e: &str| {
            let d = match diverged(e) {
                0 => String::new(),
                d => format!(", {d} diverged"),
            };
            if s.n == 0 { format!("-{d}") } else { format!("{:.3} ± {:.3} (n={}{d})", s.mean, s.std, s.n) }
        };
        let verdict = verdict(holds, smoke);
        let p_text = p.map_or("-".to_string(), |p| format!("{p:.3}"));
        let (rotation, plain, trick_text) = (f(&sr, "rotation"), f(&ss, "ste"), f(&st, "rotation-trick"));
        let _ = writeln!(
            md,
            "| {} | {} ({}) | {} | {rotation} | {plain} | {trick_text} | {p_text} | {verdict} |",
            c.id, c.text, c.metric, c.seed_figure
        );
        let counts = json!({ "rotation": diverged("rotation"), "ste": diverged("ste"),
            "rotation_trick": diverged("rotation-trick") });
        rows.push(json!({ "id": c.id, "claim": c.text, "metric": c.metric, "seed": c.seed_figure,
            "rotation": sr, "ste": ss, "rotation_trick": st, "diverged": counts, "p": p, "holds": holds,
            "verdict": verdict }));
    }
    (md, rows)
}

/// E8's row of the claims table, and the step-time ratios of every estimator: the seed's "+5%" holds when
/// rotation's median ratio to ste is at most 1.05, fails when every round shows more, and is inconclusive when the
/// rounds straddle the line.
fn e8_row(md: &mut String, rows: &mut Vec<serde_json::Value>, overhead: &[super::overhead::Overhead], smoke: bool) {
    let ratio = |name: &str| overhead.iter().find(|o| o.estimator == name).map(|o| o.ratio_to_ste);
    if let Some(r) = ratio("rotation") {
        // The seed: "+5%, negligible overhead". It holds when rotation's median ratio is at most 1.05, fails when
        // every round shows more than 5%, and is inconclusive when the rounds' spread straddles the line.
        let rot = overhead.iter().find(|o| o.estimator == "rotation");
        let (lo, hi) = rot.map_or((r, r), |o| (o.ratio_min, o.ratio_max));
        let verdict = if smoke {
            verdict(None, true).to_string()
        } else if r <= 1.05 {
            "holds".to_string()
        } else if lo > 1.05 {
            "does not hold".to_string()
        } else {
            format!("inconclusive: rounds span {lo:.2} to {hi:.2}")
        };
        let trick = ratio("rotation-trick").map_or("-".into(), |r| format!("{r:.3}"));
        let _ = writeln!(
            md,
            "| E8 | rotation costs at most about 5% more per step than STE (time per step / STE's) | +5% | {r:.3} | 1 | {trick} | - | {verdict} |"
        );
        let all: Vec<String> = overhead
            .iter()
            .map(|o| format!("{} {:.3} (rounds {:.3} to {:.3})", o.estimator, o.ratio_to_ste, o.ratio_min, o.ratio_max))
            .collect();
        let _ = writeln!(
            md,
            "\nE8: the time per training step, the estimators alternating in one process, as the median over rounds of the \
             ratio to ste in the same round: {}.",
            all.join(", ")
        );
        let holds = if r <= 1.05 {
            Some(true)
        } else if lo > 1.05 {
            Some(false)
        } else {
            None
        };
        rows.push(json!({ "id": "E8", "claim": "rotation step-time overhead", "seed": "+5%", "ratios": overhead, "holds": holds }));
    }
}

/// E7: the E1 models of every estimator and seed, saved once in `models` (resumable), then k-means on their
/// encodings.
fn e7_models(engine: &Engine, args: &ReproduceArgs, models: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    std::fs::create_dir_all(models)?;
    let mut e7 = Vec::new();
    for config in grid(&experiments(args.quick, &args.set)?[0].1)? {
        let path = models.join(format!("E1-{}-seed{}.safetensors", config.estimator, config.seed));
        if !path.exists() {
            if !args.quiet {
                eprintln!("E7: training {}", path.display());
            }
            let data = engine.load_data(&config)?;
            super::train::train_and_save(engine, &config, data, |_| {}, Some(&path))?;
        }
        let (c, z, saved) = super::kmeans::model_encodings(&path)?;
        let codebook = vqgrad::reference::to_f64(&saved.codebook);
        let mut a = super::kmeans::analyse(
            engine,
            &z,
            saved.latent as usize,
            saved.codes as usize,
            c.seed,
            50,
            Some(&codebook),
        )?;
        a["estimator"] = json!(c.estimator.name());
        a["seed"] = json!(c.seed);
        e7.push(a);
    }
    Ok(e7)
}

/// The seed's future directions' bias analysis, on the first seed's ste models of E1 (K = 32, E7's) and of E4 at
/// K = 64 (trained here once): each section's title and markdown.
fn bias_sections(
    engine: &Engine,
    args: &ReproduceArgs,
    models: &Path,
    report_dir: &Path,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let e1_ste =
        grid(&experiments(args.quick, &args.set)?[0].1)?.into_iter().find(|c| c.estimator == vqgrad::Estimator::Ste);
    let mut bias = Vec::new();
    if let Some(e1) = e1_ste {
        let k64 = TrainConfig { codes: 64, ..e1.clone() };
        let k64_path = models.join(format!("E4-K64-ste-seed{}.safetensors", k64.seed));
        if !k64_path.exists() {
            super::train::train_and_save(engine, &k64, engine.load_data(&k64)?, |_| {}, Some(&k64_path))?;
        }
        let e1_path = models.join(format!("E1-ste-seed{}.safetensors", e1.seed));
        let (rows, draws) = if args.quick { (1024, 4) } else { (4096, 16) };
        for (title, path, stem) in [("E1 (K = 32)", e1_path, "bias_e1"), ("E4 at K = 64", k64_path, "bias_k64")] {
            let (source, model, x, n, seed) = super::bias::load(&path, rows, &format!("the {title} ste model"))?;
            let taus = [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001];
            let measured = vqgrad::bias::measure(&model, &x, n, &taus, draws, seed, engine)?;
            let md = super::bias::write(&measured, report_dir, &format!("{n} eval samples of {source}"), stem)?;
            bias.push((title, md));
        }
    }
    Ok(bias)
}

pub fn run(options: &GpuOptions, args: &ReproduceArgs) -> anyhow::Result<()> {
    super::output::ensure_dir(&args.out, "--out")?;
    let results = args.out.join("results.jsonl");
    let mut configs: Vec<TrainConfig> = Vec::new();
    for (_, axes) in experiments(args.quick, &args.set)? {
        for c in grid(&axes)? {
            if !configs.contains(&c) {
                configs.push(c); // E4's K = 32 is E1, E5 and E6 share K = 64 at the defaults: each runs once
            }
        }
    }
    let engine = super::train::engine(options, &args.engine)?;
    let all: Vec<&TrainConfig> = configs.iter().collect();
    let pace = Pace { limit: usize::MAX, quiet: args.quiet, batch_runs: args.batch_runs, jobs: args.jobs };
    run_missing(&engine, &all, &results, &pace)?;
    // E8: the step-time overhead, on the E1 setting (with this run's overrides), estimators alternating.
    let e8_base = grid(&experiments(args.quick, &args.set)?[0].1)?.remove(0);
    let (timed_steps, rounds) = if args.quick { (50, 7) } else { (200, 11) };
    if !args.quiet {
        eprintln!("E8: timing the estimators ({rounds} rounds of {timed_steps} steps each)");
    }
    let overhead = super::overhead::measure(&engine, &e8_base, timed_steps, rounds)?;
    let models = args.out.join("models");
    let e7 = e7_models(&engine, args, &models)?;
    let runs = load_runs(std::slice::from_ref(&results))?;
    let report_dir = args.out.join("report");
    super::output::ensure_dir(&report_dir, "--out")?;
    // Anything but the protocol's own settings is a smoke test, whose claims draw no verdict.
    let smoke = match (args.quick, args.set.is_empty()) {
        (false, true) => None,
        (true, true) => Some("`--quick` (250 steps, 3 seeds, 2048 eval samples)".to_string()),
        (quick, false) => {
            Some(format!("{}`--set {}`", if quick { "`--quick` and " } else { "" }, args.set.join(" --set ")))
        }
    };
    let experiments = experiments(args.quick, &args.set)?;
    let mut table = super::provenance::header(&engine, &experiments, smoke.as_deref())?;
    let (claims, mut json) = claims_table(&runs, &overhead, smoke.is_some());
    table.push_str(&claims);
    table.push_str(&e7_table(&e7, &mut json, smoke.is_some()));
    // E2: the gradient fields of the 2-D model, drawn into the report.
    let field_args = super::gradfield::GradfieldArgs {
        steps: 200,
        grid: 21,
        beta: 0.25,
        seed: 0,
        out: report_dir.clone(),
        engine: args.engine.clone(),
    };
    let field = super::gradfield::generate(&engine, &field_args)?;
    table.push_str(&e2_section(&field, &mut json));
    let bias = bias_sections(&engine, args, &models, &report_dir)?;
    table.push_str(&super::beyond::section(&runs, &bias, &report_dir, &mut json)?);
    table.push_str(&super::remedies::section(&runs, &overhead, &report_dir, &mut json)?);
    let mut chapters = Vec::new();
    for (name, axes) in &experiments {
        let configs = grid(axes)?;
        let Some(first) = configs.first() else { continue };
        chapters.push(Chapter::new(super::provenance::chapter_title(name, axes, first), &configs));
    }
    let front = Front { preamble: Some(format!("{table}\n")), chapters };
    write_report(&runs, &report_dir, std::slice::from_ref(&results), &front)?;
    std::fs::write(report_dir.join("claims.json"), serde_json::to_string_pretty(&json)? + "\n")?;
    println!("{table}");
    let (md, html) = (report_dir.join("report.md"), report_dir.join("report.html"));
    eprintln!("{} runs; report in {} and {}", runs.len(), md.display(), html.display());
    Ok(())
}
