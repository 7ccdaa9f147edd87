//! The `agcam` binary end to end: outputs on disk, exit status, and clear errors for bad input.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{agcam, fixture, s, stderr, synth_set};

#[test]
fn explain_writes_overlay_map_and_record_and_reports_bad_images() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("broken.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let out = dir.path().join("out");
    let weights = fixture("odd_ls/model.safetensors");
    let image = fixture("odd_ls/image.png");
    let o = agcam(&[
        "explain",
        s(&image),
        s(&corrupt),
        "--weights",
        s(&weights),
        "--out",
        s(&out),
    ]);
    // One image failed: the run completes but exits non-zero, naming the file.
    assert!(!o.status.success(), "should fail: {}", stderr(&o));
    assert!(stderr(&o).contains("broken.png"), "{}", stderr(&o));

    let npy = std::fs::read(out.join("image.npy")).unwrap();
    assert!(npy.starts_with(b"\x93NUMPY"));
    let header = String::from_utf8_lossy(&npy[10..npy.len().min(128)]).into_owned();
    assert!(header.contains("'shape': (3, 6)"), "{header}");
    assert_eq!(npy.len(), 128 + 4 * 18);
    let png = image::open(out.join("image.png")).unwrap();
    let original = image::open(&image).unwrap();
    assert_eq!(
        (png.width(), png.height()),
        (original.width(), original.height())
    );

    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("image.json")).unwrap()).unwrap();
    assert_eq!(record["predicted_class"], record["explained_class"]);
    assert_eq!(record["top5"].as_array().unwrap().len(), 5);
    assert_eq!(record["top5"][0]["index"], record["predicted_class"]);
    let p = record["explained_probability"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0);
    assert_eq!(record["method"], "agcam");
    assert_eq!(record["saturated_16bit"], false);
    assert!(!out.join("broken.json").exists());
}

/// A 16-bit grayscale picture whose values pass 255 is explained as PIL reads it (saturated,
/// mostly white), with a note on stderr and `saturated_16bit` in its record.
#[test]
fn saturated_16bit_gray_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let picture = dir.path().join("gray16.png");
    let ramp = image::ImageBuffer::from_fn(32, 32, |x, y| image::Luma([(x * 64 + y) as u16]));
    ramp.save(&picture).unwrap();
    let out = dir.path().join("out");
    let weights = fixture("odd_ls/model.safetensors");
    let o = agcam(&[
        "explain",
        s(&picture),
        "--weights",
        s(&weights),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("16-bit grayscale"), "{}", stderr(&o));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("gray16.json")).unwrap()).unwrap();
    assert_eq!(record["saturated_16bit"], true);
    // predict says so too.
    let o = agcam(&["predict", s(&picture), "--weights", s(&weights)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("16-bit grayscale"), "{}", stderr(&o));
}

/// An evaluation's report counts the 16-bit grayscale pictures that saturated (scored as
/// mostly white), and says nothing of them when there are none.
#[test]
fn eval_reports_saturated_16bit_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_set(dir.path(), "voc", 3, 4);
    let run = || {
        let o = agcam(&["eval", "localization", "--data", s(&data)]);
        assert!(o.status.success(), "{}", stderr(&o));
        format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o))
    };
    assert!(!run().contains("16-bit"));
    let ramp = image::ImageBuffer::from_fn(224, 224, |x, y| image::Luma([(x * 64 + y) as u16]));
    ramp.save(data.join("JPEGImages/synth_000001.png")).unwrap();
    let report = run();
    assert!(report.contains("1 image is 16-bit grayscale"), "{report}");
}

#[test]
fn top_k_files_carry_the_class() {
    let dir = tempfile::tempdir().unwrap();
    let o = agcam(&[
        "explain",
        s(&fixture("odd_nols/image.png")),
        "--weights",
        s(&fixture("odd_nols/model.safetensors")),
        "--top-k",
        "3",
        "--out",
        s(dir.path()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let jsons: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(jsons.len(), 3, "{jsons:?}");
    assert!(jsons.iter().all(|n| n.starts_with("image_c")), "{jsons:?}");
}

#[test]
fn bad_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("odd_ls/model.safetensors");
    let image = fixture("odd_ls/image.png");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--class".into(), "10".into()],
            "class 10 is out of range: the model has 10 classes",
        ),
        (
            vec!["--top-k".into(), "0".into()],
            "top-k must be between 1",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["explain", s(&image), "--weights", s(&weights)];
        args.extend(extra.iter().map(String::as_str));
        args.extend(["--out", s(dir.path())]);
        let o = agcam(&args);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "{want}: {}", stderr(&o));
        // Refused before the model is uploaded (the upload prints "model NAME: read in ...").
        assert!(!stderr(&o).contains("read in"), "{want}: {}", stderr(&o));
    }

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = agcam(&["explain", s(&empty), "--weights", s(&weights)]);
    assert!(stderr(&o).contains("no images"), "{}", stderr(&o));

    let truncated = dir.path().join("cut.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let o = agcam(&["explain", s(&image), "--weights", s(&truncated)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cut.safetensors"), "{}", stderr(&o));

    let o = agcam(&[
        "explain",
        s(&image),
        "--weights",
        "/nonexistent/model.safetensors",
    ]);
    assert!(
        stderr(&o).contains("/nonexistent/model.safetensors"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn predict_and_devices() {
    let o = agcam(&[
        "predict",
        s(&fixture("vit_ti/image.png")),
        "--weights",
        s(&fixture("vit_ti/model.safetensors")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains("logit")).count(),
        5,
        "{text}"
    );

    let o = agcam(&["devices"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("llvmpipe") || !o.stdout.is_empty());
}

/// The target (non-distractor) object's class name in one of `agcam synth`'s VOC annotations.
fn target_name(xml: &str) -> String {
    let object = xml
        .split("<object>")
        .skip(1)
        .find(|o| o.contains("<distractor>0</distractor>"))
        .expect("a target object");
    let start = object.find("<name>").unwrap() + "<name>".len();
    object[start..start + object[start..].find("</name>").unwrap()].to_string()
}

/// The README's quick start: no arguments explains the bundled samples with the bundled demo
/// model, and the model names every sample's target object.
#[test]
fn quick_start_explains_the_bundled_samples() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_agcam"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["explain", "--out", s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/samples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&samples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "png") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let xml = std::fs::read_to_string(samples.join(format!("annotations/{stem}.xml"))).unwrap();
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{stem}.json"))).unwrap())
                .unwrap();
        assert_eq!(record["predicted_label"], target_name(&xml), "{stem}");
        assert!(out.join(format!("{stem}.png")).is_file());
        seen += 1;
    }
    assert_eq!(seen, 6, "the bundled samples");
}

/// `agcam eval` reads the ImageNet validation layout as `agcam synth --layout imagenet` writes
/// it, unchanged, for both protocols.
#[test]
fn eval_reads_the_imagenet_layout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("imagenet");
    let o = agcam(&[
        "synth",
        "--out",
        s(&data),
        "--count",
        "4",
        "--seed",
        "5",
        "--layout",
        "imagenet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for protocol in ["localization", "perturbation"] {
        let json = dir.path().join(format!("{protocol}.json"));
        let o = agcam(&[
            "eval",
            protocol,
            "--data",
            s(&data),
            "--limit",
            "2",
            "--json",
            s(&json),
        ]);
        assert!(o.status.success(), "{protocol}: {}", stderr(&o));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(report["counts"]["total"], 2, "{protocol}: {report}");
        let layout = report["dataset"]["detected"]["layout"].as_str().unwrap();
        assert!(layout.starts_with("imagenet"), "{protocol}: {layout}");
    }
}

/// `--skip N --limit M` evaluates images N to N + M − 1 in id order, with the same per-image
/// rows as the whole run gives them (so shards of one run can be merged); a skip that leaves no
/// image is refused before any work.
#[test]
fn eval_skip_runs_one_shard_of_a_data_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_set(dir.path(), "voc", 5, 6);
    let rows = |extra: &[&str], name: &str| -> Vec<serde_json::Value> {
        let json = dir.path().join(name);
        let mut args = vec![
            "eval",
            "localization",
            "--data",
            s(&data),
            "--json",
            s(&json),
        ];
        args.extend_from_slice(extra);
        let o = agcam(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        report["images"].as_array().unwrap().clone()
    };
    let whole = rows(&[], "whole.json");
    let shard = rows(&["--skip", "2", "--limit", "2"], "shard.json");
    assert_eq!(whole.len(), 5);
    assert_eq!(
        shard,
        whole[2..4],
        "the shard's rows are the whole run's images 2 and 3"
    );
    let o = agcam(&["eval", "localization", "--data", s(&data), "--skip", "5"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--skip 5 leaves no image: the data set has 5 usable images"),
        "{}",
        stderr(&o)
    );
}

/// The methods AGCAM is compared with, and the refusal each gives an average-pooled model
/// (`None`: defined there, and run).
const COMPARED: [(&str, Option<&str>); 3] = [
    ("grad-cam", None),
    (
        "generic-attention",
        Some("generic attention is undefined for average-pooled models"),
    ),
    (
        "transformer-attribution",
        Some("transformer attribution is undefined for average-pooled models"),
    ),
];

/// Each compared method on the bundled demo model, top 2: a class-specific map per explained
/// class, recorded under the method's name, a raw 14 × 14 grid, finite and non-negative (Grad-CAM
/// ends in a ReLU; generic attention's and transformer attribution's rollouts of non-negative
/// Ā are ≥ I), not flat, and different for the two classes.
#[test]
fn explain_compared_methods_on_the_demo_model() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/samples");
    for (method, _) in COMPARED {
        let dir = tempfile::tempdir().unwrap();
        let o = agcam(&[
            "explain",
            s(&samples.join("synth_000000.png")),
            "--method",
            method,
            "--top-k",
            "2",
            "--out",
            s(dir.path()),
        ]);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        let mut maps = Vec::new();
        let mut classes = Vec::new();
        for name in std::fs::read_dir(dir.path()).unwrap() {
            let path = name.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(record["method"], method, "{record}");
            classes.push(record["explained_class"].as_u64().unwrap());
            let npy = std::fs::read(path.with_extension("npy")).unwrap();
            let header = String::from_utf8_lossy(&npy[10..128]).into_owned();
            assert!(header.contains("'shape': (14, 14)"), "{method}: {header}");
            // float32 after the 128-byte header.
            assert_eq!(npy.len(), 128 + 4 * 196, "{method}");
            let map: Vec<f32> = npy[128..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            assert!(
                map.iter().all(|&v| v.is_finite() && v >= 0.0),
                "{method}: {map:?}"
            );
            let (lo, hi) = map
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(hi > lo, "{method}: a flat map");
            maps.push(map);
        }
        assert_eq!(maps.len(), 2, "{method}");
        assert_ne!(
            maps[0], maps[1],
            "{method}: the two classes' maps are the same"
        );
        classes.sort_unstable();
        classes.dedup();
        assert_eq!(classes.len(), 2, "{method}: two distinct explained classes");
    }
}

/// The compared methods that need class-token pooling refuse an average-pooled model with the
/// reason, before any file is written; the others explain it.
#[test]
fn compared_methods_on_average_pooled_models() {
    for (method, refusal) in COMPARED {
        let dir = tempfile::tempdir().unwrap();
        let o = agcam(&[
            "explain",
            s(&fixture("avgpool/image.png")),
            "--weights",
            s(&fixture("avgpool/model.safetensors")),
            "--method",
            method,
            "--out",
            s(dir.path()),
        ]);
        let Some(reason) = refusal else {
            assert!(o.status.success(), "{method}: {}", stderr(&o));
            assert!(dir.path().join("image.npy").exists(), "{method}");
            continue;
        };
        assert!(!o.status.success(), "{method}");
        assert!(stderr(&o).contains(reason), "{method}: {}", stderr(&o));
        assert!(!dir.path().join("image.npy").exists(), "{method}");
    }
}

/// `eval --method agcam,<each compared method>` runs every method on the same images in both
/// protocols, one report each, in the order given.
#[test]
fn eval_runs_a_list_of_methods() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_set(dir.path(), "voc", 3, 9);
    let order: Vec<&str> = std::iter::once("agcam")
        .chain(COMPARED.iter().map(|(m, _)| *m))
        .collect();
    let list = order.join(",");
    for protocol in ["localization", "perturbation"] {
        let json = dir.path().join(format!("{protocol}.json"));
        let o = agcam(&[
            "eval",
            protocol,
            "--data",
            s(&data),
            "--method",
            list.as_str(),
            "--limit",
            "2",
            "--json",
            s(&json),
        ]);
        assert!(o.status.success(), "{protocol}: {}", stderr(&o));
        let reports: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let methods: Vec<&str> = reports
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, order, "{protocol}");
    }
}

/// `bench --method` measures each method after the forward, and `profile --method` times the
/// chosen method's kernels.
#[test]
fn bench_and_profile_take_a_method() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("odd_ls/model.safetensors");
    // The folder of --json is created before the measurements, as --out's is.
    let json = dir.path().join("new/bench.json");
    let o = agcam(&[
        "bench",
        "--weights",
        s(&weights),
        "--batches",
        "2",
        "--iters",
        "1",
        "--method",
        "agcam,grad-cam",
        "--json",
        s(&json),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let methods: Vec<&serde_json::Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["method"])
        .collect();
    assert_eq!(
        methods,
        [
            &serde_json::Value::Null,
            &"agcam".into(),
            &"grad-cam".into()
        ]
    );

    let names = profiled_kernels(&weights, "grad-cam");
    assert!(names.contains(&"grad-cam.map".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("agcam.")), "{names:?}");

    // Transformer attribution: the LRP pass interleaved with the full backward, to block 0.
    let names = profiled_kernels(&weights, "transformer-attribution");
    for name in [
        "lrp.head.z_plus",
        "lrp.blocks.0.attn.av_attention",
        "full.blocks.0.relevance",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
}

/// `agcam profile` says where the forward ends: the JSON's `forward_launches` (the explanation
/// starts with the class choice), and the text's last line, whose counts match its table.
#[test]
fn profile_splits_forward_and_explanation() {
    let weights = fixture("odd_ls/model.safetensors");
    let run = |json: bool| {
        let mut args = vec!["profile", "--weights", s(&weights)];
        if json {
            args.push("--json");
        }
        let o = agcam(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let profile: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    let kernels = profile["kernels"].as_array().unwrap();
    let forward = profile["forward_launches"].as_u64().unwrap() as usize;
    assert!(
        0 < forward && forward < kernels.len(),
        "{forward} of {}",
        kernels.len()
    );
    assert_eq!(kernels[forward]["name"], "topk");
    assert!(kernels[..forward]
        .iter()
        .all(|k| !k["name"].as_str().unwrap().starts_with("agcam.")));
    let text = run(false);
    let last = text.lines().last().unwrap();
    let want = format!("in {forward} launches; explanation");
    assert!(
        last.starts_with("forward ") && last.contains(&want),
        "{last}"
    );
    let explanation = format!("in {} launches; explain / forward", kernels.len() - forward);
    assert!(last.contains(&explanation), "{last}");
}

/// The kernel names of `agcam profile --method METHOD --json` on `weights`.
fn profiled_kernels(weights: &Path, method: &str) -> Vec<String> {
    let o = agcam(&[
        "profile",
        "--weights",
        s(weights),
        "--method",
        method,
        "--json",
    ]);
    assert!(o.status.success(), "{method}: {}", stderr(&o));
    let profile: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(profile["method"], method);
    profile["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn outputs_and_option_clashes_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("odd_ls/model.safetensors");
    let image = fixture("odd_ls/image.png");
    let file = dir.path().join("taken");
    std::fs::write(&file, b"").unwrap();
    // An output folder that is a file: said in words (not a bare "File exists"), before the
    // model is loaded.
    for args in [
        vec![
            "explain",
            s(&image),
            "--weights",
            s(&weights),
            "--out",
            s(&file),
        ],
        vec!["shaders", "--out", s(&file)],
    ] {
        let o = agcam(&args);
        assert!(!o.status.success(), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains("taken: exists and is not a folder") && !err.contains("model "),
            "{args:?}: {err}"
        );
    }
    // Refused by the parser, not after the model and the GPU are set up.
    let o = agcam(&[
        "eval",
        "localization",
        "--data",
        s(dir.path()),
        "--limit",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--limit"), "{}", stderr(&o));
    // A checkpoint and random architectures: one or the other, never one silently ignored.
    let o = agcam(&[
        "bench",
        "--weights",
        s(&weights),
        "--random",
        "vit_tiny_patch16_224",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    // More classes than the model has: refused before the first measurement.
    let o = agcam(&[
        "bench",
        "--weights",
        s(&weights),
        "--top-k",
        "1,11",
        "--batches",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--top-k 11") && !stderr(&o).contains("adapter"),
        "{}",
        stderr(&o)
    );
    assert!(String::from_utf8_lossy(&o.stdout).is_empty());
}

#[test]
fn synth_shows_progress_without_a_terminal() {
    // stderr is a pipe here, so the bar is hidden: a line every 10 % says how far it got.
    let dir = tempfile::tempdir().unwrap();
    let o = agcam(&["synth", "--out", s(&dir.path().join("d")), "--count", "20"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let done: Vec<&str> = err
        .lines()
        .filter(|l| l.ends_with("/20 images"))
        .map(|l| l.split('/').next().unwrap())
        .collect();
    assert_eq!(done.len(), 10, "{err}");
    assert_eq!(done.last(), Some(&"20"));
}

#[test]
fn running_again_redoes_the_same_pictures_not_the_last_overlays() {
    // --out inside the input folder: the second run's folder walk finds the first run's
    // overlays; it passes them over (with a note), so it explains the same picture again into
    // the same names instead of explaining overlays into new ones.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("photos");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(fixture("odd_ls/image.png"), input.join("x.png")).unwrap();
    let out = input.join("agcam");
    let weights = fixture("odd_ls/model.safetensors");
    let run = |args: &[&str]| {
        let mut all = vec!["explain", "--weights", s(&weights)];
        all.extend_from_slice(args);
        let o = agcam(&all);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    run(&[s(&input), "--out", s(&out)]);
    assert_eq!(names(), ["x.json", "x.npy", "x.png"]);
    let err = run(&[s(&input), "--out", s(&out)]);
    assert!(err.contains("passed over 1 overlays"), "{err}");
    assert_eq!(names(), ["x.json", "x.npy", "x.png"], "{err}");
    // Named on the command line, an overlay is explained like any picture.
    let again = dir.path().join("again");
    run(&[s(&out.join("x.png")), "--out", s(&again)]);
    assert!(again.join("x.json").exists());
}

#[test]
fn eval_exits_with_status_1_when_a_picture_is_unreadable() {
    // As README's "Pictures" says for every command: reported, skipped, status 1; the others
    // are still scored.
    let dir = tempfile::tempdir().unwrap();
    let data = synth_set(dir.path(), "voc", 3, 4);
    std::fs::write(data.join("JPEGImages/synth_000001.png"), b"not a picture").unwrap();
    let o = agcam(&["eval", "localization", "--data", s(&data)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("synth_000001.png"), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("1 unreadable"), "{out}");
    // Status 1 for the unreadable picture, not for want of a scored one.
    assert!(!out.contains("total, 0 scored"), "{out}");
}

#[test]
fn explain_never_replaces_a_file_it_did_not_write() {
    // `--out` holds the user's own `image.png` (not an input): the outputs move to `image-2`,
    // and a second run replaces its own `image-2` set rather than inventing `image-3`.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let photo = out.join("image.png");
    std::fs::write(&photo, b"the user's photo").unwrap();
    let (image, weights) = (
        fixture("odd_ls/image.png"),
        fixture("odd_ls/model.safetensors"),
    );
    let args = [
        "explain",
        s(&image),
        "--weights",
        s(&weights),
        "--out",
        s(&out),
    ];
    for _ in 0..2 {
        let o = agcam(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("outputs named image-2"),
            "{}",
            stderr(&o)
        );
        assert_eq!(std::fs::read(&photo).unwrap(), b"the user's photo");
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["image-2.json", "image-2.npy", "image-2.png", "image.png"]
    );
}
