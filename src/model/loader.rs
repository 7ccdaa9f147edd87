//! Reads a safetensors checkpoint (timm or Hugging Face naming) and its JSON configs into a
//! [`Model`].
//!
//! The dimensions come from the tensors themselves (D from the class token, P from the patch
//! embedding, F from the first MLP layer, C from the head, the number of positions from the
//! position embedding, the depth from the block indices); the configs and the user's overrides
//! supply what shapes cannot say (heads, image size for non-square grids, preprocessing,
//! labels), and whatever they state about the shapes is checked against them (`family`). Every
//! tensor is then read against the shape those dimensions imply.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::checkpoint::{Checkpoint, MappedFile};
use super::config_file::JsonConfig;
use super::naming::{self, BlockParam, Naming, Param};
use super::source::{self, Sources};
use super::{family, labels};
use super::{BlockWeights, ConfigOverrides, HostTensor, ModelConfig, Pooling, VitWeights};
use crate::error::{Error, Result};

/// A loaded checkpoint: its configuration, host-side f32 weights, and where each part came from.
#[derive(Debug, Clone)]
pub struct Model {
    /// Architecture, preprocessing and labels.
    pub config: ModelConfig,
    /// The weights, shape-checked against `config`.
    pub weights: VitWeights,
    /// What was detected, and from which file.
    pub provenance: Provenance,
}

/// Where a loaded model's settings came from, for `agcam inspect` and logs. Each field is a
/// short human-readable phrase ("`num_attention_heads` in /m/config.json").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    /// The checkpoint format detected from the tensor names, e.g. "Hugging Face
    /// ViTForImageClassification".
    pub format: String,
    /// The weights file that was read.
    pub weights: Option<PathBuf>,
    /// The model config that was read, if any.
    pub config: Option<PathBuf>,
    /// The Hugging Face `preprocessor_config.json` that was read, if any.
    pub preprocessor: Option<PathBuf>,
    /// Where the number of heads came from.
    pub heads: String,
    /// Where the input size came from.
    pub image_size: String,
    /// Where mean and std came from.
    pub preprocessing: String,
    /// Where the class names came from (or why there are none).
    pub labels: String,
    /// Conversions done while loading (q/k/v fused, a class position added, ...).
    pub notes: Vec<String>,
    /// Assumptions the user should confirm, e.g. a default mean/std because nothing gave one.
    /// The CLI prints them.
    pub warnings: Vec<String>,
}

/// Loads `weights`, a `.safetensors` checkpoint in timm `VisionTransformer` or Hugging Face
/// `ViTForImageClassification` naming, or a folder holding one (`model.safetensors`, else the
/// single `*.safetensors`), with its JSON configs.
///
/// The model config is `config` when given, else `<weights stem>.json`, else `config.json` next
/// to the weights; a Hugging Face `preprocessor_config.json` there is read too. Settings in
/// `overrides` win over the configs, which win over what the tensor shapes imply; what no source
/// gives is an error naming the flag that supplies it. Tensors in F32, F16, BF16 or F64 are
/// converted to f32; every shape is checked.
///
/// # Errors
/// [`Error::Io`] when a file cannot be read, [`Error::Checkpoint`] for a file that is not a usable
/// checkpoint or config (with the reason), [`Error::Shape`] for a tensor of the wrong shape, and
/// [`Error::Invalid`] for an override that does not fit the model.
pub fn load_model(
    weights: &Path,
    config: Option<&Path>,
    overrides: &ConfigOverrides,
) -> Result<Model> {
    let Sources {
        weights: weights_path,
        config: json,
        preprocessor,
    } = source::resolve(weights, config)?;
    let file = MappedFile::open(&weights_path)?;
    let ckpt = file.parse()?;
    let names = ckpt.names();
    if let Some(why) = naming::refusal(names.iter().copied()) {
        return Err(Error::checkpoint(&weights_path, why));
    }
    let reader = Reader {
        ckpt: &ckpt,
        naming: naming::detect(names.iter().copied()),
        hint: naming::foreign_layout_hint(names.iter().copied()),
    };
    let json = json.as_ref();
    if let Some(j) = json {
        family::check_hints(j, reader.naming)?;
    }
    let dims = reader.infer_dims(&names)?;
    reader.check_unexpected(&names, dims.depth)?;
    if let Some(j) = json {
        family::check_dims(j, reader.naming, &dims)?;
    }

    let mut notes = Vec::new();
    let (num_heads, heads_from) = resolve_heads(&reader, json, overrides, dims.embed_dim)?;
    let (image_size, size_from, class_position) =
        resolve_image_size(&reader, json, preprocessor.as_ref(), overrides, &dims)?;
    if !class_position {
        notes.push(
            "the position embedding has no class-token row (timm no_embed_class, as in DeiT \
             III): a zero row was put in front"
                .to_string(),
        );
    }
    let mut warnings = Vec::new();
    let (mean, std, preprocessing) =
        resolve_mean_std(json, preprocessor.as_ref(), overrides, &mut warnings)?;
    let (labels, labels_from) = resolve_labels(&reader, json, dims.num_classes)?;
    let layer_norm_eps = match json {
        Some(j) => j.layer_norm_eps()?,
        None => None,
    }
    .unwrap_or_else(|| reader.naming.default_layer_norm_eps());
    let config_pool = match json {
        Some(j) => j.pooling()?.map(|(p, _)| p),
        None => None,
    };
    let name = match json {
        Some(j) => j.architecture()?,
        None => None,
    }
    .or_else(|| default_name(weights, &weights_path))
    .unwrap_or_else(|| "model".to_string());

    let read = reader.read_weights(&dims, class_position, config_pool, json)?;
    if let Some(j) = json {
        family::check_switches(j, read.qkv_bias, read.layer_scale)?;
    }
    if reader
        .naming
        .qkv_parts(Param::Block(0, BlockParam::QkvW))
        .is_some()
    {
        notes.push("query, key and value fused into one qkv matrix (q, k, v rows)".to_string());
    }
    if !read.qkv_bias {
        notes.push("no query/key/value bias in the checkpoint: zeros".to_string());
    }

    let config = ModelConfig {
        name,
        embed_dim: dims.embed_dim,
        depth: dims.depth,
        num_heads,
        mlp_hidden: dims.mlp_hidden,
        patch_size: dims.patch_size,
        image_size,
        num_classes: dims.num_classes,
        layer_norm_eps,
        layer_scale: read.layer_scale,
        pooling: read.pooling,
        mean,
        std,
        labels,
    };
    let provenance = Provenance {
        format: format!("{} names", reader.naming.model_class()),
        weights: Some(weights_path.clone()),
        config: json.map(|j| j.path().to_path_buf()),
        preprocessor: preprocessor.as_ref().map(|p| p.path().to_path_buf()),
        heads: heads_from,
        image_size: size_from,
        preprocessing,
        labels: labels_from,
        notes,
        warnings,
    };
    Ok(Model {
        config,
        weights: read.weights,
        provenance,
    })
}

/// The model's name when no config names the architecture: the file stem, or the folder's name
/// for the generic `model.safetensors`.
fn default_name(given: &Path, file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_string_lossy().into_owned();
    if stem != "model" {
        return Some(stem);
    }
    let folder = if given.is_dir() {
        given
    } else {
        file.parent()?
    };
    folder
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or(Some(stem))
}

/// "`key` in path".
fn from_key(key: &str, j: &JsonConfig) -> String {
    format!("`{key}` in {}", j.path().display())
}

/// Attention heads for embed dims of the standard ViT sizes (Ti, S, B, L, H).
fn standard_heads(embed_dim: usize) -> Option<usize> {
    match embed_dim {
        192 => Some(3),
        384 => Some(6),
        768 => Some(12),
        1024 => Some(16),
        1280 => Some(16),
        _ => None,
    }
}

/// `--heads` > config > the standard table; D must be a multiple of the result.
fn resolve_heads(
    reader: &Reader<'_, '_>,
    json: Option<&JsonConfig>,
    overrides: &ConfigOverrides,
    d: usize,
) -> Result<(usize, String)> {
    let not_divisible =
        |h: usize, from: &str| format!("embed dim D={d} is not divisible by {h} heads ({from})");
    if let Some(h) = overrides.num_heads {
        if h == 0 || !d.is_multiple_of(h) {
            let msg = if h == 0 {
                "--heads must be at least 1".to_string()
            } else {
                not_divisible(h, "--heads")
            };
            return Err(Error::Invalid(msg));
        }
        return Ok((h, "--heads".to_string()));
    }
    if let Some(j) = json {
        if let Some((h, key)) = j.num_heads()? {
            if !d.is_multiple_of(h) {
                return Err(j.error(not_divisible(h, &format!("`{key}` in the config"))));
            }
            return Ok((h, from_key(key, j)));
        }
    }
    let key = match reader.naming.scheme() {
        "Hugging Face" => "num_attention_heads",
        _ => "model_args.num_heads",
    };
    standard_heads(d)
        .map(|h| (h, format!("the standard ViT with D={d}")))
        .ok_or_else(|| {
            Error::checkpoint(
                reader.ckpt.path(),
                format!(
                    "cannot infer the number of attention heads for embed dim D={d} (not a \
                     standard ViT width, and no config gives it): pass --heads N, or --config \
                     with `{key}`"
                ),
            )
        })
}

/// The input size, where it came from, and whether the position embedding has a class-token row:
/// `--image-size` > config > `preprocessor_config.json` > the square grid of the position
/// embedding; always checked against the position embedding. A position embedding with exactly
/// one row per patch is timm's `no_embed_class` (DeiT III), accepted when the size is given or
/// the config says so.
fn resolve_image_size(
    reader: &Reader<'_, '_>,
    json: Option<&JsonConfig>,
    preprocessor: Option<&JsonConfig>,
    overrides: &ConfigOverrides,
    dims: &Dims,
) -> Result<((usize, usize), String, bool)> {
    let p = dims.patch_size;
    let t = dims.pos_tokens;
    let timm = reader.naming.scheme() == "timm";
    let pos = reader.name(Param::PosEmbed);
    let fits =
        |s: (usize, usize)| s.0 > 0 && s.1 > 0 && s.0.is_multiple_of(p) && s.1.is_multiple_of(p);
    let no_embed_class = match json {
        Some(j) => j.bool_at("model_args.no_embed_class")?,
        None => None,
    };
    let deit3 = match json {
        Some(j) => j
            .str_at("architecture")?
            .is_some_and(|a| a.starts_with("deit3_")),
        None => false,
    };

    // An explicit size, and where it came from.
    let mut explicit: Option<((usize, usize), String)> = None;
    if let Some(s) = overrides.image_size {
        if !fits(s) {
            return Err(Error::Invalid(format!(
                "--image-size {}x{} is not a positive multiple of the patch size {p}",
                s.0, s.1
            )));
        }
        explicit = Some((s, "--image-size".to_string()));
    } else {
        for j in json.iter().copied() {
            if let Some((s, key)) = j.image_size()? {
                if !fits(s) {
                    return Err(j.error(format!(
                        "`{key}` gives an image size of {}x{}, which is not a positive multiple \
                         of the patch size {p}",
                        s.0, s.1
                    )));
                }
                explicit = Some((s, from_key(key, j)));
            }
        }
        if explicit.is_none() {
            if let Some(j) = preprocessor {
                if let Some((s, key)) = j.processor_size()? {
                    if fits(s) {
                        explicit = Some((s, from_key(key, j)));
                    }
                }
            }
        }
    }

    let (size, source, class_position) = match explicit {
        Some((size, source)) => {
            let g = (size.0 / p).checked_mul(size.1 / p);
            let class_position = if g.and_then(|g| g.checked_add(1)) == Some(t) {
                true
            } else if timm && g == Some(t) {
                false
            } else {
                let (gh, gw) = (size.0 / p, size.1 / p);
                // The name carries the assumed image size, which the shapes alone do not show.
                return Err(Error::Shape {
                    name: format!(
                        "{pos} (assuming image size {}x{} from {source}: {gh}x{gw} patches of {p} \
                         px)",
                        size.0, size.1
                    ),
                    expected: vec![1, gh.saturating_mul(gw).saturating_add(1), dims.embed_dim],
                    actual: vec![1, t, dims.embed_dim],
                });
            };
            (size, source, class_position)
        }
        None => {
            let square = |n: usize| (n > 0 && n.isqrt().pow(2) == n).then(|| n.isqrt());
            let grid = |g: usize| ((g * p, g * p), format!("the square grid of {pos}"));
            match (square(t - 1), square(t)) {
                // An explicit `no_embed_class: true` means no class row.
                (_, Some(g)) if timm && no_embed_class == Some(true) => {
                    let (s, src) = grid(g);
                    (s, src, false)
                }
                (Some(g), _) if no_embed_class != Some(true) => {
                    let (s, src) = grid(g);
                    (s, src, true)
                }
                // DeiT III (`deit3_*`) is timm's no_embed_class family.
                (_, Some(g)) if timm && deit3 => {
                    let (s, src) = grid(g);
                    (s, src, false)
                }
                (_, Some(g)) if timm => {
                    return Err(Error::checkpoint(
                        reader.ckpt.path(),
                        format!(
                            "{pos} holds {t} positions, a square {g}x{g} grid without a \
                             class-token position (timm's no_embed_class, as in DeiT III): pass \
                             --image-size {0}x{0} to confirm, or a config with \
                             `model_args.no_embed_class: true` or `pretrained_cfg.input_size`",
                            g * p
                        ),
                    ));
                }
                _ => {
                    let what = if no_embed_class == Some(true) {
                        format!(
                            "{t} positions, which is not a square grid (with \
                             `model_args.no_embed_class: true` every position is a patch)"
                        )
                    } else {
                        format!("{} patch positions, which is not a square grid", t - 1)
                    };
                    return Err(Error::checkpoint(
                        reader.ckpt.path(),
                        format!(
                            "{pos} holds {what}: pass --image-size HxW, or --config with the \
                             input size (`img_size`, `image_size` or `pretrained_cfg.input_size`)"
                        ),
                    ));
                }
            }
        }
    };
    if let (Some(b), Some(j)) = (no_embed_class, json) {
        if b == class_position {
            return Err(j.error(format!(
                "`model_args.no_embed_class` is {b}, but {pos} has {t} positions for {}x{} \
                 patches ({})",
                size.0 / p,
                size.1 / p,
                if class_position {
                    "one of them for the class token"
                } else {
                    "none for the class token"
                }
            )));
        }
    }
    Ok((size, source, class_position))
}

/// The normalisation used when nothing else gives one: Google's ViT weights (and the AGCAM
/// paper's model) use 0.5 for mean and std.
const DEFAULT_MEAN_STD: [f32; 3] = [0.5; 3];

/// `--mean`/`--std` > config > `preprocessor_config.json` > 0.5; all finite, std positive.
/// Falling back to 0.5 adds a warning that names the flags, since DeiT and most timm ImageNet
/// models use other values.
fn resolve_mean_std(
    json: Option<&JsonConfig>,
    preprocessor: Option<&JsonConfig>,
    overrides: &ConfigOverrides,
    warnings: &mut Vec<String>,
) -> Result<([f32; 3], [f32; 3], String)> {
    let mean_ok = |v: &[f32; 3]| v.iter().all(|x| x.is_finite());
    let std_ok = |v: &[f32; 3]| v.iter().all(|x| x.is_finite() && *x > 0.0);
    let (cfg_mean, cfg_std) = match json {
        Some(j) => (j.mean()?, j.std()?),
        None => (None, None),
    };
    let processor = match preprocessor {
        Some(p) => p.processor_mean_std()?.map(|ms| (ms, p)),
        None => None,
    };
    // Where each came from: (0 flag | 1 config | 2 processor, key, file).
    let mut sources: Vec<(u8, String, String)> = Vec::new();
    let mut pick = |which: &str,
                    over: Option<[f32; 3]>,
                    from_cfg: Option<([f32; 3], &str)>,
                    from_processor: Option<[f32; 3]>,
                    ok: &dyn Fn(&[f32; 3]) -> bool,
                    rule: &str|
     -> Result<[f32; 3]> {
        if let Some(v) = over {
            if !ok(&v) {
                return Err(Error::Invalid(format!("--{which} {v:?}: {rule}")));
            }
            sources.push((0, format!("--{which}"), String::new()));
            return Ok(v);
        }
        if let (Some((v, key)), Some(j)) = (from_cfg, json) {
            if !ok(&v) {
                return Err(j.error(format!("`{key}` is {v:?}: {rule}")));
            }
            sources.push((1, format!("`{key}`"), j.path().display().to_string()));
            return Ok(v);
        }
        if let (Some(v), Some((_, p))) = (from_processor, processor) {
            if !ok(&v) {
                return Err(p.error(format!("the image processor's {which} is {v:?}: {rule}")));
            }
            sources.push((
                2,
                format!("`image_{which}`"),
                p.path().display().to_string(),
            ));
            return Ok(v);
        }
        let looked = match json {
            Some(j) => format!("{} gives no {which}", j.path().display()),
            None => "no config was found".to_string(),
        };
        sources.push((3, format!("default 0.5 ({looked})"), String::new()));
        Ok(DEFAULT_MEAN_STD)
    };
    let mean = pick(
        "mean",
        overrides.mean,
        cfg_mean,
        processor.map(|((m, _), _)| m),
        &mean_ok,
        "the values must be finite",
    )?;
    let std = pick(
        "std",
        overrides.std,
        cfg_std,
        processor.map(|((_, s), _)| s),
        &std_ok,
        "the values must be positive and finite",
    )?;
    let defaulted: Vec<&str> = sources
        .iter()
        .zip(["mean", "std"])
        .filter(|((from, _, _), _)| *from == 3)
        .map(|(_, which)| which)
        .collect();
    if !defaulted.is_empty() {
        warnings.push(format!(
            "normalisation {} not given by any config: using 0.5,0.5,0.5, right for Google's \
             ViT weights; DeiT and most ImageNet-trained timm models need \
             --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225",
            defaulted.join(" and ")
        ));
    }
    let show = |(_, key, file): &(u8, String, String)| {
        if file.is_empty() {
            key.clone()
        } else {
            format!("{key} in {file}")
        }
    };
    let source = match (&sources[0], &sources[1]) {
        ((a, km, fm), (b, ks, fs)) if a == b && fm == fs => {
            let keys = if km == ks {
                km.clone()
            } else {
                format!("{km}/{ks}")
            };
            if fm.is_empty() {
                keys
            } else {
                format!("{keys} in {fm}")
            }
        }
        (m, s) => format!("mean from {}, std from {}", show(m), show(s)),
    };
    Ok((mean, std, source))
}

/// Class names and where they came from: the config's names (placeholders such as
/// `LABEL_0` do not count), else the bundled ImageNet-1k list for 1000 classes, else none.
fn resolve_labels(
    reader: &Reader<'_, '_>,
    json: Option<&JsonConfig>,
    num_classes: usize,
) -> Result<(Option<Vec<String>>, String)> {
    let mut why_not = "no config names the classes".to_string();
    if let Some(j) = json {
        if let Some((labels, key)) = j.labels()? {
            if labels.len() != num_classes {
                return Err(j.error(format!(
                    "`{key}` lists {} labels, but the classifier head (`{}`) has {num_classes} \
                     classes",
                    labels.len(),
                    reader.name(Param::HeadW),
                )));
            }
            if !labels::are_placeholders(&labels) {
                return Ok((Some(labels), from_key(key, j)));
            }
            why_not = format!(
                "`{key}` in {} holds placeholders (LABEL_0, ...)",
                j.path().display()
            );
        }
    }
    if num_classes == 1000 {
        return Ok((
            Some(labels::imagenet_1k()),
            format!("the bundled ImageNet-1k list ({why_not}; 1000 classes)"),
        ));
    }
    Ok((None, format!("none: {why_not}")))
}

/// A test on a tensor name.
type Spot = fn(&str) -> bool;

/// What the tensor shapes say about the model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub embed_dim: usize,
    pub depth: usize,
    pub patch_size: usize,
    pub mlp_hidden: usize,
    pub num_classes: usize,
    /// Rows of the position embedding: one per patch, plus one for the class token unless the
    /// model is timm's `no_embed_class`.
    pub pos_tokens: usize,
}

/// What [`Reader::read_weights`] found besides the weights.
struct Read {
    weights: VitWeights,
    layer_scale: bool,
    qkv_bias: bool,
    pooling: Pooling,
}

/// Parameter access by role over one checkpoint and one naming scheme.
struct Reader<'c, 'a> {
    ckpt: &'c Checkpoint<'a>,
    naming: &'static dyn Naming,
    hint: Option<&'static str>,
}

impl Reader<'_, '_> {
    fn name(&self, p: Param) -> String {
        self.naming.name(p)
    }

    /// The checkpoint tensors that hold `p` (three for a split qkv, none when the scheme has no
    /// such parameter).
    fn tensor_names(&self, p: Param) -> Vec<String> {
        if !self.naming.has_param(p) {
            return Vec::new();
        }
        match self.naming.qkv_parts(p) {
            Some(parts) => parts.to_vec(),
            None => vec![self.name(p)],
        }
    }

    fn has(&self, p: Param) -> bool {
        self.naming.has_param(p) && self.ckpt.contains(&self.name(p))
    }

    fn missing_name(&self, name: &str) -> Error {
        let mut msg = format!("missing tensor `{name}`");
        if let Some(h) = self.hint {
            let _ = write!(msg, "; {h}");
        } else {
            let _ = write!(msg, " (expected {} naming)", self.naming.model_class());
        }
        Error::checkpoint(self.ckpt.path(), msg)
    }

    fn missing(&self, p: Param) -> Error {
        self.missing_name(&self.name(p))
    }

    /// The shape of a required tensor.
    fn shape(&self, p: Param) -> Result<Vec<usize>> {
        self.ckpt
            .shape(&self.name(p))
            .ok_or_else(|| self.missing(p))
    }

    fn shape_error(&self, p: Param, expected: Vec<usize>, actual: Vec<usize>) -> Error {
        Error::Shape {
            name: self.name(p),
            expected,
            actual,
        }
    }

    /// A required tensor of shape `expected`.
    fn req(&self, p: Param, expected: &[usize]) -> Result<HostTensor> {
        self.opt(p, expected)?.ok_or_else(|| self.missing(p))
    }

    /// An optional tensor of shape `expected`.
    fn opt(&self, p: Param, expected: &[usize]) -> Result<Option<HostTensor>> {
        self.ckpt.read_opt(&self.name(p), expected)
    }

    /// The fused qkv weight `[3D, D]` or bias `[3D]` of a block (`part` is `[D, D]` or `[D]`):
    /// one tensor, or the query, key and value tensors converted straight into one buffer.
    /// `None` when the checkpoint has none of it (a bias-free qkv).
    fn qkv(&self, p: Param, part: &[usize]) -> Result<Option<HostTensor>> {
        let mut fused = part.to_vec();
        fused[0] *= 3;
        let Some(names) = self.naming.qkv_parts(p) else {
            return self.opt(p, &fused);
        };
        let present: Vec<bool> = names.iter().map(|n| self.ckpt.contains(n)).collect();
        if present.iter().all(|&x| !x) {
            return Ok(None);
        }
        if let Some(i) = present.iter().position(|&x| !x) {
            let have: Vec<String> = names
                .iter()
                .zip(&present)
                .filter(|(_, &p)| p)
                .map(|(n, _)| format!("`{n}`"))
                .collect();
            let mut msg = format!(
                "missing tensor `{}`: the checkpoint has {} but not all three of query, key and \
                 value",
                names[i],
                have.join(" and ")
            );
            if self.hint.is_none() {
                let _ = write!(msg, " (expected {} naming)", self.naming.model_class());
            }
            return Err(Error::checkpoint(self.ckpt.path(), msg));
        }
        let mut data = Vec::with_capacity(fused.iter().product());
        for name in &names {
            self.ckpt.read_into(name, part, &mut data)?;
        }
        Ok(Some(HostTensor::new(fused, data)))
    }

    /// D, depth, P, F, C and the number of position rows, from the shapes alone.
    fn infer_dims(&self, names: &[&str]) -> Result<Dims> {
        // D from the class token [1, 1, D].
        if !self.has(Param::ClsToken) && self.has(Param::PosEmbed) {
            return Err(Error::checkpoint(
                self.ckpt.path(),
                format!(
                    "the checkpoint has no class token (`{}`): models without one (timm \
                     `class_token=False`, e.g. the `*_gap_*` ViTs) are not supported, since AGCAM \
                     reads the class token's attention row",
                    self.name(Param::ClsToken)
                ),
            ));
        }
        let cls = self.shape(Param::ClsToken)?;
        let embed_dim = match cls.as_slice() {
            [1, 1, d] if *d > 0 => *d,
            _ => {
                let d = cls.last().copied().unwrap_or(0).max(1);
                return Err(self.shape_error(Param::ClsToken, vec![1, 1, d], cls));
            }
        };
        let d = embed_dim;

        // Depth from the block indices: 0..L without gaps.
        let indices: BTreeSet<usize> = names
            .iter()
            .filter_map(|n| self.naming.block_index(n))
            .collect();
        let depth = indices.len();
        if depth == 0 {
            return Err(self.missing(Param::Block(0, BlockParam::QkvW)));
        }
        if let Some(gap) = (0..depth).find(|i| !indices.contains(i)) {
            let found: Vec<String> = indices.iter().map(usize::to_string).collect();
            return Err(Error::checkpoint(
                self.ckpt.path(),
                format!(
                    "transformer block indices are not consecutive: found blocks {}, but block {gap} \
                     is missing",
                    found.join(", ")
                ),
            ));
        }

        // P from the patch embedding [D, 3, P, P].
        let pw = self.shape(Param::PatchW)?;
        let patch_size = match pw.as_slice() {
            [dd, c, p, q] if *dd == d && *c != 3 && p == q => {
                return Err(Error::checkpoint(
                    self.ckpt.path(),
                    format!(
                        "`{}` takes {c} input channels; only RGB images (3 channels) are supported",
                        self.name(Param::PatchW)
                    ),
                ))
            }
            [dd, 3, p, q] if *dd == d && p == q && *p > 0 => *p,
            _ => {
                let p = pw.get(2).copied().unwrap_or(0).max(1);
                return Err(self.shape_error(Param::PatchW, vec![d, 3, p, p], pw));
            }
        };

        // F from the first block's fc1 [F, D].
        let fc1 = self.shape(Param::Block(0, BlockParam::Fc1W))?;
        let mlp_hidden = match fc1.as_slice() {
            [f, dd] if *dd == d && *f > 0 => *f,
            _ => {
                let f = fc1.first().copied().unwrap_or(0).max(1);
                return Err(self.shape_error(Param::Block(0, BlockParam::Fc1W), vec![f, d], fc1));
            }
        };

        // C from the head [C, D].
        if !self.has(Param::HeadW) {
            return Err(Error::checkpoint(
                self.ckpt.path(),
                format!(
                    "checkpoint has no classifier head (`{}`); AGCAM explains class logits, so it \
                     needs a classification model",
                    self.name(Param::HeadW)
                ),
            ));
        }
        let head = self.shape(Param::HeadW)?;
        let num_classes = match head.as_slice() {
            [c, dd] if *dd == d && *c > 0 => *c,
            _ => {
                let c = head.first().copied().unwrap_or(0).max(1);
                return Err(self.shape_error(Param::HeadW, vec![c, d], head));
            }
        };

        // Position rows from the position embedding [1, T, D].
        let pos = self.shape(Param::PosEmbed)?;
        let pos_tokens = match pos.as_slice() {
            [1, t, dd] if *dd == d && *t >= 1 => *t,
            _ => {
                let t = pos.get(1).copied().unwrap_or(0).max(2);
                return Err(self.shape_error(Param::PosEmbed, vec![1, t, d], pos));
            }
        };

        Ok(Dims {
            embed_dim,
            depth,
            patch_size,
            mlp_hidden,
            num_classes,
            pos_tokens,
        })
    }

    /// Fails on tensors that the model does not use: they mean an architecture this loader would
    /// silently get wrong (distillation tokens, registers, QK-norm, ...).
    fn check_unexpected(&self, names: &[&str], depth: usize) -> Result<()> {
        use BlockParam::*;
        let mut params = vec![
            Param::ClsToken,
            Param::PosEmbed,
            Param::PatchW,
            Param::PatchB,
            Param::NormW,
            Param::NormB,
            Param::FcNormW,
            Param::FcNormB,
            Param::HeadW,
            Param::HeadB,
        ];
        for i in 0..depth {
            for bp in [
                Norm1W, Norm1B, QkvW, QkvB, ProjW, ProjB, Ls1, Norm2W, Norm2B, Fc1W, Fc1B, Fc2W,
                Fc2B, Ls2,
            ] {
                params.push(Param::Block(i, bp));
            }
        }
        let known: BTreeSet<String> = params
            .into_iter()
            .flat_map(|p| self.tensor_names(p))
            .collect();
        let unexpected: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !known.contains(*n))
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        // Extras that change the forward pass: how to spot them, and what they mean.
        let known_extras: [(Spot, &str); 6] = [
            (
                |n| n.starts_with("reg_token"),
                "this model has register tokens (`reg_token`)",
            ),
            (
                |n| n.contains(".q_norm.") || n.contains(".k_norm."),
                "this model uses QK normalisation (`attn.q_norm`, `attn.k_norm`)",
            ),
            (
                |n| n.starts_with("norm_pre."),
                "this model has a pre-transformer norm (`norm_pre`, as in CLIP ViTs)",
            ),
            (
                |n| n.starts_with("attn_pool."),
                "this model pools with an attention head (`attn_pool`, as in SigLIP)",
            ),
            (
                |n| n.starts_with("patch_embed.backbone."),
                "this is a hybrid ViT with a CNN stem (`patch_embed.backbone`)",
            ),
            (
                |n| n.starts_with("vit.pooler."),
                "this Hugging Face checkpoint has a pooler (`vit.pooler`), as ViTModel with a \
                 pooling layer does; ViTForImageClassification has none",
            ),
        ];
        let known_extra = known_extras.iter().find_map(|(spot, what)| {
            unexpected
                .iter()
                .any(|n| spot(n))
                .then(|| format!("{what}, which is not supported"))
        });
        let what = known_extra
            .or_else(|| self.hint.map(str::to_string))
            .unwrap_or_else(|| {
                format!(
                    "this model has parts a plain {} does not have",
                    self.naming.model_class()
                )
            });
        let shown: Vec<String> = unexpected
            .iter()
            .take(5)
            .map(|n| format!("`{n}`"))
            .collect();
        let more = if unexpected.len() > 5 {
            format!(" and {} more", unexpected.len() - 5)
        } else {
            String::new()
        };
        Err(Error::checkpoint(
            self.ckpt.path(),
            format!("unexpected tensors {}{more}: {what}", shown.join(", ")),
        ))
    }

    /// Reads every tensor, each converted once straight into its final buffer.
    fn read_weights(
        &self,
        dims: &Dims,
        class_position: bool,
        config_pool: Option<Pooling>,
        json: Option<&JsonConfig>,
    ) -> Result<Read> {
        let Dims {
            embed_dim: d,
            depth,
            patch_size: p,
            mlp_hidden: f,
            num_classes: c,
            pos_tokens: t,
        } = *dims;

        let layer_scale = self.layer_scale(depth)?;
        let (pooling, norm_w_param, norm_b_param) = self.pooling(config_pool, json, d)?;

        let mut cls_token = self.req(Param::ClsToken, &[1, 1, d])?;
        cls_token.shape = vec![d];
        // Without a class-token row (no_embed_class) the class token gets a zero position: the
        // same model, in the engine's layout.
        let n = if class_position { t } else { t + 1 };
        let mut pos = Vec::with_capacity(n * d);
        if !class_position {
            pos.resize(d, 0.0);
        }
        if !self
            .ckpt
            .read_into(&self.name(Param::PosEmbed), &[1, t, d], &mut pos)?
        {
            return Err(self.missing(Param::PosEmbed));
        }
        let pos_embed = HostTensor::new(vec![n, d], pos);
        let patch_w = self.req(Param::PatchW, &[d, 3, p, p])?;
        let patch_b = self.req(Param::PatchB, &[d])?;

        let mut blocks = Vec::with_capacity(depth);
        let mut biases = Vec::with_capacity(depth);
        for i in 0..depth {
            let (block, bias) = self.read_block(i, d, f, layer_scale)?;
            blocks.push(block);
            biases.push(bias);
        }
        // A qkv bias in some blocks only is a damaged file, not a model variant.
        if let Some(i) = biases.iter().position(|&x| x != biases[0]) {
            let (with, without) = if biases[0] { (0, i) } else { (i, 0) };
            return Err(Error::checkpoint(
                self.ckpt.path(),
                format!(
                    "the qkv bias is mixed: block {with} has one, block {without} has none \
                     (`{}` is missing); a model has it in every block or in none",
                    self.tensor_names(Param::Block(without, BlockParam::QkvB))[0]
                ),
            ));
        }

        let norm_w = self.req(norm_w_param, &[d])?;
        let norm_b = self.req(norm_b_param, &[d])?;
        let head_w = self.req(Param::HeadW, &[c, d])?;
        let head_b = self.req(Param::HeadB, &[c])?;

        let weights = VitWeights {
            patch_w,
            patch_b,
            cls_token,
            pos_embed,
            blocks,
            norm_w,
            norm_b,
            head_w,
            head_b,
        };
        Ok(Read {
            weights,
            layer_scale,
            qkv_bias: biases[0],
            pooling,
        })
    }

    /// Block `i`'s weights, and whether it has a qkv bias (zeros stand in when not).
    fn read_block(
        &self,
        i: usize,
        d: usize,
        f: usize,
        layer_scale: bool,
    ) -> Result<(BlockWeights, bool)> {
        let b = |bp| Param::Block(i, bp);
        use BlockParam::*;
        let ls = |bp| -> Result<Option<HostTensor>> {
            if layer_scale {
                self.req(b(bp), &[d]).map(Some)
            } else {
                Ok(None)
            }
        };
        let qkv_w = self
            .qkv(b(QkvW), &[d, d])?
            .ok_or_else(|| self.missing(b(QkvW)))?;
        let qkv_b = self.qkv(b(QkvB), &[d])?;
        let has_bias = qkv_b.is_some();
        let block = BlockWeights {
            norm1_w: self.req(b(Norm1W), &[d])?,
            norm1_b: self.req(b(Norm1B), &[d])?,
            qkv_w,
            qkv_b: qkv_b.unwrap_or_else(|| HostTensor::new(vec![3 * d], vec![0.0; 3 * d])),
            proj_w: self.req(b(ProjW), &[d, d])?,
            proj_b: self.req(b(ProjB), &[d])?,
            ls1: ls(Ls1)?,
            norm2_w: self.req(b(Norm2W), &[d])?,
            norm2_b: self.req(b(Norm2B), &[d])?,
            fc1_w: self.req(b(Fc1W), &[f, d])?,
            fc1_b: self.req(b(Fc1B), &[f])?,
            fc2_w: self.req(b(Fc2W), &[d, f])?,
            fc2_b: self.req(b(Fc2B), &[d])?,
            ls2: ls(Ls2)?,
        };
        Ok((block, has_bias))
    }

    /// Whether the blocks carry layer scale: all of `ls1`/`ls2` in every block, or none.
    fn layer_scale(&self, depth: usize) -> Result<bool> {
        let mut with = Vec::new();
        let mut without = Vec::new();
        for i in 0..depth {
            for bp in [BlockParam::Ls1, BlockParam::Ls2] {
                let p = Param::Block(i, bp);
                if !self.naming.has_param(p) {
                    continue;
                }
                let name = self.name(p);
                if self.ckpt.contains(&name) {
                    with.push(name);
                } else {
                    without.push(name);
                }
            }
        }
        match (with.first(), without.first()) {
            (Some(_), Some(absent)) => Err(Error::checkpoint(
                self.ckpt.path(),
                format!(
                    "layer scale is mixed: {} layer-scale tensors present (e.g. `{}`) but `{absent}` \
                     is missing; a model has layer scale in every block or in none",
                    with.len(),
                    with[0]
                ),
            )),
            (Some(_), None) => Ok(true),
            _ => Ok(false),
        }
    }

    /// The pooling, and which final LayerNorm feeds the head.
    fn pooling(
        &self,
        config_pool: Option<Pooling>,
        json: Option<&JsonConfig>,
        d: usize,
    ) -> Result<(Pooling, Param, Param)> {
        let has_norm = self.has(Param::NormW) || self.has(Param::NormB);
        let has_fc_norm = self.has(Param::FcNormW) || self.has(Param::FcNormB);
        let fc = (Pooling::Avg, Param::FcNormW, Param::FcNormB);
        let file_says = match (has_norm, has_fc_norm) {
            (false, false) => return Err(self.missing(Param::NormW)),
            (true, false) => (Pooling::Token, Param::NormW, Param::NormB),
            (false, true) => fc,
            (true, true) => {
                // Average pooling reads `fc_norm`; a `norm` before it must be the identity.
                let w = self.req(Param::NormW, &[d])?;
                let b = self.req(Param::NormB, &[d])?;
                if w.data.iter().all(|&x| x == 1.0) && b.data.iter().all(|&x| x == 0.0) {
                    fc
                } else {
                    return Err(Error::checkpoint(
                        self.ckpt.path(),
                        format!(
                            "the checkpoint has both a final `{}` and an `{}`; a LayerNorm before \
                             average pooling is not supported unless it is the identity",
                            self.name(Param::NormW),
                            self.name(Param::FcNormW)
                        ),
                    ));
                }
            }
        };
        match (config_pool, file_says.0) {
            (Some(Pooling::Token), Pooling::Avg) => Err(self.config_or_ckpt(
                json,
                format!(
                    "the config says `global_pool` \"token\", but the checkpoint has `{}` and no \
                     final `{}` (an average-pooled model)",
                    self.name(Param::FcNormW),
                    self.name(Param::NormW)
                ),
            )),
            (Some(Pooling::Avg), Pooling::Token) => Err(self.config_or_ckpt(
                json,
                format!(
                    "the config says `global_pool` \"avg\", but the checkpoint has a final `{}` and \
                     no `{}`; average pooling after a full LayerNorm is not supported",
                    self.name(Param::NormW),
                    self.name(Param::FcNormW)
                ),
            )),
            _ => Ok(file_says),
        }
    }

    fn config_or_ckpt(&self, json: Option<&JsonConfig>, msg: String) -> Error {
        match json {
            Some(j) => j.error(msg),
            None => Error::checkpoint(self.ckpt.path(), msg),
        }
    }
}

impl Model {
    /// A multi-line, human-readable description of the model (for `agcam inspect`): the
    /// architecture, and what was detected from which file.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let src = &self.provenance;
        let (gh, gw) = c.grid();
        let params = self.weights.num_params();
        let labels = match &c.labels {
            Some(l) => format!("known ({} names)", l.len()),
            None => "not known (class indices only)".to_string(),
        };
        let pooling = match c.pooling {
            Pooling::Token => "class token",
            Pooling::Avg => "average of patch tokens",
        };
        let file = |p: &Option<PathBuf>| match p {
            Some(p) => p.display().to_string(),
            None => "none".to_string(),
        };
        let mut rows: Vec<(&str, String)> = vec![
            ("model", c.name.clone()),
            ("format", src.format.clone()),
            ("weights", file(&src.weights)),
            ("config", file(&src.config)),
        ];
        if src.preprocessor.is_some() {
            rows.push(("preprocessor", file(&src.preprocessor)));
        }
        rows.extend([
            ("embed dim (D)", c.embed_dim.to_string()),
            ("depth (L)", c.depth.to_string()),
            (
                "heads (H)",
                with_source(c.num_heads.to_string(), &src.heads),
            ),
            ("head dim", c.head_dim().to_string()),
            ("MLP width (F)", c.mlp_hidden.to_string()),
            ("patch size", format!("{0}x{0} px", c.patch_size)),
            (
                "image size",
                with_source(
                    format!("{}x{} px (HxW)", c.image_size.0, c.image_size.1),
                    &src.image_size,
                ),
            ),
            ("patch grid", format!("{gh}x{gw}")),
            (
                "tokens (N)",
                format!("{} (class token + {} patches)", c.tokens(), gh * gw),
            ),
            ("classes (C)", c.num_classes.to_string()),
            ("pooling", pooling.to_string()),
            (
                "layer scale",
                if c.layer_scale { "yes" } else { "no" }.to_string(),
            ),
            ("LayerNorm eps", format!("{:e}", c.layer_norm_eps)),
            (
                "mean / std",
                with_source(format!("{:?} / {:?}", c.mean, c.std), &src.preprocessing),
            ),
            ("labels", with_source(labels, &src.labels)),
            (
                "parameters",
                format!("{params} ({:.1} M)", params as f64 / 1e6),
            ),
        ]);
        for note in &src.notes {
            rows.push(("note", note.clone()));
        }
        let mut s = String::new();
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<15}{v}");
        }
        s
    }
}

/// "value (from source)", or the value alone when the source is unknown.
fn with_source(value: String, source: &str) -> String {
    if source.is_empty() {
        value
    } else {
        format!("{value} (from {source})")
    }
}
