//! What a checkpoint's names and shapes say before any tensor is read: the model's dimensions
//! ([`Dims`], from the class token, patch embedding, first MLP layer, head, position embedding
//! and block indices), and the refusal of tensors a plain ViT does not have (registers,
//! QK-norm, ...), which would otherwise be silently ignored.

use std::collections::BTreeSet;

use super::naming::{BlockParam, Param};
use super::reader::Reader;
use crate::error::{Error, Result};

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
impl Reader<'_, '_> {
    /// D, depth, P, F, C and the number of position rows, from the shapes alone.
    pub(super) fn infer_dims(&self, names: &[&str]) -> Result<Dims> {
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
    pub(super) fn check_unexpected(&self, names: &[&str], depth: usize) -> Result<()> {
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
}
