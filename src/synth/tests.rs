//! Tests of the synthetic dataset: determinism, geometry, boxes, distractors, files.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::path::Path;

use super::raster::{bounds, Mask};
use super::scene::{self, SceneParams, DISTRACTOR_RATIO, MAX_IOU};
use super::shapes;
use super::*;

fn small_opts(out: &Path, count: usize, seed: u64) -> SynthOptions {
    SynthOptions {
        out: out.to_path_buf(),
        count,
        seed,
        min_size: 64,
        max_size: 160,
        ..SynthOptions::default()
    }
}

fn params(share: f64, class: Option<usize>) -> SceneParams {
    SceneParams {
        min_size: 64,
        max_size: 200,
        distractor_share: share,
        scale: DEFAULT_SCALE,
        clutter: 1.0,
        class,
    }
}

/// Every file under `dir`, relative path → bytes.
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn same_seed_same_bytes_across_thread_counts() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut oa = small_opts(a.path(), 12, 7);
    oa.threads = 1;
    let mut ob = small_opts(b.path(), 12, 7);
    ob.threads = 3;
    let sa = generate(&oa, |_| {}).unwrap();
    let sb = generate(&ob, |_| {}).unwrap();
    assert_eq!(sa.per_class, sb.per_class);
    let (ta, tb) = (read_tree(a.path()), read_tree(b.path()));
    assert_eq!(ta.len(), 12 * 2 + 1);
    assert_eq!(ta, tb, "same seed must give byte-identical files");
}

#[test]
fn different_seed_or_index_differs() {
    let opts = SynthOptions::new("unused");
    let other = SynthOptions {
        seed: 1,
        ..opts.clone()
    };
    for i in 0..3 {
        let a = encode_png(&render(&opts, i).unwrap().image).unwrap();
        let again = encode_png(&render(&opts, i).unwrap().image).unwrap();
        let b = encode_png(&render(&other, i).unwrap().image).unwrap();
        let next = encode_png(&render(&opts, i + 1).unwrap().image).unwrap();
        assert_eq!(a, again);
        assert_ne!(a, b);
        assert_ne!(a, next);
    }
}

#[test]
fn every_class_at_extreme_scales_and_rotations() {
    let (w, h) = (120usize, 90usize);
    for (class, name) in CLASSES.iter().enumerate() {
        let unit = shapes::shape(class).unwrap();
        for &size in &[2.0, 5.0, 0.15 * 90.0, 0.6 * 90.0, 86.0] {
            for &angle in &[0.0, PI / 7.0, PI / 2.0, PI, 5.3, 2.0 * PI - 1e-9] {
                let (rings, bw, bh) = shapes::sized(&unit, angle, size);
                assert!((bw.max(bh) - size).abs() < 1e-9 * size.max(1.0));
                let rings = shapes::translate(&rings, (1.0, 1.0));
                let mut m = Mask::for_bounds(bounds(&rings), w, h);
                m.fill(&rings);
                let b = m
                    .pixel_bounds()
                    .unwrap_or_else(|| panic!("{name} at size {size} is empty"));
                // Everything drawn lies within the analytic bounds, and those in the image.
                let (x0, y0, x1, y1) = bounds(&rings);
                assert!(x0 >= 1.0 - 1e-9 && y0 >= 1.0 - 1e-9);
                assert!(x1 <= w as f64 && y1 <= h as f64);
                assert!(b.0 as f64 >= x0.floor() && b.2 as f64 <= x1.ceil());
                assert!(b.1 as f64 >= y0.floor() && b.3 as f64 <= y1.ceil());
                // A shape this large covers most of its box's width and height.
                if size >= 10.0 {
                    assert!((b.2 - b.0 + 1) as f64 >= bw - 2.0, "{name}");
                    assert!((b.3 - b.1 + 1) as f64 >= bh - 2.0, "{name}");
                }
            }
        }
    }
    assert!(shapes::shape(CLASSES.len()).is_none());
}

#[test]
fn boxes_are_tight_and_inside_the_image() {
    for i in 0..24 {
        let s = scene::render(11, i, &params(0.5, None)).unwrap();
        let (w, h) = (s.canvas.width, s.canvas.height);
        for o in &s.objects {
            let (x0, y0, x1, y1) = o.bbox;
            assert!(x1 < w && y1 < h, "box outside the image");
            // Every drawn pixel is in the box; the box touches drawn pixels on all four sides.
            let m = &o.mask;
            for y in m.y0..m.y0 + m.h {
                for x in m.x0..m.x0 + m.w {
                    if m.covers(x, y) {
                        assert!((x0..=x1).contains(&x) && (y0..=y1).contains(&y));
                    }
                }
            }
            assert!((y0..=y1).any(|y| m.covers(x0, y)) && (y0..=y1).any(|y| m.covers(x1, y)));
            assert!((x0..=x1).any(|x| m.covers(x, y0)) && (x0..=x1).any(|x| m.covers(x, y1)));
            // One pixel of margin: no object reaches the image border.
            assert!(x0 >= 1 && y0 >= 1 && x1 + 1 < w && y1 + 1 < h);
            // The target is 15–60 % of the shorter side (give or take anti-aliasing pixels).
            if !o.distractor {
                let side = (x1 - x0 + 1).max(y1 - y0 + 1) as f64;
                let short = w.min(h) as f64;
                assert!(
                    side >= 0.15 * short - 1.0 && side <= 0.6 * short + 2.0,
                    "{side} {short}"
                );
            }
        }
    }
}

#[test]
fn distractors_are_other_classes_smaller_and_apart() {
    let mut seen = 0;
    for i in 0..30 {
        let s = scene::render(5, i, &params(1.0, Some(i as usize % CLASSES.len()))).unwrap();
        assert!(!s.objects[0].distractor);
        assert_eq!(s.objects[0].class, i as usize % CLASSES.len());
        assert!(s.objects.len() <= 2);
        if let Some(d) = s.objects.get(1) {
            seen += 1;
            let t = &s.objects[0];
            assert!(d.distractor);
            assert_ne!(d.class, t.class);
            assert!(scene::iou(d.bbox, t.bbox) <= MAX_IOU);
            assert!(!d.mask.touches(&t.mask), "distractor overlaps the target");
            let side = |b: (usize, usize, usize, usize)| (b.2 - b.0 + 1).max(b.3 - b.1 + 1);
            assert!(
                side(d.bbox) as f64 <= DISTRACTOR_RATIO.1 * side(t.bbox) as f64 + 2.0,
                "distractor not smaller"
            );
        }
    }
    assert!(
        seen >= 20,
        "only {seen}/30 pictures got a distractor at share 1"
    );
    for i in 0..10 {
        let s = scene::render(5, i, &params(0.0, None)).unwrap();
        assert_eq!(s.objects.len(), 1);
    }
}

#[test]
fn sizes_vary_and_are_mostly_not_square() {
    let opts = SynthOptions {
        min_size: 64,
        max_size: 200,
        ..SynthOptions::default()
    };
    let sizes: Vec<(u32, u32)> = (0..20)
        .map(|i| render(&opts, i).unwrap().image.dimensions())
        .collect();
    assert!(sizes
        .iter()
        .all(|&(w, h)| (64..=200).contains(&w) && (64..=200).contains(&h)));
    assert!(sizes.iter().filter(|(w, h)| w != h).count() >= 15);
    assert!(sizes.iter().any(|(w, h)| w > h) && sizes.iter().any(|(w, h)| w < h));
}

/// A minimal XML reader for the annotation subset: elements, text, no attributes. Returns
/// (path of element names, text) for every leaf, and fails on any mismatched tag.
fn parse_xml(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut leaves = Vec::new();
    let mut rest = s.trim();
    let mut text_start: Option<&str> = None;
    while !rest.is_empty() {
        let lt = rest.find('<').ok_or("text after the root")?;
        let text = &rest[..lt];
        let gt = rest[lt..].find('>').ok_or("unclosed tag")? + lt;
        let tag = &rest[lt + 1..gt];
        if tag.contains(['<', '"', '=']) {
            return Err(format!("unexpected tag `{tag}`"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or("close without open")?;
            if open != name {
                return Err(format!("<{open}> closed by </{name}>"));
            }
            if text_start.take().is_some() {
                let path = stack
                    .iter()
                    .chain([&open])
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/");
                leaves.push((path, text.trim().to_string()));
            }
        } else {
            if !text.trim().is_empty() {
                return Err(format!("mixed content `{}`", text.trim()));
            }
            if stack.is_empty() && !leaves.is_empty() {
                return Err("two roots".into());
            }
            stack.push(tag);
            text_start = Some(tag);
        }
        rest = &rest[gt + 1..];
    }
    if stack.is_empty() {
        Ok(leaves)
    } else {
        Err(format!("unclosed <{}>", stack.join("><")))
    }
}

#[test]
fn xml_is_well_formed_and_matches_the_objects() {
    let opts = SynthOptions {
        distractor_share: 1.0,
        ..SynthOptions::new("unused")
    };
    let img = (0..10)
        .map(|i| render(&opts, i).unwrap())
        .find(|im| im.objects.len() == 2)
        .expect("a picture with a distractor");
    for layout in [Layout::Voc, Layout::Imagenet] {
        let xml = annotation_xml(&img, layout);
        let leaves = parse_xml(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let get = |p: &str| -> Vec<&str> {
            leaves
                .iter()
                .filter(|(k, _)| k == p)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(get("annotation/filename"), [format!("{}.png", img.id)]);
        assert_eq!(
            get("annotation/size/width"),
            [img.image.width().to_string()]
        );
        assert_eq!(
            get("annotation/size/height"),
            [img.image.height().to_string()]
        );
        assert_eq!(get("annotation/size/depth"), ["3"]);
        let names = get("annotation/object/name");
        let expect: Vec<String> = img
            .objects
            .iter()
            .map(|o| match layout {
                Layout::Voc => o.name().to_string(),
                Layout::Imagenet => wnid(o.class),
            })
            .collect();
        assert_eq!(names, expect);
        assert_eq!(get("annotation/object/distractor"), ["0", "1"]);
        assert_eq!(get("annotation/object/pose"), ["Unspecified"; 2]);
        let xmins = get("annotation/object/bndbox/xmin");
        let ymaxs = get("annotation/object/bndbox/ymax");
        for (k, o) in img.objects.iter().enumerate() {
            assert_eq!(xmins[k], o.bbox.xmin.to_string());
            assert_eq!(ymaxs[k], o.bbox.ymax.to_string());
        }
    }
    assert!(parse_xml("<a><b>1</a></b>").is_err());
    assert!(parse_xml("<a><b>1</b>").is_err());
}

#[test]
fn twenty_images_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts(dir.path(), 20, 3);
    let mut calls = Vec::new();
    let summary = generate(&opts, |done| calls.push(done)).unwrap();
    assert_eq!(calls, (1..=20).collect::<Vec<_>>());
    assert_eq!(summary.count, 20);
    assert_eq!(summary.per_class.iter().sum::<usize>(), 20);
    assert_eq!(
        summary.distractors_per_class.iter().sum::<usize>(),
        summary.with_distractor
    );
    assert!(summary.to_string().contains("with a distractor"));
    let labels = fs::read_to_string(dir.path().join("labels.txt")).unwrap();
    assert_eq!(labels.lines().collect::<Vec<_>>(), CLASSES);
    for i in 0..20 {
        let id = image_id(i);
        let png = dir.path().join("JPEGImages").join(format!("{id}.png"));
        let decoded = image::open(&png).unwrap().to_rgb8();
        assert_eq!(
            decoded,
            render(&opts, i).unwrap().image,
            "PNG must be lossless"
        );
        let xml = fs::read_to_string(dir.path().join("Annotations").join(format!("{id}.xml")));
        parse_xml(&xml.unwrap()).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        layout: Layout::Imagenet,
        ..small_opts(dir.path(), 3, 3)
    };
    generate(&opts, |_| {}).unwrap();
    let root = dir.path();
    assert!(root.join("Data/CLS-LOC/val/synth_000002.png").is_file());
    let xml = fs::read_to_string(root.join("Annotations/CLS-LOC/val/synth_000002.xml")).unwrap();
    assert!(xml.contains("<name>s000000"));
    let mapping = fs::read_to_string(root.join("LOC_synset_mapping.txt")).unwrap();
    let lines: Vec<&str> = mapping.lines().collect();
    assert_eq!(lines.len(), CLASSES.len());
    assert_eq!(lines[3], format!("s0000003 {}", CLASSES[3]));
}

#[test]
fn bad_options_are_errors_not_panics() {
    let ok = SynthOptions::new("unused");
    assert!(ok.validate().is_ok());
    let cases = [
        SynthOptions {
            count: 0,
            ..ok.clone()
        },
        SynthOptions {
            min_size: 8,
            ..ok.clone()
        },
        SynthOptions {
            min_size: 500,
            max_size: 400,
            ..ok.clone()
        },
        SynthOptions {
            max_size: 100_000,
            ..ok.clone()
        },
        SynthOptions {
            distractor_share: 1.5,
            ..ok.clone()
        },
        SynthOptions {
            distractor_share: -0.1,
            ..ok.clone()
        },
        SynthOptions {
            distractor_share: f64::NAN,
            ..ok.clone()
        },
    ];
    for c in &cases {
        assert!(matches!(c.validate(), Err(Error::Invalid(_))), "{c:?}");
        assert!(render(c, 0).is_err());
        assert!(generate(c, |_| {}).is_err());
    }
    assert_eq!("VOC".parse::<Layout>().unwrap(), Layout::Voc);
    assert_eq!("imagenet".parse::<Layout>().unwrap(), Layout::Imagenet);
    assert!("coco".parse::<Layout>().is_err());
    // A path that cannot be a folder is an I/O error naming it.
    let file = tempfile::NamedTempFile::new().unwrap();
    let opts = small_opts(&file.path().join("sub"), 1, 0);
    assert!(matches!(generate(&opts, |_| {}), Err(Error::Io { .. })));
}

#[test]
fn minimum_size_pictures_work() {
    let p = SceneParams {
        min_size: MIN_SIZE,
        max_size: MIN_SIZE,
        distractor_share: 1.0,
        scale: (MAX_SCALE, MAX_SCALE),
        clutter: 3.0,
        class: None,
    };
    for i in 0..20 {
        let s = scene::render(9, i, &p).unwrap();
        assert_eq!((s.canvas.width, s.canvas.height), (32, 32));
    }
    let b = BBox {
        xmin: 1,
        ymin: 1,
        xmax: 10,
        ymax: 10,
    };
    assert_eq!((b.width(), b.height()), (10, 10));
    assert_eq!(b.iou(&b), 1.0);
    assert_eq!(
        b.iou(&BBox {
            xmin: 11,
            ymin: 1,
            xmax: 20,
            ymax: 10
        }),
        0.0
    );
}
