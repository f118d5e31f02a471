use crate::common::{Data, assert_clean, bits, run_pass};
use crate::gpu_or_skip;
use vqgrad::kernels::gather::Gather;
use vqgrad::kernels::step::{StepConstants, StepUniform};

/// Gathers copy rows bit for bit, with vec4 loads (widths 4, 8, 256) and f32 loads (1, 3, 5), from each step
/// slot's offset into the schedule, clamping indices past the source to its last row.
#[test]
fn gathers_copy_the_indexed_rows_exactly() {
    let gpu = gpu_or_skip!();
    let step = StepUniform::new(&gpu.device, 3).unwrap();
    let gather = Gather::new(&gpu.device, &step).unwrap();
    for (seed, &(source_rows, width, rows)) in
        [(10, 4, 7), (5, 1, 3), (9, 3, 20), (33, 8, 17), (4, 5, 1), (300, 256, 64)].iter().enumerate()
    {
        let mut d = Data::new(seed as u64 + 70);
        let source = d.normal(source_rows * width, 1.0);
        // Three slots of `rows` indices; one index past the source in each.
        let mut schedule = d.indices(3 * rows, source_rows as u32);
        for slot in 0..3 {
            schedule[slot * rows + rows / 2] = source_rows as u32 + 5;
        }
        let src = gpu.upload("source", &source).unwrap();
        let sched = gpu.upload("schedule", &schedule).unwrap();
        let out = gpu.zeroed::<f32>("out", rows * width).unwrap();
        let what = format!("source {source_rows} x {width}, {rows} rows");
        let expected = |index: &[u32]| -> Vec<f32> {
            index
                .iter()
                .flat_map(|&i| {
                    let r = (i as usize).min(source_rows - 1);
                    source[r * width..(r + 1) * width].to_vec()
                })
                .collect()
        };
        let (r, w) = (rows as u32, width as u32);
        let by_rows = gather.bind_rows(&gpu.device, &src, source_rows as u32, &sched, 3 * r, &out, r, w).unwrap();
        let constants: Vec<StepConstants> =
            (0..3).map(|slot| StepConstants::adam(1, 0.1, 0.9, 0.999, slot * r)).collect();
        step.write(&gpu.queue, &constants).unwrap();
        for slot in 0..3 {
            run_pass(&gpu, |pass| by_rows.encode_step(pass, &step, slot as u32));
            let got: Vec<f32> = gpu.read(&out).unwrap();
            let want = expected(&schedule[slot * rows..(slot + 1) * rows]);
            assert_eq!(bits(&got[..rows * width]), bits(&want), "{what}: rows, slot {slot}");
        }
        let index = gpu.upload("index", &schedule[..rows]).unwrap();
        let codes = gather.bind_codes(&gpu.device, &src, &index, &out, r, source_rows as u32, w).unwrap();
        run_pass(&gpu, |pass| codes.encode(pass));
        let got: Vec<f32> = gpu.read(&out).unwrap();
        assert_eq!(bits(&got[..rows * width]), bits(&expected(&schedule[..rows])), "{what}: codes");
    }
    assert_clean(&gpu);
}
