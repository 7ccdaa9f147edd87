//! `agcam eval … --report DIR` and `--ties` end to end with the bundled demo model on a small
//! synthetic set: the page's structure (the browser check is scripts/check-report.sh), several
//! methods in one run, the JSON of several methods, and clear errors for bad requests.

mod common;

use std::path::Path;

use common::cli::{agcam, s, stderr, synth_set};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn perturbation_report_of_two_methods() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_set(dir.path(), "data", 5, 9);
    let (report, out) = (dir.path().join("report"), dir.path().join("p.json"));
    let o = agcam(&[
        "eval",
        "perturbation",
        "--data",
        s(&data),
        "--method",
        "agcam,raw-attention",
        "--steps",
        "3",
        "--json",
        s(&out),
        "--report",
        s(&report),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("<table class=\"summary\">"));
    assert_eq!(
        html.matches("<svg ").count(),
        4,
        "curves and histogram per method"
    );
    assert_eq!(html.matches("<img class=\"overlay\"").count(), 6);
    assert_eq!(
        html.matches("src=\"data:image/png;base64,iVBORw0KGgo")
            .count(),
        6,
        "every overlay an embedded PNG"
    );
    // Several methods: an array of reports, in the order given.
    let v = json(&out);
    let methods: Vec<&str> = v
        .as_array()
        .expect("an array for two methods")
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["agcam", "raw-attention"]);
    assert_eq!(v[0]["ties"]["rule"], "stable");
}

#[test]
fn localization_report_and_single_method_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_set(dir.path(), "data", 4, 9);
    let (report, out) = (dir.path().join("r"), dir.path().join("l.json"));
    let o = agcam(&[
        "eval",
        "localization",
        "--data",
        s(&data),
        "--json",
        s(&out),
        "--report",
        s(&report),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert_eq!(html.matches("<svg ").count(), 1, "the IoU histogram");
    assert!(html.matches("<img class=\"overlay\"").count() >= 1);
    // One method: the object it always was.
    assert_eq!(json(&out)["method"], "agcam");
}

#[test]
fn random_ties_are_reproducible_and_stable_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_set(dir.path(), "data", 2, 9);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "eval",
            "perturbation",
            "--data",
            s(&data),
            "--steps",
            "3",
            "--json",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let o = agcam(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let v = json(&out);
        let curves: Vec<serde_json::Value> = v["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::json!([r["morf"], r["lerf"]]))
            .collect();
        (v, curves)
    };
    let (default, default_curves) = run("default.json", &[]);
    let (stable, stable_curves) = run("stable.json", &["--ties", "stable"]);
    assert_eq!(default_curves, stable_curves);
    assert_eq!(default["tie_rule"], stable["tie_rule"]);
    let (a, a_curves) = run("a.json", &["--ties", "random", "--seed", "7"]);
    let (_, b_curves) = run("b.json", &["--ties", "random", "--seed", "7"]);
    assert_eq!(a_curves, b_curves, "the same seed gives the same curves");
    assert_eq!(a["ties"], serde_json::json!({"rule": "random", "seed": 7}));
    assert!(a["tie_rule"].as_str().unwrap().contains("seed 7"));
}

#[test]
fn bad_report_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    // Checked before the data and the model are opened: the dataset does not even exist.
    let missing = dir.path().join("no-data");
    for (args, expect) in [
        (
            vec![
                "eval",
                "localization",
                "--data",
                s(&missing),
                "--report",
                s(&file),
            ],
            "not a folder",
        ),
        (
            vec!["eval", "perturbation", "--data", s(&missing), "--seed", "3"],
            "--ties random",
        ),
        (
            vec![
                "eval",
                "perturbation",
                "--data",
                s(&missing),
                "--method",
                "agcam",
                "--method",
                "agcam",
            ],
            "given twice",
        ),
    ] {
        let o = agcam(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
}
