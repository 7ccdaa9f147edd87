//! What `agcam explain` writes per image and explained class: an overlay PNG, the raw map as
//! `.npy`, and a JSON record of the prediction.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{Error, Result};
use crate::explain::{softmax, ClassMap, Explanation, Method};
use crate::model::ModelConfig;
use crate::pipeline::Prepared;

/// Gives every input file a distinct output stem: its file stem, with `-2`, `-3`, ... appended
/// when two inputs share one (e.g. `a/cat.png` and `b/cat.jpg`).
#[derive(Debug, Default)]
pub struct Stems {
    seen: HashMap<String, usize>,
}

impl Stems {
    /// The stem for `path`.
    pub fn stem_for(&mut self, path: &Path) -> String {
        let base = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let count = self.seen.entry(base.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            base
        } else {
            format!("{base}-{count}")
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
/// `<stem><suffix>.{png,npy,json}`; `rank` is the class's position among the explained ones.
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
    let cfg = &info.config;
    let (gh, gw) = cfg.grid();
    let file = |ext: &str| dir.join(format!("{stem}{suffix}.{ext}"));
    let written = Written {
        overlay: file("png"),
        map: file("npy"),
        json: file("json"),
    };
    let start = std::time::Instant::now();
    crate::image::write_npy_f32(&written.map, &[gh, gw], &class_map.map)?;
    let overlay = crate::image::overlay(&prepared.original, &class_map.map, gh, gw, info.alpha);
    overlay.save(&written.overlay).map_err(|e| Error::Image {
        path: written.overlay.clone(),
        msg: format!("cannot write PNG: {e}"),
    })?;

    let record = class_record(
        Some(&prepared.path),
        prepared.original.dimensions(),
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
    std::fs::write(&written.json, text + "\n").map_err(|e| Error::io(&written.json, e))?;
    Ok(written)
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
/// `<stem>.json`: the image (`None` for pixels that came from no file) and its `(width, height)`,
/// prediction, explained class with logit and probability, top 5, map range, model, adapter,
/// the `files` written beside it and `timings_ms` (milliseconds by stage).
pub fn class_record(
    image: Option<&Path>,
    image_size: (u32, u32),
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
        "image": image,
        "image_size": [image_size.0, image_size.1],
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
