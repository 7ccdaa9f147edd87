//! Which member of the ViT family a checkpoint is, as its config tells: the architecture hint
//! must name a supported model, the config must describe the tensors that are actually there,
//! and keys that select an unsupported variant are refused with a reason.
//!
//! Supported: timm `VisionTransformer` (`vit_*`, `deit_*`, `deit3_*`, `flexivit_*`: class token,
//! optional layer scale, optional qkv bias, `no_embed_class`, token or `avg` + `fc_norm` pooling)
//! and Hugging Face `ViTForImageClassification` (`model_type` "vit").

use super::config_file::{Flavour, JsonConfig};
use super::dims::Dims;
use super::naming::Naming;
use crate::error::Result;

/// timm architecture name prefixes of `VisionTransformer` models.
const TIMM_FAMILIES: &[&str] = &["vit_", "deit_", "deit3_", "flexivit_"];

/// The distilled-DeiT refusal, shared by tensor and config detection.
pub(crate) const DISTILLED: &str = "unsupported: distilled DeiT (class + distillation token)";

/// Checks the config's architecture hints and variant switches against the naming scheme the
/// tensors use, before any shape is looked at.
pub(crate) fn check_hints(j: &JsonConfig, naming: &dyn Naming) -> Result<()> {
    let flavour = j.flavour();
    let hf_tensors = naming.scheme() == "Hugging Face";
    match (flavour, hf_tensors) {
        (Flavour::HuggingFace, false) => {
            return Err(j.error(format!(
                "this is a Hugging Face config (`architectures`/`model_type`), but the \
                 checkpoint's tensors use {} names; pass the config that belongs to the \
                 checkpoint with --config",
                naming.scheme()
            )))
        }
        (Flavour::Timm, true) => {
            return Err(j.error(
                "this is a timm config (`architecture`/`pretrained_cfg`/`model_args`), but the \
                 checkpoint's tensors use Hugging Face names (`vit.encoder.layer...`); pass the \
                 Hugging Face config.json with --config",
            ))
        }
        _ => {}
    }

    if let Some(arch) = j.str_at("architecture")? {
        if arch.contains("distilled") {
            return Err(j.error(format!(
                "`architecture` is \"{arch}\": {DISTILLED}; use the non-distilled model"
            )));
        }
        if !TIMM_FAMILIES.iter().any(|p| arch.starts_with(p)) {
            return Err(j.error(format!(
                "unknown architecture \"{arch}\" (`architecture`): agcam reads timm \
                 VisionTransformer models ({}) and Hugging Face ViTForImageClassification; if \
                 this checkpoint is a plain ViT all the same, correct `architecture` or pass \
                 --config with a config that does",
                TIMM_FAMILIES
                    .iter()
                    .map(|p| format!("`{p}*`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if let Some(kind) = j.str_at("model_type")? {
        match kind {
            "vit" => {}
            "deit" => {
                return Err(j.error(format!(
                    "`model_type` is \"deit\": {DISTILLED} (Hugging Face DeiT models always \
                     carry the distillation token)"
                )))
            }
            other => {
                return Err(j.error(format!(
                    "unknown architecture: `model_type` is \"{other}\"; agcam reads Hugging Face \
                     ViT checkpoints (`model_type` \"vit\", ViTForImageClassification) and timm \
                     VisionTransformer checkpoints"
                )))
            }
        }
    }
    for arch in j.strings_at("architectures")?.unwrap_or_default() {
        if arch.starts_with("DeiT") {
            return Err(j.error(format!("`architectures` names {arch}: {DISTILLED}")));
        }
        if arch != "ViTForImageClassification" {
            return Err(j.error(format!(
                "unknown architecture: `architectures` names \"{arch}\"; agcam reads \
                 ViTForImageClassification (a classifier on the class token)"
            )));
        }
    }

    // Activation: the engine's MLP is the exact erf GELU.
    for key in ["hidden_act", "model_args.act_layer"] {
        if let Some(act) = j.str_at(key)? {
            if act != "gelu" {
                return Err(j.error(format!(
                    "`{key}` is \"{act}\": unsupported activation; agcam implements the exact \
                     (erf) GELU, \"gelu\" (\"gelu_new\", \"gelu_pytorch_tanh\" and \"quick_gelu\" \
                     are approximations that would change every map)"
                )));
            }
        }
    }

    // timm switches that select an unsupported variant.
    if j.bool_at("model_args.class_token")? == Some(false) {
        return Err(j.error(
            "`model_args.class_token` is false: a model without a class token is not supported \
             (AGCAM reads the class token's attention row)",
        ));
    }
    if let Some(n) = j.usize_at("model_args.reg_tokens")? {
        if n > 0 {
            return Err(j.error(format!(
                "`model_args.reg_tokens` is {n}: register tokens are not supported (the engine \
                 assumes one prefix token)"
            )));
        }
    }
    for (key, what) in [
        ("model_args.qk_norm", "QK normalisation"),
        ("model_args.pre_norm", "a pre-transformer norm (`norm_pre`)"),
        (
            "model_args.pool_include_prefix",
            "average pooling that includes the class token",
        ),
    ] {
        if j.bool_at(key)? == Some(true) {
            return Err(j.error(format!("`{key}` is true: {what} is not supported")));
        }
    }
    Ok(())
}

/// Checks every dimension the config states against what the tensors say.
pub(crate) fn check_dims(j: &JsonConfig, naming: &dyn Naming, dims: &Dims) -> Result<()> {
    let cls = naming.name(super::naming::Param::ClsToken);
    let fc1 = naming.name(super::naming::Param::Block(
        0,
        super::naming::BlockParam::Fc1W,
    ));
    let head = naming.name(super::naming::Param::HeadW);
    let patch = naming.name(super::naming::Param::PatchW);
    let d = dims.embed_dim;
    let checks: [(&str, usize, String); 8] = [
        ("hidden_size", d, format!("D = {d} (`{cls}`)")),
        ("model_args.embed_dim", d, format!("D = {d} (`{cls}`)")),
        ("num_features", d, format!("D = {d} (`{cls}`)")),
        (
            "num_hidden_layers",
            dims.depth,
            format!("{} transformer blocks", dims.depth),
        ),
        (
            "model_args.depth",
            dims.depth,
            format!("{} transformer blocks", dims.depth),
        ),
        (
            "intermediate_size",
            dims.mlp_hidden,
            format!("an MLP width of {} (`{fc1}`)", dims.mlp_hidden),
        ),
        (
            "num_classes",
            dims.num_classes,
            format!("{} classes (`{head}`)", dims.num_classes),
        ),
        (
            "model_args.num_classes",
            dims.num_classes,
            format!("{} classes (`{head}`)", dims.num_classes),
        ),
    ];
    for (key, actual, what) in checks {
        if let Some(v) = j.usize_at(key)? {
            if v != actual {
                return Err(j.error(format!(
                    "`{key}` is {v}, but the checkpoint has {what}: the config does not belong \
                     to these weights"
                )));
            }
        }
    }
    if let Some(r) = j.f64_at("model_args.mlp_ratio")? {
        let f = r * d as f64;
        if (f - dims.mlp_hidden as f64).abs() >= 1.0 {
            return Err(j.error(format!(
                "`model_args.mlp_ratio` is {r}, which makes an MLP width of {f} for D = {d}, but \
                 `{fc1}` has {}",
                dims.mlp_hidden
            )));
        }
    }
    for key in ["patch_size", "model_args.patch_size"] {
        if let Some((ph, pw)) = j.pair(key)? {
            if (ph, pw) != (dims.patch_size, dims.patch_size) {
                return Err(j.error(format!(
                    "`{key}` says {ph}x{pw} px patches, but `{patch}` has {0}x{0}",
                    dims.patch_size
                )));
            }
        }
    }
    for key in ["num_channels", "model_args.in_chans"] {
        if let Some(c) = j.usize_at(key)? {
            if c != 3 {
                return Err(j.error(format!(
                    "`{key}` is {c}: only RGB images (3 channels) are supported"
                )));
            }
        }
    }
    Ok(())
}

/// Checks the config's qkv-bias and layer-scale switches against the tensors found.
pub(crate) fn check_switches(j: &JsonConfig, qkv_bias: bool, layer_scale: bool) -> Result<()> {
    for key in ["qkv_bias", "model_args.qkv_bias"] {
        if let Some(b) = j.bool_at(key)? {
            if b != qkv_bias {
                let has = if qkv_bias { "has" } else { "has no" };
                return Err(j.error(format!(
                    "`{key}` is {b}, but the checkpoint {has} query/key/value bias tensors"
                )));
            }
        }
    }
    let key = "model_args.init_values";
    if j.get(key).is_some() && !layer_scale {
        return Err(j.error(format!(
            "`{key}` is set (layer scale), but the checkpoint has no layer-scale tensors"
        )));
    }
    Ok(())
}
