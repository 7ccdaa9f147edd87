//! Parity with PyTorch autograd: the fixtures under tests/fixtures/ were written by
//! tools/make_fixtures.py from timm models (f64 autograd through hooked attention with the
//! attention inputs detached, method.md §2). Logits must match to 1e-4 relative and every map
//! to 1e-4 × max|map|, on every adapter.

mod common;

use std::path::{Path, PathBuf};

use agcam::model::{load_model, ConfigOverrides, Model};
use agcam::{Engine, EngineOptions, Precision, Target};
use safetensors::{Dtype, SafeTensors};

const FIXTURES: &[&str] = &["odd_ls", "odd_nols", "vit_ti"];

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A tensor of the reference file as f64 with its shape.
fn tensor(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let data = match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I32 => t
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    (t.shape().to_vec(), data)
}

struct Reference {
    model: Model,
    bytes: Vec<u8>,
}

impl Reference {
    fn load(name: &str) -> Reference {
        let d = dir(name);
        let model = load_model(
            &d.join("model.safetensors"),
            None,
            &ConfigOverrides::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes = std::fs::read(d.join("reference.safetensors")).unwrap();
        Reference { model, bytes }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
}

/// Compares an engine run on `input` with the reference tensors `{prefix}logits`,
/// `{prefix}classes` and `{prefix}maps`.
fn compare(name: &str, r: &Reference, engine: &mut Engine, input: &[f32], prefix: &str) {
    let st = r.st();
    let (cshape, classes) = tensor(&st, &format!("{prefix}classes"));
    let (_, logits) = tensor(&st, &format!("{prefix}logits"));
    let (mshape, maps) = tensor(&st, &format!("{prefix}maps"));
    let (batch, k) = (cshape[0], cshape[1]);
    let cells = mshape[2] * mshape[3];
    assert_eq!(
        (mshape[2], mshape[3]),
        r.model.config.grid(),
        "{name}: grid"
    );
    let adapter = engine.gpu().describe();
    let tag = format!("{name} {prefix}on {adapter}");

    // Top-k: the classes themselves come from the GPU.
    let got = engine.explain(input, &Target::TopK(k)).unwrap();
    let c = r.model.config.num_classes;
    for (b, exp) in got.iter().enumerate() {
        let (err, scale) = common::max_error(&exp.logits, &logits[b * c..(b + 1) * c]);
        assert!(
            err <= 1e-4 * scale,
            "{tag}: image {b} logits error {err:e} (max {scale:e})"
        );
        for (s, m) in exp.maps.iter().enumerate() {
            assert_eq!(
                m.class as f64,
                classes[b * k + s],
                "{tag}: image {b} slot {s} class"
            );
            let want = &maps[(b * k + s) * cells..][..cells];
            let (err, scale) = common::max_error(&m.map, want);
            assert!(scale > 0.0, "{tag}: reference map is zero");
            assert!(
                err <= 1e-4 * scale,
                "{tag}: image {b} class {}: map error {err:e} (max {scale:e}, ratio {:e})",
                m.class,
                err / scale
            );
        }
    }

    // A class named by the caller: the last of the top-k, one per image.
    let last: Vec<usize> = (0..batch)
        .map(|b| classes[b * k + k - 1] as usize)
        .collect();
    let got = engine
        .explain(input, &Target::PerImage(last.clone()))
        .unwrap();
    for (b, exp) in got.iter().enumerate() {
        assert_eq!(exp.maps.len(), 1);
        assert_eq!(exp.maps[0].class, last[b]);
        let want = &maps[(b * k + k - 1) * cells..][..cells];
        let (err, scale) = common::max_error(&exp.maps[0].map, want);
        assert!(
            err <= 1e-4 * scale,
            "{tag}: image {b} named class: error {err:e}"
        );
    }
}

#[test]
fn engine_matches_pytorch_autograd() {
    for gpu in common::gpus() {
        for name in FIXTURES {
            let r = Reference::load(name);
            let st = r.st();
            let (_, input) = tensor(&st, "input");
            let input: Vec<f32> = input.iter().map(|&v| v as f32).collect();
            let mut engine = Engine::new(gpu.clone(), &r.model).unwrap();
            compare(name, &r, &mut engine, &input, "");
        }
    }
}

/// vit_ti's weights are f16 values, so f16 storage on the GPU loses nothing: the f16 path must
/// match the reference as tightly as f32 does.
#[test]
fn f16_weights_match_pytorch_when_the_checkpoint_is_f16() {
    for gpu in common::gpus() {
        let r = Reference::load("vit_ti");
        let st = r.st();
        let (_, input) = tensor(&st, "input");
        let input: Vec<f32> = input.iter().map(|&v| v as f32).collect();
        let options = EngineOptions {
            precision: Precision::F16,
            ..Default::default()
        };
        let mut engine = Engine::with_options(gpu.clone(), &r.model, &options).unwrap();
        compare("vit_ti f16", &r, &mut engine, &input, "");
    }
}

#[test]
fn image_files_match_pytorch_preprocessing_and_maps() {
    for gpu in common::gpus() {
        for name in FIXTURES {
            let r = Reference::load(name);
            let st = r.st();
            let prepared = agcam::pipeline::prepare(&dir(name).join("image.png"), &r.model.config)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let (_, want) = tensor(&st, "image_input");
            // The resize is bit-exact with PIL, so inputs agree to float rounding.
            let (err, _) = common::max_error(&prepared.input, &want);
            assert!(err <= 1e-6, "{name}: preprocessed input differs by {err:e}");
            let mut engine = Engine::new(gpu.clone(), &r.model).unwrap();
            compare(name, &r, &mut engine, &prepared.input, "image_");
        }
    }
}

#[test]
fn cpu_reference_matches_pytorch_autograd() {
    // The f64 reference the kernel tests rely on is itself checked here (small fixtures only:
    // it is slow).
    for name in ["odd_ls", "odd_nols"] {
        let r = Reference::load(name);
        let st = r.st();
        let (ishape, input) = tensor(&st, "input");
        let (cshape, classes) = tensor(&st, "classes");
        let (_, logits) = tensor(&st, "logits");
        let (_, maps) = tensor(&st, "maps");
        let len: usize = ishape[1..].iter().product();
        let k = cshape[1];
        let c = r.model.config.num_classes;
        let cells = maps.len() / (cshape[0] * k);
        for b in 0..ishape[0] {
            let image: Vec<f32> = input[b * len..][..len].iter().map(|&v| v as f32).collect();
            let cls: Vec<usize> = classes[b * k..][..k].iter().map(|&c| c as usize).collect();
            let out = agcam::reference::explain(&r.model.config, &r.model.weights, &image, &cls);
            for (x, y) in out.logits.iter().zip(&logits[b * c..]) {
                assert!(
                    (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                    "{name}: logit {x} vs {y}"
                );
            }
            for (s, m) in out.maps.iter().enumerate() {
                let want = &maps[(b * k + s) * cells..][..cells];
                let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                let err = m
                    .iter()
                    .zip(want)
                    .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
                assert!(
                    err <= 1e-5 * scale,
                    "{name}: image {b} slot {s}: {err:e} of {scale:e}"
                );
            }
        }
    }
}
