//! Launcher of shaders/backward.wgsl: the kernels of the full backward (no detach): a general
//! strided batched GEMM `C = alpha · op(A) · op(B)` (transposes are stride swaps), and the
//! elementwise and row kernels around it.

use super::{
    linear_grid, module_with, words, Access, ChainStep, Dispatch, Kernel, KernelSet, Module,
    Precision,
};
use crate::gpu::Gpu;
use crate::model::Pooling;

/// A matrix inside a buffer, in elements: element (r, c) of batch entry (image, class, head)
/// is at `offset + image·image + class·cls + head·head + r·row + c·col`. Must match `Mat`
/// in backward.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Mat {
    pub offset: u32,
    pub row: u32,
    pub col: u32,
    pub image: u32,
    pub cls: u32,
    pub head: u32,
    _pad: [u32; 2],
}

impl Mat {
    /// A matrix at `offset` with the given row and column strides, the same for every batch
    /// entry until [`Mat::batched`].
    pub fn at(offset: usize, row: usize, col: usize) -> Mat {
        Mat {
            offset: offset as u32,
            row: row as u32,
            col: col as u32,
            ..Mat::default()
        }
    }

    /// Row-major with rows of `row` elements.
    pub fn rows(row: usize) -> Mat {
        Mat::at(0, row, 1)
    }

    /// The same matrix with its transpose's strides.
    pub fn t(self) -> Mat {
        Mat {
            row: self.col,
            col: self.row,
            ..self
        }
    }

    /// The same with strides between the matrices of consecutive images, classes and heads.
    pub fn batched(self, image: usize, class: usize, head: usize) -> Mat {
        Mat {
            image: image as u32,
            cls: class as u32,
            head: head as u32,
            ..self
        }
    }

    /// Whether `cols` columns of this matrix can be read 4 at a time, aligned.
    fn vec4_columns(&self, cols: usize) -> bool {
        self.col == 1
            && cols.is_multiple_of(4)
            && (self.offset | self.row | self.image | self.cls | self.head).is_multiple_of(4)
    }

    /// One past the last element that `rows × cols` matrices over `batch` reach.
    fn extent(&self, rows: usize, cols: usize, batch: Batch) -> usize {
        if rows == 0 || cols == 0 || batch.count() == 0 {
            return 0;
        }
        self.offset as usize
            + (batch.images - 1) * self.image as usize
            + (batch.classes - 1) * self.cls as usize
            + (batch.heads - 1) * self.head as usize
            + (rows - 1) * self.row as usize
            + (cols - 1) * self.col as usize
            + 1
    }
}

/// The batch of a product: one matrix product per (image, class, head).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch {
    pub images: usize,
    pub classes: usize,
    pub heads: usize,
}

impl Batch {
    /// A single product.
    pub const ONE: Batch = Batch {
        images: 1,
        classes: 1,
        heads: 1,
    };

    fn count(&self) -> usize {
        self.images * self.classes * self.heads
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BgParams {
    m: u32,
    n: u32,
    k: u32,
    classes: u32,
    heads: u32,
    flags: u32,
    alpha: f32,
    aux_div: u32,
    a: Mat,
    b: Mat,
    c: Mat,
    aux: Mat,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ElemParams {
    count: u32,
    tokens: u32,
    classes: u32,
    dim: u32,
    heads: u32,
    padded: u32,
    flags: u32,
    _pad: u32,
}

const GELU_GRAD: u32 = 1;
const K_SCALED: u32 = 2;
const BG_WG: u32 = 8;
const BG_TILE: u32 = 4;
/// Rows per workgroup and columns per invocation of `bgemm_block` (8 invocations): 4 columns
/// for narrow products (at most [`BB_NARROW_MAX_N`] columns), 8 below [`BB_WIDE_MIN_N`]
/// columns (attention's products: N or the head width), 24 from there (the linear layers'):
/// llvmpipe loads per-lane values one lane at a time, and the wide block amortises each such
/// load over three times the columns. On lavapipe it ran ViT-B/16's transposed linears about
/// 1.5× faster than 8 columns, and attention's products about 1.6× slower (BENCHMARKS.md).
const BB_ROWS: u32 = 32;
const BB_COLS: u32 = 8;
const BB_COLS_NARROW: u32 = 4;
const BB_COLS_WIDE: u32 = 24;
const BB_NARROW_MAX_N: usize = 32;
/// Columns from which products take the wide block: ViT-B's embedding width and every
/// standard ViT's MLP width. Mesa compiles each wide variant for about 10 s (once, then its
/// disk cache serves it), and at the demo model's 384-column MLP it measured no faster than 8
/// columns (attention's 197 and 64 columns ran 1.6× slower on it).
const BB_WIDE_MIN_N: usize = 768;
const BB_WG: u32 = 8;
const EW_WG: u32 = 64;

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "backward",
    constants: &[
        ("GELU_GRAD", GELU_GRAD),
        ("K_SCALED", K_SCALED),
        ("BG_WG", BG_WG),
        ("BG_TILE", BG_TILE),
        ("BB_ROWS", BB_ROWS),
        ("BB_MAX_COLS", BB_COLS_WIDE),
        ("BB_COLS", BB_COLS),
        ("EW_WG", EW_WG),
    ],
    workgroups: &[
        ("bgemm", [BG_WG, BG_WG, 1]),
        ("bgemm_block", [BB_WG, 1, 1]),
        ("gelu_copy", [EW_WG, 1, 1]),
        ("keep_copy", [EW_WG, 1, 1]),
        ("seed", [EW_WG, 1, 1]),
        ("softmax_backward", [EW_WG, 1, 1]),
        ("relevance_step", [EW_WG, 1, 1]),
    ],
    structs: &[
        super::layout!(Mat {
            offset,
            row,
            col,
            image,
            cls,
            head
        }),
        super::layout!(BgParams {
            m,
            n,
            k,
            classes,
            heads,
            flags,
            alpha,
            aux_div,
            a,
            b,
            c,
            aux
        }),
        super::layout!(ElemParams {
            count,
            tokens,
            classes,
            dim,
            heads,
            padded,
            flags
        }),
    ],
};

const BGEMM_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Uniform),
    (6, Access::Read),
    (7, Access::Read),
    (8, Access::Read),
];
const ELEM_BINDINGS: &[(u32, Access)] = &[
    (10, Access::Read),
    (11, Access::ReadWrite),
    (13, Access::Uniform),
];
const SOFTMAX_BINDINGS: &[(u32, Access)] = &[
    (12, Access::Read),
    (13, Access::Uniform),
    (14, Access::ReadWrite),
];
const RELEVANCE_BINDINGS: &[(u32, Access)] = &[
    (10, Access::Read),
    (11, Access::ReadWrite),
    (12, Access::Read),
    (13, Access::Uniform),
    (14, Access::ReadWrite),
];

/// The right-hand operand of a product: a weight matrix (stored as the engine's precision
/// says) or an activation (always f32).
pub(crate) enum Right<'a> {
    Weight(&'a wgpu::Buffer, Mat),
    Activation(&'a wgpu::Buffer, Mat),
}

/// What happens to a product before it is stored.
pub(crate) struct Finish<'a> {
    /// Multiplies the whole product.
    pub alpha: f32,
    /// Scales term k of the sum by `scale[k]` (layer scale on the gradient side).
    pub k_scale: Option<&'a wgpu::Buffer>,
    /// Multiplies output (r, c) by gelu'(pre[r / div, c]) for `pre` viewed as the matrix.
    pub gelu_grad: Option<(&'a wgpu::Buffer, Mat, usize)>,
}

impl Finish<'_> {
    /// `C = alpha · A · B`.
    pub fn scaled(alpha: f32) -> Finish<'static> {
        Finish {
            alpha,
            k_scale: None,
            gelu_grad: None,
        }
    }
}

/// Which `bgemm_block` variant a product runs on (the CPU kernel set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BlockVariant {
    /// Columns per invocation: [`BB_COLS_NARROW`] (f32 operands only), [`BB_COLS`] or
    /// [`BB_COLS_WIDE`], by [`block_columns`].
    cols: u32,
    b_f16: bool,
    b_vec4: bool,
    a_vec4: bool,
    /// B read 4 terms of a column per load (with `a_vec4`, never with `b_vec4`).
    b_terms4: bool,
}

/// Which part of a weight matrix a signed product reads: the LRP z⁺ rule's W⁺ = max(W, 0) or
/// W⁻ = min(W, 0), taken as the weights are loaded, or all of W with only the positive terms
/// a·w summed (shaders/backward.wgsl `B_SIGN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightPart {
    Positive = 1,
    Negative = 2,
    /// Σ_k max(a_k·w_k, 0): the z⁺ rule's Z⁺ = x⁺W⁺ᵀ + x⁻W⁻ᵀ in one product.
    PositiveTerms = 3,
}

impl WeightPart {
    /// The override constant that selects this part in backward.wgsl.
    fn constant(self) -> (&'static str, f64) {
        ("B_SIGN", self as u32 as f64)
    }
}

/// The compiled variants of the batched product for one reading of B.
pub(crate) struct Products {
    /// `bgemm` (by whether B is f16; the f16 entry with f16 weights only) on the GPU kernel set
    /// and on OpenGL, where Mesa's compile of large unrolled kernels trips wgpu's context lock
    /// (see `Gemm::block`).
    bgemm: [Option<Kernel>; 2],
    /// `bgemm_block` variants elsewhere on the CPU set (empty unless `block`), each compiled
    /// when a product first needs it: Mesa takes seconds per wide variant, and a method uses
    /// a few of them.
    blocks: std::collections::HashMap<BlockVariant, std::sync::OnceLock<Kernel>>,
    block: bool,
    module: Module,
    weights_f16: bool,
    /// Set for products whose B is a part of a weight matrix (never an activation).
    part: Option<WeightPart>,
}

impl Products {
    /// The products of `set` for weights stored as `precision` says, reading all of B or, with
    /// `part`, only that part of a weight matrix.
    pub fn new(
        gpu: &Gpu,
        set: KernelSet,
        precision: Precision,
        part: Option<WeightPart>,
    ) -> Products {
        let m = module_with(gpu, "backward", false);
        let weights_f16 = precision == Precision::F16;
        let gl = gpu.info.backend == wgpu::Backend::Gl;
        let block = set.resolve(gpu) == KernelSet::Cpu && !gl;
        // A signed product's B is a weight matrix: its format is the engine's.
        let needed =
            |b_f16: bool| (!b_f16 || weights_f16) && (part.is_none() || b_f16 == weights_f16);
        let bgemm = |f16: bool| {
            (!block && needed(f16)).then(|| {
                let mut constants = vec![("B_F16", f16 as u32 as f64)];
                constants.extend(part.map(WeightPart::constant));
                Kernel::new(gpu, &m, "bgemm", BGEMM_BINDINGS, &constants)
            })
        };
        let mut blocks = std::collections::HashMap::new();
        let flags = [false, true];
        for cols in [BB_COLS_NARROW, BB_COLS, BB_COLS_WIDE] {
            for (b_f16, b_vec4, a_vec4) in flag_combinations(flags) {
                if block && needed(b_f16) && !(b_f16 && cols == BB_COLS_NARROW) {
                    for b_terms4 in [false, true] {
                        if !b_terms4 || (a_vec4 && !b_vec4) {
                            let variant = BlockVariant {
                                cols,
                                b_f16,
                                b_vec4,
                                a_vec4,
                                b_terms4,
                            };
                            blocks.insert(variant, std::sync::OnceLock::new());
                        }
                    }
                }
            }
        }
        Products {
            bgemm: [bgemm(false), bgemm(true)],
            blocks,
            block,
            module: m,
            weights_f16,
            part,
        }
    }

    /// The `bgemm_block` kernel of `variant`, compiled on first use; `None` where this
    /// weight format has no such variant.
    fn block_kernel(&self, gpu: &Gpu, variant: BlockVariant) -> Option<&Kernel> {
        let cell = self.blocks.get(&variant)?;
        Some(cell.get_or_init(|| {
            let constants = self.block_constants(variant);
            Kernel::new(gpu, &self.module, "bgemm_block", BGEMM_BINDINGS, &constants)
        }))
    }

    /// The override constants of a `bgemm_block` variant.
    fn block_constants(&self, variant: BlockVariant) -> Vec<(&'static str, f64)> {
        let flag = |on: bool| on as u32 as f64;
        let mut constants = vec![
            ("B_F16", flag(variant.b_f16)),
            ("B_VEC4", flag(variant.b_vec4)),
            ("A_VEC4", flag(variant.a_vec4)),
        ];
        if variant.cols != BB_COLS {
            constants.push(("BB_COLS", variant.cols as f64));
        }
        if variant.b_terms4 {
            constants.push(("B_TERMS4", 1.0));
        }
        constants.extend(self.part.map(WeightPart::constant));
        constants
    }

    /// Records, without compiling, every `bgemm_block` variant that products may compile on
    /// first use (the catalogue test checks them against the catalogue).
    #[cfg(test)]
    pub fn record_lazy_variants(&self, gpu: &Gpu) {
        for &variant in self.blocks.keys() {
            let constants = self.block_constants(variant);
            Kernel::record(gpu, &self.module, "bgemm_block", &constants);
        }
    }

    /// `c = finish(a · b)` for every matrix of `batch`: `m × k` times `k × n`.
    #[allow(clippy::too_many_arguments)]
    pub fn product(
        &self,
        gpu: &Gpu,
        (a, a_mat): (&wgpu::Buffer, Mat),
        b: Right<'_>,
        (c, c_mat): (&wgpu::Buffer, Mat),
        (m, n, k): (usize, usize, usize),
        batch: Batch,
        finish: Finish<'_>,
    ) -> Dispatch {
        let (b, b_mat, b_f16) = match b {
            Right::Weight(buffer, mat) => (buffer, mat, self.weights_f16),
            Right::Activation(buffer, mat) => {
                assert!(
                    self.part.is_none(),
                    "a signed product reads a weight matrix"
                );
                (buffer, mat, false)
            }
        };
        let mut flags = 0;
        if finish.k_scale.is_some() {
            flags |= K_SCALED;
        }
        let (aux, aux_mat, aux_div) = match finish.gelu_grad {
            Some((buffer, mat, div)) => {
                flags |= GELU_GRAD;
                (Some(buffer), mat, div)
            }
            None => (None, Mat::default(), 1),
        };
        let params = BgParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            classes: batch.classes as u32,
            heads: batch.heads as u32,
            flags,
            alpha: finish.alpha,
            aux_div: aux_div as u32,
            a: a_mat,
            b: b_mat,
            c: c_mat,
            aux: aux_mat,
        };
        let count = batch.count();
        assert!(count <= 65535, "bgemm: {count} products in one dispatch");
        let uniform = gpu.uniform("bgemm params", &params);
        let cols = block_columns(n, b_f16);
        let vec4 = self.block && b_mat.vec4_columns(n);
        let a_vec4 = self.block && a_mat.vec4_columns(k);
        let b_terms4 = a_vec4 && !vec4 && finish.k_scale.is_none() && b_mat.t().vec4_columns(k);
        let kernel = if self.block {
            let variant = BlockVariant {
                cols,
                b_f16,
                b_vec4: vec4,
                a_vec4,
                b_terms4,
            };
            self.block_kernel(gpu, variant)
        } else {
            self.bgemm[b_f16 as usize].as_ref()
        };
        let kernel = kernel.expect("bgemm for this weight format");
        let a_bytes = words(a_mat.extent(m, k, batch));
        let b_values = b_mat.extent(k, n, batch);
        let mut bind = kernel
            .bind()
            .storage(0, a, a_bytes)
            .storage(4, c, words(c_mat.extent(m, n, batch)))
            .uniform(5, &uniform);
        bind = if b_f16 {
            bind.storage(6, b, (2 * b_values as u64).next_multiple_of(4))
                .unused(gpu, 1)
                .unused(gpu, 7)
        } else if vec4 || b_terms4 {
            // The vec4 view reads whole groups of 4 columns (or terms): the last ends at a
            // multiple of 4.
            let b_end = words(b_values.next_multiple_of(4));
            bind.storage(1, b, words(b_values))
                .storage(7, b, b_end)
                .unused(gpu, 6)
        } else {
            bind.storage(1, b, words(b_values))
                .unused(gpu, 6)
                .unused(gpu, 7)
        };
        bind = if a_vec4 {
            bind.storage(8, a, a_bytes)
        } else {
            bind.unused(gpu, 8)
        };
        bind = match finish.k_scale {
            Some(scale) => bind.storage(2, scale, words(k)),
            None => bind.unused(gpu, 2),
        };
        bind = match aux {
            Some(buffer) => {
                let rows = m.saturating_sub(1) / aux_div + 1;
                bind.storage(3, buffer, words(aux_mat.extent(rows, n, batch)))
            }
            None => bind.unused(gpu, 3),
        };
        let groups = if self.block {
            [
                (n as u32).div_ceil(BB_WG * cols),
                (m as u32).div_ceil(BB_ROWS),
                count as u32,
            ]
        } else {
            let side = BG_WG * BG_TILE;
            [
                (n as u32).div_ceil(side),
                (m as u32).div_ceil(side),
                count as u32,
            ]
        };
        let b_bytes = if b_f16 { 2 } else { 4 };
        bind.dispatch(gpu, groups).work(
            2 * count * m * n * k,
            count * (4 * m * k + b_bytes * k * n + 4 * m * n),
        )
    }
}

pub(crate) struct BackwardKernels {
    products: Products,
    gelu_copy: Kernel,
    keep_copy: Kernel,
    seed: Kernel,
    softmax_backward: Kernel,
    relevance_step: Kernel,
}

impl BackwardKernels {
    pub fn new(gpu: &Gpu, set: KernelSet, precision: Precision) -> BackwardKernels {
        let m = module_with(gpu, "backward", false);
        let kernel = |entry: &str, bindings| Kernel::new(gpu, &m, entry, bindings, &[]);
        BackwardKernels {
            products: Products::new(gpu, set, precision, None),
            gelu_copy: kernel("gelu_copy", ELEM_BINDINGS),
            keep_copy: kernel("keep_copy", ELEM_BINDINGS),
            seed: kernel("seed", ELEM_BINDINGS),
            softmax_backward: kernel("softmax_backward", SOFTMAX_BINDINGS),
            relevance_step: kernel("relevance_step", RELEVANCE_BINDINGS),
        }
    }

    /// Records the product variants compiled on first use (see [`Products::record_lazy_variants`]).
    #[cfg(test)]
    pub fn record_lazy_variants(&self, gpu: &Gpu) {
        self.products.record_lazy_variants(gpu);
    }

    /// Whether products run on `bgemm_block` (the CPU kernel set, not on OpenGL).
    #[cfg(test)]
    pub fn is_block(&self) -> bool {
        self.products.block
    }

    /// `c = finish(a · b)` for every matrix of `batch`: `m × k` times `k × n`.
    #[allow(clippy::too_many_arguments)]
    pub fn product(
        &self,
        gpu: &Gpu,
        a: (&wgpu::Buffer, Mat),
        b: Right<'_>,
        c: (&wgpu::Buffer, Mat),
        shape: (usize, usize, usize),
        batch: Batch,
        finish: Finish<'_>,
    ) -> Dispatch {
        self.products.product(gpu, a, b, c, shape, batch, finish)
    }

    fn elementwise(
        &self,
        gpu: &Gpu,
        kernel: &Kernel,
        (src, src_len): (&wgpu::Buffer, usize),
        dst: &wgpu::Buffer,
        params: ElemParams,
    ) -> Dispatch {
        let count = params.count as usize;
        let uniform = gpu.uniform("backward elementwise params", &params);
        kernel
            .bind()
            .storage(10, src, words(src_len))
            .storage(11, dst, words(count))
            .uniform(13, &uniform)
            .dispatch(gpu, linear_grid((count as u32).div_ceil(EW_WG)))
            .work(count, 8 * count)
    }

    /// `dst[i] = gelu(src[i])` for `count` values.
    pub fn gelu_copy(
        &self,
        gpu: &Gpu,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        count: usize,
    ) -> Dispatch {
        self.map(gpu, &self.gelu_copy, (src, dst), count)
    }

    /// `dst[i] = src[i]` for `count` values.
    pub fn copy(
        &self,
        gpu: &Gpu,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        count: usize,
    ) -> Dispatch {
        self.map(gpu, &self.keep_copy, (src, dst), count)
    }

    /// A kernel that maps `count` values of `src` to `dst` one by one.
    fn map(
        &self,
        gpu: &Gpu,
        kernel: &Kernel,
        (src, dst): (&wgpu::Buffer, &wgpu::Buffer),
        count: usize,
    ) -> Dispatch {
        let params = ElemParams {
            count: count as u32,
            ..Default::default()
        };
        self.elementwise(gpu, kernel, (src, count), dst, params)
    }

    /// The gradient of the residual stream [B, N, K, D] from `pooled` [B·K, D], the gradient
    /// at the pooled token: under class-token pooling, `pooled` at token 0 of each image and
    /// zero elsewhere; under average pooling, `pooled` / (N − 1) at each patch token and zero
    /// at the class token.
    pub fn seed(
        &self,
        gpu: &Gpu,
        pooled: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        (images, tokens, classes, dim): (usize, usize, usize, usize),
        pooling: Pooling,
    ) -> Dispatch {
        let params = ElemParams {
            count: (images * tokens * classes * dim) as u32,
            tokens: tokens as u32,
            classes: classes as u32,
            dim: dim as u32,
            flags: (pooling == Pooling::Avg) as u32,
            ..Default::default()
        };
        let src_len = images * classes * dim;
        self.elementwise(gpu, &self.seed, (pooled, src_len), grad, params)
    }

    fn attention_params(
        (images, classes, heads, tokens): (usize, usize, usize, usize),
        count: usize,
        flags: u32,
    ) -> ElemParams {
        ElemParams {
            count: count as u32,
            tokens: tokens as u32,
            classes: classes as u32,
            dim: 0,
            heads: heads as u32,
            padded: tokens.next_multiple_of(4) as u32,
            flags,
            _pad: 0,
        }
        .checked(images)
    }

    /// Softmax backward in place: `grad` [B, K, H, N, padded] holds ∂/∂A and becomes ∂/∂S,
    /// with `probs` [B, H, N, padded] the post-softmax attention.
    pub fn softmax_backward(
        &self,
        gpu: &Gpu,
        probs: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        shape: (usize, usize, usize, usize),
    ) -> Dispatch {
        let (images, classes, heads, tokens) = shape;
        let rows = images * classes * heads * tokens;
        let params = Self::attention_params(shape, rows, 0);
        let padded = params.padded as usize;
        let uniform = gpu.uniform("softmax backward params", &params);
        self.softmax_backward
            .bind()
            .storage(12, probs, words(images * heads * tokens * padded))
            .uniform(13, &uniform)
            .storage(14, grad, words(rows * padded))
            .dispatch(gpu, linear_grid((rows as u32).div_ceil(EW_WG)))
            .work(4 * rows * tokens, 4 * 3 * rows * tokens)
    }

    /// One step of generic attention's relevance chain (shaders/backward.wgsl
    /// `relevance_step`): `r_out = r_in + r_in · mean_h max(0, grad ⊙ weights)` per gradient
    /// row, or the map r[1:] into `r_out` [B·K, N-1] on the last step. The weights are the
    /// attention [B, H, N, padded] (generic attention) or, with `per_row`, one [H, N, padded]
    /// per gradient row (transformer attribution's attention relevance).
    #[allow(clippy::too_many_arguments)]
    pub fn relevance_step(
        &self,
        gpu: &Gpu,
        (probs, per_row): (&wgpu::Buffer, bool),
        grad: &wgpu::Buffer,
        r_in: &wgpu::Buffer,
        r_out: &wgpu::Buffer,
        shape: (usize, usize, usize, usize),
        step: ChainStep,
    ) -> Dispatch {
        let (images, classes, heads, tokens) = shape;
        let rows = images * classes;
        let count = rows * tokens;
        let flags = step.first as u32 | (step.last as u32) << 1 | (per_row as u32) << 2;
        let params = Self::attention_params(shape, count, flags);
        let weight_rows = if per_row { rows } else { images };
        let padded = params.padded as usize;
        let uniform = gpu.uniform("relevance step params", &params);
        let bind = self.relevance_step.bind();
        let bind = if step.first {
            bind.unused(gpu, 10)
        } else {
            bind.storage(10, r_in, words(count))
        };
        let out_len = if step.last {
            rows * (tokens - 1)
        } else {
            count
        };
        let reads = if step.first { 1 } else { tokens };
        bind.storage(11, r_out, words(out_len))
            .storage(12, probs, words(weight_rows * heads * tokens * padded))
            .uniform(13, &uniform)
            .storage(14, grad, words(rows * heads * tokens * padded))
            .dispatch(gpu, linear_grid((count as u32).div_ceil(EW_WG)))
            .work(4 * count * heads * reads, 4 * 2 * count * heads * reads)
    }
}

impl ElemParams {
    /// The kernels index with u32: refuse shapes past it at record time.
    fn checked(self, images: usize) -> ElemParams {
        let total = images as u64
            * self.classes as u64
            * self.heads as u64
            * self.tokens as u64
            * self.padded as u64;
        assert!(
            total < u32::MAX as u64,
            "attention gradient past u32 indexing"
        );
        self
    }
}

/// Every combination of three flags.
fn flag_combinations(flags: [bool; 2]) -> impl Iterator<Item = (bool, bool, bool)> {
    flags.into_iter().flat_map(move |a| {
        flags
            .into_iter()
            .flat_map(move |b| flags.into_iter().map(move |c| (a, b, c)))
    })
}

/// Columns per invocation of `bgemm_block` for a product with `n` columns.
fn block_columns(n: usize, b_f16: bool) -> u32 {
    if !b_f16 && n <= BB_NARROW_MAX_N {
        BB_COLS_NARROW
    } else if n < BB_WIDE_MIN_N {
        BB_COLS
    } else {
        BB_COLS_WIDE
    }
}
