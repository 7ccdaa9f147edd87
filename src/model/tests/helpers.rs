//! What the loader tests share: synthetic timm and Hugging Face checkpoints with deterministic
//! values, a temporary folder to write them and their configs into, and the load/assert
//! shorthands every topic uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::error::Error;
use crate::model::*;

/// A deterministic value for element `k` of tensor `name`: a multiple of 1/4 in [-12, 12], exact
/// in f16 and bf16, and different between tensors.
pub(super) fn value(name: &str, k: usize) -> f32 {
    let id = name
        .bytes()
        .fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    (((id % 89) + k * 5) % 97) as f32 / 4.0 - 12.0
}

pub(super) fn values(name: &str, n: usize) -> Vec<f32> {
    (0..n).map(|k| value(name, k)).collect()
}

/// A synthetic timm ViT, as tensor name → (shape, values).
#[derive(Clone)]
pub(super) struct Synth {
    pub(super) d: usize,
    pub(super) depth: usize,
    pub(super) p: usize,
    pub(super) f: usize,
    pub(super) c: usize,
    pub(super) grid: (usize, usize),
    pub(super) qkv_bias: bool,
    pub(super) layer_scale: bool,
    pub(super) fc_norm: bool,
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

pub(super) type Tensors = BTreeMap<String, Vec<usize>>;

impl Synth {
    pub(super) fn tensors(&self) -> Tensors {
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

pub(super) fn encode(dtype: Dtype, v: &[f32]) -> Vec<u8> {
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
pub(super) fn serialize_with(tensors: &Tensors, dtype_of: impl Fn(&str) -> Dtype) -> Vec<u8> {
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
pub(super) struct Dir(pub(super) tempfile::TempDir);

impl Dir {
    pub(super) fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    pub(super) fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    pub(super) fn ckpt(&self, name: &str, tensors: &Tensors) -> PathBuf {
        self.write(name, serialize_with(tensors, |_| Dtype::F32))
    }
}

/// `--mean 0.5,0.5,0.5 --std 0.5,0.5,0.5`: synthetic checkpoints mostly come without a config.
pub(super) fn norm() -> ConfigOverrides {
    ConfigOverrides {
        mean: Some([0.5; 3]),
        std: Some([0.5; 3]),
        ..Default::default()
    }
}

/// `--heads h` plus [`norm`].
pub(super) fn heads(h: usize) -> ConfigOverrides {
    ConfigOverrides {
        num_heads: Some(h),
        ..norm()
    }
}

pub(super) fn load(path: &Path, config: Option<&Path>, o: &ConfigOverrides) -> Model {
    match load_model(path, config, o) {
        Ok(m) => m,
        Err(e) => panic!("load failed: {e}"),
    }
}

pub(super) fn load_err(path: &Path, config: Option<&Path>, o: &ConfigOverrides) -> Error {
    match load_model(path, config, o) {
        Ok(_) => panic!("load unexpectedly succeeded"),
        Err(e) => e,
    }
}

pub(super) fn assert_msg(e: &Error, parts: &[&str]) {
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

pub(super) fn check(t: &HostTensor, name: &str, shape: &[usize]) {
    assert_eq!(t.shape, shape, "shape of {name}");
    assert_eq!(t.data, values(name, t.data.len()), "values of {name}");
}

/// Checks that every tensor of `s` landed in its field with the right values.
pub(super) fn check_weights(w: &VitWeights, s: &Synth) {
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

/// A synthetic Hugging Face `ViTForImageClassification`, as `save_pretrained` names it.
#[derive(Clone)]
pub(super) struct SynthHf {
    pub(super) d: usize,
    pub(super) depth: usize,
    pub(super) p: usize,
    pub(super) f: usize,
    pub(super) c: usize,
    pub(super) grid: (usize, usize),
    pub(super) qkv_bias: bool,
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

pub(super) const QKV: [&str; 3] = ["query", "key", "value"];

impl SynthHf {
    pub(super) fn tensors(&self) -> Tensors {
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
    pub(super) fn config(&self) -> serde_json::Value {
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
pub(super) const PREPROCESSOR: &str = r#"{"do_normalize": true, "do_rescale": true, "do_resize": true,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    "image_processor_type": "ViTImageProcessor", "resample": 2, "rescale_factor": 0.00392156862745098,
    "size": {"height": 8, "width": 12}}"#;

/// A folder laid out as `save_pretrained` + `ViTImageProcessor.save_pretrained` write it.
pub(super) fn hf_folder(s: &SynthHf, config: &serde_json::Value) -> Dir {
    let dir = Dir::new();
    dir.ckpt("model.safetensors", &s.tensors());
    dir.write("config.json", config.to_string());
    dir.write("preprocessor_config.json", PREPROCESSOR);
    dir
}

/// `config` with `key` set to `value` (`null` removes it).
pub(super) fn with(
    config: &serde_json::Value,
    key: &str,
    value: serde_json::Value,
) -> serde_json::Value {
    let mut c = config.clone();
    let map = c.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_string(), value);
    }
    c
}
