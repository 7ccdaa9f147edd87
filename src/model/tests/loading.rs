//! Checkpoints that load: every tensor in its field, dtype conversion, the optional parts
//! (qkv bias, layer scale, `fc_norm`), the settings taken from the shape table, configs and
//! flags, config discovery, and `Model::summary`.

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::helpers::*;
use crate::model::*;

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
