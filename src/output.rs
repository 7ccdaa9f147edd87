//! What `agcam explain` writes per image and explained class: an overlay PNG, the raw map as
//! `.npy`, and a JSON record of the prediction. Every file is written under a temporary name and
//! renamed into place with the other files of its image, so no interruption or full disk leaves
//! half a set or a truncated file; output names are planned so that no two inputs share one and
//! no input picture is overwritten.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{Error, Result};
use crate::explain::{softmax, ClassMap, Explanation, Method};
use crate::files::AtomicSet;
use crate::model::ModelConfig;
use crate::pipeline::Prepared;

/// Extensions of the files written per explained class.
pub const OUTPUT_EXTENSIONS: [&str; 3] = ["png", "npy", "json"];

/// Gives every input file a distinct output stem: its file stem (made valid UTF-8 lossily), with
/// `-2`, `-3`, ... appended when two inputs share one (e.g. `a/cat.png` and `b/cat.jpg`).
///
/// Built with [`Stems::plan`], it knows every input in advance: an invented name never takes
/// the natural stem of another input (`a/x.png`, `b/x.png` and `c/x-2.png` give `x`, `x-3` and
/// `x-2`), no name is used whose outputs would overwrite an input picture (when the output
/// folder holds inputs), and none whose outputs would replace a file in the output folder that
/// `agcam explain` did not write (a photo `cat.png` there, notes `cat.json`): only a previous
/// run's sets, recognised by their JSON records, are replaced.
#[derive(Debug, Default)]
pub struct Stems {
    /// The output folder, when it exists.
    out: Option<PathBuf>,
    /// How many inputs asked for each natural stem so far.
    seen: HashMap<String, usize>,
    /// Natural stems of all planned inputs: never invented for another input.
    reserved: HashSet<String>,
    /// Stems given out so far.
    taken: HashSet<String>,
    /// Stems `s` whose `s.<png|npy|json>` is an input file in the output folder.
    protected: HashSet<String>,
    /// Stems `s` with some `s_c<class>.<png|npy|json>` an input file in the output folder.
    protected_with_class: HashSet<String>,
}

/// A file stem as text: lossy for names that are not UTF-8 (two such names that become the same
/// text still get distinct stems from [`Stems`]).
fn natural_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "image".into())
}

impl Stems {
    /// Plans stems for `inputs`, whose outputs go to the folder `out` (which should exist, so
    /// that inputs inside it can be recognised).
    pub fn plan(inputs: &[PathBuf], out: &Path) -> Self {
        let mut plan = Stems {
            reserved: inputs.iter().map(|p| natural_stem(p)).collect(),
            ..Self::default()
        };
        let Ok(out) = std::fs::canonicalize(out) else {
            return plan;
        };
        plan.out = Some(out.clone());
        for input in inputs.iter().filter_map(|p| std::fs::canonicalize(p).ok()) {
            let is_output_kind = input
                .extension()
                .and_then(OsStr::to_str)
                .is_some_and(|e| OUTPUT_EXTENSIONS.contains(&e));
            let Some(stem) = input.file_stem().and_then(OsStr::to_str) else {
                continue; // not UTF-8: no output name (always UTF-8) can be this file
            };
            if input.parent() != Some(out.as_path()) || !is_output_kind {
                continue;
            }
            if let Some((base, class)) = stem.rsplit_once("_c") {
                if !class.is_empty() && class.bytes().all(|b| b.is_ascii_digit()) {
                    plan.protected_with_class.insert(base.to_string());
                }
            }
            plan.protected.insert(stem.to_string());
        }
        plan
    }

    /// Whether writing `<stem><suffix>.<ext>` files would overwrite an input, for any suffix
    /// `_c<class>` or none.
    fn hits_an_input(&self, stem: &str) -> bool {
        self.protected.contains(stem) || self.protected_with_class.contains(stem)
    }

    /// Whether some `<name>.<png|npy|json>` exists in the output folder without being part of
    /// a set `agcam explain` wrote (whose `<name>.json` record names its overlay and map).
    fn holds_a_foreign_file(&self, name: &str) -> bool {
        let Some(out) = &self.out else {
            return false;
        };
        let exists =
            |ext: &str| std::fs::symlink_metadata(out.join(format!("{name}.{ext}"))).is_ok();
        OUTPUT_EXTENSIONS.iter().any(|e| exists(e)) && !is_record_of(&out.join(name), name)
    }

    /// The stem for `path`, whose files will be `<stem><suffix>.<png|npy|json>` for each of
    /// `suffixes` (`[""]` for one unsuffixed set, `["_c3", "_c7"]` for classes 3 and 7).
    pub fn stem_for(&mut self, path: &Path, suffixes: &[String]) -> String {
        let base = natural_stem(path);
        let count = self.seen.entry(base.clone()).or_insert(0);
        *count += 1;
        let mut n = *count;
        loop {
            let candidate = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let invented_clash = n > 1 && self.reserved.contains(&candidate);
            if !invented_clash
                && !self.taken.contains(&candidate)
                && !self.hits_an_input(&candidate)
                && !suffixes
                    .iter()
                    .any(|s| self.holds_a_foreign_file(&format!("{candidate}{s}")))
            {
                self.taken.insert(candidate.clone());
                return candidate;
            }
            n += 1;
        }
    }
}

/// Where the files of one explained class went.
#[derive(Debug, Clone)]
pub struct Written {
    /// The overlay PNG.
    pub overlay: PathBuf,
    /// The raw map `.npy`.
    pub map: PathBuf,
    /// The JSON record.
    pub json: PathBuf,
}

/// Context shared by every record of a run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The model's configuration.
    pub config: ModelConfig,
    /// Adapter description.
    pub adapter: String,
    /// Overlay opacity of the heatmap.
    pub alpha: f32,
    /// How the maps were computed.
    pub method: Method,
}

/// Writes the overlay, map and JSON for `class_map` of `explanation` into `dir` as
/// `<stem><suffix>.{png,npy,json}`, all three or none; `rank` is the class's position among the
/// explained ones.
#[allow(clippy::too_many_arguments)]
pub fn write_class(
    dir: &Path,
    stem: &str,
    suffix: &str,
    prepared: &Prepared,
    explanation: &Explanation,
    class_map: &ClassMap,
    info: &RunInfo,
    gpu_ms: f64,
) -> Result<Written> {
    let original = prepared.original_image()?;
    let mut set = AtomicSet::new();
    let written = stage_class(
        &mut set,
        dir,
        &format!("{stem}{suffix}"),
        prepared,
        &original,
        explanation,
        class_map,
        info,
        gpu_ms,
    )?;
    set.commit()?;
    Ok(written)
}

/// What [`write_image`] appends to an image's stem for each explained class: `_c<class>` with
/// `suffixed`, else nothing.
pub fn class_suffixes(explanation: &Explanation, suffixed: bool) -> Vec<String> {
    explanation
        .maps
        .iter()
        .map(|m| {
            if suffixed {
                format!("_c{}", m.class)
            } else {
                String::new()
            }
        })
        .collect()
}

/// Writes the files of every explained class of one image into `dir` as one set: all of them
/// or none (see [`write_class`]). With `suffixed`, each class's files carry `_c<class>`.
pub fn write_image(
    dir: &Path,
    stem: &str,
    suffixed: bool,
    prepared: &Prepared,
    explanation: &Explanation,
    info: &RunInfo,
    gpu_ms: f64,
) -> Result<Vec<Written>> {
    let original = prepared.original_image()?;
    let mut set = AtomicSet::new();
    let mut written = Vec::with_capacity(explanation.maps.len());
    for (m, suffix) in explanation
        .maps
        .iter()
        .zip(class_suffixes(explanation, suffixed))
    {
        written.push(stage_class(
            &mut set,
            dir,
            &format!("{stem}{suffix}"),
            prepared,
            &original,
            explanation,
            m,
            info,
            gpu_ms,
        )?);
    }
    set.commit()?;
    Ok(written)
}

/// Writes one class's three files into `set` (the JSON record last).
#[allow(clippy::too_many_arguments)]
fn stage_class(
    set: &mut AtomicSet,
    dir: &Path,
    name: &str,
    prepared: &Prepared,
    original: &::image::RgbImage,
    explanation: &Explanation,
    class_map: &ClassMap,
    info: &RunInfo,
    gpu_ms: f64,
) -> Result<Written> {
    let cfg = &info.config;
    let (gh, gw) = cfg.grid();
    let file = |ext: &str| dir.join(format!("{name}.{ext}"));
    let written = Written {
        overlay: file("png"),
        map: file("npy"),
        json: file("json"),
    };
    let start = std::time::Instant::now();
    set.write_with(&written.map, |w| {
        crate::image::write_npy_f32_to(w, &written.map, &[gh, gw], &class_map.map)
    })?;
    let overlay = crate::image::overlay(original, &class_map.map, gh, gw, info.alpha);
    set.write_with(&written.overlay, |w| {
        overlay
            .write_to(w, ::image::ImageFormat::Png)
            .map_err(|e| Error::Image {
                path: written.overlay.clone(),
                msg: format!("cannot write PNG: {e}"),
            })
    })?;

    let record = class_record(
        RecordImage {
            path: Some(&prepared.path),
            size: prepared.size,
            exif_orientation: prepared.exif_orientation,
            orientation_applied: prepared.oriented(),
            saturated_16bit: prepared.saturated_16bit,
        },
        explanation,
        class_map,
        info,
        RecordFiles {
            map: written.map.file_name().map(|f| f.to_string_lossy()),
            overlay: written.overlay.file_name().map(|f| f.to_string_lossy()),
        },
        json!({
            "preprocess": prepared.preprocess_ms,
            "gpu_per_image": gpu_ms,
            "write": start.elapsed().as_secs_f64() * 1e3,
        }),
    );
    let text = serde_json::to_string_pretty(&record).expect("JSON of plain values");
    set.write(&written.json, (text + "\n").as_bytes())?;
    Ok(written)
}

/// Whether `path` is an overlay that `agcam explain` wrote: a `.png` whose record `<stem>.json`
/// beside it names it as its `overlay`. Folder walks pass such files over, so that running the
/// same command again redoes the same pictures instead of explaining the last run's overlays.
pub fn is_written_overlay(path: &Path) -> bool {
    let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
        return false;
    };
    ext == "png" && is_record_of(&path.with_extension(""), &stem.to_string_lossy())
}

/// Whether `<base>.json` is a record `agcam explain` wrote for the set named `name`: it names
/// `<name>.png` as its overlay and `<name>.npy` as its map.
fn is_record_of(base: &Path, name: &str) -> bool {
    let mut record = base.as_os_str().to_owned();
    record.push(".json");
    let record = PathBuf::from(record);
    // Records are a few KiB; a large JSON file is something else.
    let small = std::fs::metadata(&record).is_ok_and(|m| m.is_file() && m.len() < 1 << 20);
    let Some(text) = small.then(|| std::fs::read(&record).ok()).flatten() else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&text).is_ok_and(|r| {
        r["overlay"].as_str() == Some(&format!("{name}.png"))
            && r["map"]["file"].as_str() == Some(&format!("{name}.npy"))
            && r["explained_class"].is_u64()
    })
}

/// The picture a JSON record describes.
#[derive(Debug, Clone, Copy)]
pub struct RecordImage<'a> {
    /// Its file; `None` for pixels that came from no file.
    pub path: Option<&'a Path>,
    /// `(width, height)` of the picture as explained (after any EXIF rotation).
    pub size: (u32, u32),
    /// The file's EXIF orientation tag (1–8), if it has one.
    pub exif_orientation: Option<u8>,
    /// Whether that orientation was applied before explaining.
    pub orientation_applied: bool,
    /// Whether 16-bit grayscale samples above 255 saturated to white when it was read.
    pub saturated_16bit: bool,
}

/// The names of the files written beside a record (`None`: not written).
#[derive(Debug, Clone, Default)]
pub struct RecordFiles<'a> {
    /// The raw map's `.npy` file name.
    pub map: Option<Cow<'a, str>>,
    /// The overlay's `.png` file name.
    pub overlay: Option<Cow<'a, str>>,
}

/// The JSON record of `class_map` of `explanation` that `agcam explain` writes as
/// `<stem>.json`: the image, its size and orientation, prediction, explained class with logit and
/// probability, top 5, map range, model, adapter, the `files` written beside it and
/// `timings_ms` (milliseconds by stage).
pub fn class_record(
    image: RecordImage<'_>,
    explanation: &Explanation,
    class_map: &ClassMap,
    info: &RunInfo,
    files: RecordFiles<'_>,
    timings_ms: serde_json::Value,
) -> serde_json::Value {
    let cfg = &info.config;
    let (gh, gw) = cfg.grid();
    let probs = softmax(&explanation.logits);
    let c = class_map.class;
    let predicted = explanation.predicted();
    let top5: Vec<_> = explanation
        .top(5)
        .iter()
        .map(|s| {
            json!({
                "index": s.class,
                "label": cfg.label(s.class),
                "logit": s.logit,
                "probability": s.probability,
            })
        })
        .collect();
    let (min, max) = class_map
        .map
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    json!({
        // Lossy for a path that is not UTF-8 (JSON strings are Unicode).
        "image": image.path.map(|p| p.to_string_lossy()),
        "image_size": [image.size.0, image.size.1],
        "exif_orientation": image.exif_orientation,
        "orientation_applied": image.orientation_applied,
        "saturated_16bit": image.saturated_16bit,
        "method": info.method.name(),
        "predicted_class": predicted,
        "predicted_label": cfg.label(predicted),
        "explained_class": c,
        "explained_label": cfg.label(c),
        "explained_logit": explanation.logits[c],
        "explained_probability": probs[c],
        "top5": top5,
        "map": {
            "file": files.map,
            "grid": [gh, gw],
            "min": min,
            "max": max,
            "note": "raw grid: no upsampling, no normalisation",
        },
        "overlay": files.overlay,
        "model": {
            "name": cfg.name,
            "input_size": [cfg.image_size.0, cfg.image_size.1],
            "patch_size": cfg.patch_size,
            "num_classes": cfg.num_classes,
        },
        "adapter": info.adapter,
        "timings_ms": timings_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stems(inputs: &[&str], out: &Path) -> Vec<String> {
        let paths: Vec<PathBuf> = inputs.iter().map(PathBuf::from).collect();
        let mut plan = Stems::plan(&paths, out);
        paths
            .iter()
            .map(|p| plan.stem_for(p, &[String::new()]))
            .collect()
    }

    #[test]
    fn invented_names_never_take_a_real_one() {
        let out = Path::new("/nonexistent-agcam-out");
        assert_eq!(
            stems(&["a/x.png", "b/x.png", "c/x-2.png"], out),
            ["x", "x-3", "x-2"]
        );
        assert_eq!(
            stems(&["a/x-2.png", "a/x.png", "b/x.png"], out),
            ["x-2", "x", "x-3"]
        );
        let all = stems(
            &["a/x.png", "b/x.png", "c/x.png", "d/x-2.png", "e/x-3.png"],
            out,
        );
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "{all:?}");
    }

    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_get_distinct_stems() {
        use std::os::unix::ffi::OsStrExt;
        let a = PathBuf::from(OsStr::from_bytes(b"d/\xff.png"));
        let b = PathBuf::from(OsStr::from_bytes(b"d/\xfe.png"));
        let mut plan = Stems::plan(&[a.clone(), b.clone()], Path::new("/nonexistent"));
        let one = [String::new()];
        let (sa, sb) = (plan.stem_for(&a, &one), plan.stem_for(&b, &one));
        assert_ne!(sa, sb);
        assert_eq!(sa, "\u{fffd}");
    }

    #[test]
    fn outputs_never_overwrite_inputs_in_the_output_folder() {
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("x.png");
        let x2 = dir.path().join("x-2.png");
        let y = dir.path().join("y_c3.png");
        for p in [&x, &x2, &y] {
            std::fs::write(p, b"").unwrap();
        }
        let inputs = [x.clone(), x2.clone(), y.clone()];
        let mut plan = Stems::plan(&inputs, dir.path());
        let got: Vec<String> = inputs
            .iter()
            .map(|p| plan.stem_for(p, &[String::new()]))
            .collect();
        for (stem, input) in got.iter().zip(&inputs) {
            for suffix in ["", "_c3"] {
                let out = dir.path().join(format!("{stem}{suffix}.png"));
                assert!(!inputs.contains(&out), "{input:?} -> {out:?}");
            }
        }
        assert_eq!(got.len(), got.iter().collect::<HashSet<_>>().len());
    }

    #[test]
    fn outputs_never_replace_files_agcam_did_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        // A photo, notes, and a class-suffixed photo in the output folder; none is an input.
        std::fs::write(out.join("cat.png"), b"a photo").unwrap();
        std::fs::write(out.join("dog.json"), b"{\"my\": \"notes\"}").unwrap();
        std::fs::write(out.join("owl_c3.npy"), b"data").unwrap();
        // A previous run's set for `bee`: replaced, as README says.
        std::fs::write(
            out.join("bee.json"),
            br#"{"overlay": "bee.png", "map": {"file": "bee.npy"}, "explained_class": 1}"#,
        )
        .unwrap();
        std::fs::write(out.join("bee.png"), b"overlay").unwrap();
        let mut plan = Stems::plan(&[], out);
        let one = [String::new()];
        assert_eq!(plan.stem_for(Path::new("in/cat.png"), &one), "cat-2");
        assert_eq!(plan.stem_for(Path::new("in/dog.png"), &one), "dog-2");
        assert_eq!(plan.stem_for(Path::new("in/bee.png"), &one), "bee");
        let classes = ["_c1".to_string(), "_c3".to_string()];
        assert_eq!(plan.stem_for(Path::new("in/owl.png"), &classes), "owl-2");
        // Unsuffixed, the same picture's files do not meet `owl_c3.npy`.
        let mut fresh = Stems::plan(&[], out);
        assert_eq!(fresh.stem_for(Path::new("in/owl.png"), &one), "owl");
        assert!(is_written_overlay(&out.join("bee.png")));
        assert!(!is_written_overlay(&out.join("cat.png")));
    }

    #[test]
    fn an_image_is_written_as_one_set_with_its_orientation_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let picture = dir.path().join("photo.png");
        ::image::RgbImage::new(20, 12).save(&picture).unwrap();
        let config = ModelConfig::standard("vit_tiny_patch16_224").unwrap();
        let mut prepared = crate::pipeline::prepare(&picture, &config).unwrap();
        prepared.exif_orientation = Some(6);
        prepared.orientation = crate::image::Orientation::Apply;
        let (gh, gw) = config.grid();
        let explanation = Explanation {
            logits: (0..config.num_classes).map(|c| c as f32 / 100.0).collect(),
            maps: [3, 7]
                .map(|class| ClassMap {
                    class,
                    map: vec![0.25; gh * gw],
                })
                .to_vec(),
        };
        let info = RunInfo {
            config,
            adapter: "test".into(),
            alpha: 0.5,
            method: Method::Agcam,
        };
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let written =
            write_image(&out, "photo", true, &prepared, &explanation, &info, 1.0).unwrap();
        assert_eq!(written.len(), 2);
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "photo_c3.json",
                "photo_c3.npy",
                "photo_c3.png",
                "photo_c7.json",
                "photo_c7.npy",
                "photo_c7.png"
            ]
        );
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&written[1].json).unwrap()).unwrap();
        assert_eq!(record["exif_orientation"], 6);
        assert_eq!(record["orientation_applied"], true);
        assert_eq!(record["explained_class"], 7);
        assert_eq!(record["image_size"], serde_json::json!([20, 12]));
    }
}
