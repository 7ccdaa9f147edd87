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

/// `--mean 0.5,0.5,0.5 --std 0.5,0.5,0.5`: synthetic checkpoints mostly come without a config.
fn norm() -> ConfigOverrides {
    ConfigOverrides {
        mean: Some([0.5; 3]),
        std: Some([0.5; 3]),
        ..Default::default()
    }
}

/// `--heads h` plus [`norm`].
fn heads(h: usize) -> ConfigOverrides {
    ConfigOverrides {
        num_heads: Some(h),
        ..norm()
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
    assert_eq!(load(&path, None, &norm()).config.num_heads, 3);
    for (cfg, h) in [
        (r#"{"model_args": {"num_heads": 4}, "num_heads": 6}"#, 4),
        (r#"{"num_heads": 6, "num_attention_heads": 8}"#, 6),
        (r#"{"num_attention_heads": 8}"#, 8),
    ] {
        dir.write("vit.json", cfg);
        assert_eq!(load(&path, None, &norm()).config.num_heads, h, "{cfg}");
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
        ..norm()
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
    let only_heads = ConfigOverrides {
        num_heads: Some(2),
        ..Default::default()
    };
    let m = load(&path, Some(&c), &only_heads);
    assert_eq!(m.config.name, "vit_tiny_test");
    assert_eq!(m.config.layer_norm_eps, 1e-12);
    assert_eq!(m.config.mean, [0.485, 0.456, 0.406]);
    assert_eq!(m.config.std, [0.229, 0.224, 0.225]);
    let c = dir.write(
        "c.json",
        r#"{"image_mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}"#,
    );
    let m = load(&path, Some(&c), &only_heads);
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
        r#"{"architecture": "vit_from_config_json", "num_heads": 4}"#,
    );
    let m = load(&path, None, &norm());
    assert_eq!(
        (m.config.name.as_str(), m.config.num_heads),
        ("vit_from_config_json", 4)
    );
    // `<stem>.json` wins over config.json.
    dir.write(
        "vit_small.json",
        r#"{"architecture": "vit_from_stem", "num_heads": 2}"#,
    );
    let m = load(&path, None, &norm());
    assert_eq!(
        (m.config.name.as_str(), m.config.num_heads),
        ("vit_from_stem", 2)
    );
    // An explicit config wins over both.
    let c = dir.write(
        "other.json",
        r#"{"architecture": "vit_explicit", "num_heads": 8}"#,
    );
    assert_eq!(load(&path, Some(&c), &norm()).config.name, "vit_explicit");
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
fn foreign_names_get_a_hint() {
    let dir = Dir::new();
    // transformers' in-memory module names, saved with save_file instead of save_pretrained.
    let t: Tensors = [
        ("vit.embeddings.cls_token".to_string(), vec![1, 1, 8]),
        (
            "vit.layers.0.attention.q_proj.weight".to_string(),
            vec![8, 8],
        ),
        ("classifier.weight".to_string(), vec![5, 8]),
    ]
    .into_iter()
    .collect();
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(&e, &["in-memory module names", "save_pretrained"]);
    // A wrapped timm state dict.
    let t: Tensors = Synth::default()
        .tensors()
        .into_iter()
        .map(|(n, s)| (format!("module.{n}"), s))
        .collect();
    let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
    assert_msg(
        &e,
        &["missing tensor `cls_token`", "prefix such as `module.`"],
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

    // 9 = 3x3 positions and no class position: timm's `no_embed_class`, which needs a word
    // from the user or the config (see `no_embed_class_gets_a_zero_class_position`).
    let mut t = Synth::default().tensors();
    t.insert("pos_embed".into(), vec![1, 9, 8]);
    let e = load_err(&dir.ckpt("n.safetensors", &t), None, &heads(2));
    assert_msg(
        &e,
        &[
            "9 positions",
            "3x3 grid without a class-token position",
            "--image-size 12x12",
        ],
    );
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
        ..norm()
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
        ..norm()
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
        &load_err(&path, Some(&c), &norm()),
        &["D=8", "5 heads", "num_heads"],
    );
    assert_msg(&load_err(&path, None, &heads(0)), &["--heads"]);
    // D = 8 is not in the standard table.
    assert_msg(
        &load_err(&path, None, &norm()),
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
    let only_heads = ConfigOverrides {
        num_heads: Some(2),
        mean: Some([0.5; 3]),
        ..Default::default()
    };
    assert_msg(
        &load_err(&path, Some(&c), &only_heads),
        &["`std`", "positive"],
    );
}

// ---------------------------------------------------------------- Hugging Face ViT

/// A synthetic Hugging Face `ViTForImageClassification`, as `save_pretrained` names it.
#[derive(Clone)]
struct SynthHf {
    d: usize,
    depth: usize,
    p: usize,
    f: usize,
    c: usize,
    grid: (usize, usize),
    qkv_bias: bool,
}

impl Default for SynthHf {
    fn default() -> Self {
        SynthHf {
            d: 8,
            depth: 2,
            p: 4,
            f: 12,
            c: 3,
            grid: (2, 3),
            qkv_bias: true,
        }
    }
}

const QKV: [&str; 3] = ["query", "key", "value"];

impl SynthHf {
    fn tensors(&self) -> Tensors {
        let SynthHf { d, p, f, c, .. } = *self;
        let n = 1 + self.grid.0 * self.grid.1;
        let mut t = Tensors::new();
        let mut add = |name: &str, shape: &[usize]| {
            t.insert(name.to_string(), shape.to_vec());
        };
        add("vit.embeddings.cls_token", &[1, 1, d]);
        add("vit.embeddings.position_embeddings", &[1, n, d]);
        add(
            "vit.embeddings.patch_embeddings.projection.weight",
            &[d, 3, p, p],
        );
        add("vit.embeddings.patch_embeddings.projection.bias", &[d]);
        for i in 0..self.depth {
            let b = |leaf: &str| format!("vit.encoder.layer.{i}.{leaf}");
            for part in QKV {
                add(&b(&format!("attention.attention.{part}.weight")), &[d, d]);
                if self.qkv_bias {
                    add(&b(&format!("attention.attention.{part}.bias")), &[d]);
                }
            }
            add(&b("attention.output.dense.weight"), &[d, d]);
            add(&b("attention.output.dense.bias"), &[d]);
            add(&b("intermediate.dense.weight"), &[f, d]);
            add(&b("intermediate.dense.bias"), &[f]);
            add(&b("output.dense.weight"), &[d, f]);
            add(&b("output.dense.bias"), &[d]);
            add(&b("layernorm_before.weight"), &[d]);
            add(&b("layernorm_before.bias"), &[d]);
            add(&b("layernorm_after.weight"), &[d]);
            add(&b("layernorm_after.bias"), &[d]);
        }
        add("vit.layernorm.weight", &[d]);
        add("vit.layernorm.bias", &[d]);
        add("classifier.weight", &[c, d]);
        add("classifier.bias", &[c]);
        t
    }

    /// The `config.json` `save_pretrained` would write (labels `c0`, `c1`, ...).
    fn config(&self) -> serde_json::Value {
        let labels: serde_json::Map<String, serde_json::Value> = (0..self.c)
            .map(|i| (i.to_string(), format!("c{i}").into()))
            .collect();
        serde_json::json!({
            "architectures": ["ViTForImageClassification"],
            "model_type": "vit",
            "hidden_size": self.d,
            "num_hidden_layers": self.depth,
            "num_attention_heads": 2,
            "intermediate_size": self.f,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-12,
            "image_size": [self.grid.0 * self.p, self.grid.1 * self.p],
            "patch_size": self.p,
            "num_channels": 3,
            "qkv_bias": self.qkv_bias,
            "id2label": labels,
            "encoder_stride": 16,
            "pooler_act": "tanh",
        })
    }
}

/// The `preprocessor_config.json` of `ViTImageProcessor` with ImageNet statistics.
const PREPROCESSOR: &str = r#"{"do_normalize": true, "do_rescale": true, "do_resize": true,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    "image_processor_type": "ViTImageProcessor", "resample": 2, "rescale_factor": 0.00392156862745098,
    "size": {"height": 8, "width": 12}}"#;

/// Checks that every tensor of `s` landed in its field, q/k/v fused in that order.
fn check_hf_weights(w: &VitWeights, s: &SynthHf) {
    let (d, f, c, p) = (s.d, s.f, s.c, s.p);
    let n = 1 + s.grid.0 * s.grid.1;
    check(&w.cls_token, "vit.embeddings.cls_token", &[d]);
    check(&w.pos_embed, "vit.embeddings.position_embeddings", &[n, d]);
    check(
        &w.patch_w,
        "vit.embeddings.patch_embeddings.projection.weight",
        &[d, 3, p, p],
    );
    check(
        &w.patch_b,
        "vit.embeddings.patch_embeddings.projection.bias",
        &[d],
    );
    assert_eq!(w.blocks.len(), s.depth);
    for (i, b) in w.blocks.iter().enumerate() {
        let nm = |leaf: &str| format!("vit.encoder.layer.{i}.{leaf}");
        let fused = |leaf: &str, len: usize| -> Vec<f32> {
            QKV.iter()
                .flat_map(|part| values(&nm(&format!("attention.attention.{part}.{leaf}")), len))
                .collect()
        };
        assert_eq!(b.qkv_w.shape, [3 * d, d]);
        assert_eq!(b.qkv_w.data, fused("weight", d * d), "block {i} qkv weight");
        assert_eq!(b.qkv_b.shape, [3 * d]);
        if s.qkv_bias {
            assert_eq!(b.qkv_b.data, fused("bias", d), "block {i} qkv bias");
        } else {
            assert!(b.qkv_b.data.iter().all(|&x| x == 0.0));
        }
        check(&b.norm1_w, &nm("layernorm_before.weight"), &[d]);
        check(&b.norm1_b, &nm("layernorm_before.bias"), &[d]);
        check(&b.proj_w, &nm("attention.output.dense.weight"), &[d, d]);
        check(&b.proj_b, &nm("attention.output.dense.bias"), &[d]);
        check(&b.norm2_w, &nm("layernorm_after.weight"), &[d]);
        check(&b.norm2_b, &nm("layernorm_after.bias"), &[d]);
        check(&b.fc1_w, &nm("intermediate.dense.weight"), &[f, d]);
        check(&b.fc1_b, &nm("intermediate.dense.bias"), &[f]);
        check(&b.fc2_w, &nm("output.dense.weight"), &[d, f]);
        check(&b.fc2_b, &nm("output.dense.bias"), &[d]);
        assert!(b.ls1.is_none() && b.ls2.is_none());
    }
    check(&w.norm_w, "vit.layernorm.weight", &[d]);
    check(&w.norm_b, "vit.layernorm.bias", &[d]);
    check(&w.head_w, "classifier.weight", &[c, d]);
    check(&w.head_b, "classifier.bias", &[c]);
}

/// A folder laid out as `save_pretrained` + `ViTImageProcessor.save_pretrained` write it.
fn hf_folder(s: &SynthHf, config: &serde_json::Value) -> Dir {
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &s.tensors());
    dir.write("config.json", config.to_string());
    dir.write("preprocessor_config.json", PREPROCESSOR);
    dir
}

/// `config` with `key` set to `value` (`null` removes it).
fn with(config: &serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    let mut c = config.clone();
    let map = c.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_string(), value);
    }
    c
}

#[test]
fn hf_folder_loads_without_flags() {
    let s = SynthHf::default();
    let dir = hf_folder(&s, &s.config());
    let m = load(dir.0.path(), None, &ConfigOverrides::default());
    let c = &m.config;
    assert_eq!(c.name, "ViTForImageClassification");
    assert_eq!(
        (
            c.embed_dim,
            c.depth,
            c.num_heads,
            c.mlp_hidden,
            c.patch_size
        ),
        (8, 2, 2, 12, 4)
    );
    assert_eq!(
        (c.image_size, c.grid(), c.num_classes),
        ((8, 12), (2, 3), 3)
    );
    assert_eq!(c.layer_norm_eps, 1e-12);
    assert_eq!(c.pooling, Pooling::Token);
    assert!(!c.layer_scale);
    assert_eq!(c.mean, [0.485, 0.456, 0.406]);
    assert_eq!(c.std, [0.229, 0.224, 0.225]);
    assert_eq!(
        c.labels.as_deref(),
        Some(&["c0".to_string(), "c1".into(), "c2".into()][..])
    );
    check_hf_weights(&m.weights, &s);

    let src = &m.provenance;
    assert_eq!(
        src.weights.as_deref(),
        Some(dir.path("model.safetensors").as_path())
    );
    assert_eq!(
        src.config.as_deref(),
        Some(dir.path("config.json").as_path())
    );
    assert_eq!(
        src.preprocessor.as_deref(),
        Some(dir.path("preprocessor_config.json").as_path())
    );
    let text = m.summary();
    for part in [
        "Hugging Face ViTForImageClassification names",
        "`num_attention_heads` in",
        "`image_size` in",
        "`image_mean`/`image_std` in",
        "preprocessor_config.json",
        "`id2label` in",
        "query, key and value fused",
        "LayerNorm eps  1e-12",
    ] {
        assert!(text.contains(part), "summary lacks {part:?}:\n{text}");
    }

    // The same through the file, and with the config named explicitly.
    let m = load(
        &dir.path("model.safetensors"),
        Some(&dir.path("config.json")),
        &ConfigOverrides::default(),
    );
    check_hf_weights(&m.weights, &s);
}

#[test]
fn hf_defaults_and_bias_free_qkv() {
    // Keys a config may leave out: layer_norm_eps (transformers' default 1e-12), hidden_act
    // ("gelu"), qkv_bias.
    let s = SynthHf {
        qkv_bias: false,
        ..Default::default()
    };
    let mut config = s.config();
    for key in ["layer_norm_eps", "hidden_act", "qkv_bias"] {
        config = with(&config, key, serde_json::Value::Null);
    }
    let dir = hf_folder(&s, &config);
    let m = load(dir.0.path(), None, &ConfigOverrides::default());
    assert_eq!(m.config.layer_norm_eps, 1e-12);
    check_hf_weights(&m.weights, &s);
    assert!(m.summary().contains("no query/key/value bias"));

    // qkv_bias: true in the config but no bias tensors.
    dir.write(
        "config.json",
        with(&config, "qkv_bias", true.into()).to_string(),
    );
    let e = load_err(dir.0.path(), None, &ConfigOverrides::default());
    assert_msg(
        &e,
        &[
            "config.json",
            "`qkv_bias` is true",
            "has no query/key/value bias",
        ],
    );
}

#[test]
fn hf_missing_query_key_or_value() {
    let s = SynthHf::default();
    for (drop, parts) in [
        (
            "vit.encoder.layer.1.attention.attention.key.weight",
            &["missing tensor `vit.encoder.layer.1.attention.attention.key.weight`"][..],
        ),
        (
            "vit.encoder.layer.0.attention.attention.value.bias",
            &[
                "missing tensor `vit.encoder.layer.0.attention.attention.value.bias`",
                "not all three of query, key and value",
            ][..],
        ),
    ] {
        let mut t = s.tensors();
        t.remove(drop);
        let dir = Dir::new();
        dir.ckpt("model.safetensors", &t);
        dir.write("config.json", s.config().to_string());
        dir.write("preprocessor_config.json", PREPROCESSOR);
        let e = load_err(dir.0.path(), None, &ConfigOverrides::default());
        assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
        assert_msg(&e, parts);
    }
    // All three weights of a block gone.
    let t: Tensors = s
        .tensors()
        .into_iter()
        .filter(|(n, _)| {
            !(n.starts_with("vit.encoder.layer.1.attention.attention.") && n.ends_with("weight"))
        })
        .collect();
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &t);
    dir.write("config.json", s.config().to_string());
    dir.write("preprocessor_config.json", PREPROCESSOR);
    let e = load_err(dir.0.path(), None, &ConfigOverrides::default());
    assert_msg(
        &e,
        &["missing tensor `vit.encoder.layer.1.attention.attention.{query,key,value}.weight`"],
    );
    // A wrong shape names the part.
    let mut t = s.tensors();
    t.insert(
        "vit.encoder.layer.0.attention.attention.query.weight".into(),
        vec![8, 9],
    );
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &t);
    dir.write("config.json", s.config().to_string());
    dir.write("preprocessor_config.json", PREPROCESSOR);
    let e = load_err(dir.0.path(), None, &ConfigOverrides::default());
    assert_msg(
        &e,
        &[
            "vit.encoder.layer.0.attention.attention.query.weight",
            "[8, 8]",
            "[8, 9]",
        ],
    );
}

#[test]
fn hf_unsupported_activation() {
    let s = SynthHf::default();
    for act in ["gelu_new", "gelu_pytorch_tanh", "relu"] {
        let dir = hf_folder(&s, &with(&s.config(), "hidden_act", act.into()));
        let e = load_err(dir.0.path(), None, &ConfigOverrides::default());
        assert_msg(
            &e,
            &[
                "config.json",
                "`hidden_act`",
                act,
                "unsupported activation",
                "erf",
            ],
        );
    }
}

#[test]
fn hf_config_inconsistent_with_tensors() {
    let s = SynthHf::default();
    let base = s.config();
    for (key, value, parts) in [
        (
            "hidden_size",
            serde_json::json!(16),
            &["`hidden_size` is 16", "D = 8"][..],
        ),
        (
            "num_hidden_layers",
            serde_json::json!(3),
            &["`num_hidden_layers` is 3", "2 transformer blocks"][..],
        ),
        (
            "intermediate_size",
            serde_json::json!(32),
            &["`intermediate_size` is 32", "MLP width of 12"][..],
        ),
        (
            "patch_size",
            serde_json::json!(2),
            &["`patch_size` says 2x2", "4x4"][..],
        ),
        (
            "num_channels",
            serde_json::json!(1),
            &["`num_channels` is 1", "RGB"][..],
        ),
        (
            "num_attention_heads",
            serde_json::json!(3),
            &["D=8 is not divisible by 3 heads", "`num_attention_heads`"][..],
        ),
        (
            "image_size",
            serde_json::json!(12),
            &[
                "vit.embeddings.position_embeddings",
                "12x12",
                "`image_size`",
            ][..],
        ),
        (
            "id2label",
            serde_json::json!({"0": "a", "1": "b"}),
            &[
                "`id2label` lists 2 labels",
                "`classifier.weight`",
                "3 classes",
            ][..],
        ),
    ] {
        let dir = hf_folder(&s, &with(&base, key, value));
        let e = load_err(dir.0.path(), None, &ConfigOverrides::default());
        assert_msg(&e, parts);
    }
}

#[test]
fn what_cannot_be_inferred_names_the_flag() {
    // No heads anywhere and D = 8 is no standard width.
    let s = SynthHf::default();
    let dir = hf_folder(
        &s,
        &with(&s.config(), "num_attention_heads", serde_json::Value::Null),
    );
    let e = load_err(dir.0.path(), None, &ConfigOverrides::default());
    assert_msg(
        &e,
        &[
            "cannot infer the number of attention heads",
            "--heads",
            "`num_attention_heads`",
        ],
    );
    let o = ConfigOverrides {
        num_heads: Some(4),
        ..Default::default()
    };
    assert_eq!(load(dir.0.path(), None, &o).config.num_heads, 4);

    // No mean/std: no preprocessor_config.json, nothing in config.json. The default 0.5 is
    // used, visibly: a warning names the flags.
    let dir = hf_folder(&s, &s.config());
    std::fs::remove_file(dir.path("preprocessor_config.json")).unwrap();
    let m = load(dir.0.path(), None, &ConfigOverrides::default());
    assert_eq!((m.config.mean, m.config.std), ([0.5; 3], [0.5; 3]));
    assert!(m.provenance.preprocessing.contains("default 0.5"));
    let warning = m.provenance.warnings.join("\n");
    for part in ["mean and std", "--mean", "--std", "0.485,0.456,0.406"] {
        assert!(warning.contains(part), "{part} not in {warning}");
    }
    let o = ConfigOverrides {
        mean: Some([0.25; 3]),
        ..Default::default()
    };
    let m = load(dir.0.path(), None, &o);
    assert_eq!((m.config.mean, m.config.std), ([0.25; 3], [0.5; 3]));
    assert!(m
        .provenance
        .warnings
        .join("")
        .contains("normalisation std not given"));
    let m = load(dir.0.path(), None, &norm());
    assert_eq!(m.provenance.preprocessing, "--mean/--std");

    // A 2x3 grid with no size in any config.
    let dir = hf_folder(
        &s,
        &with(&s.config(), "image_size", serde_json::Value::Null),
    );
    dir.write(
        "preprocessor_config.json",
        r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}"#,
    );
    let e = load_err(dir.0.path(), None, &ConfigOverrides::default());
    assert_msg(
        &e,
        &[
            "6 patch positions, which is not a square grid",
            "--image-size",
            "--config",
        ],
    );
    let o = ConfigOverrides {
        image_size: Some((8, 12)),
        ..Default::default()
    };
    let m = load(dir.0.path(), None, &o);
    assert_eq!(
        (m.config.image_size, m.provenance.image_size.as_str()),
        ((8, 12), "--image-size")
    );
}

#[test]
fn preprocessor_config_forms() {
    let s = SynthHf::default();
    let config = with(&s.config(), "image_size", serde_json::Value::Null);
    // (preprocessor_config.json, image size, mean, std)
    type Case = (&'static str, (usize, usize), [f32; 3], [f32; 3]);
    let cases: [Case; 5] = [
        // size as {height, width}
        (
            r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": 8, "width": 12}}"#,
            (8, 12),
            [0.5; 3],
            [0.5; 3],
        ),
        // crop_size wins when do_center_crop
        (
            r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": 16,
                "do_center_crop": true, "crop_size": {"height": 8, "width": 12}}"#,
            (8, 12),
            [0.5; 3],
            [0.5; 3],
        ),
        // do_normalize false: mean 0, std 1
        (
            r#"{"do_normalize": false, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "size": {"height": 8, "width": 12}}"#,
            (8, 12),
            [0.0; 3],
            [1.0; 3],
        ),
        // rescale_factor 1/127.5 folded: (p/127.5 - 1)/1 == (p/255 - 0.5)/0.5
        (
            r#"{"rescale_factor": 0.00784313725490196, "image_mean": [1, 1, 1], "image_std": [1, 1, 1],
                "size": {"height": 8, "width": 12}}"#,
            (8, 12),
            [0.5; 3],
            [0.5; 3],
        ),
        // do_rescale false: pixel values 0..255 normalised directly
        (
            r#"{"do_rescale": false, "image_mean": [127.5, 127.5, 127.5], "image_std": [63.75, 63.75, 63.75],
                "size": {"height": 8, "width": 12}}"#,
            (8, 12),
            [0.5; 3],
            [0.25; 3],
        ),
    ];
    for (pre, size, mean, std) in cases {
        let dir = hf_folder(&s, &config);
        dir.write("preprocessor_config.json", pre);
        let m = load(dir.0.path(), None, &ConfigOverrides::default());
        assert_eq!(m.config.image_size, size, "{pre}");
        for (a, b) in m
            .config
            .mean
            .iter()
            .zip(mean)
            .chain(m.config.std.iter().zip(std))
        {
            assert!(
                (a - b).abs() < 1e-6,
                "{pre}: {:?} / {:?}",
                m.config.mean,
                m.config.std
            );
        }
    }
    // {"shortest_edge"} gives no size; an int size is square, so the 2x3 grid needs config.json's.
    let dir = hf_folder(&s, &s.config());
    dir.write(
        "preprocessor_config.json",
        r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"shortest_edge": 12}}"#,
    );
    assert_eq!(
        load(dir.0.path(), None, &ConfigOverrides::default())
            .config
            .image_size,
        (8, 12)
    );
    let square = SynthHf {
        grid: (3, 3),
        ..Default::default()
    };
    let dir = hf_folder(
        &square,
        &with(&square.config(), "image_size", serde_json::Value::Null),
    );
    dir.write(
        "preprocessor_config.json",
        r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": 12}"#,
    );
    let m = load(dir.0.path(), None, &ConfigOverrides::default());
    assert_eq!(m.config.image_size, (12, 12));
    assert!(
        m.provenance.image_size.contains("`size` in"),
        "{}",
        m.provenance.image_size
    );
    // Half a normalisation is an error.
    dir.write(
        "preprocessor_config.json",
        r#"{"image_mean": [0.5, 0.5, 0.5]}"#,
    );
    assert_msg(
        &load_err(dir.0.path(), None, &ConfigOverrides::default()),
        &[
            "preprocessor_config.json",
            "`image_mean` is given but `image_std` is not",
        ],
    );
}

#[test]
fn unknown_or_mismatched_architecture_hints() {
    let s = SynthHf::default();
    for (key, value, parts) in [
        (
            "architectures",
            serde_json::json!(["SwinForImageClassification"]),
            &["unknown architecture", "SwinForImageClassification"][..],
        ),
        (
            "model_type",
            serde_json::json!("swin"),
            &["unknown architecture", "\"swin\""][..],
        ),
        (
            "architectures",
            serde_json::json!(["DeiTForImageClassificationWithTeacher"]),
            &["unsupported: distilled DeiT (class + distillation token)"][..],
        ),
    ] {
        let dir = hf_folder(&s, &with(&s.config(), key, value));
        assert_msg(
            &load_err(dir.0.path(), None, &ConfigOverrides::default()),
            parts,
        );
    }
    // timm config beside Hugging Face tensors, and the other way round.
    let dir = hf_folder(
        &s,
        &serde_json::json!({"architecture": "vit_base_patch16_224"}),
    );
    assert_msg(
        &load_err(dir.0.path(), None, &ConfigOverrides::default()),
        &["this is a timm config", "Hugging Face names"],
    );
    let dir = Dir::new();
    let path = dir.ckpt("m.safetensors", &Synth::default().tensors());
    let c = dir.write("c.json", s.config().to_string());
    assert_msg(
        &load_err(&path, Some(&c), &heads(2)),
        &["this is a Hugging Face config", "timm names"],
    );
    // timm architecture names.
    for (arch, parts) in [
        (
            "convnext_tiny",
            &["unknown architecture \"convnext_tiny\"", "`vit_*`"][..],
        ),
        ("my_model", &["unknown architecture \"my_model\""][..]),
        (
            "deit_base_distilled_patch16_224",
            &["unsupported: distilled DeiT (class + distillation token)"][..],
        ),
    ] {
        let c = dir.write(
            "c.json",
            serde_json::json!({ "architecture": arch }).to_string(),
        );
        assert_msg(&load_err(&path, Some(&c), &heads(2)), parts);
    }
    for arch in [
        "vit_small_patch16_224",
        "deit_tiny_patch16_224",
        "deit3_small_patch16_224",
        "flexivit_small",
    ] {
        let c = dir.write(
            "c.json",
            serde_json::json!({ "architecture": arch }).to_string(),
        );
        assert_eq!(load(&path, Some(&c), &heads(2)).config.name, arch);
    }
}

// ---------------------------------------------------------------- timm variants

/// A timm hub `config.json` as timm's `save_for_hf` writes it (no heads: the standard table or a
/// flag supplies them).
fn timm_hub_config(arch: &str, s: &Synth, extra_args: serde_json::Value) -> serde_json::Value {
    let (h, w) = (s.grid.0 * s.p, s.grid.1 * s.p);
    let mut args = serde_json::json!({"in_chans": 3, "num_classes": s.c, "global_pool": "token", "img_size": [h, w]});
    for (k, v) in extra_args.as_object().unwrap() {
        args[k] = v.clone();
    }
    serde_json::json!({
        "architecture": arch,
        "num_classes": s.c,
        "num_features": s.d,
        "global_pool": args["global_pool"],
        "model_args": args,
        "pretrained_cfg": {"tag": "test", "input_size": [3, h, w], "mean": [0.485, 0.456, 0.406],
                           "std": [0.229, 0.224, 0.225], "num_classes": s.c}
    })
}

#[test]
fn no_embed_class_gets_a_zero_class_position() {
    // DeiT III: layer scale, and pos_embed without a class-token row.
    let s = Synth {
        layer_scale: true,
        qkv_bias: false,
        ..Default::default()
    };
    let mut t = s.tensors();
    t.insert("pos_embed".into(), vec![1, 9, s.d]);
    let ok = |m: &Model| {
        assert_eq!(m.config.image_size, (12, 12));
        assert_eq!(m.config.tokens(), 10);
        let pos = &m.weights.pos_embed;
        assert_eq!(pos.shape, [10, s.d]);
        assert!(pos.data[..s.d].iter().all(|&x| x == 0.0));
        assert_eq!(pos.data[s.d..], values("pos_embed", 9 * s.d)[..]);
        assert!(m.config.layer_scale);
        assert!(m.summary().contains("no_embed_class"));
    };
    let dir = Dir::new();
    let path = dir.ckpt("model.safetensors", &t);
    // Confirmed by --image-size, by the deit3 architecture, by model_args, by the input size.
    let o = ConfigOverrides {
        image_size: Some((12, 12)),
        ..heads(2)
    };
    ok(&load(&path, None, &o));
    for config in [
        serde_json::json!({"architecture": "deit3_test"}),
        serde_json::json!({"model_args": {"no_embed_class": true}}),
        timm_hub_config("deit3_small_patch4_test", &s, serde_json::json!({})),
        timm_hub_config(
            "vit_test",
            &s,
            serde_json::json!({"no_embed_class": true, "qkv_bias": false, "init_values": 1e-6}),
        ),
    ] {
        dir.write("config.json", config.to_string());
        ok(&load(dir.0.path(), None, &heads(2)));
    }
    // The config contradicting the tensors.
    dir.write(
        "config.json",
        serde_json::json!({"model_args": {"no_embed_class": false, "img_size": 12}}).to_string(),
    );
    assert_msg(
        &load_err(dir.0.path(), None, &heads(2)),
        &[
            "`model_args.no_embed_class` is false",
            "none for the class token",
        ],
    );
    let normal = dir.ckpt("n.safetensors", &Synth::default().tensors());
    let c = dir.write(
        "n.json",
        serde_json::json!({"model_args": {"no_embed_class": true}}).to_string(),
    );
    assert_msg(&load_err(&normal, Some(&c), &heads(2)), &["no_embed_class"]);
}

#[test]
fn timm_hub_config_from_save_for_hf() {
    // D = 192 gives 3 heads from the standard table; labels: the bundled ImageNet list.
    let s = Synth {
        d: 192,
        f: 16,
        depth: 1,
        c: 1000,
        p: 16,
        grid: (2, 2),
        ..Default::default()
    };
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &s.tensors());
    dir.write(
        "config.json",
        timm_hub_config("vit_tiny_patch16_test", &s, serde_json::json!({})).to_string(),
    );
    let m = load(dir.0.path(), None, &ConfigOverrides::default());
    assert_eq!((m.config.num_heads, m.config.image_size), (3, (32, 32)));
    assert_eq!(m.config.mean, [0.485, 0.456, 0.406]);
    assert_eq!(m.config.label(0), Some("tench, Tinca tinca"));
    assert_eq!(m.config.labels.as_ref().map(Vec::len), Some(1000));
    let text = m.summary();
    for part in [
        "timm VisionTransformer names",
        "the standard ViT with D=192",
        "`model_args.img_size` in",
        "`pretrained_cfg.mean`/`pretrained_cfg.std` in",
        "the bundled ImageNet-1k list",
    ] {
        assert!(text.contains(part), "summary lacks {part:?}:\n{text}");
    }

    // timm label_names (synsets) with label_descriptions, as a dict or a list.
    let s5 = Synth::default();
    let mut cfg = timm_hub_config("vit_test", &s5, serde_json::json!({}));
    cfg["label_names"] = serde_json::json!({"0": "n0", "1": "n1", "2": "n2", "3": "n3", "4": "n4"});
    cfg["label_descriptions"] = serde_json::json!({"n0": "zero", "n2": "two"});
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &s5.tensors());
    dir.write("config.json", cfg.to_string());
    let m = load(dir.0.path(), None, &heads(2));
    assert_eq!(
        m.config.labels.as_deref(),
        Some(
            &[
                "zero".to_string(),
                "n1".into(),
                "two".into(),
                "n3".into(),
                "n4".into()
            ][..]
        )
    );
}

#[test]
fn timm_config_inconsistent_with_tensors() {
    let s = Synth {
        layer_scale: false,
        ..Default::default()
    };
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &s.tensors());
    for (extra, parts) in [
        (
            serde_json::json!({"embed_dim": 16}),
            &["`model_args.embed_dim` is 16", "D = 8"][..],
        ),
        (
            serde_json::json!({"depth": 12}),
            &["`model_args.depth` is 12", "2 transformer blocks"][..],
        ),
        (
            serde_json::json!({"mlp_ratio": 4.0}),
            &[
                "`model_args.mlp_ratio` is 4",
                "`blocks.0.mlp.fc1.weight` has 16",
            ][..],
        ),
        (
            serde_json::json!({"patch_size": 16}),
            &["`model_args.patch_size` says 16x16"][..],
        ),
        (
            serde_json::json!({"num_classes": 10}),
            &["`model_args.num_classes` is 10", "5 classes"][..],
        ),
        (
            serde_json::json!({"num_heads": 3}),
            &["D=8 is not divisible by 3 heads"][..],
        ),
        (
            serde_json::json!({"img_size": [12, 16]}),
            &["pos_embed", "12x16"][..],
        ),
        (
            serde_json::json!({"init_values": 1e-5}),
            &["`model_args.init_values` is set", "no layer-scale tensors"][..],
        ),
        (
            serde_json::json!({"qkv_bias": false}),
            &["`model_args.qkv_bias` is false", "has query/key/value bias"][..],
        ),
        (
            serde_json::json!({"act_layer": "gelu_tanh"}),
            &["`model_args.act_layer`", "unsupported activation"][..],
        ),
        (
            serde_json::json!({"class_token": false}),
            &["`model_args.class_token` is false"][..],
        ),
        (
            serde_json::json!({"reg_tokens": 4}),
            &["register tokens"][..],
        ),
        (
            serde_json::json!({"qk_norm": true}),
            &["QK normalisation"][..],
        ),
        (
            serde_json::json!({"pool_include_prefix": true}),
            &["includes the class token"][..],
        ),
        (
            serde_json::json!({"global_pool": "map"}),
            &["attention pooling"][..],
        ),
    ] {
        let mut cfg = timm_hub_config("vit_test", &s, extra.clone());
        cfg.as_object_mut().unwrap().remove("global_pool");
        dir.write("config.json", cfg.to_string());
        // `--heads` would win over `num_heads`.
        let o = if extra.get("num_heads").is_some() {
            norm()
        } else {
            heads(2)
        };
        let e = match load_model(dir.0.path(), None, &o) {
            Ok(_) => panic!("{extra} loaded"),
            Err(e) => e,
        };
        assert_msg(&e, parts);
        assert_msg(&e, &["config.json"]);
    }
    let mut cfg = timm_hub_config("vit_test", &s, serde_json::json!({}));
    cfg["num_features"] = 9.into();
    dir.write("config.json", cfg.to_string());
    assert_msg(
        &load_err(dir.0.path(), None, &heads(2)),
        &["`num_features` is 9"],
    );
}

#[test]
fn average_pooling_reads_fc_norm() {
    // timm `global_pool="avg"`: `fc_norm` replaces the final `norm`, which timm leaves out.
    let s = Synth {
        fc_norm: true,
        ..Default::default()
    };
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &s.tensors());
    let mut cfg = timm_hub_config("vit_test", &s, serde_json::json!({"global_pool": "avg"}));
    dir.write("config.json", cfg.to_string());
    let m = load(dir.0.path(), None, &heads(2));
    assert_eq!(m.config.pooling, Pooling::Avg);
    check(&m.weights.norm_w, "fc_norm.weight", &[s.d]);
    check(&m.weights.norm_b, "fc_norm.bias", &[s.d]);
    assert!(m.summary().contains("average of patch tokens"));
    // The config saying "token" contradicts the tensors.
    cfg["global_pool"] = "token".into();
    cfg["model_args"]["global_pool"] = "token".into();
    dir.write("config.json", cfg.to_string());
    assert_msg(
        &load_err(dir.0.path(), None, &heads(2)),
        &["\"token\"", "`fc_norm.weight`"],
    );
}

#[test]
fn unsupported_variants_are_refused() {
    let dir = Dir::new();
    let base = Synth::default().tensors();
    let cases: [(&str, Vec<usize>, &[&str]); 5] = [
        (
            "dist_token",
            vec![1, 1, 8],
            &["unsupported: distilled DeiT (class + distillation token)"],
        ),
        (
            "head_dist.weight",
            vec![5, 8],
            &["unsupported: distilled DeiT (class + distillation token)"],
        ),
        (
            "reg_token",
            vec![1, 4, 8],
            &["`reg_token`", "register tokens"],
        ),
        ("attn_pool.latent", vec![1, 1, 8], &["attention head"]),
        ("norm_pre.weight", vec![8], &["`norm_pre`"]),
    ];
    for (extra, shape, parts) in cases {
        let mut t = base.clone();
        t.insert(extra.into(), shape);
        let e = load_err(&dir.ckpt("m.safetensors", &t), None, &heads(2));
        assert_msg(&e, parts);
    }
    // Hugging Face DeiT (always distilled).
    let t: Tensors = [(
        "deit.embeddings.distillation_token".to_string(),
        vec![1, 1, 8],
    )]
    .into_iter()
    .collect();
    assert_msg(
        &load_err(&dir.ckpt("d.safetensors", &t), None, &heads(2)),
        &["unsupported: distilled DeiT (class + distillation token)"],
    );
    // No class token (timm class_token=False).
    let mut t = base.clone();
    t.remove("cls_token");
    t.insert("pos_embed".into(), vec![1, 9, 8]);
    assert_msg(
        &load_err(&dir.ckpt("g.safetensors", &t), None, &heads(2)),
        &["no class token", "class_token=False"],
    );
    // A qkv bias in some blocks only.
    let mut t = base.clone();
    t.remove("blocks.1.attn.qkv.bias");
    assert_msg(
        &load_err(&dir.ckpt("b.safetensors", &t), None, &heads(2)),
        &["qkv bias is mixed", "`blocks.1.attn.qkv.bias` is missing"],
    );
}

#[test]
fn labels_placeholders_and_imagenet_fallback() {
    // transformers' LABEL_i placeholders are no names: none for 3 classes...
    let s = SynthHf::default();
    let placeholders: serde_json::Map<String, serde_json::Value> = (0..3)
        .map(|i| (i.to_string(), format!("LABEL_{i}").into()))
        .collect();
    let dir = hf_folder(&s, &with(&s.config(), "id2label", placeholders.into()));
    let m = load(dir.0.path(), None, &ConfigOverrides::default());
    assert!(m.config.labels.is_none());
    assert!(
        m.provenance.labels.contains("placeholders"),
        "{}",
        m.provenance.labels
    );
    // ...and the bundled ImageNet names for 1000.
    let s = SynthHf {
        c: 1000,
        ..Default::default()
    };
    let placeholders: serde_json::Map<String, serde_json::Value> = (0..1000)
        .map(|i| (i.to_string(), format!("LABEL_{i}").into()))
        .collect();
    let dir = hf_folder(&s, &with(&s.config(), "id2label", placeholders.into()));
    let m = load(dir.0.path(), None, &ConfigOverrides::default());
    assert_eq!(
        m.config.label(999),
        Some("toilet tissue, toilet paper, bathroom tissue")
    );
    assert!(m.provenance.labels.contains("bundled ImageNet-1k"));
    // A bare 1000-class checkpoint without any config.
    let s = Synth {
        c: 1000,
        ..Default::default()
    };
    let dir = Dir::new();
    let m = load(&dir.ckpt("m.safetensors", &s.tensors()), None, &heads(2));
    assert_eq!(m.config.label(1), Some("goldfish, Carassius auratus"));
}

#[test]
fn weights_folder_resolution() {
    let s = Synth::default();
    // model.safetensors wins over other files.
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &s.tensors());
    dir.ckpt(
        "other.safetensors",
        &Synth {
            c: 7,
            ..Default::default()
        }
        .tensors(),
    );
    assert_eq!(load(dir.0.path(), None, &heads(2)).config.num_classes, 5);
    // A single safetensors file of any name; its `<stem>.json` is its config.
    let dir = Dir::new();
    dir.ckpt("vit_custom.safetensors", &s.tensors());
    dir.write("vit_custom.json", r#"{"architecture": "vit_custom_arch"}"#);
    let m = load(dir.0.path(), None, &heads(2));
    assert_eq!(m.config.name, "vit_custom_arch");
    // No config: a folder's model.safetensors is named after the folder.
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &s.tensors());
    let folder_name = dir
        .0
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(load(dir.0.path(), None, &heads(2)).config.name, folder_name);

    // Two candidates and no model.safetensors.
    let dir = Dir::new();
    dir.ckpt("a.safetensors", &s.tensors());
    dir.ckpt("b.safetensors", &s.tensors());
    let e = load_err(dir.0.path(), None, &heads(2));
    assert_msg(
        &e,
        &[
            "2 candidate weights files",
            "`a.safetensors`, `b.safetensors`",
            "--weights",
        ],
    );
    // No safetensors at all; a PyTorch file gets a conversion hint.
    let dir = Dir::new();
    dir.write("config.json", "{}");
    assert_msg(
        &load_err(dir.0.path(), None, &heads(2)),
        &["no `.safetensors` file in this folder"],
    );
    dir.write("pytorch_model.bin", b"\x80\x02");
    assert_msg(
        &load_err(dir.0.path(), None, &heads(2)),
        &["`pytorch_model.bin`", "save_pretrained"],
    );
    // Sharded.
    let dir = Dir::new();
    dir.ckpt("model-00001-of-00002.safetensors", &s.tensors());
    dir.write("model.safetensors.index.json", "{}");
    assert_msg(
        &load_err(dir.0.path(), None, &heads(2)),
        &["sharded checkpoint"],
    );
    // A folder that does not exist is an I/O error naming it.
    let e = load_err(&dir.path("missing_folder/"), None, &heads(2));
    assert!(matches!(e, Error::Io { .. }), "{e}");
}
