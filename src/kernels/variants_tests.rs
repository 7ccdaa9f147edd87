//! The shader catalogue against the launchers and against naga's back ends.

use std::collections::HashSet;

use super::variants::{compiled, shader_variants, ShaderVariant};
use super::*;
use crate::gpu::testing::gpus;
use crate::gpu::Backend;

fn backend_of(b: wgpu::Backend) -> Option<Backend> {
    match b {
        wgpu::Backend::Vulkan => Some(Backend::Vulkan),
        wgpu::Backend::Metal => Some(Backend::Metal),
        wgpu::Backend::Dx12 => Some(Backend::Dx12),
        wgpu::Backend::Gl => Some(Backend::Gl),
        _ => None,
    }
}

fn same(v: &ShaderVariant, c: &compiled::Compiled) -> bool {
    let constants: Vec<(String, u32)> = v
        .constants
        .iter()
        .map(|&(n, x)| (n.to_string(), x))
        .collect();
    v.shader == c.0 && v.kernel == c.1 && constants == c.2 && v.f16_math == c.3
}

/// Every kernel the launchers compile, with both kernel sets and both precisions (and every
/// trial kernel), is in the catalogue with its back end among the targets; on Vulkan (lavapipe
/// has SHADER_F16) every Vulkan variant of the catalogue is compiled, so the catalogue lists
/// nothing dead either.
#[test]
fn catalogue_matches_what_launchers_compile() {
    let catalogue = shader_variants();
    for gpu in gpus() {
        // GL compiles with a context lock that times out while another thread compiles a
        // large kernel: build its sets one after the other in this thread only.
        for set in [KernelSet::Cpu, KernelSet::Gpu] {
            for precision in [Precision::F32, Precision::F16] {
                let kernels = Kernels::new(gpu, set, precision);
                // Their product variants compile on first use: listed here without compiling.
                kernels.backward(gpu).record_lazy_variants(gpu);
                kernels.lrp(gpu).record_lazy_variants(gpu);
                let trials = Trials {
                    splitk: true,
                    prefetch128: true,
                    wide_slices: true,
                    ..Trials::default()
                };
                Gemm::with_trials(gpu, set, precision, trials);
                AgcamKernels::new(gpu, set, precision, true);
            }
        }
    }
    // The cooperative GEMM's twins are test fixtures that the engine never selects.
    let compiled: Vec<_> = compiled::all()
        .into_iter()
        .filter(|c| !c.0.starts_with("gemm_twin"))
        .collect();
    for c in &compiled {
        let backend = backend_of(c.4).expect("a test back end");
        let listed = catalogue
            .iter()
            .find(|v| same(v, c))
            .unwrap_or_else(|| panic!("compiled on {backend:?} but not in the catalogue: {c:?}"));
        assert!(
            listed.targets.contains(&backend),
            "{} compiled on {backend:?}, which its targets {:?} omit",
            listed.file_name(),
            listed.targets
        );
    }
    if let Some(vulkan) = gpus()
        .iter()
        .find(|g| g.info.backend == wgpu::Backend::Vulkan)
    {
        for v in &catalogue {
            let adapter_fits = if vulkan.has_f16() {
                !v.without_f16
            } else {
                !v.f16_math
            } && v
                .cooperative_matrix
                .is_none_or(|side| vulkan.cooperative_fragment() == Some(side));
            if !v.targets.contains(&Backend::Vulkan) || !adapter_fits {
                continue;
            }
            assert!(
                compiled
                    .iter()
                    .any(|c| c.4 == wgpu::Backend::Vulkan && same(v, c)),
                "{} is in the catalogue for Vulkan but no launcher compiled it there",
                v.file_name()
            );
        }
    }
}

#[test]
fn catalogue_file_names_are_unique() {
    let variants = shader_variants();
    let names: HashSet<String> = variants.iter().map(ShaderVariant::file_name).collect();
    assert_eq!(names.len(), variants.len());
}

/// Parses and validates one variant's file, then resolves its overrides for its entry point,
/// as wgpu does before handing a module to a back end.
fn resolved(v: &ShaderVariant) -> (naga::Module, naga::valid::ModuleInfo) {
    let source = v.source();
    let name = v.file_name();
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&source)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&source)));
    let entry = Some((naga::ShaderStage::Compute, v.kernel));
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        entry,
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
    (module.into_owned(), info.into_owned())
}

/// Every variant translates with naga to the language of each back end it targets: SPIR-V for
/// Vulkan, MSL for Metal, HLSL (shader model 6.2, which f16 needs) for DX12, GLSL ES 3.10 for
/// OpenGL. A Metal or DX12 user never meets a shader that fails to compile in naga.
#[test]
fn every_variant_translates_for_its_targets() {
    for v in shader_variants() {
        let (module, info) = resolved(&v);
        let name = v.file_name();
        let stage = naga::ShaderStage::Compute;
        for target in &v.targets {
            let result: Result<(), String> = match target {
                Backend::Vulkan => {
                    let pipeline = naga::back::spv::PipelineOptions {
                        shader_stage: stage,
                        entry_point: v.kernel.to_string(),
                    };
                    let options = naga::back::spv::Options::default();
                    naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                Backend::Metal => {
                    let options = naga::back::msl::Options {
                        lang_version: (2, 4),
                        fake_missing_bindings: true,
                        ..Default::default()
                    };
                    let pipeline = naga::back::msl::PipelineOptions {
                        entry_point: Some((stage, v.kernel.to_string())),
                        ..Default::default()
                    };
                    naga::back::msl::write_string(&module, &info, &options, &pipeline)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                Backend::Dx12 => {
                    let options = naga::back::hlsl::Options {
                        shader_model: naga::back::hlsl::ShaderModel::V6_2,
                        fake_missing_bindings: true,
                        ..Default::default()
                    };
                    let pipeline = naga::back::hlsl::PipelineOptions {
                        entry_point: Some((stage, v.kernel.to_string())),
                    };
                    let mut out = String::new();
                    naga::back::hlsl::Writer::new(&mut out, &options, &pipeline)
                        .write(&module, &info, None)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                Backend::Gl => {
                    let options = naga::back::glsl::Options {
                        version: naga::back::glsl::Version::Embedded {
                            version: 310,
                            is_webgl: false,
                        },
                        ..Default::default()
                    };
                    let pipeline = naga::back::glsl::PipelineOptions {
                        shader_stage: stage,
                        entry_point: v.kernel.to_string(),
                        multiview: None,
                    };
                    let mut out = String::new();
                    naga::back::glsl::Writer::new(
                        &mut out,
                        &module,
                        &info,
                        &options,
                        &pipeline,
                        Default::default(),
                    )
                    .and_then(|mut w| w.write().map(drop))
                    .map_err(|e| e.to_string())
                }
            };
            if let Err(e) = result {
                panic!("{name} does not translate for {}: {e}", target.name());
            }
        }
    }
}

/// The value of a module-scope constant expression that is a plain u32 or i32 literal.
fn literal_u32(module: &naga::Module, expr: naga::Handle<naga::Expression>) -> Option<u32> {
    match module.global_expressions[expr] {
        naga::Expression::Literal(naga::Literal::U32(v)) => Some(v),
        naga::Expression::Literal(naga::Literal::I32(v)) => u32::try_from(v).ok(),
        naga::Expression::Literal(naga::Literal::AbstractInt(v)) => u32::try_from(v).ok(),
        naga::Expression::Constant(c) => literal_u32(module, module.constants[c].init),
        // An override's default.
        naga::Expression::Override(o) => module.overrides[o]
            .init
            .and_then(|e| literal_u32(module, e)),
        _ => None,
    }
}

/// Every number and params struct a launcher copies from its shader agrees with naga's reading
/// of the shader: constants, override defaults, workgroup sizes, struct sizes and offsets.
#[test]
fn launchers_mirror_their_shaders() {
    let mirrors = [
        &super::gemm::MIRROR,
        &super::agcam::MIRROR,
        &super::attention::MIRROR,
        &super::backward::MIRROR,
        &super::baselines::MIRROR,
        &super::gradcam::MIRROR,
        &super::layernorm::MIRROR,
        &super::lrp::MIRROR,
        &super::tokens::MIRROR,
        &super::gemm::COOP_MIRRORS[0],
        &super::gemm::COOP_MIRRORS[1],
    ];
    for mirror in mirrors {
        let file = mirror.shader;
        let source = shader_source(file, false);
        let module = naga::front::wgsl::parse_str(&source).expect("the shaders parse");
        let mut layouter = naga::proc::Layouter::default();
        layouter
            .update(module.to_ctx())
            .expect("the shader's types lay out");
        for &(name, rust) in mirror.constants {
            let constant = module.constants.iter().find_map(|(_, c)| {
                (c.name.as_deref() == Some(name)).then(|| literal_u32(&module, c.init))
            });
            let default = module.overrides.iter().find_map(|(_, o)| {
                (o.name.as_deref() == Some(name))
                    .then(|| o.init.and_then(|e| literal_u32(&module, e)))
            });
            let wgsl = constant
                .or(default)
                .unwrap_or_else(|| panic!("{file}.wgsl has no const or override {name}"));
            assert_eq!(wgsl, Some(rust), "{file}.wgsl: {name}, Rust assumes {rust}");
        }
        for &(entry, size) in mirror.workgroups {
            let ep = module
                .entry_points
                .iter()
                .find(|e| e.name == entry)
                .unwrap_or_else(|| panic!("{file}.wgsl has no entry point {entry}"));
            // Sizes given by overrides, at their defaults.
            let mut wgsl = ep.workgroup_size;
            for (dim, expr) in ep.workgroup_size_overrides.iter().flatten().enumerate() {
                if let Some(expr) = *expr {
                    wgsl[dim] = literal_u32(&module, expr).expect("an override with a default");
                }
            }
            assert_eq!(wgsl, size, "{file}.wgsl: workgroup size of {entry}");
        }
        for &(name, rust_size, fields) in mirror.structs {
            let (handle, ty) = module
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{file}.wgsl has no struct {name}"));
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{file}.wgsl: {name} is not a struct");
            };
            assert_eq!(*span as usize, rust_size, "{file}.wgsl: size of {name}");
            assert_eq!(layouter[handle].size as usize, rust_size);
            for &(field, offset) in fields {
                let member = members
                    .iter()
                    .find(|m| m.name.as_deref() == Some(field))
                    .unwrap_or_else(|| panic!("{file}.wgsl: {name} has no member {field}"));
                assert_eq!(
                    member.offset as usize, offset,
                    "{file}.wgsl: offset of {name}.{field}"
                );
            }
        }
    }
}
