//! The settings a checkpoint's tensor shapes cannot say (attention heads, input size, mean and
//! std, class names), each resolved from the user's flags, then the JSON configs, then what the
//! shapes allow, together with a phrase saying where it came from for [`Provenance`].
//!
//! They sit apart from the tensor reading because they follow one rule of their own: a flag wins
//! over a config, which wins over a default, and a value that does not fit the tensors is an
//! error naming its source.
//!
//! [`Provenance`]: super::Provenance

use super::config_file::JsonConfig;
use super::dims::Dims;
use super::labels;
use super::naming::Param;
use super::reader::Reader;
use super::ConfigOverrides;
use crate::error::{Error, Result};

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
pub(super) fn resolve_heads(
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
pub(super) fn resolve_image_size(
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
                // The assumed image size, which the shapes alone do not show.
                return Err(Error::Shape {
                    path: reader.ckpt.path().to_path_buf(),
                    name: pos,
                    why: format!(
                        " (the image size {}x{} from {source} makes {gh}x{gw} patches of {p} px)",
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
pub(super) fn resolve_mean_std(
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
pub(super) fn resolve_labels(
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
