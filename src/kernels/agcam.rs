//! Launcher of shaders/agcam.wgsl: top-k class choice, the transposed-Linear products of the
//! backward chain, and the fused ReLU(gradient) × sigmoid(score) map accumulation.

use super::{
    module, words, Access, Bindings, Dispatch, Gemm, Kernel, KernelSet, Module, Precision,
};
use crate::gpu::Gpu;

const WG: u32 = 64;
/// Rows per workgroup of `vecmat`; rows and vec4 columns per invocation and workgroup size of
/// `vecmat4`: must match VM_ROWS, VM4_ROWS, VM_COLS4 and VM4_WG in agcam.wgsl.
const VM_ROWS: u32 = 4;
const VM4_ROWS: u32 = 8;
/// Gradient rows from which the chain runs on the tiled GEMM where the kernel set has one
/// (`Gemm::backward_product`, the GPU set): 64 rows per tile, each weight element read once
/// per tile instead of once per 4 rows. Not measured on a GPU yet: at 64 rows fc1ᵀ (768
/// columns, depth 3072) would be 12 long-running workgroups, about what `vecmat_sliced` takes
/// by the H200 figures of BENCHMARKS.md, so the switch waits for two tiles of rows (and batch
/// 64 at top-1 keeps its measured path). The CPU set has no such kernel: its GEMMs read W
/// along K, and `vecmat4` with 32 rows per invocation instead of 8 ran 40 rows no faster on
/// lavapipe.
pub(super) const GEMM_MIN_ROWS: usize = 128;
const VM_COLS4: u32 = 4;
const VM4_WG: u32 = 8;
/// Overrides of `vecmat4` for a single gradient row (batch 1, one class): one row and 2 vec4
/// columns per invocation, so fc1ᵀ's 768 columns spread over 12 workgroups instead of 6. On
/// lavapipe ViT-B's chain at batch 1 took a median 55 ms instead of 62 (BENCHMARKS.md); with
/// one column per invocation it took 180.
pub(super) const VECMAT4_SINGLE_ROW: [(&str, u32); 2] =
    [("VM4_LIVE_ROWS", 1), ("VM4_LIVE_COLS4", 2)];
/// Columns and rows per workgroup of `vecmat_sliced` (VS_COLS, VS_ROWS in agcam.wgsl).
const VS_COLS: u32 = 8;
const VS_ROWS: u32 = 4;
/// Slices of the reduction per `vecmat_sliced` workgroup: the default (VS_SLICES in agcam.wgsl),
/// and [`Trials::wide_slices`](super::Trials)'s, where the adapter allows workgroups of
/// VS_COLS × 128.
pub(super) const VS_SLICES: u32 = 32;
pub(super) const VS_WIDE_SLICES: u32 = 128;
/// Invocations per workgroup of `accumulate_heads` (ACC_WG), one per (token, head) pair.
const ACC_WG: usize = 256;

// input, scale, weight, gate, out, params, then the weight again as f16 pairs.
const VECMAT_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Uniform),
    (7, Access::Read),
];
// vecmat_sliced: as vecmat, then the folded LayerNorm's input and g_y (FOLD in agcam.wgsl: the
// shader refers to them whether or not the pipeline folds, so plain launches bind dummies).
const VECMAT_SLICED_BINDINGS: &[(u32, Access)] = &{
    let mut all = [(10, Access::Read); 9];
    let mut i = 0;
    while i < VECMAT_BINDINGS.len() {
        all[i] = VECMAT_BINDINGS[i];
        i += 1;
    }
    all[8] = (11, Access::ReadWrite);
    all
};
// vecmat4: input, scale, gate, out, params, then the weight as vec4 and as f16 pairs.
const VECMAT4_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Uniform),
    (8, Access::Read),
    (9, Access::Read),
];
// dO, V, class-token scores, maps, params, then V again through its vec4 view.
const ACCUMULATE_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Uniform),
    (8, Access::Read),
];

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "agcam",
    constants: &[
        ("WG", WG),
        ("VM_ROWS", VM_ROWS),
        ("VM4_ROWS", VM4_ROWS),
        ("VM4_LIVE_ROWS", VM4_ROWS),
        ("VM4_LIVE_COLS4", VM_COLS4),
        ("VM_COLS4", VM_COLS4),
        ("VM4_WG", VM4_WG),
        ("VS_COLS", VS_COLS),
        ("VS_ROWS", VS_ROWS),
        ("VS_SLICES", VS_SLICES),
        ("ACC_WG", ACC_WG as u32),
    ],
    workgroups: &[
        ("topk", [WG, 1, 1]),
        ("vecmat", [WG, 1, 1]),
        ("vecmat4", [VM4_WG, 1, 1]),
        ("vecmat_sliced", [VS_COLS, VS_SLICES, 1]),
        ("accumulate", [WG, 1, 1]),
        ("accumulate_heads", [ACC_WG as u32, 1, 1]),
    ],
    structs: &[super::layout!(AgcamParams {
        rows,
        per_image,
        in_dim,
        out_dim,
        flag,
        heads,
        head_dim,
        eps
    })],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, Default)]
struct AgcamParams {
    rows: u32,
    per_image: u32,
    in_dim: u32,
    out_dim: u32,
    flag: u32,
    heads: u32,
    head_dim: u32,
    eps: f32,
}

/// What multiplies [`AgcamKernels::vecmat`]'s output at row r, column j (the `flag` of
/// agcam.wgsl's vecmat).
#[derive(Clone, Copy)]
pub(crate) enum Factor<'a> {
    One,
    /// gelu'(gate[r / per_image, j]): the MLP's activation at the pre-activation the forward
    /// kept, one row per image.
    GeluGrad(&'a wgpu::Buffer),
    /// column[j]: a LayerNorm's γ, giving the γ ⊙ u that [`AgcamKernels::vecmat_folded`]
    /// reads.
    Column(&'a wgpu::Buffer),
}

impl Factor<'_> {
    fn flag(&self) -> u32 {
        match self {
            Factor::One => 0,
            Factor::GeluGrad(_) => 1,
            Factor::Column(_) => 2,
        }
    }
}

/// The LayerNorm backward that [`AgcamKernels::vecmat_folded`] folds into its product:
/// the product's input is g_y = g + LNᵀ(γ ⊙ u), computed as it is read, and g_y is also
/// written out (the next layer's g).
pub(crate) struct NormFold<'a> {
    /// g [rows, in_dim].
    pub residual: &'a wgpu::Buffer,
    /// γ ⊙ u, u the gradient at the LayerNorm's output [rows, in_dim].
    pub scaled_upstream: &'a wgpu::Buffer,
    /// The LayerNorm's input, one row per image [rows / per_image, in_dim].
    pub x: &'a wgpu::Buffer,
    /// The LayerNorm's epsilon.
    pub eps: f32,
    /// Where g_y goes [rows, in_dim]: not `residual`, which other workgroups still read.
    pub out: &'a wgpu::Buffer,
}

/// `vecmat_sliced` and its twin that folds a LayerNorm backward into its input (FOLD).
struct Sliced {
    plain: Kernel,
    folded: Kernel,
}

impl Sliced {
    fn new(gpu: &Gpu, m: &Module, constants: &[(&str, f64)]) -> Sliced {
        let (entry, bindings) = ("vecmat_sliced", VECMAT_SLICED_BINDINGS);
        let fold_constants: Vec<_> = constants.iter().copied().chain([("FOLD", 1.0)]).collect();
        Sliced {
            plain: Kernel::new(gpu, m, entry, bindings, constants),
            // Told apart in profiles.
            folded: Kernel::new(gpu, m, entry, bindings, &fold_constants)
                .labelled("vecmat_sliced_folded"),
        }
    }

    fn get(&self, folded: bool) -> &Kernel {
        if folded {
            &self.folded
        } else {
            &self.plain
        }
    }
}

/// The backward chain's transposed products, shaped for one kernel set.
enum Vecmat {
    /// Register kernels for CPU rasterizers.
    Cpu {
        /// Any output width.
        scalar: Kernel,
        /// Output widths that are multiples of 4 (vec4 weight loads).
        vec4: Kernel,
        /// `vec4` serving one row and fewer columns per invocation ([`VECMAT4_SINGLE_ROW`]),
        /// for a single gradient row: 1.5× faster there on lavapipe; from 4 rows on, the
        /// shared weight loads win.
        vec4_single: Kernel,
    },
    /// GPUs: any output width, the reduction split across the workgroup; from
    /// [`GEMM_MIN_ROWS`] rows on, the tiled GEMM runs instead.
    Sliced(Sliced),
}

#[cfg(test)]
thread_local! {
    static FORCED_GEMM_ROWS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Test-only switch: launchers built on this thread while `rows` is `Some` take the tiled GEMM
/// (where the kernel set has one) from that many gradient rows on, instead of from
/// [`GEMM_MIN_ROWS`].
#[cfg(test)]
pub(crate) fn force_gemm_rows(rows: Option<usize>) {
    FORCED_GEMM_ROWS.with(|f| f.set(rows));
}

pub(crate) struct AgcamKernels {
    /// Whether `vecmat` reads its weights as f16 pairs.
    weights_f16: bool,
    /// Gradient rows from which the chain's products run on the tiled GEMM, where there is one.
    gemm_rows: usize,
    topk: Kernel,
    vecmat: Vecmat,
    accumulate: Kernel,
    /// The GPU set's accumulate: one invocation per (token, head) instead of per token.
    accumulate_heads: Option<Kernel>,
}

impl AgcamKernels {
    /// `precision` is that of the weights `vecmat` reads; `wide_slices` is
    /// [`Trials::wide_slices`](super::Trials).
    pub fn new(gpu: &Gpu, set: KernelSet, precision: Precision, wide_slices: bool) -> AgcamKernels {
        let m = module(gpu, "agcam");
        let w_f16 = [("W_F16", (precision == Precision::F16) as u32 as f64)];
        let single_row = VECMAT4_SINGLE_ROW.map(|(name, value)| (name, value as f64));
        let gpu_set = set.resolve(gpu) == KernelSet::Gpu;
        #[cfg(not(test))]
        let gemm_rows = GEMM_MIN_ROWS;
        #[cfg(test)]
        let gemm_rows = FORCED_GEMM_ROWS.with(|f| f.get()).unwrap_or(GEMM_MIN_ROWS);
        AgcamKernels {
            weights_f16: precision == Precision::F16,
            gemm_rows,
            topk: Kernel::new(
                gpu,
                &m,
                "topk",
                &[
                    (0, Access::Read),
                    (5, Access::Uniform),
                    (6, Access::ReadWrite),
                ],
                &[],
            ),
            vecmat: if gpu_set {
                let limits = &gpu.limits;
                let wide = wide_slices
                    && limits.max_compute_invocations_per_workgroup >= VS_COLS * VS_WIDE_SLICES
                    && limits.max_compute_workgroup_size_y >= VS_WIDE_SLICES;
                let slices = if wide { VS_WIDE_SLICES } else { VS_SLICES };
                Vecmat::Sliced(Sliced::new(
                    gpu,
                    &m,
                    &[w_f16[0], ("VS_SLICES", slices as f64)],
                ))
            } else {
                Vecmat::Cpu {
                    scalar: Kernel::new(gpu, &m, "vecmat", VECMAT_BINDINGS, &w_f16),
                    vec4: Kernel::new(gpu, &m, "vecmat4", VECMAT4_BINDINGS, &w_f16),
                    vec4_single: Kernel::new(
                        gpu,
                        &m,
                        "vecmat4",
                        VECMAT4_BINDINGS,
                        &[w_f16[0], single_row[0], single_row[1]],
                    ),
                }
            },
            accumulate: Kernel::new(gpu, &m, "accumulate", ACCUMULATE_BINDINGS, &[]),
            accumulate_heads: gpu_set
                .then(|| Kernel::new(gpu, &m, "accumulate_heads", ACCUMULATE_BINDINGS, &[])),
        }
    }

    /// `classes[b·K + s]` = the s-th largest logit of image b.
    pub fn topk(
        &self,
        gpu: &Gpu,
        logits: &wgpu::Buffer,
        classes: &wgpu::Buffer,
        batch: usize,
        num_classes: usize,
        k: usize,
    ) -> Dispatch {
        let params = AgcamParams {
            per_image: k as u32,
            in_dim: num_classes as u32,
            ..Default::default()
        };
        let u = gpu.uniform("topk params", &params);
        self.topk
            .bind()
            .storage(0, logits, words(batch * num_classes))
            .uniform(5, &u)
            .storage(6, classes, words(batch * k))
            .dispatch(gpu, [batch as u32, 1, 1])
            .work(k * batch * num_classes, 4 * batch * num_classes)
    }

    /// Whether [`AgcamKernels::vecmat_folded`] serves `rows` gradient rows: on the GPU set
    /// (on llvmpipe the folded product cost more than the dispatch it saved), and not where
    /// the chain runs on `gemm`'s tiled product, whose many rows share each dispatch anyway.
    pub fn folds(&self, gemm: &Gemm, rows: usize) -> bool {
        matches!(self.vecmat, Vecmat::Sliced(_))
            && (rows < self.gemm_rows || !gemm.has_backward_product())
    }

    /// `out[r] = (scale ⊙ input[r]) · weight` with `weight` [in_dim, out_dim], times
    /// `factor`. Chains of many rows run on `gemm`'s tiled product where the kernel set has
    /// one.
    #[allow(clippy::too_many_arguments)]
    pub fn vecmat(
        &self,
        gpu: &Gpu,
        gemm: &Gemm,
        input: &wgpu::Buffer,
        scale: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        factor: Factor<'_>,
        out: &wgpu::Buffer,
        (rows, per_image): (usize, usize),
        (in_dim, out_dim): (usize, usize),
    ) -> Dispatch {
        if rows >= self.gemm_rows {
            let gate = match factor {
                Factor::One => Some(None),
                Factor::GeluGrad(g) => Some(Some((g, per_image))),
                Factor::Column(_) => None,
            };
            let shape = (rows, out_dim, in_dim);
            if let Some(gate) = gate {
                if let Some(d) = gemm.backward_product(gpu, input, scale, weight, gate, out, shape)
                {
                    return d;
                }
            }
        }
        let params = AgcamParams {
            flag: factor.flag(),
            ..Self::product_params((rows, per_image), (in_dim, out_dim))
        };
        let u = gpu.uniform("vecmat params", &params);
        let (mut bind, groups) = self.product(gpu, false, &params, &u, (input, scale, weight, out));
        if let Vecmat::Sliced(_) = self.vecmat {
            bind = bind.unused(gpu, 10).unused(gpu, 11);
        }
        let bind = match factor {
            Factor::One => bind.unused(gpu, 3),
            Factor::GeluGrad(gate) => {
                bind.storage(3, gate, words(rows.div_ceil(per_image) * out_dim))
            }
            Factor::Column(column) => bind.storage(3, column, words(out_dim)),
        };
        bind.dispatch(gpu, groups).work(
            2 * rows * in_dim * out_dim,
            4 * (in_dim * out_dim + rows * (in_dim + out_dim)),
        )
    }

    /// [`AgcamKernels::vecmat`] of g_y = g + LNᵀ(γ ⊙ u) (see [`NormFold`]): one dispatch for
    /// the LayerNorm backward and the product that reads its result. Only where
    /// [`AgcamKernels::folds`] says so (it panics on the CPU set).
    #[allow(clippy::too_many_arguments)]
    pub fn vecmat_folded(
        &self,
        gpu: &Gpu,
        fold: &NormFold<'_>,
        scale: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        out: &wgpu::Buffer,
        (rows, per_image): (usize, usize),
        (in_dim, out_dim): (usize, usize),
    ) -> Dispatch {
        let params = AgcamParams {
            eps: fold.eps,
            ..Self::product_params((rows, per_image), (in_dim, out_dim))
        };
        let row_values = words(rows * in_dim);
        let u = gpu.uniform("vecmat params", &params);
        let (bind, groups) =
            self.product(gpu, true, &params, &u, (fold.residual, scale, weight, out));
        bind.storage(3, fold.scaled_upstream, row_values)
            .storage(10, fold.x, words(rows.div_ceil(per_image) * in_dim))
            .storage(11, fold.out, row_values)
            .dispatch(gpu, groups)
            .work(
                2 * rows * in_dim * out_dim + 20 * rows * in_dim,
                4 * (in_dim * out_dim + rows * (4 * in_dim + out_dim)),
            )
    }

    fn product_params(
        (rows, per_image): (usize, usize),
        (in_dim, out_dim): (usize, usize),
    ) -> AgcamParams {
        AgcamParams {
            rows: rows as u32,
            per_image: per_image as u32,
            in_dim: in_dim as u32,
            out_dim: out_dim as u32,
            ..Default::default()
        }
    }

    /// The product kernel for `rows` × `out_dim` outputs, its f32 and f16 weight slots, and
    /// its grid.
    fn product_kernel(
        &self,
        rows: usize,
        out_dim: usize,
        folded: bool,
    ) -> (&Kernel, (u32, u32), [u32; 3]) {
        // The weight as f32 at the first slot or as f16 pairs at the second: slots 8 and 9
        // read it four columns at a time, 2 and 7 one at a time.
        let (kernel, slots, column_groups, rows_per_group) = match &self.vecmat {
            Vecmat::Sliced(k) => (
                k.get(folded),
                (2, 7),
                (out_dim as u32).div_ceil(VS_COLS),
                VS_ROWS,
            ),
            Vecmat::Cpu {
                vec4, vec4_single, ..
            } if out_dim.is_multiple_of(4) => {
                let (kernel, rows_per_group, cols4) = if rows == 1 {
                    (vec4_single, 1, VECMAT4_SINGLE_ROW[1].1)
                } else {
                    (vec4, VM4_ROWS, VM_COLS4)
                };
                let columns = (out_dim as u32 / 4).div_ceil(cols4);
                (kernel, (8, 9), columns.div_ceil(VM4_WG), rows_per_group)
            }
            Vecmat::Cpu { scalar, .. } => (scalar, (2, 7), (out_dim as u32).div_ceil(WG), VM_ROWS),
        };
        let groups = [column_groups, (rows as u32).div_ceil(rows_per_group), 1];
        assert!(
            !folded || matches!(self.vecmat, Vecmat::Sliced(_)),
            "the CPU kernel set has no folded product"
        );
        (kernel, slots, groups)
    }

    /// Binds a product kernel's input, scale, weight (f32 or f16 pairs), output and
    /// parameters; with its grid.
    fn product<'a>(
        &'a self,
        gpu: &'a Gpu,
        folded: bool,
        params: &AgcamParams,
        uniform: &'a wgpu::Buffer,
        (input, scale, weight, out): (
            &'a wgpu::Buffer,
            &'a wgpu::Buffer,
            &'a wgpu::Buffer,
            &'a wgpu::Buffer,
        ),
    ) -> (Bindings<'a>, [u32; 3]) {
        let (rows, in_dim, out_dim) = (
            params.rows as usize,
            params.in_dim as usize,
            params.out_dim as usize,
        );
        let (kernel, (f32_slot, f16_slot), groups) = self.product_kernel(rows, out_dim, folded);
        let weight_elements = in_dim * out_dim;
        let (weight_slot, weight_bytes, other_slot) = if self.weights_f16 {
            let bytes = (2 * weight_elements).next_multiple_of(4) as u64;
            (f16_slot, bytes, f32_slot)
        } else {
            (f32_slot, words(weight_elements), f16_slot)
        };
        let bind = kernel
            .bind()
            .storage(0, input, words(rows * in_dim))
            .storage(1, scale, words(in_dim))
            .storage(weight_slot, weight, weight_bytes)
            .unused(gpu, other_slot)
            .storage(4, out, words(rows * out_dim))
            .uniform(5, uniform);
        (bind, groups)
    }

    /// `maps[r] (+)= Σ_h ReLU(dO[r, h] · V[b, j, h]) · sigmoid(S[b, h, j])` over patch keys j.
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate(
        &self,
        gpu: &Gpu,
        d_out: &wgpu::Buffer,
        v: &wgpu::Buffer,
        cls_scores: &wgpu::Buffer,
        maps: &wgpu::Buffer,
        (rows, per_image): (usize, usize),
        (tokens, heads, head_dim): (usize, usize, usize),
        add: bool,
    ) -> Dispatch {
        let params = AgcamParams {
            rows: rows as u32,
            per_image: per_image as u32,
            in_dim: tokens as u32,
            flag: add as u32,
            heads: heads as u32,
            head_dim: head_dim as u32,
            ..Default::default()
        };
        let u = gpu.uniform("accumulate params", &params);
        let (kernel, per_group) = match &self.accumulate_heads {
            Some(k) if heads <= ACC_WG => (k, ACC_WG / heads),
            _ => (&self.accumulate, WG as usize),
        };
        let groups = [(tokens - 1).div_ceil(per_group) as u32, rows as u32, 1];
        let dim = heads * head_dim;
        let images = rows / per_image;
        let v_end = words(images * tokens * dim);
        kernel
            .bind()
            .storage(0, d_out, words(rows * dim))
            .storage(2, v, v_end)
            .storage(3, cls_scores, words(images * heads * tokens))
            .storage(4, maps, words(rows * (tokens - 1)))
            .uniform(5, &u)
            .storage(8, v, v_end)
            .dispatch(gpu, groups)
            .work(
                2 * rows * tokens * dim,
                4 * (rows * dim + images * tokens * (dim + heads) + 2 * rows * tokens),
            )
    }
}

#[cfg(test)]
#[path = "agcam_tests.rs"]
mod tests;
