//! The pixel-perturbation protocol of method.md §4: the ground-truth class's probability as
//! the most relevant (MoRF) or least relevant (LeRF) pixels are removed, and ABPC.

use std::path::PathBuf;

use serde::Serialize;

use super::metrics::{
    heatmap, perturbation_fractions, removal_order, removal_order_ranked, remove_pixels,
    removed_count, Ties,
};
use super::{
    check_classes, engine_info, for_each_chunk, selected, validate_limit, Counts, Dataset,
    DatasetInfo, Status,
};
use crate::error::{Error, Result};
use crate::explain::{softmax, top_classes, Engine, Method, Target};

/// Settings of a perturbation run.
#[derive(Debug, Clone, PartialEq)]
pub struct PerturbationOptions {
    /// Number of fractions from 0 to 1 inclusive (11: p = 0.0, 0.1, …, 1.0).
    pub steps: usize,
    /// Only the first N samples (in id order).
    pub limit: Option<usize>,
    /// How equal heatmap values are ordered for removal (default: stable).
    pub ties: Ties,
}

impl Default for PerturbationOptions {
    fn default() -> Self {
        PerturbationOptions {
            steps: 11,
            limit: None,
            ties: Ties::Stable,
        }
    }
}

/// One image of a perturbation run.
#[derive(Debug, Clone, Serialize)]
pub struct PerturbationImage {
    /// Sample id (file stem).
    pub id: String,
    /// Image file.
    pub image: PathBuf,
    /// The ground-truth class explained and scored (the first non-distractor object's).
    pub class: usize,
    /// The model's prediction on the clean image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted: Option<usize>,
    /// Scored or unreadable.
    pub status: Status,
    /// Why the image could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Probability of `class` after removing the most relevant pixels, one per step.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub morf: Vec<f64>,
    /// Probability of `class` after removing the least relevant pixels, one per step.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lerf: Vec<f64>,
    /// Mean of `morf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub morf_auc: Option<f64>,
    /// Mean of `lerf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lerf_auc: Option<f64>,
    /// Mean over steps of `lerf − morf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abpc: Option<f64>,
    /// The raw map of `class` (`map_grid` of the report, row-major), kept for
    /// [`write_report`](super::write_report)'s overlays; not serialised.
    #[serde(skip)]
    pub map: Vec<f32>,
}

/// The result of [`run_perturbation`].
#[derive(Debug, Clone, Serialize)]
pub struct PerturbationReport {
    /// `"perturbation"`.
    pub protocol: &'static str,
    /// How maps were computed.
    pub method: Method,
    /// Heatmap size (height, width): the model's input size.
    pub heatmap_size: (usize, usize),
    /// Size of the raw map grid (height, width): the model's patch grid.
    pub map_grid: (usize, usize),
    /// Model name.
    pub model: String,
    /// GPU adapter.
    pub adapter: String,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// Image counts (misclassified images are not skipped by this protocol).
    pub counts: Counts,
    /// Scored images whose clean prediction is their ground-truth class (for information).
    pub correctly_classified: usize,
    /// Fractions of pixels removed at each step.
    pub fractions: Vec<f64>,
    /// Pixels removed at each step: `int(H · W · p)`.
    pub removed_pixels: Vec<usize>,
    /// Mean MoRF curve over scored images (empty when none).
    pub morf_curve: Vec<f64>,
    /// Mean LeRF curve over scored images (empty when none).
    pub lerf_curve: Vec<f64>,
    /// Mean over images of the MoRF AUC (mean of the curve's points); lower is more faithful.
    pub morf_auc: Option<f64>,
    /// Mean over images of the LeRF AUC; higher is more faithful.
    pub lerf_auc: Option<f64>,
    /// Mean over images and steps of LeRF − MoRF; higher is more faithful.
    pub abpc: Option<f64>,
    /// GPU chunks that score one image's perturbed inputs (1 unless the engine's capacity
    /// is below 2 · steps).
    pub gpu_batches_per_image: usize,
    /// The tie rule of the removal order, in words.
    pub tie_rule: String,
    /// The tie rule of the removal order.
    pub ties: Ties,
    /// Conventions and warnings, one sentence each.
    pub notes: Vec<String>,
    /// Every image run, in id order.
    pub images: Vec<PerturbationImage>,
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The 2 · steps perturbed copies of one normalised input: MoRF at every fraction, then LeRF;
/// equal heatmap values ordered by `tie_rank` (see [`removal_order_ranked`]), else by index.
pub(crate) fn perturbed_inputs(
    input: &[f32],
    heat: &[f32],
    removed: &[usize],
    tie_rank: Option<&[u32]>,
) -> Vec<f32> {
    let plane = heat.len();
    let mut out = Vec::with_capacity(2 * removed.len() * input.len());
    for descending in [true, false] {
        let order = match tie_rank {
            Some(rank) => removal_order_ranked(heat, descending, rank),
            None => removal_order(heat, descending),
        };
        for &k in removed {
            let start = out.len();
            out.extend_from_slice(input);
            remove_pixels(&mut out[start..], plane, &order[..k]);
        }
    }
    out
}

/// Runs the perturbation protocol of method.md §4 on `dataset` (or its first `options.limit`
/// samples) with maps by `method`:
///
/// 1. the map of the **ground-truth** class (the first non-distractor object's), upsampled to
///    the model's input size (224×224 for the paper's model) and min-max normalised;
/// 2. at each fraction p of `options.steps` (0, 0.1, …, 1), k = int(H·W·p) pixels are set to 0
///    in all three channels of the normalised input: the k highest heatmap values (MoRF) or
///    the k lowest (LeRF), equal values ordered as `options.ties` says ([`TIE_RULE`](super::TIE_RULE) by
///    default);
/// 3. score = softmax probability of the ground-truth class by the unmodified model; the
///    2 · steps inputs of an image go through [`Engine::predict`] as one batch (split in
///    chunks of `engine.capacity()` when that is smaller, as the report says);
/// 4. AUC = mean of a curve's points; ABPC = mean over images of the mean over steps of
///    LeRF − MoRF.
///
/// No image is skipped for being misclassified. `progress(done, total)` is called after every
/// image.
pub fn run_perturbation(
    engine: &mut Engine,
    dataset: &Dataset,
    method: Method,
    options: &PerturbationOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerturbationReport> {
    validate_limit(options.limit)?;
    if options.steps < 2 {
        return Err(Error::Invalid(format!(
            "--steps must be at least 2 (0 and 1 included), not {}",
            options.steps
        )));
    }
    let cfg = engine.config().clone();
    let (h, w) = cfg.image_size;
    let samples = selected(dataset, options.limit);
    if let Some(s) = samples.iter().find(|s| s.target_class() >= cfg.num_classes) {
        return Err(Error::Invalid(format!(
            "{}: ground-truth class {} (`{}`) is out of range for the model {} ({} classes)",
            s.annotation.path.display(),
            s.target_class(),
            dataset.class_name(s.target_class()).unwrap_or("?"),
            cfg.name,
            cfg.num_classes
        )));
    }
    let fractions = perturbation_fractions(options.steps);
    let removed: Vec<usize> = fractions.iter().map(|&p| removed_count(h * w, p)).collect();
    let per_image = 2 * options.steps;
    let gpu_batches_per_image = per_image.div_ceil(engine.capacity());
    let total = samples.len();
    let mut notes = vec![
        format!(
            "heatmaps of the ground-truth class upsampled to {h}×{w}, the model input size \
             (224×224 in the paper), bilinear with align_corners=False, then min-max \
             normalised; removed pixels are set to 0 in all channels of the normalised input"
        ),
        options.ties.describe(),
    ];
    if gpu_batches_per_image > 1 {
        notes.push(format!(
            "the engine's capacity ({}) is below the {per_image} perturbed inputs of an image: \
             each image is scored in {gpu_batches_per_image} GPU chunks",
            engine.capacity()
        ));
    }
    notes.extend(check_classes(dataset, &cfg));
    let mut images: Vec<PerturbationImage> = Vec::with_capacity(total);
    let saturation = for_each_chunk(samples, &cfg, engine.capacity(), |chunk, prepared| {
        let ok: Vec<usize> = (0..chunk.len()).filter(|&i| prepared[i].is_ok()).collect();
        let mut explained = Vec::new().into_iter();
        if !ok.is_empty() {
            let inputs: Vec<f32> = ok
                .iter()
                .flat_map(|&i| prepared[i].as_ref().expect("ok").input.iter().copied())
                .collect();
            let targets = ok.iter().map(|&i| chunk[i].target_class()).collect();
            explained = engine
                .explain_with(&inputs, &Target::PerImage(targets), method)?
                .into_iter();
        }
        for (sample, prep) in chunk.iter().zip(prepared) {
            let class = sample.target_class();
            let mut row = PerturbationImage {
                id: sample.id.clone(),
                image: sample.image.clone(),
                class,
                predicted: None,
                status: Status::Unreadable,
                error: None,
                morf: Vec::new(),
                lerf: Vec::new(),
                morf_auc: None,
                lerf_auc: None,
                abpc: None,
                map: Vec::new(),
            };
            match prep {
                Err(e) => row.error = Some(e.to_string()),
                Ok(prep) => {
                    let explanation = explained.next().expect("one explanation per image");
                    if let Some(why) = crate::pipeline::non_finite(&explanation) {
                        row.status = Status::NonFinite;
                        row.error = Some(format!("{}: {why}", sample.image.display()));
                        images.push(row);
                        progress(images.len(), total);
                        continue;
                    }
                    row.predicted = Some(top_classes(&explanation.logits, 1)[0].class);
                    let heat = heatmap(&explanation.maps[0].map, cfg.grid(), (h, w));
                    let rank = options.ties.rank(heat.len(), &sample.id);
                    let inputs = perturbed_inputs(&prep.input, &heat, &removed, rank.as_deref());
                    let scores: Vec<f64> = engine
                        .predict(&inputs)?
                        .iter()
                        .map(|logits| softmax(logits)[class] as f64)
                        .collect();
                    if let Some(bad) = scores.iter().position(|s| !s.is_finite()) {
                        row.status = Status::NonFinite;
                        row.error = Some(format!(
                            "{}: the model gave a non-finite probability for perturbed input {bad}",
                            sample.image.display()
                        ));
                        images.push(row);
                        progress(images.len(), total);
                        continue;
                    }
                    let (morf, lerf) = scores.split_at(options.steps);
                    let diff: Vec<f64> = lerf.iter().zip(morf).map(|(l, m)| l - m).collect();
                    row.status = Status::Scored;
                    row.morf_auc = Some(mean(morf));
                    row.lerf_auc = Some(mean(lerf));
                    row.abpc = Some(mean(&diff));
                    row.morf = morf.to_vec();
                    row.lerf = lerf.to_vec();
                    row.map = explanation.maps[0].map.clone();
                }
            }
            images.push(row);
            progress(images.len(), total);
        }
        Ok(())
    })?;
    notes.extend(saturation);
    let scored: Vec<&PerturbationImage> = images
        .iter()
        .filter(|r| r.status == Status::Scored)
        .collect();
    let count = |s: Status| images.iter().filter(|r| r.status == s).count();
    let (unreadable, non_finite) = (count(Status::Unreadable), count(Status::NonFinite));
    let mean_of = |f: &dyn Fn(&PerturbationImage) -> Option<f64>| -> Option<f64> {
        (!scored.is_empty()).then(|| mean(&scored.iter().filter_map(|r| f(r)).collect::<Vec<_>>()))
    };
    let curve = |f: &dyn Fn(&PerturbationImage) -> &Vec<f64>| -> Vec<f64> {
        if scored.is_empty() {
            return Vec::new();
        }
        (0..options.steps)
            .map(|i| mean(&scored.iter().map(|r| f(r)[i]).collect::<Vec<_>>()))
            .collect()
    };
    let (model, adapter) = engine_info(engine);
    Ok(PerturbationReport {
        protocol: "perturbation",
        method,
        heatmap_size: (h, w),
        map_grid: cfg.grid(),
        model,
        adapter,
        dataset: DatasetInfo::of(dataset),
        counts: Counts {
            total: total + dataset.skipped.total(),
            scored: scored.len(),
            misclassified: 0,
            missing_data: dataset.skipped.total() + unreadable,
            unreadable,
            non_finite,
        },
        correctly_classified: scored
            .iter()
            .filter(|r| r.predicted == Some(r.class))
            .count(),
        fractions,
        removed_pixels: removed,
        morf_curve: curve(&|r| &r.morf),
        lerf_curve: curve(&|r| &r.lerf),
        morf_auc: mean_of(&|r| r.morf_auc),
        lerf_auc: mean_of(&|r| r.lerf_auc),
        abpc: mean_of(&|r| r.abpc),
        gpu_batches_per_image,
        tie_rule: options.ties.describe(),
        ties: options.ties,
        notes,
        images,
    })
}
