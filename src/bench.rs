//! Throughput measurement: explanations per second and milliseconds per image, forward-only next
//! to explain, at several batch sizes and class counts. Used by `agcam bench` and
//! `cargo bench --bench throughput`.

use std::time::Instant;

use crate::error::Result;
use crate::explain::{Engine, EngineOptions, Method, Target};
use crate::gpu::Gpu;
use crate::kernels::{KernelSet, Precision};
use crate::model::Model;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Images per call (each is also the engine's chunk size).
    pub batches: Vec<usize>,
    /// Classes explained per image.
    pub top_ks: Vec<usize>,
    /// Methods measured, each at every batch and top-k.
    pub methods: Vec<Method>,
    /// Timed repetitions per point (after one untimed warm-up).
    pub iters: usize,
    /// GPU memory budget for activations, bytes.
    pub max_gpu_mem: u64,
    /// Which shape of kernels runs.
    pub kernels: KernelSet,
    /// Weight storage.
    pub precision: Precision,
}

/// One measured point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    /// Model name.
    pub model: String,
    /// Adapter description.
    pub adapter: String,
    /// Images per call.
    pub batch: usize,
    /// `forward` or `explain`.
    pub mode: String,
    /// The explanation method (`None` for forward).
    pub method: Option<Method>,
    /// Weight storage.
    pub precision: Precision,
    /// Classes explained per image (0 for forward).
    pub top_k: usize,
    /// Wall-clock milliseconds per image, including upload and readback.
    pub ms_per_image: f64,
    /// Images per second.
    pub images_per_s: f64,
    /// Timed repetitions.
    pub iters: usize,
    /// GPU memory held by the engine (weights, activations, readback) while it ran this point,
    /// in MiB, from wgpu's allocator report; `None` where the backend has none (OpenGL).
    pub gpu_mem_mib: Option<f64>,
}

/// Measures `model` on `gpu` at every point of `options`, calling `report` after each.
pub fn run(
    gpu: &Gpu,
    model: &Model,
    options: &BenchOptions,
    mut report: impl FnMut(&BenchRow),
) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for &batch in &options.batches {
        let engine_options = EngineOptions {
            max_batch: batch,
            max_gpu_mem: options.max_gpu_mem,
            kernels: options.kernels,
            precision: options.precision,
        };
        let mut engine = Engine::with_options(gpu.clone(), model, &engine_options)?;
        // A fixed, non-constant input: some kernels' speed does not depend on values, but a
        // constant image would make every attention row uniform.
        let images: Vec<f32> = (0..batch * engine.image_len())
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let explain_points = options
            .methods
            .iter()
            .flat_map(|&m| options.top_ks.iter().map(move |&k| (Some(m), k)));
        for (method, top_k) in std::iter::once((None, 0)).chain(explain_points) {
            let call = |engine: &mut Engine| -> Result<()> {
                match method {
                    None => engine.predict(&images).map(drop),
                    Some(m) => engine
                        .explain_with(&images, &Target::TopK(top_k), m)
                        .map(drop),
                }
            };
            call(&mut engine)?;
            let start = Instant::now();
            for _ in 0..options.iters {
                call(&mut engine)?;
            }
            let per_image = start.elapsed().as_secs_f64() / (options.iters * batch) as f64;
            // The engine allocates its buffers once, on first use; nothing else of ours is live.
            let gpu_mem_mib = gpu
                .device
                .generate_allocator_report()
                .map(|r| r.total_allocated_bytes as f64 / (1u64 << 20) as f64);
            let row = BenchRow {
                model: model.config.name.clone(),
                adapter: gpu.describe(),
                batch,
                mode: if top_k == 0 { "forward" } else { "explain" }.into(),
                method,
                precision: options.precision,
                top_k,
                ms_per_image: per_image * 1e3,
                images_per_s: 1.0 / per_image,
                iters: options.iters,
                gpu_mem_mib,
            };
            report(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}
