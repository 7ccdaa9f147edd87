//! Unit tests of the pure parts of the protocols: metrics by hand, XML variants, layouts.

use std::fs;
use std::path::Path;

use super::perturbation::perturbed_inputs;
use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

fn mask(rows: &[&str]) -> Mask {
    let h = rows.len();
    let w = rows[0].len();
    let data = rows
        .iter()
        .flat_map(|r| r.chars().map(|c| c == '#'))
        .collect();
    Mask::from_vec(h, w, data)
}

fn pb(xmin: i64, ymin: i64, xmax: i64, ymax: i64) -> PixelBox {
    PixelBox {
        xmin,
        ymin,
        xmax,
        ymax,
    }
}

// ---------------------------------------------------------------- metrics

#[test]
fn eps_formulas_by_hand() {
    let pred = mask(&["##.", "...", "..."]);
    let gt = mask(&[".#.", ".#.", "..."]);
    let m = box_metrics(&pred, &gt);
    assert_eq!(
        (
            m.true_positive,
            m.false_positive,
            m.false_negative,
            m.true_negative
        ),
        (1, 1, 1, 6)
    );
    let e = 1e-5;
    assert!(close(m.accuracy, (1.0 + 6.0 + e) / (9.0 + e)));
    assert!(close(m.iou, (1.0 + e) / (3.0 + e)));
    assert!(close(m.dice, (2.0 + e) / (4.0 + e)));
    assert!(close(m.precision, (1.0 + e) / (2.0 + e)));
    assert!(close(m.recall, (1.0 + e) / (2.0 + e)));
}

#[test]
fn empty_prediction() {
    let pred = Mask::new(4, 4);
    let gt = fill_boxes(4, 4, &[pb(1, 1, 2, 2)]);
    assert_eq!(gt.count(), 4);
    let m = box_metrics(&pred, &gt);
    let e = EPS;
    assert!(close(m.accuracy, (12.0 + e) / (16.0 + e)));
    assert!(close(m.iou, e / (4.0 + e)));
    assert!(close(m.dice, e / (4.0 + e)));
    // No predicted pixel: precision is eps / eps = 1, as the authors' formula gives.
    assert!(close(m.precision, 1.0));
    assert!(close(m.recall, e / (4.0 + e)));
}

#[test]
fn full_prediction() {
    let pred = mask(&["####"; 4]);
    let gt = fill_boxes(4, 4, &[pb(1, 1, 2, 2)]);
    let m = box_metrics(&pred, &gt);
    let e = EPS;
    assert!(close(m.accuracy, (4.0 + e) / (16.0 + e)));
    assert!(close(m.iou, (4.0 + e) / (16.0 + e)));
    assert!(close(m.dice, (8.0 + e) / (20.0 + e)));
    assert!(close(m.precision, (4.0 + e) / (16.0 + e)));
    assert!(close(m.recall, 1.0));
    // A full prediction is one component whose +1 box is clipped back to the image.
    assert_eq!(predicted_boxes(&pred), vec![pb(0, 0, 4, 4)]);
    assert_eq!(fill_boxes(4, 4, &predicted_boxes(&pred)).count(), 16);
}

#[test]
fn constant_heatmap_gives_empty_mask() {
    let grid = vec![3.25f32; 14 * 14];
    let heat = heatmap(&grid, (14, 14), (224, 224));
    assert!(heat.iter().all(|&v| v == 0.0));
    let m = threshold_mask(&heat, 224, 224, 0.5);
    assert_eq!(m.count(), 0);
    assert!(component_rects(&m).is_empty());
    // Threshold is strict: a map at exactly 0.5 is not in the mask.
    let m = threshold_mask(&[0.5, 0.50001, 1.0, 0.0], 2, 2, 0.5);
    assert_eq!(m.data, vec![false, true, true, false]);
}

#[test]
fn heatmap_is_min_max_normalised() {
    let heat = heatmap(&[0.0, 2.0, 4.0, 6.0], (2, 2), (4, 4));
    let min = heat.iter().copied().fold(f32::INFINITY, f32::min);
    let max = heat.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!((min, max), (0.0, 1.0));
    assert_eq!(heat.len(), 16);
}

#[test]
fn diagonal_pixels_are_one_component() {
    let m = mask(&["#...", ".#..", "..#.", "...."]);
    assert_eq!(
        component_rects(&m),
        vec![Rect {
            x: 0,
            y: 0,
            w: 3,
            h: 3
        }]
    );
    // Anti-diagonal too.
    let m = mask(&["...#", "..#.", "....", "...."]);
    assert_eq!(
        component_rects(&m),
        vec![Rect {
            x: 2,
            y: 0,
            w: 2,
            h: 2
        }]
    );
    // A gap of one pixel separates.
    let m = mask(&["#.#", "...", "..."]);
    assert_eq!(
        component_rects(&m),
        vec![
            Rect {
                x: 0,
                y: 0,
                w: 1,
                h: 1
            },
            Rect {
                x: 2,
                y: 0,
                w: 1,
                h: 1
            }
        ]
    );
}

#[test]
fn ring_with_inner_blob() {
    // An inner component in the ring's hole: two components, the inner box inside the outer.
    let m = mask(&["#####", "#...#", "#.#.#", "#...#", "#####"]);
    let rects = component_rects(&m);
    assert_eq!(rects.len(), 2);
    assert_eq!(
        rects[0],
        Rect {
            x: 0,
            y: 0,
            w: 5,
            h: 5
        }
    );
    assert_eq!(
        rects[1],
        Rect {
            x: 2,
            y: 2,
            w: 1,
            h: 1
        }
    );
    let filled = fill_boxes(5, 5, &predicted_boxes(&m));
    assert_eq!(filled.count(), 25);
}

#[test]
fn touching_and_overlapping_boxes() {
    // Two ground-truth boxes sharing an edge fill their union, once.
    let gt = fill_boxes(4, 6, &[pb(0, 0, 1, 1), pb(2, 0, 3, 1)]);
    assert_eq!(gt.count(), 8);
    // Overlapping boxes: union.
    let gt = fill_boxes(4, 6, &[pb(0, 0, 2, 2), pb(1, 1, 3, 3)]);
    assert_eq!(gt.count(), 9 + 9 - 4);
    // Two components one pixel apart: their +1 boxes touch and overlap.
    let m = mask(&["#.#...", "......", "......", "......"]);
    let boxes = predicted_boxes(&m);
    assert_eq!(boxes, vec![pb(0, 0, 1, 1), pb(2, 0, 3, 1)]);
    assert_eq!(fill_boxes(4, 6, &boxes).count(), 8);
    // Pixels touching by an edge are one component.
    let m = mask(&["##....", ".#....", "......", "......"]);
    assert_eq!(
        component_rects(&m),
        vec![Rect {
            x: 0,
            y: 0,
            w: 2,
            h: 2
        }]
    );
}

#[test]
fn predicted_box_at_the_edge_is_clipped() {
    let m = mask(&["....", "....", "....", "...#"]);
    let boxes = predicted_boxes(&m);
    assert_eq!(boxes, vec![pb(3, 3, 4, 4)]);
    let filled = fill_boxes(4, 4, &boxes);
    assert_eq!(filled.count(), 1);
    assert!(filled.get(3, 3));
    // In the corner at the origin, the box grows right and down: 2×2.
    let m = mask(&["#...", "....", "....", "...."]);
    let filled = fill_boxes(4, 4, &predicted_boxes(&m));
    assert_eq!(filled.count(), 4);
    assert!(filled.get(1, 1));
}

#[test]
fn boxes_outside_or_inverted_fill_nothing() {
    let m = fill_boxes(4, 4, &[pb(5, 0, 9, 3), pb(2, 2, 1, 3), pb(-3, -3, -1, -1)]);
    assert_eq!(m.count(), 0);
    let m = fill_boxes(4, 4, &[pb(-2, -2, 0, 0)]);
    assert_eq!(m.count(), 1);
}

#[test]
fn ground_truth_scaling_truncates() {
    // int(100 / 500 * 224) = int(44.8) = 44; int(500 / 500 * 224) = 224; y over 375.
    let b = scale_box([100.0, 50.0, 500.0, 375.0], (500.0, 375.0), (224, 224));
    assert_eq!(b, pb(44, 29, 224, 224));
    // Filled inclusive and clipped: columns 44..=223, rows 29..=223.
    assert_eq!(fill_boxes(224, 224, &[b]).count(), 180 * 195);
    // Non-square masks scale x by the width and y by the height.
    let b = scale_box([10.0, 10.0, 20.0, 20.0], (40.0, 20.0), (64, 32));
    assert_eq!(b, pb(16, 16, 32, 32));
}

#[test]
fn mean_metrics() {
    assert!(MeanMetrics::of(&[]).is_none());
    let a = box_metrics(&mask(&["#."]), &mask(&["#."]));
    let b = box_metrics(&mask(&[".."]), &mask(&["#."]));
    let m = MeanMetrics::of(&[a, b]).unwrap();
    assert!(close(m.iou, (a.iou + b.iou) / 2.0));
    assert!(close(m.recall, (a.recall + b.recall) / 2.0));
}

// ---------------------------------------------------------------- perturbation

#[test]
fn fractions_and_counts() {
    let f = perturbation_fractions(11);
    assert_eq!(f.len(), 11);
    assert_eq!((f[0], f[5], f[10]), (0.0, 0.5, 1.0));
    let k: Vec<usize> = f.iter().map(|&p| removed_count(224 * 224, p)).collect();
    assert_eq!(
        k,
        vec![0, 5017, 10035, 15052, 20070, 25088, 30105, 35123, 40140, 45158, 50176]
    );
}

#[test]
fn removal_order_and_ties() {
    let heat = [0.1, 0.9, 0.5, 0.9, 0.1];
    assert_eq!(removal_order(&heat, true), vec![1, 3, 2, 0, 4]);
    assert_eq!(removal_order(&heat, false), vec![0, 4, 2, 1, 3]);
    // A constant map removes the same pixels both ways.
    let flat = [0.0f32; 6];
    assert_eq!(removal_order(&flat, true), removal_order(&flat, false));
}

#[test]
fn stable_ties_are_the_index_order() {
    let heat = [0.1, 0.9, 0.5, 0.9, 0.1, 0.5, 0.5];
    let identity: Vec<u32> = (0..heat.len() as u32).collect();
    assert_eq!(Ties::Stable.rank(heat.len(), "x"), None);
    for descending in [true, false] {
        assert_eq!(
            removal_order_ranked(&heat, descending, &identity),
            removal_order(&heat, descending)
        );
    }
    let input = vec![1.0f32; 2 * heat.len()];
    assert_eq!(
        perturbed_inputs(&input, &heat, &[0, 3, 7], Some(&identity)),
        perturbed_inputs(&input, &heat, &[0, 3, 7], None)
    );
}

#[test]
fn random_ties_reorder_only_equal_values_and_repeat_with_the_seed() {
    // A map with deliberate ties: four plateaus of 25 pixels each, in a scrambled layout.
    let heat: Vec<f32> = (0..100).map(|i| ((i * 37) % 4) as f32 / 3.0).collect();
    let ties = Ties::Random { seed: 11 };
    let rank = ties.rank(heat.len(), "img-1").unwrap();
    // A permutation, the same for the same seed and image, different for another of either.
    let mut sorted = rank.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
    assert_eq!(ties.rank(heat.len(), "img-1").unwrap(), rank);
    assert_ne!(ties.rank(heat.len(), "img-2").unwrap(), rank);
    assert_ne!(
        Ties::Random { seed: 12 }.rank(heat.len(), "img-1").unwrap(),
        rank
    );
    for descending in [true, false] {
        let stable = removal_order(&heat, descending);
        let random = removal_order_ranked(&heat, descending, &rank);
        assert_ne!(
            stable, random,
            "the tie rule changes the order of equal values"
        );
        // Still sorted by value; each plateau holds the same pixels at the same positions.
        let values = |o: &[usize]| o.iter().map(|&i| heat[i]).collect::<Vec<f32>>();
        assert_eq!(values(&stable), values(&random));
        for plateau in stable.chunks(25).zip(random.chunks(25)) {
            let (mut a, mut b) = (plateau.0.to_vec(), plateau.1.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b);
        }
        // Equal values follow the rank: increasing rank inside every plateau.
        for p in random.chunks(25) {
            assert!(p.windows(2).all(|w| rank[w[0]] < rank[w[1]]));
        }
    }
    // The perturbed inputs differ where the tie order decides which pixels go first.
    let input = vec![1.0f32; heat.len()];
    assert_ne!(
        perturbed_inputs(&input, &heat, &[10], Some(&rank)),
        perturbed_inputs(&input, &heat, &[10], None)
    );
    assert!(ties.describe().contains("seed 11"));
    assert_eq!(Ties::Stable.describe(), TIE_RULE);
    assert_eq!(
        serde_json::to_string(&ties).unwrap(),
        r#"{"rule":"random","seed":11}"#
    );
}

#[test]
fn perturbed_copies() {
    // Two channels of a 2×2 image (plane 4), three steps: p = 0, 0.5, 1.
    let input: Vec<f32> = (1..=12).map(|v| v as f32).collect();
    let heat = [0.2, 1.0, 0.0, 0.6];
    let removed: Vec<usize> = perturbation_fractions(3)
        .iter()
        .map(|&p| removed_count(4, p))
        .collect();
    assert_eq!(removed, vec![0, 2, 4]);
    let out = perturbed_inputs(&input, &heat, &removed, None);
    let copies: Vec<&[f32]> = out.chunks(12).collect();
    assert_eq!(copies.len(), 6);
    assert_eq!(copies[0], &input[..]);
    // MoRF p = 0.5: pixels 1 and 3 (values 1.0 and 0.6) in every channel.
    assert_eq!(
        copies[1],
        &[1.0, 0.0, 3.0, 0.0, 5.0, 0.0, 7.0, 0.0, 9.0, 0.0, 11.0, 0.0]
    );
    assert!(copies[2].iter().all(|&v| v == 0.0));
    assert_eq!(copies[3], &input[..]);
    // LeRF p = 0.5: pixels 2 and 0.
    assert_eq!(
        copies[4],
        &[0.0, 2.0, 0.0, 4.0, 0.0, 6.0, 0.0, 8.0, 0.0, 10.0, 0.0, 12.0]
    );
    assert!(copies[5].iter().all(|&v| v == 0.0));
}

// ---------------------------------------------------------------- XML

fn parse(xml: &str) -> crate::Result<Annotation> {
    parse_annotation(xml, Path::new("ann/x.xml"))
}

#[test]
fn xml_several_objects_and_distractors() {
    let a = parse(
        "<?xml version=\"1.0\"?>\n<annotation><folder>VOC2012</folder>\
         <size><width>500</width><height>375</height><depth>3</depth></size>\
         <object><name>dog</name><pose>Left</pose><truncated>0</truncated><difficult>0</difficult>\
         <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox>\
         <part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part>\
         </object>\
         <object><name>star</name><distractor>1</distractor>\
         <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>\
         <object><name>person</name><distractor>0</distractor>\
         <bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax><ymax>498</ymax></bndbox></object>\
         </annotation>",
    )
    .unwrap();
    assert_eq!(a.size, Some((500, 375)));
    assert_eq!(a.objects.len(), 3);
    assert_eq!(a.objects[0].name, "dog");
    assert_eq!(a.objects[0].bbox.to_array(), [48.0, 240.0, 195.0, 371.0]);
    assert!(a.objects[1].distractor);
    let targets: Vec<&str> = a.targets().map(|o| o.name.as_str()).collect();
    assert_eq!(targets, ["dog", "person"]);
}

#[test]
fn xml_missing_size_whitespace_and_floats() {
    let a = parse(
        "<annotation>\n  <filename>x.jpg</filename>\n  <!-- a comment -->\n  <object>\n\
         \t<name>\n\t  cat \n\t</name>\n\t<bndbox>\n\t  <xmin> 48.0 </xmin>\n\t  <ymin>12.5</ymin>\n\
         \t  <xmax>\n100\n</xmax>\n\t  <ymax>2e2</ymax>\n\t  <extra>yes</extra>\n\t</bndbox>\n\
         </object>\n</annotation>\n",
    )
    .unwrap();
    assert_eq!(a.size, None);
    assert_eq!(a.objects[0].name, "cat");
    assert_eq!(a.objects[0].bbox.to_array(), [48.0, 12.5, 100.0, 200.0]);
    // A zero size (some real files) is treated as missing.
    let a = parse(
        "<annotation><size><width>0</width><height>0</height></size>\
         <object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax>\
         </bndbox></object></annotation>",
    )
    .unwrap();
    assert_eq!(a.size, None);
}

#[test]
fn xml_bad_number_names_file_and_field() {
    let e = parse(
        "<annotation><object><name>cat</name><bndbox><xmin>4O</xmin><ymin>1</ymin>\
         <xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ann/x.xml"), "{e}");
    assert!(e.contains("<xmin>") && e.contains("`4O`"), "{e}");
    assert!(e.contains("object 1 (cat)"), "{e}");
    let e = parse("<annotation><size><width>big</width><height>3</height></size></annotation>")
        .unwrap_err()
        .to_string();
    assert!(e.contains("ann/x.xml") && e.contains("<width>"), "{e}");
}

#[test]
fn xml_missing_fields_are_errors() {
    let e = parse(
        "<annotation><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin>\
         <xmax>2</xmax></bndbox></object></annotation>",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("ann/x.xml") && e.contains("missing <bndbox><ymax>"),
        "{e}"
    );
    let e = parse("<annotation><object><name>cat</name></object></annotation>")
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing <bndbox>"), "{e}");
    let e = parse("<annotation><object><bndbox/></object></annotation>")
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing <name>"), "{e}");
    let e = parse("<annotation><object>").unwrap_err().to_string();
    assert!(
        e.contains("ann/x.xml") && e.contains("not valid XML"),
        "{e}"
    );
}

// ---------------------------------------------------------------- layouts

fn touch(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"").unwrap();
}

fn write_xml(path: &Path, objects: &[(&str, bool)]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut s = String::from("<annotation><size><width>100</width><height>80</height></size>");
    for (name, distractor) in objects {
        s.push_str(&format!(
            "<object><name>{name}</name><distractor>{}</distractor><bndbox><xmin>10</xmin>\
             <ymin>10</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>",
            u8::from(*distractor)
        ));
    }
    s.push_str("</annotation>");
    fs::write(path, s).unwrap();
}

#[test]
fn voc_flat_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("labels.txt"), "circle\nsquare\ntriangle\n").unwrap();
    touch(&d.join("JPEGImages/a.png"));
    touch(&d.join("JPEGImages/b.jpg"));
    touch(&d.join("JPEGImages/c.JPEG"));
    touch(&d.join("JPEGImages/orphan.png"));
    touch(&d.join("JPEGImages/notes.txt"));
    write_xml(&d.join("Annotations/a.xml"), &[("square", false)]);
    write_xml(
        &d.join("Annotations/b.xml"),
        &[("circle", true), ("triangle", false), ("Square", false)],
    );
    write_xml(&d.join("Annotations/c.xml"), &[("hexagon", false)]);
    write_xml(&d.join("Annotations/lonely.xml"), &[("circle", false)]);
    let ds = Dataset::open(d, None).unwrap();
    assert_eq!(ds.layout(), Layout::Voc);
    assert_eq!(ds.class_source, "labels.txt");
    assert_eq!(ds.class_names, ["circle", "square", "triangle"]);
    let ids: Vec<&str> = ds.samples.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(ds.samples[0].classes, [1]);
    // The distractor is neither the target nor in the ground truth; names match ignoring case.
    assert_eq!(ds.samples[1].classes, [2, 1]);
    assert_eq!(ds.samples[1].target_class(), 2);
    assert_eq!(ds.samples[1].boxes().len(), 2);
    assert_eq!(ds.skipped.images_without_annotation.len(), 1);
    assert_eq!(ds.skipped.annotations_without_image.len(), 1);
    assert_eq!(ds.skipped.unknown_class.len(), 1);
    assert_eq!(ds.skipped.total(), 3);
    let warnings = ds.skipped.warnings().join("\n");
    assert!(warnings.contains("orphan.png"), "{warnings}");
    assert!(warnings.contains("hexagon"), "{warnings}");

    // Without labels.txt: the model's labels; without either: a clear error.
    fs::remove_file(d.join("labels.txt")).unwrap();
    let labels: Vec<String> = ["square", "circle", "triangle"].map(String::from).to_vec();
    let ds = Dataset::open(d, Some(&labels)).unwrap();
    assert_eq!(ds.samples[0].classes, [0]);
    assert!(ds.class_source.contains("model"));
    let e = Dataset::open(d, None).unwrap_err().to_string();
    assert!(e.contains("labels.txt") && e.contains("label_names"), "{e}");
}

#[test]
fn imagenet_kaggle_flat_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("LOC_synset_mapping.txt"),
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n",
    )
    .unwrap();
    touch(&d.join("ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG"));
    touch(&d.join("ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000002.JPEG"));
    write_xml(
        &d.join("ILSVRC/Annotations/CLS-LOC/val/ILSVRC2012_val_00000001.xml"),
        &[("n01443537", false)],
    );
    write_xml(
        &d.join("ILSVRC/Annotations/CLS-LOC/val/ILSVRC2012_val_00000002.xml"),
        &[("n01440764", false), ("n01440764", false)],
    );
    let ds = Dataset::open(d, None).unwrap();
    assert_eq!(ds.layout(), Layout::ImagenetFlat);
    assert_eq!(ds.class_source, "LOC_synset_mapping.txt");
    assert_eq!(ds.class_names[0], "tench, Tinca tinca");
    assert_eq!(ds.samples.len(), 2);
    assert_eq!(ds.samples[0].classes, [1]);
    assert_eq!(ds.samples[1].classes, [0, 0]);
    assert!(ds.describe().contains("flat"), "{}", ds.describe());

    // Without the mapping, a flat folder cannot be mapped: the error says what is missing.
    fs::remove_file(d.join("LOC_synset_mapping.txt")).unwrap();
    let e = Dataset::open(d, None).unwrap_err().to_string();
    assert!(
        e.contains("LOC_synset_mapping.txt") && e.contains("flat"),
        "{e}"
    );
}

#[test]
fn imagenet_class_folders_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    touch(&d.join("val/n02000000/v1.JPEG"));
    touch(&d.join("val/n01000000/v2.JPEG"));
    touch(&d.join("val/n01000000/v3.JPEG"));
    write_xml(
        &d.join("Annotations/CLS-LOC/val/v1.xml"),
        &[("n02000000", false)],
    );
    write_xml(
        &d.join("Annotations/CLS-LOC/val/v2.xml"),
        &[("n01000000", false)],
    );
    write_xml(&d.join("Annotations/CLS-LOC/val/v3.xml"), &[]);
    let ds = Dataset::open(d, None).unwrap();
    assert_eq!(ds.layout(), Layout::ImagenetClassFolders);
    assert_eq!(ds.class_source, "sorted class-folder names");
    assert_eq!(ds.class_names, ["n01000000", "n02000000"]);
    assert_eq!(ds.samples.len(), 2);
    assert_eq!(ds.samples[0].id, "v1");
    assert_eq!(ds.samples[0].classes, [1]);
    assert_eq!(ds.samples[1].classes, [0]);
    assert_eq!(ds.skipped.without_objects.len(), 1);
}

#[test]
fn undetectable_layouts_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    touch(&d.join("images/a.png"));
    let e = detect_layout(d).unwrap_err().to_string();
    assert!(e.contains("JPEGImages") && e.contains("CLS-LOC"), "{e}");
    assert!(e.contains("images/"), "{e}");

    touch(&d.join("JPEGImages/a.png"));
    let e = detect_layout(d).unwrap_err().to_string();
    assert!(e.contains("Annotations/ is missing"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_xml(&d.join("Annotations/CLS-LOC/val/a.xml"), &[("n1", false)]);
    let e = detect_layout(d).unwrap_err().to_string();
    assert!(e.contains("no images were found"), "{e}");

    let e = detect_layout(&d.join("nope")).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}
