//! Loader tests on small synthetic checkpoints written to a temporary folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::*;
use crate::error::Error;

/// A deterministic value for element `k` of tensor `name`: a multiple of 1/4 in [-12, 12], exact
/// in f16 and bf16, and different between tensors.
fn value(name: &str, k: usize) -> f32 {
    let id = name
        .bytes()
        .fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    (((id % 89) + k * 5) % 97) as f32 / 4.0 - 12.0
}

fn values(name: &str, n: usize) -> Vec<f32> {
    (0..n).map(|k| value(name, k)).collect()
}

/// A synthetic timm ViT, as tensor name → (shape, values).
#[derive(Clone)]
struct Synth {
    d: usize,
    depth: usize,
    p: usize,
    f: usize,
    c: usize,
    grid: (usize, usize),
    qkv_bias: bool,
    layer_scale: bool,
    fc_norm: bool,
}

impl Default for Synth {
    fn default() -> Self {
        Synth {
            d: 8,
            depth: 2,
            p: 4,
            f: 16,
            c: 5,
            grid: (3, 3),
            qkv_bias: true,
            layer_scale: false,
            fc_norm: false,
        }
    }
}

type Tensors = BTreeMap<String, Vec<usize>>;

impl Synth {
    fn tensors(&self) -> Tensors {
        let Synth { d, p, f, c, .. } = *self;
        let n = 1 + self.grid.0 * self.grid.1;
        let mut t = Tensors::new();
        let mut add = |name: &str, shape: &[usize]| {
            t.insert(name.to_string(), shape.to_vec());
        };
        add("cls_token", &[1, 1, d]);
        add("pos_embed", &[1, n, d]);
        add("patch_embed.proj.weight", &[d, 3, p, p]);
        add("patch_embed.proj.bias", &[d]);
        for i in 0..self.depth {
            let b = |leaf: &str| format!("blocks.{i}.{leaf}");
            add(&b("norm1.weight"), &[d]);
            add(&b("norm1.bias"), &[d]);
            add(&b("attn.qkv.weight"), &[3 * d, d]);
            if self.qkv_bias {
                add(&b("attn.qkv.bias"), &[3 * d]);
            }
            add(&b("attn.proj.weight"), &[d, d]);
            add(&b("attn.proj.bias"), &[d]);
            add(&b("norm2.weight"), &[d]);
            add(&b("norm2.bias"), &[d]);
            add(&b("mlp.fc1.weight"), &[f, d]);
            add(&b("mlp.fc1.bias"), &[f]);
            add(&b("mlp.fc2.weight"), &[d, f]);
            add(&b("mlp.fc2.bias"), &[d]);
            if self.layer_scale {
                add(&b("ls1.gamma"), &[d]);
                add(&b("ls2.gamma"), &[d]);
            }
        }
        let norm = if self.fc_norm { "fc_norm" } else { "norm" };
        add(&format!("{norm}.weight"), &[d]);
        add(&format!("{norm}.bias"), &[d]);
        add("head.weight", &[c, d]);
        add("head.bias", &[c]);
        t
    }
}

fn encode(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::F64 => v.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect(),
        Dtype::I64 => v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect(),
        other => panic!("test encoder lacks {other:?}"),
    }
}

/// Serialises `tensors` with generated values; `dtype_of` picks each tensor's dtype.
fn serialize_with(tensors: &Tensors, dtype_of: impl Fn(&str) -> Dtype) -> Vec<u8> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape)| {
            let dt = dtype_of(name);
            let n = shape.iter().product();
            (
                name.clone(),
                dt,
                shape.clone(),
                encode(dt, &values(name, n)),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, dt, shape, b)| {
            (
                name.clone(),
                TensorView::new(*dt, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// A temporary folder holding checkpoints and configs.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn ckpt(&self, name: &str, tensors: &Tensors) -> PathBuf {
        self.write(name, serialize_with(tensors, |_| Dtype::F32))
    }
}

fn heads(h: usize) -> ConfigOverrides {
    ConfigOverrides {
        num_heads: Some(h),
        ..Default::default()
    }
}

fn load(path: &Path, config: Option<&Path>, o: &ConfigOverrides) -> Model {
    match load_model(path, config, o) {
        Ok(m) => m,
        Err(e) => panic!("load failed: {e}"),
    }
}

fn load_err(path: &Path, config: Option<&Path>, o: &ConfigOverrides) -> Error {
    match load_model(path, config, o) {
        Ok(_) => panic!("load unexpectedly succeeded"),
        Err(e) => e,
    }
}

fn assert_msg(e: &Error, parts: &[&str]) {
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

fn check(t: &HostTensor, name: &str, shape: &[usize]) {
    assert_eq!(t.shape, shape, "shape of {name}");
    assert_eq!(t.data, values(name, t.data.len()), "values of {name}");
}

/// Checks that every tensor of `s` landed in its field with the right values.
fn check_weights(w: &VitWeights, s: &Synth) {
    let (d, f, c, p) = (s.d, s.f, s.c, s.p);
    let n = 1 + s.grid.0 * s.grid.1;
    check(&w.cls_token, "cls_token", &[d]);
    check(&w.pos_embed, "pos_embed", &[n, d]);
    check(&w.patch_w, "patch_embed.proj.weight", &[d, 3, p, p]);
    check(&w.patch_b, "patch_embed.proj.bias", &[d]);
    assert_eq!(w.blocks.len(), s.depth);
    for (i, b) in w.blocks.iter().enumerate() {
        let nm = |leaf: &str| format!("blocks.{i}.{leaf}");
        check(&b.norm1_w, &nm("norm1.weight"), &[d]);
        check(&b.norm1_b, &nm("norm1.bias"), &[d]);
        check(&b.qkv_w, &nm("attn.qkv.weight"), &[3 * d, d]);
        if s.qkv_bias {
            check(&b.qkv_b, &nm("attn.qkv.bias"), &[3 * d]);
        } else {
            assert_eq!(b.qkv_b, HostTensor::new(vec![3 * d], vec![0.0; 3 * d]));
        }
        check(&b.proj_w, &nm("attn.proj.weight"), &[d, d]);
        check(&b.proj_b, &nm("attn.proj.bias"), &[d]);
        check(&b.norm2_w, &nm("norm2.weight"), &[d]);
        check(&b.norm2_b, &nm("norm2.bias"), &[d]);
        check(&b.fc1_w, &nm("mlp.fc1.weight"), &[f, d]);
        check(&b.fc1_b, &nm("mlp.fc1.bias"), &[f]);
        check(&b.fc2_w, &nm("mlp.fc2.weight"), &[d, f]);
        check(&b.fc2_b, &nm("mlp.fc2.bias"), &[d]);
        if s.layer_scale {
            check(b.ls1.as_ref().unwrap(), &nm("ls1.gamma"), &[d]);
            check(b.ls2.as_ref().unwrap(), &nm("ls2.gamma"), &[d]);
        } else {
            assert!(b.ls1.is_none() && b.ls2.is_none());
        }
    }
    let norm = if s.fc_norm { "fc_norm" } else { "norm" };
    check(&w.norm_w, &format!("{norm}.weight"), &[d]);
    check(&w.norm_b, &format!("{norm}.bias"), &[d]);
    check(&w.head_w, "head.weight", &[c, d]);
    check(&w.head_b, "head.bias", &[c]);
}

// ---------------------------------------------------------------- happy paths

#[test]
fn loads_f32_into_the_right_fields() {
    let dir = Dir::new();
    let s = Synth::default();
    let path = dir.ckpt("tiny.safetensors", &s.tensors());
    let m = load(&path, None, &heads(2));
    let c = &m.config;
    assert_eq!(c.name, "tiny");
    assert_eq!(
        (c.embed_dim, c.depth, c.num_heads, c.mlp_hidden),
        (8, 2, 2, 16)
    );
    assert_eq!(
        (c.patch_size, c.image_size, c.num_classes),
        (4, (12, 12), 5)
    );
    assert_eq!((c.grid(), c.tokens(), c.head_dim()), ((3, 3), 10, 4));
    assert_eq!(c.layer_norm_eps, 1e-6);
    assert_eq!(c.pooling, Pooling::Token);
    assert!(!c.layer_scale);
    assert_eq!((c.mean, c.std), ([0.5; 3], [0.5; 3]));
    assert!(c.labels.is_none());
    check_weights(&m.weights, &s);
}

#[test]
fn f16_bf16_f64_convert_exactly() {
    let dir = Dir::new();
    let s = Synth::default();
    for dt in [Dtype::F16, Dtype::BF16, Dtype::F64] {
        let path = dir.write("m.safetensors", serialize_with(&s.tensors(), |_| dt));
        let m = load(&path, None, &heads(2));
        check_weights(&m.weights, &s);
    }
    // Mixed dtypes in one file.
    let path = dir.write(
        "m.safetensors",
        serialize_with(&s.tensors(), |n| {
            if n.contains("fc1") {
                Dtype::BF16
            } else {
                Dtype::F16
            }
        }),
    );
    check_weights(&load(&path, None, &heads(2)).weights, &s);
}

#[test]
fn missing_qkv_bias_is_zero() {
    let dir = Dir::new();
    let s = Synth {
        qkv_bias: false,
        ..Default::default()
    };
    let m = load(&dir.ckpt("m.safetensors", &s.tensors()), None, &heads(2));
    check_weights(&m.weights, &s);
}

#[test]
fn layer_scale_is_read() {
    let dir = Dir::new();
    let s = Synth {
        layer_scale: true,
        depth: 3,
        ..Default::default()
    };
    let m = load(&dir.ckpt("m.safetensors", &s.tensors()), None, &heads(2));
    assert!(m.config.layer_scale);
    check_weights(&m.weights, &s);
}

#[test]
fn fc_norm_means_average_pooling() {
    let dir = Dir::new();
    let s = Synth {
        fc_norm: true,
        ..Default::default()
    };
    let m = load(&dir.ckpt("m.safetensors", &s.tensors()), None, &heads(2));
    assert_eq!(m.config.pooling, Pooling::Avg);
    check_weights(&m.weights, &s);

    // With a config that agrees.
    dir.write("m.json", r#"{"global_pool": "avg"}"#);
    let m = load(&dir.path("m.safetensors"), None, &heads(2));
    assert_eq!(m.config.pooling, Pooling::Avg);
}

#[test]
fn identity_norm_beside_fc_norm_is_accepted() {
    let dir = Dir::new();
    let s = Synth {
        fc_norm: true,
        ..Default::default()
    };
    let mut t = s.tensors();
    t.insert("norm.weight".into(), vec![s.d]);
    t.insert("norm.bias".into(), vec![s.d]);
    let ones = encode(Dtype::F32, &vec![1.0; s.d]);
    let zeros = encode(Dtype::F32, &vec![0.0; s.d]);
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(n, sh)| {
            (
                n.clone(),
                sh.clone(),
                encode(Dtype::F32, &values(n, sh.iter().product())),
            )
        })
        .collect();
    for (n, _, b) in bytes.iter_mut() {
        if n == "norm.weight" {
            *b = ones.clone();
        } else if n == "norm.bias" {
            *b = zeros.clone();
        }
    }
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, sh, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, sh.clone(), b).unwrap(),
            )
        })
        .collect();
    let path = dir.write(
        "m.safetensors",
        safetensors::serialize(views, None).unwrap(),
    );
    let m = load(&path, None, &heads(2));
    assert_eq!(m.config.pooling, Pooling::Avg);
    check_weights(&m.weights, &s);

    // A non-identity `norm` beside `fc_norm` is refused.
    let path = dir.ckpt("both.safetensors", &t);
    let e = load_err(&path, None, &heads(2));
    assert_msg(&e, &["`norm.weight`", "`fc_norm.weight`"]);
}

#[test]
fn heads_from_table_config_and_override() {
    let dir = Dir::new();
    let s = Synth {
        d: 192,
        f: 16,
        depth: 1,
        ..Default::default()
    };
    let path = dir.ckpt("vit.safetensors", &s.tensors());
    assert_eq!(
        load(&path, None, &ConfigOverrides::default())
            .config
            .num_heads,
        3
    );
    for (cfg, h) in [
        (r#"{"model_args": {"num_heads": 4}, "num_heads": 6}"#, 4),
        (r#"{"num_heads": 6, "num_attention_heads": 8}"#, 6),
        (r#"{"num_attention_heads": 8}"#, 8),
    ] {
        dir.write("vit.json", cfg);
        assert_eq!(
            load(&path, None, &ConfigOverrides::default())
                .config
                .num_heads,
            h,
            "{cfg}"
        );
    }
    // The override beats the config (still {"num_attention_heads": 8}).
    assert_eq!(load(&path, None, &heads(12)).config.num_heads, 12);
}

#[test]
fn non_square_image_size_from_config_and_override() {
    let dir = Dir::new();
    let s = Synth {
        grid: (2, 3),
        ..Default::default()
    };
    let path = dir.ckpt("m.safetensors", &s.tensors());
    for cfg in [
        r#"{"model_args": {"img_size": [8, 12]}}"#,
        r#"{"img_size": [8, 12]}"#,
        r#"{"image_size": [8, 12]}"#,
        r#"{"pretrained_cfg": {"input_size": [3, 8, 12]}}"#,
    ] {
        let c = dir.write("c.json", cfg);
        let m = load(&path, Some(&c), &heads(2));
        assert_eq!(m.config.image_size, (8, 12), "{cfg}");
        assert_eq!(m.config.grid(), (2, 3));
        check_weights(&m.weights, &s);
    }
    let o = ConfigOverrides {
        num_heads: Some(2),
        image_size: Some((8, 12)),
        ..Default::default()
    };
    assert_eq!(load(&path, None, &o).config.image_size, (8, 12));
}

#[test]
fn labels_from_each_form() {
    let dir = Dir::new();
    let s = Synth {
        c: 3,
        ..Default::default()
    };
    let path = dir.ckpt("m.safetensors", &s.tensors());
    let want = vec!["cat".to_string(), "dog".into(), "fox".into()];
    for cfg in [
        r#"{"label_names": ["cat", "dog", "fox"]}"#,
        r#"{"labels": ["cat", "dog", "fox"]}"#,
        r#"{"id2label": {"2": "fox", "0": "cat", "1": "dog"}}"#,
    ] {
        let c = dir.write("c.json", cfg);
        let m = load(&path, Some(&c), &heads(2));
        assert_eq!(m.config.labels.as_ref(), Some(&want), "{cfg}");
        assert_eq!(m.config.label(1), Some("dog"));
    }
}

#[test]
fn config_values_are_used() {
    let dir = Dir::new();
    let path = dir.ckpt("m.safetensors", &Synth::default().tensors());
    let c = dir.write(
        "c.json",
        r#"{"architecture": "vit_tiny_test", "layer_norm_eps": 1e-12, "global_pool": "token",
            "unknown_key": {"anything": [1, 2]},
            "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "mean": [0.1, 0.1, 0.1]}"#,
    );
    let m = load(&path, Some(&c), &heads(2));
    assert_eq!(m.config.name, "vit_tiny_test");
    assert_eq!(m.config.layer_norm_eps, 1e-12);
    assert_eq!(m.config.mean, [0.485, 0.456, 0.406]);
    assert_eq!(m.config.std, [0.229, 0.224, 0.225]);
    let c = dir.write(
        "c.json",
        r#"{"image_mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}"#,
    );
    let m = load(&path, Some(&c), &heads(2));
    assert_eq!(
        (m.config.mean, m.config.std),
        ([0.1, 0.2, 0.3], [1.0, 2.0, 3.0])
    );
    let o = ConfigOverrides {
        num_heads: Some(2),
        mean: Some([0.0; 3]),
        std: Some([1.0; 3]),
        ..Default::default()
    };
    let m = load(&path, Some(&c), &o);
    assert_eq!((m.config.mean, m.config.std), ([0.0; 3], [1.0; 3]));
}

#[test]
fn config_discovery_by_stem_then_config_json() {
    let dir = Dir::new();
    let path = dir.ckpt("vit_small.safetensors", &Synth::default().tensors());
    // No config at all.
    assert_eq!(load(&path, None, &heads(2)).config.name, "vit_small");
    // config.json in the same folder.
    dir.write(
        "config.json",
        r#"{"architecture": "from_config_json", "num_heads": 4}"#,
    );
    let m = load(&path, None, &ConfigOverrides::default());
    assert_eq!(
        (m.config.name.as_str(), m.config.num_heads),
        ("from_config_json", 4)
    );
    // `<stem>.json` wins over config.json.
    dir.write(
        "vit_small.json",
        r#"{"architecture": "from_stem", "num_heads": 2}"#,
    );
    let m = load(&path, None, &ConfigOverrides::default());
    assert_eq!(
        (m.config.name.as_str(), m.config.num_heads),
        ("from_stem", 2)
    );
    // An explicit config wins over both.
    let c = dir.write(
        "other.json",
        r#"{"architecture": "explicit", "num_heads": 8}"#,
    );
    assert_eq!(
        load(&path, Some(&c), &ConfigOverrides::default())
            .config
            .name,
        "explicit"
    );
}

#[test]
fn summary_describes_the_model() {
    let dir = Dir::new();
    let s = Synth {
        grid: (2, 3),
        layer_scale: true,
        ..Default::default()
    };
    let path = dir.ckpt("m.safetensors", &s.tensors());
    let c = dir.write(
        "c.json",
        r#"{"img_size": [8, 12], "labels": ["a", "b", "c", "d", "e"]}"#,
    );
    let m = load(&path, Some(&c), &heads(2));
    let text = m.summary();
    let params: usize = s
        .tensors()
        .values()
        .map(|sh| sh.iter().product::<usize>())
        .sum();
    assert_eq!(m.weights.num_params(), params);
    for part in [
        "m\n",
        "8x12 px",
        "2x3",
        "7 (class token + 6 patches)",
        "layer scale    yes",
        "known (5 names)",
        &params.to_string(),
    ] {
        assert!(text.contains(part), "summary lacks {part:?}:\n{text}");
    }
}

// ---------------------------------------------------------------- bad inputs

#[test]
fn missing_tensor_is_named() {
    let dir = Dir::new();
    let mut t = Synth::default().tensors();
    t.remove("blocks.1.attn.proj.weight");
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert!(matches!(e, Error::Checkpoint { .. }));
    assert_msg(
        &e,
        &[
            "missing tensor `blocks.1.attn.proj.weight`",
            "m.safetensors",
        ],
    );
}

#[test]
fn hugging_face_naming_gets_a_hint() {
    let dir = Dir::new();
    let t: Tensors = [
        ("vit.embeddings.cls_token".to_string(), vec![1, 1, 8]),
        (
            "vit.encoder.layer.0.attention.attention.query.weight".to_string(),
            vec![8, 8],
        ),
        ("classifier.weight".to_string(), vec![5, 8]),
    ]
    .into_iter()
    .collect();
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(
        &e,
        &[
            "missing tensor `cls_token`",
            "Hugging Face ViT checkpoints are not supported yet",
        ],
    );
}

#[test]
fn wrong_shape_names_tensor_expected_and_actual() {
    let dir = Dir::new();
    let mut t = Synth::default().tensors();
    t.insert("blocks.1.mlp.fc2.weight".into(), vec![8, 17]);
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    match &e {
        Error::Shape {
            name,
            expected,
            actual,
        } => {
            assert_eq!(name, "blocks.1.mlp.fc2.weight");
            assert_eq!(expected, &[8, 16]);
            assert_eq!(actual, &[8, 17]);
        }
        other => panic!("expected a shape error, got {other}"),
    }
    assert_msg(&e, &["blocks.1.mlp.fc2.weight", "[8, 16]", "[8, 17]"]);

    // A shape that breaks the inference itself.
    let mut t = Synth::default().tensors();
    t.insert("head.weight".into(), vec![5, 9]);
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(&e, &["`head.weight`", "[5, 8]", "[5, 9]"]);
}

#[test]
fn truncated_file() {
    let dir = Dir::new();
    let bytes = serialize_with(&Synth::default().tensors(), |_| Dtype::F32);
    let path = dir.write("m.safetensors", &bytes[..bytes.len() - 10]);
    let e = load_err(&path, None, &heads(2));
    assert_msg(
        &e,
        &["m.safetensors", "not a valid safetensors file", "truncated"],
    );
    // Cut inside the header.
    let path = dir.write("h.safetensors", &bytes[..40]);
    assert_msg(
        &load_err(&path, None, &heads(2)),
        &["not a valid safetensors file", "header length"],
    );
    // Empty file.
    let path = dir.write("e.safetensors", b"");
    assert_msg(
        &load_err(&path, None, &heads(2)),
        &["not a valid safetensors file", "0 bytes"],
    );
}

#[test]
fn not_a_safetensors_file() {
    let dir = Dir::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = dir.write("random.safetensors", &random);
    assert_msg(
        &load_err(&path, None, &heads(2)),
        &["random.safetensors", "not a valid safetensors file ("],
    );

    let path = dir.write(
        "config.safetensors",
        r#"{"num_heads": 12, "img_size": 224}"#,
    );
    assert_msg(
        &load_err(&path, None, &heads(2)),
        &["not a valid safetensors file", "JSON"],
    );

    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&random);
    let path = dir.write("model.pth", &zip);
    assert_msg(
        &load_err(&path, None, &heads(2)),
        &["not a valid safetensors file", "ZIP", ".pth"],
    );

    let mut pickle = vec![0x80, 0x02];
    pickle.extend_from_slice(&random);
    let path = dir.write("pytorch_model.bin", &pickle);
    assert_msg(
        &load_err(&path, None, &heads(2)),
        &["not a valid safetensors file", "pickle"],
    );
}

#[test]
fn missing_files_are_io_errors() {
    let dir = Dir::new();
    let e = load_err(&dir.path("nope.safetensors"), None, &heads(2));
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_msg(&e, &["nope.safetensors"]);

    let path = dir.ckpt("m.safetensors", &Synth::default().tensors());
    let e = load_err(&path, Some(&dir.path("missing.json")), &heads(2));
    assert!(matches!(e, Error::Io { .. }), "{e}");
    assert_msg(&e, &["missing.json"]);

    let c = dir.write("bad.json", "{\"num_heads\": 2,\n oops}");
    let e = load_err(&path, Some(&c), &heads(2));
    assert_msg(&e, &["bad.json", "cannot parse the JSON config", "line 2"]);

    // A discovered config that does not parse is an error too, not silently skipped.
    dir.write("config.json", "not json");
    assert_msg(
        &load_err(&path, None, &heads(2)),
        &["config.json", "cannot parse"],
    );
}

#[test]
fn unsupported_dtype() {
    let dir = Dir::new();
    let bytes = serialize_with(&Synth::default().tensors(), |n| {
        if n == "blocks.0.norm2.bias" {
            Dtype::I64
        } else {
            Dtype::F32
        }
    });
    let e = load_err(&dir.write("m.safetensors", bytes), None, &heads(2));
    assert_msg(&e, &["`blocks.0.norm2.bias`", "I64", "F32, F16, BF16"]);
}

#[test]
fn non_square_grid_without_config() {
    let dir = Dir::new();
    let s = Synth {
        grid: (3, 6),
        ..Default::default()
    };
    let e = load_err(&dir.ckpt("m.safetensors", &s.tensors()), None, &heads(2));
    assert_msg(
        &e,
        &[
            "pos_embed holds 18 patch positions, which is not a square grid",
            "--image-size",
        ],
    );

    // 8 patch positions plus the class position make 9 = 3x3: likely `no_embed_class`.
    let mut t = Synth::default().tensors();
    t.insert("pos_embed".into(), vec![1, 9, 8]);
    let e = load_err(&dir.ckpt("n.safetensors", &t), None, &heads(2));
    assert_msg(&e, &["8 patch positions", "no_embed_class"]);
}

#[test]
fn config_image_size_must_match_pos_embed() {
    let dir = Dir::new();
    let path = dir.ckpt("m.safetensors", &Synth::default().tensors());
    let c = dir.write("c.json", r#"{"img_size": [8, 12]}"#);
    let e = load_err(&path, Some(&c), &heads(2));
    match &e {
        Error::Shape {
            name,
            expected,
            actual,
        } => {
            assert!(name.starts_with("pos_embed"), "{name}");
            assert_eq!(
                (expected.as_slice(), actual.as_slice()),
                (&[1, 7, 8][..], &[1, 10, 8][..])
            );
        }
        other => panic!("expected a shape error, got {other}"),
    }
    assert_msg(&e, &["pos_embed", "image size 8x12", "img_size"]);

    let c = dir.write("c.json", r#"{"img_size": 13}"#);
    assert_msg(
        &load_err(&path, Some(&c), &heads(2)),
        &["`img_size`", "13x13", "patch size 4"],
    );

    let o = ConfigOverrides {
        num_heads: Some(2),
        image_size: Some((16, 16)),
        ..Default::default()
    };
    assert_msg(
        &load_err(&path, None, &o),
        &["pos_embed", "16x16 from --image-size"],
    );

    // Absurd sizes are refused without overflowing.
    let huge = (usize::MAX / 8) * 4;
    let o = ConfigOverrides {
        num_heads: Some(2),
        image_size: Some((huge, huge)),
        ..Default::default()
    };
    assert_msg(&load_err(&path, None, &o), &["pos_embed"]);
}

#[test]
fn mixed_layer_scale() {
    let dir = Dir::new();
    let mut t = Synth {
        layer_scale: true,
        ..Default::default()
    }
    .tensors();
    t.remove("blocks.1.ls2.gamma");
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(
        &e,
        &["layer scale is mixed", "`blocks.1.ls2.gamma` is missing"],
    );
}

#[test]
fn label_count_mismatch() {
    let dir = Dir::new();
    let path = dir.ckpt("m.safetensors", &Synth::default().tensors());
    let c = dir.write("c.json", r#"{"label_names": ["a", "b"]}"#);
    let e = load_err(&path, Some(&c), &heads(2));
    assert_msg(
        &e,
        &["c.json", "`label_names` lists 2 labels", "has 5 classes"],
    );
}

#[test]
fn embed_dim_not_divisible_by_heads() {
    let dir = Dir::new();
    let path = dir.ckpt("m.safetensors", &Synth::default().tensors());
    let e = load_err(&path, None, &heads(3));
    assert!(matches!(e, Error::Invalid(_)));
    assert_msg(&e, &["D=8", "3 heads", "--heads"]);
    let c = dir.write("c.json", r#"{"num_heads": 5}"#);
    assert_msg(
        &load_err(&path, Some(&c), &ConfigOverrides::default()),
        &["D=8", "5 heads", "num_heads"],
    );
    assert_msg(&load_err(&path, None, &heads(0)), &["--heads"]);
    // D = 8 is not in the standard table.
    assert_msg(
        &load_err(&path, None, &ConfigOverrides::default()),
        &[
            "cannot infer the number of attention heads for embed dim D=8",
            "--heads N",
        ],
    );
}

#[test]
fn block_gaps_and_missing_head() {
    let dir = Dir::new();
    let s = Synth {
        depth: 4,
        ..Default::default()
    };
    let t: Tensors = s
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("blocks.2."))
        .collect();
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(&e, &["not consecutive", "0, 1, 3", "block 2"]);

    let t: Tensors = s
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("head."))
        .collect();
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(&e, &["checkpoint has no classifier head (`head.weight`)"]);
}

#[test]
fn unexpected_tensors_are_refused() {
    let dir = Dir::new();
    let mut t = Synth::default().tensors();
    t.insert("dist_token".into(), vec![1, 1, 8]);
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(&e, &["`dist_token`", "distilled DeiT"]);
    let mut t = Synth::default().tensors();
    t.insert("blocks.0.attn.q_norm.weight".into(), vec![4]);
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(&e, &["`blocks.0.attn.q_norm.weight`", "QK normalisation"]);
}

#[test]
fn bad_channels_and_pooling_conflicts() {
    let dir = Dir::new();
    let mut t = Synth::default().tensors();
    t.insert("patch_embed.proj.weight".into(), vec![8, 1, 4, 4]);
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(&e, &["1 input channels", "RGB"]);

    let path = dir.ckpt("m.safetensors", &Synth::default().tensors());
    let c = dir.write("c.json", r#"{"global_pool": "avg"}"#);
    assert_msg(
        &load_err(&path, Some(&c), &heads(2)),
        &["\"avg\"", "`norm.weight`"],
    );
    let c = dir.write("c.json", r#"{"global_pool": "max"}"#);
    assert_msg(
        &load_err(&path, Some(&c), &heads(2)),
        &["`global_pool`", "\"max\""],
    );
    let c = dir.write("c.json", r#"{"std": [0.5, 0.0, 0.5]}"#);
    assert_msg(
        &load_err(&path, Some(&c), &heads(2)),
        &["`std`", "positive"],
    );
}
