use crate::common::{Data, assert_clean, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::schedule::{AdaptiveBeta, BetaRule, ScheduleShape, SettingsSlot, beta_state};
use vqgrad::{Error, reference};

/// Each run's beta against `reference::adapt_beta` over 20 steps of random counts (some runs using few codes, some
/// many; bounds reached both ways), and the coefficient `2 beta / (B m)` written at each run's word of both settings
/// buffers and nowhere else. Tolerance: 1e-5 relative (f32 exp and products over 20 steps).
#[test]
fn adaptive_beta_matches_the_reference() {
    let gpu = gpu_or_skip!();
    let kernel = AdaptiveBeta::new(&gpu.device).unwrap();
    let (k, batch, m, runs) = (16u32, 24u32, 4u32, 5usize);
    let betas = [0.25f32, 1.0, 0.05, 0.5, 2.0];
    // Run r draws its codes from the first `span[r]` codes: usage from low to uniform.
    let span = [1u32, 4, 9, 16, 16];
    let rule = BetaRule { target: 0.7, rate: 0.8 };
    let state = gpu.upload("state", &beta_state(&betas)).unwrap();
    let counts = gpu.zeroed::<u32>("counts", runs * k as usize).unwrap();
    let a = gpu.upload("settings a", &vec![7u32; runs * 2]).unwrap();
    let b = gpu.upload("settings b", &vec![7u32; runs * 4]).unwrap();
    let bound = kernel
        .bind(
            &gpu.device,
            (&counts, &state),
            ScheduleShape { k, batch, m, runs: runs as u32 },
            rule,
            SettingsSlot { buffer: &a, stride: 2, offset: 1 },
            Some(SettingsSlot { buffer: &b, stride: 4, offset: 3 }),
        )
        .unwrap();
    let mut data = Data::new(8);
    let mut want: Vec<f64> = betas.iter().map(|&b| b as f64).collect();
    for _ in 0..20 {
        let mut all = vec![0u32; runs * k as usize];
        for r in 0..runs {
            let index = data.indices(batch as usize, span[r]);
            index.iter().for_each(|&i| all[r * k as usize + i as usize] += 1);
            let (lo, hi) = ((betas[r] / 100.0) as f64, (betas[r] * 100.0) as f64);
            want[r] = reference::adapt_beta(want[r], (lo, hi), &index, k as usize, 0.7, 0.8);
        }
        gpu.queue.write_buffer(&counts, 0, bytemuck::cast_slice(&all));
        run_pass(&gpu, |pass| bound.encode(pass));
    }
    let got: Vec<f32> = gpu.read(&state).unwrap();
    let (a, b): (Vec<u32>, Vec<u32>) = (gpu.read(&a).unwrap(), gpu.read(&b).unwrap());
    for r in 0..runs {
        let beta = got[3 * r] as f64;
        assert!((beta - want[r]).abs() <= 1e-5 * want[r], "run {r}: beta {beta} vs reference {}", want[r]);
        let coeff = f32::from_bits(a[2 * r + 1]) as f64;
        assert!((coeff - 2.0 * want[r] / (batch * m) as f64).abs() <= 1e-5 * coeff, "run {r}: coefficient {coeff}");
        assert_eq!(a[2 * r], 7, "run {r}: the estimator id was overwritten");
        assert_eq!(b[4 * r + 3], a[2 * r + 1], "run {r}: the second buffer");
        assert_eq!(b[4 * r..4 * r + 3], [7, 7, 7], "run {r}: the soft settings were overwritten");
    }
    // One code used: beta falls to its floor; uniform use above the target: beta rises.
    assert_eq!(got[0], betas[0] / 100.0, "run 0 should sit at its lower bound");
    assert!(want[3] > betas[3] as f64 && want[4] > betas[4] as f64, "{want:?}");
    assert_clean(&gpu);
}

#[test]
fn adaptive_beta_rejects_bad_settings() {
    let gpu = gpu_or_skip!();
    let kernel = AdaptiveBeta::new(&gpu.device).unwrap();
    let buf = gpu.zeroed::<u32>("buf", 64).unwrap();
    let shape = ScheduleShape { k: 4, batch: 8, m: 2, runs: 2 };
    let slot = SettingsSlot { buffer: &buf, stride: 2, offset: 1 };
    let bind = |rule, slot, shape| kernel.bind(&gpu.device, (&buf, &buf), shape, rule, slot, None).err();
    let ok = BetaRule { target: 0.9, rate: 0.05 };
    assert!(bind(ok, slot, shape).is_none());
    assert!(matches!(bind(BetaRule { target: 0.0, ..ok }, slot, shape), Some(Error::Input(_))));
    assert!(matches!(bind(BetaRule { rate: -1.0, ..ok }, slot, shape), Some(Error::Input(_))));
    assert!(matches!(bind(ok, SettingsSlot { offset: 2, ..slot }, shape), Some(Error::Shape(_))));
    assert!(matches!(bind(ok, slot, ScheduleShape { k: 0, ..shape }), Some(Error::Shape(_))));
    assert!(matches!(bind(ok, slot, ScheduleShape { runs: 40, ..shape }), Some(Error::BufferTooSmall { .. })));
    assert_clean(&gpu);
}
