//! The exit-code contract on bad input, as one table across every subcommand: each class exits 2 with one line
//! on stderr naming what and why (clap's usage hint may follow) and never panics (README: "Exit codes").

use super::common::{f32_bytes, write_npy};
use super::{one_error_line, require_gpu, vqgrad};
use std::path::Path;

/// The input files the table refers to, written into `dir`.
fn fixtures(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    write_npy(&dir.join("ok.npy"), "<f4", &[10, 3], &f32_bytes(&[0.5; 30]));
    write_npy(&dir.join("ints.npy"), "<i4", &[10, 3], &[0u8; 120]);
    write_npy(&dir.join("flat.npy"), "<f4", &[30], &f32_bytes(&[0.5; 30]));
    let mut nan = vec![0.5f32; 30];
    nan[7] = f32::NAN;
    write_npy(&dir.join("nan.npy"), "<f4", &[10, 3], &f32_bytes(&nan));
    // Finite, but squared distances of such values overflow f32: refused with its row and column.
    let mut huge = vec![0.5f32; 30];
    huge[3 * 4 + 2] = 1e30;
    write_npy(&dir.join("huge.npy"), "<f4", &[10, 3], &f32_bytes(&huge));
    write_npy(&dir.join("empty.npy"), "<f4", &[0, 3], &[]);
    std::fs::write(dir.join("garbage.npy"), b"not a numpy file").unwrap();
    write_npy(&dir.join("labels_short.npy"), "<i8", &[9], &[0u8; 72]);
    write_npy(&dir.join("labels_float.npy"), "<f4", &[10], &f32_bytes(&[0.0; 10]));
    std::fs::write(dir.join("notes.txt"), b"my notes\n").unwrap();
    std::fs::write(dir.join("empty.jsonl"), b"").unwrap();
    std::fs::write(dir.join("bad.json"), b"{bad json").unwrap();
    std::fs::write(dir.join("unknown.json"), br#"{"nope": 1}"#).unwrap();
    std::fs::write(dir.join("magic.json"), br#"{"estimator": "magic"}"#).unwrap();
    std::fs::write(dir.join("garbage.safetensors"), b"garbage").unwrap();
    std::fs::write(dir.join("short.safetensors"), [255u8, 255, 255, 255, 255, 255, 255, 127, b'{']).unwrap();
}

/// One row per class of bad input: the arguments (`{file}` names a fixture) and a text the error line must
/// contain. Grouped by subcommand; each row is a different check, not the same check with another number.
const ROWS: &[(&str, &str)] = &[
    // The tool itself.
    ("info --backend cuda", "vulkan, metal, dx12, gl"),
    ("frobnicate", "frobnicate"),
    ("info --nope", "--nope"),
    ("bench --nope", "--nope"),
    ("train --engine tpu", "auto, gpu, cpu"),
    ("train --engine gpu --cpu", "cannot be used with"),
    // train: settings.
    ("train --k 0", "codes"),
    ("train --latent 0", "latent"),
    ("train --beta -0.5", "beta"),
    ("train --lr 0", "lr"),
    ("train --lr NaN", "lr"),
    ("train --batch 0", "batch"),
    ("train --batch 100000", "larger than the training set"),
    ("train --steps 0", "steps"),
    ("train --steps 99999999999", "--steps"),
    ("train --eval-every 0", "eval-every"),
    ("train --n-eval 0", "at least one sample"),
    ("train --seed -1", "--seed"),
    ("train --k", "--k"),
    ("train --estimator magic", "ste, rotation, rotation-trick, diveq"),
    ("train --preset E9", "E9"),
    ("train --dataset nope", "--dataset"),
    ("train --codebook-mode nope", "grad, ema, alternate"),
    ("train --codebook-init nope", "uniform, normal, kmeans"),
    ("train --encoder nope", "linear, mlp"),
    ("train --sigma -0.1", "sigma -0.1"),
    ("train --rank 300", "rank 300"),
    ("train --spread 1", "cluster data only"),
    ("train --tau 0", "tau"),
    ("train --tau-final inf", "tau-final"),
    ("train --beta-schedule adaptive --beta 0", "adaptive beta"),
    ("train --beta-schedule adaptive --target-usage 1.5", "target-usage"),
    ("train --beta-schedule adaptive --beta-rate -1", "beta-rate"),
    ("train --beta-schedule sometimes", "fixed, adaptive"),
    ("train --levels 0", "levels"),
    ("train --levels 2 --estimator gumbel", "residual VQ"),
    ("train --lloyd-iters 5000", "lloyd-iters"),
    ("train --sampling sometimes", "nearest, stochastic"),
    ("train --sampling stochastic --estimator gumbel-rotation-trick", "samples its codes already"),
    ("train --sampling stochastic --levels 2", "one level"),
    ("train --orth-weight -1", "orth-weight"),
    ("train --orth-weight nan", "orth-weight"),
    ("train --orth-weight 10 --codebook-mode ema", "codebook-mode grad"),
    ("train --reparam nope", "none, simvq"),
    ("train --reparam simvq --codebook-mode ema", "reparam simvq"),
    ("train --reparam simvq --reset-dead 5", "reparam simvq"),
    ("train --reparam simvq --codebook-init kmeans", "reparam simvq"),
    ("train --sync-nu -1", "sync-nu must be in [0, 1e6]"),
    ("train --sync-nu nan", "sync-nu must be in [0, 1e6]"),
    ("train --sync-nu 0.2 --codebook-mode ema", "--sync-nu acts through the codebook's gradient"),
    ("train --sync-nu 0.2 --levels 2", "--sync-nu acts through the codebook's gradient"),
    ("train --affine-lr -1", "affine-lr must be in [0, 1e6]"),
    ("train --affine-lr inf", "affine-lr must be in [0, 1e6]"),
    ("train --affine-lr 10 --codebook-mode ema", "--affine-lr acts through the codebook's gradient"),
    ("train --affine-lr 10 --reset-dead 5", "--affine-lr learns the codes"),
    ("train --affine-lr 10 --reparam simvq", "--affine-lr learns the codes"),
    ("train --codebook-mode alternate --alternate-lr 0", "alternate-lr must be in (0, 1e6]"),
    ("train --codebook-mode alternate --alternate-lr nan", "alternate-lr must be in (0, 1e6]"),
    ("train --alternate-lr 5", "--alternate-lr is the step of --codebook-mode alternate"),
    ("train --codebook-mode alternate --levels 2", "--codebook-mode alternate takes one level"),
    ("train --fsq-levels auto --k 48", "--fsq-levels auto takes K a power of 2"),
    ("train --fsq-levels 4,x", "`x` is not a level count"),
    ("train --fsq-levels 4,4,1 --k 16", "fsq-levels must each be 2 to 65536"),
    ("train --fsq-levels 4,4 --k 32", "need latent m = 2"),
    ("train --fsq-levels 4,4,2 --latent 4", "need latent m = 3"),
    ("train --fsq-levels auto --beta 0.25", "--fsq-levels quantizes to a fixed grid"),
    ("train --fsq-levels auto --estimator gumbel", "--fsq-levels quantizes to a fixed grid"),
    ("train --fsq-levels auto --codebook-mode grad", "--fsq-levels quantizes to a fixed grid"),
    ("train --fsq-levels auto --sync-nu 0.2", "--sync-nu acts through the codebook"),
    ("train --codebook-mode fixed --reset-dead 10", "--codebook-mode fixed takes one level"),
    ("train --cosine --codebook-mode ema", "--cosine learns unit codes"),
    ("train --cosine --reparam simvq", "--cosine learns unit codes"),
    ("train --cosine --reset-dead 10", "--cosine learns unit codes"),
    ("train --cosine maybe", "maybe"),
    ("train --lookup-dim 4", "--lookup-dim 4 must be below the encoder's width 4"),
    ("train --lookup-dim 0", "latent (m) must be at least 1"),
    ("train --lookup-dim 2 --fsq-levels auto --k 4", "no other remedy"),
    ("train --runs 0", "--runs"),
    ("train --runs 2 --save-params m.safetensors", "--save-params"),
    // train: sizes, checked before anything is allocated (these used to abort or panic).
    ("train --k 1000000000", "the codebook (K x m)"),
    ("train --dim 1000000000", "the training set"),
    ("train --latent 100000000", "the model's parameters"),
    ("train --n-train 100000000", "the training set"),
    ("train --encoder mlp --hidden 100000000", "the model's parameters"),
    ("train --preset E3 --clusters 1000000000", "would hold"),
    // train: output paths, checked before any work.
    ("train --out /nonexistent-vqgrad/x.json", "/nonexistent-vqgrad"),
    ("train --out /", "is a directory"),
    ("train --save-params /nonexistent-vqgrad/m.safetensors", "--save-params"),
    // sweep.
    ("sweep --seeds abc --dry-run", "abc"),
    ("sweep --study nope --dry-run", "the studies are"),
    ("sweep --study remedies --k 4 --dry-run", "--study remedies"),
    ("sweep --seeds 5..2 --dry-run", "empty"),
    ("sweep --seeds 0,0,1 --dry-run", "seed 0 is given twice"),
    ("sweep --seeds 0..1000000000 --dry-run", "at most"),
    ("sweep --k 32,32 --seeds 0 --dry-run", "repeats a run"),
    ("sweep --shard 3/2 --dry-run", "--shard"),
    ("sweep --set steps --dry-run", "KEY=V1,V2"),
    ("sweep --set nope=1 --dry-run", "--nope"),
    ("sweep --set steps=abc --dry-run", "abc"),
    ("sweep --preset E9 --dry-run", "E9"),
    ("sweep --batch-runs 0 --dry-run", "--batch-runs"),
    ("sweep --limit -3 --dry-run", "--limit"),
    ("sweep --k 0 --dry-run", "codes"),
    ("sweep --estimator ste --out /nonexistent-vqgrad/r.jsonl", "/nonexistent-vqgrad"),
    // report.
    ("report", "required"),
    ("report {missing.jsonl}", "missing.jsonl"),
    ("report {notes.txt}", "not a vqgrad results file"),
    ("report {empty.jsonl}", "no runs"),
    // reproduce.
    ("reproduce --set nope=1 --out {repro}", "--nope"),
    ("reproduce --set steps=0 --out {repro}", "steps"),
    ("reproduce --out {notes.txt}", "notes.txt"),
    // gradfield.
    ("gradfield --grid 1 --out {gf}", "--grid"),
    ("gradfield --grid 100000 --out {gf}", "--grid"),
    ("gradfield --beta -1 --out {gf}", "beta"),
    ("gradfield --out {notes.txt}", "notes.txt"),
    // kmeans.
    ("kmeans --preset E1 --iters 4000000000", "--iters"),
    ("kmeans --model {missing.safetensors}", "missing.safetensors"),
    ("kmeans --model {garbage.safetensors}", "garbage.safetensors"),
    ("kmeans --model {short.safetensors}", "short.safetensors"),
    ("kmeans --preset E1 --n-train 100", "larger than the training set"),
    // bias.
    ("bias --taus -1", "--taus"),
    ("bias --taus abc", "--taus"),
    ("bias --draws 0", "--draws"),
    ("bias --model {garbage.safetensors}", "garbage.safetensors"),
    // export-shaders.
    ("export-shaders --out {notes.txt}", "notes.txt"),
];

/// [`ROWS`] with their fixtures' paths, and the data-file and grid-file classes: (arguments, a text the error line
/// must contain).
fn cases(p: impl Fn(&str) -> String) -> Vec<(Vec<String>, &'static str)> {
    let npy = |file: &str, extra: &[&str]| -> Vec<String> {
        let mut v = vec!["train".into(), "--data".into(), p(file)];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut out: Vec<(Vec<String>, &'static str)> = ROWS
        .iter()
        .map(|&(line, needle)| {
            let args = line
                .split(' ')
                .filter(|a| !a.is_empty())
                .map(|a| match a.strip_prefix('{').and_then(|a| a.strip_suffix('}')) {
                    Some(file) => p(file),
                    None => a.to_string(),
                })
                .collect();
            (args, needle)
        })
        .collect();
    // Data files.
    out.extend([
        (npy("ok.npy", &["--dim", "4", "--batch", "4"]), "does not match"),
        (npy("ints.npy", &[]), "float32 or float64"),
        (npy("flat.npy", &[]), "2-D"),
        (npy("nan.npy", &[]), "NaN"),
        (npy("huge.npy", &[]), "row 4, column 2"),
        (npy("empty.npy", &[]), "empty"),
        (npy("garbage.npy", &[]), "garbage.npy"),
        (npy("missing.npy", &[]), "missing.npy"),
        (npy("ok.npy", &["--labels", &p("labels_short.npy"), "--batch", "4"]), "labels"),
        (npy("ok.npy", &["--labels", &p("labels_float.npy"), "--batch", "4"]), "integers"),
        (npy("ok.npy", &["--eval-split", "1.5"]), "eval split"),
    ]);
    // Grid files.
    for (file, needle) in [("missing.json", "missing.json"), ("bad.json", "bad.json"), ("unknown.json", "--nope")] {
        out.push((vec!["sweep".into(), "--grid".into(), p(file), "--dry-run".into()], needle));
    }
    out.push((vec!["sweep".into(), "--grid".into(), p("magic.json"), "--dry-run".into()], "magic"));
    out
}

/// Every class of bad input in [`cases`] exits 2 with one line naming it, and no panic; at least 60 classes,
/// across every subcommand. On a GPU, a run too large for one storage binding is refused from the settings, before
/// its data is generated.
#[test]
fn every_bad_input_exits_2_with_one_line() {
    let dir = std::env::temp_dir().join(format!("vqgrad-bad-input-{}", std::process::id()));
    fixtures(&dir);
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let mut cases = cases(p);
    if require_gpu() {
        cases.push((
            ["train", "--engine", "gpu", "--n-train", "2000000"].map(String::from).to_vec(),
            "max_storage_buffer_binding_size",
        ));
    }
    let commands: std::collections::BTreeSet<&str> = cases.iter().map(|(a, _)| a[0].as_str()).collect();
    assert!(cases.len() >= 60, "{} classes", cases.len());
    for command in ["info", "train", "sweep", "report", "reproduce", "gradfield", "kmeans", "bias", "bench"] {
        assert!(commands.contains(command), "no bad input for {command}");
    }
    for (args, needle) in &cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = one_error_line(&refs, 2);
        assert!(line.contains(needle), "{args:?}: the line should mention `{needle}`: {line}");
    }
    println!("{} bad-input classes across {} subcommands: each exit 2, one line", cases.len(), commands.len());
    // The vqgrad binary's clap handles no arguments at all as a usage error too.
    assert_eq!(vqgrad(&[]).status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
