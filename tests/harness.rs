//! The study harness: statistics against hand-computed values, sweep resume after an interruption (no run lost,
//! none duplicated), a truncated results line, shards, and the report's files.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use vqgrad::analysis::{summarize, welch_p};

#[test]
fn statistics_match_a_hand_computed_example() {
    let a = [1.0, 2.0, 3.0, 4.0, 5.0];
    let s = summarize(&a);
    assert_eq!(s.n, 5);
    assert!((s.mean - 3.0).abs() < 1e-12);
    assert!((s.std - 2.5f64.sqrt()).abs() < 1e-12, "sample std {}", s.std);
    // t(0.975, 4) = 2.776445105; half-width = t * std / sqrt(5).
    assert!((s.ci95 - 2.776445105 * 2.5f64.sqrt() / 5f64.sqrt()).abs() < 1e-6, "ci {}", s.ci95);
    // Welch: t = -3 / sqrt(2.5), df = 5.882353; p = 0.1075312 (numerical integration of the t density).
    let p = welch_p(&a, &[2.0, 4.0, 6.0, 8.0, 10.0]).unwrap();
    assert!((p - 0.1075312).abs() < 1e-5, "p {p}");
    assert!(welch_p(&a, &a).unwrap() > 0.999);
    assert_eq!(welch_p(&[1.0], &a), None);
    assert_eq!(welch_p(&[2.0, 2.0], &[3.0, 3.0]), Some(0.0));
    let single = summarize(&[4.0, f64::NAN]);
    assert_eq!((single.n, single.mean), (1, 4.0));
    assert!(single.std.is_nan());
}

fn vqgrad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vqgrad"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vqgrad-harness-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A grid of 2 estimators x 2 K x 2 seeds = 8 tiny runs on the CPU engine.
fn sweep(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = vqgrad();
    cmd.args(["sweep", "--out", out.to_str().unwrap(), "--estimator", "ste,rotation", "--k", "4,8", "--seeds", "0..2"]);
    cmd.args(["--set", "steps=10", "--set", "eval-every=5", "--set", "n-train=256", "--set", "n-eval=64"]);
    cmd.args(["--set", "batch=32", "--set", "dim=16", "--quiet", "--cpu"]);
    cmd.args(extra);
    cmd.output().unwrap()
}

/// A results file's lines without their timings, sorted.
fn results(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let m = v["metrics"].as_object_mut().unwrap();
            m.remove("steps_per_sec");
            m.remove("wall_s");
            v.to_string()
        })
        .collect();
    lines.sort();
    lines
}

/// `--jobs N` trains N runs at once, each on its own thread, and writes what a serial sweep writes (timings and
/// line order aside); a resume of a parallel sweep adds only the missing runs; `--jobs 0` is bad input.
#[test]
fn parallel_sweeps_write_what_a_serial_sweep_writes() {
    let dir = scratch("jobs");
    let (serial, parallel) = (dir.join("serial.jsonl"), dir.join("parallel.jsonl"));
    for (path, extra) in [(&serial, &["--jobs", "1"][..]), (&parallel, &["--jobs", "3", "--limit", "5"][..])] {
        let out = sweep(path, extra);
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(results(&parallel).len(), 5, "--limit 5");
    let out = sweep(&parallel, &["--jobs", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(results(&serial).len(), 8);
    assert_eq!(results(&serial), results(&parallel), "--jobs 3 against --jobs 1");
    let out = sweep(&dir.join("x.jsonl"), &["--jobs", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

fn configs(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::to_string(&serde_json::from_str::<serde_json::Value>(l).unwrap()["config"]).unwrap())
        .collect()
}

#[test]
fn an_interrupted_sweep_resumes_without_losing_or_repeating_runs() {
    let dir = scratch("resume");
    let out = dir.join("r.jsonl");
    let first = sweep(&out, &["--limit", "3"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(configs(&out).len(), 3);
    // A crash in the middle of a write leaves half a line.
    let mut text = std::fs::read_to_string(&out).unwrap();
    let half = text.lines().next().unwrap()[..50].to_string();
    text.push_str(&half);
    std::fs::write(&out, text).unwrap();
    let second = sweep(&out, &[]);
    assert!(second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("truncated"), "the truncated line is reported: {err}");
    let all = configs(&out);
    assert_eq!(all.len(), 8, "every run once");
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 8, "no run twice");
    // Rerunning a finished sweep runs nothing.
    let third = sweep(&out, &[]);
    assert!(String::from_utf8_lossy(&third.stderr).contains("0 new runs, 8 already done"));
    assert_eq!(configs(&out).len(), 8);
}

#[test]
fn a_killed_sweep_resumes() {
    let dir = scratch("kill");
    let out = dir.join("r.jsonl");
    let mut cmd = vqgrad();
    cmd.args(["sweep", "--out", out.to_str().unwrap(), "--estimator", "ste,rotation,diveq", "--seeds", "0..3"]);
    cmd.args(["--set", "steps=3000", "--set", "n-train=512", "--set", "n-eval=64", "--set", "batch=32"]);
    cmd.args(["--set", "dim=32", "--quiet", "--cpu"]);
    let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 1 && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    let before = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!(before >= 1, "{before} runs before the kill"); // usually some of 9: a finished sweep is fine too
    let mut again = vqgrad();
    again.args(["sweep", "--out", out.to_str().unwrap(), "--estimator", "ste,rotation,diveq", "--seeds", "0..3"]);
    again.args(["--set", "steps=3000", "--set", "n-train=512", "--set", "n-eval=64", "--set", "batch=32"]);
    again.args(["--set", "dim=32", "--quiet", "--cpu"]);
    assert!(again.output().unwrap().status.success());
    let all = configs(&out);
    assert_eq!(all.len(), 9);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 9);
}

#[test]
fn shards_cover_the_grid_once() {
    let dir = scratch("shards");
    let mut seen = Vec::new();
    for i in 0..3 {
        let out = dir.join(format!("s{i}.jsonl"));
        let o = sweep(&out, &["--shard", &format!("{i}/3")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        seen.extend(configs(&out));
    }
    assert_eq!(seen.len(), 8);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 8);
    for bad in ["3/3", "1", "a/b", "0/0"] {
        let o = sweep(&dir.join("bad.jsonl"), &["--shard", bad]);
        assert_eq!(o.status.code(), Some(2), "--shard {bad}");
    }
}

#[test]
fn a_grid_file_gives_the_same_runs_as_flags() {
    let dir = scratch("gridfile");
    let grid = dir.join("grid.json");
    std::fs::write(
        &grid,
        r#"{"estimator": ["ste", "rotation"], "k": [4, 8], "seeds": "0..2", "steps": 10, "eval-every": 5,
            "n-train": 256, "n-eval": 64, "batch": 32, "dim": 16}"#,
    )
    .unwrap();
    let from_file = vqgrad().args(["sweep", "--grid", grid.to_str().unwrap(), "--dry-run"]).output().unwrap();
    let from_flags = sweep(&dir.join("x.jsonl"), &["--dry-run"]);
    assert!(from_file.status.success(), "{}", String::from_utf8_lossy(&from_file.stderr));
    let set =
        |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect::<HashSet<_>>();
    assert_eq!(set(&from_file), set(&from_flags));
    assert_eq!(set(&from_file).len(), 8);
    let bad = vqgrad().args(["sweep", "--estimator", "ste,magic", "--dry-run"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("magic"));
}

#[test]
fn report_writes_tables_plots_and_a_summary() {
    let dir = scratch("report");
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    assert!(sweep(&a, &["--shard", "0/2"]).status.success());
    assert!(sweep(&b, &["--shard", "1/2"]).status.success());
    let out = dir.join("report");
    let o = vqgrad()
        .args(["report", a.to_str().unwrap(), b.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("8 runs in 2 settings"), "{md}");
    assert!(md.contains("| dead_codes |") && md.contains("rotation vs ste"), "{md}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let g = &summary["groups"][0];
    assert_eq!(g["estimators"]["ste"]["dead_codes"]["n"], 2);
    assert!(
        g["welch_p"]["dead_codes"]["rotation vs ste"].is_number()
            || g["welch_p"]["dead_codes"]["rotation vs ste"].is_null()
    );
    for file in ["sweep_K_1.svg", "sweep_K_1.png", "curves_1.svg", "curves_2.png", "report.html"] {
        let len = std::fs::metadata(out.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 500, "{file} is missing or empty");
    }
    // Dead codes as a fraction of K, K on a log2 axis (ticks at 4 and 8), and one colour per estimator in every
    // plot: ste's blue (#0072B2) and rotation's vermillion (#D55E00), whichever plot and series order.
    let sweep = std::fs::read_to_string(out.join("sweep_K_1.svg")).unwrap();
    assert!(sweep.contains("dead codes / K") && sweep.contains("K (codebook size, log2 scale)"), "{sweep}");
    for file in ["sweep_K_1.svg", "curves_1.svg", "curves_2.svg"] {
        let svg = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(svg.contains("#0072B2") && svg.contains("#D55E00"), "{file}: the estimators' colours");
    }
    // Intervals are bands: a translucent polygon in ste's colour under its curve.
    // The curves of a setting are small multiples: one figure, a panel per metric, each axis with its unit.
    let curves = std::fs::read_to_string(out.join("curves_1.svg")).unwrap();
    assert!(curves.contains(r##"<polygon opacity="0.18" fill="#0072B2""##), "a band for ste's interval");
    for panel in ["Dead codes", "Perplexity", "Training loss", "perplexity (codes)", "training step"] {
        assert!(curves.contains(panel), "the curves figure has `{panel}`");
    }
    // Sections are titled by what their setting is, never "Setting N"; the page has the same sections.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for title in ["### K = 4, subspace data", "### K = 8, subspace data", "### Against K: subspace data"] {
        assert!(md.contains(title), "`{title}` in:\n{md}");
        let id = format!("id=\"{}\"", title.trim_start_matches('#').trim().to_lowercase());
        let id = id.replace(", ", "-").replace(" = ", "--").replace(' ', "-").replace(':', "");
        assert!(html.contains(&id), "{id} in report.html");
    }
    assert!(!md.contains("Setting 1"));
    let none = vqgrad().args(["report", dir.join("missing.jsonl").to_str().unwrap()]).output().unwrap();
    assert!(!none.status.success());
}

#[test]
fn reproduce_writes_the_claims_table_and_resumes() {
    let dir = scratch("reproduce");
    let run = || {
        vqgrad()
            .args(["reproduce", "--quick", "--out", dir.to_str().unwrap(), "--quiet", "--cpu"])
            .args(["--set", "steps=10", "--set", "eval-every=5", "--set", "n-train=256", "--set", "n-eval=64"])
            .args(["--set", "batch=32", "--set", "seed=0"])
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(dir.join("report/report.md")).unwrap();
    // The first screen says what this is: a smoke test (its --set overrides named), the version, the engine, the
    // date, and each experiment's settings; and the claims table draws no verdict.
    let first_screen = &md[..md.find("## The seed's claims").expect("the claims table")];
    for needle in [
        "# vqgrad: the VQ gradient-estimator study",
        "**A smoke test, not the protocol.**",
        "--set steps=10",
        concat!("- vqgrad ", env!("CARGO_PKG_VERSION")),
        "- engine: cpu on",
        "- made: 20",
        "| [E4](#e4-k--4--256-subspace-data-ste-rotation-rotation-trick) | K = 4 ... 256; subspace data; ste, \
         rotation, rotation-trick | 10 | 1 | 256 / 64 | 32 |",
    ] {
        assert!(first_screen.contains(needle), "`{needle}` on the first screen:\n{first_screen}");
    }
    assert!(md.contains("not a verdict") && !md.contains("| holds |") && !md.contains("does not hold"));
    for claim in ["0 vs 5.7", "0.795 vs 0.768", "3.0 vs 25.7", "3.25 vs 2.93"] {
        assert!(md.contains(claim), "the table names the seed's figure {claim}");
    }
    let claims: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/claims.json")).unwrap()).unwrap();
    assert_eq!(claims.as_array().unwrap().len(), 13, "eight claims, E8, E7, E2, the future directions, remedies");
    let beyond = &claims[11];
    for variant in ["gumbel", "gumbel-rotation-trick", "learned", "ste + adaptive beta", "rotation-trick, 2 levels"] {
        assert!(beyond["e1"][variant]["dead_codes"]["n"] == 1, "{variant} on E1: {beyond}");
        assert_eq!(beyond["e4"][variant].as_array().map(Vec::len), Some(7), "{variant} across E4's K");
    }
    assert!(md.contains("## Beyond the seed") && md.contains("### Bias against the soft-assignment surrogate"));
    for plot in ["beyond_rate_distortion.svg", "beyond_lloyd_dist.svg", "bias_e1_cosine.svg", "bias_k64.json"] {
        assert!(dir.join("report").join(plot).exists(), "{plot}");
    }
    assert!(md.contains("### E2: gradient fields") && dir.join("report/gradfield.png").exists(), "E2 is in the report");
    assert!(md.contains("### E7: VQ against k-means"), "E7 is in the report");
    // The remedies, each with ste and rotation-trick, beside the plain estimators, with where each helps and the
    // summary plot.
    let remedies = &claims[12]["places"]["E1: K = 32, subspace data"];
    for variant in
        ["ste", "rotation-trick", "ste + stochastic sampling (tau 0.05)", "rotation-trick + orthogonality 10"]
    {
        assert_eq!(remedies[variant]["metrics"]["dead_codes"]["n"], 1, "{variant} on E1: {remedies}");
    }
    assert!(md.contains("## Codebook-collapse remedies") && md.contains("### Where each remedy helps"));
    assert!(dir.join("report/remedies.svg").exists(), "the remedies' summary plot");
    assert_eq!(std::fs::read_dir(dir.join("models")).unwrap().count(), 4, "one E1 model per estimator, one K = 64");
    assert!(md.contains("| E8 |"), "E8 is in the table");
    // With one seed, E1 has one run per estimator: no test is possible, and the table says so rather than guess.
    assert!(claims[0]["holds"].is_null(), "{}", claims[0]);
    assert_eq!(claims[0]["verdict"], "not a verdict");
    let lines = std::fs::read_to_string(dir.join("results.jsonl")).unwrap().lines().count();
    assert_eq!(
        lines,
        3 + 3 + 3 * 6 + 3 * 4 + 3 * 4 + 3 * 7 + 2 * 7 + 2 * 7 + 9 * 2 * (7 + 1),
        "E1, E3, E4, E5, E6, the X experiments (3 + 2 + 2 variants on E1 and E4) and the R experiments (9 remedies x \
         2 estimators on E4's K and E3) with shared settings run once"
    );
    let again = run();
    assert!(again.status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join("results.jsonl")).unwrap().lines().count(),
        lines,
        "resumed: no new runs"
    );
}

/// E2's JSON holds everything needed to recompute the field: every stored direction equals the reference
/// formulas applied to the stored model, codebook, points and targets.
#[test]
fn gradfield_json_matches_the_reference_formulas() {
    use vqgrad::Estimator;
    use vqgrad::reference::estimator_row;
    let dir = scratch("gradfield");
    let o =
        vqgrad().args(["gradfield", "--steps", "30", "--grid", "9", "--out", dir.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for e in Estimator::ROW {
        assert!(text.contains(e.name()), "the summary names {e}: {text}");
    }
    for f in ["gradfield.svg", "gradfield.png", "gradfield.json"] {
        assert!(std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0) > 500, "{f}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("gradfield.json")).unwrap()).unwrap();
    let arr = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    let (we, be, wd, bd) =
        (arr(&v["model"]["w_enc"]), arr(&v["model"]["b_enc"]), arr(&v["model"]["w_dec"]), arr(&v["model"]["b_dec"]));
    let beta = v["model"]["beta"].as_f64().unwrap();
    let codes: Vec<Vec<f64>> = v["codebook"].as_array().unwrap().iter().map(arr).collect();
    let points: Vec<Vec<f64>> = v["points"].as_array().unwrap().iter().map(arr).collect();
    let targets: Vec<Vec<f64>> = v["targets"].as_array().unwrap().iter().map(arr).collect();
    assert_eq!(points.len(), 81);
    for e in Estimator::ROW {
        let dirs: Vec<Vec<f64>> = v["neg_grad"][e.name()].as_array().unwrap().iter().map(arr).collect();
        for ((z, x), d) in points.iter().zip(&targets).zip(&dirs) {
            // The target encodes to the point.
            for r in 0..2 {
                assert!((we[2 * r] * x[0] + we[2 * r + 1] * x[1] + be[r] - z[r]).abs() < 1e-9);
            }
            let near = (0..codes.len())
                .min_by(|&a, &b| {
                    let da = (z[0] - codes[a][0]).powi(2) + (z[1] - codes[a][1]).powi(2);
                    let db = (z[0] - codes[b][0]).powi(2) + (z[1] - codes[b][1]).powi(2);
                    da.total_cmp(&db)
                })
                .unwrap();
            let q = &codes[near];
            let xhat = [wd[0] * q[0] + wd[1] * q[1] + bd[0], wd[2] * q[0] + wd[3] * q[1] + bd[1]];
            let r = [xhat[0] - x[0], xhat[1] - x[1]]; // 2/d = 1 for d = 2
            let g = [wd[0] * r[0] + wd[2] * r[1], wd[1] * r[0] + wd[3] * r[1]];
            let est = estimator_row(e, &g, z, q);
            for j in 0..2 {
                let want = -(est[j] + beta * (z[j] - q[j])); // 2 beta / m = beta for m = 2
                assert!((d[j] - want).abs() <= 1e-9 * (1.0 + want.abs()), "{e}: {} vs {want}", d[j]);
            }
        }
    }
}

/// E7: a model saved by `train --save-params` is clustered by `kmeans --model`: the VQ codebook's distortion on its
/// eval encodings is the run's quant_err, and Lloyd from it never increases the distortion.
#[test]
fn kmeans_on_a_saved_model_and_on_raw_data() {
    let dir = scratch("kmeans");
    let (model, run, out) = (dir.join("m.safetensors"), dir.join("run.json"), dir.join("km.json"));
    let small =
        ["--steps", "60", "--eval-every", "60", "--n-train", "1024", "--n-eval", "512", "--batch", "64", "--quiet"];
    let o = vqgrad()
        .args(["train", "--preset", "E1", "--save-params", model.to_str().unwrap(), "--out", run.to_str().unwrap()])
        .args(small)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = vqgrad()
        .args(["kmeans", "--model", model.to_str().unwrap(), "--iters", "20", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let km: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let trained: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&run).unwrap()).unwrap();
    let (vq, quant_err) = (km["vq"]["distortion"].as_f64().unwrap(), trained["metrics"]["quant_err"].as_f64().unwrap());
    assert!((vq - quant_err).abs() <= 1e-4 * quant_err, "VQ distortion {vq} vs the run's quant_err {quant_err}");
    assert_eq!(km["vq"]["dead_codes"], trained["metrics"]["dead_codes"]);
    let polished = km["lloyd_from_vq"]["distortion"].as_f64().unwrap();
    assert!(polished <= vq * (1.0 + 1e-6), "Lloyd increased the distortion: {vq} -> {polished}");
    assert!(km["kmeans"]["distortion"].as_f64().unwrap() > 0.0);
    assert_eq!((km["k"].as_u64(), km["points"].as_u64(), km["dim"].as_u64()), (Some(32), Some(512), Some(4)));
    // Raw data, and a file that is not a saved model.
    let raw = vqgrad()
        .args(["kmeans", "--preset", "E3", "--n-eval", "300", "--n-train", "300", "--batch", "32", "--iters", "5"])
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    assert!(String::from_utf8_lossy(&raw.stdout).contains("raw eval data: 300 points of dimension 32, K = 32"));
    std::fs::write(dir.join("bad.safetensors"), b"not a model").unwrap();
    let bad = vqgrad().args(["kmeans", "--model", dir.join("bad.safetensors").to_str().unwrap()]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad.safetensors"));
}

/// `sweep --batch-runs` trains compatible runs together and writes exactly what one-at-a-time sweeps write
/// (timings aside); bad values exit 2.
#[test]
fn batched_sweeps_write_the_same_results() {
    if vqgrad::Gpu::new(&vqgrad::GpuOptions::default()).is_err() {
        assert!(std::env::var("VQGRAD_REQUIRE_GPU").as_deref() != Ok("1"), "VQGRAD_REQUIRE_GPU=1 but no adapter");
        eprintln!("SKIPPED: batching needs an adapter");
        return;
    }
    let dir = scratch("batched");
    let run = |out: &Path, batch: &str| {
        let mut cmd = vqgrad();
        cmd.args(["sweep", "--out", out.to_str().unwrap(), "--estimator", "ste,rotation,rotation-trick,diveq"]);
        cmd.args([
            "--k",
            "4,8",
            "--beta",
            "0.25,1.0",
            "--seeds",
            "0..2",
            "--set",
            "steps=70",
            "--set",
            "eval-every=35",
        ]);
        cmd.args(["--set", "n-train=256", "--set", "n-eval=64", "--set", "batch=32", "--set", "dim=16", "--quiet"]);
        cmd.args(["--batch-runs", batch, "--engine", "gpu"]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "--batch-runs {batch}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (alone, auto, three) = (dir.join("alone.jsonl"), dir.join("auto.jsonl"), dir.join("three.jsonl"));
    run(&alone, "1");
    run(&auto, "auto");
    run(&three, "3");
    assert_eq!(results(&alone).len(), 32);
    assert_eq!(results(&alone), results(&auto), "--batch-runs auto");
    assert_eq!(results(&alone), results(&three), "--batch-runs 3");
    for bad in ["0", "x", "-1"] {
        let out = vqgrad().args(["sweep", "--batch-runs", bad, "--dry-run"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "--batch-runs {bad}");
    }
}

/// A sweep records diverged runs like any other (a resume does not redo them) and says so; the report counts them
/// per cell, in a `diverged` row and in its summary, instead of leaving them out silently.
#[test]
fn diverged_runs_are_recorded_and_counted_per_cell() {
    let dir = scratch("diverged");
    let out = dir.join("r.jsonl");
    let swept = sweep(&out, &["--set", "lr=1e15,0.001"]);
    assert!(swept.status.success(), "{}", String::from_utf8_lossy(&swept.stderr));
    let err = String::from_utf8_lossy(&swept.stderr);
    assert_eq!(err.matches("diverged: ").count(), 8, "each diverged run is said once: {err}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let diverged = lines.iter().filter(|l| l["status"] == "diverged").count();
    assert_eq!((lines.len(), diverged), (16, 8), "every run recorded, the lr = 1e15 ones diverged");
    assert!(lines.iter().all(|l| (l["status"] == "diverged") == (l["config"]["lr"].as_f64() == Some(1e15))));
    let again = sweep(&out, &["--set", "lr=1e15,0.001"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 new runs, 16 already done"));
    let report = dir.join("report");
    let made = vqgrad().args(["report", "--out", report.to_str().unwrap(), out.to_str().unwrap()]).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("| diverged (left out of the figures above) | 2 of 2 | 2 of 2 |"), "{md}");
    // A setting whose runs all diverged has no curve to draw: the report says so instead of linking a missing
    // plot, and the page (which inlines every plot it links) is written.
    assert!(md.contains("no finite values to plot"), "{md}");
    assert!(report.join("report.html").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap()).unwrap();
    let counts: Vec<u64> = summary["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["estimators"].as_object().unwrap().values().map(|e| e["diverged"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 8, "{counts:?}");
}

/// `sweep --study remedies` is the R experiments with their baselines (160 settings: plain and the nine remedies,
/// stochastic sampling, the orthogonality penalty, SimVQ, the synchronized update, the affine codes, alternated
/// optimization, FSQ, cosine codes and a low-dimensional lookup, each with ste and rotation-trick on E1, E4's other K
/// and E3); `report` on its results
/// opens with the remedies' comparison; other grid flags are refused.
#[test]
fn the_remedies_study_sweeps_and_reports() {
    let dir = scratch("study");
    let out = dir.join("r.jsonl");
    let tiny = ["--set", "steps=10", "--set", "eval-every=5", "--set", "n-train=256", "--set", "n-eval=64"];
    let dry = vqgrad().args(["sweep", "--study", "remedies", "--seeds", "0..2", "--dry-run"]).output().unwrap();
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&dry.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 160 * 2);
    let count = |f: &dyn Fn(&serde_json::Value) -> bool| lines.iter().filter(|c| f(c)).count();
    assert_eq!(count(&|c| c["sampling"] == "stochastic" && c["tau"] == 0.05), 32);
    assert_eq!(count(&|c| c["orth_weight"] == 10.0), 32);
    assert_eq!(count(&|c| c["reparam"] == "simvq"), 32);
    assert_eq!(count(&|c| c["sync_nu"] == 0.2), 32);
    assert_eq!(count(&|c| c["affine_lr"] == 10.0), 32);
    assert_eq!(count(&|c| c["codebook_mode"] == "alternate"), 32);
    assert_eq!(count(&|c| c["cosine"] == true), 32);
    assert_eq!(count(&|c| c["latent"] == 2 && c["lookup_width"].as_u64().is_some_and(|w| w > 2)), 32);
    // FSQ's levels from K (auto), a latent dimension per level, and no commitment term.
    let fsq = |c: &serde_json::Value| c["fsq_levels"].as_array().map(Vec::len);
    assert_eq!(
        count(&|c| fsq(c).is_some() && fsq(c) == c["latent"].as_u64().map(|m| m as usize) && c["beta"] == 0.0),
        32
    );
    // E3: plain and the nine remedies, each with two estimators and two seeds.
    assert_eq!(count(&|c| c["data"]["kind"] == "clusters"), 10 * 2 * 2);
    assert!(lines.iter().all(|c| c["estimator"] == "ste" || c["estimator"] == "rotation-trick"));
    let o = vqgrad()
        .args(["sweep", "--study", "remedies", "--seeds", "0..2", "--out", out.to_str().unwrap(), "--quiet", "--cpu"])
        .args(tiny)
        .args(["--set", "batch=32"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = dir.join("report");
    let o = vqgrad().args(["report", out.to_str().unwrap(), "--out", report.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.starts_with("# vqgrad report\n\n## Codebook-collapse remedies"), "{}", &md[..200.min(md.len())]);
    assert!(md.contains("| ste + orthogonality 10 (2) |") && md.contains("### Where each remedy helps"));
    assert!(report.join("remedies.json").exists() && report.join("remedies.svg").exists());
    for flag in [["--k", "4"], ["--estimator", "ste"], ["--preset", "E1"]] {
        let o = vqgrad().args(["sweep", "--study", "remedies", "--dry-run"]).args(flag).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag:?}");
    }
}
