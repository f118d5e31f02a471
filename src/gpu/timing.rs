//! GPU timestamps between the dispatches of a compute pass, for profiles: where each kernel's time goes.
//! Needs `TIMESTAMP_QUERY` and `TIMESTAMP_QUERY_INSIDE_PASSES`; where the adapter lacks them there is no profile.

use super::{Gpu, map_read, scoped};
use crate::error::Result;

/// A query set that records a timestamp after each labelled stretch of a pass.
pub struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    capacity: u32,
    labels: Vec<&'static str>,
    period_ns: f64,
}

impl Timestamps {
    /// Room for `capacity` marks, or `None` where the device cannot write timestamps inside passes.
    pub fn new(gpu: &Gpu, capacity: u32) -> Result<Option<Self>> {
        let needed = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if !gpu.device.features().contains(needed) {
            return Ok(None);
        }
        let capacity = capacity.clamp(2, wgpu::QUERY_SET_MAX_QUERIES);
        let device = &gpu.device;
        let bytes = capacity as u64 * 8;
        let (set, resolve, staging) = scoped(
            device,
            || "timestamp queries".into(),
            || {
                let set = device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("vqgrad timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: capacity,
                });
                let buffer = |label, usage| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size: bytes,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                let resolve =
                    buffer("timestamp resolve", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
                let staging = buffer("timestamp readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
                (set, resolve, staging)
            },
        )?;
        let period_ns = gpu.queue.get_timestamp_period() as f64;
        Ok(Some(Timestamps { set, resolve, staging, capacity, labels: Vec::new(), period_ns }))
    }

    /// Writes a timestamp that ends the stretch named `label` (the first mark only starts the clock). Marks past
    /// the capacity are dropped.
    pub fn mark(&mut self, pass: &mut wgpu::ComputePass, label: &'static str) {
        let i = self.labels.len() as u32;
        if i < self.capacity {
            pass.write_timestamp(&self.set, i);
            self.labels.push(label);
        }
    }

    /// Records the copy of every mark so far into `encoder`; submit it, then [`Timestamps::read`].
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let n = self.labels.len() as u32;
        if n > 0 {
            encoder.resolve_query_set(&self.set, 0..n, &self.resolve, 0);
            encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, n as u64 * 8);
        }
    }

    /// Nanoseconds per label, summed over its stretches, in order of first appearance; then clears the marks.
    pub fn read(&mut self, gpu: &Gpu) -> Result<Vec<(&'static str, f64)>> {
        let ticks: Vec<u64> = map_read(&gpu.device, &self.staging)?;
        let mut out: Vec<(&'static str, f64)> = Vec::new();
        for i in 1..self.labels.len() {
            let ns = ticks[i].saturating_sub(ticks[i - 1]) as f64 * self.period_ns;
            match out.iter_mut().find(|(l, _)| *l == self.labels[i]) {
                Some(entry) => entry.1 += ns,
                None => out.push((self.labels[i], ns)),
            }
        }
        self.labels.clear();
        Ok(out)
    }
}
