//! `agcam synth`: a deterministic synthetic dataset of labelled pictures with exact boxes, for
//! training the demo model and for running the localization and faithfulness protocols of
//! `docs/method.md` §4 on data whose ground truth is known exactly.
//!
//! # What a picture holds
//!
//! * A textured background (smooth value noise, stripes, checkerboards, plaid, linear or radial
//!   gradients, often two of them blended, sometimes with grain) in two or three related colours.
//! * Clutter: short line segments, dots and lumpy blobs, all much smaller than the smallest
//!   object and none of them a class outline ([`SynthOptions::clutter`] scales how many).
//! * The **target**: one object of one of the [`CLASSES`], which differ in form only. Its size
//!   (the longer side of its bounding box) is 15–60 % of the picture's shorter side by default
//!   ([`SynthOptions::scale_min`], [`SynthOptions::scale_max`]); its rotation
//!   is uniform; it lies fully inside the picture with at least one pixel of margin; its fill
//!   colour is random but differs in luma by at least 80/255 from the mean background under it;
//!   half of the objects get an outline (inside the shape, so it never grows the footprint), and
//!   the fill carries a faint linear shading.
//! * With probability [`SynthOptions::distractor_share`], a **distractor**: an object of another
//!   class, 40–65 % of the target's size (so the target is always the largest object: that is what
//!   makes "the label" well defined), whose pixels never touch the target's and whose box has an
//!   IoU of at most 0.1 with the target's box. If no such place is found even at a smaller size,
//!   the picture has no distractor; [`SynthSummary`] reports the share actually reached.
//!
//! Width and height are drawn independently from `[min_size, max_size]`, so most pictures are
//! not square.
//!
//! # Boxes
//!
//! A box is the tight bound of the pixels the object is drawn on: every pixel with any of its
//! 4×4 anti-aliasing samples inside the shape. Coordinates follow Pascal VOC: **1-based and
//! inclusive**, so the pixel in column `i` (0-based) has x = `i + 1`, and a box spans
//! `xmax − xmin + 1` pixels. [`BBox`] holds exactly what the XML says.
//!
//! # Files
//!
//! [`Layout::Voc`]: `DIR/JPEGImages/<id>.png` (lossless PNG, despite VOC's folder name),
//! `DIR/Annotations/<id>.xml` (Pascal VOC XML, target object first with
//! `<distractor>0</distractor>`, then the distractor, if any, with `<distractor>1</distractor>`),
//! and `DIR/labels.txt` (one class name per line; line index = class index).
//!
//! [`Layout::Imagenet`] (the Kaggle ILSVRC layout): `DIR/Data/CLS-LOC/val/<id>.png`,
//! `DIR/Annotations/CLS-LOC/val/<id>.xml` with `<name>` a synthetic WordNet-like id ([`wnid`],
//! `s0000003`), `DIR/LOC_synset_mapping.txt` (`s0000003 square`, in class order), and
//! `labels.txt` as well.
//!
//! Ids are `synth_000000`, `synth_000001`, … (0-based picture index, six digits or more).
//!
//! # Determinism
//!
//! Picture `i` of seed `s` is a pure function of `(s, i, min_size, max_size, distractor_share)`:
//! its random stream is SplitMix64 seeded from `(s, i)`, all geometry and shading is f64
//! arithmetic in a fixed order with the portable `libm` functions, and PNG encoding is
//! deterministic. Pictures are generated in parallel, but no picture depends on another, so the
//! files are byte-identical on every run and machine whatever the thread count.

mod raster;
pub(crate) mod rng;
mod scene;
mod shapes;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::error::{Error, Result};

/// Object class names; the index in this list is the class index (and the logit index of the
/// demo model).
pub const CLASSES: &[&str] = &shapes::NAMES;

/// Smallest accepted `min_size`: below it the smallest objects would be a few pixels wide.
pub const MIN_SIZE: u32 = 32;
/// Largest accepted `max_size`: a guard against typos that would fill the disk.
pub const MAX_SIZE: u32 = 4096;
/// Default target size range (the longer side of the object's box, as a fraction of the
/// picture's shorter side).
pub const DEFAULT_SCALE: (f64, f64) = (0.15, 0.6);
/// Smallest accepted `scale_min`.
pub const MIN_SCALE: f64 = 0.05;
/// Largest accepted `scale_max`: the object must fit with a pixel of margin on each side.
pub const MAX_SCALE: f64 = 0.9;

/// Folder layout of a generated dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Pascal VOC: `JPEGImages/`, `Annotations/`, `labels.txt`.
    #[default]
    Voc,
    /// Kaggle ImageNet localization: `Data/CLS-LOC/val/`, `Annotations/CLS-LOC/val/`,
    /// `LOC_synset_mapping.txt`.
    Imagenet,
}

impl Layout {
    /// Folder of the images, relative to the dataset root.
    pub fn image_dir(self) -> &'static str {
        match self {
            Layout::Voc => "JPEGImages",
            Layout::Imagenet => "Data/CLS-LOC/val",
        }
    }

    /// Folder of the XML annotations, relative to the dataset root.
    pub fn annotation_dir(self) -> &'static str {
        match self {
            Layout::Voc => "Annotations",
            Layout::Imagenet => "Annotations/CLS-LOC/val",
        }
    }
}

impl FromStr for Layout {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "voc" => Ok(Layout::Voc),
            "imagenet" => Ok(Layout::Imagenet),
            _ => Err(Error::Invalid(format!(
                "unknown layout `{s}`: expected `voc` or `imagenet`"
            ))),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Voc => "voc",
            Layout::Imagenet => "imagenet",
        })
    }
}

/// Refuses a non-empty `opts.out` unless `opts.replace`, in which case it deletes what a set of
/// either layout consists of there.
fn make_room(opts: &SynthOptions) -> Result<()> {
    let out = &opts.out;
    let entries = match std::fs::read_dir(out) {
        Ok(entries) => entries.count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(out, e)),
    };
    if entries == 0 {
        return Ok(());
    }
    if !opts.replace {
        return Err(Error::Invalid(format!(
            "synth: {} is not empty ({entries} entries): a new set written there would mix with \
             what is there; choose an empty folder, or pass --replace to delete the pictures, \
             annotations and label files of a previous set first",
            out.display()
        )));
    }
    for layout in [Layout::Voc, Layout::Imagenet] {
        for dir in [layout.image_dir(), layout.annotation_dir()] {
            match std::fs::remove_dir_all(out.join(dir)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(out.join(dir), e))
                }
                _ => {}
            }
        }
    }
    for file in ["labels.txt", "LOC_synset_mapping.txt"] {
        match std::fs::remove_file(out.join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(out.join(file), e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// What to generate and where.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    /// Dataset root; created if missing. It must be empty unless `replace` is set: a set written
    /// over another would mix their pictures.
    pub out: PathBuf,
    /// Number of pictures (at least 1).
    pub count: usize,
    /// Seed of the whole dataset; picture `i` depends only on `(seed, i)` and the sizes/share.
    pub seed: u64,
    /// Folder layout.
    pub layout: Layout,
    /// Smallest picture side in pixels (at least [`MIN_SIZE`]).
    pub min_size: u32,
    /// Largest picture side in pixels (at most [`MAX_SIZE`], at least `min_size`).
    pub max_size: u32,
    /// Probability in [0, 1] that a picture also holds a distractor object.
    pub distractor_share: f64,
    /// Smallest target size as a fraction of the shorter side (default 0.15, at least
    /// [`MIN_SCALE`]).
    pub scale_min: f64,
    /// Largest target size as a fraction of the shorter side (default 0.6, at most
    /// [`MAX_SCALE`]).
    pub scale_max: f64,
    /// Clutter density: 1 is the default, 0 none, 2 twice as many items (at most 10).
    pub clutter: f64,
    /// Worker threads; 0 = one per available core. Does not change the output.
    pub threads: usize,
    /// Write into a folder that is not empty: first delete the picture and annotation folders
    /// and the label files of a set there (other files are left alone).
    pub replace: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            out: PathBuf::from("synth"),
            count: 1000,
            seed: 0,
            layout: Layout::Voc,
            min_size: 160,
            max_size: 400,
            distractor_share: 0.3,
            scale_min: DEFAULT_SCALE.0,
            scale_max: DEFAULT_SCALE.1,
            clutter: 1.0,
            threads: 0,
            replace: false,
        }
    }
}

impl SynthOptions {
    /// The defaults, writing to `out`.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        SynthOptions {
            out: out.into(),
            ..SynthOptions::default()
        }
    }

    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(format!("synth: {msg}")));
        if self.count == 0 {
            return bad("--count must be at least 1".into());
        }
        if self.min_size < MIN_SIZE {
            return bad(format!("--min-size {} is below {MIN_SIZE}", self.min_size));
        }
        if self.max_size > MAX_SIZE {
            return bad(format!("--max-size {} is above {MAX_SIZE}", self.max_size));
        }
        if self.min_size > self.max_size {
            return bad(format!(
                "--min-size {} is larger than --max-size {}",
                self.min_size, self.max_size
            ));
        }
        if !(0.0..=1.0).contains(&self.distractor_share) {
            return bad(format!(
                "--distractor-share {} is not in [0, 1]",
                self.distractor_share
            ));
        }
        if !(MIN_SCALE..=MAX_SCALE).contains(&self.scale_min)
            || !(MIN_SCALE..=MAX_SCALE).contains(&self.scale_max)
            || self.scale_min > self.scale_max
        {
            return bad(format!(
                "--scale-min {} and --scale-max {} must satisfy {MIN_SCALE} <= min <= max <= \
                 {MAX_SCALE}",
                self.scale_min, self.scale_max
            ));
        }
        if !(0.0..=10.0).contains(&self.clutter) {
            return bad(format!("--clutter {} is not in [0, 10]", self.clutter));
        }
        Ok(())
    }

    fn scene_params(&self) -> scene::SceneParams {
        scene::SceneParams {
            min_size: self.min_size,
            max_size: self.max_size,
            distractor_share: self.distractor_share,
            scale: (self.scale_min, self.scale_max),
            clutter: self.clutter,
            class: None,
        }
    }
}

/// A box in Pascal VOC convention: 1-based, inclusive pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BBox {
    /// Leftmost pixel column, 1-based.
    pub xmin: u32,
    /// Top pixel row, 1-based.
    pub ymin: u32,
    /// Rightmost pixel column, 1-based, inclusive.
    pub xmax: u32,
    /// Bottom pixel row, 1-based, inclusive.
    pub ymax: u32,
}

impl BBox {
    /// From 0-based inclusive pixel bounds.
    fn from_zero_based(b: (usize, usize, usize, usize)) -> Self {
        let c = |v: usize| u32::try_from(v + 1).unwrap_or(u32::MAX);
        BBox {
            xmin: c(b.0),
            ymin: c(b.1),
            xmax: c(b.2),
            ymax: c(b.3),
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.xmax + 1 - self.xmin
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.ymax + 1 - self.ymin
    }

    /// Intersection over union with `other`, counting pixels.
    pub fn iou(&self, other: &BBox) -> f64 {
        let z = |b: &BBox| {
            (
                b.xmin as usize - 1,
                b.ymin as usize - 1,
                b.xmax as usize - 1,
                b.ymax as usize - 1,
            )
        };
        scene::iou(z(self), z(other))
    }
}

/// One object of a picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthObject {
    /// Class index into [`CLASSES`].
    pub class: usize,
    /// Tight box of the drawn pixels.
    pub bbox: BBox,
    /// Whether this is the distractor (not part of the label or of the ground-truth boxes).
    pub distractor: bool,
}

impl SynthObject {
    /// The class name.
    pub fn name(&self) -> &'static str {
        CLASSES[self.class]
    }
}

/// One generated picture with its annotation.
#[derive(Debug, Clone)]
pub struct SynthImage {
    /// File stem, `synth_000042`.
    pub id: String,
    /// The pixels.
    pub image: image::RgbImage,
    /// The target first, then the distractor if there is one.
    pub objects: Vec<SynthObject>,
}

impl SynthImage {
    /// The target object (the label of the picture).
    pub fn target(&self) -> &SynthObject {
        &self.objects[0]
    }

    /// The distractor, if the picture has one.
    pub fn distractor(&self) -> Option<&SynthObject> {
        self.objects.iter().find(|o| o.distractor)
    }
}

/// File stem of picture `index`: `synth_000042`.
pub fn image_id(index: usize) -> String {
    format!("synth_{index:06}")
}

/// Synthetic WordNet-like id of class `class` for the ImageNet layout: `s0000003`.
pub fn wnid(class: usize) -> String {
    format!("s{class:07}")
}

/// Renders picture `index` of the dataset described by `opts` (`out`, `count`, `layout` and
/// `threads` do not matter here).
pub fn render(opts: &SynthOptions, index: usize) -> Result<SynthImage> {
    opts.validate()?;
    let scene = scene::render(opts.seed, index as u64, &opts.scene_params())?;
    to_image(index, scene)
}

fn to_image(index: usize, scene: scene::Scene) -> Result<SynthImage> {
    let (w, h) = (scene.canvas.width as u32, scene.canvas.height as u32);
    let image = image::RgbImage::from_raw(w, h, scene.canvas.to_rgb8())
        .ok_or_else(|| Error::Invalid(format!("synth: bad buffer for a {w}x{h} image")))?;
    let objects = scene
        .objects
        .iter()
        .map(|o| SynthObject {
            class: o.class,
            bbox: BBox::from_zero_based(o.bbox),
            distractor: o.distractor,
        })
        .collect();
    Ok(SynthImage {
        id: image_id(index),
        image,
        objects,
    })
}

/// Escapes the five XML special characters.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The Pascal VOC XML annotation of `img`. `<name>` is the class name for [`Layout::Voc`] and the
/// [`wnid`] for [`Layout::Imagenet`]; each object also carries `<distractor>0|1</distractor>`.
pub fn annotation_xml(img: &SynthImage, layout: Layout) -> String {
    let folder = match layout {
        Layout::Voc => "JPEGImages",
        Layout::Imagenet => "val",
    };
    let mut s = String::with_capacity(1024);
    s.push_str("<annotation>\n");
    s.push_str(&format!("\t<folder>{folder}</folder>\n"));
    s.push_str(&format!(
        "\t<filename>{}.png</filename>\n",
        xml_escape(&img.id)
    ));
    s.push_str("\t<source>\n\t\t<database>agcam synth</database>\n\t</source>\n");
    s.push_str(&format!(
        "\t<size>\n\t\t<width>{}</width>\n\t\t<height>{}</height>\n\t\t<depth>3</depth>\n\t</size>\n",
        img.image.width(),
        img.image.height()
    ));
    s.push_str("\t<segmented>0</segmented>\n");
    for o in &img.objects {
        let name = match layout {
            Layout::Voc => o.name().to_string(),
            Layout::Imagenet => wnid(o.class),
        };
        let b = o.bbox;
        s.push_str(&format!(
            "\t<object>\n\t\t<name>{}</name>\n\t\t<pose>Unspecified</pose>\n\
             \t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\
             \t\t<distractor>{}</distractor>\n\t\t<bndbox>\n\
             \t\t\t<xmin>{}</xmin>\n\t\t\t<ymin>{}</ymin>\n\t\t\t<xmax>{}</xmax>\n\t\t\t<ymax>{}</ymax>\n\
             \t\t</bndbox>\n\t</object>\n",
            xml_escape(&name),
            u8::from(o.distractor),
            b.xmin,
            b.ymin,
            b.xmax,
            b.ymax
        ));
    }
    s.push_str("</annotation>\n");
    s
}

/// Lossless PNG bytes of `img` (deterministic for a given `image`/`png` crate version).
pub fn encode_png(img: &image::RgbImage) -> Result<Vec<u8>> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Default, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::Invalid(format!("synth: PNG encoding failed: {e}")))?;
    Ok(out)
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    /// Dataset root.
    pub out: PathBuf,
    /// Folder layout.
    pub layout: Layout,
    /// Seed used.
    pub seed: u64,
    /// Pictures written.
    pub count: usize,
    /// Pictures per target class, indexed like [`CLASSES`].
    pub per_class: Vec<usize>,
    /// Distractors per class, indexed like [`CLASSES`].
    pub distractors_per_class: Vec<usize>,
    /// Pictures that hold a distractor.
    pub with_distractor: usize,
}

impl SynthSummary {
    /// Fraction of pictures with a distractor.
    pub fn distractor_share(&self) -> f64 {
        self.with_distractor as f64 / self.count.max(1) as f64
    }
}

impl fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} images to {} ({} layout, seed {})",
            self.count,
            self.out.display(),
            self.layout,
            self.seed
        )?;
        writeln!(f, "  {:<10} {:>7} {:>12}", "class", "target", "distractor")?;
        for (c, name) in CLASSES.iter().enumerate() {
            writeln!(
                f,
                "  {:<10} {:>7} {:>12}",
                name, self.per_class[c], self.distractors_per_class[c]
            )?;
        }
        write!(
            f,
            "  with a distractor: {} ({:.1} %)",
            self.with_distractor,
            100.0 * self.distractor_share()
        )
    }
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Renders and writes picture `index`; returns (target class, distractor class).
fn write_one(opts: &SynthOptions, index: usize) -> Result<(usize, Option<usize>)> {
    let scene = scene::render(opts.seed, index as u64, &opts.scene_params())?;
    let img = to_image(index, scene)?;
    let png = encode_png(&img.image)?;
    let dir = opts.out.join(opts.layout.image_dir());
    write_file(&dir.join(format!("{}.png", img.id)), &png)?;
    let dir = opts.out.join(opts.layout.annotation_dir());
    let xml = annotation_xml(&img, opts.layout);
    write_file(&dir.join(format!("{}.xml", img.id)), xml.as_bytes())?;
    Ok((img.target().class, img.distractor().map(|d| d.class)))
}

/// Generates the dataset described by `opts`, calling `progress(done)` on the calling thread after
/// each picture is written (`done` counts up to `opts.count`, in completion order).
///
/// Pictures are rendered on `opts.threads` worker threads; the first error stops the workers and
/// is returned.
pub fn generate(opts: &SynthOptions, mut progress: impl FnMut(usize)) -> Result<SynthSummary> {
    opts.validate()?;
    make_room(opts)?;
    create_dir(&opts.out.join(opts.layout.image_dir()))?;
    create_dir(&opts.out.join(opts.layout.annotation_dir()))?;
    let labels: String = CLASSES.iter().map(|c| format!("{c}\n")).collect();
    write_file(&opts.out.join("labels.txt"), labels.as_bytes())?;
    if opts.layout == Layout::Imagenet {
        let mapping: String = CLASSES
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} {c}\n", wnid(i)))
            .collect();
        write_file(&opts.out.join("LOC_synset_mapping.txt"), mapping.as_bytes())?;
    }

    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, opts.count);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut per_class = vec![0; CLASSES.len()];
    let mut distractors_per_class = vec![0; CLASSES.len()];
    let mut with_distractor = 0;
    let mut first_error = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= opts.count {
                        break;
                    }
                    let r = write_one(opts, i);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for r in rx {
            match r {
                Ok((class, distractor)) => {
                    done += 1;
                    per_class[class] += 1;
                    if let Some(d) = distractor {
                        distractors_per_class[d] += 1;
                        with_distractor += 1;
                    }
                    progress(done);
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(SynthSummary {
        out: opts.out.clone(),
        layout: opts.layout,
        seed: opts.seed,
        count: opts.count,
        per_class,
        distractors_per_class,
        with_distractor,
    })
}
