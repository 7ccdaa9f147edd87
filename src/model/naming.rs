//! Checkpoint naming schemes: where each model parameter lives in a checkpoint.
//!
//! The loader asks for parameters by role ([`Param`]), never by string; a [`Naming`] turns a role
//! into the checkpoint's tensor name. timm's `VisionTransformer` naming is the one scheme today. A
//! second scheme (Hugging Face `ViTForImageClassification`) adds a `Naming` implementation and a
//! branch in [`detect`]; its separate query/key/value tensors will need the loader to concatenate
//! three tensors into `qkv`, which is why the roles name *model* parameters and not files' tensors.

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
pub(crate) trait Naming {
    /// A short name of the scheme for messages ("timm").
    fn scheme(&self) -> &'static str;
    /// The tensor name of `param`.
    fn name(&self, param: Param) -> String;
    /// The block index of a tensor name, when the name belongs to a transformer block.
    fn block_index(&self, tensor: &str) -> Option<usize>;
}

/// timm `VisionTransformer` names (`blocks.{i}.attn.qkv.weight`, ...).
pub(crate) struct Timm;

impl Naming for Timm {
    fn scheme(&self) -> &'static str {
        "timm"
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
        let rest = tensor.strip_prefix("blocks.")?;
        let (index, _) = rest.split_once('.')?;
        // `parse` alone would accept "+3"; indices are plain digits.
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index.parse().ok()
    }
}

/// The naming scheme of a checkpoint from its tensor names. Only timm is supported today; other
/// layouts are recognised by [`foreign_layout_hint`] so that errors can say what the file is.
pub(crate) fn detect<'a>(_names: impl IntoIterator<Item = &'a str>) -> &'static dyn Naming {
    &Timm
}

/// A hint for checkpoints whose names follow a layout that is not supported (yet).
pub(crate) fn foreign_layout_hint<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Option<&'static str> {
    let mut hf = false;
    let mut wrapped = false;
    for n in names {
        if n.starts_with("vit.") || n.contains("encoder.layer.") || n.starts_with("classifier.") {
            hf = true;
        }
        if n.starts_with("module.") || n.starts_with("model.") || n.starts_with("state_dict.") {
            wrapped = true;
        }
    }
    if hf {
        Some(
            "the tensor names look like a Hugging Face ViT checkpoint (`vit.embeddings...`): \
             Hugging Face ViT checkpoints are not supported yet; use a timm checkpoint",
        )
    } else if wrapped {
        Some(
            "the tensor names carry a prefix such as `module.` or `model.`: \
             save the bare timm `state_dict` (names like `blocks.0.attn.qkv.weight`)",
        )
    } else {
        None
    }
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
    }

    #[test]
    fn hints() {
        assert!(foreign_layout_hint(["vit.embeddings.cls_token"])
            .unwrap()
            .contains("Hugging Face"));
        assert!(foreign_layout_hint(["module.cls_token"])
            .unwrap()
            .contains("prefix"));
        assert!(foreign_layout_hint(["cls_token"]).is_none());
    }
}
