//! Reading tensors by role ([`Param`]) out of one checkpoint in one naming scheme: required and
//! optional tensors checked against their shapes, q/k/v fused into one matrix, errors that name
//! the missing tensor, and the whole [`VitWeights`] once the dimensions are known.

use std::fmt::Write as _;

use super::checkpoint::Checkpoint;
use super::config_file::JsonConfig;
use super::dims::Dims;
use super::naming::{BlockParam, Naming, Param};
use super::{BlockWeights, HostTensor, Pooling, VitWeights};
use crate::error::{Error, Result};

/// What [`Reader::read_weights`] found besides the weights.
pub(super) struct Read {
    pub(super) weights: VitWeights,
    pub(super) layer_scale: bool,
    pub(super) qkv_bias: bool,
    pub(super) pooling: Pooling,
}

/// Parameter access by role over one checkpoint and one naming scheme.
pub(super) struct Reader<'c, 'a> {
    pub(super) ckpt: &'c Checkpoint<'a>,
    pub(super) naming: &'static dyn Naming,
    /// Why the names look foreign (another model family's layout), added to missing-tensor
    /// errors.
    pub(super) hint: Option<&'static str>,
}

impl Reader<'_, '_> {
    /// The tensor name of `p` in this scheme.
    pub(super) fn name(&self, p: Param) -> String {
        self.naming.name(p)
    }

    /// The checkpoint tensors that hold `p` (three for a split qkv, none when the scheme has no
    /// such parameter).
    pub(super) fn tensor_names(&self, p: Param) -> Vec<String> {
        if !self.naming.has_param(p) {
            return Vec::new();
        }
        match self.naming.qkv_parts(p) {
            Some(parts) => parts.to_vec(),
            None => vec![self.name(p)],
        }
    }

    /// Whether the checkpoint holds `p`.
    pub(super) fn has(&self, p: Param) -> bool {
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

    /// The error for a required `p` the checkpoint lacks.
    pub(super) fn missing(&self, p: Param) -> Error {
        self.missing_name(&self.name(p))
    }

    /// The shape of a required tensor.
    pub(super) fn shape(&self, p: Param) -> Result<Vec<usize>> {
        self.ckpt
            .shape(&self.name(p))
            .ok_or_else(|| self.missing(p))
    }

    /// The error for `p` found with shape `actual` where `expected` was due.
    pub(super) fn shape_error(&self, p: Param, expected: Vec<usize>, actual: Vec<usize>) -> Error {
        Error::Shape {
            path: self.ckpt.path().to_path_buf(),
            name: self.name(p),
            why: String::new(),
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

    /// Reads every tensor, each converted once straight into its final buffer.
    pub(super) fn read_weights(
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
