//! Comparison of the engine with a PyTorch fixture (tests/fixtures/README.md): logits to 1e-4
//! relative, every map to 1e-4 × max|map|, the top-k classes exactly, and a class named by the
//! caller. Shared by fixtures_parity.rs and model_families.rs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use agcam::model::{load_model, ConfigOverrides, Model};
use agcam::{Engine, Method, Target};
use safetensors::{Dtype, SafeTensors};

/// The folder of fixture `name`.
pub fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The same classes and maps in `got` as in `want`, each map within `rel` × its max|value|
/// (an engine run in other chunks against one in a single chunk).
pub fn assert_same_maps(got: &[agcam::Explanation], want: &[agcam::Explanation], rel: f32) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.maps.len(), w.maps.len());
        for (gm, wm) in g.maps.iter().zip(&w.maps) {
            assert_eq!(gm.class, wm.class);
            let scale = wm.map.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = gm
                .map
                .iter()
                .zip(&wm.map)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= rel * scale,
                "chunked maps differ by {err:e} of {scale:e}"
            );
        }
    }
}

/// A tensor of the reference file as f64 with its shape.
pub fn tensor(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f64>) {
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

/// A fixture's model, loaded as the engine's users would, and its reference file.
pub struct Reference {
    pub model: Model,
    bytes: Vec<u8>,
}

impl Reference {
    /// Loads fixture `name` from `weights` (its `model.safetensors`, or the folder itself) with
    /// no flags: everything must come from the files.
    pub fn load_from(name: &str, weights: &Path) -> Reference {
        let model = load_model(weights, None, &ConfigOverrides::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes = std::fs::read(dir(name).join("reference.safetensors")).unwrap();
        Reference { model, bytes }
    }

    /// Loads fixture `name` through its `model.safetensors`.
    pub fn load(name: &str) -> Reference {
        Self::load_from(name, &dir(name).join("model.safetensors"))
    }

    pub fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    /// The reference's random batch `input`, as f32.
    pub fn input(&self) -> Vec<f32> {
        let (_, input) = tensor(&self.st(), "input");
        input.iter().map(|&v| v as f32).collect()
    }
}

/// Relative tolerance of f32 arithmetic against the float64 references.
pub const F32_TOL: f64 = 1e-4;

/// Checks one engine map against its reference: within `tol` × max|map|, or, for a reference
/// that is exactly zero (average pooling: the class token reaches no logit), within 1e-6.
fn check_map(tag: &str, what: &str, got: &[f32], want: &[f64], tol: f64) {
    let (err, scale) = super::max_error(got, want);
    if scale == 0.0 {
        assert!(
            err <= 1e-6,
            "{tag}: {what}: the reference map is exactly zero, the engine's reaches {err:e}"
        );
    } else {
        eprintln!("map-error {tag}: {what}: {:.3e} of max|map|", err / scale);
        assert!(
            err <= tol * scale,
            "{tag}: {what}: map error {err:e} (max {scale:e}, ratio {:e})",
            err / scale
        );
    }
}

/// Compares an engine run on `input` with the reference tensors `{prefix}logits`,
/// `{prefix}classes` and `{prefix}maps`, within `tol` × the largest reference value.
pub fn compare(
    name: &str,
    r: &Reference,
    engine: &mut Engine,
    input: &[f32],
    prefix: &str,
    tol: f64,
) {
    let (mshape, maps) = tensor(&r.st(), &format!("{prefix}maps"));
    let want = (mshape.as_slice(), maps.as_slice());
    compare_method(name, r, engine, (input, prefix), Method::Agcam, want, tol);
}

/// [`compare`] for `method`, whose reference maps `[B, K, gh, gw]` for the fixture's
/// `{prefix}classes` are `maps`.
pub fn compare_method(
    name: &str,
    r: &Reference,
    engine: &mut Engine,
    (input, prefix): (&[f32], &str),
    method: Method,
    (mshape, maps): (&[usize], &[f64]),
    tol: f64,
) {
    let st = r.st();
    let (cshape, classes) = tensor(&st, &format!("{prefix}classes"));
    let (_, logits) = tensor(&st, &format!("{prefix}logits"));
    let (batch, k) = (cshape[0], cshape[1]);
    let cells = mshape[2] * mshape[3];
    assert_eq!(
        (mshape[2], mshape[3]),
        r.model.config.grid(),
        "{name}: grid"
    );
    let adapter = engine.gpu().describe();
    let tag = format!("{name} {} {prefix}on {adapter}", method.name());

    // Top-k: the classes themselves come from the GPU.
    let got = engine
        .explain_with(input, &Target::TopK(k), method)
        .unwrap();
    let c = r.model.config.num_classes;
    for (b, exp) in got.iter().enumerate() {
        let (err, scale) = super::max_error(&exp.logits, &logits[b * c..(b + 1) * c]);
        assert!(
            err <= tol * scale,
            "{tag}: image {b} logits error {err:e} (max {scale:e})"
        );
        for (s, m) in exp.maps.iter().enumerate() {
            assert_eq!(
                m.class as f64,
                classes[b * k + s],
                "{tag}: image {b} slot {s} class"
            );
            let want = &maps[(b * k + s) * cells..][..cells];
            check_map(
                &tag,
                &format!("image {b} class {}", m.class),
                &m.map,
                want,
                tol,
            );
        }
    }

    // A class named by the caller: the last of the top-k, one per image.
    let last: Vec<usize> = (0..batch)
        .map(|b| classes[b * k + k - 1] as usize)
        .collect();
    let got = engine
        .explain_with(input, &Target::PerImage(last.clone()), method)
        .unwrap();
    for (b, exp) in got.iter().enumerate() {
        assert_eq!(exp.maps.len(), 1);
        assert_eq!(exp.maps[0].class, last[b]);
        let want = &maps[(b * k + k - 1) * cells..][..cells];
        check_map(
            &tag,
            &format!("image {b} named class"),
            &exp.maps[0].map,
            want,
            tol,
        );
    }

    // The predicted class: slot 0 of the top-k.
    let got = engine
        .explain_with(input, &Target::Predicted, method)
        .unwrap();
    for (b, exp) in got.iter().enumerate() {
        assert_eq!(exp.maps.len(), 1);
        assert_eq!(exp.maps[0].class as f64, classes[b * k], "{tag}: image {b}");
        let want = &maps[b * k * cells..][..cells];
        check_map(
            &tag,
            &format!("image {b} predicted"),
            &exp.maps[0].map,
            want,
            tol,
        );
    }
}

/// The random batch and the fixture's image file (through the engine's preprocessing, which
/// must match torchvision's to 1e-6) against the reference, on `engine`.
pub fn compare_all(name: &str, r: &Reference, engine: &mut Engine) {
    compare(name, r, engine, &r.input(), "", F32_TOL);
    let prepared = agcam::pipeline::prepare(&dir(name).join("image.png"), &r.model.config)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let (_, want) = tensor(&r.st(), "image_input");
    // The resize is bit-exact with PIL, so inputs agree to float rounding.
    let (err, _) = super::max_error(&prepared.input, &want);
    assert!(err <= 1e-6, "{name}: preprocessed input differs by {err:e}");
    compare(name, r, engine, &prepared.input, "image_", F32_TOL);
}

/// The f64 CPU reference of the crate against the fixture (class-token models).
pub fn cpu_reference_matches(name: &str, r: &Reference) {
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
