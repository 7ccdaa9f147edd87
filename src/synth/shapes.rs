//! The object classes as polygons in a unit frame, and their placement in an image.
//!
//! Classes differ in form only: every class is drawn in every colour, at every rotation and at
//! every scale, so a classifier has to look at the outline. Curved outlines are polygons with
//! enough vertices (128 on a full circle) to be smooth at the largest sizes.

use std::f64::consts::{FRAC_PI_2, PI, TAU};

use super::raster::{bounds, regular_polygon, Pt};

/// Class names, index = class id. Kept in sync with [`shape`].
pub(crate) const NAMES: [&str; 10] = [
    "circle", "ring", "triangle", "square", "star", "cross", "crescent", "arrow", "heart",
    "letter_t",
];

/// Vertices on a full circle.
const ROUND: usize = 128;

/// The polygons (even-odd rule) of class `class` in a unit frame roughly spanning [-1, 1]².
/// Returns `None` for an unknown class.
pub(crate) fn shape(class: usize) -> Option<Vec<Vec<Pt>>> {
    let poly = |pts: &[Pt]| pts.to_vec();
    Some(match class {
        0 => vec![regular_polygon((0.0, 0.0), 1.0, ROUND, 0.0)],
        1 => vec![
            regular_polygon((0.0, 0.0), 1.0, ROUND, 0.0),
            regular_polygon((0.0, 0.0), 0.55, ROUND, 0.0),
        ],
        2 => vec![regular_polygon((0.0, 0.0), 1.0, 3, -FRAC_PI_2)],
        3 => vec![regular_polygon((0.0, 0.0), 1.0, 4, PI / 4.0)],
        4 => vec![star(5, 1.0, 0.4)],
        5 => {
            let (a, l) = (0.24, 1.0);
            vec![poly(&[
                (-a, -l),
                (a, -l),
                (a, -a),
                (l, -a),
                (l, a),
                (a, a),
                (a, l),
                (-a, l),
                (-a, a),
                (-l, a),
                (-l, -a),
                (-a, -a),
            ])]
        }
        6 => vec![crescent(0.5, 0.85)],
        7 => vec![poly(&[
            (-1.0, -0.16),
            (0.15, -0.16),
            (0.15, -0.6),
            (1.0, 0.0),
            (0.15, 0.6),
            (0.15, 0.16),
            (-1.0, 0.16),
        ])],
        8 => vec![heart()],
        9 => vec![poly(&[
            (-0.85, -1.0),
            (0.85, -1.0),
            (0.85, -0.58),
            (0.21, -0.58),
            (0.21, 1.0),
            (-0.21, 1.0),
            (-0.21, -0.58),
            (-0.85, -0.58),
        ])],
        _ => return None,
    })
}

/// A star with `points` tips at radius `outer` and notches at radius `inner`.
fn star(points: usize, outer: f64, inner: f64) -> Vec<Pt> {
    (0..2 * points)
        .map(|i| {
            let r = if i % 2 == 0 { outer } else { inner };
            let a = -FRAC_PI_2 + PI * i as f64 / points as f64;
            (r * libm::cos(a), r * libm::sin(a))
        })
        .collect()
}

/// The unit disc minus a disc of radius `r` centred at `(d, 0)`: the left-hand arc of the unit
/// circle between the two intersection points, back along the cutting circle.
fn crescent(d: f64, r: f64) -> Vec<Pt> {
    // Intersection: x² + y² = 1 and (x - d)² + y² = r²  =>  x = (1 - r² + d²) / (2d).
    let xi = (1.0 - r * r + d * d) / (2.0 * d);
    let yi = libm::sqrt(1.0 - xi * xi);
    let a_outer = libm::atan2(yi, xi); // from +a_outer to 2π - a_outer through π
    let a_cut = libm::atan2(yi, xi - d); // on the cutting circle, from 2π - a_cut down to a_cut
    let n = ROUND / 2;
    let mut pts = Vec::with_capacity(2 * n + 2);
    for i in 0..=n {
        let a = a_outer + (TAU - 2.0 * a_outer) * i as f64 / n as f64;
        pts.push((libm::cos(a), libm::sin(a)));
    }
    for i in 1..n {
        let a = (TAU - a_cut) - (TAU - 2.0 * a_cut) * i as f64 / n as f64;
        pts.push((d + r * libm::cos(a), r * libm::sin(a)));
    }
    pts
}

/// The classic parametric heart, x = 16 sin³t, y = 13 cos t − 5 cos 2t − 2 cos 3t − cos 4t,
/// scaled to about [-1, 1] and flipped so that the point is at the bottom (y grows downwards).
fn heart() -> Vec<Pt> {
    (0..ROUND)
        .map(|i| {
            let t = TAU * i as f64 / ROUND as f64;
            let s = libm::sin(t);
            let x = 16.0 * s * s * s;
            let y = 13.0 * libm::cos(t)
                - 5.0 * libm::cos(2.0 * t)
                - 2.0 * libm::cos(3.0 * t)
                - libm::cos(4.0 * t);
            (x / 17.0, -(y + 2.5) / 15.0)
        })
        .collect()
}

/// Rotates by `angle` (radians) about the origin, scales by `scale`, and translates by `t`.
pub(crate) fn transform(rings: &[Vec<Pt>], angle: f64, scale: f64, t: Pt) -> Vec<Vec<Pt>> {
    let (s, c) = (libm::sin(angle), libm::cos(angle));
    rings
        .iter()
        .map(|ring| {
            ring.iter()
                .map(|&(x, y)| (t.0 + scale * (c * x - s * y), t.1 + scale * (s * x + c * y)))
                .collect()
        })
        .collect()
}

/// `shape` rotated by `angle` and scaled so that its bounding box's longer side is `size`
/// pixels, with its bounding box's top-left corner at the origin. Also returns the box's
/// width and height.
pub(crate) fn sized(rings: &[Vec<Pt>], angle: f64, size: f64) -> (Vec<Vec<Pt>>, f64, f64) {
    let unit = transform(rings, angle, 1.0, (0.0, 0.0));
    let (x0, y0, x1, y1) = bounds(&unit);
    let k = size / (x1 - x0).max(y1 - y0);
    let placed = transform(rings, angle, k, (-x0 * k, -y0 * k));
    (placed, (x1 - x0) * k, (y1 - y0) * k)
}

/// Moves every point by `t`.
pub(crate) fn translate(rings: &[Vec<Pt>], t: Pt) -> Vec<Vec<Pt>> {
    rings
        .iter()
        .map(|r| r.iter().map(|&(x, y)| (x + t.0, y + t.1)).collect())
        .collect()
}
