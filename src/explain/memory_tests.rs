//! The attention scratch follows the recorded forward: the fused attention (GPU kernel set)
//! leaves no [N, N] scores to allocate, a method that keeps attention matrices grows them on
//! demand, and memory planning counts what is allocated.

use super::{Engine, EngineOptions, Explanation, Method, Plan, Target};
use crate::gpu::testing::gpus;
use crate::gpu::{Gpu, MIN_STORAGE_BYTES};
use crate::kernels::KernelSet;
use crate::model::{Model, ModelConfig, Pooling};
use crate::vit::{activation_bytes_per_image, AttnScratch};

/// 31 tokens (score rows padded to 32), three heads of 16: the fused kernel runs.
fn model(pooling: Pooling) -> Model {
    let mut cfg = ModelConfig::vit("scratch", (48, 3, 3), 4, (20, 24), 7);
    cfg.pooling = pooling;
    Model::random(cfg, 5)
}

fn images(engine: &Engine, count: usize) -> Vec<f32> {
    (0..count * engine.image_len())
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn engine(gpu: &Gpu, model: &Model, kernels: KernelSet, max_gpu_mem: u64) -> Engine {
    let options = EngineOptions {
        kernels,
        max_gpu_mem,
        ..Default::default()
    };
    Engine::with_options(gpu.clone(), model, &options).unwrap()
}

/// The attention scratch the engine's buffers hold, per image.
fn scratch(engine: &Engine) -> AttnScratch {
    engine.workspace.as_ref().expect("ran").acts.scratch()
}

/// The scratch of a forward whose every block computes all query rows unfused, and of one
/// that computes only the class token's row in the last block (the rest fused).
fn full_and_class_rows(cfg: &ModelConfig) -> (AttnScratch, AttnScratch) {
    let (h, n, d) = (cfg.num_heads, cfg.tokens(), cfg.head_dim());
    let padded = n.next_multiple_of(4);
    let v_t = h * d * padded;
    (
        AttnScratch {
            scores: h * n * padded,
            v_t,
        },
        AttnScratch {
            scores: h * padded,
            v_t,
        },
    )
}

fn assert_same(what: &str, got: &[Explanation], want: &[Explanation]) {
    assert_eq!(got.len(), want.len(), "{what}: images");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.logits, w.logits, "{what}: logits of image {i}");
        assert_eq!(g.maps.len(), w.maps.len(), "{what}: maps of image {i}");
        for (gm, wm) in g.maps.iter().zip(&w.maps) {
            assert_eq!(gm.class, wm.class, "{what}: class of image {i}");
            let scale = wm.map.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = gm
                .map
                .iter()
                .zip(&wm.map)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-6 * scale,
                "{what}: image {i} class {} differs by {err} (max |map| {scale})",
                wm.class
            );
        }
    }
}

/// One engine on the GPU kernel set explains AGCAM (class-token scores only), then attention
/// rollout (every attention matrix: the scores grow), then AGCAM again, with the maps of fresh
/// engines; under a budget that holds three images' AGCAM buffers, rollout's chunks shrink.
#[test]
fn agcam_then_rollout_then_agcam_matches_fresh_engines() {
    let model = model(Pooling::Token);
    let cfg = &model.config;
    let (full, class_rows) = full_and_class_rows(cfg);
    let top2 = Target::TopK(2);
    for gpu in gpus() {
        let roomy = 2 << 30;
        let mut fresh = engine(gpu, &model, KernelSet::Gpu, roomy);
        let input = images(&fresh, 5);
        let want_agcam = fresh.explain_with(&input, &top2, Method::Agcam).unwrap();
        let mut fresh = engine(gpu, &model, KernelSet::Gpu, roomy);
        let want_rollout = fresh
            .explain_with(&input, &top2, Method::AttentionRollout)
            .unwrap();
        let want_logits = fresh.predict(&input).unwrap();

        let plain = Plan::of(gpu, &fresh.kernels, cfg, None, 5);
        let tight = 3 * plain.bytes_per_image(cfg) as u64;
        for budget in [roomy, tight] {
            let mut reused = engine(gpu, &model, KernelSet::Gpu, budget);
            let agcam_chunks = reused.capacity();
            let what = |step: &str| format!("{} budget {budget}: {step}", gpu.describe());
            let got = reused.explain_with(&input, &top2, Method::Agcam).unwrap();
            assert_same(&what("first agcam"), &got, &want_agcam);
            assert_eq!(scratch(&reused), class_rows, "{}", what("first agcam"));

            let got = reused
                .explain_with(&input, &top2, Method::AttentionRollout)
                .unwrap();
            assert_same(&what("rollout"), &got, &want_rollout);
            assert_eq!(scratch(&reused), full, "{}", what("rollout"));
            if budget == tight {
                assert_eq!(agcam_chunks, 3, "{}", what("agcam chunks"));
                assert!(
                    reused.capacity() < agcam_chunks,
                    "{}: rollout chunks {}",
                    what("rollout"),
                    reused.capacity()
                );
            }

            let got = reused.explain_with(&input, &top2, Method::Agcam).unwrap();
            assert_same(&what("second agcam"), &got, &want_agcam);
            assert_eq!(
                reused.predict(&input).unwrap(),
                want_logits,
                "{}",
                what("logits")
            );
        }
    }
}

/// On the GPU kernel set the forward allocates, of the attention scratch, only the last
/// block's class-token rows and Vᵀ (class-token pooling) or nothing (average pooling), the CPU
/// kernel set every score row and Vᵀ: the allocations differ by exactly that, the plan never
/// counts less than what is allocated, and a budget that holds ten images on the CPU kernel
/// set holds more on the GPU one.
#[test]
fn fused_forward_allocates_no_attention_matrix() {
    for pooling in [Pooling::Token, Pooling::Avg] {
        let model = model(pooling);
        let cfg = &model.config;
        let (full, class_rows) = full_and_class_rows(cfg);
        let fused = match pooling {
            Pooling::Token => class_rows,
            Pooling::Avg => AttnScratch::default(),
        };
        for gpu in gpus() {
            let what = format!("{} {pooling:?}", gpu.describe());
            let mut allocated = Vec::new();
            for (kernels, want) in [(KernelSet::Gpu, fused), (KernelSet::Cpu, full)] {
                let mut e = engine(gpu, &model, kernels, 2 << 30);
                let input = images(&e, 4);
                e.predict(&input).unwrap();
                if pooling == Pooling::Token {
                    e.explain(&input, &Target::TopK(2)).unwrap();
                }
                let ws = e.workspace.as_ref().expect("ran");
                assert_eq!(ws.acts.scratch(), want, "{what} {kernels:?}");
                let bytes: u64 = ws.acts.buffers().into_iter().map(wgpu::Buffer::size).sum();
                let planned = (e.capacity() * activation_bytes_per_image(cfg, want)) as u64;
                assert!(
                    planned >= bytes,
                    "{what} {kernels:?}: planned {planned} bytes, allocated {bytes}"
                );
                allocated.push((e.capacity(), bytes));
            }
            let [(images, fused_bytes), (unfused_images, unfused_bytes)] = allocated[..] else {
                unreachable!()
            };
            assert_eq!(images, unfused_images, "{what}");
            let buffer = |elements: usize| (4 * images * elements).max(MIN_STORAGE_BYTES as usize);
            let saved =
                buffer(full.scores) + buffer(full.v_t) - buffer(fused.scores) - buffer(fused.v_t);
            assert_eq!(unfused_bytes - fused_bytes, saved as u64, "{what}");

            // The scores are a tenth of this small model's activations.
            let ten = 10 * activation_bytes_per_image(cfg, full) as u64;
            let on = |kernels| engine(gpu, &model, kernels, ten).capacity();
            assert_eq!(on(KernelSet::Cpu), 10, "{what}");
            assert!(on(KernelSet::Gpu) > 10, "{what}: {}", on(KernelSet::Gpu));
        }
    }
}

/// Where the [N, N] scores are the largest buffer, rollout's chunks shrink so that they stay
/// under the adapter's binding limit (here lowered to two images' scores, where AGCAM fits
/// more), and the maps match an engine with room.
#[test]
fn rollout_chunks_respect_the_binding_limit() {
    // 65 tokens of width 16 in four heads: the scores (4 × 65 × 68 per image) outweigh every
    // token matrix.
    let model = Model::random(
        ModelConfig::vit("many-tokens", (16, 2, 4), 2, (16, 16), 5),
        9,
    );
    let cfg = &model.config;
    let (full, _) = full_and_class_rows(cfg);
    let top2 = Target::TopK(2);
    for gpu in gpus() {
        let mut roomy = engine(gpu, &model, KernelSet::Gpu, 2 << 30);
        let input = images(&roomy, 7);
        let want_rollout = roomy
            .explain_with(&input, &top2, Method::AttentionRollout)
            .unwrap();
        let want_agcam = roomy.explain_with(&input, &top2, Method::Agcam).unwrap();

        let mut limited = gpu.clone();
        let limit = 2 * 4 * full.scores as u64;
        limited.limits.max_storage_buffer_binding_size = limit;
        let mut e = engine(&limited, &model, KernelSet::Gpu, 2 << 30);
        let what = gpu.describe();
        assert!(e.capacity() > 2, "{what}: AGCAM chunks {}", e.capacity());
        for (method, want) in [
            (Method::Agcam, &want_agcam),
            (Method::AttentionRollout, &want_rollout),
            (Method::Agcam, &want_agcam),
        ] {
            let got = e.explain_with(&input, &top2, method).unwrap();
            assert_same(&format!("{what} {method:?}"), &got, want);
            let ws = e.workspace.as_ref().expect("ran");
            let rollout = ws.rollout.iter().flat_map(|r| &r.mixed);
            let largest = ws.acts.buffers().into_iter().chain(rollout);
            let largest = largest.map(wgpu::Buffer::size).max().unwrap();
            assert!(
                largest <= limit,
                "{what} {method:?}: a {largest}-byte buffer over the {limit}-byte limit"
            );
        }
        assert_eq!(e.capacity(), 2, "{what}: rollout chunks");
    }
}

/// The backward chain's buffers grow with the classes explained per image: under a budget that
/// holds three images' forward, explaining every class of this model shrinks the chunks, and
/// the maps match an engine with room, for AGCAM and Grad-CAM. (Before, the plan did not count
/// these buffers: chunks kept their size and went over the budget, or, where the chain's
/// buffers alone passed it, the engine refused instead of shrinking them.)
#[test]
fn many_classes_shrink_the_chunks() {
    let model = model(Pooling::Token);
    let cfg = &model.config;
    let every_class = Target::TopK(cfg.num_classes);
    for gpu in gpus() {
        for method in [Method::Agcam, Method::GradCam] {
            let what = format!("{} {method:?}", gpu.describe());
            let mut roomy = engine(gpu, &model, KernelSet::Gpu, 2 << 30);
            let input = images(&roomy, 5);
            let want = roomy.explain_with(&input, &every_class, method).unwrap();

            let plain = Plan::of(gpu, &roomy.kernels, cfg, None, 5);
            let tight = 3 * plain.bytes_per_image(cfg) as u64;
            let mut tight_engine = engine(gpu, &model, KernelSet::Gpu, tight);
            assert_eq!(tight_engine.capacity(), 3, "{what}: forward chunks");
            let got = tight_engine
                .explain_with(&input, &every_class, method)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_same(&what, &got, &want);
            assert!(
                tight_engine.capacity() < 3,
                "{what}: chunks of {} images",
                tight_engine.capacity()
            );
        }
    }
}
