//! Golden results: the metrics of a fixed set of short runs, pinned bit for bit in `tests/golden/runs.json`, so
//! that any change to what a run computes shows up in review. It covers every estimator in both codebook modes,
//! dead-code resets, two residual levels, the adaptive beta, the mlp encoder, the k-means init, labelled data and
//! the codebook-collapse remedies;
//! on the f64 reference, on the fast CPU engine alone and batched, and on the GPU engine alone and batched (a batch
//! must give exactly the runs alone).
//!
//! A deliberate change to results is re-pinned with
//!
//! ```text
//! VQGRAD_BLESS=1 cargo test --test golden
//! ```
//!
//! and the diff of `tests/golden/runs.json` goes into the commit that changes them, with the reason. The reference
//! pins are exact anywhere. The GPU pins are exact on the adapter they were made on (lavapipe, as CI runs it), the
//! CPU engine's on the instruction set its GEMM ran on there; elsewhere each is compared with the reference within
//! a tolerance instead, since another device or kernel may round differently.

mod common;

use serde_json::{Value, json};
use std::path::Path;
use vqgrad::Estimator;
use vqgrad::data::DataSpec;
use vqgrad::model::{BetaSchedule, CodebookInit, CodebookMode, EncoderKind, Reparam, Sampling};
use vqgrad::train::{Engine, RunResult, State, TrainConfig, batchable};

const PINS: &str = "tests/golden/runs.json";

fn base() -> TrainConfig {
    TrainConfig {
        data: DataSpec::Subspace { dim: 16, rank: 3, sigma: 0.05 },
        n_train: 512,
        n_eval: 300,
        hidden: 12,
        latent: 3,
        codes: 8,
        beta: 0.25,
        codebook_init: CodebookInit::Normal,
        steps: 30,
        batch: 32,
        seed: 3,
        eval_every: 15,
        tau: 0.5,
        tau_final: Some(0.05),
        beta_rate: 0.5,
        target_usage: 0.95,
        lloyd_iters: 5,
        ..TrainConfig::default()
    }
}

/// The pinned cases: a name and a configuration each. Cases that differ only in estimator, seed or beta form one
/// batch on the GPU.
fn cases() -> Vec<(String, TrainConfig)> {
    let mut out = Vec::new();
    for mode in [CodebookMode::Grad, CodebookMode::Ema] {
        for estimator in Estimator::ALL {
            out.push((format!("{estimator} {mode}"), TrainConfig { estimator, codebook_mode: mode, ..base() }));
        }
        out.push((format!("ste {mode} reset 10"), TrainConfig { reset_dead: 10, codebook_mode: mode, ..base() }));
        let levels = TrainConfig { levels: 2, codebook_mode: mode, ..base() };
        out.push((format!("ste {mode} 2 levels"), levels.clone()));
        out.push((
            format!("rotation-trick {mode} 2 levels"),
            TrainConfig { estimator: Estimator::RotationTrick, ..levels },
        ));
    }
    let adaptive = TrainConfig { beta_schedule: BetaSchedule::Adaptive, ..base() };
    out.push(("ste adaptive beta".into(), adaptive.clone()));
    out.push(("gumbel adaptive beta".into(), TrainConfig { estimator: Estimator::Gumbel, ..adaptive }));
    let mlp = TrainConfig { encoder: EncoderKind::Mlp, ..base() };
    out.push(("rotation-trick mlp".into(), TrainConfig { estimator: Estimator::RotationTrick, ..mlp.clone() }));
    out.push((
        "learned mlp ema".into(),
        TrainConfig { estimator: Estimator::Learned, codebook_mode: CodebookMode::Ema, ..mlp },
    ));
    out.push(("ste kmeans init".into(), TrainConfig { codebook_init: CodebookInit::Kmeans, ..base() }));
    let clusters = TrainConfig { data: DataSpec::Clusters { dim: 12, clusters: 4, spread: 0.5 }, ..base() };
    out.push((
        "rotation clusters seed 5".into(),
        TrainConfig { estimator: Estimator::Rotation, seed: 5, ..clusters.clone() },
    ));
    // Second seeds, so that labelled data (the evaluator's own copy of the labels), the k-means init (each run's
    // own Lloyd) and the mlp encoder also run batched.
    out.push(("ste clusters seed 6".into(), TrainConfig { seed: 6, ..clusters }));
    out.push(("ste kmeans init seed 4".into(), TrainConfig { codebook_init: CodebookInit::Kmeans, seed: 4, ..base() }));
    let mlp = TrainConfig { encoder: EncoderKind::Mlp, seed: 4, ..base() };
    out.push(("ste mlp seed 4".into(), mlp));
    // The codebook-collapse remedies (PROTOCOL §6.6).
    out.push(("ste stochastic sampling".into(), TrainConfig { sampling: Sampling::Stochastic, ..base() }));
    out.push((
        "rotation-trick orthogonality penalty".into(),
        TrainConfig { estimator: Estimator::RotationTrick, orth_weight: 10.0, ..base() },
    ));
    out.push(("ste simvq".into(), TrainConfig { reparam: Reparam::Simvq, ..base() }));
    out.push(("ste synchronized update".into(), TrainConfig { sync_nu: 0.2, ..base() }));
    out.push(("ste affine codes".into(), TrainConfig { affine_lr: 10.0, ..base() }));
    out.push(("ste alternated optimization".into(), TrainConfig { codebook_mode: CodebookMode::Alternate, ..base() }));
    out.push(("ste fsq".into(), TrainConfig { codes: 45, ..base() }.with_fsq(vec![5, 3, 3])));
    out.push(("ste cosine codes".into(), TrainConfig { cosine: true, ..base() }));
    out.push(("ste low-dimensional lookup".into(), TrainConfig { latent: 2, lookup_width: 3, ..base() }));
    out
}

/// FNV-1a over the bits of the final parameters and codebook: any change to the state changes it.
fn state_hash(values: impl Iterator<Item = u64>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for byte in v.to_le_bytes() {
            h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// A run's pinned figures: every evaluation's metrics (not the timings) and the final state's hash.
fn pin(result: &RunResult, state: (Vec<f32>, Vec<f32>), f64_state: Option<(Vec<f64>, Vec<f64>)>) -> Value {
    let hash = match f64_state {
        Some((p, c)) => state_hash(p.iter().chain(&c).map(|v| v.to_bits())),
        None => state_hash(state.0.iter().chain(&state.1).map(|v| v.to_bits() as u64)),
    };
    json!({ "curve": result.curve, "state": hash })
}

/// Runs every case on `engine`; with `batched`, the cases that can share a batch train together.
fn run_all(engine: &Engine, batched: bool) -> Vec<Value> {
    let cases = cases();
    let mut out = vec![Value::Null; cases.len()];
    let mut left: Vec<usize> = (0..cases.len()).collect();
    while let Some(&first) = left.first() {
        let group: Vec<usize> = if batched {
            left.iter().copied().filter(|&i| batchable(&cases[first].1, &cases[i].1)).collect()
        } else {
            vec![first]
        };
        left.retain(|i| !group.contains(i));
        let configs: Vec<TrainConfig> = group.iter().map(|&i| cases[i].1.clone()).collect();
        let data: Vec<_> = configs.iter().map(|c| c.load_data().unwrap()).collect();
        let mut trainer = engine.trainer(&configs, &data).unwrap();
        let results = trainer.run(&mut |_, _| {}).unwrap();
        // The f32 engines' state is f32, the reference's f64: each hashed as it is held.
        let states: Vec<State> = trainer.read_states().unwrap();
        let wide = trainer.read_states_f64().unwrap();
        for (j, &i) in group.iter().enumerate() {
            let f64_state = (engine.name() == "reference").then(|| wide[j].clone());
            out[i] = pin(&results[j], states[j].clone(), f64_state);
        }
    }
    out
}

fn pins_file() -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(PINS))
        .unwrap_or_else(|e| panic!("{PINS}: {e}; make it with VQGRAD_BLESS=1 cargo test --test golden"));
    serde_json::from_str(&text).unwrap()
}

/// Asserts that `got` equals the pins of `engine` exactly, naming the first case and evaluation that differ.
fn assert_pinned(what: &str, got: &[Value], pinned: &Value) {
    let names: Vec<String> = cases().into_iter().map(|(n, _)| n).collect();
    let pinned = pinned.as_array().unwrap_or_else(|| panic!("{PINS}: no {what} runs"));
    assert_eq!(pinned.len(), got.len(), "{what}: {} pinned runs for {} cases", pinned.len(), got.len());
    for ((name, g), p) in names.iter().zip(got).zip(pinned) {
        assert_eq!(p["name"].as_str(), Some(name.as_str()), "{what}: the cases changed order; re-pin");
        for (e, (gm, pm)) in g["curve"].as_array().unwrap().iter().zip(p["curve"].as_array().unwrap()).enumerate() {
            assert_eq!(gm, pm, "{what} `{name}`: evaluation {e} differs from {PINS}");
        }
        assert_eq!(g["curve"].as_array().unwrap().len(), p["curve"].as_array().unwrap().len(), "{what} `{name}`");
        assert_eq!(g["state"], p["state"], "{what} `{name}`: the final state differs from {PINS}");
    }
}

fn named(runs: Vec<Value>) -> Vec<Value> {
    cases()
        .into_iter()
        .zip(runs)
        .map(|((name, _), mut v)| {
            v["name"] = json!(name);
            v
        })
        .collect()
}

/// Where another machine rounds differently: each run's first recon_mse within 1e-3 of the reference's.
fn near_the_reference(what: &str, got: &[Value], reference: &[Value]) {
    for (g, c) in got.iter().zip(reference) {
        let (gl, cl) =
            (&g["curve"].as_array().unwrap()[0]["recon_mse"], &c["curve"].as_array().unwrap()[0]["recon_mse"]);
        let (a, b) = (gl.as_f64().unwrap(), cl.as_f64().unwrap());
        assert!((a - b).abs() <= 1e-3 * b.abs(), "`{}`: {what} recon_mse {a} vs the reference's {b}", g["name"]);
    }
}

#[test]
fn short_runs_give_the_pinned_metrics() {
    let reference = named(run_all(&Engine::Reference, false));
    let cpu = named(run_all(&Engine::Cpu, false));
    // The fast CPU engine's batch (its runs on threads side by side) gives exactly the runs alone, on any machine.
    for (a, b) in cpu.iter().zip(&named(run_all(&Engine::Cpu, true))) {
        assert_eq!(a, b, "`{}`: the CPU engine's batch differs from the runs alone", a["name"]);
    }
    let simd = vqgrad::train::fast::dense::simd();
    let gpu = common::gpu();
    let adapter = gpu.as_ref().map(|g| g.info().name.clone());
    let gpu_engine = gpu.map(|g| Engine::Gpu(Box::new(g)));
    let alone = gpu_engine.as_ref().map(|e| named(run_all(e, false)));
    if let (Some(alone), Some(engine)) = (&alone, &gpu_engine) {
        // A batch gives exactly the runs alone: this holds on any adapter.
        let batched = named(run_all(engine, true));
        for (a, b) in alone.iter().zip(&batched) {
            assert_eq!(a, b, "`{}`: batched differs from alone", a["name"]);
        }
    }
    if std::env::var("VQGRAD_BLESS").as_deref() == Ok("1") {
        let mut pins = if Path::new(env!("CARGO_MANIFEST_DIR")).join(PINS).exists() { pins_file() } else { json!({}) };
        pins["reference"] = json!(reference);
        pins["cpu"] = json!(cpu);
        pins["cpu_simd"] = json!(simd);
        if let (Some(alone), Some(adapter)) = (alone, &adapter) {
            pins["gpu_adapter"] = json!(adapter);
            pins["gpu"] = json!(alone);
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(PINS);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&pins).unwrap() + "\n").unwrap();
        eprintln!("pinned {} to {}", PINS, path.display());
        return;
    }
    let pins = pins_file();
    assert_pinned("reference", &reference, &pins["reference"]);
    if pins["cpu_simd"].as_str() == Some(simd) {
        assert_pinned("cpu", &cpu, &pins["cpu"]);
    } else {
        eprintln!(
            "the CPU pins were made with {}, this machine's GEMM is {simd}: checked within a tolerance",
            pins["cpu_simd"]
        );
        near_the_reference("cpu", &cpu, &reference);
    }
    if let (Some(alone), Some(adapter)) = (alone, adapter) {
        if pins["gpu_adapter"].as_str() == Some(adapter.as_str()) {
            assert_pinned("gpu", &alone, &pins["gpu"]);
        } else {
            eprintln!(
                "the GPU pins were made on {}, this adapter is {adapter}: GPU runs checked against the reference \
                 within a tolerance only",
                pins["gpu_adapter"]
            );
            near_the_reference("gpu", &alone, &reference);
        }
    }
}
