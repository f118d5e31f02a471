//! The VQ layer between your own encoder and decoder: your program owns the device, the buffers and the other
//! kernels; vqgrad's layer quantizes your encoder's output and hands your encoder its gradient.
//!
//! Here "your" encoder is the identity (it copies the data into z) and "your" decoder is the identity with a
//! squared-error loss, whose backward is a small WGSL kernel of this program's own. The data are four clusters
//! in 2-D; the codebook (EMA update) moves onto them, and the rotation trick carries the gradient to z.
//!
//! Run: `cargo run --release --example vq_layer`

use vqgrad::Estimator;
use vqgrad::gpu::{read_buffer, upload, zeroed};
use vqgrad::kernels::codebook::EmaSettings;
use vqgrad::kernels::vq::{CodebookUpdate, VqBuffers, VqLayer, VqSettings, VqShape};

/// Your decoder's backward: dL/dq for L = 1/(n m) sum (q - x)^2.
const DECODER_BACKWARD: &str = "
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_q: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&grad_q)) {
        grad_q[id.x] = 2.0 * (q[id.x] - x[id.x]) / f32(arrayLength(&grad_q));
    }
}";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some((device, queue)) = vqgrad::gpu::example_device()? else { return Ok(()) };
    let (n, k, m) = (512u32, 4u32, 2u32);
    let centres = [[2.0f32, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]];
    // The data: cluster i % 4 plus a small deterministic wobble.
    let x: Vec<f32> = (0..n as usize)
        .flat_map(|i| {
            let (c, t) = (centres[i % 4], i as f32 * 0.618);
            [c[0] + 0.3 * t.sin(), c[1] + 0.3 * (1.7 * t).cos()]
        })
        .collect();
    let codebook0 = [0.5f32, 0.4, -0.3, 0.6, -0.5, -0.2, 0.1, -0.7];
    let x_buf = upload(&device, "x", &x)?;
    let z = zeroed::<f32>(&device, "z", x.len())?;
    let codebook = upload(&device, "codebook", &codebook0)?;
    let q = zeroed::<f32>(&device, "q", x.len())?;
    let grad_q = zeroed::<f32>(&device, "dL/dq", x.len())?;
    let grad_z = zeroed::<f32>(&device, "dL/dz", x.len())?;
    let index = zeroed::<u32>(&device, "index", n as usize)?;
    let distance = zeroed::<f32>(&device, "distance", n as usize)?;

    // Your decoder's backward pipeline (layout from the shader).
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("decoder backward"),
        source: wgpu::ShaderSource::Wgsl(DECODER_BACKWARD.into()),
    });
    let decoder = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("decoder backward"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let decoder_bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("decoder backward"),
        layout: &decoder.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: q.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: x_buf.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: grad_q.as_entire_binding() },
        ],
    });

    // vqgrad's layer: made once, bound once.
    let layer = VqLayer::new(&device)?;
    let buffers = VqBuffers {
        z: &z,
        codebook: &codebook,
        q: &q,
        index: &index,
        distance: &distance,
        grad_q: &grad_q,
        grad_z: &grad_z,
        codebook_grad: None,
    };
    let settings = VqSettings {
        estimator: Estimator::RotationTrick,
        beta: 0.25,
        update: CodebookUpdate::Ema(EmaSettings { decay: 0.9, eps: 1e-5 }),
    };
    let vq = layer.bind(&device, &buffers, VqShape { n, k, m }, settings)?;

    // Twenty steps, all recorded into one command buffer of your own.
    let mut encoder = device.create_command_encoder(&Default::default());
    vq.record_ema_init(&mut encoder);
    for _ in 0..20 {
        encoder.copy_buffer_to_buffer(&x_buf, 0, &z, 0, x_buf.size()); // your encoder's forward
        let mut pass = encoder.begin_compute_pass(&Default::default());
        vq.encode_forward(&mut pass); // index, distance, q
        pass.set_pipeline(&decoder); // your decoder's forward and backward
        pass.set_bind_group(0, &decoder_bind, &[]);
        pass.dispatch_workgroups((n * m).div_ceil(64), 1, 1);
        vq.encode_backward(&mut pass); // dL/dz for your encoder's backward, and the codebook update
    }
    queue.submit([encoder.finish()]);

    let learned: Vec<f32> = read_buffer(&device, &queue, &codebook)?;
    let dz: Vec<f32> = read_buffer(&device, &queue, &grad_z)?;
    for code in learned.chunks(2) {
        let nearest = centres.iter().map(|c| (c[0] - code[0]).hypot(c[1] - code[1])).fold(f32::INFINITY, f32::min);
        println!("code ({:6.3}, {:6.3}): {nearest:.3} from the nearest cluster centre", code[0], code[1]);
        assert!(nearest < 0.5, "the EMA codebook should sit on the clusters");
    }
    let norm = dz.iter().map(|v| v * v).sum::<f32>().sqrt();
    println!("|dL/dz| = {norm:.4e} after 20 steps (the rotation trick's gradient, with the commitment term)");
    Ok(())
}
