//! Anti-aliased rasterisation of polygons into supersampled masks, and compositing.
//!
//! Every drawable thing (objects, outlines, clutter) is a set of closed polygons filled with the
//! even-odd rule, so that holes (the ring) need no special case. A [`Mask`] records which of the
//! `SS × SS` sample points of each pixel are inside; the coverage of a pixel is the fraction of
//! its samples that are set. Sample points sit at `(px + (i + 0.5) / SS, py + (j + 0.5) / SS)` in
//! continuous image coordinates, where pixel `(px, py)` spans `[px, px + 1) × [py, py + 1)`.
//!
//! Only f64 arithmetic with a fixed evaluation order is used (no threads inside an image, no
//! platform maths), so the masks are identical on every machine.

/// Samples per pixel side (16 samples per pixel).
pub(crate) const SS: usize = 4;

/// A 2-D point in continuous image coordinates (x right, y down).
pub(crate) type Pt = (f64, f64);

/// Axis-aligned bounds of points, as `(xmin, ymin, xmax, ymax)`.
pub(crate) fn bounds<'a>(rings: impl IntoIterator<Item = &'a Vec<Pt>>) -> (f64, f64, f64, f64) {
    let mut b = (
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    );
    for ring in rings {
        for &(x, y) in ring {
            b.0 = b.0.min(x);
            b.1 = b.1.min(y);
            b.2 = b.2.max(x);
            b.3 = b.3.max(y);
        }
    }
    b
}

/// Supersampled coverage of a rectangular pixel region of an image.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mask {
    /// Left pixel column of the region.
    pub x0: usize,
    /// Top pixel row of the region.
    pub y0: usize,
    /// Region width in pixels.
    pub w: usize,
    /// Region height in pixels.
    pub h: usize,
    /// `w·SS × h·SS` samples, row-major, 1 = inside.
    bits: Vec<u8>,
}

impl Mask {
    /// An empty mask covering the pixels that the continuous box `b` touches, clipped to an
    /// image of `width × height`.
    pub(crate) fn for_bounds(b: (f64, f64, f64, f64), width: usize, height: usize) -> Mask {
        let clip = |v: f64, hi: usize| -> usize {
            if v.is_nan() || v <= 0.0 {
                0
            } else {
                (v as usize).min(hi)
            }
        };
        let x0 = clip(libm::floor(b.0), width);
        let y0 = clip(libm::floor(b.1), height);
        let x1 = clip(libm::ceil(b.2), width).max(x0);
        let y1 = clip(libm::ceil(b.3), height).max(y0);
        Mask {
            x0,
            y0,
            w: x1 - x0,
            h: y1 - y0,
            bits: vec![0; (x1 - x0) * SS * (y1 - y0) * SS],
        }
    }

    /// Sets (ORs in) every sample inside `rings` (even-odd rule across all rings together).
    pub(crate) fn fill(&mut self, rings: &[Vec<Pt>]) {
        if self.w == 0 || self.h == 0 {
            return;
        }
        let (_, ymin, _, ymax) = bounds(rings);
        let sw = self.w * SS;
        let s = SS as f64;
        // Sample rows whose centres can be inside: (y0*SS + r + 0.5) / SS in [ymin, ymax].
        let first = libm::ceil(ymin * s - 0.5 - (self.y0 * SS) as f64).max(0.0) as usize;
        let last = (libm::floor(ymax * s - 0.5 - (self.y0 * SS) as f64) + 1.0)
            .clamp(0.0, (self.h * SS) as f64) as usize;
        let mut xs: Vec<f64> = Vec::new();
        for r in first..last {
            let y = ((self.y0 * SS + r) as f64 + 0.5) / s;
            xs.clear();
            for ring in rings {
                let n = ring.len();
                for i in 0..n {
                    let (ax, ay) = ring[i];
                    let (bx, by) = ring[(i + 1) % n];
                    // Half-open rule: an edge counts when y is in [min y, max y), so that shared
                    // vertices are crossed exactly once.
                    if (ay <= y && y < by) || (by <= y && y < ay) {
                        xs.push(ax + (y - ay) * (bx - ax) / (by - ay));
                    }
                }
            }
            xs.sort_by(f64::total_cmp);
            let row = &mut self.bits[r * sw..(r + 1) * sw];
            for pair in xs.chunks_exact(2) {
                // Sample columns c with centre (x0*SS + c + 0.5)/SS in [pair[0], pair[1]).
                let off = (self.x0 * SS) as f64;
                let c0 = (libm::ceil(pair[0] * s - 0.5) - off).clamp(0.0, sw as f64) as usize;
                let c1 = (libm::ceil(pair[1] * s - 0.5) - off).clamp(0.0, sw as f64) as usize;
                for b in &mut row[c0..c1.max(c0)] {
                    *b = 1;
                }
            }
        }
    }

    /// Keeps only the samples also set in `other` (same region required).
    pub(crate) fn intersect(&mut self, other: &Mask) {
        debug_assert_eq!(
            (self.x0, self.y0, self.w, self.h),
            (other.x0, other.y0, other.w, other.h)
        );
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= *b;
        }
    }

    /// Number of set samples of region pixel `(px, py)`, 0..=SS².
    pub(crate) fn count(&self, px: usize, py: usize) -> usize {
        let sw = self.w * SS;
        (0..SS)
            .map(|j| {
                let start = (py * SS + j) * sw + px * SS;
                self.bits[start..start + SS]
                    .iter()
                    .map(|&b| b as usize)
                    .sum::<usize>()
            })
            .sum()
    }

    /// Whether image pixel `(x, y)` has at least one sample set.
    pub(crate) fn covers(&self, x: usize, y: usize) -> bool {
        x >= self.x0
            && y >= self.y0
            && x < self.x0 + self.w
            && y < self.y0 + self.h
            && self.count(x - self.x0, y - self.y0) > 0
    }

    /// Tight pixel bounds `(xmin, ymin, xmax, ymax)` (0-based, inclusive) of the pixels with any
    /// sample set, or `None` when nothing is set.
    pub(crate) fn pixel_bounds(&self) -> Option<(usize, usize, usize, usize)> {
        let mut b: Option<(usize, usize, usize, usize)> = None;
        for py in 0..self.h {
            for px in 0..self.w {
                if self.count(px, py) > 0 {
                    let (x, y) = (self.x0 + px, self.y0 + py);
                    b = Some(match b {
                        None => (x, y, x, y),
                        Some((a, c, d, e)) => (a.min(x), c.min(y), d.max(x), e.max(y)),
                    });
                }
            }
        }
        b
    }

    /// Whether any pixel has samples set in both masks.
    pub(crate) fn touches(&self, other: &Mask) -> bool {
        let x0 = self.x0.max(other.x0);
        let y0 = self.y0.max(other.y0);
        let x1 = (self.x0 + self.w).min(other.x0 + other.w);
        let y1 = (self.y0 + self.h).min(other.y0 + other.h);
        (y0..y1).any(|y| (x0..x1).any(|x| self.covers(x, y) && other.covers(x, y)))
    }
}

/// The polygons of a stroke of half-width `hw` along the closed outline `ring`: one quad per edge
/// and an octagon at every vertex for the joins. They overlap, so fill them one at a time.
pub(crate) fn stroke_pieces(ring: &[Pt], hw: f64) -> Vec<Vec<Pt>> {
    let n = ring.len();
    let mut pieces = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (ax, ay) = ring[i];
        let (bx, by) = ring[(i + 1) % n];
        let len = libm::sqrt((bx - ax) * (bx - ax) + (by - ay) * (by - ay));
        if len > 1e-9 {
            let (nx, ny) = (-(by - ay) / len * hw, (bx - ax) / len * hw);
            pieces.push(vec![
                (ax + nx, ay + ny),
                (bx + nx, by + ny),
                (bx - nx, by - ny),
                (ax - nx, ay - ny),
            ]);
        }
        pieces.push(regular_polygon((ax, ay), hw, 8, 0.0));
    }
    pieces
}

/// A regular `n`-gon of circumradius `r` around `c`, first vertex at angle `phase`.
pub(crate) fn regular_polygon(c: Pt, r: f64, n: usize, phase: f64) -> Vec<Pt> {
    (0..n)
        .map(|i| {
            let a = phase + std::f64::consts::TAU * i as f64 / n as f64;
            (c.0 + r * libm::cos(a), c.1 + r * libm::sin(a))
        })
        .collect()
}

/// An RGB image with f64 channels in [0, 255], composited in place and quantised at the end.
#[derive(Debug, Clone)]
pub(crate) struct Canvas {
    pub width: usize,
    pub height: usize,
    /// `width × height × 3`, row-major RGB.
    pub px: Vec<f64>,
}

impl Canvas {
    /// Paints `mask` with the colour `color(x, y)` (evaluated at pixel centres), weighted by the
    /// pixel's coverage: exact box-filter anti-aliasing of the supersampled shape.
    pub(crate) fn paint(&mut self, mask: &Mask, mut color: impl FnMut(f64, f64) -> [f64; 3]) {
        let full = (SS * SS) as f64;
        for py in 0..mask.h {
            for px in 0..mask.w {
                let n = mask.count(px, py);
                if n == 0 {
                    continue;
                }
                let (x, y) = (mask.x0 + px, mask.y0 + py);
                let a = n as f64 / full;
                let c = color(x as f64 + 0.5, y as f64 + 0.5);
                let o = (y * self.width + x) * 3;
                for (p, c) in self.px[o..o + 3].iter_mut().zip(c) {
                    *p = *p * (1.0 - a) + c * a;
                }
            }
        }
    }

    /// Mean colour of the pixels in the inclusive pixel box, clipped to the image.
    pub(crate) fn mean(&self, b: (usize, usize, usize, usize)) -> [f64; 3] {
        let mut s = [0.0; 3];
        let mut n = 0.0;
        for y in b.1..=b.3.min(self.height - 1) {
            for x in b.0..=b.2.min(self.width - 1) {
                let o = (y * self.width + x) * 3;
                for (s, p) in s.iter_mut().zip(&self.px[o..o + 3]) {
                    *s += p;
                }
                n += 1.0;
            }
        }
        if n == 0.0 {
            return [127.5; 3];
        }
        s.map(|v| v / n)
    }

    /// The image as 8-bit RGB, rounded and clamped.
    pub(crate) fn to_rgb8(&self) -> Vec<u8> {
        self.px
            .iter()
            .map(|&v| libm::round(v.clamp(0.0, 255.0)) as u8)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_coverage_is_exact() {
        // A square from (2, 3) to (6, 5) covers 4×2 pixels fully and nothing else.
        let sq = vec![vec![(2.0, 3.0), (6.0, 3.0), (6.0, 5.0), (2.0, 5.0)]];
        let mut m = Mask::for_bounds(bounds(&sq), 10, 10);
        m.fill(&sq);
        assert_eq!(m.pixel_bounds(), Some((2, 3, 5, 4)));
        for y in 0..10 {
            for x in 0..10 {
                let inside = (2..6).contains(&x) && (3..5).contains(&y);
                assert_eq!(m.covers(x, y), inside, "({x}, {y})");
            }
        }
        // Half-pixel edge: half the samples.
        let half = vec![vec![(1.0, 1.0), (2.5, 1.0), (2.5, 2.0), (1.0, 2.0)]];
        let mut m = Mask::for_bounds(bounds(&half), 10, 10);
        m.fill(&half);
        assert_eq!(m.count(2 - m.x0, 1 - m.y0), SS * SS / 2);
    }

    #[test]
    fn even_odd_hole_and_clipping() {
        let outer = regular_polygon((10.0, 10.0), 8.0, 64, 0.0);
        let inner = regular_polygon((10.0, 10.0), 4.0, 64, 0.0);
        let rings = vec![outer, inner];
        let mut m = Mask::for_bounds(bounds(&rings), 30, 30);
        m.fill(&rings);
        assert!(!m.covers(10, 10));
        assert!(m.covers(10, 4));
        // A shape partly outside the image is clipped, not wrapped or panicking.
        let off = vec![vec![(-5.0, -5.0), (3.0, -5.0), (3.0, 3.0), (-5.0, 3.0)]];
        let mut m = Mask::for_bounds(bounds(&off), 4, 4);
        m.fill(&off);
        assert_eq!(m.pixel_bounds(), Some((0, 0, 2, 2)));
    }
}
