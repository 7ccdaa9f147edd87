//! The pure parts of the localization protocol (method.md §4): heatmap post-processing,
//! thresholding, 8-connected components and their bounding rectangles, box filling with the
//! authors' conventions, and the per-image metrics.

use serde::Serialize;

/// The `eps` of the authors' metric formulas.
pub const EPS: f64 = 1e-5;

/// A binary mask, row-major, `height × width`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height · width` values, row-major.
    pub data: Vec<bool>,
}

impl Mask {
    /// An empty (all false) mask.
    pub fn new(height: usize, width: usize) -> Mask {
        Mask {
            height,
            width,
            data: vec![false; height * width],
        }
    }

    /// A mask from row-major values.
    ///
    /// # Panics
    /// If `data.len() != height * width`.
    pub fn from_vec(height: usize, width: usize, data: Vec<bool>) -> Mask {
        assert_eq!(
            data.len(),
            height * width,
            "mask of {} values is not {height}×{width}",
            data.len()
        );
        Mask {
            height,
            width,
            data,
        }
    }

    /// The value at row `y`, column `x`.
    pub fn get(&self, y: usize, x: usize) -> bool {
        self.data[y * self.width + x]
    }

    /// Sets row `y`, column `x`.
    pub fn set(&mut self, y: usize, x: usize, value: bool) {
        self.data[y * self.width + x] = value;
    }

    /// Number of set pixels.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v).count()
    }

    /// Sets every pixel of `b` (inclusive on all four sides), clipped to the mask. A box that
    /// lies wholly outside, or whose min exceeds its max, sets nothing.
    pub fn fill(&mut self, b: &PixelBox) {
        let clip = |lo: i64, hi: i64, size: usize| -> Option<(usize, usize)> {
            let lo = lo.max(0);
            let hi = hi.min(size as i64 - 1);
            (lo <= hi).then_some((lo as usize, hi as usize))
        };
        let (Some((x0, x1)), Some((y0, y1))) = (
            clip(b.xmin, b.xmax, self.width),
            clip(b.ymin, b.ymax, self.height),
        ) else {
            return;
        };
        for y in y0..=y1 {
            self.data[y * self.width + x0..=y * self.width + x1].fill(true);
        }
    }
}

/// A box in mask pixels, inclusive on all four sides: it covers columns `xmin..=xmax` and rows
/// `ymin..=ymax` (before clipping to the mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PixelBox {
    /// First column.
    pub xmin: i64,
    /// First row.
    pub ymin: i64,
    /// Last column (inclusive).
    pub xmax: i64,
    /// Last row (inclusive).
    pub ymax: i64,
}

/// A bounding rectangle as OpenCV's `boundingRect` returns it: top-left corner and size, so
/// the rectangle covers columns `x..x + w` and rows `y..y + h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rect {
    /// Leftmost column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Width in pixels (at least 1).
    pub w: usize,
    /// Height in pixels (at least 1).
    pub h: usize,
}

impl Rect {
    /// The box the authors fill for this rectangle: `[x, x + w] × [y, y + h]` inclusive, one
    /// pixel wider and taller than the component itself.
    pub fn authors_box(&self) -> PixelBox {
        PixelBox {
            xmin: self.x as i64,
            ymin: self.y as i64,
            xmax: (self.x + self.w) as i64,
            ymax: (self.y + self.h) as i64,
        }
    }
}

/// The display and evaluation post-processing of method.md §2: the raw `gh × gw` grid
/// upsampled to `out_h × out_w` (bilinear, `align_corners=False`), then min-max normalised to
/// [0, 1] (all zeros when max == min).
pub fn heatmap(grid: &[f32], (gh, gw): (usize, usize), (out_h, out_w): (usize, usize)) -> Vec<f32> {
    let mut heat = crate::image::upsample_bilinear(grid, gh, gw, out_h, out_w);
    crate::image::min_max_normalize(&mut heat);
    heat
}

/// The binary mask `value > threshold` of a row-major `height × width` heatmap.
///
/// # Panics
/// If `heat.len() != height * width`.
pub fn threshold_mask(heat: &[f32], height: usize, width: usize, threshold: f32) -> Mask {
    Mask::from_vec(height, width, heat.iter().map(|&v| v > threshold).collect())
}

/// The bounding rectangle of every 8-connected component of `mask` (pixels that touch by an
/// edge or only by a corner belong to one component), in the raster order of each component's
/// first pixel. Their union is the same as that of the bounding rectangles of OpenCV's external
/// contours (`findContours(RETR_EXTERNAL)` + `boundingRect`): a component nested in another's
/// hole lies inside the outer one's rectangle.
pub fn component_rects(mask: &Mask) -> Vec<Rect> {
    let (h, w) = (mask.height, mask.width);
    let mut seen = vec![false; h * w];
    let mut stack = Vec::new();
    let mut rects = Vec::new();
    for start in 0..h * w {
        if !mask.data[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(i) = stack.pop() {
            let (y, x) = (i / w, i % w);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if mask.data[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        rects.push(Rect {
            x: x0,
            y: y0,
            w: x1 - x0 + 1,
            h: y1 - y0 + 1,
        });
    }
    rects
}

/// The predicted boxes of a binary mask with the authors' convention: one box per 8-connected
/// component, `[x, x + w] × [y, y + h]` inclusive (see [`Rect::authors_box`]).
pub fn predicted_boxes(mask: &Mask) -> Vec<PixelBox> {
    component_rects(mask)
        .iter()
        .map(Rect::authors_box)
        .collect()
}

/// A box from an annotation, in the original image's pixel coordinates, scaled to a
/// `mask_w × mask_h` mask as the authors do: `int(v / W * mask_w)` for x and
/// `int(v / H * mask_h)` for y (f64 arithmetic in that order, truncation toward zero).
pub fn scale_box(
    [xmin, ymin, xmax, ymax]: [f64; 4],
    (image_w, image_h): (f64, f64),
    (mask_w, mask_h): (usize, usize),
) -> PixelBox {
    let x = |v: f64| (v / image_w * mask_w as f64).trunc() as i64;
    let y = |v: f64| (v / image_h * mask_h as f64).trunc() as i64;
    PixelBox {
        xmin: x(xmin),
        ymin: y(ymin),
        xmax: x(xmax),
        ymax: y(ymax),
    }
}

/// One mask of `height × width` with every box filled (inclusive, clipped).
pub fn fill_boxes(height: usize, width: usize, boxes: &[PixelBox]) -> Mask {
    let mut mask = Mask::new(height, width);
    for b in boxes {
        mask.fill(b);
    }
    mask
}

/// Pixel counts of a predicted mask against a ground-truth mask, and the five per-image
/// metrics of method.md §4.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// Predicted and true.
    pub true_positive: usize,
    /// Predicted, not true.
    pub false_positive: usize,
    /// True, not predicted.
    pub false_negative: usize,
    /// Neither.
    pub true_negative: usize,
    /// (TP + TN + eps) / (all + eps).
    pub accuracy: f64,
    /// (TP + eps) / (TP + FP + FN + eps).
    pub iou: f64,
    /// (2 TP + eps) / (2 TP + FP + FN + eps).
    pub dice: f64,
    /// (TP + eps) / (TP + FP + eps).
    pub precision: f64,
    /// (TP + eps) / (TP + FN + eps).
    pub recall: f64,
}

/// Compares a predicted mask with a ground-truth mask: pixel counts and the per-image metrics
/// with eps = 1e-5 exactly as method.md §4 writes them (in f64).
///
/// # Panics
/// If the two masks differ in size.
pub fn box_metrics(pred: &Mask, gt: &Mask) -> Metrics {
    assert_eq!(
        (pred.height, pred.width),
        (gt.height, gt.width),
        "box_metrics: masks of different sizes"
    );
    let (mut tp, mut fp, mut fne, mut tn) = (0usize, 0usize, 0usize, 0usize);
    for (&p, &g) in pred.data.iter().zip(&gt.data) {
        match (p, g) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fne += 1,
            (false, false) => tn += 1,
        }
    }
    let (tpf, fpf, fnf, tnf) = (tp as f64, fp as f64, fne as f64, tn as f64);
    Metrics {
        true_positive: tp,
        false_positive: fp,
        false_negative: fne,
        true_negative: tn,
        accuracy: (tpf + tnf + EPS) / (tpf + fpf + fnf + tnf + EPS),
        iou: (tpf + EPS) / (tpf + fpf + fnf + EPS),
        dice: (2.0 * tpf + EPS) / (2.0 * tpf + fpf + fnf + EPS),
        precision: (tpf + EPS) / (tpf + fpf + EPS),
        recall: (tpf + EPS) / (tpf + fnf + EPS),
    }
}

/// Means of the five metrics over the scored images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanMetrics {
    /// Pixel accuracy.
    pub accuracy: f64,
    /// Intersection over union.
    pub iou: f64,
    /// Dice coefficient.
    pub dice: f64,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
}

impl MeanMetrics {
    /// The mean of each metric over `metrics`; `None` when there are none.
    pub fn of<'a>(metrics: impl IntoIterator<Item = &'a Metrics>) -> Option<MeanMetrics> {
        let mut n = 0usize;
        let mut sum = [0.0f64; 5];
        for m in metrics {
            n += 1;
            for (s, v) in sum
                .iter_mut()
                .zip([m.accuracy, m.iou, m.dice, m.precision, m.recall])
            {
                *s += v;
            }
        }
        (n > 0).then(|| {
            let [accuracy, iou, dice, precision, recall] = sum.map(|s| s / n as f64);
            MeanMetrics {
                accuracy,
                iou,
                dice,
                precision,
                recall,
            }
        })
    }
}

/// Pixel indices of a row-major heatmap in removal order, deterministic: most relevant first
/// (`descending`: highest value first) or least relevant first (lowest value first). Ties are
/// broken by the lower pixel index first in both orders, so a constant heatmap removes the
/// same pixels under MoRF and LeRF. Values are compared with `f32::total_cmp`.
pub fn removal_order(heat: &[f32], descending: bool) -> Vec<usize> {
    sorted_by_value(heat, descending, |i| i)
}

/// [`removal_order`] with ties broken by `tie_rank` instead of the pixel index: of two pixels
/// of equal value, the one with the lower `tie_rank` comes first, in MoRF and LeRF alike.
/// With `tie_rank[i] == i` this is [`removal_order`]; [`Ties::rank`] gives random ranks.
///
/// # Panics
/// If `tie_rank.len() != heat.len()`.
pub fn removal_order_ranked(heat: &[f32], descending: bool, tie_rank: &[u32]) -> Vec<usize> {
    assert_eq!(
        tie_rank.len(),
        heat.len(),
        "removal_order_ranked: {} ranks for {} pixels",
        tie_rank.len(),
        heat.len()
    );
    sorted_by_value(heat, descending, |i| tie_rank[i] as usize)
}

/// Pixel indices sorted by value (`f32::total_cmp`), then by `tie_key` ascending.
fn sorted_by_value(heat: &[f32], descending: bool, tie_key: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..heat.len()).collect();
    if descending {
        order.sort_by(|&a, &b| {
            heat[b]
                .total_cmp(&heat[a])
                .then(tie_key(a).cmp(&tie_key(b)))
        });
    } else {
        order.sort_by(|&a, &b| {
            heat[a]
                .total_cmp(&heat[b])
                .then(tie_key(a).cmp(&tie_key(b)))
        });
    }
    order
}

/// The default tie rule of the perturbation protocol ([`Ties::Stable`]), in words.
pub const TIE_RULE: &str = "pixels are removed in a stable order: MoRF by value descending, \
                            LeRF by value ascending, equal values by lower pixel index \
                            (row-major) first in both";

/// How pixels of equal heatmap value are ordered for removal in the perturbation protocol
/// (method.md §4). Serialises as `{"rule": "stable"}` or `{"rule": "random", "seed": S}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum Ties {
    /// Lower pixel index (row-major) first, in MoRF and LeRF alike ([`removal_order`]): a
    /// constant map removes the same pixels under both orders.
    #[default]
    Stable,
    /// A pseudo-random order among equal values, drawn per image from `seed` and the image id
    /// (a random permutation of the pixels used as the tie-breaker in MoRF and LeRF alike), so
    /// a run is reproducible and an image's order does not depend on the others.
    Random {
        /// Seed of the tie order.
        seed: u64,
    },
}

impl Ties {
    /// The tie-breaking rank of each of `pixels` pixels for the image `id`: `None` for
    /// [`Ties::Stable`] (the pixel index), else a permutation of `0..pixels` that depends only
    /// on the seed and `id` (Fisher–Yates over SplitMix64).
    pub fn rank(&self, pixels: usize, id: &str) -> Option<Vec<u32>> {
        let Ties::Random { seed } = *self else {
            return None;
        };
        // FNV-1a of the id: the same image gets the same order in any run of the same seed.
        let id_hash = id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
        let mut rng = crate::synth::rng::Rng::for_image(seed, id_hash);
        let mut rank: Vec<u32> = (0..pixels as u32).collect();
        for i in (1..pixels).rev() {
            rank.swap(i, rng.below(i as u64 + 1) as usize);
        }
        Some(rank)
    }

    /// One sentence for reports and notes.
    pub fn describe(&self) -> String {
        match self {
            Ties::Stable => TIE_RULE.to_string(),
            Ties::Random { seed } => format!(
                "pixels are removed by value (MoRF descending, LeRF ascending), equal values in \
                 a random order drawn per image from seed {seed} and the image id (the same \
                 order in MoRF and LeRF)"
            ),
        }
    }
}

/// Pixels removed at fraction `p` of a `pixels`-pixel image: `int(pixels · p)`.
pub fn removed_count(pixels: usize, p: f64) -> usize {
    ((pixels as f64 * p).trunc() as usize).min(pixels)
}

/// The fractions of the perturbation protocol: `steps` values evenly from 0 to 1 inclusive
/// (`i / (steps − 1)`; 11 steps give 0.0, 0.1, …, 1.0).
///
/// # Panics
/// If `steps < 2`.
pub fn perturbation_fractions(steps: usize) -> Vec<f64> {
    assert!(steps >= 2, "at least two perturbation steps are needed");
    (0..steps).map(|i| i as f64 / (steps - 1) as f64).collect()
}

/// Sets all channels of the `removed` pixels to 0 in a normalised `[C, H, W]` input whose planes
/// hold `plane` values each.
pub fn remove_pixels(input: &mut [f32], plane: usize, removed: &[usize]) {
    for channel in input.chunks_exact_mut(plane) {
        for &i in removed {
            channel[i] = 0.0;
        }
    }
}
