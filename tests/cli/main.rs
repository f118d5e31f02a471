//! The `vqgrad` binary: exit codes and output formats.

use std::path::Path;
use std::process::Command;

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod fuzz;

fn vqgrad(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vqgrad")).args(args).output().expect("the binary runs")
}

/// Runs `args`, asserts exit `code` with exactly one line on stderr and no panic, and returns that line. clap's
/// own hints after its error line (blank lines, `Usage:`, `For more information`, indented details) do not count.
fn one_error_line(args: &[&str], code: i32) -> String {
    let out = vqgrad(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let clap_hint =
        |l: &str| l.is_empty() || l.starts_with("Usage:") || l.starts_with("For more") || l.starts_with("  ");
    let ours: Vec<&str> = stderr.lines().filter(|l| !clap_hint(l)).collect();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(ours.len(), 1, "{args:?}: one line on stderr, got {ours:?}");
    assert!(!ours[0].contains("panicked"), "{args:?}: {}", ours[0]);
    ours[0].to_string()
}

/// `--engine gpu` where an adapter exists (lavapipe too, which `--engine auto` passes over for the CPU engine),
/// so that these tests drive the GPU engine; nothing where none exists.
fn gpu_engine() -> &'static [&'static str] {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *HAS.get_or_init(|| vqgrad::Gpu::new(&vqgrad::GpuOptions::default()).is_ok()) {
        &["--engine", "gpu"]
    } else {
        assert!(!require_gpu(), "VQGRAD_REQUIRE_GPU=1 but no adapter");
        &[]
    }
}

/// The seed of every line of a results file, in file order; each line must be a whole JSON run.
fn seeds_in(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole lines")["config"]["seed"].as_u64().unwrap())
        .collect()
}

fn require_gpu() -> bool {
    std::env::var("VQGRAD_REQUIRE_GPU").as_deref() == Ok("1")
}

/// Without a desktop session (no XDG_RUNTIME_DIR, or one that is not a directory) no Vulkan loader warning is
/// printed: the tool provides a private runtime directory first.
#[test]
fn no_runtime_dir_warning_without_a_desktop_session() {
    for value in [None, Some("/nonexistent/vqgrad-runtime")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vqgrad"));
        match value {
            None => command.env_remove("XDG_RUNTIME_DIR"),
            Some(v) => command.env("XDG_RUNTIME_DIR", v),
        };
        let out = command.args(["info"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{value:?}: {stderr}");
    }
}

#[test]
fn info_json_is_one_object_naming_the_adapters() {
    let out = vqgrad(&["info", "--json"]);
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert!(v["adapters"].is_array());
    assert!(v["version"].is_string());
    if v["chosen"].is_null() {
        assert!(!require_gpu(), "VQGRAD_REQUIRE_GPU=1 but no adapter was chosen: {}", v["error"]);
        assert_eq!(v["engine"], "cpu");
        eprintln!("SKIPPED the adapter checks: no adapter ({})", v["error"]);
        return;
    }
    let chosen = &v["chosen"];
    for key in ["name", "backend", "device_type", "driver", "limits", "features"] {
        assert!(!chosen[key].is_null(), "chosen.{key} missing");
    }
    assert!(chosen["limits"]["max_compute_workgroup_storage_size"].as_u64().unwrap() >= 16384);
    assert!(chosen["limits"]["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    // `--engine auto` takes a hardware adapter, and the CPU engine over a software one (lavapipe).
    let software = chosen["device_type"] == "cpu";
    assert_eq!(v["engine"], if software { "cpu" } else { "gpu" }, "{chosen}");
}

#[test]
fn info_text_lists_the_limits() {
    let out = vqgrad(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("adapters ("), "{text}");
    if text.contains("chosen: none") {
        assert!(!require_gpu(), "VQGRAD_REQUIRE_GPU=1 but no adapter: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("CPU reference engine"));
    } else {
        assert!(text.contains("max_storage_buffer_binding_size"), "{text}");
    }
}

#[test]
fn an_adapter_filter_that_matches_nothing_falls_back_to_the_cpu_engine() {
    let out = vqgrad(&["info", "--json", "--adapter", "no such adapter 1234"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["chosen"].is_null());
    assert_eq!(v["engine"], "cpu");
    assert!(v["error"].as_str().unwrap().contains("no such adapter 1234"));
}

#[test]
fn help_and_version_exit_0() {
    assert!(vqgrad(&["--help"]).status.success());
    let out = vqgrad(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

const QUICK: &[&str] =
    &["--steps", "20", "--eval-every", "10", "--n-train", "512", "--n-eval", "256", "--batch", "64", "--quiet"];

#[test]
fn train_writes_a_json_run_and_a_table() {
    let dir = std::env::temp_dir().join(format!("vqgrad-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_path = dir.join("run.json");
    for engine in [gpu_engine(), &["--cpu"][..]] {
        let mut args = vec!["train", "--preset", "E3", "--estimator", "rotation", "--out", out_path.to_str().unwrap()];
        args.extend_from_slice(QUICK);
        args.extend_from_slice(engine);
        let out = vqgrad(&args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(table.contains("dead_codes") && table.contains("purity"), "{table}");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
        for key in [
            "dead_codes",
            "usage",
            "entropy",
            "perplexity",
            "recon_mse",
            "quant_err",
            "purity",
            "subspace_err",
            "steps_per_sec",
            "wall_s",
        ] {
            assert!(v["metrics"].get(key).is_some(), "metrics.{key} missing");
        }
        assert!(v["metrics"]["purity"].as_f64().unwrap() > 0.0, "clusters have labels: purity is a number");
        assert!(v["metrics"]["subspace_err"].is_null());
        assert_eq!(v["config"]["estimator"], "rotation");
        assert_eq!(v["config"]["codes"], 32);
        assert_eq!(v["config"]["data"]["kind"], "clusters");
        assert_eq!(v["curve"].as_array().unwrap().len(), 2);
        assert_eq!(v["curve"][1]["step"], 20);
        assert!(v["adapter"]["name"].is_string());
        if engine == gpu_engine() && require_gpu() {
            assert_eq!(v["engine"], "gpu", "VQGRAD_REQUIRE_GPU=1 but train ran on the CPU");
        }
    }
}

/// `train --runs 3` writes one JSON line per run over consecutive seeds, each equal (timings aside) to training
/// that seed alone; the table has a row per seed. `--runs 0` and `--runs 2 --save-params` are errors.
#[test]
fn train_runs_batches_seeds_and_each_equals_its_run_alone() {
    let dir = std::env::temp_dir().join(format!("vqgrad-cli-runs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (many, one) = (dir.join("runs.jsonl"), dir.join("one.json"));
    let base = ["train", "--preset", "E1", "--estimator", "rotation-trick", "--reset-dead", "5", "--seed", "7"];
    let mut args: Vec<&str> = base.to_vec();
    args.extend_from_slice(&["--runs", "3", "--out", many.to_str().unwrap()]);
    args.extend_from_slice(QUICK);
    args.extend_from_slice(gpu_engine());
    let out = vqgrad(&args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 4, "a header and a row per run: {table}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&many).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seeds: Vec<u64> = lines.iter().map(|l| l["config"]["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [7, 8, 9]);
    let mut args: Vec<&str> = base.to_vec();
    args[base.len() - 1] = "8";
    args.extend_from_slice(&["--out", one.to_str().unwrap()]);
    args.extend_from_slice(QUICK);
    args.extend_from_slice(gpu_engine());
    let out = vqgrad(&args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let alone: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&one).unwrap()).unwrap();
    assert_eq!(lines[1]["curve"], alone["curve"], "seed 8 in the batch and alone");
    assert_eq!(lines[1]["config"], alone["config"]);
    assert_eq!(lines[1]["engine"], alone["engine"]);
    assert_ne!(lines[0]["curve"], lines[1]["curve"], "different seeds train differently");
    for bad in [
        &["train", "--runs", "0"][..],
        &["train", "--runs", "4000000000"][..],
        &["train", "--runs", "2", "--save-params", "x.safetensors"][..],
    ] {
        let out = vqgrad(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--runs"), "{bad:?}");
    }
}

/// `bench --json` has every section: the CPU engine's figures always, the GPU's where there is an adapter (and
/// none without one).
#[test]
fn bench_json_has_every_section() {
    let out = vqgrad(&["bench", "--json", "--smoke"]);
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    let has_gpu = v["adapter"].is_string();
    assert!(has_gpu || !require_gpu(), "VQGRAD_REQUIRE_GPU=1 but bench ran without an adapter");
    assert!(v["cpu"].as_str().is_some_and(|c| c.starts_with("vqgrad CPU (f32")), "{}", v["cpu"]);
    let positive = |x: &serde_json::Value| x.as_f64().is_some_and(|x| x > 0.0 && x.is_finite());
    let assign = v["assign"].as_array().expect("assign figures");
    assert_eq!(assign.len(), 2);
    for a in assign {
        assert!(positive(&a["cpu_gflops"]), "{a}");
        for key in ["gpu_gflops", "gpu_over_cpu"] {
            assert_eq!(positive(&a[key]), has_gpu, "assign.{key}: {a}");
        }
    }
    let kernels = v["estimator_kernel"].as_array().expect("estimator kernel figures");
    assert_eq!(kernels.len(), if has_gpu { vqgrad::Estimator::ROW.len() } else { 0 }, "one per row estimator");
    assert!(kernels.iter().all(|e| positive(&e["us"]) && positive(&e["ratio_to_ste"])));
    let training = v["training"].as_array().expect("training figures");
    let remedies = ["stochastic sampling", "orthogonality penalty", "simvq", "synchronized update", "affine codes"];
    let remedies: Vec<String> = remedies
        .iter()
        .chain(&["alternated optimization", "fsq", "cosine codes", "low-dimensional lookup"])
        .map(|r| format!("ste + {r}"))
        .collect();
    assert_eq!(training.len(), 2 * (vqgrad::Estimator::ALL.len() + remedies.len()), "every estimator and remedy x 2");
    for remedy in &remedies {
        assert!(training.iter().any(|t| t["estimator"] == *remedy), "{remedy}'s cost");
    }
    for t in training {
        assert!(positive(&t["cpu_steps_per_sec"]) && positive(&t["cpu_ratio_to_ste"]), "{t}");
        assert_eq!(positive(&t["gpu_steps_per_sec"]), has_gpu, "{t}");
        if t["estimator"] == "ste" {
            assert_eq!(t["cpu_ratio_to_ste"], 1.0);
            assert_eq!(t["gpu_ratio_to_ste"], if has_gpu { serde_json::json!(1.0) } else { serde_json::Value::Null });
        }
    }
    let sweeps = v["sweep"].as_array().expect("sweep figures");
    let engines: Vec<&str> = sweeps.iter().map(|s| s["engine"].as_str().unwrap()).collect();
    assert_eq!(engines, if has_gpu { vec!["gpu", "cpu"] } else { vec!["cpu"] });
    for s in sweeps {
        assert_eq!(s["runs"], 20);
        for key in ["unbatched_run_steps_per_sec", "batched_run_steps_per_sec", "batch_training_run_steps_per_sec"] {
            assert!(positive(&s[key]), "sweep.{key}: {s}");
        }
    }
    assert_eq!(sweeps.last().unwrap()["runs_per_batch"], 20, "the CPU engine's batch is the whole grid, on threads");
    if v["timestamps"] == true {
        let kernels: Vec<&str> =
            v["profile"].as_array().unwrap().iter().map(|p| p["kernel"].as_str().unwrap()).collect();
        let has = |name: &str| kernels.iter().any(|k| k.starts_with(name));
        assert!(has("assign") && has("estimator backward") && has("parameter adam"), "{kernels:?}");
    }
    assert_eq!(v["memory"]["e1_gpu_buffer_bytes"].as_u64().unwrap() > 0, has_gpu);
}

/// `export-shaders` writes every WGSL source (with the scalar variants) and, per flag, one translation per entry
/// point: 35 each for SPIR-V (with its magic number), MSL and HLSL; the WGSL files are the crate's sources.
#[test]
fn export_shaders_writes_the_sources_and_every_translation() {
    let dir = std::env::temp_dir().join(format!("vqgrad-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = vqgrad(&["export-shaders", "--out", dir.to_str().unwrap(), "--spirv", "--msl", "--hlsl"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files = |sub: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !dir.join(sub).join(n).is_dir())
            .collect();
        names.sort();
        names
    };
    let wgsl = files("");
    assert_eq!(wgsl.len(), 18, "{wgsl:?}");
    for (name, source) in vqgrad::shaders::variants() {
        assert_eq!(std::fs::read_to_string(dir.join(&name)).unwrap(), source, "{name}");
    }
    for (sub, ext) in [("spirv", ".spv"), ("msl", ".metal"), ("hlsl", ".hlsl")] {
        let names = files(sub);
        assert_eq!(names.len(), 42, "{sub}: {names:?}");
        assert!(names.iter().all(|n| n.ends_with(ext)), "{sub}: {names:?}");
        assert!(names.contains(&format!("assign.scalar.assign{ext}")), "{sub}: {names:?}");
    }
    let spv = std::fs::read(dir.join("spirv").join("estimator.estimator_backward.spv")).unwrap();
    assert_eq!(spv[..4], 0x0723_0203u32.to_le_bytes());
    // Only the WGSL without a flag; an unwritable directory is an error, not a panic.
    let plain = dir.join("plain");
    let out = vqgrad(&["export-shaders", "--out", plain.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(!plain.join("spirv").exists());
    let blocked = dir.join("assign.wgsl").join("x");
    let out = vqgrad(&["export-shaders", "--out", blocked.to_str().unwrap()]);
    // An output directory that cannot be made is bad input: exit 2, naming the flag and the path.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--out") && err.contains("cannot create"), "{err}");
}

/// `bias` trains a model (or reads a saved one), writes a row per estimator and tau, the table and the plots;
/// bad temperatures exit 2.
#[test]
fn bias_measures_every_estimator_across_tau() {
    let dir = std::env::temp_dir().join(format!("vqgrad-bias-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("m.safetensors");
    let mut args = vec!["train", "--save-params", model.to_str().unwrap()];
    args.extend_from_slice(QUICK);
    assert!(vqgrad(&args).status.success());
    let out = dir.join("bias");
    let bias = |extra: &[&str]| {
        let mut a = vec!["bias", "--model", model.to_str().unwrap(), "--rows", "64", "--draws", "2"];
        a.extend_from_slice(&["--out", out.to_str().unwrap()]);
        a.extend_from_slice(extra);
        a.extend_from_slice(gpu_engine());
        vqgrad(&a)
    };
    let run = bias(&["--taus", "1,0.01"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("bias.json")).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12, "6 estimators x 2 taus");
    assert!(rows.iter().all(|r| r["cosine"].as_f64().is_some_and(|c| (-1.0..=1.0).contains(&c))), "{rows:?}");
    assert!(String::from_utf8_lossy(&run.stdout).contains("| 0.01 |"));
    assert!(out.join("bias_cosine.svg").exists() && out.join("bias_rel_err.png").exists());
    for bad in [&["--taus", "0"][..], &["--taus", "-1,1"][..], &["--draws", "0"][..]] {
        assert_eq!(bias(bad).status.code(), Some(2), "{bad:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A diverging run (a learning rate of 1e15, or noise of 1e300) finishes on either engine instead of hanging in
/// the SVD behind subspace_err, writes its result with `"status": "diverged"` and the step it was detected at,
/// and exits 3 with one line on stderr saying so; a finite run beside it says `"status": "ok"` and exits 0.
#[test]
fn a_diverging_run_finishes_flagged_with_exit_3() {
    let dir = std::env::temp_dir().join(format!("vqgrad-diverge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = ["--preset", "E1", "--steps", "60", "--eval-every", "30", "--n-train", "1024", "--n-eval", "256"];
    let cpu: &[&str] = &["--cpu"];
    for (engine, bad) in [(cpu, ["--lr", "1e15"]), (cpu, ["--sigma", "1e300"]), (gpu_engine(), ["--lr", "1e15"])] {
        let out_path = dir.join("run.json");
        let path = out_path.to_str().unwrap();
        let mut args: Vec<&str> = vec!["train", "--quiet", "--out", path];
        args.extend(small);
        args.extend(bad);
        args.extend(engine);
        let what = format!("{args:?}");
        let line = one_error_line(&args, 3);
        assert!(line.starts_with("diverged: ") && line.contains("at step 30"), "{what}: {line}");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
        assert_eq!(v["status"], "diverged", "{what}");
        assert_eq!(v["diverged_at"], 30, "{what}");
        assert!(v["curve"].as_array().unwrap().is_empty(), "{what}: no finite evaluation to keep");
        if engine == gpu_engine() && require_gpu() {
            assert_eq!(v["engine"], "gpu", "{what}");
        }
    }
    let ok_path = dir.join("ok.json");
    let mut args = vec!["train", "--quiet", "--cpu", "--out", ok_path.to_str().unwrap()];
    args.extend(small);
    let out = vqgrad(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("ok.json")).unwrap()).unwrap();
    assert_eq!((v["status"].as_str(), v["diverged_at"].is_null()), (Some("ok"), true));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Output paths are checked before any work: a missing directory, a directory given as the file, or an unwritable
/// place exits 2 at once with one line naming the flag and the path. The runs asked for are long (200000 steps),
/// so a check made after training would not return in the test's time.
#[test]
fn bad_output_paths_exit_2_before_any_work() {
    let long = ["--preset", "E1", "--steps", "200000", "--quiet"];
    let dir = std::env::temp_dir();
    let dir = dir.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["train", "--out", "/nonexistent-vqgrad/x.json"], "/nonexistent-vqgrad"),
        (&["train", "--out", dir], "is a directory"),
        (&["train", "--save-params", "/nonexistent-vqgrad/m.safetensors"], "--save-params"),
        (&["train", "--runs", "3", "--out", "/nonexistent-vqgrad/x.jsonl"], "/nonexistent-vqgrad"),
        (&["sweep", "--estimator", "ste", "--out", "/nonexistent-vqgrad/r.jsonl"], "/nonexistent-vqgrad"),
    ];
    for (args, names) in cases {
        let mut all: Vec<&str> = args.to_vec();
        if args[0] == "sweep" {
            all.extend(["--preset", "E1", "--set", "steps=200000", "--quiet"]);
        } else {
            all.extend(long);
        }
        let line = one_error_line(&all, 2);
        assert!(line.contains(names), "{all:?}: {line}");
    }
}

/// The sweep's results file is its own: a repeated seed or grid point, a range of a billion seeds, or a file that
/// is not a results file exits 2 with one line (the foreign file unchanged, byte for byte); a second sweep on a
/// file another sweep is writing exits 2 at once, naming the file, and the first finishes with each run once.
/// Negative numbers parse, and the range checks judge them.
#[test]
fn sweeps_refuse_repeats_foreign_files_and_a_second_writer() {
    let dir = std::env::temp_dir().join(format!("vqgrad-sweep-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let results = dir.join("r.jsonl");
    let r = results.to_str().unwrap();
    let foreign = dir.join("notes.txt");
    std::fs::write(&foreign, b"my notes\n{\"not\": \"a run\"}\n").unwrap();
    let f = foreign.to_str().unwrap();
    let one_line = |args: &[&str], names: &str| {
        let line = one_error_line(args, 2);
        assert!(line.contains(names), "{args:?}: {line}");
    };
    let sweep = ["sweep", "--preset", "E1", "--estimator", "ste", "--quiet"];
    one_line(&[&sweep[..], &["--seeds", "0,0,1", "--out", r]].concat(), "seed 0 is given twice");
    one_line(&[&sweep[..], &["--seeds", "0..1000000000", "--dry-run", "--out", r]].concat(), "at most");
    one_line(&[&sweep[..], &["--k", "32,32", "--seeds", "0", "--dry-run", "--out", r]].concat(), "repeats a run");
    one_line(&[&sweep[..], &["--seeds", "0", "--out", f]].concat(), "not a vqgrad results file");
    assert_eq!(std::fs::read(&foreign).unwrap(), b"my notes\n{\"not\": \"a run\"}\n", "the foreign file changed");
    one_line(&[&sweep[..], &["--sigma", "-0.1", "--seeds", "0", "--out", r]].concat(), "sigma -0.1");
    one_line(&["train", "--sigma", "-0.1", "--steps", "5"], "sigma -0.1");
    // Two sweeps on one file: the second is refused while the first holds the lock.
    let _ = std::fs::remove_file(&results);
    let small = ["--set", "n-train=1024", "--set", "n-eval=256", "--set", "steps=1500", "--seeds", "0..2", "--cpu"];
    let args = [&sweep[..], &small[..], &["--out", r]].concat();
    let mut first = Command::new(env!("CARGO_BIN_EXE_vqgrad")).args(&args).spawn().unwrap();
    let start = std::time::Instant::now();
    loop {
        // The lock is taken: our own try fails.
        if let Ok(file) = std::fs::File::open(&results)
            && matches!(file.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
        {
            break;
        }
        assert!(start.elapsed().as_secs() < 120, "the first sweep never took its lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    one_line(&args, "in use by another sweep");
    assert!(first.wait().unwrap().success());
    let mut seeds = seeds_in(&std::fs::read_to_string(&results).unwrap());
    // In the order they finished: the CPU engine trains one run per core at once.
    seeds.sort();
    assert_eq!(seeds, [0, 1], "each run once");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `train --runs R --out` keeps each finished run: interrupted (SIGINT, as Ctrl-C) after its first runs finished,
/// the command exits 130 and the file holds those runs as whole lines, never half of one. On the CPU engine, where
/// runs finish one by one.
#[test]
fn an_interrupted_train_runs_keeps_its_finished_runs() {
    let dir = std::env::temp_dir().join(format!("vqgrad-interrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("runs.jsonl");
    let args = ["train", "--quiet", "--cpu", "--runs", "50", "--steps", "400", "--eval-every", "400"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_vqgrad"))
        .args(args)
        .args(["--n-train", "1024", "--n-eval", "256", "--out", out.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 2 {
        assert!(start.elapsed().as_secs() < 300, "no run finished");
        assert!(child.try_wait().unwrap().is_none(), "the command ended before it was interrupted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SIGINT as Ctrl-C sends it; where no `kill` command exists, SIGKILL (the file must survive that too).
    let sigint = match Command::new("kill").args(["-INT", &child.id().to_string()]).status() {
        Ok(s) => s.success(),
        Err(_) => child.kill().is_err(),
    };
    let status = child.wait().unwrap();
    assert!(!status.success(), "interrupted, it must not report success");
    if sigint {
        assert_eq!(status.code(), Some(130), "Ctrl-C exits 130 through the command's own path: {status:?}");
    }
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'), "a half-written line");
    let seeds = seeds_in(&text);
    assert!(seeds.len() >= 2 && seeds.len() < 50, "{} runs kept", seeds.len());
    assert_eq!(seeds, (0..seeds.len() as u64).collect::<Vec<_>>(), "the finished runs, in order");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A saved model is untrusted input: an infinite weight in its codebook is refused with exit 2 and one line
/// naming the file, instead of reaching k-means++ (which used to panic on it).
#[test]
fn a_saved_model_with_an_infinite_weight_is_refused() {
    let dir = std::env::temp_dir().join(format!("vqgrad-bad-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    let p = path.to_str().unwrap();
    let small = ["--preset", "E1", "--steps", "5", "--n-train", "512", "--n-eval", "128", "--cpu", "--quiet"];
    let out = vqgrad(&[&["train", "--save-params", p][..], &small[..]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // safetensors: an 8-byte header length, the JSON header, then the data at each tensor's offsets.
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let at = 8 + n + header["codebook"]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let line = one_error_line(&["kmeans", "--model", p, "--cpu"], 2);
    assert!(line.contains("m.safetensors") && line.contains("non-finite"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's "What the study finds" table is what `report --claims` computes from the committed full-protocol
/// results, character for character.
#[test]
fn the_readme_quotes_the_committed_results() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let results = root.join("results/results.jsonl");
    let out = vqgrad(&["report", results.to_str().unwrap(), "--claims"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let computed = String::from_utf8(out.stdout).unwrap();
    assert!(computed.lines().count() >= 10 && !computed.contains("not a verdict"), "{computed}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let (start, end) = ("<!-- claims: vqgrad report results/results.jsonl --claims -->\n", "<!-- end of claims -->");
    let quoted = readme.split_once(start).and_then(|(_, rest)| rest.split_once(end)).map(|(table, _)| table);
    assert_eq!(quoted, Some(computed.as_str()), "README.md's claims table differs from `report --claims`; paste it");
}
