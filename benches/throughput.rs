//! `cargo bench --bench throughput [-- --backend vulkan|gl]`: forward-only and explain
//! throughput of random ViT-Ti/S/B at batch 1 and 8 (the full sweep is `agcam bench`).

use agcam::bench::{run, BenchOptions};
use agcam::gpu::{Backend, Gpu, GpuOptions};
use agcam::model::{Model, ModelConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = match args
        .iter()
        .position(|a| a == "--backend")
        .map(|i| args[i + 1].as_str())
    {
        Some("vulkan") => Some(Backend::Vulkan),
        Some("gl") => Some(Backend::Gl),
        _ => None,
    };
    let gpu = Gpu::new(&GpuOptions {
        backend,
        adapter: None,
    })
    .expect("a GPU adapter");
    let options = BenchOptions {
        batches: vec![1, 8],
        top_ks: vec![1],
        methods: vec![agcam::Method::Agcam],
        iters: 2,
        max_gpu_mem: 4 << 30,
        kernels: agcam::KernelSet::Auto,
        precision: agcam::Precision::F32,
    };
    for name in [
        "vit_tiny_patch16_224",
        "vit_small_patch16_224",
        "vit_base_patch16_224",
    ] {
        let model = Model::random(ModelConfig::standard(name).expect("standard model"), 0);
        run(&gpu, &model, &options, |r| {
            println!("{}", serde_json::to_string(r).expect("JSON"));
        })
        .expect("benchmark");
    }
}
