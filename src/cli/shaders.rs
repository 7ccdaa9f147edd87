//! `agcam shaders`: every shader variant the engine can build, as complete WGSL files, with a
//! manifest of where each is selected (for porting, profiling, or checking a driver).

use std::path::PathBuf;

use agcam::files::{ensure_writable_dir, write_atomic};
use agcam::shader_variants;
use clap::Args;

#[derive(Args)]
pub struct ShadersArgs {
    /// Folder to write the `.wgsl` files and `manifest.json` to (created if missing).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
}

pub fn shaders(args: &ShadersArgs) -> agcam::Result<bool> {
    ensure_writable_dir(&args.out)?;
    let variants = shader_variants();
    let mut entries = Vec::with_capacity(variants.len());
    for v in &variants {
        let file = v.file_name();
        write_atomic(&args.out.join(&file), v.source().as_bytes())?;
        let constants: serde_json::Map<String, serde_json::Value> = v
            .constants
            .iter()
            .map(|&(c, value)| (c.to_string(), value.into()))
            .collect();
        entries.push(serde_json::json!({
            "file": file,
            "kernel": v.kernel,
            // The cooperative GEMMs' modules are gemm_coop.wgsl with a head, the fragment
            // products of gemm_coop_mma.wgsl and gemm.wgsl (src/kernels/gemm_coop.rs).
            "shader": match v.cooperative_matrix {
                Some(_) => "shaders/gemm_coop.wgsl".to_string(),
                None => format!("shaders/{}.wgsl", v.shader),
            },
            "cooperative_matrix": v.cooperative_matrix.map(|side| format!("{side}x{side}x{side} f16->f32")),
            "constants": constants,
            "arithmetic": if v.f16_math { "f16" } else { "f32" },
            "adapter_f16": if v.f16_math {
                "required"
            } else if v.without_f16 {
                "absent"
            } else {
                "any"
            },
            "kernel_set": v.kernel_set.map_or("both", |s| match s {
                agcam::KernelSet::Cpu => "cpu",
                agcam::KernelSet::Gpu => "gpu",
                agcam::KernelSet::Auto => "both",
            }),
            "targets": v.targets,
        }));
    }
    let manifest = serde_json::json!({ "shaders": entries });
    let text = serde_json::to_string_pretty(&manifest).expect("JSON of plain values");
    write_atomic(&args.out.join("manifest.json"), (text + "\n").as_bytes())?;
    println!(
        "wrote {} shader variants and manifest.json to {}",
        variants.len(),
        args.out.display()
    );
    Ok(true)
}
