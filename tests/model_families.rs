//! Checkpoint formats across the ViT family, end to end: each fixture folder (written by
//! tools/make_fixtures.py, see tests/fixtures/README.md) is loaded exactly as `--weights FOLDER`
//! would load it, with no flags, and the engine is compared with the PyTorch float64 autograd
//! reference like tests/fixtures_parity.rs does (logits 1e-4 relative, maps 1e-4 × max|map|, on
//! every adapter).
//!
//! * `hf_vit`: Hugging Face ViTForImageClassification from `save_pretrained` (q/k/v fused at
//!   load, LayerNorm eps 1e-12, preprocessing from preprocessor_config.json, id2label names);
//!   the reference ran on the transformers model itself.
//! * `deit3_ls`: DeiT III style timm model: layer scale, no qkv bias, no class-token position.
//! * `patch32`: 32-px patches, 64×96 input, bfloat16 weights.
//! * `avgpool`: timm `global_pool="avg"` with `fc_norm`. Its maps are exactly zero (the class
//!   token reaches no logit through average pooling of the patch tokens, so its attention row
//!   gets no gradient); the logits test the pooling, and the engine must refuse AGCAM (its
//!   Grad-CAM maps are checked in tests/fixtures_parity.rs).

mod common;

use agcam::model::{Model, Pooling};
use agcam::{Engine, Target};
use common::parity::{compare_all, cpu_reference_matches, dir, tensor, Reference};

fn load(name: &str) -> Reference {
    Reference::load_from(name, &dir(name))
}

/// The engine against the fixture on every adapter.
fn engine_matches(name: &str) {
    let r = load(name);
    for gpu in common::gpus() {
        let mut engine = Engine::new(gpu, &r.model).unwrap_or_else(|e| panic!("{name}: {e}"));
        compare_all(name, &r, &mut engine);
    }
}

/// What the loader must find in a fixture folder without any flag.
struct Expect {
    format: &'static str,
    dims: (usize, usize, usize, usize), // D, depth, heads, F
    patch: usize,
    image: (usize, usize),
    classes: usize,
    eps: f32,
    layer_scale: bool,
    pooling: Pooling,
    mean: [f32; 3],
    std: [f32; 3],
    label0: &'static str,
}

fn check_loaded(name: &str, m: &Model, e: &Expect) {
    let c = &m.config;
    assert_eq!(
        (c.embed_dim, c.depth, c.num_heads, c.mlp_hidden),
        e.dims,
        "{name}"
    );
    assert_eq!(
        (c.patch_size, c.image_size, c.num_classes),
        (e.patch, e.image, e.classes),
        "{name}"
    );
    assert_eq!(c.layer_norm_eps, e.eps, "{name}");
    assert_eq!(
        (c.layer_scale, c.pooling),
        (e.layer_scale, e.pooling),
        "{name}"
    );
    assert_eq!((c.mean, c.std), (e.mean, e.std), "{name}");
    assert_eq!(c.label(0), Some(e.label0), "{name}");
    assert!(
        m.provenance.format.starts_with(e.format),
        "{name}: {}",
        m.provenance.format
    );
    assert_eq!(
        m.provenance.weights.as_deref(),
        Some(dir(name).join("model.safetensors").as_path())
    );
    assert_eq!(
        m.weights.pos_embed.shape,
        [c.tokens(), c.embed_dim],
        "{name}"
    );
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[test]
fn hf_vit_loads_without_flags() {
    let r = load("hf_vit");
    check_loaded(
        "hf_vit",
        &r.model,
        &Expect {
            format: "Hugging Face ViTForImageClassification",
            dims: (32, 3, 4, 72),
            patch: 8,
            image: (32, 48),
            classes: 6,
            eps: 1e-12,
            layer_scale: false,
            pooling: Pooling::Token,
            mean: [0.4, 0.5, 0.6],
            std: [0.3, 0.25, 0.2],
            label0: "tabby cat",
        },
    );
    let p = &r.model.provenance;
    assert_eq!(
        p.preprocessor.as_deref(),
        Some(dir("hf_vit").join("preprocessor_config.json").as_path())
    );
    assert!(
        p.preprocessing.contains("`image_mean`/`image_std`"),
        "{p:?}"
    );
    assert!(p.labels.contains("`id2label`"), "{p:?}");
}

#[test]
fn deit3_ls_loads_without_flags() {
    let r = load("deit3_ls");
    check_loaded(
        "deit3_ls",
        &r.model,
        &Expect {
            format: "timm VisionTransformer",
            dims: (48, 3, 4, 144),
            patch: 14,
            image: (42, 56),
            classes: 9,
            eps: 1e-6,
            layer_scale: true,
            pooling: Pooling::Token,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            label0: "class0",
        },
    );
    // No class-token position in the file: the loader puts a zero row in front.
    let w = &r.model.weights;
    assert!(w.pos_embed.data[..48].iter().all(|&x| x == 0.0));
    assert!(w
        .blocks
        .iter()
        .all(|b| b.qkv_b.data.iter().all(|&x| x == 0.0)));
    assert!(r.model.summary().contains("no_embed_class"));
}

#[test]
fn patch32_loads_without_flags() {
    let r = load("patch32");
    check_loaded(
        "patch32",
        &r.model,
        &Expect {
            format: "timm VisionTransformer",
            dims: (24, 2, 2, 96),
            patch: 32,
            image: (64, 96),
            classes: 10,
            eps: 1e-6,
            layer_scale: false,
            pooling: Pooling::Token,
            mean: [0.5; 3],
            std: [0.5; 3],
            label0: "class0",
        },
    );
}

#[test]
fn avgpool_loads_without_flags() {
    let r = load("avgpool");
    check_loaded(
        "avgpool",
        &r.model,
        &Expect {
            format: "timm VisionTransformer",
            dims: (32, 3, 4, 64),
            patch: 8,
            image: (24, 40),
            classes: 8,
            eps: 1e-6,
            layer_scale: false,
            pooling: Pooling::Avg,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            label0: "class0",
        },
    );
    // The head reads fc_norm: its weights are in norm_w / norm_b (timm saves no `norm`).
    let bytes = std::fs::read(dir("avgpool").join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensor("norm.weight").is_err());
    for (field, name) in [
        (&r.model.weights.norm_w, "fc_norm.weight"),
        (&r.model.weights.norm_b, "fc_norm.bias"),
    ] {
        let (_, want) = tensor(&st, name);
        let got: Vec<f64> = field.data.iter().map(|&v| v as f64).collect();
        assert_eq!(got, want, "{name}");
    }
    // The reference maps are exactly zero, the logits are not.
    let st = r.st();
    let (_, maps) = tensor(&st, "maps");
    let (_, logits) = tensor(&st, "logits");
    assert!(maps.iter().all(|&v| v == 0.0));
    assert!(logits.iter().any(|&v| v.abs() > 0.1));
}

#[test]
fn hf_vit_matches_pytorch_autograd() {
    engine_matches("hf_vit");
}

#[test]
fn deit3_ls_matches_pytorch_autograd() {
    engine_matches("deit3_ls");
}

#[test]
fn patch32_matches_pytorch_autograd() {
    engine_matches("patch32");
}

/// Average pooling: the forward matches PyTorch; AGCAM is refused, because its maps are
/// identically zero under the detach (the fixture's autograd maps are exactly 0). Grad-CAM is
/// defined there (tests/fixtures_parity.rs checks its maps).
#[test]
fn avgpool_logits_match_and_agcam_is_refused() {
    let r = Reference::load("avgpool");
    let st = r.st();
    let (_, input) = tensor(&st, "input");
    let (_, logits) = tensor(&st, "logits");
    let input: Vec<f32> = input.iter().map(|&v| v as f32).collect();
    let c = r.model.config.num_classes;
    for gpu in common::gpus() {
        let name = gpu.describe();
        let mut engine = Engine::new(gpu, &r.model).unwrap();
        for (b, got) in engine.predict(&input).unwrap().iter().enumerate() {
            let (err, scale) = common::max_error(got, &logits[b * c..(b + 1) * c]);
            assert!(
                err <= 1e-4 * scale,
                "{name}: image {b}: logits error {err:e}"
            );
        }
        let err = engine.explain(&input, &Target::Predicted).unwrap_err();
        assert!(err.to_string().contains("every map would be zero"), "{err}");
    }
}

#[test]
fn cpu_reference_matches_family_fixtures() {
    for name in ["hf_vit", "deit3_ls", "patch32"] {
        cpu_reference_matches(name, &load(name));
    }
}
