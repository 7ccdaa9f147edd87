//! The `agcam` binary on odd-but-real input: file names that are not UTF-8, special files,
//! symbolic link loops, colliding output names, interruptions, unwritable outputs, non-finite
//! numbers, out-of-range options and noisy stderr. Each test names the class of failure it
//! guards against.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cli::{agcam, fixture, s, stderr, synth_set};

fn weights() -> PathBuf {
    fixture("odd_ls/model.safetensors")
}

fn image() -> PathBuf {
    fixture("odd_ls/image.png")
}

fn explain(inputs: &[&Path], out: &Path, extra: &[&str]) -> Output {
    let w = weights();
    let mut args = vec!["explain"];
    args.extend(inputs.iter().map(|p| s(p)));
    args.extend(["--weights", s(&w), "--out", s(out)]);
    args.extend(extra);
    agcam(&args)
}

/// The JSON records in `out`, by file name.
fn records(out: &Path) -> Vec<(String, serde_json::Value)> {
    let mut v: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let r = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), r)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Class: a file name that is not valid UTF-8 panicked while writing its record.
#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_are_explained() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for name in [&b"caf\xe9.png"[..], b"caf\xe8.png"] {
        std::fs::copy(image(), input.join(std::ffi::OsStr::from_bytes(name))).unwrap();
    }
    let out = dir.path().join("out");
    let o = explain(&[&input], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = records(&out);
    assert_eq!(recs.len(), 2, "one record per input: {recs:?}");
    for (_, r) in &recs {
        assert!(r["image"].as_str().unwrap().contains("caf\u{fffd}"), "{r}");
    }
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// Class: special files (FIFOs) named like pictures or given as weights blocked forever.
#[cfg(unix)]
#[test]
fn special_files_are_skipped_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(image(), input.join("a.png")).unwrap();
    let fifo = input.join("b.png");
    mkfifo(&fifo);
    let out = dir.path().join("out");
    let o = explain(&[&input], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("b.png: skipped, is a FIFO"),
        "{}",
        stderr(&o)
    );
    assert_eq!(records(&out).len(), 1);

    // Named explicitly, it is an error for that file, not a hang.
    let o = explain(&[&fifo], &out, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("FIFO"), "{}", stderr(&o));

    // As the weights file.
    let weights_fifo = dir.path().join("model.safetensors");
    mkfifo(&weights_fifo);
    let o = agcam(&["inspect", "--weights", s(&weights_fifo)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("FIFO"), "{}", stderr(&o));
}

/// Class: symbolic links back to a parent folder made the walk explode, or explained the same
/// picture many times.
#[cfg(unix)]
#[test]
fn symbolic_link_loops_are_walked_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(image(), input.join("a.png")).unwrap();
    std::os::unix::fs::symlink(".", input.join("loop")).unwrap();
    std::os::unix::fs::symlink(".", input.join("loop2")).unwrap();
    std::os::unix::fs::symlink("a.png", input.join("same.png")).unwrap();
    let out = dir.path().join("out");
    let o = explain(&[&input], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(records(&out).len(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("already searched"), "{}", stderr(&o));
}

/// Class: output names collided (an invented `x-2` overwrote the real `x-2`), and `--out` equal
/// to the input folder overwrote the input pictures.
#[test]
fn every_input_gets_its_own_outputs_and_no_input_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for (folder, name) in [("a", "x.png"), ("b", "x.png"), ("c", "x-2.png")] {
        let d = dir.path().join(folder);
        std::fs::create_dir(&d).unwrap();
        std::fs::copy(image(), d.join(name)).unwrap();
        inputs.push(d.join(name));
    }
    let out = dir.path().join("out");
    let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let o = explain(&refs, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = records(&out);
    let mut sources: Vec<String> = recs
        .iter()
        .map(|(_, r)| r["image"].as_str().unwrap().to_string())
        .collect();
    sources.sort();
    let mut want: Vec<String> = inputs.iter().map(|p| s(p).to_string()).collect();
    want.sort();
    assert_eq!(sources, want, "one record per input");

    // --out is the input folder: the pictures are left alone.
    let folder = dir.path().join("a");
    let before = std::fs::read(folder.join("x.png")).unwrap();
    let o = explain(&[&folder], &folder, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(folder.join("x.png")).unwrap(), before);
    assert_eq!(records(&folder).len(), 1);
    // A second run passes the first run's overlay over (an output, not an input) and overwrites
    // neither the picture nor, with anything different, the overlay.
    let overlays: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    let contents: Vec<Vec<u8>> = overlays.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let o = explain(&[&folder], &folder, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (p, c) in overlays.iter().zip(&contents) {
        assert_eq!(&std::fs::read(p).unwrap(), c, "{p:?} was overwritten");
    }
}

/// Class: output locations were checked only after all the work.
#[test]
fn unwritable_outputs_fail_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let o = explain(&[&image()], &file.join("out"), &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("file/out") || err.contains("file"), "{err}");
    assert!(!err.contains("model "), "the model was loaded first: {err}");

    let o = agcam(&[
        "eval",
        "localization",
        "--data",
        s(dir.path()),
        "--weights",
        s(&weights()),
        "--json",
        s(&file.join("report.json")),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("file") && !err.contains("model "), "{err}");
}

/// Rewrites every tensor value of `src` as a NaN in the tensor `name`.
fn with_nan(src: &Path, name: &str, dst: &Path) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (n, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if n == name {
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        tensors.push((n, view.dtype(), view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, data)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

/// Class: NaN in the weights, or a normalisation that overflows, gave NaN maps and `null`
/// probabilities with exit status 0.
#[test]
fn non_finite_numbers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(weights()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let name = st
        .names()
        .into_iter()
        .find(|n| n.contains("blocks.0") && n.ends_with("weight"))
        .unwrap()
        .to_string();
    let bad = dir.path().join("model.safetensors");
    with_nan(&weights(), &name, &bad);
    std::fs::copy(
        fixture("odd_ls/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let o = agcam(&[
        "explain",
        s(&image()),
        "--weights",
        s(&bad),
        "--out",
        s(dir.path()),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&name) && err.contains("non-finite"), "{err}");

    let out = dir.path().join("out");
    let o = explain(&[&image()], &out, &["--std", "1e-45,1e-45,1e-45"]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("non-finite"), "{}", stderr(&o));
    assert!(records(&out).is_empty());
}

/// Class: the evaluation protocols averaged NaN scores (or dropped them) with exit status 0.
#[test]
fn evaluation_refuses_non_finite_scores() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_set(dir.path(), "data", 2, 3);
    for protocol in ["localization", "perturbation"] {
        let json = dir.path().join(format!("{protocol}.json"));
        let o = agcam(
            &[
                "eval",
                protocol,
                "--data",
                s(&data),
                "--std",
                "1e-45,1e-45,1e-45",
                "--steps",
                "3",
                "--json",
                s(&json),
            ]
            .into_iter()
            .filter(|a| protocol == "perturbation" || !matches!(*a, "--steps" | "3"))
            .collect::<Vec<_>>(),
        );
        assert!(!o.status.success(), "{protocol}: {}", stderr(&o));
        assert!(stderr(&o).contains("NaN or infinite"), "{}", stderr(&o));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(report["counts"]["non_finite"], 2, "{protocol}");
        assert_eq!(report["counts"]["scored"], 0, "{protocol}");
        assert!(report["images"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "non-finite"));
    }
}

/// Class: out-of-range numbers were accepted (or overflowed), and negative ones got clap's
/// "unexpected argument" instead of a range error.
#[test]
fn out_of_range_options_name_the_accepted_range() {
    let img = image();
    let w = weights();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["explain", s(&img), "--class", "-1"],
            "expected a whole number ≥ 0",
        ),
        (
            vec!["explain", s(&img), "--top-k", "-3"],
            "expected a whole number ≥ 0",
        ),
        (
            vec!["explain", s(&img), "--batch", "0"],
            "expected a whole number ≥ 1",
        ),
        (
            vec!["explain", s(&img), "--alpha", "-0.5"],
            "expected a number from 0 to 1",
        ),
        (
            vec!["explain", s(&img), "--max-gpu-mem", "18446744073709551615"],
            "expected a whole number from 1 to 16777216",
        ),
        (
            vec!["eval", "localization", "--data", "x", "--threshold", "1.5"],
            "expected a number from 0 to 1",
        ),
        (
            vec!["eval", "perturbation", "--data", "x", "--steps", "100000"],
            "expected a whole number from 2 to 101",
        ),
        (
            vec!["synth", "--out", "x", "--count", "-5"],
            "expected a whole number ≥ 1",
        ),
        (vec!["explain", s(&img), "--std", "0,1,1"], "greater than 0"),
    ];
    for (mut args, want) in cases {
        if args[0] != "synth" {
            args.extend(["--weights", s(&w)]);
        }
        let o = agcam(&args);
        assert!(!o.status.success(), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}

/// Class: Mesa's EGL printed "error: XDG_RUNTIME_DIR is invalid or not set" on every run.
#[test]
fn a_clean_run_prints_no_error_line() {
    let dir = tempfile::tempdir().unwrap();
    for env in [None, Some("/nonexistent-runtime-dir")] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agcam"));
        cmd.args(["explain", s(&image()), "--weights", s(&weights())])
            .args(["--out", s(dir.path())]);
        match env {
            None => cmd.env_remove("XDG_RUNTIME_DIR"),
            Some(v) => cmd.env("XDG_RUNTIME_DIR", v),
        };
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            !err.lines().any(|l| l.starts_with("error:")),
            "XDG_RUNTIME_DIR {env:?}: {err}"
        );
    }
}

/// Class: `agcam synth` into a folder holding a set mixed old and new pictures.
#[test]
fn synth_refuses_a_folder_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("set");
    let synth = |count: &str, extra: &[&str]| {
        let mut args = vec!["synth", "--out", s(&data), "--count", count];
        args.extend(extra);
        agcam(&args)
    };
    assert!(synth("6", &[]).status.success());
    let o = synth("3", &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--replace"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(data.join("JPEGImages")).unwrap().count(),
        6
    );
    let o = synth("3", &["--replace"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(data.join("JPEGImages")).unwrap().count(),
        3
    );
}

/// Class: an interrupted run left a `.npy` without its `.png`/`.json`, or a zero-byte PNG.
#[cfg(unix)]
#[test]
fn an_interrupted_run_leaves_only_complete_sets() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for i in 0..1000 {
        std::fs::copy(image(), input.join(format!("p{i:03}.png"))).unwrap();
    }
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agcam"))
        .args([
            "explain",
            s(&input),
            "--weights",
            s(&weights()),
            "--out",
            s(&out),
        ])
        .args(["--batch", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once some files exist.
    let start = Instant::now();
    while std::fs::read_dir(&out).map_or(0, |d| d.count()) < 6 {
        assert!(start.elapsed() < Duration::from_secs(120), "no output");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.len() < 3 * 1000, "the run was not interrupted");
    for name in &names {
        assert!(!name.starts_with('.'), "temporary file left: {name}");
        let path = out.join(name);
        assert!(std::fs::metadata(&path).unwrap().len() > 0, "empty {name}");
        let stem = name.rsplit_once('.').unwrap().0;
        for ext in ["png", "npy", "json"] {
            assert!(
                out.join(format!("{stem}.{ext}")).is_file(),
                "{name} without its .{ext}"
            );
        }
    }
}
