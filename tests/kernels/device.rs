use crate::common::{Data, assert_clean, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::assign::{Assign, AssignBuffers, AssignShape};
use vqgrad::{Error, Gpu, GpuOptions};

#[test]
fn an_uncaptured_validation_error_is_reported() {
    let gpu = gpu_or_skip!();
    assert!(gpu.check().is_ok());
    // MAP_READ may only pair with COPY_DST: wgpu reports this outside any error scope.
    let _bad = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("invalid on purpose"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    match gpu.check() {
        Err(Error::Wgpu { message, .. }) => assert!(!message.is_empty()),
        other => panic!("the validation error went unnoticed: {other:?}"),
    }
    assert!(gpu.check().is_ok(), "errors are drained once reported");
}

#[test]
fn errors_inside_vqgrad_are_results_not_panics() {
    let gpu = gpu_or_skip!();
    let r = vqgrad::gpu::scoped(
        &gpu.device,
        || "a buffer too large".into(),
        || {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::MAP_WRITE,
                mapped_at_creation: false,
            })
        },
    );
    assert!(matches!(r, Err(Error::Wgpu { .. })), "the error scope must catch it");
    assert_clean(&gpu);
}

#[test]
fn a_lost_device_is_reported() {
    let gpu = gpu_or_skip!();
    gpu.device.destroy();
    let _ = gpu.device.poll(wgpu::PollType::wait_indefinitely());
    assert!(matches!(gpu.check(), Err(Error::DeviceLost(_))), "destroy() must surface as DeviceLost");
}

#[test]
fn adapter_filters() {
    let Some(gpu) = crate::common::gpu() else {
        return;
    };
    let name = gpu.info().name.clone();
    // A substring of the chosen adapter's name, in another case, finds an adapter.
    let part = name.chars().take(4).collect::<String>().to_uppercase();
    assert!(Gpu::new(&GpuOptions { adapter: Some(part), ..Default::default() }).is_ok());
    match Gpu::new(&GpuOptions { adapter: Some("no such adapter 1234".into()), ..Default::default() }) {
        Err(Error::NoAdapter { filter, found }) => {
            assert!(filter.contains("no such adapter 1234"));
            assert!(found.contains(&name), "the message lists the adapters present: {found}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a filter matching nothing must fail"),
    }
    assert!(matches!(vqgrad::gpu::parse_backend("vulkan"), Ok(wgpu::Backend::Vulkan)));
    assert!(matches!(vqgrad::gpu::parse_backend("DX12"), Ok(wgpu::Backend::Dx12)));
    assert!(matches!(vqgrad::gpu::parse_backend("cuda"), Err(Error::InvalidSetting { .. })));
}

#[test]
fn kernels_run_on_the_callers_own_device() {
    let gpu = gpu_or_skip!();
    let info = gpu.info().clone();
    // The caller keeps its device; vqgrad only borrows it.
    let caller = Gpu::from_device(gpu.device.clone(), gpu.queue.clone(), info);
    let kernel = Assign::new(&caller.device).unwrap();
    let z = Data::new(1).normal(64, 1.0);
    let zb = caller.upload("z", &z).unwrap();
    let ib = caller.zeroed::<u32>("index", 16).unwrap();
    let db = caller.zeroed::<f32>("distance", 16).unwrap();
    let bound = kernel
        .bind(
            &caller.device,
            &AssignBuffers { z: &zb, codebook: &zb, index: &ib, distance: &db },
            AssignShape { n: 16, k: 16, m: 4 },
        )
        .unwrap();
    run_pass(&caller, |pass| bound.encode(pass));
    // Each row is its own nearest code (the codebook is z itself, rows distinct).
    assert_eq!(caller.read::<u32>(&ib).unwrap(), (0..16).collect::<Vec<u32>>());
    assert_clean(&gpu);
}

/// The kernels on a device of the caller's making with WebGPU's default limits, except at most 8 workgroups per
/// grid dimension: every dispatch here needs an (x, y) grid, so the linearized 2-D indexing runs for real.
#[test]
fn kernels_run_on_default_limits_with_two_dimensional_grids() {
    use vqgrad::kernels::codebook::{
        Codebook, CodebookShape, CountBuffers, EmaBuffers, EmaSettings, ema_initial_state,
    };
    use vqgrad::kernels::estimator::{EstimatorBackward, EstimatorBuffers, EstimatorSettings, EstimatorShape};
    use vqgrad::kernels::stats::{Stats, StatsBuffers, StatsShape};
    use vqgrad::{Estimator, reference};
    let Some(ours) = crate::common::gpu() else { return };
    let adapter = vqgrad::gpu::enumerate_adapters(wgpu::Backends::all())
        .into_iter()
        .find(|a| a.get_info().name == ours.info().name)
        .expect("the adapter vqgrad chose");
    let limits = wgpu::Limits { max_compute_workgroups_per_dimension: 8, ..wgpu::Limits::default() };
    let desc = wgpu::DeviceDescriptor { required_limits: limits, ..Default::default() };
    // wgpu's default uncaptured-error handler panics, so any validation error fails this test.
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).unwrap();
    let gpu = Gpu::from_device(device, queue, adapter.get_info());
    let (n, k, m) = (3000usize, 40usize, 8usize);
    let mut d = Data::new(17);
    let z = d.normal(n * m, 1.0);
    let g = d.normal(n * m, 1.0);
    let codebook = d.normal(k * m, 1.0);
    let labels = d.indices(n, 5);
    let (zb, gb, cb, lb) = (
        gpu.upload("z", &z).unwrap(),
        gpu.upload("g", &g).unwrap(),
        gpu.upload("c", &codebook).unwrap(),
        gpu.upload("labels", &labels).unwrap(),
    );
    let ib = gpu.zeroed::<u32>("index", n).unwrap();
    let db = gpu.zeroed::<f32>("distance", n).unwrap();
    let gz = gpu.zeroed::<f32>("grad_z", n * m).unwrap();
    let counts = gpu.zeroed::<u32>("counts", k).unwrap();
    let (size0, sum0) = ema_initial_state(&codebook, k);
    let (size, sum) = (gpu.upload("size", &size0).unwrap(), gpu.upload("sum", &sum0).unwrap());
    let ema_cb = gpu.upload("ema codebook", &codebook).unwrap();
    let dev = &gpu.device;
    let (nu, ku, mu) = (n as u32, k as u32, m as u32);
    let assign = Assign::new(dev)
        .unwrap()
        .bind(
            dev,
            &AssignBuffers { z: &zb, codebook: &cb, index: &ib, distance: &db },
            AssignShape { n: nu, k: ku, m: mu },
        )
        .unwrap();
    let settings = EstimatorSettings { estimator: Estimator::RotationTrick, beta: 0.25, batch: nu };
    let estimator = EstimatorBackward::new(dev)
        .unwrap()
        .bind(
            dev,
            &EstimatorBuffers { g: &gb, z: &zb, index: &ib, codebook: &cb, grad_z: &gz },
            EstimatorShape { n: nu, k: ku, m: mu },
            settings,
        )
        .unwrap();
    let codebook_kernels = Codebook::new(dev).unwrap();
    let count = codebook_kernels.bind_counts(dev, &CountBuffers { index: &ib, counts: &counts }, nu, ku).unwrap();
    let ema_counts = gpu.zeroed::<u32>("ema counts", k).unwrap();
    let ema = codebook_kernels
        .bind_ema(
            dev,
            &EmaBuffers { z: &zb, index: &ib, codebook: &ema_cb, counts: &ema_counts, ema_size: &size, ema_sum: &sum },
            CodebookShape { n: nu, k: ku, m: mu },
            EmaSettings::default(),
        )
        .unwrap();
    let stats = Stats::new(dev)
        .unwrap()
        .bind(
            dev,
            &StatsBuffers { index: &ib, distance: &db, counts: &counts, labels: Some(&lb) },
            StatsShape { n: nu, k: ku, m: mu, classes: 5 },
        )
        .unwrap();
    let mut encoder = dev.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        assign.encode(&mut pass);
        estimator.encode(&mut pass);
        count.encode(&mut pass);
        stats.encode(&mut pass);
        ema.encode(&mut pass);
    }
    stats.copy_out(&mut encoder);
    gpu.queue.submit([encoder.finish()]);
    let gpu_stats = stats.read(dev).unwrap();

    let cpu = reference::assign(&z, &codebook, m);
    assert_eq!(gpu.read::<u32>(&ib).unwrap()[..n], cpu.index[..], "assign on a 2-D grid");
    assert_eq!(gpu.read::<u32>(&counts).unwrap()[..k], reference::counts(&cpu.index, k)[..], "counts on a 2-D grid");
    let want = reference::estimator_grad(Estimator::RotationTrick, &g, &z, &cpu.index, &codebook, m, 0.25, n);
    let got = gpu.read::<f32>(&gz).unwrap();
    let worst = got[..n * m].iter().zip(&want).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "estimator on a 2-D grid: largest error {worst:e}");
    assert_eq!(gpu_stats.total, n as u32);
    assert_eq!(gpu_stats.dead_codes, reference::stats(&cpu, k, m, Some((&labels, 5))).dead_codes);
    let mut state = reference::EmaState::new(&codebook, k);
    let mut cpu_cb = codebook.clone();
    reference::ema_update(&mut state, &mut cpu_cb, &z, &cpu.index, m, EmaSettings::default());
    let got_cb = gpu.read::<f32>(&ema_cb).unwrap();
    let worst = got_cb[..k * m].iter().zip(&cpu_cb).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "EMA update on a 2-D grid: largest error {worst:e}");

    // The future directions' kernels on the same 2-D grids: the relaxation's backward, the learned estimator's
    // M g and residual VQ's subtraction.
    use vqgrad::kernels::learned::{Learned, LearnedBuffers};
    use vqgrad::kernels::residual::Residual;
    use vqgrad::kernels::soft::{Soft, SoftBackwardBuffers, SoftRun, SoftShape};
    use vqgrad::kernels::step::{StepConstants, StepUniform};
    let step = StepUniform::new(dev, 1).unwrap();
    step.write(&gpu.queue, &[StepConstants::default().with_tau(0.5)]).unwrap();
    let soft_out = gpu.zeroed::<f32>("soft grad_z", n * m).unwrap();
    let soft = Soft::new(dev, &step)
        .unwrap()
        .bind_backward(
            dev,
            &SoftBackwardBuffers { z: &zb, codebook: &cb, g: &gb, index: &ib, grad_z: &soft_out },
            SoftShape { n: nu, k: ku, m: mu },
            &[SoftRun::exact()],
        )
        .unwrap();
    let transport = gpu.upload("transport", &vqgrad::kernels::learned::identity(mu, 1)).unwrap();
    let learned_out = gpu.zeroed::<f32>("learned grad_z", n * m).unwrap();
    let learned = Learned::new(dev)
        .unwrap()
        .bind_backward(dev, &LearnedBuffers { g: &gb, transport: &transport, grad_z: &learned_out }, (nu, mu), &[true])
        .unwrap();
    let residual_out = gpu.zeroed::<f32>("residual", n * m).unwrap();
    // Half the elements: 47 workgroups of 256, within this device's 8 x 8 grid.
    let half = n * m / 2;
    let residual = Residual::new(dev).unwrap().bind_subtract(dev, &zb, &gb, &residual_out, half as u32).unwrap();
    let mut encoder = dev.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        soft.encode(&mut pass, &step, 0);
        learned.encode(&mut pass);
        residual.encode(&mut pass);
    }
    gpu.queue.submit([encoder.finish()]);
    let (zf, gf, cf) = (reference::to_f64(&z), reference::to_f64(&g), reference::to_f64(&codebook));
    let got = gpu.read::<f32>(&soft_out).unwrap();
    for i in [0, n / 2, n - 1] {
        let want = reference::soft::backward_row(&gf[i * m..(i + 1) * m], &zf[i * m..(i + 1) * m], &cf, 0.5, None);
        for j in 0..m {
            assert!((got[i * m + j] as f64 - want[j]).abs() < 1e-4, "soft backward on a 2-D grid, row {i}");
        }
    }
    assert_eq!(gpu.read::<f32>(&learned_out).unwrap()[..n * m], g[..], "M = I: M g = g on a 2-D grid");
    let want: Vec<f32> =
        z.iter().zip(&g).take(half).map(|(a, b)| a - b).chain(std::iter::repeat_n(0.0, half)).collect();
    assert_eq!(gpu.read::<f32>(&residual_out).unwrap()[..n * m], want[..], "residual on a 2-D grid");
}

#[test]
fn cached_objects_are_made_once_per_device_and_type() {
    let gpu = gpu_or_skip!();
    let mut made = 0;
    let a = gpu.cached(|_| -> vqgrad::Result<u32> { Ok(7) }).unwrap();
    let b = gpu
        .cached(|_| -> vqgrad::Result<u32> {
            made += 1;
            Ok(8)
        })
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b) && *b == 7 && made == 0, "the second call made another");
    let other = gpu.cached(|_| -> vqgrad::Result<u64> { Ok(9) }).unwrap();
    assert_eq!(*other, 9, "another type gets its own entry");
    let failed = gpu.cached(|_| -> vqgrad::Result<i8> { Err(vqgrad::Error::Input("no".into())) });
    assert!(failed.is_err() && gpu.cached(|_| -> vqgrad::Result<i8> { Ok(1) }).is_ok(), "a failure is not cached");
}
