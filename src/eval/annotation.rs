//! Pascal VOC XML annotations (the format of VOC and of ImageNet's localization boxes), read
//! tolerantly: any root element, extra fields anywhere, whitespace around values, float
//! coordinates (`48.0`), a missing `<size>`. What cannot be used is an error that names the
//! file, the object and the field.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// A box as the XML gives it, in the original image's pixel coordinates (VOC: 1-based,
/// inclusive; the protocol scales these values as they are).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BoundingBox {
    /// `<xmin>`.
    pub xmin: f64,
    /// `<ymin>`.
    pub ymin: f64,
    /// `<xmax>`.
    pub xmax: f64,
    /// `<ymax>`.
    pub ymax: f64,
}

impl BoundingBox {
    /// `[xmin, ymin, xmax, ymax]`.
    pub fn to_array(&self) -> [f64; 4] {
        [self.xmin, self.ymin, self.xmax, self.ymax]
    }
}

/// One `<object>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    /// `<name>`, trimmed: a class name (VOC) or a WordNet id (ImageNet).
    pub name: String,
    /// `<distractor>1</distractor>` (written by `agcam synth`): not part of the ground truth.
    pub distractor: bool,
    /// `<bndbox>`.
    pub bbox: BoundingBox,
}

/// One annotation file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Annotation {
    /// The file it was read from.
    pub path: PathBuf,
    /// `<size>`: (width, height) in pixels, when present and non-zero.
    pub size: Option<(u32, u32)>,
    /// Every `<object>` with a box, in file order.
    pub objects: Vec<Object>,
}

impl Annotation {
    /// The objects of the ground truth: all but distractors, in file order (the first is the
    /// target).
    pub fn targets(&self) -> impl Iterator<Item = &Object> {
        self.objects.iter().filter(|o| !o.distractor)
    }

    /// Ground-truth boxes that cannot be scored: a minimum above its maximum (`xmin > xmax` or
    /// `ymin > ymax`). One line per box, naming the object.
    pub fn inverted_boxes(&self) -> Vec<String> {
        self.describe_boxes(|b| b.xmin > b.xmax || b.ymin > b.ymax)
    }

    /// Boxes that reach outside the picture of `<size>` (VOC's 1-based pixel indices: from 0
    /// to the width or height inclusive); they are scored clipped to the picture. Empty when the
    /// annotation gives no size.
    pub fn boxes_outside(&self) -> Vec<String> {
        let Some((w, h)) = self.size else {
            return Vec::new();
        };
        let (w, h) = (f64::from(w), f64::from(h));
        self.describe_boxes(|b| b.xmin < 0.0 || b.ymin < 0.0 || b.xmax > w || b.ymax > h)
            .into_iter()
            .map(|line| format!("{line} outside the {w}×{h} picture"))
            .collect()
    }

    fn describe_boxes(&self, bad: impl Fn(&BoundingBox) -> bool) -> Vec<String> {
        self.objects
            .iter()
            .enumerate()
            .filter(|(_, o)| bad(&o.bbox))
            .map(|(i, o)| {
                let b = &o.bbox;
                format!(
                    "object {} ({}): box xmin {} ymin {} xmax {} ymax {}",
                    i + 1,
                    o.name,
                    b.xmin,
                    b.ymin,
                    b.xmax,
                    b.ymax
                )
            })
            .collect()
    }
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name().eq_ignore_ascii_case(name))
}

/// All the text inside an element (CDATA and text around comments included), trimmed.
fn text_of(node: roxmltree::Node) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<String>()
        .trim()
        .to_string()
}

/// Reads and parses the annotation file at `path`.
pub fn read_annotation(path: &Path) -> Result<Annotation> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    parse_annotation(&text, path)
}

/// Parses Pascal VOC XML; `path` names the file in errors.
///
/// Objects without `<bndbox>` are an error, as are a `<bndbox>` without one of its four
/// fields, a value that is not a finite number, and a `<size>` field that is not a
/// non-negative number. `<size>` missing, or with a zero width or height, gives `size: None`
/// (the image file then says how large it is). `<distractor>` is true for `1` or `true`.
pub fn parse_annotation(text: &str, path: &Path) -> Result<Annotation> {
    let err = |msg: String| Error::Invalid(format!("{}: {msg}", path.display()));
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options)
        .map_err(|e| err(format!("not valid XML: {e}")))?;
    let root = doc.root_element();
    let number = |node: roxmltree::Node, what: &str| -> Result<f64> {
        let t = text_of(node);
        t.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| err(format!("{what}: `{t}` is not a number")))
    };
    let size = match child(root, "size") {
        None => None,
        Some(size) => {
            let mut dims = [0u32; 2];
            for (d, field) in dims.iter_mut().zip(["width", "height"]) {
                if let Some(n) = child(size, field) {
                    let v = number(n, &format!("<size><{field}>"))?;
                    if v < 0.0 || v > u32::MAX as f64 {
                        return Err(err(format!(
                            "<size><{field}>: {v} is not a valid image size"
                        )));
                    }
                    *d = v.round() as u32;
                }
            }
            (dims[0] > 0 && dims[1] > 0).then_some((dims[0], dims[1]))
        }
    };
    let mut objects = Vec::new();
    let elements = root
        .children()
        .filter(|c| c.is_element() && c.tag_name().name().eq_ignore_ascii_case("object"));
    for (i, object) in elements.enumerate() {
        let name = child(object, "name").map(text_of).unwrap_or_default();
        let label = if name.is_empty() {
            format!("object {}", i + 1)
        } else {
            format!("object {} ({name})", i + 1)
        };
        if name.is_empty() {
            return Err(err(format!("{label}: missing <name>")));
        }
        let bndbox =
            child(object, "bndbox").ok_or_else(|| err(format!("{label}: missing <bndbox>")))?;
        let mut v = [0.0f64; 4];
        for (slot, field) in v.iter_mut().zip(["xmin", "ymin", "xmax", "ymax"]) {
            let node = child(bndbox, field)
                .ok_or_else(|| err(format!("{label}: missing <bndbox><{field}>")))?;
            *slot = number(node, &format!("{label}: <bndbox><{field}>"))?;
        }
        let distractor = child(object, "distractor").is_some_and(|d| {
            let t = text_of(d);
            t == "1" || t.eq_ignore_ascii_case("true")
        });
        objects.push(Object {
            name,
            distractor,
            bbox: BoundingBox {
                xmin: v[0],
                ymin: v[1],
                xmax: v[2],
                ymax: v[3],
            },
        });
    }
    Ok(Annotation {
        path: path.to_path_buf(),
        size,
        objects,
    })
}
