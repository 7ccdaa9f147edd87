//! The paper's evaluation protocols (method.md §4) on an [`Engine`]: box localization
//! ([`run_localization`]) and pixel-perturbation faithfulness ([`run_perturbation`]), over a
//! [`Dataset`] of images with Pascal VOC XML boxes.
//!
//! The pure parts are public functions that can be checked by hand: annotation parsing
//! ([`parse_annotation`]), layout detection ([`detect_layout`]), heatmap post-processing
//! ([`heatmap`]), connected components ([`component_rects`]), box filling ([`fill_boxes`],
//! [`scale_box`]), the per-image metrics ([`box_metrics`]) and the removal order of the
//! perturbation protocol ([`removal_order`], [`Ties`]). Reports serialise to JSON with serde,
//! and to an HTML page to look at with [`write_report`].

mod annotation;
mod dataset;
mod localization;
mod metrics;
mod perturbation;
mod report;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::Serialize;

pub use annotation::{parse_annotation, read_annotation, Annotation, BoundingBox, Object};
pub use dataset::{detect_layout, Dataset, Detected, Layout, Sample, Skipped};
pub use localization::{
    run_localization, LocalizationImage, LocalizationOptions, LocalizationReport, BOX_FILLING_NOTE,
};
pub use metrics::{
    box_metrics, component_rects, fill_boxes, heatmap, perturbation_fractions, predicted_boxes,
    removal_order, removal_order_ranked, remove_pixels, removed_count, scale_box, threshold_mask,
    Mask, MeanMetrics, Metrics, PixelBox, Rect, Ties, EPS, TIE_RULE,
};
pub use perturbation::{
    run_perturbation, PerturbationImage, PerturbationOptions, PerturbationReport,
};
pub use report::{prepare_report_dir, write_report, Runs};

use crate::error::{Error, Result};
use crate::explain::Engine;
use crate::model::ModelConfig;
use crate::pipeline::Prepared;

/// What happened to one image in a protocol run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// It counts in the means.
    Scored,
    /// Localization only: the predicted class is none of its ground-truth classes.
    Misclassified,
    /// The image file could not be decoded.
    Unreadable,
    /// The model gave NaN or infinite logits, map values or perturbed scores for it (its
    /// `error` says which): broken weights or normalisation, never a score.
    NonFinite,
}

/// The dataset as a report describes it.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfo {
    /// The folder given.
    pub root: PathBuf,
    /// Its layout and parts.
    pub detected: Detected,
    /// Number of classes the annotations map to.
    pub classes: usize,
    /// Where the class indices come from.
    pub class_source: String,
    /// Files left out when the dataset was opened (they count as skipped for missing data).
    pub skipped: Skipped,
}

impl DatasetInfo {
    fn of(dataset: &Dataset) -> DatasetInfo {
        DatasetInfo {
            root: dataset.root.clone(),
            detected: dataset.detected.clone(),
            classes: dataset.class_names.len(),
            class_source: dataset.class_source.clone(),
            skipped: dataset.skipped.clone(),
        }
    }
}

/// Image counts of a run. `total = scored + misclassified + missing_data`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Every image or annotation considered.
    pub total: usize,
    /// Images in the means.
    pub scored: usize,
    /// Skipped because the model misclassified them (localization only; 0 for perturbation).
    pub misclassified: usize,
    /// Skipped for missing data: the dataset's skipped files plus `unreadable`.
    pub missing_data: usize,
    /// Images that could not be decoded (part of `missing_data`).
    pub unreadable: usize,
    /// Images for which the model gave NaN or infinite values (not scored; the run fails).
    pub non_finite: usize,
}

/// Checks shared by both protocols; returns notes for the report.
fn check_classes(dataset: &Dataset, cfg: &ModelConfig) -> Vec<String> {
    let mut notes = Vec::new();
    if dataset.class_names.len() != cfg.num_classes {
        notes.push(format!(
            "warning: the dataset has {} classes ({}) but the model {} has {}",
            dataset.class_names.len(),
            dataset.class_source,
            cfg.name,
            cfg.num_classes
        ));
    }
    if let (Some(model), "labels.txt") = (&cfg.labels, dataset.class_source.as_str()) {
        if let Some(i) = (0..model.len().min(dataset.class_names.len()))
            .find(|&i| !model[i].eq_ignore_ascii_case(&dataset.class_names[i]))
        {
            notes.push(format!(
                "warning: labels.txt and the model's labels differ first at class {i} \
                 (`{}` against `{}`)",
                dataset.class_names[i], model[i]
            ));
        }
    }
    notes
}

fn validate_limit(limit: Option<usize>) -> Result<()> {
    if limit == Some(0) {
        return Err(Error::Invalid("--limit must be at least 1".into()));
    }
    Ok(())
}

/// Runs `work` on consecutive chunks of `capacity` samples with their decoded inputs, while
/// the next chunk is being decoded on CPU threads. Returns the note on 16-bit grayscale
/// pictures that saturated, if any did (a report should say that such pictures were scored
/// as mostly white).
fn for_each_chunk<'s>(
    samples: &'s [Sample],
    cfg: &ModelConfig,
    capacity: usize,
    mut work: impl FnMut(&'s [Sample], Vec<Result<Prepared>>) -> Result<()>,
) -> Result<Option<String>> {
    fn image(s: &Sample) -> &std::path::Path {
        &s.image
    }
    let mut saturated = 0usize;
    crate::pipeline::for_each_prepared_chunk(samples, image, cfg, capacity, |chunk, prepared| {
        saturated += prepared
            .iter()
            .filter(|p| matches!(p, Ok(p) if p.saturated_16bit))
            .count();
        work(chunk, prepared)
    })?;
    Ok((saturated > 0).then(|| {
        let images = if saturated == 1 {
            "1 image is".to_string()
        } else {
            format!("{saturated} images are")
        };
        format!(
            "warning: {images} 16-bit grayscale with values above 255; they saturate to white \
             as in PIL's convert(\"RGB\"), so mostly white pictures were scored (convert them \
             to 8 bits first)"
        )
    }))
}

/// The samples a run covers: all, or the first `limit`.
fn selected(dataset: &Dataset, limit: Option<usize>) -> &[Sample] {
    let n = limit.map_or(dataset.samples.len(), |l| l.min(dataset.samples.len()));
    &dataset.samples[..n]
}

/// Model and device, for reports.
fn engine_info(engine: &Engine) -> (String, String) {
    (engine.config().name.clone(), engine.gpu().describe())
}
