//! The public engine: a model on a GPU that turns batches of normalised images into logits and
//! AGCAM maps, in one compute pass and one readback per chunk of images.

pub(crate) mod agcam;
mod baselines;
mod full_backward;
mod gradcam;
mod plan;
mod profile;
mod request;
mod transformer_attribution;

use std::collections::HashMap;

use agcam::{record_backward, record_topk, Backward, Chain, ClassChoice};
use baselines::{record_raw_attention, record_rollout, RolloutBuffers};
use full_backward::{record_generic_attention, FullBackward};
use gradcam::{record_grad_cam, record_grad_cam_full};
use plan::{Budget, Plan};
pub use profile::{KernelTiming, Profile};
pub use request::{check_request, Method, Target};
use transformer_attribution::{record_transformer_attribution, LrpBuffers};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::{encode, Dispatch, KernelSet, Kernels, Precision, Trials};
use crate::model::{Model, ModelConfig};
use crate::vit::{record_forward, Activations, AttnScratch, GpuWeights};

/// One explained class of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMap {
    /// Class index.
    pub class: usize,
    /// The raw map over the patch grid, row-major `[gh, gw]`: for AGCAM exactly `grid` of
    /// method.md §2, before any upsampling or normalisation.
    pub map: Vec<f32>,
}

/// Logits and maps of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// Raw logits, one per class.
    pub logits: Vec<f32>,
    /// The explained classes, in the order the target asked for (best first for top-k).
    pub maps: Vec<ClassMap>,
}

/// One class's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScore {
    /// Class index.
    pub class: usize,
    /// Raw logit.
    pub logit: f32,
    /// Softmax probability.
    pub probability: f32,
}

/// Softmax probabilities of `logits`, computed in f64.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let exps: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// The `k` best classes of `logits`, highest first, lower index first among ties.
pub fn top_classes(logits: &[f32], k: usize) -> Vec<ClassScore> {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|c| ClassScore {
            class: c,
            logit: logits[c],
            probability: probs[c],
        })
        .collect()
}

impl Explanation {
    /// The predicted class: argmax of the logits (lowest index among ties).
    pub fn predicted(&self) -> usize {
        top_classes(&self.logits, 1)[0].class
    }

    /// The `k` best classes with logits and probabilities.
    pub fn top(&self, k: usize) -> Vec<ClassScore> {
        top_classes(&self.logits, k)
    }
}

/// Limits on how many images go to the GPU at once.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most images per chunk (the batch is split into chunks of at most this many).
    pub max_batch: usize,
    /// Most bytes of activations and gradients to allocate on the GPU (weights not included):
    /// chunks shrink to fit, also with the classes explained per image.
    pub max_gpu_mem: u64,
    /// Which shape of kernels runs (default: chosen by adapter class).
    pub kernels: KernelSet,
    /// How the weight matrices are stored on the GPU.
    pub precision: Precision,
}

impl EngineOptions {
    /// Largest activation budget [`EngineOptions::gpu_mem_from_mib`] takes, in MiB: 16 TiB, far
    /// above any adapter, and far from overflowing when converted to bytes.
    pub const MAX_GPU_MEM_MIB: u64 = 1 << 24;

    /// `mib` MiB in bytes, for [`EngineOptions::max_gpu_mem`]: the one conversion the command
    /// line and the Python package share.
    ///
    /// # Errors
    /// [`Error::Invalid`] above [`EngineOptions::MAX_GPU_MEM_MIB`]. A budget too small for one
    /// image is refused later, by [`Engine::with_options`], which knows the model.
    pub fn gpu_mem_from_mib(mib: u64) -> Result<u64> {
        if mib > Self::MAX_GPU_MEM_MIB {
            return Err(Error::Invalid(format!(
                "a GPU memory budget of {mib} MiB is too large: at most {} MiB (16 TiB)",
                Self::MAX_GPU_MEM_MIB
            )));
        }
        Ok(mib << 20)
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_batch: 32,
            max_gpu_mem: 2 << 30,
            kernels: KernelSet::Auto,
            precision: Precision::F32,
        }
    }
}

/// Key of a recorded command sequence: images in the chunk, classes per image, class choice
/// (none for a forward pass only), method.
type RecordingKey = (usize, usize, Option<ClassChoice>, Method);

/// The dispatches of one chunk shape: the forward's, then the explanation's.
struct Recording {
    dispatches: Vec<Dispatch>,
    /// How many of `dispatches`, from the first, are the forward.
    forward: usize,
}

/// Buffers sized for the engine's capacity, and the dispatches recorded over them.
struct Workspace {
    acts: Activations,
    back: Option<Backward>,
    rollout: Option<RolloutBuffers>,
    full: Option<FullBackward>,
    lrp: Option<LrpBuffers>,
    recordings: HashMap<RecordingKey, Recording>,
    logits_readback: wgpu::Buffer,
    classes_readback: Option<wgpu::Buffer>,
    maps_readback: Option<wgpu::Buffer>,
}

impl Workspace {
    /// What the buffers hold, sized for chunks of `images` (the engine's capacity: `fit`
    /// drops the workspace whenever that shrinks).
    fn plan(&self, images: usize) -> Plan {
        Plan {
            scratch: self.acts.scratch(),
            rollout: self.rollout.is_some(),
            full: self.full.as_ref().map(|f| (f.per_image, f.kept_from)),
            lrp: self.lrp.as_ref().map(|l| l.per_image),
            chain_rows: self.back.as_ref().map_or(0, |b| b.rows / images),
        }
    }
}

/// A model loaded on a GPU, ready to explain batches of images.
pub struct Engine {
    gpu: Gpu,
    config: ModelConfig,
    kernels: Kernels,
    weights: GpuWeights,
    capacity: usize,
    max_gpu_mem: u64,
    workspace: Option<Workspace>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("gpu", &self.gpu)
            .field("model", &self.config.name)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Engine {
    /// Uploads `model` to `gpu` with default options.
    pub fn new(gpu: Gpu, model: &Model) -> Result<Engine> {
        Self::with_options(gpu, model, &EngineOptions::default())
    }

    /// Uploads `model` to `gpu`; chunks are sized by `options` and the adapter's limits.
    pub fn with_options(gpu: Gpu, model: &Model, options: &EngineOptions) -> Result<Engine> {
        let cfg = &model.config;
        let trials = Trials::from_env()?;
        let kernels = Kernels::with_trials(&gpu, options.kernels, options.precision, trials);
        // Chunks are sized for the plain forward (predictions, AGCAM, Grad-CAM's closed form,
        // raw attention); a method that needs more lowers them when it is first asked for.
        let budget = Budget::new(&gpu, options.max_gpu_mem);
        let plain = Plan::of(&gpu, &kernels, cfg, None, options.max_batch);
        let capacity = options.max_batch.min(budget.images(cfg, plain));
        if capacity == 0 {
            return Err(budget.refusal(cfg, plain, "predictions", 0));
        }
        let weights = GpuWeights::upload(&gpu, cfg, &model.weights, options.precision);
        Ok(Engine {
            gpu,
            config: cfg.clone(),
            kernels,
            weights,
            capacity,
            max_gpu_mem: options.max_gpu_mem,
            workspace: None,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the engine runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Most images per GPU chunk, first sized for predictions and AGCAM. A method that keeps
    /// more lowers it, for the engine's lifetime, to what fits the memory budget and the
    /// adapter's binding limit with its buffers and those other methods left: the full
    /// backward's kept activations and gradients (generic attention, transformer attribution;
    /// Grad-CAM on average-pooled models), attention rollout's kept attention, and, on the GPU
    /// kernel set, whose fused attention writes no attention matrix otherwise, the [N, N]
    /// scores of every block that rollout reads.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Values per normalised input image: 3·H·W.
    pub fn image_len(&self) -> usize {
        3 * self.config.image_size.0 * self.config.image_size.1
    }

    /// Logits of a batch of normalised images `[B, 3, H, W]` (forward pass only).
    pub fn predict(&mut self, images: &[f32]) -> Result<Vec<Vec<f32>>> {
        let count = self.check_images(images)?;
        let mut out = Vec::with_capacity(count);
        for chunk in images.chunks(self.capacity * self.image_len()) {
            let (logits, _, _) = self.run_chunk(chunk, 0, None, &[])?;
            out.extend(logits);
        }
        Ok(out)
    }

    /// Logits and AGCAM maps of a batch of normalised images `[B, 3, H, W]`.
    pub fn explain(&mut self, images: &[f32], target: &Target) -> Result<Vec<Explanation>> {
        self.explain_with(images, target, Method::Agcam)
    }

    /// Logits and maps by `method` of a batch of normalised images `[B, 3, H, W]`. A
    /// class-agnostic method gives the same map for every explained class.
    pub fn explain_with(
        &mut self,
        images: &[f32],
        target: &Target,
        method: Method,
    ) -> Result<Vec<Explanation>> {
        let count = self.check_images(images)?;
        check_request(&self.config, target, method)?;
        if let Target::PerImage(classes) = target {
            if classes.len() != count {
                return Err(Error::Invalid(format!(
                    "{} target classes given for {count} images",
                    classes.len()
                )));
            }
        }
        let (per_image, choice) = match target {
            Target::Predicted => (1, ClassChoice::TopK),
            Target::TopK(k) => (*k, ClassChoice::TopK),
            Target::Class(_) | Target::PerImage(_) => (1, ClassChoice::Given),
        };
        self.fit(method, per_image)?;
        let mut out = Vec::with_capacity(count);
        for (i, chunk) in images.chunks(self.capacity * self.image_len()).enumerate() {
            let n = chunk.len() / self.image_len();
            let given: Vec<u32> = match target {
                Target::Class(class) => vec![*class as u32; n],
                Target::PerImage(classes) => classes[i * self.capacity..][..n]
                    .iter()
                    .map(|&c| c as u32)
                    .collect(),
                _ => Vec::new(),
            };
            let (logits, classes, maps) =
                self.run_chunk(chunk, per_image, Some((choice, method)), &given)?;
            let grid = self.config.tokens() - 1;
            for (b, logits) in logits.into_iter().enumerate() {
                let maps = (0..per_image)
                    .map(|s| {
                        let r = b * per_image + s;
                        let m = if method.is_class_specific() { r } else { b };
                        ClassMap {
                            class: classes[r] as usize,
                            map: maps[m * grid..(m + 1) * grid].to_vec(),
                        }
                    })
                    .collect();
                out.push(Explanation { logits, maps });
            }
        }
        Ok(out)
    }

    fn check_images(&self, images: &[f32]) -> Result<usize> {
        let len = self.image_len();
        if images.is_empty() {
            return Err(Error::Invalid("no images to process".into()));
        }
        if !images.len().is_multiple_of(len) {
            return Err(Error::Invalid(format!(
                "input holds {} values, not a whole number of {}×{} RGB images ({len} values each)",
                images.len(),
                self.config.image_size.0,
                self.config.image_size.1
            )));
        }
        Ok(images.len() / len)
    }

    /// Makes sure chunks explained by `method` for `per_image` classes fit the memory budget
    /// and the adapter's binding limit, together with the buffers the workspace holds for
    /// other methods. Where they do not, drops the workspace, and lowers the chunk size for the
    /// engine's lifetime to what `method` alone allows: the full backward's kept activations
    /// and gradients, rollout's kept attention, and the unfused attention's scores where the
    /// method keeps attention matrices.
    fn fit(&mut self, method: Method, per_image: usize) -> Result<()> {
        let cfg = &self.config;
        let explain = Some((method, per_image));
        let need = Plan::of(&self.gpu, &self.kernels, cfg, explain, self.capacity);
        let budget = Budget::new(&self.gpu, self.max_gpu_mem);
        let live = self
            .workspace
            .as_ref()
            .map_or(need, |ws| ws.plan(self.capacity).union(need));
        if budget.images(cfg, live) >= self.capacity {
            return Ok(());
        }
        let fit = budget.images(cfg, need);
        if fit == 0 {
            let plural = if per_image == 1 { "" } else { "es" };
            let what = format!("{} of {per_image} class{plural}", method.name());
            return Err(budget.refusal(cfg, need, &what, per_image));
        }
        // Buffers and recordings were sized for larger chunks or held other methods' buffers.
        self.workspace = None;
        self.capacity = self.capacity.min(fit);
        Ok(())
    }

    /// Allocates the full backward's buffers for `per_image` classes per image, keeping the
    /// activations of layers `kept_from..`, on first use, and with `lrp` transformer
    /// attribution's relevance buffers.
    fn prepare_full(&mut self, per_image: usize, kept_from: usize, lrp: bool) {
        let ws = self.workspace.as_mut().expect("prepared");
        if ws
            .full
            .as_ref()
            .is_none_or(|f| f.per_image < per_image || f.kept_from > kept_from)
        {
            // What the buffers held stays covered, as `fit` planned (Plan::union).
            let (per_image, kept_from) = ws.full.as_ref().map_or((per_image, kept_from), |f| {
                (f.per_image.max(per_image), f.kept_from.min(kept_from))
            });
            let shape = (self.capacity, per_image);
            ws.full = Some(FullBackward::new(&self.gpu, &self.config, shape, kept_from));
            ws.recordings.clear();
        }
        if lrp && ws.lrp.as_ref().is_none_or(|l| l.per_image < per_image) {
            let (gpu, cfg) = (&self.gpu, &self.config);
            ws.lrp = Some(LrpBuffers::new(gpu, cfg, self.capacity, per_image));
            ws.recordings.clear();
        }
    }

    /// Makes sure the workspace exists and its backward buffers hold `rows` gradient rows.
    fn prepare(&mut self, rows: usize, scratch: AttnScratch) -> &mut Workspace {
        let cfg = &self.config;
        let gpu = &self.gpu;
        let ws = self.workspace.get_or_insert_with(|| Workspace {
            acts: Activations::new(gpu, cfg, self.capacity, scratch),
            back: None,
            rollout: None,
            full: None,
            lrp: None,
            recordings: HashMap::new(),
            logits_readback: gpu.readback("logits", 4 * (self.capacity * cfg.num_classes) as u64),
            classes_readback: None,
            maps_readback: None,
        });
        if ws.acts.grow_scratch(gpu, scratch) {
            // Recordings bind the old buffers.
            ws.recordings.clear();
        }
        let have = ws.back.as_ref().map_or(0, |b| b.rows);
        if rows > have {
            // `fit` sized the chunks so that these fit the budget (`Plan::chain_rows`).
            ws.back = Some(Backward::new(gpu, cfg, rows));
            ws.classes_readback = Some(gpu.readback("classes", 4 * rows as u64));
            ws.maps_readback = Some(gpu.readback("maps", 4 * (rows * (cfg.tokens() - 1)) as u64));
            // Recordings bind the old buffers.
            ws.recordings.clear();
        }
        ws
    }

    /// Records (once per shape) the dispatches of a chunk of `batch` images: the forward pass,
    /// then, when `explain` is given, the class choice and the method's map.
    fn recording(
        &mut self,
        batch: usize,
        per_image: usize,
        explain: Option<(ClassChoice, Method)>,
    ) -> Result<RecordingKey> {
        let rows = if explain.is_some() {
            self.capacity * per_image
        } else {
            0
        };
        let (gpu, k, cfg) = (&self.gpu, &self.kernels, &self.config);
        let plan = Plan::of(
            gpu,
            k,
            cfg,
            explain.map(|(_, m)| (m, per_image)),
            self.capacity,
        );
        self.prepare(rows, plan.scratch);
        let method = explain.map_or(Method::Agcam, |(_, m)| m);
        if plan.rollout {
            self.prepare_rollout();
        }
        let full_from = plan.full.map(|(_, kept_from)| kept_from);
        if let Some(kept_from) = full_from {
            self.prepare_full(
                per_image,
                kept_from,
                method == Method::TransformerAttribution,
            );
        }
        let ws = self.workspace.as_mut().expect("prepared");
        let key = (batch, per_image, explain.map(|(c, _)| c), method);
        if ws.recordings.contains_key(&key) {
            return Ok(key);
        }
        let (gpu, k, cfg, w) = (&self.gpu, &self.kernels, &self.config, &self.weights);
        let mixed = match (method, &ws.rollout) {
            (Method::AttentionRollout, Some(r)) => Some(r.mixed.as_slice()),
            _ => None,
        };
        // A forward keeps the layers the method's full backward reads, however many the
        // buffers hold (generic attention's buffers serve Grad-CAM too).
        let keep_full = match (full_from, &ws.full) {
            (Some(from), Some(full)) => Some(&full.keep[from - full.kept_from..]),
            _ => None,
        };
        let mut dispatches = record_forward(gpu, k, cfg, w, &ws.acts, batch, mixed, keep_full);
        let forward = dispatches.len();
        if let (Some((choice, method)), Some(back)) = (explain, &ws.back) {
            let tail = match method {
                Method::Agcam | Method::GradCam => {
                    let chain = Chain {
                        gpu,
                        k,
                        cfg,
                        w,
                        acts: &ws.acts,
                        back,
                        batch,
                        per_image,
                        method,
                    };
                    match (method, &ws.full) {
                        (Method::Agcam, _) => record_backward(&chain, choice),
                        (_, Some(full)) if full_from.is_some() => {
                            record_grad_cam_full(&chain, full, choice)
                        }
                        _ => record_grad_cam(&chain, choice),
                    }
                }
                Method::GenericAttention => {
                    let full = ws.full.as_ref().expect("prepared");
                    let shape = (batch, per_image);
                    let bufs = (back, full);
                    record_generic_attention(gpu, k, cfg, w, &ws.acts, bufs, shape, choice, None)
                }
                Method::TransformerAttribution => {
                    let full = ws.full.as_ref().expect("prepared");
                    let lrp = ws.lrp.as_ref().expect("prepared");
                    let model = (cfg, w, &ws.acts);
                    let bufs = (back, full, lrp);
                    let shape = (batch, per_image);
                    record_transformer_attribution(gpu, k, model, bufs, shape, choice, 0)
                }
                Method::RawAttention | Method::AttentionRollout => {
                    let mut tail = Vec::new();
                    if choice == ClassChoice::TopK {
                        tail.push(record_topk(gpu, k, cfg, &ws.acts, back, batch, per_image));
                    }
                    tail.extend(match &ws.rollout {
                        Some(r) if method == Method::AttentionRollout => {
                            record_rollout(gpu, k, cfg, r, &back.maps, batch)
                        }
                        _ => record_raw_attention(gpu, k, cfg, &ws.acts, &back.maps, batch),
                    });
                    tail
                }
            };
            dispatches.extend(tail);
        }
        ws.recordings.insert(
            key,
            Recording {
                dispatches,
                forward,
            },
        );
        Ok(key)
    }

    /// Allocates the rollout buffers on first use (`fit` counted them).
    fn prepare_rollout(&mut self) {
        let ws = self.workspace.as_mut().expect("prepared");
        if ws.rollout.is_none() {
            ws.rollout = Some(RolloutBuffers::new(&self.gpu, &self.config, self.capacity));
        }
    }

    /// Runs one chunk: upload, one compute pass, copies, one submit, readback.
    fn run_chunk(
        &mut self,
        images: &[f32],
        per_image: usize,
        explain: Option<(ClassChoice, Method)>,
        given: &[u32],
    ) -> Result<ChunkResult> {
        let batch = images.len() / self.image_len();
        let key = self.recording(batch, per_image, explain)?;
        let ws = self.workspace.as_ref().expect("prepared");
        let choice = explain.map(|(c, _)| c);
        self.upload(ws, images, choice, given);
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("agcam"),
                timestamp_writes: None,
            });
            encode(&mut pass, &ws.recordings[&key].dispatches);
        }
        self.finish(ws, enc, batch, per_image, explain.map(|(_, m)| m))
    }

    fn upload(&self, ws: &Workspace, images: &[f32], choice: Option<ClassChoice>, given: &[u32]) {
        let queue = &self.gpu.queue;
        queue.write_buffer(&ws.acts.images, 0, bytemuck::cast_slice(images));
        if choice == Some(ClassChoice::Given) {
            let back = ws.back.as_ref().expect("prepared");
            queue.write_buffer(&back.classes, 0, bytemuck::cast_slice(given));
        }
    }

    /// Copies the results to the readback buffers, submits `enc` and reads them. Maps are
    /// one per gradient row for class-specific methods, one per image otherwise.
    fn finish(
        &self,
        ws: &Workspace,
        mut enc: wgpu::CommandEncoder,
        batch: usize,
        per_image: usize,
        method: Option<Method>,
    ) -> Result<ChunkResult> {
        let rows = batch * per_image;
        let map_rows = match method {
            Some(m) if !m.is_class_specific() => batch,
            _ => rows,
        };
        let c = self.config.num_classes;
        let grid = self.config.tokens() - 1;
        let logits_bytes = 4 * (batch * c) as u64;
        enc.copy_buffer_to_buffer(&ws.acts.logits, 0, &ws.logits_readback, 0, logits_bytes);
        if let (Some(back), Some(cr), Some(mr), true) = (
            &ws.back,
            &ws.classes_readback,
            &ws.maps_readback,
            method.is_some(),
        ) {
            enc.copy_buffer_to_buffer(&back.classes, 0, cr, 0, 4 * rows as u64);
            enc.copy_buffer_to_buffer(&back.maps, 0, mr, 0, 4 * (map_rows * grid) as u64);
        }
        self.gpu.queue.submit([enc.finish()]);
        let flat: Vec<f32> = self.gpu.read(&ws.logits_readback, batch * c)?;
        let logits = flat.chunks(c).map(<[f32]>::to_vec).collect();
        if method.is_none() {
            return Ok((logits, Vec::new(), Vec::new()));
        }
        let classes = self
            .gpu
            .read(ws.classes_readback.as_ref().expect("prepared"), rows)?;
        let maps = self.gpu.read(
            ws.maps_readback.as_ref().expect("prepared"),
            map_rows * grid,
        )?;
        Ok((logits, classes, maps))
    }
}

/// Logits per image, classes per gradient row, maps per gradient row (flat).
type ChunkResult = (Vec<Vec<f32>>, Vec<u32>, Vec<f32>);

#[cfg(test)]
mod memory_tests;

#[cfg(test)]
mod tests {
    use super::EngineOptions;

    #[test]
    fn gpu_mem_from_mib_converts_and_bounds() {
        assert_eq!(EngineOptions::gpu_mem_from_mib(0).unwrap(), 0);
        assert_eq!(EngineOptions::gpu_mem_from_mib(2048).unwrap(), 2 << 30);
        let max = EngineOptions::MAX_GPU_MEM_MIB;
        assert_eq!(EngineOptions::gpu_mem_from_mib(max).unwrap(), max << 20);
        for too_large in [max + 1, u64::MAX] {
            let e = EngineOptions::gpu_mem_from_mib(too_large).unwrap_err();
            assert!(e.to_string().contains("too large"), "{e}");
        }
    }
}
