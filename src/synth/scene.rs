//! One synthetic picture: textured background, clutter, the target object and maybe a distractor.

use std::f64::consts::{PI, TAU};

use super::raster::{bounds, regular_polygon, stroke_pieces, Canvas, Mask, Pt};
use super::rng::Rng;
use super::shapes::{self, NAMES};
use crate::error::{Error, Result};

/// Distractor size relative to the target's: always clearly smaller, so that "the target" is
/// well defined (the largest object in the picture).
pub(crate) const DISTRACTOR_RATIO: (f64, f64) = (0.4, 0.65);
/// Largest allowed IoU between the target's and the distractor's boxes.
pub(crate) const MAX_IOU: f64 = 0.1;
/// Smallest luma difference between an object's fill and the mean background under it.
const MIN_CONTRAST: f64 = 80.0;

/// An object as drawn: class, role, and its exact coverage.
pub(crate) struct DrawnObject {
    pub class: usize,
    pub distractor: bool,
    /// Samples of the object's pixels (fill and outline together); the tests check boxes and
    /// overlaps against it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub mask: Mask,
    /// Tight 0-based inclusive pixel box of `mask`.
    pub bbox: (usize, usize, usize, usize),
}

/// A rendered picture and its objects, target first.
pub(crate) struct Scene {
    pub canvas: Canvas,
    pub objects: Vec<DrawnObject>,
}

/// Parameters of one picture that come from the options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SceneParams {
    pub min_size: u32,
    pub max_size: u32,
    pub distractor_share: f64,
    /// Target size range, as a fraction of the shorter side.
    pub scale: (f64, f64),
    /// Clutter density multiplier.
    pub clutter: f64,
    /// Force the target class (tests); `None` draws it at random.
    pub class: Option<usize>,
}

/// Rec. 601 luma of an RGB colour in [0, 255].
fn luma(c: [f64; 3]) -> f64 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// A random colour from HSV space (uniform hue, saturation and value).
fn random_color(rng: &mut Rng) -> [f64; 3] {
    let h = rng.range(0.0, 6.0);
    let s = rng.unit();
    let v = rng.range(0.0, 255.0);
    let i = libm::floor(h);
    let f = h - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// A random colour whose luma differs from `against` by at least `min`: rejection sampling,
/// with black or white (whichever is farther) as the fallback so that it always succeeds.
fn contrasting(rng: &mut Rng, against: f64, min: f64) -> [f64; 3] {
    for _ in 0..32 {
        let c = random_color(rng);
        if (luma(c) - against).abs() >= min {
            return c;
        }
    }
    if against < 127.5 {
        [255.0; 3]
    } else {
        [0.0; 3]
    }
}

/// A second colour near `c`: every channel moved by at most `amp`.
fn near(rng: &mut Rng, c: [f64; 3], amp: f64) -> [f64; 3] {
    c.map(|v| (v + rng.range(-amp, amp)).clamp(0.0, 255.0))
}

fn smoothstep(t: f64) -> f64 {
    t * t * (3.0 - 2.0 * t)
}

/// A scalar texture field in [0, 1] over the image.
enum Field {
    /// Value noise: random values on a lattice of `cell` pixels, smoothly interpolated; two
    /// octaves.
    Noise {
        cell: f64,
        lattice: Vec<f64>,
        gw: usize,
        cell2: f64,
        lattice2: Vec<f64>,
        gw2: usize,
    },
    /// Parallel stripes across direction `(c, s)` with period `p`, phase `ph`, edge sharpness `k`.
    Stripes {
        c: f64,
        s: f64,
        p: f64,
        ph: f64,
        k: f64,
    },
    /// A rotated checkerboard.
    Checker { c: f64, s: f64, p: f64, k: f64 },
    /// Two crossing stripe sets (tartan-like).
    Plaid {
        c: f64,
        s: f64,
        p1: f64,
        p2: f64,
        k: f64,
    },
    /// Linear ramp along `(c, s)` between `lo` and `hi` (projections), or radial from a point.
    Gradient {
        c: f64,
        s: f64,
        lo: f64,
        hi: f64,
        radial: Option<(f64, f64, f64)>,
    },
}

impl Field {
    fn random(rng: &mut Rng, kind: u64, w: usize, h: usize) -> Field {
        let angle = rng.range(0.0, PI);
        let (c, s) = (libm::cos(angle), libm::sin(angle));
        match kind {
            0 => {
                let cell = rng.range(10.0, 70.0);
                let cell2 = cell / rng.range(2.0, 3.5);
                let (gw, gh) = (
                    (w as f64 / cell) as usize + 2,
                    (h as f64 / cell) as usize + 2,
                );
                let (gw2, gh2) = (
                    (w as f64 / cell2) as usize + 2,
                    (h as f64 / cell2) as usize + 2,
                );
                let lattice = (0..gw * gh).map(|_| rng.unit()).collect();
                let lattice2 = (0..gw2 * gh2).map(|_| rng.unit()).collect();
                Field::Noise {
                    cell,
                    lattice,
                    gw,
                    cell2,
                    lattice2,
                    gw2,
                }
            }
            1 => Field::Stripes {
                c,
                s,
                p: rng.range(5.0, 40.0),
                ph: rng.range(0.0, TAU),
                k: rng.range(1.0, 4.0),
            },
            2 => Field::Checker {
                c,
                s,
                p: rng.range(6.0, 48.0),
                k: rng.range(1.0, 6.0),
            },
            3 => Field::Plaid {
                c,
                s,
                p1: rng.range(6.0, 36.0),
                p2: rng.range(6.0, 36.0),
                k: rng.range(1.0, 3.0),
            },
            _ => {
                let radial = rng.chance(0.3).then(|| {
                    let (cx, cy) = (rng.range(0.0, w as f64), rng.range(0.0, h as f64));
                    (cx, cy, libm::sqrt((w * w + h * h) as f64))
                });
                let corners = [
                    (0.0, 0.0),
                    (w as f64, 0.0),
                    (0.0, h as f64),
                    (w as f64, h as f64),
                ];
                let proj: Vec<f64> = corners.iter().map(|&(x, y)| x * c + y * s).collect();
                let lo = proj.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = proj.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                Field::Gradient {
                    c,
                    s,
                    lo,
                    hi,
                    radial,
                }
            }
        }
    }

    fn at(&self, x: f64, y: f64) -> f64 {
        let sharpen = |v: f64, k: f64| (0.5 + k * (v - 0.5)).clamp(0.0, 1.0);
        match self {
            Field::Noise {
                cell,
                lattice,
                gw,
                cell2,
                lattice2,
                gw2,
            } => {
                0.65 * value_noise(lattice, *gw, x / cell, y / cell)
                    + 0.35 * value_noise(lattice2, *gw2, x / cell2, y / cell2)
            }
            Field::Stripes { c, s, p, ph, k } => {
                let u = x * c + y * s;
                sharpen(0.5 + 0.5 * libm::sin(TAU * u / p + ph), *k)
            }
            Field::Checker { c, s, p, k } => {
                let (u, v) = (x * c + y * s, -x * s + y * c);
                (0.5 + k * libm::sin(PI * u / p) * libm::sin(PI * v / p)).clamp(0.0, 1.0)
            }
            Field::Plaid { c, s, p1, p2, k } => {
                let (u, v) = (x * c + y * s, -x * s + y * c);
                let a = sharpen(0.5 + 0.5 * libm::sin(TAU * u / p1), *k);
                let b = sharpen(0.5 + 0.5 * libm::sin(TAU * v / p2), *k);
                0.5 * (a + b)
            }
            Field::Gradient {
                c,
                s,
                lo,
                hi,
                radial,
            } => match radial {
                Some((cx, cy, r)) => {
                    (libm::sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy)) / r).min(1.0)
                }
                None => ((x * c + y * s - lo) / (hi - lo).max(1e-9)).clamp(0.0, 1.0),
            },
        }
    }
}

/// Bilinear value noise with smoothstep weights on a lattice `gw` values wide.
fn value_noise(lattice: &[f64], gw: usize, u: f64, v: f64) -> f64 {
    let (i, j) = (libm::floor(u), libm::floor(v));
    let (fu, fv) = (smoothstep(u - i), smoothstep(v - j));
    let (i, j) = (i as usize, j as usize);
    let at = |a: usize, b: usize| lattice[b * gw + a];
    let top = at(i, j) * (1.0 - fu) + at(i + 1, j) * fu;
    let bottom = at(i, j + 1) * (1.0 - fu) + at(i + 1, j + 1) * fu;
    top * (1.0 - fv) + bottom * fv
}

/// A textured background: one texture between two related colours, often overlaid by a second
/// one, sometimes with per-pixel grain.
fn background(rng: &mut Rng, w: usize, h: usize) -> Canvas {
    let c1 = random_color(rng);
    let amp = rng.range(25.0, 90.0);
    let c2 = near(rng, c1, amp);
    let kind = rng.below(5);
    let base = Field::random(rng, kind, w, h);
    let overlay = rng.chance(0.6).then(|| {
        let kind2 = (kind + 1 + rng.below(4)) % 5;
        let field = Field::random(rng, kind2, w, h);
        let c3 = near(rng, c1, amp);
        let c4 = near(rng, c1, amp);
        (field, c3, c4, rng.range(0.2, 0.5))
    });
    let grain = if rng.chance(0.4) {
        rng.range(2.0, 12.0)
    } else {
        0.0
    };
    let mut px = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let t = base.at(fx, fy);
            let mut c = [0.0; 3];
            for k in 0..3 {
                c[k] = c1[k] + (c2[k] - c1[k]) * t;
            }
            if let Some((field, c3, c4, alpha)) = &overlay {
                let t2 = field.at(fx, fy);
                for k in 0..3 {
                    c[k] = c[k] * (1.0 - alpha) + (c3[k] + (c4[k] - c3[k]) * t2) * alpha;
                }
            }
            if grain > 0.0 {
                let g = rng.range(-grain, grain);
                for v in &mut c {
                    *v += g;
                }
            }
            px.extend_from_slice(&c);
        }
    }
    Canvas {
        width: w,
        height: h,
        px,
    }
}

/// Small clutter: short line segments, dots and lumpy blobs, all far smaller than the smallest
/// target and none of them a closed class outline.
/// `density` scales the number of items (1 = the default density, 0 = none).
fn clutter(rng: &mut Rng, canvas: &mut Canvas, density: f64) {
    let (w, h) = (canvas.width, canvas.height);
    let short = w.min(h) as f64;
    let n = rng.int(4, 4 + (w * h / 3500) as u32);
    let n = libm::round(f64::from(n) * density) as u32;
    for _ in 0..n {
        let (cx, cy) = (rng.range(0.0, w as f64), rng.range(0.0, h as f64));
        let kind = rng.unit();
        let poly: Vec<Pt> = if kind < 0.45 {
            let len = rng.range(0.03, 0.12) * short;
            let hw = rng.range(0.5, 1.5);
            let a = rng.range(0.0, PI);
            let (dx, dy) = (libm::cos(a) * len / 2.0, libm::sin(a) * len / 2.0);
            let (nx, ny) = (-libm::sin(a) * hw, libm::cos(a) * hw);
            vec![
                (cx - dx + nx, cy - dy + ny),
                (cx + dx + nx, cy + dy + ny),
                (cx + dx - nx, cy + dy - ny),
                (cx - dx - nx, cy - dy - ny),
            ]
        } else if kind < 0.75 {
            let r = rng.range(0.8, (0.018 * short).max(1.2));
            regular_polygon((cx, cy), r, 16, 0.0)
        } else {
            let r = rng.range(0.01, 0.025) * short;
            let (a1, a2) = (rng.range(0.0, 0.3), rng.range(0.0, 0.25));
            let (p1, p2) = (rng.range(0.0, TAU), rng.range(0.0, TAU));
            (0..24)
                .map(|i| {
                    let t = TAU * i as f64 / 24.0;
                    let rr =
                        r * (1.0 + a1 * libm::sin(2.0 * t + p1) + a2 * libm::sin(3.0 * t + p2));
                    (cx + rr * libm::cos(t), cy + rr * libm::sin(t))
                })
                .collect()
        };
        let color = random_color(rng);
        let rings = vec![poly];
        let mut mask = Mask::for_bounds(bounds(&rings), w, h);
        mask.fill(&rings);
        canvas.paint(&mask, |_, _| color);
    }
}

/// IoU of two inclusive pixel boxes.
pub(crate) fn iou(a: (usize, usize, usize, usize), b: (usize, usize, usize, usize)) -> f64 {
    let area = |b: (usize, usize, usize, usize)| ((b.2 + 1 - b.0) * (b.3 + 1 - b.1)) as f64;
    let iw = (a.2.min(b.2) + 1).saturating_sub(a.0.max(b.0));
    let ih = (a.3.min(b.3) + 1).saturating_sub(a.1.max(b.1));
    let inter = (iw * ih) as f64;
    inter / (area(a) + area(b) - inter)
}

/// IoU of two continuous boxes `(x0, y0, x1, y1)`.
fn iou_f(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> f64 {
    let iw = (a.2.min(b.2) - a.0.max(b.0)).max(0.0);
    let ih = (a.3.min(b.3) - a.1.max(b.1)).max(0.0);
    let inter = iw * ih;
    let area = |b: (f64, f64, f64, f64)| (b.2 - b.0) * (b.3 - b.1);
    inter / (area(a) + area(b) - inter)
}

/// `class` rotated at random, `size` pixels across, at a random position with at least one pixel
/// of margin to every image edge; `None` if it cannot fit.
fn place(rng: &mut Rng, class: usize, size: f64, w: usize, h: usize) -> Option<Vec<Vec<Pt>>> {
    let unit = shapes::shape(class)?;
    let angle = rng.range(0.0, TAU);
    let (rings, bw, bh) = shapes::sized(&unit, angle, size);
    let (room_x, room_y) = (w as f64 - 2.0 - bw, h as f64 - 2.0 - bh);
    if room_x < 0.0 || room_y < 0.0 {
        return None;
    }
    let t = (1.0 + rng.range(0.0, room_x), 1.0 + rng.range(0.0, room_y));
    Some(shapes::translate(&rings, t))
}

/// Draws the object `rings` with a contrasting fill, soft shading and an optional outline;
/// returns its coverage mask and tight pixel box.
fn draw_object(
    rng: &mut Rng,
    canvas: &mut Canvas,
    rings: &[Vec<Pt>],
    size: f64,
) -> Option<(Mask, (usize, usize, usize, usize))> {
    let (w, h) = (canvas.width, canvas.height);
    let b = bounds(rings);
    let mut mask = Mask::for_bounds(b, w, h);
    mask.fill(rings);
    let bbox = mask.pixel_bounds()?;
    let fill = contrasting(rng, luma(canvas.mean(bbox)), MIN_CONTRAST);
    let outline = rng.chance(0.5).then(|| {
        let hw = rng.range(0.75, (0.025 * size).max(1.0));
        let mut stroke = Mask::for_bounds(b, w, h);
        for ring in rings {
            for piece in stroke_pieces(ring, hw) {
                stroke.fill(&[piece]);
            }
        }
        // Inner half of the stroke only: the outline never grows the object's footprint.
        stroke.intersect(&mask);
        (stroke, contrasting(rng, luma(fill), 70.0))
    });
    let shade_a = rng.range(0.0, TAU);
    let shade = rng.range(0.0, 30.0) / size.max(1.0);
    let (cx, cy) = ((b.0 + b.2) / 2.0, (b.1 + b.3) / 2.0);
    let (sc, ss) = (libm::cos(shade_a) * shade, libm::sin(shade_a) * shade);
    canvas.paint(&mask, |x, y| {
        let d = (x - cx) * sc + (y - cy) * ss;
        fill.map(|v| v + d)
    });
    if let Some((stroke, color)) = &outline {
        canvas.paint(stroke, |_, _| *color);
    }
    Some((mask, bbox))
}

/// Renders picture `index` of the dataset of `seed`.
/// Fails only if the geometry cannot be drawn, which validated options rule out.
pub(crate) fn render(seed: u64, index: u64, p: &SceneParams) -> Result<Scene> {
    let mut rng = Rng::for_image(seed, index);
    let w = rng.int(p.min_size, p.max_size) as usize;
    let h = rng.int(p.min_size, p.max_size) as usize;
    let n = NAMES.len();
    let class = p.class.unwrap_or_else(|| rng.below(n as u64) as usize) % n;
    let want_distractor = rng.chance(p.distractor_share);
    let mut canvas = background(&mut rng, w, h);
    clutter(&mut rng, &mut canvas, p.clutter);

    let short = w.min(h) as f64;
    let size = rng.range(p.scale.0, p.scale.1) * short;
    // `size <= MAX_SCALE * short` and validated sizes (at least MIN_SIZE) guarantee a fit.
    let target = place(&mut rng, class, size, w, h).ok_or_else(|| {
        Error::Invalid(format!(
            "synth: a {size:.1} px object does not fit a {w}x{h} image"
        ))
    })?;
    let mut objects = Vec::with_capacity(2);

    // Mask of the target before drawing anything, so the distractor can avoid it.
    let mut target_mask = Mask::for_bounds(bounds(&target), w, h);
    target_mask.fill(&target);
    let target_box_f = bounds(&target);

    if want_distractor {
        let other = {
            let d = rng.below(n as u64 - 1) as usize;
            if d >= class {
                d + 1
            } else {
                d
            }
        };
        let mut dsize = size * rng.range(DISTRACTOR_RATIO.0, DISTRACTOR_RATIO.1);
        'rounds: for _ in 0..4 {
            for _ in 0..100 {
                let Some(rings) = place(&mut rng, other, dsize, w, h) else {
                    break;
                };
                if iou_f(bounds(&rings), target_box_f) > MAX_IOU {
                    continue;
                }
                let mut m = Mask::for_bounds(bounds(&rings), w, h);
                m.fill(&rings);
                let (Some(db), Some(tb)) = (m.pixel_bounds(), target_mask.pixel_bounds()) else {
                    continue;
                };
                if iou(db, tb) > MAX_IOU || m.touches(&target_mask) {
                    continue;
                }
                if let Some((mask, bbox)) = draw_object(&mut rng, &mut canvas, &rings, dsize) {
                    objects.push(DrawnObject {
                        class: other,
                        distractor: true,
                        mask,
                        bbox,
                    });
                }
                break 'rounds;
            }
            // No room at this size (a large target in a small picture): try smaller, but not
            // down to clutter size.
            dsize *= 0.75;
            if dsize < 6.0 {
                break;
            }
        }
    }
    let (mask, bbox) = draw_object(&mut rng, &mut canvas, &target, size)
        .ok_or_else(|| Error::Invalid(format!("synth: image {index}: empty target")))?;
    objects.insert(
        0,
        DrawnObject {
            class,
            distractor: false,
            mask,
            bbox,
        },
    );
    Ok(Scene { canvas, objects })
}
