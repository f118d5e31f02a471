//! Training with the library API: docs/PROTOCOL.md's E1 model (subspace data d = 256, r = 4; m = 4, K = 32) on the GPU,
//! once per estimator, then four seeds together in the same dispatches.
//!
//! Run: `cargo run --release --example train [-- STEPS]` (default 400 steps)

use vqgrad::train::gpu::BatchTrainer;
use vqgrad::train::{TrainConfig, Trainer};
use vqgrad::{Estimator, Gpu, GpuOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: u32 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(400);
    let gpu = match Gpu::new(&GpuOptions::from_env()?) {
        Ok(gpu) => gpu,
        Err(e) if std::env::var("VQGRAD_REQUIRE_GPU").as_deref() != Ok("1") => {
            eprintln!("SKIPPED: {e} (install mesa-vulkan-drivers for lavapipe)");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    println!("adapter: {}", gpu.describe());

    // The defaults are E1's; every `vqgrad train` flag is a field here.
    let base = TrainConfig { steps, eval_every: steps.div_ceil(4), ..TrainConfig::default() };
    for estimator in Estimator::ALL {
        let config = TrainConfig { estimator, ..base.clone() };
        let data = config.load_data()?; // generated from the seed; `DataSpec::File` reads a .npy
        let mut trainer = BatchTrainer::one(&gpu, &config, &data)?;
        let result = trainer
            .run(&mut |_, m| {
                println!("  {estimator} step {:>4}: loss {:.4}, dead codes {}", m.step, m.loss, m.dead_codes)
            })?
            .swap_remove(0);
        let m = &result.metrics;
        println!(
            "{estimator}: perplexity {:.2}, usage {:.3}, recon_mse {:.5}, {:.0} steps/s",
            m.perplexity, m.usage, m.recon_mse, result.steps_per_sec
        );
    }

    // Several runs of the same shapes share every dispatch; each gets exactly the results it would get alone.
    let configs: Vec<TrainConfig> = (0..4).map(|seed| TrainConfig { seed, ..base.clone() }).collect();
    let data = configs.iter().map(|c| c.load_data()).collect::<Result<Vec<_>, _>>()?;
    let results = BatchTrainer::new(&gpu, &configs, &data)?.run(&mut |_, _| {})?;
    for (config, result) in configs.iter().zip(&results) {
        println!(
            "seed {}: perplexity {:.2}, dead codes {}",
            config.seed, result.metrics.perplexity, result.metrics.dead_codes
        );
    }
    Ok(())
}
