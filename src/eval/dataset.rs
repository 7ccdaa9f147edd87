//! Evaluation datasets: images with Pascal VOC XML boxes, in the Pascal VOC layout or in
//! ImageNet's validation layout, detected from what the folder holds.
//!
//! | layout | images | annotations | class indices |
//! |---|---|---|---|
//! | Pascal VOC | `JPEGImages/<id>.<ext>` | `Annotations/<id>.xml` | `labels.txt` (line = class), else the model's label names |
//! | ImageNet, flat (Kaggle) | `Data/CLS-LOC/val/<id>.<ext>` | `Annotations/CLS-LOC/val/<id>.xml` | `LOC_synset_mapping.txt` (line order) |
//! | ImageNet, class folders | `Data/CLS-LOC/val/<wnid>/<id>.<ext>` or `val/<wnid>/…` | as above | `LOC_synset_mapping.txt`, else the sorted folder names (torchvision's `ImageFolder`) |
//!
//! The ImageNet folders may also sit under `ILSVRC/` (the Kaggle archive). Images and
//! annotations are paired by file stem; an image without annotation or an annotation without
//! image is skipped and counted, as is an annotation with no ground-truth object or with an
//! object whose class is unknown.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::annotation::{read_annotation, Annotation, BoundingBox};
use crate::error::{Error, Result};
use crate::pipeline::IMAGE_EXTENSIONS;

/// How a dataset folder is organised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `JPEGImages/` + `Annotations/` (+ `labels.txt`): Pascal VOC and `agcam synth`.
    Voc,
    /// ImageNet validation, all images in one folder (the Kaggle archive).
    ImagenetFlat,
    /// ImageNet validation, images in one folder per WordNet id.
    ImagenetClassFolders,
}

impl Layout {
    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Voc => "Pascal VOC layout",
            Layout::ImagenetFlat => "ImageNet validation layout, flat image folder",
            Layout::ImagenetClassFolders => "ImageNet validation layout, class folders",
        }
    }
}

/// Where a dataset's parts are, as found by [`detect_layout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detected {
    /// The layout.
    pub layout: Layout,
    /// The folder of the images (class folders below it for [`Layout::ImagenetClassFolders`]).
    pub image_dir: PathBuf,
    /// The folder of the XML files.
    pub annotation_dir: PathBuf,
    /// `LOC_synset_mapping.txt`, when present (ImageNet layouts only).
    pub synset_mapping: Option<PathBuf>,
    /// `labels.txt`, when present.
    pub labels_file: Option<PathBuf>,
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        out.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_image(path: &Path) -> bool {
    path.is_file() && has_extension(path, IMAGE_EXTENSIONS)
}

fn is_xml(path: &Path) -> bool {
    path.is_file() && has_extension(path, &["xml"])
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Finds which layout `dir` holds. The error says what was looked for, what was found and
/// what is missing.
pub fn detect_layout(dir: &Path) -> Result<Detected> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not a folder (--data takes a dataset folder)",
            dir.display()
        )));
    }
    let labels_file = Some(dir.join("labels.txt")).filter(|p| p.is_file());
    let fail = |what: String| {
        let listing: Vec<String> = entries(dir)
            .unwrap_or_default()
            .iter()
            .take(12)
            .map(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                if p.is_dir() {
                    format!("{name}/")
                } else {
                    name.into_owned()
                }
            })
            .collect();
        Error::Invalid(format!(
            "{}: {what}. Expected either Pascal VOC (JPEGImages/ and Annotations/*.xml, class \
             names in labels.txt) or ImageNet validation (Annotations/CLS-LOC/val/*.xml with \
             images in Data/CLS-LOC/val/ or val/, flat or in class folders, and \
             LOC_synset_mapping.txt). The folder holds: {}",
            dir.display(),
            if listing.is_empty() {
                "nothing".to_string()
            } else {
                listing.join(", ")
            }
        ))
    };

    // Pascal VOC.
    let voc_images = dir.join("JPEGImages");
    let voc_annotations = dir.join("Annotations");
    if voc_images.is_dir() {
        if !voc_annotations.is_dir() {
            return Err(fail(
                "Pascal VOC layout: JPEGImages/ is there but Annotations/ is missing".into(),
            ));
        }
        if !entries(&voc_annotations)?.iter().any(|p| is_xml(p)) {
            return Err(fail(format!(
                "Pascal VOC layout: {} holds no .xml files",
                voc_annotations.display()
            )));
        }
        return Ok(Detected {
            layout: Layout::Voc,
            image_dir: voc_images,
            annotation_dir: voc_annotations,
            synset_mapping: None,
            labels_file,
        });
    }

    // ImageNet validation.
    let bases = [dir.to_path_buf(), dir.join("ILSVRC")];
    let Some(base) = bases
        .iter()
        .find(|b| b.join("Annotations/CLS-LOC/val").is_dir())
    else {
        let what = if voc_annotations.is_dir() {
            "Annotations/ is there but neither JPEGImages/ (Pascal VOC) nor \
             Annotations/CLS-LOC/val/ (ImageNet)"
        } else {
            "found neither JPEGImages/ + Annotations/ nor Annotations/CLS-LOC/val/"
        };
        return Err(fail(what.into()));
    };
    let annotation_dir = base.join("Annotations/CLS-LOC/val");
    let synset_mapping = bases
        .iter()
        .map(|b| b.join("LOC_synset_mapping.txt"))
        .find(|p| p.is_file());
    let candidates = [
        base.join("Data/CLS-LOC/val"),
        dir.join("Data/CLS-LOC/val"),
        dir.join("val"),
    ];
    for image_dir in candidates.iter().filter(|d| d.is_dir()) {
        let listing = entries(image_dir)?;
        if listing.iter().any(|p| is_image(p)) {
            return Ok(Detected {
                layout: Layout::ImagenetFlat,
                image_dir: image_dir.clone(),
                annotation_dir,
                synset_mapping,
                labels_file,
            });
        }
        let class_folders = listing
            .iter()
            .filter(|p| p.is_dir())
            .any(|d| entries(d).is_ok_and(|e| e.iter().any(|p| is_image(p))));
        if class_folders {
            return Ok(Detected {
                layout: Layout::ImagenetClassFolders,
                image_dir: image_dir.clone(),
                annotation_dir,
                synset_mapping,
                labels_file,
            });
        }
    }
    Err(fail(format!(
        "ImageNet layout: {} is there but no images were found in {}",
        annotation_dir.display(),
        candidates
            .iter()
            .map(|c| format!("{}/", c.display()))
            .collect::<Vec<_>>()
            .join(" or ")
    )))
}

/// One image with its annotation and ground-truth classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The file stem shared by image and annotation.
    pub id: String,
    /// The image file.
    pub image: PathBuf,
    /// The parsed annotation (distractors included).
    pub annotation: Annotation,
    /// The class index of each ground-truth (non-distractor) object, in file order: never empty,
    /// the first is the target class.
    pub classes: Vec<usize>,
}

impl Sample {
    /// The ground-truth class of the perturbation protocol: the first non-distractor object's.
    pub fn target_class(&self) -> usize {
        self.classes[0]
    }

    /// Whether `class` is one of the image's ground-truth classes (the localization protocol's
    /// test of a correct classification).
    pub fn has_class(&self, class: usize) -> bool {
        self.classes.contains(&class)
    }

    /// The ground-truth boxes: every non-distractor object's.
    pub fn boxes(&self) -> Vec<BoundingBox> {
        self.annotation.targets().map(|o| o.bbox).collect()
    }
}

/// Files left out when the dataset was opened, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Skipped {
    /// Images with no annotation of the same stem.
    pub images_without_annotation: Vec<PathBuf>,
    /// Annotations with no image of the same stem.
    pub annotations_without_image: Vec<PathBuf>,
    /// Images whose stem another image (earlier in sorted order) already has.
    pub duplicate_images: Vec<PathBuf>,
    /// Annotations without any ground-truth (non-distractor) object.
    pub without_objects: Vec<PathBuf>,
    /// Annotations with a box whose minimum is above its maximum (`xmin > xmax` or
    /// `ymin > ymax`): (file, the box).
    pub inverted_boxes: Vec<(PathBuf, String)>,
    /// Not skipped, but reported: boxes reaching outside the picture their `<size>` gives
    /// (scored clipped): (file, the box).
    pub boxes_outside: Vec<(PathBuf, String)>,
    /// Annotations with a ground-truth object whose name is not a known class: (file, name).
    pub unknown_class: Vec<(PathBuf, String)>,
}

impl Skipped {
    /// Everything skipped.
    pub fn total(&self) -> usize {
        self.images_without_annotation.len()
            + self.annotations_without_image.len()
            + self.duplicate_images.len()
            + self.without_objects.len()
            + self.inverted_boxes.len()
            + self.unknown_class.len()
    }

    /// One line per reason with a count and the first few files.
    pub fn warnings(&self) -> Vec<String> {
        fn line(what: &str, items: &[String]) -> Option<String> {
            (!items.is_empty()).then(|| {
                let more = if items.len() > 3 {
                    format!(", … ({} more)", items.len() - 3)
                } else {
                    String::new()
                };
                format!(
                    "{what}: {}: {}{more}",
                    items.len(),
                    items[..items.len().min(3)].join(", ")
                )
            })
        }
        let paths = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        };
        let described = |v: &[(PathBuf, String)]| {
            v.iter()
                .map(|(p, what)| format!("{} ({what})", p.display()))
                .collect::<Vec<_>>()
        };
        [
            line(
                "skipped images without annotation",
                &paths(&self.images_without_annotation),
            ),
            line(
                "skipped annotations without image",
                &paths(&self.annotations_without_image),
            ),
            line(
                "skipped images with a duplicate id",
                &paths(&self.duplicate_images),
            ),
            line(
                "skipped annotations without a ground-truth object",
                &paths(&self.without_objects),
            ),
            line(
                "skipped annotations with an inverted box (min above max)",
                &described(&self.inverted_boxes),
            ),
            // Kept, not skipped: said so that a user can check the annotations.
            line(
                "scored clipped to the picture: boxes outside it",
                &described(&self.boxes_outside),
            ),
            line(
                "skipped annotations with an unknown class",
                &self
                    .unknown_class
                    .iter()
                    .map(|(p, n)| format!("{} (`{n}`)", p.display()))
                    .collect::<Vec<_>>(),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Class names and the map from annotation names to class indices.
struct Classes {
    names: Vec<String>,
    source: String,
    index: HashMap<String, usize>,
    lowercase: HashMap<String, usize>,
}

impl Classes {
    fn new(keys: &[String], names: Vec<String>, source: String) -> Classes {
        let mut index = HashMap::new();
        let mut lowercase = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            index.entry(k.clone()).or_insert(i);
            lowercase.entry(k.to_lowercase()).or_insert(i);
        }
        Classes {
            names,
            source,
            index,
            lowercase,
        }
    }

    /// Exact match first, then case-insensitive.
    fn lookup(&self, name: &str) -> Option<usize> {
        self.index
            .get(name)
            .or_else(|| self.lowercase.get(&name.to_lowercase()))
            .copied()
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    Ok(lines)
}

/// `LOC_synset_mapping.txt`: (wnid, description) per line, in class order.
fn read_synset_mapping(path: &Path) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen = HashMap::new();
    for (n, line) in read_lines(path)?.iter().enumerate() {
        let (wnid, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if wnid.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: line {} is empty (each line is `<wnid> <description>`)",
                path.display(),
                n + 1
            )));
        }
        if let Some(first) = seen.insert(wnid.to_string(), n + 1) {
            return Err(Error::Invalid(format!(
                "{}: `{wnid}` is on lines {first} and {}",
                path.display(),
                n + 1
            )));
        }
        out.push((wnid.to_string(), rest.trim().to_string()));
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!("{}: no classes", path.display())));
    }
    Ok(out)
}

/// An evaluation dataset: paired images and annotations with class indices.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    /// The folder given.
    pub root: PathBuf,
    /// Where its parts were found.
    pub detected: Detected,
    /// Class names, index = class index.
    pub class_names: Vec<String>,
    /// Where the class indices come from (`labels.txt`, `LOC_synset_mapping.txt`, ...).
    pub class_source: String,
    /// The usable samples, sorted by id.
    pub samples: Vec<Sample>,
    /// What was left out and why.
    pub skipped: Skipped,
}

impl Dataset {
    /// Detects the layout of `dir`, pairs images and annotations by stem, parses every
    /// annotation and maps object names to class indices. `labels` are the model's class names
    /// (config `label_names`), used for a VOC folder without `labels.txt` and for display.
    ///
    /// # Errors
    /// When the layout cannot be told (the message lists what is missing), when the class
    /// indices cannot be known, when an annotation is malformed (naming the file and field),
    /// and when no usable sample remains.
    pub fn open(dir: &Path, labels: Option<&[String]>) -> Result<Dataset> {
        let detected = detect_layout(dir)?;
        let labels_txt = match &detected.labels_file {
            Some(p) => Some(read_lines(p)?),
            None => None,
        };
        if let (Layout::Voc, Some(p), Some([])) = (
            detected.layout,
            &detected.labels_file,
            labels_txt.as_deref(),
        ) {
            return Err(Error::Invalid(format!(
                "{}: the label list is empty; it must name one class per line, in class-index \
                 order (or remove it to use the model's label names)",
                p.display()
            )));
        }

        // Images by stem.
        let mut image_files = Vec::new();
        let mut folder_names = Vec::new();
        for p in entries(&detected.image_dir)? {
            if detected.layout == Layout::ImagenetClassFolders && p.is_dir() {
                let inner: Vec<PathBuf> =
                    entries(&p)?.into_iter().filter(|f| is_image(f)).collect();
                if !inner.is_empty() {
                    folder_names.push(
                        p.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned(),
                    );
                    image_files.extend(inner);
                }
            } else if is_image(&p) {
                image_files.push(p);
            }
        }
        let mut skipped = Skipped::default();
        let mut images: BTreeMap<String, PathBuf> = BTreeMap::new();
        for p in image_files {
            let id = stem(&p);
            match images.entry(id) {
                std::collections::btree_map::Entry::Occupied(_) => skipped.duplicate_images.push(p),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(p);
                }
            }
        }
        let annotations: BTreeMap<String, PathBuf> = entries(&detected.annotation_dir)?
            .into_iter()
            .filter(|p| is_xml(p))
            .map(|p| (stem(&p), p))
            .collect();

        // Class indices.
        let class_map = match detected.layout {
            Layout::Voc => {
                let (names, source) = match (&labels_txt, labels) {
                    (Some(l), _) => (l.clone(), "labels.txt".to_string()),
                    (None, Some(l)) => (l.to_vec(), "the model's label names".to_string()),
                    (None, None) => {
                        return Err(Error::Invalid(format!(
                            "{}: there is no labels.txt and the model has no label names \
                             (config `label_names`), so object names cannot be mapped to \
                             class indices",
                            dir.display()
                        )))
                    }
                };
                Classes::new(&names, names.clone(), source)
            }
            Layout::ImagenetFlat | Layout::ImagenetClassFolders => {
                let (keys, described, source) = match &detected.synset_mapping {
                    Some(p) => {
                        let m = read_synset_mapping(p)?;
                        let keys: Vec<String> = m.iter().map(|(w, _)| w.clone()).collect();
                        let desc: Vec<String> = m.into_iter().map(|(_, d)| d).collect();
                        (keys, Some(desc), "LOC_synset_mapping.txt".to_string())
                    }
                    None if detected.layout == Layout::ImagenetClassFolders => (
                        folder_names.clone(),
                        None,
                        "sorted class-folder names".to_string(),
                    ),
                    None => {
                        return Err(Error::Invalid(format!(
                            "{}: {} detected (images in {}), but LOC_synset_mapping.txt is \
                             missing (looked in {} and {}): it maps the WordNet ids of the \
                             annotations to class indices",
                            dir.display(),
                            detected.layout.describe(),
                            detected.image_dir.display(),
                            dir.display(),
                            dir.join("ILSVRC").display()
                        )))
                    }
                };
                let n = keys.len();
                let names = match (described, &labels_txt, labels) {
                    (_, Some(l), _) if l.len() == n => l.clone(),
                    (_, _, Some(l)) if l.len() == n => l.to_vec(),
                    (Some(d), _, _) if d.iter().all(|d| !d.is_empty()) => d,
                    _ => keys.clone(),
                };
                Classes::new(&keys, names, source)
            }
        };

        // Pairs.
        for (id, path) in &images {
            if !annotations.contains_key(id) {
                skipped.images_without_annotation.push(path.clone());
            }
        }
        let mut samples = Vec::new();
        for (id, ann_path) in &annotations {
            let Some(image) = images.get(id) else {
                skipped.annotations_without_image.push(ann_path.clone());
                continue;
            };
            let annotation = read_annotation(ann_path)?;
            for b in annotation.boxes_outside() {
                skipped.boxes_outside.push((ann_path.clone(), b));
            }
            if let Some(b) = annotation.inverted_boxes().into_iter().next() {
                skipped.inverted_boxes.push((ann_path.clone(), b));
                continue;
            }
            let found: Vec<std::result::Result<usize, &str>> = annotation
                .targets()
                .map(|o| class_map.lookup(&o.name).ok_or(o.name.as_str()))
                .collect();
            if let Some(Err(name)) = found.iter().find(|c| c.is_err()) {
                skipped
                    .unknown_class
                    .push((ann_path.clone(), name.to_string()));
                continue;
            }
            let classes: Vec<usize> = found.into_iter().flatten().collect();
            if classes.is_empty() {
                skipped.without_objects.push(ann_path.clone());
                continue;
            }
            samples.push(Sample {
                id: id.clone(),
                image: image.clone(),
                annotation,
                classes,
            });
        }
        if samples.is_empty() {
            let mut why = skipped.warnings();
            if images.is_empty() {
                why.push(format!("no images in {}", detected.image_dir.display()));
            }
            return Err(Error::Invalid(format!(
                "{}: {} detected, but no image has a usable annotation{}{}",
                dir.display(),
                detected.layout.describe(),
                if why.is_empty() { "" } else { ": " },
                why.join("; ")
            )));
        }
        Ok(Dataset {
            root: dir.to_path_buf(),
            detected,
            class_names: class_map.names,
            class_source: class_map.source,
            samples,
            skipped,
        })
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.detected.layout
    }

    /// The name of class `c`, when known.
    pub fn class_name(&self, c: usize) -> Option<&str> {
        self.class_names.get(c).map(String::as_str)
    }

    /// Keeps only the first `n` samples (in id order).
    pub fn truncate(&mut self, n: usize) {
        self.samples.truncate(n);
    }

    /// Drops the first `n` samples (in id order), so that runs over disjoint ranges of one data
    /// set (`--skip`, `--limit`) can be spread over machines and their reports merged.
    pub fn skip(&mut self, n: usize) {
        self.samples.drain(..n.min(self.samples.len()));
    }

    /// One line: what was detected, where, how many samples, where the classes come from.
    pub fn describe(&self) -> String {
        format!(
            "{}: detected the {} (images in {}, annotations in {}); {} usable image/annotation \
             pairs, {} files skipped; {} classes from {}",
            self.root.display(),
            self.detected.layout.describe(),
            self.detected.image_dir.display(),
            self.detected.annotation_dir.display(),
            self.samples.len(),
            self.skipped.total(),
            self.class_names.len(),
            self.class_source
        )
    }
}

#[cfg(test)]
mod bad_data_tests {
    use super::*;

    fn voc(dir: &Path, labels: &str, boxes: &[(&str, [i32; 4])]) {
        std::fs::create_dir_all(dir.join("JPEGImages")).unwrap();
        std::fs::create_dir_all(dir.join("Annotations")).unwrap();
        std::fs::write(dir.join("labels.txt"), labels).unwrap();
        for (i, (name, [x0, y0, x1, y1])) in boxes.iter().enumerate() {
            image::RgbImage::new(20, 10)
                .save(dir.join(format!("JPEGImages/{i}.png")))
                .unwrap();
            let xml = format!(
                "<annotation><size><width>20</width><height>10</height></size><object>\
                 <name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>\
                 <ymax>{y1}</ymax></bndbox></object></annotation>"
            );
            std::fs::write(dir.join(format!("Annotations/{i}.xml")), xml).unwrap();
        }
    }

    #[test]
    fn bad_boxes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        voc(
            dir.path(),
            "cat\ndog\n",
            &[
                ("cat", [1, 1, 10, 5]),
                ("dog", [12, 1, 4, 5]),
                ("cat", [1, 1, 30, 5]),
            ],
        );
        let ds = Dataset::open(dir.path(), None).unwrap();
        assert_eq!(ds.samples.len(), 2, "the inverted box is skipped");
        assert_eq!(ds.skipped.inverted_boxes.len(), 1);
        assert_eq!(ds.skipped.boxes_outside.len(), 1);
        let warnings = ds.skipped.warnings().join("\n");
        assert!(
            warnings.contains("inverted box") && warnings.contains("xmin 12"),
            "{warnings}"
        );
        assert!(
            warnings.contains("outside") && warnings.contains("xmax 30"),
            "{warnings}"
        );
    }

    #[test]
    fn an_empty_label_list_is_called_that() {
        let dir = tempfile::tempdir().unwrap();
        voc(dir.path(), "\n\n", &[("cat", [1, 1, 10, 5])]);
        let err = Dataset::open(dir.path(), None).err().unwrap().to_string();
        assert!(err.contains("labels.txt: the label list is empty"), "{err}");
    }
}
