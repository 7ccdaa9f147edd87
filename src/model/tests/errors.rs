//! Bad inputs: missing, misshapen or unexpected tensors, damaged or foreign files, and configs
//! or flags that contradict the tensors; each must fail with an error that names the cause.

use safetensors::Dtype;

use super::helpers::*;
use crate::error::Error;
use crate::model::*;

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
            path,
            name,
            expected,
            actual,
            ..
        } => {
            assert!(path.ends_with("m.safetensors"), "{}", path.display());
            assert_eq!(name, "blocks.1.mlp.fc2.weight");
            assert_eq!(expected, &[8, 16]);
            assert_eq!(actual, &[8, 17]);
        }
        other => panic!("expected a shape error, got {other}"),
    }
    assert_msg(
        &e,
        &[
            "m.safetensors: tensor",
            "blocks.1.mlp.fc2.weight",
            "[8, 16]",
            "[8, 17]",
        ],
    );

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
            path: file,
            name,
            why,
            expected,
            actual,
        } => {
            assert_eq!(file, &path);
            assert_eq!(name, "pos_embed");
            assert!(why.contains("image size 8x12"), "{why}");
            assert_eq!(
                (expected.as_slice(), actual.as_slice()),
                (&[1, 7, 8][..], &[1, 10, 8][..])
            );
        }
        other => panic!("expected a shape error, got {other}"),
    }
    assert_msg(
        &e,
        &[
            "m.safetensors: tensor `pos_embed`",
            "image size 8x12",
            "img_size",
        ],
    );

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
