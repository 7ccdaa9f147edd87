//! The GPU engine against the f64 CPU reference (`agcam::reference`) on random models with
//! awkward shapes: non-square grids, token counts that are no multiple of any tile, head
//! widths that do not divide 64, widths that are no multiple of 4.

mod common;

use agcam::model::{Model, ModelConfig};
use agcam::{Engine, EngineOptions, KernelSet, Target};

fn odd_model(layer_scale: bool, dims: (usize, usize, usize), mlp: usize, seed: u64) -> Model {
    let mut cfg = ModelConfig::vit("odd", dims, 4, (12, 24), 11);
    cfg.mlp_hidden = mlp;
    cfg.layer_scale = layer_scale;
    Model::random(cfg, seed)
}

fn check(model: &Model, batch: usize, target: Target, max_batch: usize) {
    for kernels in [KernelSet::Cpu, KernelSet::Gpu] {
        check_with(model, batch, target.clone(), max_batch, kernels);
    }
}

fn check_with(model: &Model, batch: usize, target: Target, max_batch: usize, kernels: KernelSet) {
    let cfg = &model.config;
    let len = 3 * cfg.image_size.0 * cfg.image_size.1;
    let images = common::noise(batch * len, 7);
    for gpu in common::gpus() {
        let name = format!("{} {kernels:?}", gpu.describe());
        let options = EngineOptions {
            max_batch,
            kernels,
            ..Default::default()
        };
        let mut engine = Engine::with_options(gpu, model, &options).unwrap();
        let got = engine.explain(&images, &target).unwrap();
        assert_eq!(got.len(), batch);
        for (b, exp) in got.iter().enumerate() {
            let classes: Vec<usize> = exp.maps.iter().map(|m| m.class).collect();
            let reference =
                agcam::reference::explain(cfg, &model.weights, &images[b * len..][..len], &classes);
            let (err, scale) = common::max_error(&exp.logits, &reference.logits);
            assert!(
                err <= 1e-4 * scale,
                "{name}: image {b} logits: error {err:e}, max {scale:e}"
            );
            let mut order: Vec<usize> = (0..reference.logits.len()).collect();
            order.sort_by(|&x, &y| reference.logits[y].total_cmp(&reference.logits[x]));
            match &target {
                Target::Predicted => assert_eq!(classes, [order[0]], "{name}: image {b}"),
                Target::TopK(k) => assert_eq!(classes, order[..*k], "{name}: image {b}"),
                Target::Class(c) => assert_eq!(classes, [*c]),
                Target::PerImage(cs) => assert_eq!(classes, [cs[b]]),
            }
            for (m, r) in exp.maps.iter().zip(&reference.maps) {
                let (err, scale) = common::max_error(&m.map, r);
                assert!(scale > 0.0, "{name}: map of class {} is all zero", m.class);
                assert!(
                    err <= 1e-4 * scale,
                    "{name}: image {b} class {}: map error {err:e}, max {scale:e}",
                    m.class
                );
            }
        }
    }
}

#[test]
fn layer_scale_head_width_12_top3() {
    // D = 36, H = 3 (d = 12), F = 90, grid 3×6, N = 19.
    check(&odd_model(true, (36, 3, 3), 90, 1), 3, Target::TopK(3), 8);
}

#[test]
fn width_not_multiple_of_4_uses_scalar_gemm() {
    // D = 30, H = 5 (d = 6), F = 62.
    check(
        &odd_model(false, (30, 2, 5), 62, 2),
        2,
        Target::Predicted,
        8,
    );
}

#[test]
fn chunks_smaller_than_the_batch() {
    // 5 images through chunks of 2: the last chunk is partial.
    check(
        &odd_model(true, (36, 2, 3), 90, 3),
        5,
        Target::PerImage(vec![0, 3, 10, 2, 7]),
        2,
    );
}

#[test]
fn named_class() {
    check(&odd_model(false, (32, 2, 4), 64, 4), 2, Target::Class(5), 8);
}

#[test]
fn baselines_match_reference() {
    use agcam::Method;
    let model = odd_model(true, (36, 3, 3), 90, 5);
    let cfg = &model.config;
    let len = 3 * cfg.image_size.0 * cfg.image_size.1;
    let images = common::noise(3 * len, 9);
    for gpu in common::gpus() {
        let name = gpu.describe();
        let mut engine = Engine::new(gpu, &model).unwrap();
        for method in [Method::AttentionRollout, Method::RawAttention] {
            let got = engine
                .explain_with(&images, &Target::TopK(2), method)
                .unwrap();
            for (b, exp) in got.iter().enumerate() {
                let r =
                    agcam::reference::explain(cfg, &model.weights, &images[b * len..][..len], &[]);
                let want = match method {
                    Method::AttentionRollout => &r.rollout,
                    _ => &r.raw_attention,
                };
                assert_eq!(exp.maps.len(), 2);
                assert_eq!(exp.maps[0].map, exp.maps[1].map, "class-agnostic");
                let (err, scale) = common::max_error(&exp.maps[0].map, want);
                assert!(
                    err <= 1e-5 * scale,
                    "{name} {method:?} image {b}: {err:e} of {scale:e}"
                );
            }
        }
        // The rollout buffers must not disturb AGCAM afterwards.
        let after = engine.explain(&images, &Target::Predicted).unwrap();
        let b0 = agcam::reference::explain(
            cfg,
            &model.weights,
            &images[..len],
            &[after[0].maps[0].class],
        );
        let (err, scale) = common::max_error(&after[0].maps[0].map, &b0.maps[0]);
        assert!(
            err <= 1e-4 * scale,
            "{name}: agcam after baselines: {err:e}"
        );
    }
}

#[test]
fn average_pooling_predicts_and_refuses_agcam() {
    use agcam::model::Pooling;
    use agcam::Method;
    let mut model = odd_model(false, (32, 2, 4), 64, 6);
    model.config.pooling = Pooling::Avg;
    let cfg = &model.config;
    let len = 3 * cfg.image_size.0 * cfg.image_size.1;
    let images = common::noise(2 * len, 3);
    // Both kernel sets: the GPU set's forward runs every block through the fused attention.
    for (gpu, kernels) in common::gpus()
        .into_iter()
        .flat_map(|g| [KernelSet::Cpu, KernelSet::Gpu].map(|k| (g.clone(), k)))
    {
        let name = format!("{} {kernels:?}", gpu.describe());
        let options = EngineOptions {
            kernels,
            ..Default::default()
        };
        let mut engine = Engine::with_options(gpu, &model, &options).unwrap();
        let logits = engine.predict(&images).unwrap();
        for (b, l) in logits.iter().enumerate() {
            let r = agcam::reference::explain(cfg, &model.weights, &images[b * len..][..len], &[]);
            let (err, scale) = common::max_error(l, &r.logits);
            assert!(
                err <= 1e-4 * scale,
                "{name}: image {b}: logits error {err:e}"
            );
        }
        let err = engine.explain(&images, &Target::Predicted).unwrap_err();
        assert!(err.to_string().contains("average-pooled"), "{err}");
        let rollout = engine
            .explain_with(&images, &Target::Predicted, Method::AttentionRollout)
            .unwrap();
        assert_eq!(rollout.len(), 2);
    }
}

#[test]
fn f16_weights_stay_close_to_f32() {
    use agcam::Precision;
    // Layer scale, widths that are and are not multiples of 4 (vec4 and scalar GEMM paths), and
    // a model whose products reach 128 rows and columns (the GPU set's gemm_tiled128, which
    // sums f16 products in f16 over 8 terms before adding them to f32 sums).
    let mut wide = ModelConfig::vit("wide", (128, 2, 2), 4, (32, 32), 11);
    wide.layer_scale = true;
    for (model, sets) in [
        (Model::random(wide, 9), [KernelSet::Cpu, KernelSet::Gpu]),
        (
            odd_model(true, (36, 3, 3), 90, 7),
            [KernelSet::Cpu, KernelSet::Gpu],
        ),
        (
            odd_model(false, (30, 2, 5), 62, 8),
            [KernelSet::Cpu, KernelSet::Gpu],
        ),
    ] {
        let cfg = &model.config;
        let len = 3 * cfg.image_size.0 * cfg.image_size.1;
        let images = common::noise(2 * len, 11);
        for gpu in common::gpus() {
            for kernels in sets {
                let run = |precision| {
                    let options = EngineOptions {
                        kernels,
                        precision,
                        ..Default::default()
                    };
                    let mut engine = Engine::with_options(gpu.clone(), &model, &options).unwrap();
                    engine.explain(&images, &Target::TopK(2)).unwrap()
                };
                let (full, half) = (run(Precision::F32), run(Precision::F16));
                for (f, h) in full.iter().zip(&half) {
                    for (mf, mh) in f.maps.iter().zip(&h.maps) {
                        assert_eq!(mf.class, mh.class);
                        let want: Vec<f64> = mf.map.iter().map(|&v| v as f64).collect();
                        let (err, scale) = common::max_error(&mh.map, &want);
                        assert!(
                            err <= 1e-2 * scale,
                            "{} {kernels:?}: f16 map error {err:e} of {scale:e}",
                            gpu.describe()
                        );
                    }
                }
            }
        }
    }
}
