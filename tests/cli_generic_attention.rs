//! `--method generic-attention` through the binary: explain on the bundled demo model, eval with
//! a method list, and the clear refusal on an average-pooled model.

mod common;

use std::path::Path;

use common::cli::{agcam, fixture, s, stderr};

fn demo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("weights")
        .join(path)
}

#[test]
fn explain_with_generic_attention_on_the_demo_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = agcam(&[
        "explain",
        s(&demo("samples/synth_000000.png")),
        "--weights",
        s(&demo("demo.safetensors")),
        "--method",
        "generic-attention",
        "--top-k",
        "2",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(record["method"], "generic-attention", "{record}");
        classes.push(record["explained_class"].as_u64().unwrap());
        // The raw 14 × 14 grid: R ≥ I makes every cell ≥ 0, and a real map is not flat.
        let npy = std::fs::read(path.with_extension("npy")).unwrap();
        let header = String::from_utf8_lossy(&npy[10..128]).into_owned();
        assert!(header.contains("'shape': (14, 14)"), "{header}");
        let cells: Vec<f32> = bytemuck::pod_collect_to_vec(&npy[128..]);
        assert_eq!(cells.len(), 196);
        assert!(
            cells.iter().all(|&v| v.is_finite() && v >= 0.0),
            "{cells:?}"
        );
        let (lo, hi) = cells
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi > lo, "a flat map");
    }
    classes.sort_unstable();
    classes.dedup();
    assert_eq!(classes.len(), 2, "two distinct explained classes");
}

#[test]
fn eval_runs_generic_attention_beside_agcam() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = agcam(&["synth", "--out", s(&data), "--count", "3", "--seed", "9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for protocol in ["localization", "perturbation"] {
        let json = dir.path().join(format!("{protocol}.json"));
        let o = agcam(&[
            "eval",
            protocol,
            "--data",
            s(&data),
            "--weights",
            s(&demo("demo.safetensors")),
            "--method",
            "agcam,generic-attention",
            "--limit",
            "2",
            "--json",
            s(&json),
        ]);
        assert!(o.status.success(), "{protocol}: {}", stderr(&o));
        let text = std::fs::read_to_string(&json).unwrap();
        assert!(text.contains("\"generic-attention\""), "{protocol}: {text}");
        assert!(text.contains("\"agcam\""), "{protocol}: {text}");
    }
}

#[test]
fn generic_attention_refuses_an_average_pooled_model() {
    let dir = tempfile::tempdir().unwrap();
    let o = agcam(&[
        "explain",
        s(&fixture("avgpool/image.png")),
        "--weights",
        s(&fixture("avgpool")),
        "--method",
        "generic-attention",
        "--out",
        s(&dir.path().join("out")),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("generic attention is undefined for average-pooled models"),
        "{err}"
    );
}
