use crate::common::{Data, assert_clean};
use crate::gpu_or_skip;
use vqgrad::kernels::codebook::{Codebook, CountBuffers};
use vqgrad::kernels::stats::{CodeStats, Stats, StatsBuffers, StatsShape};
use vqgrad::{Error, Gpu, reference};

/// Counts and summarizes a given assignment on the GPU (the index and distances are inputs here, so the stats
/// kernel is tested alone; `assign` has its own tests).
fn stats_on_gpu(
    gpu: &Gpu,
    index: &[u32],
    dist: &[f32],
    k: usize,
    m: usize,
    labels: Option<(&[u32], usize)>,
) -> CodeStats {
    let n = index.len();
    let ib = gpu.upload("index", index).unwrap();
    let db = gpu.upload("distance", dist).unwrap();
    let cb = gpu.zeroed::<u32>("counts", k).unwrap();
    let lb = labels.map(|(l, _)| gpu.upload("labels", l).unwrap());
    let counts = Codebook::new(&gpu.device)
        .unwrap()
        .bind_counts(&gpu.device, &CountBuffers { index: &ib, counts: &cb }, n as u32, k as u32)
        .unwrap();
    let stats = Stats::new(&gpu.device).unwrap();
    let shape = StatsShape { n: n as u32, k: k as u32, m: m as u32, classes: labels.map_or(0, |(_, c)| c as u32) };
    let bound = stats
        .bind(&gpu.device, &StatsBuffers { index: &ib, distance: &db, counts: &cb, labels: lb.as_ref() }, shape)
        .unwrap();
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        counts.encode(&mut pass);
        bound.encode(&mut pass);
    }
    bound.copy_out(&mut encoder);
    gpu.queue.submit([encoder.finish()]);
    let out = bound.read(&gpu.device).unwrap();
    assert_clean(gpu);
    out
}

/// Integers exact; entropy within 1e-5 absolute plus 1e-5 relative (f32 sums over K terms), perplexity 2e-5
/// relative, quant_err 1e-5 relative (an f32 sum of N distances), purity and usage 1e-6.
fn check(what: &str, gpu: &CodeStats, cpu: &CodeStats) {
    assert_eq!(gpu.total, cpu.total, "{what}: total");
    assert_eq!(gpu.dead_codes, cpu.dead_codes, "{what}: dead codes");
    let close = |name: &str, a: f64, b: f64, tol: f64| {
        assert!((a - b).abs() <= tol, "{what}: {name} GPU {a} vs CPU {b} (tolerance {tol:e})")
    };
    close("usage", gpu.usage, cpu.usage, 1e-6);
    close("entropy", gpu.entropy, cpu.entropy, 1e-5 + 1e-5 * cpu.entropy);
    close("perplexity", gpu.perplexity, cpu.perplexity, 2e-5 * cpu.perplexity);
    close("quant_err", gpu.quant_err, cpu.quant_err, 1e-5 * cpu.quant_err + 1e-30);
    match (gpu.purity, cpu.purity) {
        (Some(a), Some(b)) => close("purity", a, b, 1e-6),
        (None, None) => {}
        other => panic!("{what}: purity {other:?}"),
    }
}

#[test]
fn statistics_match_the_reference() {
    let gpu = gpu_or_skip!();
    // (n, k, m, classes): more codes than rows (many dead), one code, labels or none, N past one workgroup.
    for (seed, &(n, k, m, classes)) in
        [(8192, 32, 4, 8), (100, 4096, 8, 0), (50, 1, 3, 2), (3000, 700, 2, 0), (1, 3, 1, 1)].iter().enumerate()
    {
        let mut d = Data::new(seed as u64);
        // Skewed use: codes drawn from the first half more often, so entropy is not trivially ln K.
        let index: Vec<u32> = d
            .indices(n, k as u32)
            .into_iter()
            .zip(d.indices(n, 2))
            .map(|(i, h)| if h == 0 { i / 2 } else { i })
            .collect();
        let dist: Vec<f32> = d.normal(n, 1.0).into_iter().map(|v| v * v).collect();
        let labels = (classes > 0).then(|| d.indices(n, classes as u32));
        let label_arg = labels.as_deref().map(|l| (l, classes));
        let gpu_stats = stats_on_gpu(&gpu, &index, &dist, k, m, label_arg);
        assert_eq!(gpu_stats, stats_on_gpu(&gpu, &index, &dist, k, m, label_arg), "two runs differ");
        let assignment =
            reference::Assignment { index: index.clone(), distance: dist.iter().map(|&v| v as f64).collect() };
        let cpu_stats = reference::stats(&assignment, k, m, label_arg);
        check(&format!("n={n} k={k} m={m} classes={classes}"), &gpu_stats, &cpu_stats);
    }
}

#[test]
fn known_values() {
    let gpu = gpu_or_skip!();
    // 4 codes, rows on codes 0, 0, 1, 1: two dead, entropy ln 2, perplexity 2; labels make code 0 pure and code
    // 1 split, so purity = (2 + 1) / 4.
    let s = stats_on_gpu(&gpu, &[0, 0, 1, 1], &[1.0, 2.0, 3.0, 4.0], 4, 2, Some((&[0, 0, 0, 1], 2)));
    assert_eq!((s.total, s.dead_codes), (4, 2));
    assert!((s.usage - 0.5).abs() < 1e-7);
    assert!((s.entropy - 2f64.ln()).abs() < 1e-6, "entropy {}", s.entropy);
    assert!((s.perplexity - 2.0).abs() < 1e-5, "perplexity {}", s.perplexity);
    assert!((s.quant_err - 10.0 / 8.0).abs() < 1e-6, "quant_err {}", s.quant_err);
    assert_eq!(s.purity, Some(0.75));
    // Collapse onto one code: entropy 0, perplexity 1.
    let s = stats_on_gpu(&gpu, &[2; 500], &[0.0; 500], 8, 4, None);
    assert_eq!((s.dead_codes, s.entropy, s.perplexity, s.purity), (7, 0.0, 1.0, None));
}

#[test]
fn labels_and_classes_must_agree() {
    let gpu = gpu_or_skip!();
    let stats = Stats::new(&gpu.device).unwrap();
    let b = gpu.zeroed::<u32>("b", 16).unwrap();
    let with_labels = StatsBuffers { index: &b, distance: &b, counts: &b, labels: Some(&b) };
    let without = StatsBuffers { labels: None, ..with_labels };
    assert!(matches!(
        stats.bind(&gpu.device, &with_labels, StatsShape { n: 4, k: 4, m: 1, classes: 0 }),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        stats.bind(&gpu.device, &without, StatsShape { n: 4, k: 4, m: 1, classes: 2 }),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        stats.bind(&gpu.device, &without, StatsShape { n: 0, k: 4, m: 1, classes: 0 }),
        Err(Error::Shape(_))
    ));
    assert_clean(&gpu);
}
