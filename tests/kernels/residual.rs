use crate::common::{Data, assert_clean, bits, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::residual::Residual;

/// `out = a - b` and `out += a` are exact in f32 (one rounding each, as on the CPU), over lengths that are not a
/// multiple of the workgroup, and touch nothing past `len`.
#[test]
fn residual_steps_are_exact() {
    let gpu = gpu_or_skip!();
    let kernel = Residual::new(&gpu.device).unwrap();
    for len in [1usize, 255, 257, 4099] {
        let mut d = Data::new(len as u64);
        let (a, b, c) = (d.normal(len + 3, 1.0), d.normal(len + 3, 1.0), d.normal(len + 3, 1.0));
        let (ab, bb, out, acc) = (
            gpu.upload("a", &a).unwrap(),
            gpu.upload("b", &b).unwrap(),
            gpu.upload("out", &c).unwrap(),
            gpu.upload("acc", &c).unwrap(),
        );
        let sub = kernel.bind_subtract(&gpu.device, &ab, &bb, &out, len as u32).unwrap();
        let add = kernel.bind_accumulate(&gpu.device, &ab, &acc, len as u32).unwrap();
        run_pass(&gpu, |pass| {
            sub.encode(pass);
            add.encode(pass);
        });
        let want_sub: Vec<f32> = (0..len + 3).map(|i| if i < len { a[i] - b[i] } else { c[i] }).collect();
        let want_add: Vec<f32> = (0..len + 3).map(|i| if i < len { c[i] + a[i] } else { c[i] }).collect();
        assert_eq!(bits(&gpu.read::<f32>(&out).unwrap()), bits(&want_sub), "len {len}: subtract");
        assert_eq!(bits(&gpu.read::<f32>(&acc).unwrap()), bits(&want_add), "len {len}: accumulate");
    }
    assert!(
        kernel
            .bind_subtract(
                &gpu.device,
                &gpu.zeroed::<f32>("x", 1).unwrap(),
                &gpu.zeroed::<f32>("y", 1).unwrap(),
                &gpu.zeroed::<f32>("z", 1).unwrap(),
                0
            )
            .is_err()
    );
    assert_clean(&gpu);
}
