//! Tests of the image module against references from PIL, PyTorch, OpenCV and NumPy
//! (tests/fixtures/image, written by tools/make_image_fixtures.py).

use std::path::{Path, PathBuf};

use image::RgbImage;
use safetensors::{Dtype, SafeTensors};

use super::*;
use crate::error::Error;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/image")
        .join(name)
}

fn reference_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES
        .get_or_init(|| std::fs::read(fixture("reference.safetensors")).expect("reference fixture"))
}

fn reference() -> SafeTensors<'static> {
    SafeTensors::deserialize(reference_bytes()).expect("reference.safetensors parses")
}

/// Names of the reference tensors under `prefix`, sorted.
fn names(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = reference()
        .names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .map(|n| n.to_string())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no reference tensors under {prefix}");
    names
}

fn ref_u8(name: &str) -> (Vec<usize>, Vec<u8>) {
    let st = reference();
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::U8, "{name}");
    (t.shape().to_vec(), t.data().to_vec())
}

fn ref_f32(name: &str) -> (Vec<usize>, Vec<f32>) {
    let st = reference();
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

fn ref_image(name: &str) -> RgbImage {
    let (shape, data) = ref_u8(name);
    assert_eq!(shape.len(), 3, "{name}");
    assert_eq!(shape[2], 3, "{name}");
    RgbImage::from_raw(shape[1] as u32, shape[0] as u32, data).expect("image size")
}

/// A scratch directory for this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("agcam-image-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (number of differing bytes, largest absolute difference)
fn byte_diff(a: &[u8], b: &[u8]) -> (usize, u8) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0, 0), |(n, m), (&x, &y)| {
        let d = x.abs_diff(y);
        (n + usize::from(d != 0), m.max(d))
    })
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// JPEG: our decoder (zune-jpeg) and PIL's (libjpeg-turbo) differ in IDCT, chroma upsampling and
/// YCbCr->RGB rounding; allow a small difference there (measured: max 3 on the 4:2:0 colour file,
/// max 1 on the grayscale one). Lossy WebP decodes identically (image-webp vs libwebp).
fn lossy(file: &str) -> bool {
    file.ends_with(".jpg")
}

#[test]
fn decode_matches_pil_convert_rgb() {
    let mut report = Vec::new();
    for name in names("decode/") {
        let file = &name["decode/".len()..];
        let ours = load_rgb(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let pil = ref_image(&name);
        assert_eq!(ours.dimensions(), pil.dimensions(), "{file}");
        let (n, max) = byte_diff(ours.as_raw(), pil.as_raw());
        report.push(format!("{file}: {n} bytes differ, max {max}"));
        if lossy(file) {
            assert!(
                max <= LOSSY_MAX_DIFF,
                "{file}: max difference {max} > {LOSSY_MAX_DIFF}"
            );
        } else {
            assert_eq!(n, 0, "{file}: {n} bytes differ from PIL (max {max})");
        }
    }
    eprintln!("{}", report.join("\n"));
}

const LOSSY_MAX_DIFF: u8 = 4;

#[test]
fn decode_uses_content_not_extension() {
    let scratch = Scratch::new("content");
    let bytes = std::fs::read(fixture("rgb_37x23.png")).unwrap();
    let expected = load_rgb(&fixture("rgb_37x23.png")).unwrap();
    for name in ["png_named.jpg", "png_named.bmp", "no_extension"] {
        let path = scratch.path(name);
        std::fs::write(&path, &bytes).unwrap();
        let img = load_rgb(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img, expected, "{name}");
    }
}

/// 16-bit grayscale saturates at 255 as PIL's `I;16` does, and says so only when a sample was
/// above 255: a 16-bit file holding 8-bit values, or an 8-bit one, is not flagged.
#[test]
fn sixteen_bit_gray_saturation_is_flagged() {
    let scratch = Scratch::new("gray16");
    let cases: [(&str, u16, bool); 3] = [
        ("bright", 1000, true),
        ("dim", 200, false),
        ("edge", 255, false),
    ];
    for (name, value, saturated) in cases {
        let path = scratch.path(&format!("{name}.png"));
        image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(5, 3, image::Luma([value]))
            .save(&path)
            .unwrap();
        let decoded = decode_file(&path, Orientation::Apply).unwrap();
        assert_eq!(decoded.saturated_16bit, saturated, "{name}");
        assert_eq!(
            decoded.image.get_pixel(0, 0).0,
            [value.min(255) as u8; 3],
            "{name}"
        );
    }
    let path = scratch.path("gray8.png");
    image::GrayImage::from_pixel(5, 3, image::Luma([250]))
        .save(&path)
        .unwrap();
    assert!(
        !decode_file(&path, Orientation::Apply)
            .unwrap()
            .saturated_16bit
    );
}

fn assert_image_error(path: &Path) {
    match load_rgb(path) {
        Err(Error::Image { path: p, msg }) => {
            assert_eq!(p, path);
            assert!(!msg.is_empty());
            let shown = Error::Image { path: p, msg }.to_string();
            assert!(shown.contains(&path.display().to_string()), "{shown}");
        }
        other => panic!("{}: expected Error::Image, got {other:?}", path.display()),
    }
}

#[test]
fn corrupt_files_are_image_errors() {
    let scratch = Scratch::new("corrupt");
    let png = std::fs::read(fixture("rgb_37x23.png")).unwrap();
    let jpg = std::fs::read(fixture("photo_37x23.jpg")).unwrap();

    let truncated = scratch.path("truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    assert_image_error(&truncated);

    let header_only = scratch.path("header_only.png");
    std::fs::write(&header_only, &png[..20]).unwrap();
    assert_image_error(&header_only);

    let truncated_jpg = scratch.path("truncated.jpg");
    std::fs::write(&truncated_jpg, &jpg[..jpg.len() / 3]).unwrap();
    // zune-jpeg may fill the missing part with grey instead of failing; it must not panic.
    let _ = load_rgb(&truncated_jpg);

    // Deterministic pseudo-random bytes (xorshift), named as a PNG.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let random = scratch.path("random.png");
    std::fs::write(&random, &noise).unwrap();
    assert_image_error(&random);

    let random_unknown = scratch.path("random.xyz");
    std::fs::write(&random_unknown, &noise).unwrap();
    assert_image_error(&random_unknown);

    let empty = scratch.path("empty.png");
    std::fs::write(&empty, b"").unwrap();
    assert_image_error(&empty);

    // A PNG signature followed by garbage.
    let mut bad_chunks = png[..8].to_vec();
    bad_chunks.extend_from_slice(&noise[..200]);
    let bad = scratch.path("bad_chunks.png");
    std::fs::write(&bad, &bad_chunks).unwrap();
    assert_image_error(&bad);

    // A format that is recognised but not enabled (GIF).
    let gif = scratch.path("image.gif");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    assert_image_error(&gif);
}

#[test]
fn missing_file_is_io_error() {
    let path = fixture("does_not_exist.png");
    match load_rgb(&path) {
        Err(Error::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Resize

#[test]
fn resize_matches_pil_bit_exactly() {
    let mut checked = 0;
    for name in names("resize/") {
        let rest = &name["resize/".len()..];
        let (file, size) = rest.rsplit_once('/').unwrap();
        let (w, h) = size.split_once('x').unwrap();
        let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
        let src = load_rgb(&fixture(file)).unwrap();
        let ours = resize_bilinear_antialias(&src, w, h);
        let pil = ref_image(&name);
        assert_eq!(ours.dimensions(), (w, h), "{name}");
        let (n, max) = byte_diff(ours.as_raw(), pil.as_raw());
        assert_eq!(n, 0, "{name}: {n} bytes differ from PIL (max {max})");
        checked += 1;
    }
    assert_eq!(checked, 19);
}

#[test]
fn resize_pillow12_order_matches_pil() {
    // Every size: Pillow 12 gives the Pillow 13 result except where a separate reference exists.
    for name in names("resize/") {
        let rest = &name["resize/".len()..];
        let (file, size) = rest.rsplit_once('/').unwrap();
        let (w, h) = size.split_once('x').unwrap();
        let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
        let legacy = format!("resize_pillow12/{rest}");
        let expected = if reference().names().contains(&legacy.as_str()) {
            ref_image(&legacy)
        } else {
            ref_image(&name)
        };
        let src = load_rgb(&fixture(file)).unwrap();
        let ours = resize_bilinear_antialias_with(&src, w, h, ResizePassOrder::Pillow12);
        let (n, max) = byte_diff(ours.as_raw(), expected.as_raw());
        assert_eq!(n, 0, "{legacy}: {n} bytes differ from PIL (max {max})");
    }
    assert_eq!(names("resize_pillow12/").len(), 3);
}

#[test]
fn resize_edge_sizes() {
    let src = load_rgb(&fixture("rgb_37x23.png")).unwrap();
    assert_eq!(resize_bilinear_antialias(&src, 37, 23), src);
    assert_eq!(resize_bilinear_antialias(&src, 0, 5).dimensions(), (0, 5));
    assert_eq!(resize_bilinear_antialias(&src, 5, 0).dimensions(), (5, 0));
    let empty = RgbImage::new(0, 0);
    let out = resize_bilinear_antialias(&empty, 4, 3);
    assert_eq!(out.dimensions(), (4, 3));
    assert!(out.as_raw().iter().all(|&v| v == 0));
    // A constant image stays constant through any resize.
    let flat = RgbImage::from_pixel(13, 7, image::Rgb([10, 200, 255]));
    for (w, h) in [(1, 1), (5, 3), (40, 9), (13, 70), (224, 224)] {
        let out = resize_bilinear_antialias(&flat, w, h);
        assert!(out.pixels().all(|p| p.0 == [10, 200, 255]), "{w}x{h}");
    }
}

// ---------------------------------------------------------------------------------------------
// Maps

#[test]
fn upsample_matches_torch_interpolate() {
    let mut worst = 0f32;
    let mut report = Vec::new();
    for name in names("upsample/")
        .into_iter()
        .filter(|n| n.ends_with("/in"))
    {
        let case = &name[..name.len() - "/in".len()];
        let (in_shape, grid) = ref_f32(&name);
        let (out_shape, expected) = ref_f32(&format!("{case}/out"));
        let ours = upsample_bilinear(&grid, in_shape[0], in_shape[1], out_shape[0], out_shape[1]);
        assert_eq!(ours.len(), expected.len(), "{case}");
        let max = ours
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let differing = ours
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        report.push(format!(
            "{case}: {differing}/{} differ, max {max:e}",
            ours.len()
        ));
        assert!(max <= 1e-6, "{case}: max abs difference {max:e}");
        worst = worst.max(max);
    }
    eprintln!(
        "{}\nupsample: max abs difference from torch {worst:e}",
        report.join("\n")
    );
}

/// 64-bit FNV-1a, as tools/make_image_fixtures.py hashes large reference outputs.
fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn upsample_display_sizes_match_torch_bit_exactly() {
    for name in names("upsample_fnv/")
        .into_iter()
        .filter(|n| n.ends_with("/in"))
    {
        let case = &name["upsample_fnv/".len()..name.len() - "/in".len()];
        let (_, out_size) = case.split_once("_to_").unwrap();
        let (oh, ow) = out_size.split_once('x').unwrap();
        let (oh, ow): (usize, usize) = (oh.parse().unwrap(), ow.parse().unwrap());
        let (shape, grid) = ref_f32(&name);
        let (_, hash) = ref_u8(&format!("upsample_fnv/{case}/fnv1a64"));
        let expected = u64::from_le_bytes(hash.try_into().unwrap());
        let ours = upsample_bilinear(&grid, shape[0], shape[1], oh, ow);
        assert_eq!(ours.len(), oh * ow);
        let got = fnv1a64(ours.iter().flat_map(|v| v.to_le_bytes()));
        assert_eq!(got, expected, "{case}: output differs from torch");
    }
}

#[test]
fn upsample_edge_cases() {
    // Identity copies.
    let grid: Vec<f32> = (0..12).map(|v| v as f32 * 0.5 - 2.0).collect();
    assert_eq!(upsample_bilinear(&grid, 3, 4, 3, 4), grid);
    // A 1×1 grid broadcasts.
    assert_eq!(upsample_bilinear(&[2.5], 1, 1, 2, 3), vec![2.5; 6]);
    // Empty output and empty grid.
    assert!(upsample_bilinear(&grid, 3, 4, 0, 7).is_empty());
    assert_eq!(upsample_bilinear(&[], 0, 4, 2, 2), vec![0.0; 4]);
    // Exactly 2× along a row: torch gives [0, 0.25, 0.75, 1] for [0, 1].
    assert_eq!(
        upsample_bilinear(&[0.0, 1.0], 1, 2, 1, 4),
        vec![0.0, 0.25, 0.75, 1.0]
    );
}

#[test]
fn min_max_edge_cases() {
    let mut empty: [f32; 0] = [];
    min_max_normalize(&mut empty);

    let mut single = [3.5f32];
    min_max_normalize(&mut single);
    assert_eq!(single, [0.0]);

    let mut constant = [-2.0f32; 5];
    min_max_normalize(&mut constant);
    assert_eq!(constant, [0.0; 5]);

    let mut negative = [-4.0f32, -2.0, -3.0, -1.0];
    min_max_normalize(&mut negative);
    assert_eq!(negative, [0.0, 2.0 / 3.0, 1.0 / 3.0, 1.0]);

    let mut mixed = [1.0f32, -1.0, 0.0, 3.0];
    min_max_normalize(&mut mixed);
    assert_eq!(mixed, [0.5, 0.0, 0.25, 1.0]);

    // Non-finite values become 0 before normalising.
    let mut nonfinite = [f32::NAN, 2.0, f32::INFINITY, -2.0, f32::NEG_INFINITY];
    min_max_normalize(&mut nonfinite);
    assert_eq!(nonfinite, [0.5, 1.0, 0.5, 0.0, 0.5]);

    let mut all_nan = [f32::NAN; 3];
    min_max_normalize(&mut all_nan);
    assert_eq!(all_nan, [0.0; 3]);

    // A range that overflows f32.
    let mut huge = [-3e38f32, 0.0, 3e38];
    min_max_normalize(&mut huge);
    assert_eq!(huge, [0.0, 0.5, 1.0]);

    // Tiny but non-zero ranges still span [0, 1].
    let mut tiny = [1.0f32, 1.0 + f32::EPSILON];
    min_max_normalize(&mut tiny);
    assert_eq!(tiny, [0.0, 1.0]);
}

// ---------------------------------------------------------------------------------------------
// Colormap and overlay

#[test]
fn jet_table_matches_opencv() {
    let (shape, expected) = ref_u8("jet");
    assert_eq!(shape, [256, 3]);
    let ours: Vec<u8> = jet_table().iter().flatten().copied().collect();
    let mismatches: Vec<usize> = (0..256)
        .filter(|&i| ours[i * 3..i * 3 + 3] != expected[i * 3..i * 3 + 3])
        .collect();
    assert!(
        mismatches.is_empty(),
        "jet entries differ from cv2 at {mismatches:?}"
    );
    for i in 0..256 {
        assert_eq!(jet(i as f32 / 255.0), jet_table()[i], "jet({i}/255)");
    }
}

#[test]
fn jet_value_mapping() {
    let t = jet_table();
    assert_eq!(jet(0.0), t[0]);
    assert_eq!(jet(1.0), t[255]);
    assert_eq!(jet(0.5), t[128]); // 127.5 rounds half to even
    assert_eq!(jet(-3.0), t[0]);
    assert_eq!(jet(7.0), t[255]);
    assert_eq!(jet(f32::NAN), t[0]);
    assert_eq!(jet(f32::INFINITY), t[255]);
    assert_eq!(jet(f32::NEG_INFINITY), t[0]);
    assert_eq!(t[0], [0, 0, 128]);
    assert_eq!(t[255], [128, 0, 0]);
}

#[test]
fn overlay_matches_python_pipeline() {
    let original = load_rgb(&fixture("rgb_37x23.png")).unwrap();
    for name in names("overlay/")
        .into_iter()
        .filter(|n| n.ends_with("/grid"))
    {
        let case = &name[..name.len() - "/grid".len()];
        let (shape, grid) = ref_f32(&name);
        let (_, alpha) = ref_f32(&format!("{case}/alpha"));
        let expected = ref_image(&format!("{case}/out"));
        let ours = overlay(&original, &grid, shape[0], shape[1], alpha[0]);
        let (n, max) = byte_diff(ours.as_raw(), expected.as_raw());
        assert_eq!(n, 0, "{case}: {n} bytes differ (max {max})");
    }
}

#[test]
fn overlay_alpha_extremes() {
    let img = RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]));
    let grid = [0.0, 1.0, 2.0, 3.0];
    assert_eq!(overlay(&img, &grid, 2, 2, 0.0), img);
    let heat_only = overlay(&img, &grid, 2, 2, 1.0);
    assert_eq!(heat_only.get_pixel(0, 0).0, jet(0.0));
    assert_eq!(heat_only.get_pixel(3, 2).0, jet(1.0));
    assert_eq!(overlay(&img, &grid, 2, 2, 5.0), heat_only);
    assert_eq!(
        overlay(&img, &grid, 2, 2, f32::NAN),
        overlay(&img, &grid, 2, 2, DEFAULT_OVERLAY_ALPHA)
    );
    // A constant map is all zeros after min-max: the colour of 0 everywhere.
    let flat = overlay(&img, &[1.0; 4], 2, 2, 1.0);
    assert!(flat.pixels().all(|p| p.0 == jet(0.0)));
    assert_eq!(
        overlay(&RgbImage::new(0, 0), &grid, 2, 2, 0.5).dimensions(),
        (0, 0)
    );
}

// ---------------------------------------------------------------------------------------------
// Normalisation and preprocessing

fn vec3(name: &str) -> [f32; 3] {
    let (_, v) = ref_f32(name);
    [v[0], v[1], v[2]]
}

#[test]
fn normalize_matches_torchvision_bit_exactly() {
    for name in names("normalize/")
        .into_iter()
        .filter(|n| n.ends_with("/out"))
    {
        let case = &name[..name.len() - "/out".len()];
        let img = ref_image(&format!("{case}/image"));
        let (shape, expected) = ref_f32(&name);
        assert_eq!(shape, [3, img.height() as usize, img.width() as usize]);
        let ours = normalize_chw(
            &img,
            vec3(&format!("{case}/mean")),
            vec3(&format!("{case}/std")),
        );
        let differing = ours
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differing, 0, "{case}: {differing} values differ from torch");
    }
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[test]
fn preprocess_matches_python_pipeline() {
    let (shape, expected) = ref_f32("preprocess/smooth_100x76.png/40x48/imagenet");
    assert_eq!(shape, [3, 40, 48]);
    let path = fixture("smooth_100x76.png");
    let (original, tensor) = preprocess(&path, 40, 48, IMAGENET_MEAN, IMAGENET_STD).unwrap();
    assert_eq!(original.dimensions(), (100, 76));
    assert_eq!(tensor.len(), expected.len());
    assert!(tensor
        .iter()
        .zip(&expected)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn preprocess_rejects_bad_arguments() {
    let path = fixture("rgb_37x23.png");
    let invalid =
        |r: crate::error::Result<(RgbImage, Vec<f32>)>| matches!(r, Err(Error::Invalid(_)));
    assert!(invalid(preprocess(
        &path,
        0,
        224,
        IMAGENET_MEAN,
        IMAGENET_STD
    )));
    assert!(invalid(preprocess(
        &path,
        224,
        0,
        IMAGENET_MEAN,
        IMAGENET_STD
    )));
    assert!(invalid(preprocess(
        &path,
        usize::MAX,
        224,
        IMAGENET_MEAN,
        IMAGENET_STD
    )));
    assert!(invalid(preprocess(
        &path,
        224,
        224,
        IMAGENET_MEAN,
        [0.2, 0.0, 0.2]
    )));
    assert!(invalid(preprocess(
        &path,
        224,
        224,
        IMAGENET_MEAN,
        [0.2, f32::NAN, 0.2]
    )));
    assert!(invalid(preprocess(
        &path,
        224,
        224,
        [f32::INFINITY; 3],
        IMAGENET_STD
    )));
    assert!(matches!(
        preprocess(&fixture("nope.png"), 224, 224, IMAGENET_MEAN, IMAGENET_STD),
        Err(Error::Io { .. })
    ));
    let (_, t) = preprocess(&path, 224, 224, [0.5; 3], [0.5; 3]).unwrap();
    assert_eq!(t.len(), 3 * 224 * 224);
    assert!(t.iter().all(|v| (-1.0..=1.0).contains(v)));
}

// ---------------------------------------------------------------------------------------------
// .npy

#[test]
fn npy_files_equal_numpy_save() {
    let scratch = Scratch::new("npy");
    let cases: [(&str, Vec<usize>, Vec<f32>); 3] = [
        (
            "sample_2x3x5.npy",
            vec![2, 3, 5],
            (0..30).map(|i| i as f32 * 0.25 - 3.0).collect(),
        ),
        (
            "sample_7.npy",
            vec![7],
            (0..7).map(|i| i as f32 / 7.0).collect(),
        ),
        ("sample_scalar.npy", vec![], vec![-1.5]),
    ];
    for (file, shape, data) in cases {
        let out = scratch.path(file);
        write_npy_f32(&out, &shape, &data).unwrap();
        let ours = std::fs::read(&out).unwrap();
        let numpy = std::fs::read(fixture(file)).unwrap();
        assert_eq!(ours, numpy, "{file} differs from np.save");
    }
}

#[test]
fn npy_header_bytes() {
    let header = npy::npy_header_f32(&[2, 3]).unwrap();
    assert_eq!(header.len(), 128);
    assert_eq!(&header[..8], b"\x93NUMPY\x01\x00");
    assert_eq!(u16::from_le_bytes([header[8], header[9]]), 118);
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_eq!(&header[10..10 + dict.len()], dict.as_bytes());
    assert!(header[10 + dict.len()..127].iter().all(|&b| b == b' '));
    assert_eq!(header[127], b'\n');
    for shape in [
        &[][..],
        &[1],
        &[224, 224],
        &[12, 197, 197],
        &[1, 2, 3, 4, 5, 6, 7, 8],
    ] {
        assert_eq!(
            npy::npy_header_f32(shape).unwrap().len() % 64,
            0,
            "{shape:?}"
        );
    }
}

#[test]
fn npy_rejects_wrong_shape_and_bad_path() {
    let scratch = Scratch::new("npy-bad");
    let out = scratch.path("x.npy");
    assert!(matches!(
        write_npy_f32(&out, &[2, 3], &[0.0; 5]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        write_npy_f32(&out, &[usize::MAX, 2], &[0.0; 2]),
        Err(Error::Invalid(_))
    ));
    let missing_dir = scratch.path("no/such/dir/x.npy");
    assert!(matches!(
        write_npy_f32(&missing_dir, &[1], &[0.0]),
        Err(Error::Io { .. })
    ));
}
