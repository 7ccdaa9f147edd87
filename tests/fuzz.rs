//! Property tests of the file readers on arbitrary input (arbtest, stable Rust): the
//! safetensors header and tensor table, `config.json` / `preprocessor_config.json`, VOC XML and
//! ImageNet annotations, and image decoding. Each must return `Ok` or an error, never panic,
//! never hang, and never allocate in proportion to a number read from the file rather than to
//! the file's size. Each property runs for a fixed time (`BUDGET_MS`), so CI stays quick; set
//! `AGCAM_FUZZ_MS` to run longer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arbtest::arbitrary::{self, Unstructured};

/// Records the largest single allocation, so that a property can check it against the size of
/// its input.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// Milliseconds per property.
const BUDGET_MS: u64 = 2000;

fn budget() -> u64 {
    std::env::var("AGCAM_FUZZ_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BUDGET_MS)
}

/// Fixed allowance on top of what is proportional to the input (parser tables, buffers).
const SLACK: usize = 8 << 20;

/// Runs `f` on an input of `input_len` bytes; fails on a case slower than a second or an
/// allocation larger than `factor` × the input plus [`SLACK`]. (Tests in this binary run one
/// at a time: see `LOCK`.)
fn bounded<T>(input_len: usize, factor: usize, f: impl FnOnce() -> T) -> T {
    LARGEST.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        took < Duration::from_secs(1),
        "took {took:?} on {input_len} bytes"
    );
    assert!(
        largest <= factor * input_len + SLACK,
        "allocated {largest} bytes at once for {input_len} bytes of input"
    );
    out
}

/// Properties share the allocation counter: one at a time.
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A number that is usually small but sometimes huge or at a type's edge.
fn number(u: &mut Unstructured) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0..=5)? {
        0 => u64::MAX,
        1 => u.arbitrary::<u64>()?,
        2 => 1 << u.int_in_range(0..=63)?,
        _ => u.int_in_range(0..=64)?,
    })
}

/// A safetensors file: a structured header (tensor names, dtypes, shapes, offsets, sometimes
/// duplicated or out of order) and data, then sometimes a few bytes flipped or cut off.
fn safetensors_bytes(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    const NAMES: &[&str] = &[
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "blocks.0.norm1.weight",
        "blocks.0.attn.qkv.weight",
        "head.weight",
        "head.bias",
        "norm.weight",
        "__metadata__",
    ];
    const DTYPES: &[(&str, u64)] = &[
        ("F32", 4),
        ("F16", 2),
        ("BF16", 2),
        ("F64", 8),
        ("I8", 1),
        ("BOOL", 1),
        ("U8", 1),
        ("X", 1),
    ];
    let mut entries = Vec::new();
    let mut offset = 0u64;
    for _ in 0..u.int_in_range(0..=6)? {
        let name = u.choose(NAMES)?;
        let (dtype, size) = u.choose(DTYPES)?;
        let shape: Vec<u64> = (0..u.int_in_range(0..=4)?)
            .map(|_| {
                if u.ratio(7, 8)? {
                    u.int_in_range(1..=8)
                } else {
                    number(u)
                }
            })
            .collect::<arbitrary::Result<_>>()?;
        let len = if u.ratio(7, 8)? {
            shape.iter().fold(*size, |a, &d| a.saturating_mul(d))
        } else {
            number(u)?
        };
        let end = offset.saturating_add(len);
        entries.push(format!(
            r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{offset},{end}]}}"#
        ));
        offset = if u.ratio(1, 8)? { number(u)? } else { end };
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut bytes = if u.ratio(1, 16)? {
        number(u)?.to_le_bytes().to_vec()
    } else {
        (header.len() as u64).to_le_bytes().to_vec()
    };
    bytes.extend_from_slice(header.as_bytes());
    let data_len = if u.ratio(7, 8)? {
        offset.min(1 << 16)
    } else {
        u.int_in_range(0..=4096)?
    } as usize;
    let mut data = vec![0u8; data_len];
    u.fill_buffer(&mut data)?;
    bytes.extend_from_slice(&data);
    if u.ratio(1, 3)? {
        mutate(u, &mut bytes)?;
    }
    Ok(bytes)
}

/// A real checkpoint whose header has a few values mutated (shapes, offsets, dtypes, names).
fn mutated_checkpoint(u: &mut Unstructured, original: &[u8]) -> arbitrary::Result<Vec<u8>> {
    let n = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&original[8..8 + n]).unwrap();
    for _ in 0..u.int_in_range(1..=3)? {
        mutate_json(u, &mut header)?;
    }
    let text = serde_json::to_vec(&header).unwrap();
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(&original[8 + n..]);
    if u.ratio(1, 4)? {
        mutate(u, &mut bytes)?;
    }
    Ok(bytes)
}

/// Flips a few bytes and sometimes cuts the end off.
fn mutate(u: &mut Unstructured, bytes: &mut Vec<u8>) -> arbitrary::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    for _ in 0..u.int_in_range(0..=3)? {
        let i = u.choose_index(bytes.len())?;
        bytes[i] = u.arbitrary()?;
    }
    if u.ratio(1, 4)? {
        let keep = u.choose_index(bytes.len())?;
        bytes.truncate(keep);
    }
    Ok(())
}

#[test]
fn safetensors_header_and_tensor_table() {
    let _guard = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (mut cases, mut parsed) = (0, 0);
    let original = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/odd_ls/model.safetensors"),
    )
    .unwrap();
    arbtest::arbtest(|u| {
        let bytes = if u.ratio(1, 2)? {
            safetensors_bytes(u)?
        } else {
            mutated_checkpoint(u, &original)?
        };
        std::fs::write(&path, &bytes).unwrap();
        // Tensors become f32: at most twice the bytes of a 2-byte dtype in the file.
        let err = bounded(bytes.len(), 4, || {
            agcam::model::load_model(&path, None, &Default::default()).err()
        });
        cases += 1;
        // Past the header check: the loader's own refusal (missing tensors, ...).
        parsed +=
            usize::from(err.is_some_and(|e| !e.to_string().contains("not a valid safetensors")));
        Ok(())
    })
    .budget_ms(budget());
    eprintln!("{cases} files, {parsed} with a valid header");
}

/// An arbitrary JSON value: usually small, sometimes a huge or negative number, a long string,
/// or a nested array or object.
fn json_value(u: &mut Unstructured, depth: u32) -> arbitrary::Result<serde_json::Value> {
    use serde_json::Value;
    Ok(match u.int_in_range(0..=9)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(number(u)?),
        3 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        4 => Value::from(-(u.int_in_range(0..=1_000_000)? as i64)),
        5 => Value::from(u.arbitrary::<String>()?),
        6 if depth < 3 => Value::Array(
            (0..u.int_in_range(0..=4)?)
                .map(|_| json_value(u, depth + 1))
                .collect::<arbitrary::Result<_>>()?,
        ),
        7 if depth < 3 => Value::Object(
            (0..u.int_in_range(0..=4)?)
                .map(|_| Ok((number(u)?.to_string(), json_value(u, depth + 1)?)))
                .collect::<arbitrary::Result<_>>()?,
        ),
        8 => Value::from(u.int_in_range(0..=64)?),
        _ => Value::from(0.5),
    })
}

/// A real config with a few of its values replaced, keys removed or added, anywhere in the tree.
fn mutate_json(u: &mut Unstructured, value: &mut serde_json::Value) -> arbitrary::Result<()> {
    use serde_json::Value;
    match value {
        Value::Object(map) if !map.is_empty() && u.ratio(3, 4)? => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = u.choose(&keys)?.clone();
            match u.int_in_range(0..=3)? {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, json_value(u, 0)?);
                }
                _ => mutate_json(u, map.get_mut(&key).expect("a key of the map"))?,
            }
        }
        Value::Array(items) if !items.is_empty() && u.ratio(3, 4)? => {
            let i = u.choose_index(items.len())?;
            match u.int_in_range(0..=3)? {
                0 => {
                    items.remove(i);
                }
                1 => items.push(json_value(u, 0)?),
                _ => mutate_json(u, &mut items[i])?,
            }
        }
        other => *other = json_value(u, 0)?,
    }
    Ok(())
}

/// `text` (a JSON file) with a few values mutated, and rarely a few bytes.
fn config_json(u: &mut Unstructured, text: &str) -> arbitrary::Result<String> {
    let mut value: serde_json::Value = serde_json::from_str(text).expect("a JSON fixture");
    for _ in 0..u.int_in_range(0..=3)? {
        mutate_json(u, &mut value)?;
    }
    let mut bytes = serde_json::to_vec_pretty(&value).expect("JSON");
    if u.ratio(1, 10)? {
        mutate(u, &mut bytes)?;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn config_and_preprocessor_config() {
    let _guard = one_at_a_time();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut total = (0, 0);
    // A Hugging Face folder (config.json + preprocessor_config.json) and a timm one.
    for (folder, files) in [
        ("hf_vit", &["config.json", "preprocessor_config.json"][..]),
        ("odd_ls", &["config.json"][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let weights = fixtures.join(folder).join("model.safetensors");
        std::fs::copy(&weights, dir.path().join("model.safetensors")).unwrap();
        let weights_len = std::fs::metadata(&weights).unwrap().len() as usize;
        let originals: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(fixtures.join(folder).join(f)).unwrap())
            .collect();
        arbtest::arbtest(|u| {
            let mut input = weights_len;
            for (file, original) in files.iter().zip(&originals) {
                let text = config_json(u, original)?;
                input += text.len();
                std::fs::write(dir.path().join(file), &text).unwrap();
            }
            let loaded = bounded(input, 8, || {
                agcam::model::load_model(dir.path(), None, &Default::default()).is_ok()
            });
            total.0 += 1;
            total.1 += usize::from(loaded);
            Ok(())
        })
        .budget_ms(budget() / 2);
    }
    eprintln!("{} config sets, {} loaded", total.0, total.1);
}

/// Pascal VOC / ImageNet annotation XML from its usual elements, with odd values.
fn annotation_xml(u: &mut Unstructured) -> arbitrary::Result<String> {
    const TAGS: &[&str] = &[
        "object",
        "name",
        "bndbox",
        "xmin",
        "ymin",
        "xmax",
        "ymax",
        "size",
        "width",
        "height",
        "distractor",
        "filename",
        "depth",
        "difficult",
    ];
    fn text(u: &mut Unstructured) -> arbitrary::Result<String> {
        Ok(match u.int_in_range(0..=5)? {
            0 => number(u)?.to_string(),
            1 => format!("{}", u.arbitrary::<f64>()?),
            2 => format!("-{}", number(u)?),
            3 => "n01440764".into(),
            4 => "&amp;&lt;".into(),
            _ => u.arbitrary::<String>()?.replace(['<', '&'], " "),
        })
    }
    fn element(u: &mut Unstructured, depth: u32) -> arbitrary::Result<String> {
        let tag = u.choose(TAGS)?;
        let inner = if depth < 4 && u.ratio(1, 2)? {
            (0..u.int_in_range(0..=5)?)
                .map(|_| element(u, depth + 1))
                .collect::<arbitrary::Result<Vec<_>>>()?
                .join("")
        } else {
            text(u)?
        };
        Ok(format!("<{tag}>{inner}</{tag}>"))
    }
    let body = (0..u.int_in_range(0..=6)?)
        .map(|_| element(u, 0))
        .collect::<arbitrary::Result<Vec<_>>>()?
        .join("");
    let mut bytes = format!("<annotation>{body}</annotation>").into_bytes();
    mutate(u, &mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn voc_xml_annotations() {
    let _guard = one_at_a_time();
    arbtest::arbtest(|u| {
        let xml = annotation_xml(u)?;
        bounded(xml.len(), 16, || {
            if let Ok(a) = agcam::eval::parse_annotation(&xml, Path::new("a.xml")) {
                let _ = (a.inverted_boxes(), a.boxes_outside());
            }
        });
        Ok(())
    })
    .budget_ms(budget());
}

/// An ImageNet validation folder: a synset mapping, one annotation and one picture.
#[test]
fn imagenet_annotations_and_synset_mapping() {
    let _guard = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("Annotations/CLS-LOC/val")).unwrap();
    std::fs::create_dir_all(root.join("Data/CLS-LOC/val")).unwrap();
    image::RgbImage::new(8, 8)
        .save(root.join("Data/CLS-LOC/val/ILSVRC2012_val_00000001.png"))
        .unwrap();
    arbtest::arbtest(|u| {
        let mut mapping = String::new();
        for _ in 0..u.int_in_range(0..=5)? {
            let line = match u.int_in_range(0..=3)? {
                0 => "n01440764 tench, Tinca tinca".to_string(),
                1 => format!("n{} {}", number(u)?, u.arbitrary::<String>()?),
                2 => String::new(),
                _ => u.arbitrary::<String>()?,
            };
            mapping.push_str(&line);
            mapping.push('\n');
        }
        let xml = annotation_xml(u)?;
        std::fs::write(root.join("LOC_synset_mapping.txt"), &mapping).unwrap();
        std::fs::write(
            root.join("Annotations/CLS-LOC/val/ILSVRC2012_val_00000001.xml"),
            &xml,
        )
        .unwrap();
        bounded(mapping.len() + xml.len(), 16, || {
            let _ = agcam::eval::Dataset::open(root, None);
        });
        Ok(())
    })
    .budget_ms(budget());
}

/// A small valid picture of each format, to start mutations from.
fn seeds() -> Vec<Vec<u8>> {
    let img = image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 99]));
    let mut out = Vec::new();
    for format in [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Bmp,
        image::ImageFormat::WebP,
    ] {
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, format).unwrap();
        out.push(bytes.into_inner());
    }
    out
}

#[test]
fn image_decoding() {
    let _guard = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.img");
    let seeds = seeds();
    arbtest::arbtest(|u| {
        let mut bytes = u.choose(&seeds)?.clone();
        mutate(u, &mut bytes)?;
        std::fs::write(&path, &bytes).unwrap();
        // Decoders allocate the picture size their header declares before reading pixels, so
        // the bound here is agcam's decode limit (MAX_DECODED_BYTES, checked before decoding:
        // not every decoder applies the reader's limit), not the file size.
        LARGEST.store(0, Ordering::Relaxed);
        let start = Instant::now();
        for orientation in [
            agcam::image::Orientation::Apply,
            agcam::image::Orientation::Ignore,
        ] {
            let _ = agcam::image::decode_file(&path, orientation);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} bytes",
            bytes.len()
        );
        let largest = LARGEST.load(Ordering::Relaxed) as u64;
        assert!(
            largest <= agcam::image::MAX_DECODED_BYTES + (64 << 20),
            "allocated {largest} bytes at once for {} bytes",
            bytes.len()
        );
        Ok(())
    })
    .budget_ms(budget());
}
