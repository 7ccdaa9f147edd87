//! Inline SVG plots of the evaluation report: line charts (perturbation curves) and histograms
//! (per-image scores). Plain strings, no scripts, so the page needs nothing but a browser.

use std::fmt::Write;

use super::esc;

const WIDTH: f64 = 380.0;
const HEIGHT: f64 = 250.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;

/// A line of a chart: name, colour, points (x, y).
pub(crate) struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Axes, ticks, labels and title on a fixed-size canvas, mapping data to pixels.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
    svg: String,
}

impl Frame {
    /// `counts`: the y axis counts things (whole ticks).
    fn new(
        title: &str,
        (x, y): ((f64, f64), (f64, f64)),
        (x_label, y_label): (&str, &str),
        counts: bool,
    ) -> Frame {
        let mut f = Frame {
            x,
            y,
            svg: String::new(),
        };
        let (w, h) = (WIDTH, HEIGHT);
        let _ = write!(
            f.svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><rect width="{w}" height="{h}" fill="#fff"/><text x="{cx}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{t}</text>"##,
            t = esc(title),
            cx = w / 2.0,
        );
        for vx in nice_ticks(x, false) {
            let px = f.px(vx);
            let _ = write!(
                f.svg,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{b:.1}" stroke="#e5e5e5"/><text x="{px:.1}" y="{tx:.1}" text-anchor="middle" font-size="10">{}</text>"##,
                tick(vx),
                b = h - BOTTOM,
                tx = h - BOTTOM + 13.0,
            );
        }
        for vy in nice_ticks(y, counts) {
            let py = f.py(vy);
            let _ = write!(
                f.svg,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{r:.1}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{ty:.1}" y="{py3:.1}" text-anchor="end" font-size="10">{}</text>"##,
                tick(vy),
                r = w - RIGHT,
                ty = LEFT - 4.0,
                py3 = py + 3.0,
            );
        }
        let _ = write!(
            f.svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#555"/><text x="{cx:.1}" y="{lx:.1}" text-anchor="middle" font-size="11">{}</text><text transform="translate(12 {cy:.1}) rotate(-90)" text-anchor="middle" font-size="11">{}</text>"##,
            esc(x_label),
            esc(y_label),
            pw = w - LEFT - RIGHT,
            ph = h - TOP - BOTTOM,
            cx = LEFT + (w - LEFT - RIGHT) / 2.0,
            lx = h - 6.0,
            cy = TOP + (h - TOP - BOTTOM) / 2.0,
        );
        f
    }

    fn px(&self, v: f64) -> f64 {
        LEFT + (v - self.x.0) / (self.x.1 - self.x.0) * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, v: f64) -> f64 {
        HEIGHT - BOTTOM - (v - self.y.0) / (self.y.1 - self.y.0) * (HEIGHT - TOP - BOTTOM)
    }

    fn points(&self, points: &[(f64, f64)]) -> String {
        points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

/// The smallest round step (1, 2, 2.5 or 5 times a power of ten; no 2.5 and at least 1 for
/// `integers`) of at least `raw`.
pub(crate) fn nice_step(raw: f64, integers: bool) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .filter(|&&m| !(integers && m == 2.5))
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    if integers {
        step.round().max(1.0)
    } else {
        step
    }
}

/// Tick values inside `[lo, hi]` at a round step ([`nice_step`]) giving at most six intervals.
pub(crate) fn nice_ticks((lo, hi): (f64, f64), integers: bool) -> Vec<f64> {
    let raw = (hi - lo) / 6.0;
    if !(raw > 0.0 && raw.is_finite()) {
        return vec![lo];
    }
    let step = nice_step(raw, integers);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick label: integers without decimals, else up to two.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').to_string()
    }
}

/// A line chart of `series` over `x` × `y`, with a legend; the area between the first two
/// series is shaded when `shade_between` (ABPC is that area).
pub(crate) fn line_chart(
    title: &str,
    (x, y): ((f64, f64), (f64, f64)),
    (x_label, y_label): (&str, &str),
    series: &[Series],
    shade_between: bool,
) -> String {
    let mut f = Frame::new(title, (x, y), (x_label, y_label), false);
    if shade_between && series.len() >= 2 {
        let mut outline = series[0].points.clone();
        outline.extend(series[1].points.iter().rev());
        let _ = write!(
            f.svg,
            r##"<polygon points="{}" fill="#999" fill-opacity="0.18"/>"##,
            f.points(&outline)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let _ = write!(
            f.svg,
            r##"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"##,
            f.points(&s.points),
            c = s.colour
        );
        for &(px, py) in &s.points {
            let _ = write!(
                f.svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{c}"/>"##,
                f.px(px),
                f.py(py),
                c = s.colour
            );
        }
        let ly = TOP + 14.0 + 14.0 * i as f64;
        let lx = WIDTH - RIGHT - 120.0;
        let _ = write!(
            f.svg,
            r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}" font-size="11">{}</text>"##,
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            esc(s.name),
            c = s.colour
        );
    }
    f.finish()
}

/// Bin edges and counts of `values` in `bins` equal bins over `range` (the last bin closed);
/// values outside the range are clamped into the end bins.
pub(crate) fn bin_counts(values: &[f64], range: (f64, f64), bins: usize) -> Vec<usize> {
    let mut counts = vec![0; bins];
    let width = (range.1 - range.0) / bins as f64;
    for &v in values.iter().filter(|v| v.is_finite()) {
        let i = ((v - range.0) / width).floor();
        counts[(i.max(0.0) as usize).min(bins - 1)] += 1;
    }
    counts
}

/// A histogram of `counts` over equal bins of `range`, bars up to `max_count` (shared by the
/// methods of one report so their histograms compare).
pub(crate) fn histogram(
    title: &str,
    x_label: &str,
    range: (f64, f64),
    counts: &[usize],
    max_count: usize,
    colour: &str,
) -> String {
    let top = max_count.max(1) as f64;
    let mut f = Frame::new(title, (range, (0.0, top)), (x_label, "images"), true);
    let width = (range.1 - range.0) / counts.len() as f64;
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let x0 = f.px(range.0 + i as f64 * width);
        let x1 = f.px(range.0 + (i + 1) as f64 * width);
        let y = f.py(c as f64);
        let _ = write!(
            f.svg,
            r##"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{colour}" stroke="#fff"><title>{c}</title></rect>"##,
            x0,
            (x1 - x0).max(1.0),
            f.py(0.0) - y,
        );
    }
    f.finish()
}
