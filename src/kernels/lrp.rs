//! Launcher of shaders/lrp.wgsl: the LRP rules of transformer attribution (method.md §6.3),
//! and the products of the z⁺ rule with the positive or negative part of a weight matrix
//! (shaders/backward.wgsl with `B_SIGN`).

use super::backward::{Batch, Finish, Mat, Products, Right, WeightPart};
use super::{linear_grid, module, words, Access, Dispatch, Kernel, KernelSet, Precision};
use crate::gpu::Gpu;

const LRP_WG: u32 = 64;
/// add_factors's workgroup (common.wgsl's REDUCE_WG): one per gradient row.
#[cfg(test)]
const REDUCE_WG: u32 = 64;
const ONE_BRANCH: u32 = 1;

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "lrp",
    constants: &[
        ("LRP_WG", LRP_WG),
        ("REDUCE_WG", REDUCE_WG),
        ("ONE_BRANCH", ONE_BRANCH),
    ],
    workgroups: &[
        ("ratio", [LRP_WG, 1, 1]),
        ("scale_by", [LRP_WG, 1, 1]),
        ("zplus_input", [LRP_WG, 1, 1]),
        ("clone_merge", [LRP_WG, 1, 1]),
        ("add_factors", [REDUCE_WG, 1, 1]),
        ("add_apply", [LRP_WG, 1, 1]),
        ("one_hot", [LRP_WG, 1, 1]),
    ],
    structs: &[super::layout!(LrpParams {
        count,
        inner,
        rep,
        tokens,
        flags,
        alpha
    })],
};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LrpParams {
    count: u32,
    inner: u32,
    rep: u32,
    tokens: u32,
    flags: u32,
    alpha: f32,
    _pad: [u32; 2],
}

/// How a relevance tensor (one copy per gradient row) lines up with a per-image activation:
/// element i pairs with activation element `(i / (classes·inner))·inner + i % inner`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shared {
    /// Copies of each activation run: the classes per image.
    pub classes: usize,
    /// Values per run: a row's width for [B, N, K, W] rows, H·N·padded for attention.
    pub inner: usize,
}

impl Shared {
    /// Values of the activation that `count` relevance values read.
    fn activation_len(self, count: usize) -> usize {
        count.div_ceil(self.classes)
    }
}

const UNIFORM: (u32, Access) = (0, Access::Uniform);
const XA: (u32, Access) = (1, Access::Read);
const XB: (u32, Access) = (2, Access::Read);
const REL: (u32, Access) = (3, Access::Read);
const DST: (u32, Access) = (4, Access::ReadWrite);
const DST2: (u32, Access) = (5, Access::ReadWrite);
const CLASSES: (u32, Access) = (6, Access::Read);
const SCALE: &[(u32, Access)] = &[UNIFORM, XA, DST];
const WITH_REL: &[(u32, Access)] = &[UNIFORM, XA, REL, DST];
const FACTORS: &[(u32, Access)] = &[UNIFORM, XA, XB, REL, DST];
const APPLY: &[(u32, Access)] = &[UNIFORM, XA, XB, REL, DST, DST2];
const ONE_HOT: &[(u32, Access)] = &[UNIFORM, DST, CLASSES];

/// A linear layer for the z⁺ rule: its weight [out, in], its input (per image), and its
/// relevance in and out.
pub(crate) struct Linear<'a> {
    pub weight: &'a wgpu::Buffer,
    pub input: &'a wgpu::Buffer,
    /// Rows of the input (images, or images × tokens), and (out, in) features.
    pub rows: usize,
    pub features: (usize, usize),
    /// Relevance at the output [rows·K, out], overwritten by its ratio.
    pub r_out: &'a wgpu::Buffer,
    /// Relevance at the input [rows·K, in], and scratch of that size.
    pub r_in: (&'a wgpu::Buffer, &'a wgpu::Buffer),
}

pub(crate) struct LrpKernels {
    /// Products with max(W, 0) and min(W, 0) as the right operand, and with W summing only the
    /// positive terms.
    positive: Products,
    negative: Products,
    positive_terms: Products,
    ratio: Kernel,
    scale_by: Kernel,
    zplus_input: Kernel,
    clone_merge: Kernel,
    add_factors: Kernel,
    add_apply: Kernel,
    one_hot: Kernel,
}

impl LrpKernels {
    pub fn new(gpu: &Gpu, set: KernelSet, precision: Precision) -> LrpKernels {
        let m = module(gpu, "lrp");
        let kernel = |entry: &str, bindings| Kernel::new(gpu, &m, entry, bindings, &[]);
        LrpKernels {
            positive: Products::new(gpu, set, precision, Some(WeightPart::Positive)),
            negative: Products::new(gpu, set, precision, Some(WeightPart::Negative)),
            positive_terms: Products::new(gpu, set, precision, Some(WeightPart::PositiveTerms)),
            ratio: kernel("ratio", SCALE),
            scale_by: kernel("scale_by", SCALE),
            zplus_input: kernel("zplus_input", WITH_REL),
            clone_merge: kernel("clone_merge", WITH_REL),
            add_factors: kernel("add_factors", FACTORS),
            add_apply: kernel("add_apply", APPLY),
            one_hot: kernel("one_hot", ONE_HOT),
        }
    }

    /// Records the signed product variants compiled on first use (see
    /// `Products::record_lazy_variants`).
    #[cfg(test)]
    pub fn record_lazy_variants(&self, gpu: &Gpu) {
        for products in [&self.positive, &self.negative, &self.positive_terms] {
            products.record_lazy_variants(gpu);
        }
    }

    /// The z⁺ rule (LRP-α1β0, biases ignored) of `l` for `classes` gradient rows per input
    /// row: Z⁺ = x⁺W⁺ᵀ + x⁻W⁻ᵀ (one product summing the positive terms x·w), s = ε(R, Z⁺) in
    /// `l.r_out`, R_in = x⁺ ⊙ (sW⁺) + x⁻ ⊙ (sW⁻), W⁺ and W⁻ read as the weights load; `z`
    /// [rows, out] is scratch. Dispatches named `{name}.…`.
    pub fn zplus(
        &self,
        gpu: &Gpu,
        l: Linear<'_>,
        classes: usize,
        z: &wgpu::Buffer,
        name: &str,
    ) -> Vec<Dispatch> {
        let (f_out, f_in) = l.features;
        let grad_rows = l.rows * classes;
        let weight = |mat| Right::Weight(l.weight, mat);
        let shared = |inner| Shared { classes, inner };
        let (r_in, part) = l.r_in;
        let mut out = Vec::with_capacity(5);
        out.push(
            self.positive_terms
                .product(
                    gpu,
                    (l.input, Mat::rows(f_in)),
                    weight(Mat::rows(f_in).t()),
                    (z, Mat::rows(f_out)),
                    (l.rows, f_out, f_in),
                    Batch::ONE,
                    Finish::scaled(1.0),
                )
                .named(format!("{name}.z_plus")),
        );
        out.push(
            self.ratio(gpu, l.r_out, z, grad_rows * f_out, shared(f_out))
                .named(format!("{name}.ratio")),
        );
        for (products, dst) in [(&self.positive, r_in), (&self.negative, part)] {
            out.push(
                products
                    .product(
                        gpu,
                        (l.r_out, Mat::rows(f_out)),
                        weight(Mat::rows(f_in)),
                        (dst, Mat::rows(f_in)),
                        (grad_rows, f_in, f_out),
                        Batch::ONE,
                        Finish::scaled(1.0),
                    )
                    .named(format!("{name}.relevance")),
            );
        }
        out.push(
            self.zplus_input(gpu, (r_in, part), l.input, grad_rows * f_in, shared(f_in))
                .named(format!("{name}.input")),
        );
        out
    }

    fn params(gpu: &Gpu, params: LrpParams) -> wgpu::Buffer {
        gpu.uniform("lrp params", &params)
    }

    fn grid(count: usize) -> [u32; 3] {
        linear_grid((count as u32).div_ceil(LRP_WG))
    }

    /// `r = ε(r, z)` in place for `count` relevance values, with `z` shared: the ratio
    /// s = R / Z of an LRP rule.
    pub fn ratio(
        &self,
        gpu: &Gpu,
        r: &wgpu::Buffer,
        z: &wgpu::Buffer,
        count: usize,
        shared: Shared,
    ) -> Dispatch {
        self.shared_map(gpu, &self.ratio, (r, z), 1.0, count, shared)
    }

    /// `r *= alpha · x` in place for `count` relevance values, `x` shared.
    pub fn scale_by(
        &self,
        gpu: &Gpu,
        r: &wgpu::Buffer,
        x: &wgpu::Buffer,
        alpha: f32,
        count: usize,
        shared: Shared,
    ) -> Dispatch {
        self.shared_map(gpu, &self.scale_by, (r, x), alpha, count, shared)
    }

    /// A kernel that maps relevance `r` in place with a shared per-image operand `x`.
    fn shared_map(
        &self,
        gpu: &Gpu,
        kernel: &Kernel,
        (r, x): (&wgpu::Buffer, &wgpu::Buffer),
        alpha: f32,
        count: usize,
        shared: Shared,
    ) -> Dispatch {
        let params = LrpParams {
            count: count as u32,
            inner: shared.inner as u32,
            rep: shared.classes as u32,
            alpha,
            ..Default::default()
        };
        let uniform = Self::params(gpu, params);
        kernel
            .bind()
            .uniform(0, &uniform)
            .storage(1, x, words(shared.activation_len(count)))
            .storage(4, r, words(count))
            .dispatch(gpu, Self::grid(count))
            .work(2 * count, 12 * count)
    }

    /// The z⁺ rule's input relevance `p = x⁺ ⊙ p + x⁻ ⊙ q` in place, with `p` = sW⁺, `q` = sW⁻
    /// and `x` shared.
    fn zplus_input(
        &self,
        gpu: &Gpu,
        (p, q): (&wgpu::Buffer, &wgpu::Buffer),
        x: &wgpu::Buffer,
        count: usize,
        shared: Shared,
    ) -> Dispatch {
        let params = LrpParams {
            count: count as u32,
            inner: shared.inner as u32,
            rep: shared.classes as u32,
            ..Default::default()
        };
        let uniform = Self::params(gpu, params);
        self.zplus_input
            .bind()
            .uniform(0, &uniform)
            .storage(1, x, words(shared.activation_len(count)))
            .storage(3, q, words(count))
            .storage(4, p, words(count))
            .dispatch(gpu, Self::grid(count))
            .work(4 * count, 16 * count)
    }

    /// The residual fork: `r2 = x ⊙ (ε(r1, x) + ε(r2, x))` in place, `x` shared; without `r1`,
    /// `x ⊙ ε(r2, x)`.
    pub fn clone_merge(
        &self,
        gpu: &Gpu,
        (r1, r2): (Option<&wgpu::Buffer>, &wgpu::Buffer),
        x: &wgpu::Buffer,
        count: usize,
        shared: Shared,
    ) -> Dispatch {
        let params = LrpParams {
            count: count as u32,
            inner: shared.inner as u32,
            rep: shared.classes as u32,
            flags: if r1.is_none() { ONE_BRANCH } else { 0 },
            ..Default::default()
        };
        let uniform = Self::params(gpu, params);
        let bind = self
            .clone_merge
            .bind()
            .uniform(0, &uniform)
            .storage(1, x, words(shared.activation_len(count)))
            .storage(4, r2, words(count));
        let bind = match r1 {
            Some(r1) => bind.storage(3, r1, words(count)),
            None => bind.unused(gpu, 3),
        };
        bind.dispatch(gpu, Self::grid(count))
            .work(4 * count, 16 * count)
    }

    /// The residual add x = x1 + x2 for relevance `r` [B, N, K, D] at x: `r1` = x1 ⊙ s ·
    /// factor1, and `r` becomes x2 ⊙ s · factor2 (s = ε(R, x); the factors rescale each part's
    /// total to its share of R's, per gradient row), with `x`, `x1` [B·N, D] and `factors`
    /// [B·K, 2] as scratch. Two dispatches: the per-row sums, then the parts.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &self,
        gpu: &Gpu,
        (r, r1): (&wgpu::Buffer, &wgpu::Buffer),
        (x, x1): (&wgpu::Buffer, &wgpu::Buffer),
        factors: &wgpu::Buffer,
        (images, tokens, classes, dim): (usize, usize, usize, usize),
    ) -> [Dispatch; 2] {
        let rows = images * classes;
        let count = rows * tokens * dim;
        let act = words(images * tokens * dim);
        let base = LrpParams {
            inner: dim as u32,
            rep: classes as u32,
            tokens: tokens as u32,
            ..Default::default()
        };
        let sums = Self::params(
            gpu,
            LrpParams {
                count: rows as u32,
                ..base
            },
        );
        let factors_dispatch = self
            .add_factors
            .bind()
            .uniform(0, &sums)
            .storage(1, x, act)
            .storage(2, x1, act)
            .storage(3, r, words(count))
            .storage(4, factors, words(2 * rows))
            .dispatch(gpu, linear_grid(rows as u32))
            .work(6 * count, 12 * count);
        let apply = Self::params(
            gpu,
            LrpParams {
                count: count as u32,
                ..base
            },
        );
        let apply_dispatch = self
            .add_apply
            .bind()
            .uniform(0, &apply)
            .storage(1, x, act)
            .storage(2, x1, act)
            .storage(3, factors, words(2 * rows))
            .storage(4, r, words(count))
            .storage(5, r1, words(count))
            .dispatch(gpu, Self::grid(count))
            .work(6 * count, 20 * count);
        [factors_dispatch, apply_dispatch]
    }

    /// The relevance at the logits: `dst` [rows, C] = one-hot of `classes` [rows].
    pub fn one_hot(
        &self,
        gpu: &Gpu,
        classes: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        (rows, num_classes): (usize, usize),
    ) -> Dispatch {
        let count = rows * num_classes;
        let params = LrpParams {
            count: count as u32,
            inner: num_classes as u32,
            ..Default::default()
        };
        let uniform = Self::params(gpu, params);
        self.one_hot
            .bind()
            .uniform(0, &uniform)
            .storage(4, dst, words(count))
            .storage(6, classes, words(rows))
            .dispatch(gpu, Self::grid(count))
            .work(count, 4 * count)
    }
}
