//! `agcam eval … --report DIR`: one HTML page (`DIR/index.html`) to look at an evaluation run of
//! one or more methods. Self-contained: plots are inline SVG, overlays base64 PNG data URLs, no
//! script, no style sheet or font from elsewhere, so it opens from disk with no network.
//!
//! The page holds the summary table per method, the mean MoRF and LeRF curves per method
//! (perturbation), the distribution of the per-image score (IoU for localization, ABPC for
//! perturbation) as histograms on shared bins, the means by ground-truth class, target size and
//! presence of a distractor, and a gallery of the worst, median and best pictures per method:
//! the map over the picture with the target (white), distractor (magenta) and predicted (black,
//! localization) boxes.

mod gallery;
mod svg;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::{Dataset, LocalizationReport, PerturbationReport, PixelBox, Sample, Status};
use crate::error::{Error, Result};
use crate::explain::Method;

/// The runs a report shows: one protocol, one report per method (in the order given).
#[derive(Debug, Clone, Copy)]
pub enum Runs<'a> {
    /// Localization runs.
    Localization(&'a [LocalizationReport]),
    /// Perturbation runs.
    Perturbation(&'a [PerturbationReport]),
}

/// Creates `dir` if needed and checks that a file can be written in it, so that a run does not
/// end in an error after its work.
///
/// # Errors
/// [`Error::Io`] naming `dir` (or the probe file) when it cannot be created or written.
pub fn prepare_report_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "--report {}: exists and is not a folder",
            dir.display()
        )));
    }
    crate::files::ensure_writable_dir(dir)?;
    Ok(())
}

/// Writes `dir/index.html` for `runs` on `dataset` (the one the runs used: the page reads its
/// annotations and pictures); `command` is shown as the command line that made it. Returns the
/// page's path.
///
/// # Errors
/// [`Error::Invalid`] when `runs` is empty; [`Error::Io`] when the folder or page cannot be
/// written; [`Error::Image`] when a gallery picture cannot be read again.
pub fn write_report(dir: &Path, runs: Runs, dataset: &Dataset, command: &str) -> Result<PathBuf> {
    let html = render_report(runs, dataset, command)?;
    prepare_report_dir(dir)?;
    let path = dir.join("index.html");
    crate::files::write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

/// Escapes text for HTML and SVG content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One scored image of one method, whichever the protocol.
struct Entry<'a> {
    id: &'a str,
    image: &'a Path,
    /// The class whose map was scored (predicted for localization, ground truth otherwise).
    explained: usize,
    predicted: Option<usize>,
    /// One value per metric of the protocol ([`View::metrics`]).
    values: Vec<f64>,
    map: &'a [f32],
    /// Predicted boxes in mask pixels (localization).
    predicted_boxes: &'a [PixelBox],
}

/// One method's scored images.
struct MethodView<'a> {
    method: Method,
    entries: Vec<Entry<'a>>,
}

/// What the page needs of a run, the same for both protocols.
struct View<'a> {
    protocol: &'static str,
    /// Per-image metrics shown by group; `metrics[score]` ranks the gallery and is histogrammed.
    metrics: &'static [&'static str],
    score: usize,
    /// Fixed histogram range of the score, when it has one.
    score_range: Option<(f64, f64)>,
    mask_size: (usize, usize),
    map_grid: (usize, usize),
    methods: Vec<MethodView<'a>>,
}

impl<'a> View<'a> {
    fn of(runs: Runs<'a>) -> View<'a> {
        match runs {
            Runs::Localization(reports) => View {
                protocol: "localization",
                metrics: &["IoU"],
                score: 0,
                score_range: Some((0.0, 1.0)),
                mask_size: reports.first().map_or((0, 0), |r| r.mask_size),
                map_grid: reports.first().map_or((0, 0), |r| r.map_grid),
                methods: method_views(
                    reports,
                    |r| (r.method, &r.images),
                    |i| i.status,
                    |i| {
                        Some(Entry {
                            id: &i.id,
                            image: &i.image,
                            explained: i.predicted?,
                            predicted: i.predicted,
                            values: vec![i.metrics.as_ref()?.iou],
                            map: &i.map,
                            predicted_boxes: &i.predicted_boxes,
                        })
                    },
                ),
            },
            Runs::Perturbation(reports) => View {
                protocol: "perturbation",
                metrics: &["MoRF AUC", "LeRF AUC", "ABPC"],
                score: 2,
                score_range: None,
                mask_size: reports.first().map_or((0, 0), |r| r.heatmap_size),
                map_grid: reports.first().map_or((0, 0), |r| r.map_grid),
                methods: method_views(
                    reports,
                    |r| (r.method, &r.images),
                    |i| i.status,
                    |i| {
                        Some(Entry {
                            id: &i.id,
                            image: &i.image,
                            explained: i.class,
                            predicted: i.predicted,
                            values: vec![i.morf_auc?, i.lerf_auc?, i.abpc?],
                            map: &i.map,
                            predicted_boxes: &[],
                        })
                    },
                ),
            },
        }
    }

    fn score_name(&self) -> &'static str {
        self.metrics[self.score]
    }
}

/// One [`MethodView`] per report: its method and the entries `entry` makes of its scored
/// images.
fn method_views<'a, R, I: 'a>(
    reports: &'a [R],
    parts: impl Fn(&'a R) -> (Method, &'a Vec<I>),
    status: impl Fn(&I) -> Status,
    entry: impl Fn(&'a I) -> Option<Entry<'a>>,
) -> Vec<MethodView<'a>> {
    reports
        .iter()
        .map(|r| {
            let (method, images) = parts(r);
            MethodView {
                method,
                entries: images
                    .iter()
                    .filter(|i| status(i) == Status::Scored)
                    .filter_map(&entry)
                    .collect(),
            }
        })
        .collect()
}

/// The page as a string (see [`write_report`]).
pub(crate) fn render_report(runs: Runs, dataset: &Dataset, command: &str) -> Result<String> {
    let view = View::of(runs);
    if view.methods.is_empty() {
        return Err(Error::Invalid("a report needs at least one run".into()));
    }
    let samples: HashMap<&str, &Sample> =
        dataset.samples.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut html = String::new();
    let title = format!("agcam evaluation: {}", view.protocol);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(&title)
    );
    header(&mut html, runs, dataset, command);
    html.push_str("<h2>Summary</h2>\n");
    summary_table(&mut html, runs);
    if let Runs::Perturbation(reports) = runs {
        curves(&mut html, reports);
    }
    distributions(&mut html, &view);
    breakdown(&mut html, &view, &samples, dataset);
    gallery_section(&mut html, &view, &samples, dataset)?;
    notes(&mut html, runs);
    html.push_str("</body></html>\n");
    Ok(html)
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;max-width:1240px;color:#222}\
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 8px;\
text-align:right;font-size:13px}th{background:#f2f2f2}td.l,th.l{text-align:left}\
.plots{display:flex;flex-wrap:wrap;gap:12px}.gallery{display:flex;flex-wrap:wrap;gap:12px}\
figure{margin:0;font-size:12px;max-width:240px}figure img{display:block;border:1px solid #999}\
.meta{font-size:13px;color:#444}code{font-size:12px}.sw{display:inline-block;width:14px;\
height:10px;border:2px solid;margin:0 4px 0 10px;vertical-align:middle;background:#7f7f7f}";

fn header(html: &mut String, runs: Runs, dataset: &Dataset, command: &str) {
    let (model, adapter, settings) = match runs {
        Runs::Localization(r) => (
            r.first().map(|r| r.model.as_str()),
            r.first().map(|r| r.adapter.as_str()),
            r.first().map(|r| {
                format!(
                    "threshold {}, {}×{} masks",
                    r.threshold, r.mask_size.0, r.mask_size.1
                )
            }),
        ),
        Runs::Perturbation(r) => (
            r.first().map(|r| r.model.as_str()),
            r.first().map(|r| r.adapter.as_str()),
            r.first().map(|r| {
                format!(
                    "{} steps, {}×{} heatmaps; {}",
                    r.fractions.len(),
                    r.heatmap_size.0,
                    r.heatmap_size.1,
                    r.tie_rule
                )
            }),
        ),
    };
    let _ = writeln!(
        html,
        "<p class=\"meta\">model <b>{}</b> on {}<br>dataset {} ({})<br>{}<br>command: <code>{}</code></p>",
        esc(model.unwrap_or("?")),
        esc(adapter.unwrap_or("?")),
        esc(&dataset.root.display().to_string()),
        esc(&dataset.describe()),
        esc(&settings.unwrap_or_default()),
        esc(command)
    );
}

fn summary_table(html: &mut String, runs: Runs) {
    let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.4}"));
    match runs {
        Runs::Localization(reports) => {
            html.push_str(
                "<table class=\"summary\"><tr><th class=\"l\">method</th><th>scored</th>\
                 <th>misclassified</th><th>missing data</th><th>accuracy</th><th>IoU</th>\
                 <th>Dice</th><th>precision</th><th>recall</th></tr>\n",
            );
            for r in reports {
                let m = r.mean.as_ref();
                let _ = writeln!(
                    html,
                    "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    r.method.name(),
                    r.counts.scored,
                    r.counts.misclassified,
                    r.counts.missing_data,
                    f(m.map(|m| m.accuracy)),
                    f(m.map(|m| m.iou)),
                    f(m.map(|m| m.dice)),
                    f(m.map(|m| m.precision)),
                    f(m.map(|m| m.recall)),
                );
            }
        }
        Runs::Perturbation(reports) => {
            html.push_str(
                "<table class=\"summary\"><tr><th class=\"l\">method</th><th>scored</th>\
                 <th>correctly classified</th><th>missing data</th>\
                 <th>MoRF AUC (lower is better)</th><th>LeRF AUC (higher is better)</th>\
                 <th>ABPC (higher is better)</th></tr>\n",
            );
            for r in reports {
                let _ = writeln!(
                    html,
                    "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td></tr>",
                    r.method.name(),
                    r.counts.scored,
                    r.correctly_classified,
                    r.counts.missing_data,
                    f(r.morf_auc),
                    f(r.lerf_auc),
                    f(r.abpc),
                );
            }
        }
    }
    html.push_str("</table>\n");
}

/// Colours of the MoRF and LeRF curves.
const MORF_COLOUR: &str = "#d62728";
const LERF_COLOUR: &str = "#1f77b4";

fn curves(html: &mut String, reports: &[PerturbationReport]) {
    html.push_str(
        "<h2>Perturbation curves</h2>\n<p class=\"meta\">Mean probability of the ground-truth \
         class as the most (MoRF) or least (LeRF) relevant pixels are removed; the shaded area \
         between them is ABPC.</p>\n<div class=\"plots\">\n",
    );
    for r in reports.iter().filter(|r| !r.morf_curve.is_empty()) {
        let series = [
            svg::Series {
                name: "MoRF",
                colour: MORF_COLOUR,
                points: r
                    .fractions
                    .iter()
                    .copied()
                    .zip(r.morf_curve.clone())
                    .collect(),
            },
            svg::Series {
                name: "LeRF",
                colour: LERF_COLOUR,
                points: r
                    .fractions
                    .iter()
                    .copied()
                    .zip(r.lerf_curve.clone())
                    .collect(),
            },
        ];
        let title = format!(
            "{}: ABPC {:.4}",
            r.method.name(),
            r.abpc.unwrap_or(f64::NAN)
        );
        html.push_str(&svg::line_chart(
            &title,
            ((0.0, 1.0), (0.0, 1.0)),
            ("fraction of pixels removed", "probability"),
            &series,
            true,
        ));
        html.push('\n');
    }
    html.push_str("</div>\n");
}

/// Number of histogram bins.
const BINS: usize = 20;

/// A range covering `values`, widened to tenths (at least 0.1 wide).
fn data_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let lo = (lo * 10.0).floor() / 10.0;
    let hi = ((hi * 10.0).ceil() / 10.0).max(lo + 0.1);
    (lo, hi)
}

fn distributions(html: &mut String, view: &View) {
    let score = view.score;
    let range = view.score_range.unwrap_or_else(|| {
        data_range(
            view.methods
                .iter()
                .flat_map(|m| m.entries.iter().map(|e| e.values[score])),
        )
    });
    let counts: Vec<Vec<usize>> = view
        .methods
        .iter()
        .map(|m| {
            let values: Vec<f64> = m.entries.iter().map(|e| e.values[score]).collect();
            svg::bin_counts(&values, range, BINS)
        })
        .collect();
    // A top of the count axis shared by the methods, a multiple of a whole round step.
    let max = counts.iter().flatten().copied().max().unwrap_or(0).max(1);
    let step = svg::nice_step(max as f64 / 6.0, true) as usize;
    let top = max.div_ceil(step) * step;
    let _ = writeln!(
        html,
        "<h2>Per-image {name}</h2>\n<p class=\"meta\">{BINS} bins over [{:.1}, {:.1}], the \
         same for every method.</p>\n<div class=\"plots\">",
        range.0,
        range.1,
        name = view.score_name()
    );
    for (m, c) in view.methods.iter().zip(&counts) {
        let mean =
            m.entries.iter().map(|e| e.values[score]).sum::<f64>() / m.entries.len().max(1) as f64;
        let title = format!(
            "{}: {} (n = {}, mean {mean:.3})",
            m.method.name(),
            view.score_name(),
            m.entries.len()
        );
        html.push_str(&svg::histogram(
            &title,
            view.score_name(),
            range,
            c,
            top,
            "#4c72b0",
        ));
        html.push('\n');
    }
    html.push_str("</div>\n");
}

/// The decoded size of a sample's picture: the XML `<size>`, else the file's header.
fn picture_size(sample: &Sample) -> Option<(f64, f64)> {
    let (w, h) = sample
        .annotation
        .size
        .or_else(|| image::image_dimensions(&sample.image).ok())?;
    Some((f64::from(w), f64::from(h)))
}

/// The target (first ground-truth) box's share of the picture's area.
fn target_share(sample: &Sample) -> Option<f64> {
    let (w, h) = picture_size(sample)?;
    let b = sample.annotation.targets().next()?.bbox;
    Some(((b.xmax - b.xmin) * (b.ymax - b.ymin) / (w * h)).clamp(0.0, 1.0))
}

/// A named subset of images, by id.
struct Group {
    name: String,
    ids: std::collections::HashSet<String>,
}

/// The groups of the breakdown: by ground-truth class, by target size (terciles of the target
/// box's share of the picture over the images of the first run) and by distractor.
fn groups(view: &View, samples: &HashMap<&str, &Sample>, dataset: &Dataset) -> Vec<Group> {
    let ids: Vec<&str> = view.methods[0].entries.iter().map(|e| e.id).collect();
    let sample_of = |id: &str| samples.get(id).copied();
    let mut out = Vec::new();
    let mut by = |name: String, keep: &dyn Fn(&Sample) -> bool| {
        let ids: std::collections::HashSet<String> = dataset
            .samples
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.id.clone())
            .collect();
        out.push(Group { name, ids });
    };
    let mut classes: Vec<usize> = ids
        .iter()
        .filter_map(|id| sample_of(id))
        .map(|s| s.target_class())
        .collect();
    classes.sort_unstable();
    classes.dedup();
    for c in classes {
        let name = dataset.class_name(c).unwrap_or("?");
        by(format!("class {name}"), &|s| s.target_class() == c);
    }
    let mut shares: Vec<f64> = ids
        .iter()
        .filter_map(|id| sample_of(id).and_then(target_share))
        .collect();
    shares.sort_by(f64::total_cmp);
    if shares.len() >= 3 {
        let a = shares[shares.len() / 3];
        let b = shares[2 * shares.len() / 3];
        let pct = |v: f64| format!("{:.1} %", 100.0 * v);
        let share = |s: &Sample| target_share(s).unwrap_or(f64::NAN);
        by(format!("target < {} of the picture", pct(a)), &|s| {
            share(s) < a
        });
        by(format!("target {} to {}", pct(a), pct(b)), &|s| {
            (a..b).contains(&share(s))
        });
        by(format!("target ≥ {}", pct(b)), &|s| share(s) >= b);
    }
    let has_distractor = |s: &Sample| s.annotation.objects.iter().any(|o| o.distractor);
    by("with a distractor".into(), &|s| has_distractor(s));
    by("without a distractor".into(), &|s| !has_distractor(s));
    out
}

fn breakdown(html: &mut String, view: &View, samples: &HashMap<&str, &Sample>, ds: &Dataset) {
    let groups = groups(view, samples, ds);
    let _ = write!(
        html,
        "<h2>By class, target size and distractor</h2>\n<p class=\"meta\">Means over the scored \
         images of each group (target size: terciles of the target box's share of the picture).\
         </p>\n<table class=\"breakdown\"><tr><th class=\"l\" rowspan=\"2\">group</th>"
    );
    for m in &view.methods {
        let _ = write!(
            html,
            "<th colspan=\"{}\">{}</th>",
            view.metrics.len() + 1,
            m.method.name()
        );
    }
    html.push_str("</tr><tr>");
    for _ in &view.methods {
        html.push_str("<th>n</th>");
        for name in view.metrics {
            let _ = write!(html, "<th>{name}</th>");
        }
    }
    html.push_str("</tr>\n");
    for g in &groups {
        let _ = write!(html, "<tr><td class=\"l\">{}</td>", esc(&g.name));
        for m in &view.methods {
            let members: Vec<&Entry> = m.entries.iter().filter(|e| g.ids.contains(e.id)).collect();
            let _ = write!(html, "<td>{}</td>", members.len());
            for k in 0..view.metrics.len() {
                if members.is_empty() {
                    html.push_str("<td>–</td>");
                } else {
                    let mean =
                        members.iter().map(|e| e.values[k]).sum::<f64>() / members.len() as f64;
                    let _ = write!(html, "<td>{mean:.4}</td>");
                }
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
}

/// Indices of the worst, median and best entries by `score` (ties by id), without repeats.
fn picks(entries: &[Entry], score: usize) -> Vec<(&'static str, usize)> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        entries[a].values[score]
            .total_cmp(&entries[b].values[score])
            .then(entries[a].id.cmp(entries[b].id))
    });
    let Some(&last) = order.last() else {
        return Vec::new();
    };
    let mut out: Vec<(&'static str, usize)> = Vec::new();
    for (label, i) in [
        ("worst", order[0]),
        ("median", order[(order.len() - 1) / 2]),
        ("best", last),
    ] {
        if !out.iter().any(|&(_, j)| j == i) {
            out.push((label, i));
        }
    }
    out
}

fn gallery_section(
    html: &mut String,
    view: &View,
    samples: &HashMap<&str, &Sample>,
    dataset: &Dataset,
) -> Result<()> {
    let swatch = |c: [u8; 3]| {
        format!(
            "<span class=\"sw\" style=\"border-color:rgb({},{},{})\"></span>",
            c[0], c[1], c[2]
        )
    };
    let _ = write!(
        html,
        "<h2>Gallery: worst, median and best {} per method</h2>\n<p class=\"meta\">The map of \
         the scored class over the picture (jet colours){}target box{}distractor box{}</p>\n",
        view.score_name(),
        swatch(gallery::TARGET),
        swatch(gallery::DISTRACTOR),
        if view.protocol == "localization" {
            format!("{}predicted box", swatch(gallery::PREDICTED))
        } else {
            String::new()
        }
    );
    let class = |c: Option<usize>| {
        c.map_or("?".to_string(), |c| {
            dataset.class_name(c).map_or(c.to_string(), str::to_string)
        })
    };
    for m in &view.methods {
        let _ = writeln!(
            html,
            "<h3>{}</h3>\n<div class=\"gallery\">",
            m.method.name()
        );
        for (label, i) in picks(&m.entries, view.score) {
            let e = &m.entries[i];
            let sample = samples.get(e.id).copied();
            let boxes = sample.map_or_else(Vec::new, |s| outlines(s, e, view.mask_size));
            let (png, (w, h)) = gallery::overlay_png(e.image, e.map, view.map_grid, &boxes)?;
            let truth = sample.map(|s| s.target_class());
            let _ = writeln!(
                html,
                "<figure><img class=\"overlay\" width=\"{w}\" height=\"{h}\" alt=\"{id}\" \
                 src=\"data:image/png;base64,{}\"><figcaption><b>{label}</b>: {id}, {} {:.4}\
                 <br>truth {}, predicted {}, map of {}</figcaption></figure>",
                gallery::base64(&png),
                view.score_name(),
                e.values[view.score],
                esc(&class(truth)),
                esc(&class(e.predicted)),
                esc(&class(Some(e.explained))),
                id = esc(e.id),
            );
        }
        html.push_str("</div>\n");
    }
    Ok(())
}

/// The boxes drawn on a gallery picture, in the decoded picture's pixels: ground truth and
/// distractors from the annotation (scaled from its `<size>` when that differs), predicted
/// boxes from mask pixels.
fn outlines(sample: &Sample, entry: &Entry, mask: (usize, usize)) -> Vec<gallery::Outline> {
    let decoded = image::image_dimensions(&sample.image)
        .map(|(w, h)| (f64::from(w), f64::from(h)))
        .ok();
    let (Some((w, h)), Some((aw, ah))) = (decoded, picture_size(sample)) else {
        return Vec::new();
    };
    let mut out: Vec<gallery::Outline> = sample
        .annotation
        .objects
        .iter()
        .map(|o| {
            let b = o.bbox;
            let colour = if o.distractor {
                gallery::DISTRACTOR
            } else {
                gallery::TARGET
            };
            (
                [
                    b.xmin * w / aw,
                    b.ymin * h / ah,
                    b.xmax * w / aw,
                    b.ymax * h / ah,
                ],
                colour,
            )
        })
        .collect();
    let (mh, mw) = (mask.0 as f64, mask.1 as f64);
    out.extend(entry.predicted_boxes.iter().map(|b| {
        (
            [
                b.xmin as f64 * w / mw,
                b.ymin as f64 * h / mh,
                (b.xmax + 1) as f64 * w / mw,
                (b.ymax + 1) as f64 * h / mh,
            ],
            gallery::PREDICTED,
        )
    }));
    out
}

fn notes(html: &mut String, runs: Runs) {
    let lists: Vec<&[String]> = match runs {
        Runs::Localization(r) => r.iter().map(|r| r.notes.as_slice()).collect(),
        Runs::Perturbation(r) => r.iter().map(|r| r.notes.as_slice()).collect(),
    };
    let mut all: Vec<&String> = Vec::new();
    for n in lists.into_iter().flatten() {
        if !all.contains(&n) {
            all.push(n);
        }
    }
    html.push_str("<h2>Notes</h2>\n<ul>\n");
    for n in all {
        let _ = writeln!(html, "<li>{}</li>", esc(n));
    }
    html.push_str("</ul>\n");
}
