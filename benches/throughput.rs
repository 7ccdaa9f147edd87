//! Explanations per second and ms per image, forward-only next to explain, on random
//! ViT-Ti/S/B weights. `cargo bench --bench throughput -- [--models vit_tiny_patch16_224,...]
//! [--batches 1,8] [--iters N] [--backend vulkan|gl]`
//!
//! Prints one JSON object per line (model, batch, mode, ms per image, images per second).

use std::time::Instant;

use agcam::gpu::{Backend, Gpu, GpuOptions};
use agcam::model::{Model, ModelConfig};
use agcam::{Engine, EngineOptions, Target};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let models = arg(
        &args,
        "--models",
        "vit_tiny_patch16_224,vit_small_patch16_224,vit_base_patch16_224",
    );
    let batches = arg(&args, "--batches", "1,8");
    let iters: usize = arg(&args, "--iters", "3").parse().expect("--iters");
    let backend = match arg(&args, "--backend", "").as_str() {
        "vulkan" => Some(Backend::Vulkan),
        "gl" => Some(Backend::Gl),
        _ => None,
    };
    let gpu = Gpu::new(&GpuOptions {
        backend,
        adapter: None,
    })
    .expect("GPU");
    eprintln!("adapter: {}", gpu.describe());
    let profile = args.iter().any(|a| a == "--profile");
    for name in models.split(',') {
        let cfg = ModelConfig::standard(name).expect("known model name");
        let model = Model::random(cfg, 0);
        for batch in batches
            .split(',')
            .map(|b| b.parse::<usize>().expect("--batches"))
        {
            let options = EngineOptions {
                max_batch: batch,
                ..Default::default()
            };
            let mut engine = Engine::with_options(gpu.clone(), &model, &options).expect("engine");
            let images = vec![0.1f32; batch * engine.image_len()];
            if profile {
                engine
                    .explain(&images, &Target::Predicted)
                    .expect("warm-up");
                let p = engine.profile(&images, 1).expect("profile");
                let mut by_kernel: Vec<(String, f64, f64)> = Vec::new();
                for k in &p.kernels {
                    let key = k.name.rsplit('.').next().unwrap_or("").to_string();
                    match by_kernel.iter_mut().find(|e| e.0 == key) {
                        Some(e) => {
                            e.1 += k.ms;
                            e.2 += k.gflop_per_s * k.ms;
                        }
                        None => by_kernel.push((key, k.ms, k.gflop_per_s * k.ms)),
                    }
                }
                for (key, ms, gf) in by_kernel {
                    eprintln!(
                        "{name} b{batch} {key:>16}: {ms:9.2} ms {:7.2} GFLOP/s",
                        gf / ms
                    );
                }
                eprintln!("{name} b{batch} total {:.1} ms ({})", p.total_ms(), p.clock);
            }
            for mode in ["forward", "explain"] {
                let run = |engine: &mut Engine| {
                    if mode == "forward" {
                        engine.predict(&images).map(|_| ())
                    } else {
                        engine.explain(&images, &Target::Predicted).map(|_| ())
                    }
                };
                run(&mut engine).expect("warm-up");
                let start = Instant::now();
                for _ in 0..iters {
                    run(&mut engine).expect("run");
                }
                let secs = start.elapsed().as_secs_f64() / (iters * batch) as f64;
                println!(
                    "{{\"model\":\"{name}\",\"adapter\":\"{}\",\"batch\":{batch},\"mode\":\"{mode}\",\"ms_per_image\":{:.3},\"images_per_s\":{:.3}}}",
                    gpu.describe(),
                    secs * 1e3,
                    1.0 / secs
                );
            }
        }
    }
}
