//! Nearest codes on your own wgpu device: create the device yourself, hand vqgrad `&device` and your buffers,
//! record the kernel into your own encoder, read the result back.
//!
//! Run: `cargo run --example assign`

use vqgrad::kernels::assign::{Assign, AssignBuffers, AssignShape};
use wgpu::util::DeviceExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Your program's device: vqgrad needs no more than WebGPU's defaults.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let Ok(adapter) = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())) else {
        eprintln!("no GPU adapter here (install mesa-vulkan-drivers for lavapipe); nothing to show");
        return Ok(());
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;

    // Six 2-D points and a codebook of three codes.
    let (n, k, m) = (6u32, 3u32, 2u32);
    let z: [f32; 12] = [0.1, 0.0, 0.9, 1.1, -1.0, -0.8, 1.2, 0.8, 0.0, -0.1, -0.9, -1.2];
    let codebook: [f32; 6] = [0.0, 0.0, 1.0, 1.0, -1.0, -1.0];
    let storage = |label, contents: &[u8]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
    };
    let z_buf = storage("z", bytemuck::cast_slice(&z));
    let codebook_buf = storage("codebook", bytemuck::cast_slice(&codebook));
    let index_buf = storage("index", &vec![0u8; 4 * n as usize]);
    let distance_buf = storage("distance", &vec![0u8; 4 * n as usize]);

    // Once: the pipelines, then the bind group for these buffers.
    let assign = Assign::new(&device)?;
    let buffers = AssignBuffers { z: &z_buf, codebook: &codebook_buf, index: &index_buf, distance: &distance_buf };
    let bound = assign.bind(&device, &buffers, AssignShape { n, k, m })?;

    // Every time: record into your own encoder and pass.
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        bound.encode(&mut pass);
    }
    queue.submit([encoder.finish()]);

    let index: Vec<u32> = vqgrad::gpu::read_buffer(&device, &queue, &index_buf)?;
    let distance: Vec<f32> = vqgrad::gpu::read_buffer(&device, &queue, &distance_buf)?;
    println!("adapter: {}", adapter.get_info().name);
    for i in 0..n as usize {
        println!(
            "z = ({:5.2}, {:5.2}) -> code {} at squared distance {:.3}",
            z[2 * i],
            z[2 * i + 1],
            index[i],
            distance[i]
        );
    }
    assert_eq!(index, [0, 1, 2, 1, 0, 2]);
    Ok(())
}
