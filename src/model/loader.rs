//! Reads a safetensors checkpoint (timm naming) and its optional JSON config into a [`Model`].
//!
//! The dimensions come from the tensors themselves (D from `cls_token`, P from the patch
//! embedding, F from `fc1`, C from the head, the number of patch positions from `pos_embed`, the
//! depth from the block indices); the config and the user's overrides supply what shapes cannot
//! say (heads, image size for non-square grids, preprocessing, labels). Every tensor is then read
//! against the shape those dimensions imply.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use super::checkpoint::{Checkpoint, MappedFile};
use super::config_file::{find_config, JsonConfig};
use super::naming::{self, BlockParam, Naming, Param};
use super::{BlockWeights, ConfigOverrides, HostTensor, ModelConfig, Pooling, VitWeights};
use crate::error::{Error, Result};

/// A loaded checkpoint: its configuration and host-side f32 weights.
#[derive(Debug, Clone)]
pub struct Model {
    /// Architecture, preprocessing and labels.
    pub config: ModelConfig,
    /// The weights, shape-checked against `config`.
    pub weights: VitWeights,
}

/// Loads `weights` (a `.safetensors` file in timm `VisionTransformer` naming), with an optional
/// sidecar JSON `config`.
///
/// Without `config`, `<weights stem>.json` and then `config.json` next to the weights are used when
/// present. Settings in `overrides` win over the config, which wins over what the tensor shapes
/// imply. Tensors in F32, F16, BF16 or F64 are converted to f32; every shape is checked.
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
    let file = MappedFile::open(weights)?;
    let ckpt = file.parse()?;
    let json = find_config(weights, config)?;
    let names = ckpt.names();
    let reader = Reader {
        ckpt: &ckpt,
        naming: naming::detect(names.iter().copied()),
        hint: naming::foreign_layout_hint(names.iter().copied()),
    };
    let dims = reader.infer_dims(&names)?;
    reader.check_unexpected(&names, dims.depth)?;

    let num_heads = resolve_heads(&reader, json.as_ref(), overrides, dims.embed_dim)?;
    let image_size = resolve_image_size(&reader, json.as_ref(), overrides, &dims)?;
    let (mean, std) = resolve_mean_std(json.as_ref(), overrides)?;
    let labels = match &json {
        Some(j) => match j.labels()? {
            Some((labels, key)) if labels.len() != dims.num_classes => {
                return Err(j.error(format!(
                    "`{key}` lists {} labels, but the classifier head (`{}`) has {} classes",
                    labels.len(),
                    reader.name(Param::HeadW),
                    dims.num_classes
                )))
            }
            other => other.map(|(labels, _)| labels),
        },
        None => None,
    };
    let layer_norm_eps = match &json {
        Some(j) => j.layer_norm_eps()?,
        None => None,
    }
    .unwrap_or(1e-6);
    let config_pool = match &json {
        Some(j) => j.pooling()?,
        None => None,
    };
    let name = match &json {
        Some(j) => j.architecture()?,
        None => None,
    }
    .or_else(|| {
        weights
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    })
    .unwrap_or_else(|| "model".to_string());

    let (weights_out, layer_scale, pooling) =
        reader.read_weights(&dims, config_pool, json.as_ref())?;

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
        layer_scale,
        pooling,
        mean,
        std,
        labels,
    };
    Ok(Model {
        config,
        weights: weights_out,
    })
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
) -> Result<usize> {
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
        return Ok(h);
    }
    if let Some(j) = json {
        if let Some((h, key)) = j.num_heads()? {
            if !d.is_multiple_of(h) {
                return Err(j.error(not_divisible(h, &format!("`{key}` in the config"))));
            }
            return Ok(h);
        }
    }
    standard_heads(d).ok_or_else(|| {
        Error::checkpoint(
            reader.ckpt.path(),
            format!(
                "cannot infer the number of attention heads for embed dim D={d}: \
                 pass --heads N or a config.json with num_heads"
            ),
        )
    })
}

/// `--image-size` > config > the square grid of `pos_embed`; checked against `pos_embed`.
fn resolve_image_size(
    reader: &Reader<'_, '_>,
    json: Option<&JsonConfig>,
    overrides: &ConfigOverrides,
    dims: &Dims,
) -> Result<(usize, usize)> {
    let p = dims.patch_size;
    let n = dims.num_patches;
    let fits =
        |s: (usize, usize)| s.0 > 0 && s.1 > 0 && s.0.is_multiple_of(p) && s.1.is_multiple_of(p);
    let from_config = match json {
        Some(j) => j.image_size()?.map(|(s, key)| (s, key, j)),
        None => None,
    };
    // The size and where it came from.
    let (size, source): ((usize, usize), String) = if let Some(s) = overrides.image_size {
        if !fits(s) {
            return Err(Error::Invalid(format!(
                "--image-size {}x{} is not a positive multiple of the patch size {p}",
                s.0, s.1
            )));
        }
        (s, "--image-size".to_string())
    } else if let Some((s, key, j)) = from_config {
        if !fits(s) {
            return Err(j.error(format!(
                "`{key}` gives an image size of {}x{}, which is not a positive multiple of the \
                 patch size {p}",
                s.0, s.1
            )));
        }
        (s, format!("{key} in {}", j.path().display()))
    } else {
        let g = n.isqrt();
        if g * g != n {
            let mut msg = format!(
                "{} holds {n} patch positions, which is not a square grid: pass --image-size HxW \
                 or a config with img_size",
                reader.name(Param::PosEmbed)
            );
            let all = n + 1;
            if all.isqrt().pow(2) == all {
                let _ = write!(
                    msg,
                    " (its {all} positions in all make a square: a model without a class-token \
                     position, timm's `no_embed_class`, is not supported)"
                );
            }
            return Err(Error::checkpoint(reader.ckpt.path(), msg));
        }
        ((g * p, g * p), "the square grid of pos_embed".to_string())
    };
    let (gh, gw) = (size.0 / p, size.1 / p);
    if gh.checked_mul(gw) != Some(n) {
        // The name carries the assumed image size, which the shapes alone do not show.
        return Err(Error::Shape {
            name: format!(
                "{} (assuming image size {}x{} from {source}: {gh}x{gw} patches of {p} px)",
                reader.name(Param::PosEmbed),
                size.0,
                size.1
            ),
            expected: vec![1, gh.saturating_mul(gw).saturating_add(1), dims.embed_dim],
            actual: vec![1, 1 + n, dims.embed_dim],
        });
    }
    Ok(size)
}

/// `--mean`/`--std` > config > 0.5; all finite, std positive.
fn resolve_mean_std(
    json: Option<&JsonConfig>,
    overrides: &ConfigOverrides,
) -> Result<([f32; 3], [f32; 3])> {
    let mean_ok = |v: &[f32; 3]| v.iter().all(|x| x.is_finite());
    let std_ok = |v: &[f32; 3]| v.iter().all(|x| x.is_finite() && *x > 0.0);
    let (cfg_mean, cfg_std) = match json {
        Some(j) => (j.mean()?, j.std()?),
        None => (None, None),
    };
    let pick = |which: &str,
                over: Option<[f32; 3]>,
                from_cfg: Option<([f32; 3], &str)>,
                ok: &dyn Fn(&[f32; 3]) -> bool,
                rule: &str|
     -> Result<[f32; 3]> {
        match (over, from_cfg, json) {
            (Some(v), _, _) if !ok(&v) => Err(Error::Invalid(format!("--{which} {v:?}: {rule}"))),
            (Some(v), _, _) => Ok(v),
            (None, Some((v, key)), Some(j)) if !ok(&v) => {
                Err(j.error(format!("`{key}` is {v:?}: {rule}")))
            }
            (None, Some((v, _)), _) => Ok(v),
            (None, None, _) => Ok([0.5; 3]),
        }
    };
    let mean = pick(
        "mean",
        overrides.mean,
        cfg_mean,
        &mean_ok,
        "the values must be finite",
    )?;
    let std = pick(
        "std",
        overrides.std,
        cfg_std,
        &std_ok,
        "the values must be positive and finite",
    )?;
    Ok((mean, std))
}

/// A test on a tensor name.
type Spot = fn(&str) -> bool;

/// What the tensor shapes say about the model.
#[derive(Debug, Clone, Copy)]
struct Dims {
    embed_dim: usize,
    depth: usize,
    patch_size: usize,
    mlp_hidden: usize,
    num_classes: usize,
    /// Patch positions in `pos_embed` (its token count minus the class token).
    num_patches: usize,
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

    fn has(&self, p: Param) -> bool {
        self.ckpt.contains(&self.name(p))
    }

    fn missing(&self, p: Param) -> Error {
        let mut msg = format!("missing tensor `{}`", self.name(p));
        if let Some(h) = self.hint {
            let _ = write!(msg, "; {h}");
        } else {
            let _ = write!(
                msg,
                " (expected {} VisionTransformer naming)",
                self.naming.scheme()
            );
        }
        Error::checkpoint(self.ckpt.path(), msg)
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

    /// D, depth, P, F, C and the number of patch positions, from the shapes alone.
    fn infer_dims(&self, names: &[&str]) -> Result<Dims> {
        // D from the class token [1, 1, D].
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

        // Patch positions from pos_embed [1, 1 + n, D].
        let pos = self.shape(Param::PosEmbed)?;
        let num_patches = match pos.as_slice() {
            [1, t, dd] if *dd == d && *t >= 2 => t - 1,
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
            num_patches,
        })
    }

    /// Fails on tensors that the model does not use: they mean an architecture this loader would
    /// silently get wrong (distillation tokens, registers, QK-norm, ...).
    fn check_unexpected(&self, names: &[&str], depth: usize) -> Result<()> {
        use BlockParam::*;
        let mut known: BTreeSet<String> = [
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
        ]
        .into_iter()
        .map(|p| self.name(p))
        .collect();
        for i in 0..depth {
            for bp in [
                Norm1W, Norm1B, QkvW, QkvB, ProjW, ProjB, Ls1, Norm2W, Norm2B, Fc1W, Fc1B, Fc2W,
                Fc2B, Ls2,
            ] {
                known.insert(self.name(Param::Block(i, bp)));
            }
        }
        let unexpected: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !known.contains(*n))
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        // timm extras that change the forward pass: how to spot them, and what they mean.
        let known_extras: [(Spot, &str); 4] = [
            (
                |n| n.starts_with("dist_token") || n.starts_with("head_dist."),
                "this looks like a distilled DeiT (`dist_token`, `head_dist`)",
            ),
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
                    "this model has parts a plain {} VisionTransformer does not have",
                    self.naming.scheme()
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

    /// Reads every tensor; returns the weights, the layer-scale flag and the pooling.
    fn read_weights(
        &self,
        dims: &Dims,
        config_pool: Option<Pooling>,
        json: Option<&JsonConfig>,
    ) -> Result<(VitWeights, bool, Pooling)> {
        let Dims {
            embed_dim: d,
            depth,
            patch_size: p,
            mlp_hidden: f,
            num_classes: c,
            num_patches: n,
        } = *dims;

        let layer_scale = self.layer_scale(depth)?;
        let (pooling, norm_w_param, norm_b_param) = self.pooling(config_pool, json, d)?;

        let mut cls_token = self.req(Param::ClsToken, &[1, 1, d])?;
        cls_token.shape = vec![d];
        let mut pos_embed = self.req(Param::PosEmbed, &[1, 1 + n, d])?;
        pos_embed.shape = vec![1 + n, d];
        let patch_w = self.req(Param::PatchW, &[d, 3, p, p])?;
        let patch_b = self.req(Param::PatchB, &[d])?;

        let mut blocks = Vec::with_capacity(depth);
        for i in 0..depth {
            let b = |bp| Param::Block(i, bp);
            use BlockParam::*;
            let ls = |bp| -> Result<Option<HostTensor>> {
                if layer_scale {
                    self.req(b(bp), &[d]).map(Some)
                } else {
                    Ok(None)
                }
            };
            blocks.push(BlockWeights {
                norm1_w: self.req(b(Norm1W), &[d])?,
                norm1_b: self.req(b(Norm1B), &[d])?,
                qkv_w: self.req(b(QkvW), &[3 * d, d])?,
                qkv_b: self
                    .opt(b(QkvB), &[3 * d])?
                    .unwrap_or_else(|| HostTensor::new(vec![3 * d], vec![0.0; 3 * d])),
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
            });
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
        Ok((weights, layer_scale, pooling))
    }

    /// Whether the blocks carry layer scale: all of `ls1`/`ls2` in every block, or none.
    fn layer_scale(&self, depth: usize) -> Result<bool> {
        let mut with = Vec::new();
        let mut without = Vec::new();
        for i in 0..depth {
            for bp in [BlockParam::Ls1, BlockParam::Ls2] {
                let name = self.name(Param::Block(i, bp));
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
    /// A multi-line, human-readable description of the model (for `agcam inspect`).
    pub fn summary(&self) -> String {
        let c = &self.config;
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
        let rows: [(&str, String); 17] = [
            ("model", c.name.clone()),
            ("embed dim (D)", c.embed_dim.to_string()),
            ("depth (L)", c.depth.to_string()),
            ("heads (H)", c.num_heads.to_string()),
            ("head dim", c.head_dim().to_string()),
            ("MLP width (F)", c.mlp_hidden.to_string()),
            ("patch size", format!("{0}x{0} px", c.patch_size)),
            (
                "image size",
                format!("{}x{} px (HxW)", c.image_size.0, c.image_size.1),
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
            ("mean / std", format!("{:?} / {:?}", c.mean, c.std)),
            ("labels", labels),
            (
                "parameters",
                format!("{params} ({:.1} M)", params as f64 / 1e6),
            ),
        ];
        let mut s = String::new();
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<15}{v}");
        }
        s
    }
}
