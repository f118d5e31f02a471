use crate::common::{Data, assert_clean, bits, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::assign::{Assign, AssignBuffers, AssignShape};
use vqgrad::{Error, Gpu, reference};

struct Out {
    index: Vec<u32>,
    dist: Vec<f32>,
}

fn run(gpu: &Gpu, kernel: &Assign, z: &[f32], codebook: &[f32], m: usize) -> Out {
    let (n, k) = ((z.len() / m) as u32, (codebook.len() / m) as u32);
    let zb = gpu.upload("z", z).unwrap();
    let cb = gpu.upload("codebook", codebook).unwrap();
    let ib = gpu.zeroed::<u32>("index", n as usize).unwrap();
    let db = gpu.zeroed::<f32>("distance", n as usize).unwrap();
    let buffers = AssignBuffers { z: &zb, codebook: &cb, index: &ib, distance: &db };
    let bound = kernel.bind(&gpu.device, &buffers, AssignShape { n, k, m: m as u32 }).unwrap();
    run_pass(gpu, |pass| bound.encode(pass));
    let out = Out {
        index: gpu.read(&ib).unwrap()[..n as usize].to_vec(),
        dist: gpu.read(&db).unwrap()[..n as usize].to_vec(),
    };
    // Every case also runs with the codes written: the same index and distance bits, and q = codebook[index].
    let (ib2, db2) =
        (gpu.zeroed::<u32>("index", n as usize).unwrap(), gpu.zeroed::<f32>("distance", n as usize).unwrap());
    let qb = gpu.zeroed::<f32>("q", n as usize * m).unwrap();
    let buffers = AssignBuffers { z: &zb, codebook: &cb, index: &ib2, distance: &db2 };
    let bound = kernel.bind_with_codes(&gpu.device, &buffers, AssignShape { n, k, m: m as u32 }, &qb).unwrap();
    run_pass(gpu, |pass| bound.encode(pass));
    assert_eq!(gpu.read::<u32>(&ib2).unwrap()[..n as usize], out.index[..], "index with codes");
    assert_eq!(bits(&gpu.read::<f32>(&db2).unwrap()[..n as usize]), bits(&out.dist), "distance with codes");
    let q: Vec<f32> = gpu.read(&qb).unwrap();
    let expected: Vec<f32> =
        out.index.iter().flat_map(|&i| codebook[i as usize * m..(i as usize + 1) * m].to_vec()).collect();
    assert_eq!(bits(&q[..n as usize * m]), bits(&expected), "q = codebook[index]");
    out
}

fn norm2(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64).powi(2)).sum()
}

/// Compares with the reference. Tolerance on a distance: 2 (m + 3) eps_f32 (||z||^2 + ||c||^2), a bound on f32
/// rounding in m subtractions, squares and sums. The index must equal the reference's, except in a near-tie:
/// the GPU's code is then within that tolerance of the minimum (at most 1% of rows may be near-ties).
fn check(what: &str, z: &[f32], codebook: &[f32], m: usize, out: &Out) {
    let cpu = reference::assign(z, codebook, m);
    let row = |x: &[f32], i: usize| x[i * m..(i + 1) * m].to_vec();
    let mut near_ties = 0;
    let mut worst = (0.0f64, 0usize);
    for i in 0..cpu.index.len() {
        let zi = row(z, i);
        let (g, c) = (out.index[i] as usize, cpu.index[i] as usize);
        assert!(g < codebook.len() / m, "{what}: row {i}: index {g} out of range");
        let code_norm2 = norm2(&row(codebook, g)).max(norm2(&row(codebook, c)));
        let tol = 2.0 * (m as f64 + 3.0) * f32::EPSILON as f64 * (norm2(&zi) + code_norm2) + 1e-30;
        if g != c {
            let d_gpu_code = reference::assign(&zi, &row(codebook, g), m).distance[0];
            assert!(
                d_gpu_code - cpu.distance[i] <= 2.0 * tol,
                "{what}: row {i}: GPU chose code {g} (distance {d_gpu_code:e}), the reference {c} ({:e}); tolerance {tol:e}",
                cpu.distance[i]
            );
            near_ties += 1;
            continue;
        }
        let err = (out.dist[i] as f64 - cpu.distance[i]).abs();
        assert!(out.dist[i].is_finite(), "{what}: row {i}: distance {}", out.dist[i]);
        if err / tol > worst.0 {
            worst = (err / tol, i);
        }
    }
    let i = worst.1;
    eprintln!(
        "{what}: largest distance error/tolerance {:.3} (GPU {} vs CPU {}), {near_ties} near-tie rows",
        worst.0, out.dist[i], cpu.distance[i]
    );
    assert!(
        worst.0 <= 1.0,
        "{what}: largest distance error at row {i}: GPU {} vs CPU {} (ratio to tolerance {:.2})",
        out.dist[i],
        cpu.distance[i],
        worst.0
    );
    assert!(near_ties * 100 <= cpu.index.len().max(100), "{what}: {near_ties} rows disagree");
}

#[test]
fn random_shapes_match_the_reference() {
    let gpu = gpu_or_skip!();
    let kernel = Assign::new(&gpu.device).unwrap();
    // (n, k, m): K = 1, N = 1, m not a multiple of 4 (scalar loads), N not a multiple of the 256 rows of a
    // workgroup, K over one codebook tile (1024 codes at m = 4), large K.
    let shapes = [
        (1, 1, 1),
        (1, 7, 3),
        (100, 1, 4),
        (70, 5, 1),
        (33, 17, 3),
        (257, 37, 2),
        (1000, 64, 8),
        (513, 300, 64),
        (300, 2000, 4),
        (64, 4096, 4),
        (130, 1000, 256),
    ];
    for (seed, &(n, k, m)) in shapes.iter().enumerate() {
        let mut data = Data::new(seed as u64);
        let z = data.normal(n * m, 1.0);
        let codebook = data.normal(k * m, 1.0);
        let out = run(&gpu, &kernel, &z, &codebook, m);
        check(&format!("n={n} k={k} m={m}"), &z, &codebook, m, &out);
    }
}

#[test]
fn dimensions_larger_than_a_tile_are_chunked() {
    let gpu = gpu_or_skip!();
    let kernel = Assign::new(&gpu.device).unwrap();
    // m > 4096 floats: a code no longer fits the 16 KiB tile (vec4 at 5000, scalar at 4099).
    for (n, k, m) in [(5, 3, 5000), (4, 3, 4099)] {
        let mut data = Data::new(m as u64);
        let z = data.normal(n * m, 1.0);
        let codebook = data.normal(k * m, 1.0);
        check(&format!("n={n} k={k} m={m}"), &z, &codebook, m, &run(&gpu, &kernel, &z, &codebook, m));
    }
}

#[test]
fn exact_ties_pick_the_lowest_code() {
    let gpu = gpu_or_skip!();
    let kernel = Assign::new(&gpu.device).unwrap();
    for m in [3usize, 4] {
        let k = 2000;
        let mut data = Data::new(7);
        let mut codebook = data.normal(k * m, 1.0);
        // Code 10 also sits at 11, 1030 (another tile at m = 4) and 1999 (the last code).
        for dup in [11, 1030, 1999] {
            let src: Vec<f32> = codebook[10 * m..11 * m].to_vec();
            codebook[dup * m..(dup + 1) * m].copy_from_slice(&src);
        }
        let noise = data.normal(50 * m, 1e-3);
        let mut z: Vec<f32> = (0..50 * m).map(|e| codebook[10 * m + e % m] + noise[e]).collect();
        z[..m].copy_from_slice(&codebook[10 * m..11 * m]); // row 0: exactly the code
        let out = run(&gpu, &kernel, &z, &codebook, m);
        assert!(out.index.iter().all(|&i| i == 10), "m={m}: ties must pick code 10, got {:?}", out.index);
        assert_eq!(out.dist[0], 0.0, "m={m}: z = q has distance 0");
        check(&format!("ties m={m}"), &z, &codebook, m, &out);
    }
}

#[test]
fn zero_vectors_and_extreme_magnitudes() {
    let gpu = gpu_or_skip!();
    let kernel = Assign::new(&gpu.device).unwrap();
    for (scale, m) in [(1e4f32, 4usize), (1e-6, 4), (1e4, 5), (1e-6, 5)] {
        let (n, k) = (200, 40);
        let mut data = Data::new(3);
        let mut z = data.normal(n * m, scale);
        let mut codebook = data.normal(k * m, scale);
        codebook[5 * m..6 * m].fill(0.0); // a zero code
        z[..3 * m].fill(0.0); // zero rows: nearest is the zero code, at distance 0
        let out = run(&gpu, &kernel, &z, &codebook, m);
        assert_eq!(&out.index[..3], &[5, 5, 5], "scale {scale}: zero rows go to the zero code");
        assert_eq!(&out.dist[..3], &[0.0, 0.0, 0.0]);
        check(&format!("scale {scale} m={m}"), &z, &codebook, m, &out);
    }
}

#[test]
fn repeated_runs_are_bit_identical_for_any_workgroup_size() {
    let gpu = gpu_or_skip!();
    let (n, k, m) = (777, 333, 12);
    let mut data = Data::new(11);
    let z = data.normal(n * m, 1.0);
    let codebook = data.normal(k * m, 1.0);
    for wg in [32, 64, 256] {
        let kernel = Assign::with_workgroup_size(&gpu.device, wg).unwrap();
        let a = run(&gpu, &kernel, &z, &codebook, m);
        let b = run(&gpu, &kernel, &z, &codebook, m);
        assert_eq!(a.index, b.index, "workgroup {wg}: indices differ between runs");
        assert_eq!(bits(&a.dist), bits(&b.dist), "workgroup {wg}: distances differ between runs");
        check(&format!("workgroup {wg}"), &z, &codebook, m, &a);
    }
    assert!(matches!(Assign::with_workgroup_size(&gpu.device, 100), Err(Error::Shape(_))));
    assert!(matches!(Assign::with_workgroup_size(&gpu.device, 4096), Err(Error::Shape(_))));
}

#[test]
fn bad_shapes_and_buffers_are_errors() {
    let gpu = gpu_or_skip!();
    let kernel = Assign::new(&gpu.device).unwrap();
    let z = gpu.zeroed::<f32>("z", 40).unwrap();
    let cb = gpu.zeroed::<f32>("codebook", 8).unwrap();
    let ib = gpu.zeroed::<u32>("index", 10).unwrap();
    let db = gpu.zeroed::<f32>("distance", 10).unwrap();
    let buffers = AssignBuffers { z: &z, codebook: &cb, index: &ib, distance: &db };
    let bind = |shape| kernel.bind(&gpu.device, &buffers, shape);
    assert!(bind(AssignShape { n: 10, k: 2, m: 4 }).is_ok());
    for zero in [AssignShape { n: 0, k: 2, m: 4 }, AssignShape { n: 10, k: 0, m: 4 }, AssignShape { n: 10, k: 2, m: 0 }]
    {
        assert!(matches!(bind(zero), Err(Error::Shape(_))), "{zero:?} must be rejected");
    }
    match bind(AssignShape { n: 10, k: 3, m: 4 }) {
        Err(Error::BufferTooSmall { buffer: "codebook", expected: 48, actual: 32 }) => {}
        other => panic!("expected codebook too small, got {:?}", other.err()),
    }
    assert!(matches!(bind(AssignShape { n: 11, k: 2, m: 4 }), Err(Error::BufferTooSmall { buffer: "z", .. })));
    assert!(matches!(bind(AssignShape { n: u32::MAX, k: 2, m: 4 }), Err(Error::Shape(_))));
    let uniform_only = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    let bad = AssignBuffers { index: &uniform_only, ..buffers };
    assert!(matches!(
        kernel.bind(&gpu.device, &bad, AssignShape { n: 10, k: 2, m: 4 }),
        Err(Error::BufferUsage { buffer: "index", .. })
    ));
    assert_clean(&gpu);
}

/// Several runs stacked in one dispatch give each run exactly what it gives alone: index, distance and q, for
/// vec4 and scalar loads, several codebook tiles, and a code larger than the tile.
#[test]
fn batched_runs_equal_single_runs_bit_for_bit() {
    let gpu = gpu_or_skip!();
    let kernel = Assign::new(&gpu.device).unwrap();
    for (seed, &(n, k, m, runs)) in
        [(1, 1, 1, 2), (70, 5, 3, 3), (257, 37, 4, 4), (300, 2000, 4, 2), (33, 17, 64, 5), (5, 3, 5000, 2)]
            .iter()
            .enumerate()
    {
        let mut data = Data::new(seed as u64 + 500);
        let z = data.normal(runs * n * m, 1.0);
        let codebook = data.normal(runs * k * m, 1.0);
        let (zb, cb) = (gpu.upload("z", &z).unwrap(), gpu.upload("codebook", &codebook).unwrap());
        let ib = gpu.zeroed::<u32>("index", runs * n).unwrap();
        let db = gpu.zeroed::<f32>("distance", runs * n).unwrap();
        let qb = gpu.zeroed::<f32>("q", runs * n * m).unwrap();
        let buffers = AssignBuffers { z: &zb, codebook: &cb, index: &ib, distance: &db };
        let shape = AssignShape { n: n as u32, k: k as u32, m: m as u32 };
        let bound = kernel.bind_runs(&gpu.device, &buffers, shape, Some(&qb), runs as u32).unwrap();
        run_pass(&gpu, |pass| bound.encode(pass));
        let (index, dist, q): (Vec<u32>, Vec<f32>, Vec<f32>) =
            (gpu.read(&ib).unwrap(), gpu.read(&db).unwrap(), gpu.read(&qb).unwrap());
        for r in 0..runs {
            let what = format!("n={n} k={k} m={m} run {r} of {runs}");
            let alone = run(&gpu, &kernel, &z[r * n * m..(r + 1) * n * m], &codebook[r * k * m..(r + 1) * k * m], m);
            assert_eq!(index[r * n..(r + 1) * n], alone.index[..], "{what}: index");
            assert_eq!(bits(&dist[r * n..(r + 1) * n]), bits(&alone.dist), "{what}: distance");
            let expected: Vec<f32> = alone
                .index
                .iter()
                .flat_map(|&i| codebook[(r * k + i as usize) * m..(r * k + i as usize + 1) * m].to_vec())
                .collect();
            assert_eq!(bits(&q[r * n * m..(r + 1) * n * m]), bits(&expected), "{what}: q");
        }
    }
    let one = gpu.zeroed::<f32>("one", 4).unwrap();
    let idx = gpu.zeroed::<u32>("idx", 4).unwrap();
    let buffers = AssignBuffers { z: &one, codebook: &one, index: &idx, distance: &one };
    let shape = AssignShape { n: 1, k: 1, m: 1 };
    assert!(matches!(kernel.bind_runs(&gpu.device, &buffers, shape, None, 0), Err(Error::Shape(_))), "zero runs");
    assert!(kernel.bind_runs(&gpu.device, &buffers, shape, None, 5).is_err(), "buffers too small for 5 runs");
    assert_clean(&gpu);
}
