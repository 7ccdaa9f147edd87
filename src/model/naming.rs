//! Checkpoint naming schemes: where each model parameter lives in a checkpoint.
//!
//! The loader asks for parameters by role ([`Param`]), never by string; a [`Naming`] turns a role
//! into the checkpoint's tensor names. Two schemes exist:
//!
//! * [`Timm`]: timm's `VisionTransformer` state dict (`blocks.{i}.attn.qkv.weight`, ...), also used
//!   by DeiT and DeiT III.
//! * [`Hf`]: Hugging Face `ViTForImageClassification` as `save_pretrained` writes it
//!   (`vit.encoder.layer.{i}.attention.attention.query.weight`, ...). Its query, key and value are
//!   three tensors; [`Naming::qkv_parts`] names them and the loader concatenates them into the fused
//!   `[3D, D]` qkv (q rows, then k, then v) while converting, one copy per tensor.
//!
//! [`detect`] picks the scheme from the tensor names; [`refusal`] recognises layouts that are
//! known and unsupported, so that the error can say what the file is.

/// A parameter of one transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockParam {
    Norm1W,
    Norm1B,
    QkvW,
    QkvB,
    ProjW,
    ProjB,
    Ls1,
    Norm2W,
    Norm2B,
    Fc1W,
    Fc1B,
    Fc2W,
    Fc2B,
    Ls2,
}

/// A parameter of the model, independent of how a checkpoint names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    ClsToken,
    PosEmbed,
    PatchW,
    PatchB,
    /// Final LayerNorm applied to all tokens (class-token pooling).
    NormW,
    NormB,
    /// Final LayerNorm applied after average pooling.
    FcNormW,
    FcNormB,
    HeadW,
    HeadB,
    Block(usize, BlockParam),
}

/// Maps model parameters to a checkpoint's tensor names.
pub(crate) trait Naming: Sync {
    /// A short name of the scheme for messages ("timm", "Hugging Face").
    fn scheme(&self) -> &'static str;
    /// The model class whose `state_dict` this scheme is, for messages.
    fn model_class(&self) -> &'static str;
    /// The tensor name of `param` (for a qkv split in three, a display name covering the parts).
    fn name(&self, param: Param) -> String;
    /// The query, key and value tensor names when the scheme stores `BlockParam::QkvW`/`QkvB` as
    /// three `[D, D]`/`[D]` tensors; `None` when it stores one fused tensor.
    fn qkv_parts(&self, _param: Param) -> Option<[String; 3]> {
        None
    }
    /// Whether the scheme has a tensor for `param` at all (Hugging Face ViT has no layer scale and
    /// no `fc_norm`).
    fn has_param(&self, _param: Param) -> bool {
        true
    }
    /// The block index of a tensor name, when the name belongs to a transformer block.
    fn block_index(&self, tensor: &str) -> Option<usize>;
    /// LayerNorm epsilon when the config does not say: 1e-6 for timm, 1e-12 for Hugging Face.
    fn default_layer_norm_eps(&self) -> f32;
}

/// The digits of a block index at the start of `rest` ("11.mlp..." -> 11).
fn leading_index(rest: &str) -> Option<usize> {
    let (index, _) = rest.split_once('.')?;
    // `parse` alone would accept "+3"; indices are plain digits.
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    index.parse().ok()
}

/// timm `VisionTransformer` names (`blocks.{i}.attn.qkv.weight`, ...).
pub(crate) struct Timm;

impl Naming for Timm {
    fn scheme(&self) -> &'static str {
        "timm"
    }

    fn model_class(&self) -> &'static str {
        "timm VisionTransformer"
    }

    fn name(&self, param: Param) -> String {
        let s = match param {
            Param::ClsToken => "cls_token",
            Param::PosEmbed => "pos_embed",
            Param::PatchW => "patch_embed.proj.weight",
            Param::PatchB => "patch_embed.proj.bias",
            Param::NormW => "norm.weight",
            Param::NormB => "norm.bias",
            Param::FcNormW => "fc_norm.weight",
            Param::FcNormB => "fc_norm.bias",
            Param::HeadW => "head.weight",
            Param::HeadB => "head.bias",
            Param::Block(i, p) => {
                let leaf = match p {
                    BlockParam::Norm1W => "norm1.weight",
                    BlockParam::Norm1B => "norm1.bias",
                    BlockParam::QkvW => "attn.qkv.weight",
                    BlockParam::QkvB => "attn.qkv.bias",
                    BlockParam::ProjW => "attn.proj.weight",
                    BlockParam::ProjB => "attn.proj.bias",
                    BlockParam::Ls1 => "ls1.gamma",
                    BlockParam::Norm2W => "norm2.weight",
                    BlockParam::Norm2B => "norm2.bias",
                    BlockParam::Fc1W => "mlp.fc1.weight",
                    BlockParam::Fc1B => "mlp.fc1.bias",
                    BlockParam::Fc2W => "mlp.fc2.weight",
                    BlockParam::Fc2B => "mlp.fc2.bias",
                    BlockParam::Ls2 => "ls2.gamma",
                };
                return format!("blocks.{i}.{leaf}");
            }
        };
        s.to_string()
    }

    fn block_index(&self, tensor: &str) -> Option<usize> {
        leading_index(tensor.strip_prefix("blocks.")?)
    }

    fn default_layer_norm_eps(&self) -> f32 {
        1e-6
    }
}

/// Hugging Face `ViTForImageClassification` names, as `save_pretrained` writes them.
pub(crate) struct Hf;

/// Prefix of the transformer blocks in [`Hf`] names.
const HF_LAYER: &str = "vit.encoder.layer.";

impl Naming for Hf {
    fn scheme(&self) -> &'static str {
        "Hugging Face"
    }

    fn model_class(&self) -> &'static str {
        "Hugging Face ViTForImageClassification"
    }

    fn name(&self, param: Param) -> String {
        let s = match param {
            Param::ClsToken => "vit.embeddings.cls_token",
            Param::PosEmbed => "vit.embeddings.position_embeddings",
            Param::PatchW => "vit.embeddings.patch_embeddings.projection.weight",
            Param::PatchB => "vit.embeddings.patch_embeddings.projection.bias",
            Param::NormW => "vit.layernorm.weight",
            Param::NormB => "vit.layernorm.bias",
            // Not part of the scheme (`has_param` is false); named for messages only.
            Param::FcNormW => "(no fc_norm in Hugging Face ViT).weight",
            Param::FcNormB => "(no fc_norm in Hugging Face ViT).bias",
            Param::HeadW => "classifier.weight",
            Param::HeadB => "classifier.bias",
            Param::Block(i, p) => {
                let leaf = match p {
                    BlockParam::Norm1W => "layernorm_before.weight",
                    BlockParam::Norm1B => "layernorm_before.bias",
                    BlockParam::QkvW => "attention.attention.{query,key,value}.weight",
                    BlockParam::QkvB => "attention.attention.{query,key,value}.bias",
                    BlockParam::ProjW => "attention.output.dense.weight",
                    BlockParam::ProjB => "attention.output.dense.bias",
                    BlockParam::Ls1 => "(no layer scale in Hugging Face ViT)",
                    BlockParam::Norm2W => "layernorm_after.weight",
                    BlockParam::Norm2B => "layernorm_after.bias",
                    BlockParam::Fc1W => "intermediate.dense.weight",
                    BlockParam::Fc1B => "intermediate.dense.bias",
                    BlockParam::Fc2W => "output.dense.weight",
                    BlockParam::Fc2B => "output.dense.bias",
                    BlockParam::Ls2 => "(no layer scale in Hugging Face ViT)",
                };
                return format!("{HF_LAYER}{i}.{leaf}");
            }
        };
        s.to_string()
    }

    fn qkv_parts(&self, param: Param) -> Option<[String; 3]> {
        let (i, leaf) = match param {
            Param::Block(i, BlockParam::QkvW) => (i, "weight"),
            Param::Block(i, BlockParam::QkvB) => (i, "bias"),
            _ => return None,
        };
        Some(
            ["query", "key", "value"]
                .map(|part| format!("{HF_LAYER}{i}.attention.attention.{part}.{leaf}")),
        )
    }

    fn has_param(&self, param: Param) -> bool {
        !matches!(
            param,
            Param::FcNormW
                | Param::FcNormB
                | Param::Block(_, BlockParam::Ls1)
                | Param::Block(_, BlockParam::Ls2)
        )
    }

    fn block_index(&self, tensor: &str) -> Option<usize> {
        leading_index(tensor.strip_prefix(HF_LAYER)?)
    }

    fn default_layer_norm_eps(&self) -> f32 {
        1e-12
    }
}

/// The naming scheme of a checkpoint from its tensor names: Hugging Face when any tensor lives
/// under `vit.embeddings.` or `vit.encoder.`, timm otherwise (timm's errors then carry the
/// [`foreign_layout_hint`] for files that are neither).
pub(crate) fn detect<'a>(names: impl IntoIterator<Item = &'a str>) -> &'static dyn Naming {
    let hf = names
        .into_iter()
        .any(|n| n.starts_with("vit.embeddings.") || n.starts_with(HF_LAYER));
    if hf {
        &Hf
    } else {
        &Timm
    }
}

/// A clear refusal for checkpoints whose layout is recognised and not supported, before any
/// tensor is read.
pub(crate) fn refusal<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> Option<String> {
    let any = |f: &dyn Fn(&str) -> bool| names.clone().into_iter().any(f);
    if any(&|n| n.starts_with("dist_token") || n.starts_with("head_dist.")) {
        return Some(
            "unsupported: distilled DeiT (class + distillation token): the tensors `dist_token` \
             and `head_dist` give the model a second prefix token and a second head; agcam \
             explains single-prefix-token ViTs (use the non-distilled DeiT checkpoint)"
                .to_string(),
        );
    }
    if any(&|n| n.starts_with("deit.embeddings.") || n.starts_with("deit.encoder.")) {
        return Some(
            "unsupported: distilled DeiT (class + distillation token): this is a Hugging Face \
             DeiT checkpoint (`deit.embeddings.distillation_token`), whose embeddings always \
             carry a distillation token; Hugging Face's non-distilled DeiT weights are published \
             as ViTForImageClassification, which agcam reads"
                .to_string(),
        );
    }
    if any(&|n| n.starts_with("vit.layers.")) {
        return Some(
            "the tensor names (`vit.layers.{i}.attention.q_proj...`) are transformers' in-memory \
             module names, not the checkpoint names: save the model with \
             `model.save_pretrained(folder)`, which writes `vit.encoder.layer.{i}...`"
                .to_string(),
        );
    }
    None
}

/// A hint for checkpoints whose names follow no supported layout.
pub(crate) fn foreign_layout_hint<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Option<&'static str> {
    let mut wrapped = false;
    for n in names {
        if n.starts_with("module.") || n.starts_with("model.") || n.starts_with("state_dict.") {
            wrapped = true;
        }
    }
    wrapped.then_some(
        "the tensor names carry a prefix such as `module.` or `model.`: save the bare timm \
         `state_dict` (names like `blocks.0.attn.qkv.weight`) or a Hugging Face model with \
         `save_pretrained`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timm_names_and_block_indices() {
        let t = Timm;
        assert_eq!(
            t.name(Param::Block(3, BlockParam::ProjW)),
            "blocks.3.attn.proj.weight"
        );
        assert_eq!(t.name(Param::PosEmbed), "pos_embed");
        assert_eq!(t.block_index("blocks.11.mlp.fc1.bias"), Some(11));
        assert_eq!(t.block_index("blocks.+1.mlp.fc1.bias"), None);
        assert_eq!(t.block_index("blocks..x"), None);
        assert_eq!(t.block_index("norm.weight"), None);
        assert!(t.qkv_parts(Param::Block(0, BlockParam::QkvW)).is_none());
    }

    #[test]
    fn hf_names_parts_and_block_indices() {
        let h = Hf;
        assert_eq!(
            h.name(Param::Block(2, BlockParam::Fc1W)),
            "vit.encoder.layer.2.intermediate.dense.weight"
        );
        assert_eq!(
            h.qkv_parts(Param::Block(1, BlockParam::QkvB)).unwrap(),
            [
                "vit.encoder.layer.1.attention.attention.query.bias",
                "vit.encoder.layer.1.attention.attention.key.bias",
                "vit.encoder.layer.1.attention.attention.value.bias",
            ]
        );
        assert!(h.qkv_parts(Param::Block(1, BlockParam::ProjW)).is_none());
        assert_eq!(
            h.block_index("vit.encoder.layer.10.output.dense.bias"),
            Some(10)
        );
        assert_eq!(h.block_index("vit.layernorm.weight"), None);
        assert!(!h.has_param(Param::Block(0, BlockParam::Ls1)));
        assert!(!h.has_param(Param::FcNormW));
        assert!(h.has_param(Param::NormW));
    }

    #[test]
    fn detection_refusals_and_hints() {
        assert_eq!(
            detect(["vit.embeddings.cls_token"]).scheme(),
            "Hugging Face"
        );
        assert_eq!(
            detect(["cls_token", "blocks.0.norm1.weight"]).scheme(),
            "timm"
        );
        assert!(refusal(["cls_token", "dist_token"])
            .unwrap()
            .contains("distilled DeiT (class + distillation token)"));
        assert!(refusal(["deit.embeddings.distillation_token"])
            .unwrap()
            .contains("distilled DeiT"));
        assert!(refusal(["vit.layers.0.attention.q_proj.weight"])
            .unwrap()
            .contains("save_pretrained"));
        assert!(refusal(["cls_token"]).is_none());
        assert!(foreign_layout_hint(["module.cls_token"])
            .unwrap()
            .contains("prefix"));
        assert!(foreign_layout_hint(["cls_token"]).is_none());
    }
}
