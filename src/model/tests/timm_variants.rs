//! timm variants and sources: `no_embed_class` (DeiT III), hub configs from `save_for_hf`,
//! average pooling, refused variants, the label fallbacks and weights-folder resolution.

use super::helpers::*;
use crate::error::Error;
use crate::model::*;

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
