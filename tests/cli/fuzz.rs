//! Bounded fuzzing of the two untrusted file formats, from a fixed seed: mutated `.npy` data files and mutated
//! safetensors models. Each must load or be refused with an error: no panic, no abort, no hang. Every mutant is
//! loaded in-process (the loaders the commands use); the first of each kind also go through the binary, which
//! must exit 0 or 2 with no panic.

use super::common::{f32_bytes, write_npy};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vqgrad::model::{ModelShape, SavedModel};
use vqgrad::train::TrainConfig;

const NPY_MUTANTS: usize = 600;
const SAFETENSORS_MUTANTS: usize = 250;
/// Mutants of each kind also run through the binary.
const THROUGH_THE_BINARY: usize = 25;
/// Far above any load here (milliseconds): a mutant that takes this long is hanging.
const HANG: Duration = Duration::from_secs(30);

/// One mutation of `seed`'s bytes: a few of byte flips, digit rewrites in the header, a changed length field,
/// truncation or appended junk. `header` is the length of the text part most mutations aim at.
fn mutate(rng: &mut ChaCha8Rng, seed: &[u8], header: usize) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..6) {
            0 => {
                let at = rng.random_range(0..b.len());
                b[at] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                // A digit of the header becomes another, or a run of digits (huge shapes, offsets).
                let digits: Vec<usize> = (0..header.min(b.len())).filter(|&i| b[i].is_ascii_digit()).collect();
                if let Some(&at) = digits.get(rng.random_range(0..digits.len().max(1))) {
                    let run: Vec<u8> = (0..rng.random_range(1..12)).map(|_| b'0' + rng.random_range(0..10u8)).collect();
                    b.splice(at..at + 1, run);
                }
            }
            2 => {
                let at = rng.random_range(0..header.min(b.len()));
                b[at] = rng.random();
            }
            3 => b.truncate(rng.random_range(0..b.len())),
            4 => b.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
            _ => {
                // The length field: .npy's u16 at 8, safetensors' u64 at 0.
                let (at, len) = if b.starts_with(b"\x93NUMPY") { (8, 2) } else { (0, 8) };
                if b.len() >= at + len {
                    rng.fill_bytes(&mut b[at..at + len]);
                }
            }
        }
    }
    b
}

/// Writes `bytes` to `path` and runs `load` on it on another thread: whether it loaded; a failure when the loader
/// panics or takes longer than [`HANG`].
fn loads(path: &Path, bytes: &[u8], load: fn(&Path) -> bool) -> bool {
    std::fs::write(path, bytes).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(load(&owned));
    });
    match rx.recv_timeout(HANG) {
        Ok(loaded) => loaded,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let _ = handle.join();
            panic!("{} panicked the loader", path.display())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{}: still loading after {HANG:?}", path.display()),
    }
}

/// The binary on `args`: exit 0 or 2, no panic on stderr.
fn binary_survives(args: &[&str]) {
    let out = super::vqgrad(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 2)), "{args:?}: {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vqgrad-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The seeds the .npy mutants start from: float32 and float64, C and Fortran order.
fn npy_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let values: Vec<f32> = (0..60).map(|i| (i as f32 * 0.37).sin()).collect();
    let f64_bytes: Vec<u8> = values.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect();
    let seed = dir.join("seed.npy");
    let mut seeds = Vec::new();
    for (descr, bytes) in [("<f4", f32_bytes(&values)), ("<f8", f64_bytes)] {
        write_npy(&seed, descr, &[20, 3], &bytes);
        let plain = std::fs::read(&seed).unwrap();
        // The same array in Fortran order: the header's flag, rewritten in place at the same length.
        let mut fortran = plain.clone();
        let at = plain.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        seeds.push(plain);
        seeds.push(fortran);
    }
    seeds
}

#[test]
fn mutated_npy_files_never_panic_or_hang() {
    let dir = scratch("npy");
    let seeds = npy_seeds(&dir);
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let (mut refused, mut loaded) = (0, 0);
    for i in 0..NPY_MUTANTS {
        let bytes = mutate(&mut rng, &seeds[i % seeds.len()], 128);
        let path = dir.join(format!("m{i}.npy"));
        if loads(&path, &bytes, |p| vqgrad::data::load_npy(p, None, 0.25).is_ok()) {
            loaded += 1
        } else {
            refused += 1
        }
        if i < THROUGH_THE_BINARY {
            let p = path.to_str().unwrap();
            binary_survives(&["train", "--quiet", "--cpu", "--data", p, "--batch", "4", "--steps", "2", "--k", "4"]);
        }
    }
    println!("{NPY_MUTANTS} .npy mutants: {loaded} loaded, {refused} refused, none panicked or hung");
    assert!(refused > NPY_MUTANTS / 4 && loaded > 0, "the mutations should both break and keep files");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The model shape a saved model's stored configuration implies, without generating its data (the commands
/// regenerate it; here only the file is under test).
fn stored_shape(text: &str) -> vqgrad::Result<ModelShape> {
    let c: TrainConfig = serde_json::from_str(text).map_err(|e| vqgrad::Error::Input(format!("config: {e}")))?;
    c.validate()?;
    let dim = c.data.generated_dim().ok_or_else(|| vqgrad::Error::Input("file data".into()))?;
    Ok(ModelShape {
        dim,
        latent: c.latent,
        codes: c.codes,
        encoder: c.encoder,
        hidden: c.hidden,
        lookup_width: c.lookup_width,
    })
}

#[test]
fn mutated_safetensors_models_never_panic_or_hang() {
    let dir = scratch("safetensors");
    let seed_path = dir.join("seed.safetensors");
    let small = ["--preset", "E1", "--steps", "2", "--n-train", "512", "--n-eval", "128", "--cpu", "--quiet"];
    let out = super::vqgrad(&[&["train", "--save-params", seed_path.to_str().unwrap()][..], &small[..]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seed = std::fs::read(&seed_path).unwrap();
    let header = 8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let (mut refused, mut loaded) = (0, 0);
    for i in 0..SAFETENSORS_MUTANTS {
        let bytes = mutate(&mut rng, &seed, header);
        let path = dir.join(format!("m{i}.safetensors"));
        if loads(&path, &bytes, |p| SavedModel::load(p, stored_shape).is_ok()) {
            loaded += 1
        } else {
            refused += 1
        }
        if i < THROUGH_THE_BINARY {
            binary_survives(&["kmeans", "--model", path.to_str().unwrap(), "--cpu", "--iters", "2"]);
        }
    }
    println!("{SAFETENSORS_MUTANTS} safetensors mutants: {loaded} loaded, {refused} refused, none panicked or hung");
    assert!(refused > SAFETENSORS_MUTANTS / 4 && loaded > 0, "the mutations should both break and keep files");
    let _ = std::fs::remove_dir_all(&dir);
}
