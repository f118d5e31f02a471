//! The GPU context: adapter choice, device limits, error capture, and small buffer helpers.
//!
//! vqgrad never needs to own the device: [`Gpu::new`] makes one for the command-line tool and the tests, and
//! [`Gpu::from_device`] wraps the caller's own `wgpu::Device` and `wgpu::Queue`. Every kernel takes a plain
//! `&wgpu::Device`, so an embedding program can skip this type entirely.

use crate::error::{Error, Result};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

pub mod timing;

/// Environment variable naming the backend: `vulkan`, `metal`, `dx12` or `gl`.
pub const ENV_BACKEND: &str = "VQGRAD_BACKEND";
/// Environment variable with a substring of the adapter's name (case-insensitive).
pub const ENV_ADAPTER: &str = "VQGRAD_ADAPTER";

/// Which adapter to use. The default picks the best adapter of any backend by device type
/// (discrete > integrated > virtual > cpu > other; then Vulkan > Metal > DX12 > GL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    /// Only this backend.
    pub backend: Option<wgpu::Backend>,
    /// Only adapters whose name contains this (case-insensitive).
    pub adapter: Option<String>,
}

impl GpuOptions {
    /// Options from `VQGRAD_BACKEND` and `VQGRAD_ADAPTER`; unset or empty variables mean no filter.
    pub fn from_env() -> Result<Self> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.trim().is_empty());
        Ok(GpuOptions { backend: var(ENV_BACKEND).map(|v| parse_backend(&v)).transpose()?, adapter: var(ENV_ADAPTER) })
    }

    fn backends(&self) -> wgpu::Backends {
        match self.backend {
            Some(b) => wgpu::Backends::from(b),
            None => wgpu::Backends::all(),
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.backend {
            parts.push(format!("backend {}", backend_name(b)));
        }
        if let Some(a) = &self.adapter {
            parts.push(format!("name containing `{a}`"));
        }
        if parts.is_empty() { String::new() } else { format!(" with {}", parts.join(" and ")) }
    }
}

/// Parses `vulkan`, `metal`, `dx12` or `gl` (case-insensitive).
pub fn parse_backend(s: &str) -> Result<wgpu::Backend> {
    match s.trim().to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backend::Vulkan),
        "metal" | "mtl" => Ok(wgpu::Backend::Metal),
        "dx12" | "d3d12" => Ok(wgpu::Backend::Dx12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backend::Gl),
        _ => Err(Error::InvalidSetting { what: "backend", value: s.to_string(), expected: "vulkan, metal, dx12, gl" }),
    }
}

/// The lowercase name vqgrad uses for a backend.
pub fn backend_name(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "vulkan",
        wgpu::Backend::Metal => "metal",
        wgpu::Backend::Dx12 => "dx12",
        wgpu::Backend::Gl => "gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        wgpu::Backend::Noop => "noop",
    }
}

/// The lowercase name vqgrad uses for a device type.
pub fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let by_type = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let by_backend = match info.backend {
        wgpu::Backend::Vulkan => 0,
        wgpu::Backend::Metal => 1,
        wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 3,
        _ => 4,
    };
    (by_type, by_backend)
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// A device and queue on the best adapter with WebGPU's default limits, as an embedding program would make them:
/// for the examples and doc tests. Without any adapter it prints why on stderr and returns `None`, so that an
/// example skips, unless `VQGRAD_REQUIRE_GPU=1`, when that is an error.
pub fn example_device() -> Result<Option<(wgpu::Device, wgpu::Queue)>> {
    let adapters = enumerate_adapters(wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()));
    let Some(adapter) = adapters.into_iter().next() else {
        if std::env::var("VQGRAD_REQUIRE_GPU").as_deref() == Ok("1") {
            return Err(Error::NoAdapter { filter: " (VQGRAD_REQUIRE_GPU=1)".into(), found: String::new() });
        }
        eprintln!("SKIPPED: no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
        return Ok(None);
    };
    let name = adapter.get_info().name;
    let device = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
        .map_err(|e| Error::RequestDevice { adapter: name, message: e.to_string() })?;
    Ok(Some(device))
}

/// Every adapter of the given backends, best first (the order [`Gpu::new`] chooses in).
pub fn enumerate_adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
    adapters.sort_by_key(|a| rank(&a.get_info()));
    adapters
}

/// A `wgpu::Limits` field the kernels depend on: its name, how to read it, and the least they need.
struct Need {
    name: &'static str,
    get: fn(&wgpu::Limits) -> u64,
    set: fn(&mut wgpu::Limits, u64),
    needed: u64,
}

/// What the kernels need beyond WebGPU's downlevel defaults. The storage sizes are raised to the adapter's own
/// so that large codebooks and data sets fit.
const NEEDS: &[Need] = &[
    Need {
        name: "max_compute_workgroup_storage_size",
        get: |l| l.max_compute_workgroup_storage_size as u64,
        set: |l, v| l.max_compute_workgroup_storage_size = v as u32,
        needed: 16384,
    },
    Need {
        name: "max_compute_invocations_per_workgroup",
        get: |l| l.max_compute_invocations_per_workgroup as u64,
        set: |l, v| l.max_compute_invocations_per_workgroup = v as u32,
        needed: 256,
    },
    Need {
        name: "max_compute_workgroup_size_x",
        get: |l| l.max_compute_workgroup_size_x as u64,
        set: |l, v| l.max_compute_workgroup_size_x = v as u32,
        needed: 256,
    },
    Need {
        name: "max_storage_buffers_per_shader_stage",
        get: |l| l.max_storage_buffers_per_shader_stage as u64,
        set: |l, v| l.max_storage_buffers_per_shader_stage = v as u32,
        needed: 6,
    },
    Need {
        name: "max_compute_workgroups_per_dimension",
        get: |l| l.max_compute_workgroups_per_dimension as u64,
        set: |l, v| l.max_compute_workgroups_per_dimension = v as u32,
        needed: 65535,
    },
];

/// The limits to request from an adapter: the downlevel defaults, raised to what the kernels need, with the
/// storage-buffer sizes raised to the adapter's own. Fails naming the first limit the adapter cannot meet.
pub fn required_limits(adapter_name: &str, adapter: &wgpu::Limits) -> Result<wgpu::Limits> {
    let mut limits = wgpu::Limits::downlevel_defaults();
    for need in NEEDS {
        let available = (need.get)(adapter);
        if available < need.needed {
            return Err(Error::Limit {
                adapter: adapter_name.to_string(),
                limit: need.name,
                needed: need.needed,
                available,
            });
        }
        let raised = need.needed.max((need.get)(&limits));
        (need.set)(&mut limits, raised);
    }
    limits.max_storage_buffer_binding_size = adapter.max_storage_buffer_binding_size;
    limits.max_buffer_size = adapter.max_buffer_size;
    Ok(limits)
}

/// The limits `vqgrad info` reports: the ones the kernels read.
pub fn reported_limits(l: &wgpu::Limits) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = NEEDS.iter().map(|n| (n.name, (n.get)(l))).collect();
    out.push(("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size));
    out.push(("max_buffer_size", l.max_buffer_size));
    out.push(("max_compute_workgroup_size_y", l.max_compute_workgroup_size_y as u64));
    out.push(("min_storage_buffer_offset_alignment", l.min_storage_buffer_offset_alignment as u64));
    out
}

/// Optional features vqgrad uses where present (none is required).
pub const OPTIONAL_FEATURES: &[(&str, wgpu::Features)] = &[
    ("TIMESTAMP_QUERY", wgpu::Features::TIMESTAMP_QUERY),
    ("TIMESTAMP_QUERY_INSIDE_PASSES", wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
];

/// What the device reported while nobody was looking: a loss, or errors outside any error scope.
#[derive(Default)]
struct Health {
    lost: Mutex<Option<String>>,
    errors: Mutex<Vec<String>>,
}

/// A device and queue with the adapter they came from.
pub struct Gpu {
    /// The device; kernels take `&gpu.device`.
    pub device: wgpu::Device,
    /// The queue.
    pub queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    health: Option<Arc<Health>>,
    /// Objects made once per device (pipelines), by type: see [`Gpu::cached`].
    cache: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Gpu {
    /// Picks an adapter by `options` and creates a device with the limits the kernels need. Installs a
    /// device-lost callback and an uncaptured-error handler whose reports [`Gpu::check`] returns.
    pub fn new(options: &GpuOptions) -> Result<Self> {
        let adapters = enumerate_adapters(options.backends());
        let wanted = options.adapter.as_ref().map(|s| s.to_lowercase());
        let found = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("`{}` ({})", i.name, backend_name(i.backend))
            })
            .collect::<Vec<_>>();
        let chosen = adapters.into_iter().find(|a| match &wanted {
            Some(w) => a.get_info().name.to_lowercase().contains(w),
            None => true,
        });
        match chosen {
            Some(adapter) => Self::from_adapter(&adapter),
            None => Err(Error::NoAdapter {
                filter: options.describe(),
                found: if found.is_empty() {
                    String::new()
                } else {
                    format!("; adapters present: {}", found.join(", "))
                },
            }),
        }
    }

    /// Creates a device on `adapter` with the limits the kernels need.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let limits = required_limits(&info.name, &adapter.limits())?;
        let wanted = OPTIONAL_FEATURES.iter().fold(wgpu::Features::empty(), |all, (_, f)| all | *f);
        let features = adapter.features() & wanted;
        let desc = wgpu::DeviceDescriptor {
            label: Some("vqgrad"),
            required_features: features,
            required_limits: limits,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::RequestDevice { adapter: info.name.clone(), message: e.to_string() })?;
        let health = Arc::new(Health::default());
        let lost = health.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{reason:?}: {message}"));
        });
        let errors = health.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            errors.errors.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }));
        Ok(Gpu { device, queue, info, health: Some(health), cache: Mutex::default() })
    }

    /// Wraps the caller's own device and queue. The caller's error handlers and device-lost callback stay as
    /// they are: vqgrad still captures its own errors in error scopes, but [`Gpu::check`] has nothing to report.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        Gpu { device, queue, info, health: None, cache: Mutex::default() }
    }

    /// The one `T` of this device, made by `make` on first use: pipelines that many runs share, so that each
    /// shader is compiled once per process (drivers such as lavapipe compile at a pipeline's first dispatch).
    pub fn cached<T: Any + Send + Sync>(&self, make: impl FnOnce(&Gpu) -> Result<T>) -> Result<Arc<T>> {
        let key = TypeId::of::<T>();
        if let Some(found) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Arc::clone(found).downcast::<T>().expect("the cache is keyed by type"));
        }
        // Made outside the lock: `make` may itself use the cache.
        let made = Arc::new(make(self)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.entry(key).or_insert_with(|| made.clone());
        Ok(Arc::clone(entry).downcast::<T>().expect("the cache is keyed by type"))
    }

    /// The adapter this device runs on.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// A one-line description: `name (backend, type)`.
    pub fn describe(&self) -> String {
        format!("{} ({}, {})", self.info.name, backend_name(self.info.backend), device_type_name(self.info.device_type))
    }

    /// Whether the device has been lost, or reported an error outside every error scope since the last call.
    /// The errors are drained: a second call reports only new ones.
    pub fn check(&self) -> Result<()> {
        let Some(health) = &self.health else {
            return Ok(());
        };
        if let Some(lost) = health.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(Error::DeviceLost(lost));
        }
        let errors: Vec<String> = std::mem::take(&mut *health.errors.lock().unwrap_or_else(|p| p.into_inner()));
        if !errors.is_empty() {
            return Err(Error::Wgpu {
                context: "an operation outside vqgrad's error scopes".into(),
                message: errors.join("\n"),
            });
        }
        Ok(())
    }

    /// Waits for all submitted work, then [`Gpu::check`]s.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Wgpu { context: "waiting for the GPU".into(), message: e.to_string() })?;
        self.check()
    }

    /// A buffer holding `data`, usable as storage and copyable both ways.
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        upload(&self.device, label, data)
    }

    /// A zeroed storage buffer of `len` elements of `T`, copyable both ways.
    pub fn zeroed<T: bytemuck::Pod>(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        zeroed::<T>(&self.device, label, len)
    }

    /// Copies `buffer` back to the host (it needs `COPY_SRC`).
    pub fn read<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer) -> Result<Vec<T>> {
        let out = read_buffer(&self.device, &self.queue, buffer)?;
        self.check()?;
        Ok(out)
    }
}

/// Runs `f` inside validation, out-of-memory and internal error scopes, and turns anything they catch into
/// [`Error::Wgpu`] with `context`. Scopes are per thread, so concurrent callers do not see each other's errors.
pub fn scoped<T>(device: &wgpu::Device, context: impl FnOnce() -> String, f: impl FnOnce() -> T) -> Result<T> {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f();
    let caught = [validation.pop(), oom.pop(), internal.pop()].into_iter().find_map(pollster::block_on);
    match caught {
        Some(e) => Err(Error::Wgpu { context: context(), message: e.to_string() }),
        None => Ok(out),
    }
}

/// Usages of the buffers [`upload`] and [`zeroed`] make: storage, and copies both ways.
pub const DATA_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

fn check_size(device: &wgpu::Device, label: &str, bytes: u64) -> Result<()> {
    let max = device.limits().max_buffer_size;
    if bytes > max {
        return Err(Error::Shape(format!("buffer `{label}` would hold {bytes} bytes; the device allows {max}")));
    }
    Ok(())
}

/// A storage buffer holding `data` (an empty slice gives a 4-byte buffer: wgpu has no empty bindings).
pub fn upload<T: bytemuck::Pod>(device: &wgpu::Device, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let mut contents = bytes.to_vec();
    contents.resize(bytes.len().max(4).next_multiple_of(4), 0);
    check_size(device, label, contents.len() as u64)?;
    scoped(
        device,
        || format!("creating buffer `{label}`"),
        || {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &contents,
                usage: DATA_USAGE,
            })
        },
    )
}

/// A zeroed storage buffer of `len` elements of `T` (at least 4 bytes).
pub fn zeroed<T: bytemuck::Pod>(device: &wgpu::Device, label: &str, len: usize) -> Result<wgpu::Buffer> {
    let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64).max(4).next_multiple_of(4);
    check_size(device, label, bytes)?;
    scoped(
        device,
        || format!("creating buffer `{label}`"),
        || {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: DATA_USAGE,
                mapped_at_creation: false,
            })
        },
    )
}

/// Copies all of `buffer` (which needs `COPY_SRC`) into a staging buffer, waits, and returns it as `T`s.
pub fn read_buffer<T: bytemuck::Pod>(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    buffer: &wgpu::Buffer,
) -> Result<Vec<T>> {
    let size = buffer.size();
    let staging = scoped(
        device,
        || "creating a staging buffer".into(),
        || {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("vqgrad readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        },
    )?;
    scoped(
        device,
        || "copying a buffer for readback".into(),
        || {
            let mut encoder =
                device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("vqgrad readback") });
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
            queue.submit([encoder.finish()]);
        },
    )?;
    map_read(device, &staging)
}

/// Maps a `MAP_READ` buffer, waits for it, and returns its contents as `T`s.
pub fn map_read<T: bytemuck::Pod>(device: &wgpu::Device, staging: &wgpu::Buffer) -> Result<Vec<T>> {
    let slice = staging.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Readback(format!("waiting for the GPU: {e}")))?;
    rx.recv()
        .map_err(|_| Error::Readback("the map callback never ran".into()))?
        .map_err(|e| Error::Readback(e.to_string()))?;
    let data = slice.get_mapped_range().map_err(|e| Error::Readback(e.to_string()))?;
    let n = data.len() / std::mem::size_of::<T>();
    let out = bytemuck::pod_collect_to_vec(&data[..n * std::mem::size_of::<T>()]);
    drop(data);
    staging.unmap();
    Ok(out)
}

/// Splits `groups` workgroups into an (x, y) grid with x at most `max_per_dim`; kernels linearize it back.
pub(crate) fn grid(groups: u32, max_per_dim: u32) -> Result<(u32, u32)> {
    if groups <= max_per_dim {
        return Ok((groups.max(1), 1));
    }
    let y = groups.div_ceil(max_per_dim);
    if y > max_per_dim {
        return Err(Error::Shape(format!(
            "{groups} workgroups exceed the device's {max_per_dim} x {max_per_dim} grid"
        )));
    }
    Ok((groups.div_ceil(y), y))
}
