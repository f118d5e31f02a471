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

/// Minibatch gathers of several runs in one dispatch: each run reads its own data by its own schedule.
#[test]
fn batched_row_gathers_equal_single_runs() {
    let gpu = gpu_or_skip!();
    let step = StepUniform::new(&gpu.device, 2).unwrap();
    let gather = Gather::new(&gpu.device, &step).unwrap();
    for &(source_rows, width, rows, runs) in &[(10, 4, 7, 3), (9, 3, 5, 2), (300, 256, 16, 4)] {
        let mut d = Data::new(width as u64 + 90);
        let source = d.normal(runs * source_rows * width, 1.0);
        let schedule = d.indices(runs * 2 * rows, source_rows as u32);
        let (src, sched) = (gpu.upload("source", &source).unwrap(), gpu.upload("schedule", &schedule).unwrap());
        let out = gpu.zeroed::<f32>("out", runs * rows * width).unwrap();
        let (r, w) = (rows as u32, width as u32);
        let bound = gather
            .bind_rows_runs(&gpu.device, &src, source_rows as u32, &sched, 2 * r, &out, (r, w), runs as u32)
            .unwrap();
        step.write(
            &gpu.queue,
            &[StepConstants::adam(1, 0.1, 0.9, 0.999, 0), StepConstants::adam(2, 0.1, 0.9, 0.999, r)],
        )
        .unwrap();
        for slot in 0..2 {
            run_pass(&gpu, |pass| bound.encode_step(pass, &step, slot as u32));
            let got: Vec<f32> = gpu.read(&out).unwrap();
            for run in 0..runs {
                let index = &schedule[run * 2 * rows + slot * rows..run * 2 * rows + (slot + 1) * rows];
                let want: Vec<f32> = index
                    .iter()
                    .flat_map(|&i| {
                        let at = (run * source_rows + i as usize) * width;
                        source[at..at + width].to_vec()
                    })
                    .collect();
                let got_run = &got[run * rows * width..(run + 1) * rows * width];
                assert_eq!(bits(got_run), bits(&want), "width {width}: run {run} of {runs}, slot {slot}");
            }
        }
    }
    assert_clean(&gpu);
}
