//! Per-kernel timing of one explanation chunk (`agcam profile`).

use super::agcam::ClassChoice;
use super::{check_request, Engine, Method, Target};
use crate::error::{Error, Result};

impl Engine {
    /// Times every kernel of one AGCAM explanation of `images` (at most one chunk) for the
    /// `top_k` best classes: with GPU timestamps where the adapter has them, else by wall clock
    /// around a submit and a wait per kernel (which includes submission overhead).
    pub fn profile(&mut self, images: &[f32], top_k: usize) -> Result<Profile> {
        self.profile_with(images, top_k, Method::Agcam)
    }

    /// [`Engine::profile`] of an explanation by `method`.
    pub fn profile_with(
        &mut self,
        images: &[f32],
        top_k: usize,
        method: Method,
    ) -> Result<Profile> {
        let count = self.check_images(images)?;
        check_request(&self.config, &Target::TopK(top_k), method)?;
        self.fit(method, top_k)?;
        if count > self.capacity {
            return Err(Error::Invalid(format!(
                "profile runs one chunk: at most {} images, not {count}",
                self.capacity
            )));
        }
        let key = self.recording(count, top_k, Some((ClassChoice::TopK, method)))?;
        let ws = self.workspace.as_ref().expect("prepared");
        self.upload(ws, images, Some(ClassChoice::TopK), &[]);
        let recording = &ws.recordings[&key];
        let dispatches = &recording.dispatches;
        let timestamps = self.gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY);
        let ms: Vec<f64> = if timestamps {
            let queries = 2 * dispatches.len() as u32;
            let set = self.gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: queries,
            });
            let resolved = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile timestamps"),
                size: 8 * queries as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let readback = self.gpu.readback("profile timestamps", 8 * queries as u64);
            let mut enc = self.gpu.device.create_command_encoder(&Default::default());
            for (i, d) in dispatches.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&d.name),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                d.encode(&mut pass);
            }
            enc.resolve_query_set(&set, 0..queries, &resolved, 0);
            enc.copy_buffer_to_buffer(&resolved, 0, &readback, 0, 8 * queries as u64);
            self.gpu.queue.submit([enc.finish()]);
            let ticks: Vec<u64> = self.gpu.read(&readback, queries as usize)?;
            let period = self.gpu.queue.get_timestamp_period() as f64;
            ticks
                .chunks(2)
                .map(|t| t[1].saturating_sub(t[0]) as f64 * period / 1e6)
                .collect()
        } else {
            let mut out = Vec::with_capacity(dispatches.len());
            for d in dispatches {
                let start = std::time::Instant::now();
                let mut enc = self.gpu.device.create_command_encoder(&Default::default());
                d.encode(&mut enc.begin_compute_pass(&Default::default()));
                self.gpu.queue.submit([enc.finish()]);
                self.gpu.wait()?;
                out.push(start.elapsed().as_secs_f64() * 1e3);
            }
            out
        };
        let kernels = dispatches
            .iter()
            .zip(ms)
            .map(|(d, ms)| KernelTiming {
                name: d.name.clone(),
                kernel: d.kernel.clone(),
                ms,
                gflop_per_s: d.flops as f64 / (ms * 1e6),
                gb_per_s: d.bytes as f64 / (ms * 1e6),
            })
            .collect();
        Ok(Profile {
            adapter: self.gpu.describe(),
            method,
            batch: count,
            top_k,
            clock: if timestamps {
                "gpu-timestamps"
            } else {
                "wall-clock"
            }
            .into(),
            forward_launches: recording.forward,
            kernels,
        })
    }
}

/// GPU time of one kernel launch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelTiming {
    /// Place in the model, e.g. `blocks.3.mlp.fc1` or `agcam.blocks.3.map`.
    pub name: String,
    /// Shader entry point.
    pub kernel: String,
    /// Milliseconds.
    pub ms: f64,
    /// Useful arithmetic throughput.
    pub gflop_per_s: f64,
    /// Minimum memory traffic over time.
    pub gb_per_s: f64,
}

/// Per-kernel timings of one explanation chunk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Profile {
    /// The adapter measured.
    pub adapter: String,
    /// The explanation method profiled.
    pub method: Method,
    /// Images in the chunk.
    pub batch: usize,
    /// Classes explained per image.
    pub top_k: usize,
    /// `gpu-timestamps` or `wall-clock`.
    pub clock: String,
    /// Every launch in execution order.
    pub kernels: Vec<KernelTiming>,
    /// How many of `kernels`, from the first, are the forward pass; the rest explain.
    pub forward_launches: usize,
}

impl Profile {
    /// Sum of all kernel times in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.kernels.iter().map(|k| k.ms).sum()
    }

    /// The forward's launches.
    pub fn forward(&self) -> &[KernelTiming] {
        &self.kernels[..self.forward_launches]
    }

    /// The explanation's launches, after the forward (class choice, backward, maps).
    pub fn explanation(&self) -> &[KernelTiming] {
        &self.kernels[self.forward_launches..]
    }
}
