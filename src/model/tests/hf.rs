//! Hugging Face `ViTForImageClassification` folders: `save_pretrained` naming with q/k/v fused
//! on load, `config.json` and `preprocessor_config.json`, and what they may and may not say.

use super::helpers::*;
use crate::error::Error;
use crate::model::*;

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
