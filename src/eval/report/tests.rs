//! The report's pure parts, and the page's structure for hand-made runs (no GPU needed).

use std::fs;
use std::path::Path;

use image::RgbImage;

use super::gallery::{base64, draw_outline};
use super::svg::{bin_counts, nice_step, nice_ticks};
use super::*;
use crate::eval::{
    Counts, DatasetInfo, LocalizationImage, MeanMetrics, Metrics, PerturbationImage, Ties, TIE_RULE,
};

#[test]
fn base64_rfc4648_vectors() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
    }
    assert_eq!(base64(&[0xFF, 0xFE, 0xFD]), "//79");
}

#[test]
fn escaping() {
    assert_eq!(
        esc(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

#[test]
fn histogram_bins() {
    // Ten bins of 0.1 over [0, 1]: the last bin is closed, outliers go to the end bins.
    let c = bin_counts(
        &[0.0, 0.05, 0.1, 0.95, 1.0, -0.3, 1.7, f64::NAN],
        (0.0, 1.0),
        10,
    );
    assert_eq!(c, vec![3, 1, 0, 0, 0, 0, 0, 0, 0, 3]);
    assert_eq!(data_range([0.23, -0.04].into_iter()), (-0.1, 0.3));
    assert_eq!(data_range([0.5].into_iter()), (0.5, 0.6));
    assert_eq!(data_range(std::iter::empty()), (0.0, 1.0));
}

#[test]
fn round_ticks() {
    let close = |a: Vec<f64>, b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    };
    let t = nice_ticks((0.0, 1.0), false);
    assert!(close(t.clone(), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), "{t:?}");
    let t = nice_ticks((-0.4, 0.8), false);
    assert!(
        close(t.clone(), &[-0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8]),
        "{t:?}"
    );
    let t = nice_ticks((0.0, 15.0), false);
    assert!(
        close(t.clone(), &[0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0]),
        "{t:?}"
    );
    let t = nice_ticks((0.0, 15.0), true);
    assert!(close(t.clone(), &[0.0, 5.0, 10.0, 15.0]), "{t:?}");
    let t = nice_ticks((0.0, 3.0), true);
    assert!(close(t.clone(), &[0.0, 1.0, 2.0, 3.0]), "{t:?}");
    assert_eq!(nice_ticks((3.0, 3.0), false), vec![3.0]);
    assert_eq!(nice_step(0.3, true), 1.0);
    assert_eq!(nice_step(13.0, true), 20.0);
}

#[test]
fn outlines_are_clipped_and_hollow() {
    let mut img = RgbImage::new(8, 6);
    draw_outline(&mut img, [1.0, 1.0, 6.0, 5.0], [255, 0, 0], 1);
    let red = |x, y| img.get_pixel(x, y).0 == [255, 0, 0];
    assert!(red(1, 1) && red(5, 4) && red(1, 4) && red(5, 1) && red(3, 1));
    assert!(!red(3, 2) && !red(0, 0) && !red(6, 1) && !red(1, 5));
    // Partly outside: its edges inside the image only; wholly outside: nothing.
    let mut img = RgbImage::new(4, 4);
    draw_outline(&mut img, [-3.0, -3.0, 2.0, 2.0], [9, 9, 9], 1);
    assert_eq!(img.get_pixel(1, 1).0, [9, 9, 9]);
    assert_eq!(img.get_pixel(1, 0).0, [9, 9, 9]);
    assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
    let before = img.clone();
    draw_outline(&mut img, [5.0, 5.0, 9.0, 9.0], [9, 9, 9], 1);
    assert_eq!(img, before);
}

fn entry(id: &str, score: f64) -> Entry<'_> {
    Entry {
        id,
        image: Path::new("x.png"),
        explained: 0,
        predicted: None,
        values: vec![score],
        map: &[],
        predicted_boxes: &[],
    }
}

#[test]
fn gallery_picks_worst_median_best_without_repeats() {
    let e = [
        entry("a", 0.5),
        entry("b", 0.1),
        entry("c", 0.9),
        entry("d", 0.3),
    ];
    // Sorted b, d, a, c: median is the lower middle one.
    assert_eq!(picks(&e, 0), vec![("worst", 1), ("median", 3), ("best", 2)]);
    assert_eq!(picks(&e[..2], 0), vec![("worst", 1), ("best", 0)]);
    assert_eq!(picks(&e[..1], 0), vec![("worst", 0)]);
    assert!(picks(&[], 0).is_empty());
}

/// A VOC set of `n` pictures (one target box each, a distractor in every third), two classes.
fn dataset(dir: &Path, n: usize) -> Dataset {
    let (img, ann) = (dir.join("JPEGImages"), dir.join("Annotations"));
    fs::create_dir_all(&img).unwrap();
    fs::create_dir_all(&ann).unwrap();
    fs::write(dir.join("labels.txt"), "circle\nsquare\n").unwrap();
    for i in 0..n {
        let (w, h) = (120 + 20 * i as u32, 100);
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 2) as u8, (y * 2) as u8, 90]))
            .save(img.join(format!("p{i}.png")))
            .unwrap();
        let distractor = if i % 3 == 0 {
            "<object><name>square</name><distractor>1</distractor><bndbox><xmin>70</xmin>\
             <ymin>60</ymin><xmax>100</xmax><ymax>90</ymax></bndbox></object>"
        } else {
            ""
        };
        let side = 20 + 8 * i;
        fs::write(
            ann.join(format!("p{i}.xml")),
            format!(
                "<annotation><size><width>{w}</width><height>{h}</height></size><object>\
                 <name>{}</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>{}</xmax>\
                 <ymax>{}</ymax></bndbox></object>{distractor}</annotation>",
                ["circle", "square"][i % 2],
                5 + side,
                (5 + side).min(99)
            ),
        )
        .unwrap();
    }
    Dataset::open(dir, None).unwrap()
}

fn grid_map(i: usize) -> Vec<f32> {
    (0..16).map(|k| ((k * (i + 3)) % 7) as f32).collect()
}

fn perturbation_report(ds: &Dataset, method: Method, shift: f64) -> PerturbationReport {
    let images: Vec<PerturbationImage> = ds
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let morf = vec![0.9, 0.4 - shift, 0.1];
            let lerf = vec![0.9, 0.8 - 0.1 * i as f64, 0.1];
            let mean = |v: &[f64]| v.iter().sum::<f64>() / 3.0;
            PerturbationImage {
                id: s.id.clone(),
                image: s.image.clone(),
                class: s.target_class(),
                predicted: Some(s.target_class()),
                status: Status::Scored,
                error: None,
                morf_auc: Some(mean(&morf)),
                lerf_auc: Some(mean(&lerf)),
                abpc: Some(mean(&lerf) - mean(&morf)),
                morf,
                lerf,
                map: grid_map(i),
            }
        })
        .collect();
    let n = images.len();
    PerturbationReport {
        protocol: "perturbation",
        method,
        heatmap_size: (32, 32),
        map_grid: (4, 4),
        model: "hand-made".into(),
        adapter: "none".into(),
        dataset: DatasetInfo::of(ds),
        counts: Counts {
            total: n,
            scored: n,
            ..Counts::default()
        },
        correctly_classified: n,
        fractions: vec![0.0, 0.5, 1.0],
        removed_pixels: vec![0, 512, 1024],
        morf_curve: vec![0.9, 0.4 - shift, 0.1],
        lerf_curve: vec![0.9, 0.6, 0.1],
        morf_auc: Some(0.4),
        lerf_auc: Some(0.5),
        abpc: Some(0.1 + shift / 3.0),
        gpu_batches_per_image: 1,
        tie_rule: TIE_RULE.into(),
        ties: Ties::Stable,
        notes: vec!["a <note> & more".into()],
        images,
    }
}

/// Occurrences of `needle` in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// What every page must be: complete, with no reference to anything outside it.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(!html.contains("<script"), "no script");
    let outside = html
        .replace("xmlns=\"http://www.w3.org/2000/svg\"", "")
        .contains("http");
    assert!(!outside, "no link out of the page");
    assert!(!html.contains("<link"));
    for src in html.split("src=\"").skip(1) {
        assert!(
            src.starts_with("data:image/png;base64,iVBORw0KGgo"),
            "PNG data URL"
        );
    }
}

#[test]
fn perturbation_page_structure() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), 6);
    let runs = [
        perturbation_report(&ds, Method::Agcam, 0.0),
        perturbation_report(&ds, Method::AttentionRollout, 0.2),
    ];
    let out = dir.path().join("report");
    let page = write_report(&out, Runs::Perturbation(&runs), &ds, "agcam eval x").unwrap();
    assert_eq!(page, out.join("index.html"));
    let html = fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);
    assert_eq!(count(&html, "<table class=\"summary\">"), 1);
    // One summary row per method, both names in it.
    for m in ["agcam", "attention-rollout"] {
        assert!(
            html.contains(&format!("<tr><td class=\"l\">{m}</td>")),
            "{m}"
        );
    }
    // Per method: the curves and a histogram.
    assert_eq!(count(&html, "<svg "), 4);
    assert_eq!(count(&html, "<polyline"), 4, "MoRF and LeRF per method");
    // Per method: worst, median and best of six pictures.
    assert_eq!(count(&html, "<img class=\"overlay\""), 6);
    for label in ["worst", "median", "best"] {
        assert_eq!(count(&html, &format!("<b>{label}</b>")), 2);
    }
    // The breakdown: both classes, three size terciles, with and without a distractor.
    for group in [
        "class circle",
        "class square",
        "with a distractor",
        "without a distractor",
    ] {
        assert!(html.contains(&format!(">{group}<")), "{group}");
    }
    assert_eq!(count(&html, "<td class=\"l\">target "), 3);
    assert!(html.contains("a &lt;note&gt; &amp; more"));
    assert!(html.contains(TIE_RULE));
}

#[test]
fn localization_page_structure() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), 4);
    let metrics = |iou: f64| Metrics {
        true_positive: 1,
        false_positive: 1,
        false_negative: 1,
        true_negative: 1,
        accuracy: 0.5,
        iou,
        dice: 0.5,
        precision: 0.5,
        recall: 0.5,
    };
    let images: Vec<LocalizationImage> = ds
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| LocalizationImage {
            id: s.id.clone(),
            image: s.image.clone(),
            classes: s.classes.clone(),
            predicted: Some(if i == 3 {
                1 - s.target_class()
            } else {
                s.target_class()
            }),
            status: if i == 3 {
                Status::Misclassified
            } else {
                Status::Scored
            },
            error: None,
            image_size: None,
            predicted_boxes: vec![PixelBox {
                xmin: 2,
                ymin: 2,
                xmax: 20,
                ymax: 20,
            }],
            ground_truth_boxes: Vec::new(),
            metrics: (i != 3).then(|| metrics(0.2 * i as f64)),
            map: grid_map(i),
        })
        .collect();
    let report = LocalizationReport {
        protocol: "localization",
        method: Method::Agcam,
        threshold: 0.5,
        mask_size: (32, 32),
        map_grid: (4, 4),
        model: "hand-made".into(),
        adapter: "none".into(),
        dataset: DatasetInfo::of(&ds),
        counts: Counts {
            total: 4,
            scored: 3,
            misclassified: 1,
            ..Counts::default()
        },
        mean: MeanMetrics::of(images.iter().filter_map(|r| r.metrics.as_ref())),
        notes: Vec::new(),
        images,
    };
    let html = render_report(Runs::Localization(&[report]), &ds, "cmd").unwrap();
    assert_self_contained(&html);
    assert_eq!(count(&html, "<table class=\"summary\">"), 1);
    assert_eq!(count(&html, "<svg "), 1, "the IoU histogram only");
    assert_eq!(count(&html, "<img class=\"overlay\""), 3);
    assert!(html.contains("predicted box"));
    // Scored images only: the misclassified p3 is in no group and no picture.
    assert!(!html.contains("alt=\"p3\""));
}

#[test]
fn report_folder_checks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, "x").unwrap();
    let err = prepare_report_dir(&file).unwrap_err().to_string();
    assert!(err.contains("not a folder"), "{err}");
    let nested = dir.path().join("a/b");
    prepare_report_dir(&nested).unwrap();
    assert!(nested.is_dir());
    assert_eq!(
        fs::read_dir(&nested).unwrap().count(),
        0,
        "no probe left behind"
    );
    let ds = dataset(dir.path(), 1);
    let err = render_report(Runs::Perturbation(&[]), &ds, "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one run"), "{err}");
}
