//! The localization protocol of method.md §4: boxes from the thresholded heatmap of the
//! predicted class against the ground-truth boxes, on correctly classified images.

use std::path::PathBuf;

use serde::Serialize;

use super::metrics::{
    box_metrics, fill_boxes, heatmap, predicted_boxes, scale_box, threshold_mask, MeanMetrics,
    Metrics, PixelBox,
};
use super::{
    check_classes, engine_info, for_each_chunk, selected, validate_limit, Counts, Dataset,
    DatasetInfo, Status,
};
use crate::error::{Error, Result};
use crate::explain::{Engine, Method, Target};

/// Printed with every localization result.
pub const BOX_FILLING_NOTE: &str =
    "box filling follows the authors' code (predicted boxes one pixel larger)";

/// Settings of a localization run.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalizationOptions {
    /// Mask = normalised heatmap value > threshold (default 0.5).
    pub threshold: f32,
    /// Only the first N samples (in id order).
    pub limit: Option<usize>,
}

impl Default for LocalizationOptions {
    fn default() -> Self {
        LocalizationOptions {
            threshold: 0.5,
            limit: None,
        }
    }
}

/// One image of a localization run.
#[derive(Debug, Clone, Serialize)]
pub struct LocalizationImage {
    /// Sample id (file stem).
    pub id: String,
    /// Image file.
    pub image: PathBuf,
    /// Ground-truth classes, target first.
    pub classes: Vec<usize>,
    /// The model's prediction (absent when the image could not be read).
    pub predicted: Option<usize>,
    /// Scored, misclassified or unreadable.
    pub status: Status,
    /// Why the image could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The original image size used to scale the boxes: (width, height).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<(u32, u32)>,
    /// Predicted boxes in heatmap pixels, inclusive, as filled (before clipping).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub predicted_boxes: Vec<PixelBox>,
    /// Ground-truth boxes in heatmap pixels, inclusive, as filled (before clipping).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ground_truth_boxes: Vec<PixelBox>,
    /// Pixel counts and metrics, for scored images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// The raw map of the predicted class (`map_grid` of the report, row-major) of scored
    /// images, kept for [`write_report`](super::write_report)'s overlays; not serialised.
    #[serde(skip)]
    pub map: Vec<f32>,
}

/// The result of [`run_localization`].
#[derive(Debug, Clone, Serialize)]
pub struct LocalizationReport {
    /// `"localization"`.
    pub protocol: &'static str,
    /// How maps were computed.
    pub method: Method,
    /// Mask threshold.
    pub threshold: f32,
    /// Heatmap and mask size (height, width): the model's input size.
    pub mask_size: (usize, usize),
    /// Size of the raw map grid (height, width): the model's patch grid.
    pub map_grid: (usize, usize),
    /// Model name.
    pub model: String,
    /// GPU adapter.
    pub adapter: String,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// Image counts.
    pub counts: Counts,
    /// Means over the scored images; absent when none was scored.
    pub mean: Option<MeanMetrics>,
    /// Conventions and warnings, one sentence each.
    pub notes: Vec<String>,
    /// Every image run, in id order.
    pub images: Vec<LocalizationImage>,
}

/// Scores one correctly classified image: heatmap → mask → component boxes (authors' filling)
/// against the ground-truth boxes scaled from `image_size` = (width, height).
pub(crate) fn score_image(
    grid: &[f32],
    grid_size: (usize, usize),
    (mask_h, mask_w): (usize, usize),
    threshold: f32,
    gt: &[[f64; 4]],
    (image_w, image_h): (u32, u32),
) -> (Vec<PixelBox>, Vec<PixelBox>, Metrics) {
    let heat = heatmap(grid, grid_size, (mask_h, mask_w));
    let mask = threshold_mask(&heat, mask_h, mask_w, threshold);
    let pred_boxes = predicted_boxes(&mask);
    let pred = fill_boxes(mask_h, mask_w, &pred_boxes);
    let gt_boxes: Vec<PixelBox> = gt
        .iter()
        .map(|b| scale_box(*b, (image_w as f64, image_h as f64), (mask_w, mask_h)))
        .collect();
    let truth = fill_boxes(mask_h, mask_w, &gt_boxes);
    let metrics = box_metrics(&pred, &truth);
    (pred_boxes, gt_boxes, metrics)
}

/// Runs the localization protocol of method.md §4 on `dataset` (or its first
/// `options.limit` samples) with maps by `method`:
///
/// 1. the map of the **predicted** class; an image whose prediction is none of its
///    ground-truth classes is skipped and counted as misclassified;
/// 2. the raw grid upsampled to the model's input size (224×224 for the paper's model),
///    bilinear with `align_corners=False`, min-max normalised; mask = value > threshold;
/// 3. one box per 8-connected component, filled as the authors do: `[x, x + w] × [y, y + h]`
///    inclusive, clipped (one pixel larger than the component);
/// 4. ground truth: every non-distractor box, scaled as `int(v / W · 224)`,
///    `int(v / H · 224)` with (W, H) from the XML's `<size>` (else the image file), filled
///    inclusive;
/// 5. accuracy, IoU, Dice, precision, recall with eps = 1e-5, averaged over scored images.
///
/// Images go to the GPU in chunks of `engine.capacity()`, decoded on CPU threads meanwhile.
/// `progress(done, total)` is called after every chunk.
pub fn run_localization(
    engine: &mut Engine,
    dataset: &Dataset,
    method: Method,
    options: &LocalizationOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<LocalizationReport> {
    validate_limit(options.limit)?;
    if !options.threshold.is_finite() {
        return Err(Error::Invalid(format!(
            "threshold {} is not a finite number",
            options.threshold
        )));
    }
    let cfg = engine.config().clone();
    let (mask_h, mask_w) = cfg.image_size;
    let grid_size = cfg.grid();
    let samples = selected(dataset, options.limit);
    let total = samples.len();
    let mut notes = vec![
        BOX_FILLING_NOTE.to_string(),
        format!(
            "heatmaps upsampled to {mask_h}×{mask_w}, the model input size (224×224 in the \
             paper), bilinear with align_corners=False, then min-max normalised; mask = value \
             > {}",
            options.threshold
        ),
    ];
    notes.extend(check_classes(dataset, &cfg));
    let mut size_mismatch = 0usize;
    let mut images = Vec::with_capacity(total);
    let saturation = for_each_chunk(samples, &cfg, engine.capacity(), |chunk, prepared| {
        let ok: Vec<usize> = (0..chunk.len()).filter(|&i| prepared[i].is_ok()).collect();
        let inputs: Vec<f32> = ok
            .iter()
            .flat_map(|&i| prepared[i].as_ref().expect("ok").input.iter().copied())
            .collect();
        let mut explained = if ok.is_empty() {
            Vec::new()
        } else {
            engine.explain_with(&inputs, &Target::Predicted, method)?
        }
        .into_iter();
        for (sample, prep) in chunk.iter().zip(prepared) {
            let mut row = LocalizationImage {
                id: sample.id.clone(),
                image: sample.image.clone(),
                classes: sample.classes.clone(),
                predicted: None,
                status: Status::Unreadable,
                error: None,
                image_size: None,
                predicted_boxes: Vec::new(),
                ground_truth_boxes: Vec::new(),
                metrics: None,
                map: Vec::new(),
            };
            match prep {
                Err(e) => row.error = Some(e.to_string()),
                Ok(prep) => {
                    let explanation = explained.next().expect("one explanation per image");
                    let map = &explanation.maps[0];
                    if let Some(why) = crate::pipeline::non_finite(&explanation) {
                        row.status = Status::NonFinite;
                        row.error = Some(format!("{}: {why}", sample.image.display()));
                    } else if !sample.has_class(map.class) {
                        row.predicted = Some(map.class);
                        row.status = Status::Misclassified;
                    } else {
                        let decoded = prep.original.dimensions();
                        let size = sample.annotation.size.unwrap_or(decoded);
                        if size != decoded {
                            size_mismatch += 1;
                        }
                        let gt: Vec<[f64; 4]> =
                            sample.boxes().iter().map(|b| b.to_array()).collect();
                        let (pred_boxes, gt_boxes, metrics) = score_image(
                            &map.map,
                            grid_size,
                            (mask_h, mask_w),
                            options.threshold,
                            &gt,
                            size,
                        );
                        row.predicted = Some(map.class);
                        row.status = Status::Scored;
                        row.image_size = Some(size);
                        row.predicted_boxes = pred_boxes;
                        row.ground_truth_boxes = gt_boxes;
                        row.metrics = Some(metrics);
                        row.map = map.map.clone();
                    }
                }
            }
            images.push(row);
        }
        progress(images.len(), total);
        Ok(())
    })?;
    notes.extend(saturation);
    if size_mismatch > 0 {
        notes.push(format!(
            "warning: {size_mismatch} scored images are not the size their XML <size> says; \
             boxes were scaled by the XML size, as the authors do"
        ));
    }
    let count = |s: Status| images.iter().filter(|r| r.status == s).count();
    let unreadable = count(Status::Unreadable);
    let missing_data = dataset.skipped.total() + unreadable;
    let counts = Counts {
        scored: count(Status::Scored),
        misclassified: count(Status::Misclassified),
        missing_data,
        unreadable,
        non_finite: count(Status::NonFinite),
        total: total + dataset.skipped.total(),
    };
    let mean = MeanMetrics::of(images.iter().filter_map(|r| r.metrics.as_ref()));
    let (model, adapter) = engine_info(engine);
    Ok(LocalizationReport {
        protocol: "localization",
        method,
        threshold: options.threshold,
        mask_size: (mask_h, mask_w),
        map_grid: grid_size,
        model,
        adapter,
        dataset: DatasetInfo::of(dataset),
        counts,
        mean,
        notes,
        images,
    })
}
