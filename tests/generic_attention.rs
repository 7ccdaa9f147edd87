//! Generic attention (method.md §6.1) against the float64 PyTorch reference of
//! tools/method_references.py on the golden fixtures (`generic_attention.safetensors`, written by
//! tools/make_method_fixtures.py): every class-token fixture, so layer scale, HF naming and
//! eps, no qkv bias, bf16 and f16 weights and odd grids all go through the full backward. Maps
//! within 1e-3 × max|map| for the top-k classes, a named class per image and the predicted one,
//! at batch 2-3; average-pooled models are refused.

mod common;

use agcam::{Engine, EngineOptions, Method, Target};
use common::parity::{assert_same_maps, compare_method, dir, tensor, Reference};
use safetensors::SafeTensors;

/// method.md's parity bound for the compared methods.
const TOL: f64 = 1e-3;

#[test]
fn generic_attention_matches_pytorch_on_every_class_token_fixture() {
    let fixtures = [
        "odd_ls", "odd_nols", "vit_ti", "hf_vit", "deit3_ls", "patch32",
    ];
    for gpu in common::gpus() {
        for name in fixtures {
            // Loaded from the folder, as `--weights FOLDER` does (HF's config lives there).
            let r = Reference::load_from(name, &dir(name));
            let bytes = std::fs::read(dir(name).join("generic_attention.safetensors")).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let (shape, maps) = tensor(&st, "maps");
            let mut engine = Engine::new(gpu.clone(), &r.model).unwrap();
            let want = (shape.as_slice(), maps.as_slice());
            let input = r.input();
            compare_method(
                name,
                &r,
                &mut engine,
                (&input, ""),
                Method::GenericAttention,
                want,
                TOL,
            );
        }
    }
}

#[test]
fn generic_attention_refuses_average_pooled_models() {
    let r = Reference::load_from("avgpool", &dir("avgpool"));
    let gpu = common::gpus().remove(0);
    let mut engine = Engine::new(gpu, &r.model).unwrap();
    let err = engine
        .explain_with(&r.input(), &Target::Predicted, Method::GenericAttention)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("generic attention is undefined for average-pooled models"),
        "{err}"
    );
}

/// The full backward's kept activations and gradients count against `max_gpu_mem`: a budget
/// that holds several images for AGCAM holds one for generic attention, whose chunks shrink
/// to it (same maps), and a budget below one image's needs is refused with the reason.
#[test]
fn generic_attention_chunks_fit_the_memory_budget() {
    let r = Reference::load_from("odd_ls", &dir("odd_ls"));
    let gpu = common::gpus().remove(0);
    let input = r.input();
    let target = Target::TopK(2);
    let mut roomy = Engine::new(gpu.clone(), &r.model).unwrap();
    let want = roomy
        .explain_with(&input, &target, Method::GenericAttention)
        .unwrap();

    let options = |kib: u64| EngineOptions {
        max_gpu_mem: kib << 10,
        ..Default::default()
    };
    let mut tight = Engine::with_options(gpu.clone(), &r.model, &options(300)).unwrap();
    assert!(tight.capacity() >= 3, "AGCAM chunks: {}", tight.capacity());
    let got = tight
        .explain_with(&input, &target, Method::GenericAttention)
        .unwrap();
    assert_eq!(tight.capacity(), 1, "generic attention chunks");
    assert_same_maps(&got, &want, 1e-6);

    let mut too_small = Engine::with_options(gpu, &r.model, &options(100)).unwrap();
    let err = too_small
        .explain_with(&input, &target, Method::GenericAttention)
        .unwrap_err()
        .to_string();
    assert!(err.contains("raise --max-gpu-mem"), "{err}");
}

/// vit_ti's weights are f16 values: with f16 storage the full backward reads the weight
/// matrices as f16 pairs, and where the arithmetic stays f32 the maps meet the same bound.
#[test]
fn generic_attention_with_f16_weights() {
    for gpu in common::gpus() {
        let r = Reference::load_from("vit_ti", &dir("vit_ti"));
        let bytes = std::fs::read(dir("vit_ti").join("generic_attention.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (shape, maps) = tensor(&st, "maps");
        let options = EngineOptions {
            precision: agcam::Precision::F16,
            ..Default::default()
        };
        let mut engine = Engine::with_options(gpu.clone(), &r.model, &options).unwrap();
        let f16_math = gpu.has_f16() && !gpu.is_cpu();
        let tol = if f16_math { 1e-2 } else { TOL };
        let input = r.input();
        let want = (shape.as_slice(), maps.as_slice());
        let method = Method::GenericAttention;
        compare_method(
            "vit_ti f16",
            &r,
            &mut engine,
            (&input, ""),
            method,
            want,
            tol,
        );
    }
}
