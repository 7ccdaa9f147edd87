//! One launcher per shader family. A launcher owns its pipelines, knows its bindings and its
//! dispatch size, and turns buffers into [`Dispatch`]es that are recorded once and replayed.

mod agcam;
mod attention;
mod backward;
mod baselines;
mod gemm;
mod gradcam;
mod layernorm;
mod lrp;
mod tokens;
pub(crate) mod variants;

pub(crate) use agcam::{AgcamKernels, Factor, NormFold};
pub(crate) use attention::{Attention, AttnBuffers, AttnShape};
pub(crate) use backward::{BackwardKernels, Batch, Finish, Mat, Right};
pub(crate) use baselines::{Baselines, ChainStep};
pub(crate) use gemm::{Epilogue, Gemm, View};
pub(crate) use gradcam::GradCamKernels;

pub(crate) use layernorm::{LayerNorm, RowMap};
pub(crate) use lrp::{Linear, LrpKernels, Shared};
pub(crate) use tokens::Tokens;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Helpers every shader may call; prepended to each file.
const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// Every shader file, by name, without the common prefix.
pub(crate) const SHADERS: &[(&str, &str)] = &[
    ("agcam", include_str!("../../shaders/agcam.wgsl")),
    ("attention", include_str!("../../shaders/attention.wgsl")),
    ("backward", include_str!("../../shaders/backward.wgsl")),
    ("baselines", include_str!("../../shaders/baselines.wgsl")),
    ("gemm", include_str!("../../shaders/gemm.wgsl")),
    ("gradcam", include_str!("../../shaders/gradcam.wgsl")),
    ("gemm_coop16", gemm::COOP16_SOURCE),
    ("gemm_coop8", gemm::COOP8_SOURCE),
    ("gemm_twin16", gemm::TWIN16_SOURCE),
    ("gemm_twin8", gemm::TWIN8_SOURCE),
    ("layernorm", include_str!("../../shaders/layernorm.wgsl")),
    ("lrp", include_str!("../../shaders/lrp.wgsl")),
    ("tokens", include_str!("../../shaders/tokens.wgsl")),
];

/// The complete WGSL of shader `name`: its `enable` directives, the arithmetic type `half`,
/// the common helpers, then the file. `half` is f32 unless `f16_math`, which needs the
/// device's SHADER_F16.
pub(crate) fn shader_source(name: &str, f16_math: bool) -> String {
    let body = SHADERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("no shader named {name}"));
    let half = if f16_math {
        "enable f16;\nalias half = f16;"
    } else {
        "alias half = f32;"
    };
    // WGSL wants directives before any declaration.
    let (enables, body): (Vec<&str>, Vec<&str>) =
        body.lines().partition(|l| l.starts_with("enable "));
    let (enables, body) = (enables.join("\n"), body.join("\n"));
    format!("{enables}\n{half}\n{COMMON}\n{body}\n")
}

/// What a launcher copies from its shader by hand (dispatch arithmetic, params structs), for
/// the test that compares both sides with naga's reading of the shader.
#[cfg(test)]
pub(crate) struct Mirror {
    /// The shader file.
    pub shader: &'static str,
    /// Module-scope `const`s and override defaults, with the value Rust assumes.
    pub constants: &'static [(&'static str, u32)],
    /// Entry points with the workgroup size Rust's dispatch counts assume.
    pub workgroups: &'static [(&'static str, [u32; 3])],
    /// Uniform structs, as Rust lays them out.
    pub structs: &'static [StructLayout],
}

/// A struct's name, Rust size, and Rust's (field, offset) for each named field.
#[cfg(test)]
pub(crate) type StructLayout = (&'static str, usize, &'static [(&'static str, usize)]);

/// `(name, size_of, [(field, offset_of)])` of a `#[repr(C)]` struct, for [`Mirror::structs`].
#[cfg(test)]
macro_rules! layout {
    ($t:ident { $($f:ident),* $(,)? }) => {
        (
            stringify!($t),
            std::mem::size_of::<$t>(),
            &[$((stringify!($f), std::mem::offset_of!($t, $f))),*],
        )
    };
}
#[cfg(test)]
pub(crate) use layout;

/// How a kernel accesses one binding.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    Read,
    ReadWrite,
    Uniform,
}

/// A compiled shader file, with what it was built from.
pub(crate) struct Module {
    module: wgpu::ShaderModule,
    /// Records which catalogue entry each kernel compiled from it is (the tests check
    /// [`variants::shader_variants`] against what the launchers build).
    #[cfg_attr(not(test), allow(dead_code))]
    shader: &'static str,
    #[cfg_attr(not(test), allow(dead_code))]
    f16_math: bool,
}

/// One compiled entry point with its explicit bind group layout.
pub(crate) struct Kernel {
    label: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    bindings: &'static [(u32, Access)],
}

/// A recorded dispatch: everything needed to replay it inside a compute pass, and what the
/// profiler reports about it.
pub(crate) struct Dispatch {
    /// Where in the model: "blocks.3.mlp.fc1". Empty until [`Dispatch::named`].
    pub name: String,
    /// The shader entry point.
    pub kernel: String,
    /// Useful floating-point operations (a multiply-add counts 2).
    pub flops: u64,
    /// Bytes the kernel must at least read and write.
    pub bytes: u64,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    /// A launch that completes this one and is recorded right after it, in the same pass (the
    /// reduction of split-K), so that callers and profiles see one step.
    then: Option<Box<Dispatch>>,
}

impl Dispatch {
    /// This dispatch followed by `next` as one step, which profiles time and report under this
    /// dispatch's kernel label (see [`Kernel::labelled`]) with the work of both.
    pub fn followed_by(mut self, next: Dispatch) -> Dispatch {
        self.flops += next.flops;
        self.bytes += next.bytes;
        self.then = Some(Box::new(next));
        self
    }

    /// Names the dispatch by its place in the model, for profiles.
    pub fn named(mut self, name: impl Into<String>) -> Dispatch {
        self.name = name.into();
        self
    }

    /// Records the work the dispatch does, for GFLOP/s and GB/s in profiles.
    pub fn work(mut self, flops: usize, bytes: usize) -> Dispatch {
        self.flops = flops as u64;
        self.bytes = bytes as u64;
        self
    }
}

impl Kernel {
    /// Records the variant in the log that the catalogue test checks: every compiled kernel,
    /// and the variants a launcher compiles only on first use.
    #[cfg(test)]
    pub fn record(gpu: &Gpu, module: &Module, entry: &str, constants: &[(&str, f64)]) {
        let mut sorted: Vec<(String, u32)> = constants
            .iter()
            .map(|&(c, v)| (c.to_string(), v as u32))
            .collect();
        sorted.sort_unstable();
        variants::compiled::record((
            module.shader.to_string(),
            entry.to_string(),
            sorted,
            module.f16_math,
            gpu.info.backend,
        ));
    }

    /// Compiles `entry` of `module` with the given override constants.
    pub fn new(
        gpu: &Gpu,
        module: &Module,
        entry: &str,
        bindings: &'static [(u32, Access)],
        constants: &[(&str, f64)],
    ) -> Kernel {
        #[cfg(test)]
        Kernel::record(gpu, module, entry, constants);
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .map(|&(binding, access)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match access {
                    Access::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Access::Read | Access::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: matches!(access, Access::Read),
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let label = format!("{entry}{constants:?}");
        let layout = gpu
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&label),
                entries: &entries,
            });
        let pipeline_layout = gpu
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = gpu
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &module.module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        Kernel {
            label: entry.to_string(),
            pipeline,
            layout,
            bindings,
        }
    }

    /// The same kernel, reported by profiles as `label` (a variant of an entry point that
    /// profiles must tell apart from the default).
    pub fn labelled(mut self, label: &str) -> Kernel {
        self.label = label.to_string();
        self
    }

    /// Starts binding buffers to this kernel's slots, for one dispatch.
    pub fn bind(&self) -> Bindings<'_> {
        Bindings {
            kernel: self,
            bound: Vec::with_capacity(self.bindings.len()),
        }
    }
}

/// The buffers of one dispatch, bound by slot number, each checked against the highest byte
/// the launch reaches. A launcher that binds a buffer too small for its shape, a slot twice, a
/// slot the kernel does not have, or leaves one unbound fails here, when the dispatch is
/// recorded (once per shape), naming kernel and slot, instead of reading or writing out of
/// bounds on the GPU (the shaders run without injected bounds checks).
pub(crate) struct Bindings<'a> {
    kernel: &'a Kernel,
    bound: Vec<(u32, &'a wgpu::Buffer)>,
}

/// Bytes of `count` 4-byte values (f32 or u32).
pub(crate) fn words(count: usize) -> u64 {
    4 * count as u64
}

impl<'a> Bindings<'a> {
    fn add(mut self, slot: u32, buffer: &'a wgpu::Buffer) -> Self {
        let label = &self.kernel.label;
        assert!(
            self.kernel.bindings.iter().any(|&(s, _)| s == slot),
            "{label}: has no binding {slot}"
        );
        assert!(
            self.bound.iter().all(|&(s, _)| s != slot),
            "{label}: binding {slot} bound twice"
        );
        self.bound.push((slot, buffer));
        self
    }

    /// Binds `buffer` at storage `slot` for a launch that reads or writes its first `bytes`.
    pub fn storage(self, slot: u32, buffer: &'a wgpu::Buffer, bytes: u64) -> Self {
        assert!(
            buffer.size() >= bytes,
            "{}: binding {slot} holds {} bytes, the launch reaches byte {bytes}",
            self.kernel.label,
            buffer.size()
        );
        self.add(slot, buffer)
    }

    /// Binds the uniform `buffer` (its size is checked by wgpu against the shader's struct).
    pub fn uniform(self, slot: u32, buffer: &'a wgpu::Buffer) -> Self {
        self.add(slot, buffer)
    }

    /// Binds one of the device's dummy buffers at a storage `slot` that this launch does not
    /// use (a weight format or an epilogue operand it does not read, an output of a mode it
    /// does not run).
    pub fn unused(self, gpu: &'a Gpu, slot: u32) -> Self {
        let access = self.kernel.bindings.iter().find(|&&(s, _)| s == slot);
        let writable = match access {
            Some((_, Access::Read)) => false,
            Some((_, Access::ReadWrite)) => true,
            _ => panic!(
                "{}: binding {slot} is not a storage binding",
                self.kernel.label
            ),
        };
        self.add(slot, gpu.unused_binding(writable))
    }

    /// Records the dispatch; every slot of the kernel must be bound.
    pub fn dispatch(self, gpu: &Gpu, workgroups: [u32; 3]) -> Dispatch {
        let kernel = self.kernel;
        let entries: Vec<wgpu::BindGroupEntry> = kernel
            .bindings
            .iter()
            .map(|&(slot, _)| {
                let (_, buffer) = self
                    .bound
                    .iter()
                    .find(|&&(s, _)| s == slot)
                    .unwrap_or_else(|| panic!("{}: binding {slot} not bound", kernel.label));
                wgpu::BindGroupEntry {
                    binding: slot,
                    resource: buffer.as_entire_binding(),
                }
            })
            .collect();
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&kernel.label),
            layout: &kernel.layout,
            entries: &entries,
        });
        Dispatch {
            name: String::new(),
            kernel: kernel.label.clone(),
            flops: 0,
            bytes: 0,
            pipeline: kernel.pipeline.clone(),
            bind_group,
            workgroups,
            then: None,
        }
    }
}

/// Compiles one shader file.
///
/// Shaders are compiled without wgpu's injected bounds checks (20–25 % faster GEMMs on
/// lavapipe): every kernel clamps or guards its own indices, and the kernel tests run each
/// one at edge shapes against f64 references. `AGCAM_CHECKED_SHADERS=1` restores the checks,
/// for debugging a kernel change.
pub(crate) fn module(gpu: &Gpu, name: &'static str) -> Module {
    module_with(gpu, name, false)
}

/// [`module`], with `half` = f16 when `f16_math` (the device must have SHADER_F16).
pub(crate) fn module_with(gpu: &Gpu, name: &'static str, f16_math: bool) -> Module {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(shader_source(name, f16_math).into()),
    };
    let module = if std::env::var_os("AGCAM_CHECKED_SHADERS").is_some_and(|v| v == "1") {
        gpu.device.create_shader_module(desc)
    } else {
        // SAFETY: the kernels never index a buffer out of range: loads are clamped to the
        // matrix or guarded by the same bounds as the stores, and every shader is tested at
        // awkward shapes on every backend (src/kernels/tests.rs).
        unsafe {
            gpu.device
                .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
        }
    };
    Module {
        module,
        shader: name,
        f16_math,
    }
}

/// Workgroup counts for `count` workgroups laid out as `linear_workgroup` in common.wgsl
/// expects: x up to the 65535 limit, the rest in y.
pub(crate) fn linear_grid(count: u32) -> [u32; 3] {
    const MAX: u32 = 65535;
    if count <= MAX {
        [count.max(1), 1, 1]
    } else {
        [MAX, count.div_ceil(MAX), 1]
    }
}

/// Records `dispatches` into one compute pass.
pub(crate) fn encode(pass: &mut wgpu::ComputePass<'_>, dispatches: &[Dispatch]) {
    for d in dispatches {
        d.encode(pass);
    }
}

impl Dispatch {
    /// Records this dispatch into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
        if let Some(next) = &self.then {
            next.encode(pass);
        }
    }
}

/// Which shape of kernels runs: what is fastest differs between CPU rasterizers and GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelSet {
    /// By adapter class: `cpu` on CPU adapters (llvmpipe, lavapipe, WARP), `gpu` elsewhere.
    #[default]
    Auto,
    /// No workgroup memory and no barriers: GEMMs in register blocks per invocation with vec4
    /// loads where aligned (32×24 from 64 rows, 8×8 on OpenGL, 4×4 for small products), one
    /// invocation per row for LayerNorm and softmax.
    Cpu,
    /// GEMMs in 64×64 tiles, or 128×128 for products large enough to fill the GPU, staged
    /// through workgroup memory; one workgroup per row for LayerNorm and softmax; the AGCAM
    /// chain with the reduction split across each workgroup (on the 64×64-tile GEMM from 128
    /// gradient rows, images × classes).
    Gpu,
}

impl KernelSet {
    /// The concrete set for `gpu`.
    pub fn resolve(self, gpu: &Gpu) -> KernelSet {
        match self {
            KernelSet::Auto if gpu.is_cpu() => KernelSet::Cpu,
            KernelSet::Auto => KernelSet::Gpu,
            set => set,
        }
    }
}

/// How weights are stored on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every tensor in f32.
    #[default]
    F32,
    /// The weight matrices (patch embedding, qkv, projection, MLP, head) in f16: half the
    /// memory and bandwidth. Works on every adapter; where the adapter has SHADER_F16, the GPU
    /// kernel set's 64 × 64-tile GEMM also multiplies in f16 (accumulating in f32; its
    /// 128 × 128 tile measured faster in f32). Activations, accumulation and all other
    /// arithmetic stay f32.
    F16,
}

/// Kernel choices that differ from the engine's defaults, for A/B measurements on hardware where
/// they have not been measured yet (scripts/gpu-check.sh): the environment variable
/// [`Trials::ENV`] lists them, comma-separated. They change the GPU kernel set only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Trials {
    /// `splitk`: nn.Linear products whose 64 × 64-tile grid is smaller than a large GPU
    /// (batch 1) split K over several workgroups per tile, then add the slices.
    pub splitk: bool,
    /// `prefetch128`: the 128 × 128-tile GEMM loads the next K step while it multiplies this
    /// one (two stages of workgroup memory).
    pub prefetch128: bool,
    /// `unfused-attention`: the forward's attention through the scores, softmax and A·V
    /// kernels, as on the CPU set, instead of `attention_fused` (the A/B of the fused kernel).
    pub unfused_attention: bool,
    /// `wide-slices`: the GPU set's backward-chain products (`vecmat_sliced`) split each
    /// column's reduction over 128 invocations instead of 32 (workgroups of 1,024), for the
    /// latency of a single gradient row at batch 1.
    pub wide_slices: bool,
}

impl Trials {
    /// The environment variable that lists the trial kernels.
    pub const ENV: &'static str = "AGCAM_TRIAL_KERNELS";

    /// Parses a comma-separated list of trial names (blanks and empty items ignored).
    pub fn parse(list: &str) -> Result<Trials> {
        let mut trials = Trials::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "splitk" => trials.splitk = true,
                "prefetch128" => trials.prefetch128 = true,
                "unfused-attention" => trials.unfused_attention = true,
                "wide-slices" => trials.wide_slices = true,
                other => {
                    return Err(Error::Invalid(format!(
                        "{}: unknown trial kernel {other:?} (known: splitk, prefetch128, unfused-attention, wide-slices)",
                        Trials::ENV
                    )))
                }
            }
        }
        Ok(trials)
    }

    /// The trials that [`Trials::ENV`] lists; none when it is unset.
    pub fn from_env() -> Result<Trials> {
        match std::env::var(Trials::ENV) {
            Ok(list) => Trials::parse(&list),
            Err(std::env::VarError::NotPresent) => Ok(Trials::default()),
            Err(e) => Err(Error::Invalid(format!("{}: {e}", Trials::ENV))),
        }
    }
}

/// Every compiled kernel of the engine, created once per device.
pub(crate) struct Kernels {
    pub gemm: Gemm,
    pub layernorm: LayerNorm,
    pub attention: Attention,
    pub tokens: Tokens,
    pub agcam: AgcamKernels,
    pub baselines: Baselines,
    pub gradcam: GradCamKernels,
    /// The full backward's kernels (generic attention), compiled on first use: most runs
    /// never need them.
    backward: std::sync::OnceLock<BackwardKernels>,
    /// Transformer attribution's LRP kernels, compiled on first use.
    lrp: std::sync::OnceLock<LrpKernels>,
    set: KernelSet,
    precision: Precision,
}

impl Kernels {
    /// The default kernels of `set` for `precision` weights.
    #[cfg(test)]
    pub fn new(gpu: &Gpu, set: KernelSet, precision: Precision) -> Kernels {
        Kernels::with_trials(gpu, set, precision, Trials::default())
    }

    /// [`Kernels::new`] with the trial kernels of `trials` in place of the defaults.
    pub fn with_trials(gpu: &Gpu, set: KernelSet, precision: Precision, trials: Trials) -> Kernels {
        let cpu = set.resolve(gpu) == KernelSet::Cpu;
        Kernels {
            gemm: Gemm::with_trials(gpu, set, precision, trials),
            layernorm: LayerNorm::new(gpu, cpu),
            // Fused attention on the GPU set only: on lavapipe it measured 12-15x slower than
            // the CPU set's attention GEMMs (BENCHMARKS.md).
            attention: Attention::new(gpu, cpu, !cpu && !trials.unfused_attention),
            tokens: Tokens::new(gpu, precision),
            agcam: AgcamKernels::new(gpu, set, precision, trials.wide_slices),
            baselines: Baselines::new(gpu),
            gradcam: GradCamKernels::new(gpu),
            backward: std::sync::OnceLock::new(),
            lrp: std::sync::OnceLock::new(),
            set,
            precision,
        }
    }

    /// The full backward's kernels, compiled on the first call.
    pub fn backward(&self, gpu: &Gpu) -> &BackwardKernels {
        self.backward
            .get_or_init(|| BackwardKernels::new(gpu, self.set, self.precision))
    }

    /// Transformer attribution's LRP kernels, compiled on the first call.
    pub fn lrp(&self, gpu: &Gpu) -> &LrpKernels {
        self.lrp
            .get_or_init(|| LrpKernels::new(gpu, self.set, self.precision))
    }
}

#[cfg(test)]
mod lrp_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trials_tests;
#[cfg(test)]
mod variants_tests;
