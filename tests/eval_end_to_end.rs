//! Both protocols end to end on a tiny dataset written to a tempdir and a small random model,
//! for all three methods, on the first GPU backend that opens (Vulkan, else GL).

mod common;

use std::fs;
use std::path::Path;

use agcam::eval::{
    run_localization, run_perturbation, Dataset, Layout, LocalizationOptions, PerturbationOptions,
    Status,
};
use agcam::explain::softmax;
use agcam::gpu::{open_each, Gpu};
use agcam::model::{Model, ModelConfig};
use agcam::{Engine, EngineOptions, Method};

const CLASSES: [&str; 3] = ["circle", "square", "triangle"];

/// The first backend of the tests' set that opens, Vulkan before GL (each opened only if
/// needed).
fn gpu() -> Gpu {
    common::test_backends()
        .into_iter()
        .find_map(|b| open_each(&[b]).into_iter().find_map(Result::ok))
        .expect("no GPU adapter: install mesa-vulkan-drivers")
}

fn write_png(path: &Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed.wrapping_mul(101);
        image::Rgb([(v % 251) as u8, (x * 255 / w) as u8, (y * 255 / h) as u8])
    });
    img.save(path).unwrap();
}

/// (name, distractor, [xmin, ymin, xmax, ymax]).
type Obj<'a> = (&'a str, bool, [f64; 4]);

/// (id, width, height, XML `<size>`, objects).
type Item<'a> = (&'a str, u32, u32, Option<(u32, u32)>, Vec<Obj<'a>>);

fn write_xml(path: &Path, size: Option<(u32, u32)>, objects: &[Obj]) {
    let mut s = String::from("<annotation>\n");
    if let Some((w, h)) = size {
        s.push_str(&format!(
            "  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n"
        ));
    }
    for (name, distractor, b) in objects {
        s.push_str(&format!(
            "  <object><name>{name}</name><distractor>{}</distractor><bndbox>\
             <xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>\n",
            u8::from(*distractor),
            b[0],
            b[1],
            b[2],
            b[3]
        ));
    }
    s.push_str("</annotation>\n");
    fs::write(path, s).unwrap();
}

/// Six readable images (two of them hold all three classes, so any prediction is correct
/// there), one corrupt image, one image without annotation.
fn dataset(dir: &Path) {
    let img = dir.join("JPEGImages");
    let ann = dir.join("Annotations");
    fs::create_dir_all(&img).unwrap();
    fs::create_dir_all(&ann).unwrap();
    fs::write(dir.join("labels.txt"), CLASSES.join("\n")).unwrap();
    let all = |w: f64, h: f64| -> Vec<Obj<'static>> {
        vec![
            ("square", false, [1.0, 1.0, w / 2.0, h / 2.0]),
            ("circle", false, [w / 2.0, h / 2.0, w, h]),
            ("triangle", false, [w / 4.0, 1.0, w / 3.0, h]),
        ]
    };
    let items: Vec<Item> = vec![
        ("a", 160, 120, Some((160, 120)), all(160.0, 120.0)),
        ("b", 90, 200, None, all(90.0, 200.0)),
        (
            "c",
            224,
            224,
            Some((224, 224)),
            vec![("circle", false, [20.0, 30.0, 120.5, 200.0])],
        ),
        (
            "d",
            300,
            100,
            Some((300, 100)),
            vec![
                ("star", true, [1.0, 1.0, 10.0, 10.0]),
                ("triangle", false, [100.0, 20.0, 300.0, 100.0]),
            ],
        ),
        (
            "e",
            64,
            64,
            Some((64, 64)),
            vec![("square", false, [1.0, 1.0, 64.0, 64.0])],
        ),
        (
            "f",
            100,
            150,
            Some((100, 150)),
            vec![("circle", false, [10.0, 10.0, 40.0, 60.0])],
        ),
    ];
    for (i, (id, w, h, size, objects)) in items.iter().enumerate() {
        write_png(&img.join(format!("{id}.png")), *w, *h, i as u32);
        write_xml(&ann.join(format!("{id}.xml")), *size, objects);
    }
    fs::write(img.join("g.png"), b"not a png").unwrap();
    write_xml(
        &ann.join("g.xml"),
        Some((10, 10)),
        &[("circle", false, [1.0, 1.0, 5.0, 5.0])],
    );
    write_png(&img.join("orphan.png"), 32, 32, 9);
}

fn new_engine(model: &Model, max_batch: usize) -> Engine {
    let options = EngineOptions {
        max_batch,
        ..EngineOptions::default()
    };
    Engine::with_options(gpu(), model, &options).unwrap()
}

#[test]
fn both_protocols_all_methods() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());
    let ds = Dataset::open(dir.path(), None).unwrap();
    assert_eq!(ds.layout(), Layout::Voc);
    assert_eq!(ds.samples.len(), 7);
    assert_eq!(ds.skipped.total(), 1);
    let cfg = ModelConfig::vit("eval-tiny", (32, 2, 2), 16, (224, 224), CLASSES.len());
    let model = Model::random(cfg, 7);
    let mut engine = new_engine(&model, 32);
    let plane = 224 * 224;

    // Clean probabilities of every readable image, for the p = 0 check.
    let mut clean = Vec::new();
    for s in &ds.samples {
        if let Ok(p) = agcam::pipeline::prepare(&s.image, &model.config) {
            let logits = engine.predict(&p.input).unwrap().remove(0);
            clean.push((s.id.clone(), softmax(&logits)[s.target_class()] as f64));
        }
    }
    assert_eq!(clean.len(), 6);

    for method in [
        Method::Agcam,
        Method::AttentionRollout,
        Method::RawAttention,
        Method::GradCam,
    ] {
        let mut calls = 0;
        let loc = run_localization(
            &mut engine,
            &ds,
            method,
            &LocalizationOptions::default(),
            |done, total| {
                calls += 1;
                assert!(done <= total);
            },
        )
        .unwrap();
        assert!(calls >= 1);
        let c = loc.counts;
        assert_eq!(c.total, 8, "{method:?}: {c:?}");
        assert_eq!(c.total, c.scored + c.misclassified + c.missing_data);
        assert_eq!((c.unreadable, c.missing_data), (1, 2));
        assert!(c.scored >= 2, "the all-class images always count: {c:?}");
        assert_eq!(loc.images.len(), 7);
        let mean = loc.mean.expect("scored images");
        for v in [
            mean.accuracy,
            mean.iou,
            mean.dice,
            mean.precision,
            mean.recall,
        ] {
            assert!((0.0..=1.0).contains(&v), "{method:?}: {mean:?}");
        }
        for r in &loc.images {
            match r.status {
                Status::Scored => {
                    let m = r.metrics.unwrap();
                    assert_eq!(
                        m.true_positive + m.false_positive + m.false_negative + m.true_negative,
                        plane
                    );
                    for v in [m.accuracy, m.iou, m.dice, m.precision, m.recall] {
                        assert!((0.0..=1.0).contains(&v), "{}: {m:?}", r.id);
                    }
                    assert!(!r.ground_truth_boxes.is_empty());
                }
                Status::Misclassified => assert!(!r.classes.contains(&r.predicted.unwrap())),
                Status::Unreadable => assert_eq!(r.id, "g"),
                Status::NonFinite => panic!("{}: {:?}", r.id, r.error),
            }
        }
        // Image "b" has no <size>: its boxes are scaled by the decoded 90×200.
        let b = loc.images.iter().find(|r| r.id == "b").unwrap();
        assert_eq!(b.image_size, Some((90, 200)));
        // The distractor of "d" is not ground truth: one box, class triangle only.
        let d = loc.images.iter().find(|r| r.id == "d").unwrap();
        assert_eq!(d.classes, vec![2]);
        let json = serde_json::to_string(&loc).unwrap();
        assert!(json.contains("\"method\":\"") && json.contains("box filling"));

        // The paper's 11 steps on every image for AGCAM; fewer for the baselines, to keep the
        // test fast on a software rasteriser (each step is two forward passes per image).
        let options = match method {
            Method::Agcam => PerturbationOptions::default(),
            _ => PerturbationOptions {
                steps: 6,
                limit: Some(4),
                ..PerturbationOptions::default()
            },
        };
        let steps = options.steps;
        let last = steps - 1;
        let pert = run_perturbation(&mut engine, &ds, method, &options, |_, _| {}).unwrap();
        let c = pert.counts;
        let run = options.limit.unwrap_or(7);
        let readable = run.min(6);
        assert_eq!(
            (c.total, c.scored, c.misclassified, c.missing_data),
            (run + 1, readable, 0, 1 + run - readable)
        );
        assert_eq!(pert.gpu_batches_per_image, 1);
        assert_eq!(pert.removed_pixels[last], plane);
        assert!(pert.abpc.unwrap().is_finite());
        assert!(pert.morf_curve.len() == steps && pert.lerf_curve.len() == steps);
        let (morf, lerf, abpc) = (
            pert.morf_auc.unwrap(),
            pert.lerf_auc.unwrap(),
            pert.abpc.unwrap(),
        );
        assert!(
            (lerf - morf - abpc).abs() < 1e-9,
            "ABPC = LeRF AUC − MoRF AUC"
        );
        for r in pert.images.iter().filter(|r| r.status == Status::Scored) {
            let (_, p) = clean.iter().find(|(id, _)| *id == r.id).unwrap();
            assert!(
                (r.morf[0] - p).abs() < 1e-5,
                "{}: {} vs {p}",
                r.id,
                r.morf[0]
            );
            assert!(
                (r.lerf[0] - p).abs() < 1e-5,
                "{}: {} vs {p}",
                r.id,
                r.lerf[0]
            );
            // Everything removed: the same all-grey input both ways.
            assert!((r.morf[last] - r.lerf[last]).abs() < 1e-6);
            assert!(r
                .morf
                .iter()
                .chain(&r.lerf)
                .all(|v| (0.0..=1.0).contains(v)));
        }
        serde_json::to_string(&pert).unwrap();
    }

    // A capacity below the 2 · steps perturbed inputs splits them, with the same scores.
    let mut small = new_engine(&model, 5);
    let options = PerturbationOptions {
        steps: 6,
        limit: Some(2),
        ..PerturbationOptions::default()
    };
    let split = run_perturbation(&mut small, &ds, Method::Agcam, &options, |_, _| {}).unwrap();
    let whole = run_perturbation(&mut engine, &ds, Method::Agcam, &options, |_, _| {}).unwrap();
    assert_eq!(split.gpu_batches_per_image, 3);
    assert!(split.notes.iter().any(|n| n.contains("GPU chunks")));
    assert_eq!(split.counts.scored, 2);
    for (a, b) in split.images.iter().zip(&whole.images) {
        for (x, y) in a
            .morf
            .iter()
            .chain(&a.lerf)
            .zip(b.morf.iter().chain(&b.lerf))
        {
            assert!((x - y).abs() < 1e-5, "{}: {x} vs {y}", a.id);
        }
    }
}
