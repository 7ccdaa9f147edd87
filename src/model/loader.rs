//! Reads a safetensors checkpoint (timm or Hugging Face naming) and its JSON configs into a
//! [`Model`].
//!
//! The dimensions come from the tensors themselves (D from the class token, P from the patch
//! embedding, F from the first MLP layer, C from the head, the number of positions from the
//! position embedding, the depth from the block indices); the configs and the user's overrides
//! supply what shapes cannot say (heads, image size for non-square grids, preprocessing,
//! labels), and whatever they state about the shapes is checked against them (`family`). Every
//! tensor is then read against the shape those dimensions imply.
//!
//! This file holds the order of those steps, [`Model`] and its [`Provenance`]; the steps live
//! beside it: `dims` (what the shapes say), `settings` (what the flags and configs say), and
//! `reader` (the tensors themselves).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::checkpoint::MappedFile;
use super::family;
use super::naming::{self, BlockParam, Param};
use super::reader::Reader;
use super::settings::{resolve_heads, resolve_image_size, resolve_labels, resolve_mean_std};
use super::source::{self, Sources};
use super::{ConfigOverrides, ModelConfig, Pooling, VitWeights};
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
