use std::fmt;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A graphics API that wgpu can drive, as the user names it on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Vulkan (Linux, Windows, Android; lavapipe on CPU-only machines).
    Vulkan,
    /// Metal (macOS, iOS).
    Metal,
    /// Direct3D 12 (Windows).
    Dx12,
    /// OpenGL / OpenGL ES (llvmpipe on CPU-only machines).
    Gl,
}

impl Backend {
    /// The name `--backend` takes: `vulkan`, `metal`, `dx12` or `gl`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vulkan => "vulkan",
            Backend::Metal => "metal",
            Backend::Dx12 => "dx12",
            Backend::Gl => "gl",
        }
    }

    fn to_wgpu(self) -> wgpu::Backends {
        match self {
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Gl => wgpu::Backends::GL,
        }
    }
}

/// How to pick the adapter. The default picks the best one available.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Restrict the search to one backend.
    pub backend: Option<Backend>,
    /// Index into the list that [`list_adapters`] returns (after the backend filter).
    pub adapter: Option<usize>,
}

/// What `agcam devices` shows about one adapter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    /// Index to pass as `--adapter`.
    pub index: usize,
    /// Adapter name as the driver reports it.
    pub name: String,
    /// Vulkan, Metal, Dx12 or Gl.
    pub backend: String,
    /// Discrete, integrated, virtual or CPU.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Whether f16 arithmetic in shaders is available.
    pub shader_f16: bool,
    /// Whether GPU timestamps can be taken (for profiling).
    pub timestamp_query: bool,
    /// Whether subgroup operations are available.
    pub subgroup: bool,
    /// Cooperative-matrix (tensor core) configurations, as "MxNxK f16->f32".
    pub cooperative_matrix: Vec<String>,
    /// Largest storage buffer binding in bytes.
    pub max_storage_buffer_binding_size: u64,
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "[{}] {} ({}, {}, driver: {}) f16: {}, timestamps: {}, subgroups: {}, \
             cooperative matrices: {}, max binding: {} MiB",
            self.index,
            self.name,
            self.backend,
            self.device_type,
            if self.driver.is_empty() {
                "?"
            } else {
                &self.driver
            },
            yes_no(self.shader_f16),
            yes_no(self.timestamp_query),
            yes_no(self.subgroup),
            if self.cooperative_matrix.is_empty() {
                "none".to_string()
            } else {
                self.cooperative_matrix.join(" ")
            },
            self.max_storage_buffer_binding_size >> 20
        )
    }
}

/// An open device with everything the kernels need to know about it.
#[derive(Clone)]
pub struct Gpu {
    /// The logical device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Name, backend and type of the adapter.
    pub info: wgpu::AdapterInfo,
    /// The optional features that were granted (a subset of SHADER_F16, TIMESTAMP_QUERY, ...).
    pub features: wgpu::Features,
    /// The adapter's real limits, as granted.
    pub limits: wgpu::Limits,
    /// The first validation error, out-of-memory or device loss that wgpu reported outside
    /// an error scope; [`Gpu::check`] turns it into [`Error::Gpu`].
    failure: Arc<Mutex<Option<String>>>,
    /// Small buffers for binding slots a dispatch does not use: one for read-only slots, one
    /// for writable slots (a buffer cannot be both in one dispatch).
    unused: [wgpu::Buffer; 2],
    /// The adapter's cooperative-matrix configurations, where the device was granted
    /// EXPERIMENTAL_COOPERATIVE_MATRIX; empty otherwise.
    cooperative_matrix: Vec<wgpu::CooperativeMatrixProperties>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gpu({})", self.describe())
    }
}

/// Features the kernels use when present; none of them is required.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
}

/// "16x16x16 f16->f32".
fn describe_cooperative(c: &wgpu::CooperativeMatrixProperties) -> String {
    let name = |t: wgpu::CooperativeScalarType| match t {
        wgpu::CooperativeScalarType::F32 => "f32",
        wgpu::CooperativeScalarType::F16 => "f16",
        wgpu::CooperativeScalarType::I32 => "i32",
        wgpu::CooperativeScalarType::U32 => "u32",
    };
    format!(
        "{}x{}x{} {}->{}",
        c.m_size,
        c.n_size,
        c.k_size,
        name(c.ab_type),
        name(c.cr_type)
    )
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Adapters in the order `--adapter` indexes them: best first (discrete, integrated, virtual,
/// CPU; native APIs before GL within a class), so index 0 is what the default picks.
fn ranked_adapters(backend: Option<Backend>) -> Vec<wgpu::Adapter> {
    let backends = backend.map_or(wgpu::Backends::all(), Backend::to_wgpu);
    let mut adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
    adapters.retain(|a| {
        a.get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
    });
    adapters.sort_by_key(|a| {
        let info = a.get_info();
        let class = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 3,
            wgpu::DeviceType::Other => 4,
        };
        (class, info.backend == wgpu::Backend::Gl)
    });
    adapters
}

fn summarize(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let features = adapter.features();
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        subgroup: features.contains(wgpu::Features::SUBGROUP),
        cooperative_matrix: adapter
            .cooperative_matrix_properties()
            .iter()
            .map(describe_cooperative)
            .collect(),
        max_storage_buffer_binding_size: adapter.limits().max_storage_buffer_binding_size,
    }
}

/// Every adapter that can run compute shaders, best first.
pub fn list_adapters(backend: Option<Backend>) -> Vec<AdapterSummary> {
    ranked_adapters(backend)
        .iter()
        .enumerate()
        .map(|(i, a)| summarize(i, a))
        .collect()
}

/// Opens the best adapter of each backend among `backends` that has one, in the given order.
/// Tests use it to run every check on Vulkan and on GL; it also lets a user compare APIs.
pub fn open_each(backends: &[Backend]) -> Vec<Result<Gpu>> {
    backends
        .iter()
        .filter(|&&b| !ranked_adapters(Some(b)).is_empty())
        .map(|&b| {
            Gpu::new(&GpuOptions {
                backend: Some(b),
                adapter: None,
            })
        })
        .collect()
}

impl Gpu {
    /// Opens the adapter the options select, with its real limits and the optional features
    /// the kernels can use.
    pub fn new(options: &GpuOptions) -> Result<Gpu> {
        let adapters = ranked_adapters(options.backend);
        let scope = options
            .backend
            .map_or(String::new(), |b| format!(" for backend {b:?}"));
        if adapters.is_empty() {
            return Err(Error::Gpu(format!(
                "no adapter with compute shaders found{scope}; on a machine without a GPU install \
                 Mesa (e.g. `apt-get install mesa-vulkan-drivers`)"
            )));
        }
        let index = options.adapter.unwrap_or(0);
        let adapter = adapters.get(index).ok_or_else(|| {
            Error::Gpu(format!(
                "adapter {index} does not exist{scope}: there are {} (see `agcam devices`)",
                adapters.len()
            ))
        })?;
        Self::open(adapter)
    }

    fn open(adapter: &wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let coop = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        let mut features = adapter.features() & wanted_features();
        // Cooperative matrices, only where the adapter offers them: they are an experimental
        // feature of wgpu, and only modules that use them change (naga declares the Vulkan
        // memory model for those alone).
        if adapter.features().contains(coop) {
            features |= coop;
        }
        let experimental_features = if features.contains(coop) {
            // SAFETY: wgpu marks the feature experimental because naga's translation of
            // cooperative modules is young (gfx-rs/wgpu#8805): the one kernel that uses it
            // (gemm_coop) stages through workgroup memory behind barriers, is tested through
            // its scalar twin on every adapter, and is checked on the GPU by scripts/gpu-check.sh.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let cooperative_matrix = if features.contains(coop) {
            adapter.cooperative_matrix_properties()
        } else {
            Vec::new()
        };
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("agcam"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("cannot open {}: {e}", info.name)))?;
        // wgpu's default handlers panic on a validation error and ignore device loss; record
        // the first of either instead, so that the next wait or readback returns it as an
        // error naming the adapter.
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let record = |failure: &Arc<Mutex<Option<String>>>, message: String| {
            let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(message);
        };
        let errors = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            record(&errors, e.to_string());
        }));
        let lost = failure.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                record(&lost, format!("device lost ({reason:?}): {message}"));
            }
        });
        let unused = ["unused binding", "unused writable binding"].map(|label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: crate::gpu::MIN_STORAGE_BYTES,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        });
        Ok(Gpu {
            device,
            queue,
            info,
            features,
            limits,
            failure,
            unused,
            cooperative_matrix,
        })
    }

    /// The first error wgpu reported on this device (a validation error, out of memory, the
    /// device lost), if any, as [`Error::Gpu`] naming the adapter. Checked at every wait.
    pub fn check(&self) -> Result<()> {
        let slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            None => Ok(()),
            Some(message) => Err(Error::Gpu(format!("{}: {message}", self.describe()))),
        }
    }

    /// "name (Backend, DeviceType)", for logs and JSON output.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// The buffer bound at slots a dispatch does not use (see `Bindings::unused`), writable
    /// or read-only.
    pub(crate) fn unused_binding(&self, writable: bool) -> &wgpu::Buffer {
        &self.unused[writable as usize]
    }

    /// Whether shaders may use f16 arithmetic on this device.
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// The fragment side (16 or 8) of the cooperative-matrix GEMM this device can run, if any:
    /// a square f16 → f32 configuration of that side, f16 arithmetic, and subgroups of at most
    /// 32 invocations (the kernel's workgroup of 32 must hold whole subgroups; Apple GPUs'
    /// simdgroups are 32 wide, though wgpu reports Metal's range as 4 to 64). 16 is preferred.
    pub fn cooperative_fragment(&self) -> Option<u32> {
        let subgroups_fit =
            self.info.backend == wgpu::Backend::Metal || self.info.subgroup_max_size <= 32;
        if !self.has_f16() || !subgroups_fit {
            return None;
        }
        [16, 8].into_iter().find(|&side| {
            self.cooperative_matrix.iter().any(|c| {
                (c.m_size, c.n_size, c.k_size) == (side, side, side)
                    && c.ab_type == wgpu::CooperativeScalarType::F16
                    && c.cr_type == wgpu::CooperativeScalarType::F32
            })
        })
    }

    /// Whether this is a CPU rasterizer (llvmpipe, lavapipe, WARP), which wants different
    /// kernel shapes than a real GPU.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("device lost while waiting: {e}")))?;
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::testing::test_backends;

    /// A wgpu validation error becomes `Error::Gpu` at the next wait, naming the adapter and
    /// the cause, instead of wgpu's default panic. A fresh device, since the failure stays
    /// recorded.
    #[test]
    fn validation_errors_become_gpu_errors() {
        for gpu in open_each(&test_backends()) {
            let gpu = gpu.expect("a test device opens");
            assert!(gpu.wait().is_ok());
            // A 64-byte copy from a buffer of 4 bytes is a validation error.
            let dst = gpu.readback("dst", 64);
            let too_small = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("too small"),
                size: 4,
                usage: wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&too_small, 0, &dst, 0, 64);
            gpu.queue.submit([enc.finish()]);
            let err = gpu.wait().expect_err("the bad copy is reported");
            let message = err.to_string();
            assert!(message.starts_with("GPU: "), "{message}");
            assert!(message.contains(&gpu.info.name), "{message}");
        }
    }
}
