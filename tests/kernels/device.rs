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
