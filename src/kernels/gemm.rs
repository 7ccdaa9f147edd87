//! Launcher of shaders/gemm.wgsl: `C = epilogue(A · Wᵀ)` for nn.Linear layers and, batched over
//! images × heads with strided views, for the two products of attention.

use super::{module, module_with, words, Access, Dispatch, Kernel, KernelSet, Precision, Trials};
use crate::gpu::Gpu;

#[path = "gemm_coop.rs"]
mod coop;
#[cfg(test)]
pub(crate) use coop::{force_twin, MIRRORS as COOP_MIRRORS};
pub(crate) use coop::{CoopKernel, COOP16_SOURCE, COOP8_SOURCE, TWIN16_SOURCE, TWIN8_SOURCE};

/// What happens to the product before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Epilogue {
    /// `C = acc + bias`.
    Bias = 0,
    /// `C = gelu(acc + bias)`.
    Gelu = 1,
    /// `C += scale ⊙ (acc + bias)`: a residual branch with layer scale, in place.
    Residual = 2,
    /// `C = alpha · acc`.
    Scaled = 3,
}

/// gemm.wgsl's epilogue 4, `C = acc ⊙ gelu'(gate[row / gate_rows, col])`: the backward
/// chain's product through fc2ᵀ, only in [`Gemm::backward_product`].
const GELU_GRAD_EPILOGUE: u32 = 4;

// A, W, bias, scale, C, params, then W again as f16 pairs (read instead when W_F16), then
// the kept pre-activation rows (C again when none are kept).
const VEC4_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Uniform),
    (8, Access::Read),
    (10, Access::ReadWrite),
];
const SCALAR_BINDINGS: &[(u32, Access)] = SPLIT_BINDINGS.split_at(8).0;
// The scalar slots, then split-K's partial sums.
const SPLIT_BINDINGS: &[(u32, Access)] = &[
    (6, Access::Read),
    (7, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Uniform),
    (9, Access::Read),
    (10, Access::ReadWrite),
    (11, Access::ReadWrite),
];

// A (the branch), scale, C, params.
const RESIDUAL_ADD_BINDINGS: &[(u32, Access)] = &[
    (6, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Uniform),
];

/// A matrix inside a buffer, in elements: where matrix (image, head) starts and how far apart
/// its rows are. Must match `View` in gemm.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct View {
    pub offset: u32,
    pub row: u32,
    pub image: u32,
    pub head: u32,
}

impl View {
    /// A plain row-major matrix with rows of `row` elements.
    pub fn rows(row: usize) -> View {
        View {
            offset: 0,
            row: row as u32,
            image: 0,
            head: 0,
        }
    }

    /// Elements of the buffer that `rows × cols` matrices at every (image, head) of a launch
    /// over `images × heads` reach: one past the last element of the last matrix.
    fn extent(&self, rows: usize, cols: usize, images: usize, heads: usize) -> usize {
        if rows == 0 || cols == 0 || images == 0 || heads == 0 {
            return 0;
        }
        self.offset as usize
            + (images - 1) * self.image as usize
            + (heads - 1) * self.head as usize
            + (rows - 1) * self.row as usize
            + cols
    }

    /// Whether the view can be read as vec4.
    fn aligned(&self) -> bool {
        (self.offset | self.row | self.image | self.head).is_multiple_of(4)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    heads: u32,
    a: View,
    w: View,
    c: View,
    alpha: f32,
    col_offset: u32,
    epilogue: u32,
    gate_rows: u32,
    keep_every: u32,
    split_len: u32,
    splits: u32,
    _pad: u32,
}

/// The GEMM pipelines of one kernel set, per weight format: for the CPU set, a vec4 variant
/// (K and views multiples of 4) and a scalar one; for the GPU set, a 64 × 64
/// tile and a 128 × 128 one for large products.
pub(crate) struct Gemm {
    tiled: bool,
    /// Whether nn.Linear weights are stored as f16 (attention's products always read f32).
    weights_f16: bool,
    /// Indexed by `w_f16 as usize`; the f16 entry is `None` for f32 weights.
    vec4: [Option<Kernel>; 2],
    scalar: [Option<Kernel>; 2],
    /// CPU set only: the 8 × 8 kernel for products of at least [`WIDE_MIN_ROWS`] rows.
    wide: [Option<Kernel>; 2],
    /// CPU set, not on OpenGL: the 32 × 24 kernel for products of at least [`BLOCK_MIN_ROWS`]
    /// rows, with every epilogue but [`Epilogue::Residual`] (see [`Gemm::residual`]). Mesa
    /// takes seconds to compile it, and wgpu's GL backend panics when a thread waits more than
    /// a second for its context while another compiles, so GL uses `gemm_wide`.
    block: [Option<Kernel>; 2],
    /// The same with 8 columns per invocation, for attention's products (f32 operands).
    block_narrow: Option<Kernel>,
    /// GPU set only: the 128 × 128 tile for products of at least [`TILED128_MIN`] rows and
    /// columns (with [`Trials::prefetch128`], its software-pipelined form).
    tiled128: [Option<Kernel>; 2],
    /// GPU set with [`Trials::splitk`] only: `gemm_tiled_split` (indexed like `vec4`) and
    /// `gemm_split_reduce`, for nn.Linear products whose 64 × 64 grid has fewer than
    /// [`SMALL_GRID_GROUPS`] workgroups.
    split: Option<([Option<Kernel>; 2], Kernel)>,
    /// Split-K's partial sums, shared by every split product: each is reduced before the next
    /// writes (one queue, barriers between dispatches). Grown to the largest product recorded,
    /// which is bounded whatever the model or batch: a split product has G < 256 tiles of
    /// 64 × 64 and at most ⌈256 / G⌉ slices, so fewer than 512 · 4096 f32 = 8 MiB. Like the
    /// weights, it is outside the per-image activation budget (`--max-gpu-mem`).
    partial: std::sync::Mutex<Option<wgpu::Buffer>>,
    /// GPU set only: `gemm_tiled` with BACKWARD and f32 tiles, for the backward chain's
    /// transposed products ([`Gemm::backward_product`]); indexed like `vec4`.
    backward: [Option<Kernel>; 2],
    /// `c += scale ⊙ a` after a `gemm_block` residual branch.
    residual_add: Kernel,
    /// With f16 weights where the adapter has matching cooperative matrices (or, in tests, a
    /// forced twin): the kernel that runs every nn.Linear product, whatever the kernel set.
    coop: Option<(CoopKernel, Kernel)>,
}

/// Rows from which the CPU set uses `gemm_wide` (8 rows per workgroup, uniform): below, its
/// padding rows would cost more than its faster inner loop saves.
const WIDE_MIN_ROWS: usize = 16;

/// Rows from which the CPU set uses `gemm_block` (`BLOCK_ROWS` × `BLOCK_COLS` per invocation,
/// 8 invocations per workgroup; the constants of gemm.wgsl).
const BLOCK_MIN_ROWS: usize = 64;
const BLOCK_ROWS: u32 = 32;
const BLOCK_COLS: u32 = 24;
const BLOCK_COLS_NARROW: u32 = 8;
const BLOCK_WG: u32 = 8;

/// Output columns and rows per invocation, and invocations per workgroup side, of the
/// register kernels; output side of the tiled kernel's workgroup tile.
const TILE: u32 = 4;
const WG: u32 = 8;
const TILED_MN: u32 = 64;
/// Output side of `gemm_tiled128`'s workgroup tile, and the rows and columns from which the GPU
/// set uses it: below, most of a tile would be padding.
const TILED128_MN: u32 = 128;
const TILED128_MIN: usize = 128;
/// Workgroups from which the GPU set uses `gemm_tiled128`: with fewer, its large tiles leave
/// most of a big GPU idle (an H200 holds about 264 of them at once, two per multiprocessor),
/// and the 64 × 64 tile, four times as many workgroups, finishes first. ViT-B at batch 1 ran
/// 1.7× slower on the H200 before this threshold.
const TILED128_MIN_GROUPS: usize = 256;
/// The 64 × 64 grid below which [`Trials::splitk`] splits an nn.Linear's K: fewer workgroups
/// than a large GPU holds at once. Each slice sums at least [`SPLIT_MIN_LEN`] terms, a
/// multiple of the tile's 16.
const SMALL_GRID_GROUPS: usize = 256;
const SPLIT_MIN_LEN: usize = 128;

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "gemm",
    constants: &[
        ("BLOCK_ROWS", BLOCK_ROWS),
        ("MAX_BLOCK_COLS", BLOCK_COLS),
        ("BLOCK_COLS", BLOCK_COLS),
        ("WIDE_ROWS", 8),
        ("TILE_MN", TILED_MN),
        ("BIG_MN", TILED128_MN),
    ],
    workgroups: &[
        ("gemm_wide", [64, 1, 1]),
        ("gemm_block", [BLOCK_WG, 1, 1]),
        ("gemm_vec4", [WG, WG, 1]),
        ("gemm_scalar", [WG, WG, 1]),
        ("gemm_tiled", [TILED_MN / TILE, TILED_MN / TILE, 1]),
        ("gemm_tiled_split", [TILED_MN / TILE, TILED_MN / TILE, 1]),
        ("gemm_split_reduce", [64, 1, 1]),
        ("gemm_tiled128", [16, 16, 1]),
        ("residual_add", [64, 1, 1]),
    ],
    structs: &[
        super::layout!(View {
            offset,
            row,
            image,
            head
        }),
        super::layout!(GemmParams {
            m,
            n,
            k,
            heads,
            a,
            w,
            c,
            alpha,
            col_offset,
            epilogue,
            gate_rows,
            keep_every,
            split_len,
            splits
        }),
    ],
};

/// One batched product: `images × heads` products of `m × k` by `(n × k)ᵀ`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batched {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub images: usize,
    pub heads: usize,
}

impl Gemm {
    /// The GEMMs of `kind` for `precision` weights, the default kernels only.
    #[cfg(test)]
    pub fn new(gpu: &Gpu, kind: KernelSet, precision: Precision) -> Gemm {
        Gemm::with_trials(gpu, kind, precision, Trials::default())
    }

    /// The GEMMs of `kind` for `precision` weights, with the trial kernels of `trials` (GPU
    /// set only; the CPU set has no tiled kernels to replace).
    pub fn with_trials(gpu: &Gpu, kind: KernelSet, precision: Precision, trials: Trials) -> Gemm {
        let weights_f16 = precision == Precision::F16;
        let tiled = kind.resolve(gpu) == KernelSet::Gpu;
        let m = module_with(gpu, "gemm", tiled && weights_f16 && gpu.has_f16());
        let variant_with = |entry: &str, bindings, w_f16: bool, extra: &[(&str, f64)]| {
            (!w_f16 || weights_f16).then(|| {
                let mut constants = vec![("W_F16", w_f16 as u32 as f64)];
                constants.extend_from_slice(extra);
                Kernel::new(gpu, &m, entry, bindings, &constants)
            })
        };
        let variant =
            |entry: &str, bindings, w_f16: bool| variant_with(entry, bindings, w_f16, &[]);
        let (vec4_entry, scalar_entry) = if tiled {
            (None, "gemm_tiled")
        } else {
            (Some("gemm_vec4"), "gemm_scalar")
        };
        let both = |entry: Option<&str>, bindings| {
            entry.map_or([None, None], |e| {
                [variant(e, bindings, false), variant(e, bindings, true)]
            })
        };
        let gl = gpu.info.backend == wgpu::Backend::Gl;
        // The backward chain's products keep f32 tiles even where the module multiplies in
        // f16: gradients are small numbers that f16 would flush or round.
        let f16_module = tiled && weights_f16 && gpu.has_f16();
        let f32_module = f16_module.then(|| module(gpu, "gemm"));
        let backward_module = f32_module.as_ref().unwrap_or(&m);
        let backward_variant = |w_f16: bool| {
            (tiled && (!w_f16 || weights_f16)).then(|| {
                let constants = [("W_F16", w_f16 as u32 as f64), ("BACKWARD", 1.0)];
                Kernel::new(
                    gpu,
                    backward_module,
                    "gemm_tiled",
                    SCALAR_BINDINGS,
                    &constants,
                )
            })
        };
        Gemm {
            tiled,
            weights_f16,
            vec4: both(vec4_entry, VEC4_BINDINGS),
            scalar: both(Some(scalar_entry), SCALAR_BINDINGS),
            wide: both((!tiled).then_some("gemm_wide"), VEC4_BINDINGS),
            block: both((!tiled && !gl).then_some("gemm_block"), VEC4_BINDINGS),
            block_narrow: (!tiled && !gl).then(|| {
                let constants = [("BLOCK_COLS", BLOCK_COLS_NARROW as f64)];
                Kernel::new(gpu, &m, "gemm_block", VEC4_BINDINGS, &constants)
            }),
            tiled128: if tiled && trials.prefetch128 {
                [false, true].map(|w_f16| {
                    variant_with(
                        "gemm_tiled128",
                        SCALAR_BINDINGS,
                        w_f16,
                        &[("PREFETCH", 1.0)],
                    )
                    .map(|k| k.labelled("gemm_prefetch128"))
                })
            } else {
                both(tiled.then_some("gemm_tiled128"), SCALAR_BINDINGS)
            },
            split: (tiled && trials.splitk).then(|| {
                let products = [false, true].map(|w_f16| {
                    variant("gemm_tiled_split", SPLIT_BINDINGS, w_f16)
                        .map(|k| k.labelled("gemm_splitk"))
                });
                let reduce = Kernel::new(gpu, &m, "gemm_split_reduce", SPLIT_BINDINGS, &[]);
                (products, reduce)
            }),
            partial: std::sync::Mutex::new(None),
            backward: [backward_variant(false), backward_variant(true)],
            residual_add: Kernel::new(gpu, &m, "residual_add", RESIDUAL_ADD_BINDINGS, &[]),
            coop: weights_f16
                .then(|| CoopKernel::select(gpu))
                .flatten()
                .map(|c| (c, c.compile(gpu))),
        }
    }

    /// The cooperative-matrix kernel (or twin) that runs the nn.Linear products, if any.
    #[cfg(test)]
    pub fn cooperative(&self) -> Option<CoopKernel> {
        self.coop.as_ref().map(|&(c, _)| c)
    }

    /// An nn.Linear: `c[m, n] = epilogue(a[m, k] · w[n, k]ᵀ + bias[n])`. `scale` is read only
    /// by [`Epilogue::Residual`]; pass any buffer otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        &self,
        gpu: &Gpu,
        a: &wgpu::Buffer,
        w: &wgpu::Buffer,
        bias: &wgpu::Buffer,
        scale: &wgpu::Buffer,
        c: &wgpu::Buffer,
        (m, n, k): (usize, usize, usize),
        epilogue: Epilogue,
    ) -> Dispatch {
        self.linear_keeping(gpu, [a, w, bias, scale, c], (m, n, k), epilogue, None)
    }

    /// [`Gemm::linear`] with buffers `[a, w, bias, scale, c]` that, with `keep` = (`kept`,
    /// `every`), also writes rows 0, `every`, 2·`every`, … of `a · wᵀ + bias` (before a GELU
    /// epilogue) to consecutive rows of `kept`: fc1's pre-activation at the class tokens, for
    /// the AGCAM backward. Bias and GELU epilogues only.
    pub fn linear_keeping(
        &self,
        gpu: &Gpu,
        buffers: [&wgpu::Buffer; 5],
        (m, n, k): (usize, usize, usize),
        epilogue: Epilogue,
        keep: Option<(&wgpu::Buffer, usize)>,
    ) -> Dispatch {
        assert!(
            keep.is_none() || matches!(epilogue, Epilogue::Bias | Epilogue::Gelu),
            "pre-activations are kept by the Bias and GELU epilogues only"
        );
        let shape = Batched {
            m,
            n,
            k,
            images: 1,
            heads: 1,
        };
        let views = [View::rows(k), View::rows(k), View::rows(n)];
        let w_f16 = self.weights_f16;
        self.launch(
            gpu,
            buffers,
            views,
            shape,
            (epilogue, keep),
            (1.0, 0, w_f16, false),
        )
    }

    /// An nn.Linear over strided views: `m` rows of `a` (rows `a_view.row` apart) times the
    /// output features `col_offset..col_offset + n` of `w` (its rows from `w_view.offset`),
    /// written to rows of `c` `c_view.row` apart. Lets the last block work on class tokens
    /// only and compute just K and V for the rest.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_strided(
        &self,
        gpu: &Gpu,
        (a, a_view): (&wgpu::Buffer, View),
        (w, w_view): (&wgpu::Buffer, View),
        (bias, scale, col_offset): (&wgpu::Buffer, &wgpu::Buffer, usize),
        (c, c_view): (&wgpu::Buffer, View),
        (m, n, k): (usize, usize, usize),
        epilogue: Epilogue,
    ) -> Dispatch {
        let shape = Batched {
            m,
            n,
            k,
            images: 1,
            heads: 1,
        };
        let views = [a_view, w_view, c_view];
        let buffers = [a, w, bias, scale, c];
        let w_f16 = self.weights_f16;
        self.launch(
            gpu,
            buffers,
            views,
            shape,
            (epilogue, None),
            (1.0, col_offset, w_f16, false),
        )
    }

    /// A residual branch, in place: `c += scale ⊙ (a · wᵀ + bias)` over strided views, as
    /// [`Gemm::linear_strided`] with [`Epilogue::Residual`]. Where the product runs on
    /// `gemm_block`, whose epilogue does not read C, the branch goes to `scratch` (`m` rows of
    /// `n`) and a second dispatch adds it; elsewhere one dispatch does it all.
    #[allow(clippy::too_many_arguments)]
    pub fn residual(
        &self,
        gpu: &Gpu,
        a: (&wgpu::Buffer, View),
        w: (&wgpu::Buffer, View),
        (bias, scale, col_offset): (&wgpu::Buffer, &wgpu::Buffer, usize),
        (c, c_view): (&wgpu::Buffer, View),
        scratch: &wgpu::Buffer,
        (m, n, k): (usize, usize, usize),
    ) -> Vec<Dispatch> {
        let terms = (bias, scale, col_offset);
        // The cooperative kernel has the residual epilogue, as has every kernel but gemm_block.
        if self.coop.is_some() || !self.runs_on_block(m, k, a.1, w.1) {
            let c = (c, c_view);
            let d = self.linear_strided(gpu, a, w, terms, c, (m, n, k), Epilogue::Residual);
            return vec![d];
        }
        let branch = (scratch, View::rows(n));
        let product = self.linear_strided(gpu, a, w, terms, branch, (m, n, k), Epilogue::Bias);
        let params = GemmParams {
            m: m as u32,
            n: n as u32,
            k: 0,
            heads: 1,
            a: View::rows(n),
            w: View::rows(0),
            c: c_view,
            alpha: 1.0,
            col_offset: col_offset as u32,
            epilogue: Epilogue::Residual as u32,
            gate_rows: 1,
            // No kept rows, no split.
            ..bytemuck::Zeroable::zeroed()
        };
        let uniform = gpu.uniform("residual_add params", &params);
        let groups = [(n as u32).div_ceil(64), (m as u32).min(65535), 1];
        let add = self
            .residual_add
            .bind()
            .storage(6, scratch, words(m * n))
            .storage(3, scale, words(col_offset + n))
            .storage(4, c, words(c_view.extent(m, n, 1, 1)))
            .uniform(5, &uniform)
            .dispatch(gpu, groups)
            .work(2 * m * n, 4 * (3 * m * n + n));
        vec![product, add]
    }

    /// Whether a product of `m` rows and depth `k` over these views runs on `gemm_block`.
    fn runs_on_block(&self, m: usize, k: usize, a_view: View, w_view: View) -> bool {
        self.block[0].is_some() && m >= BLOCK_MIN_ROWS && self.vec4_ok(k, a_view, w_view)
    }

    /// Whether a product of this shape runs on `gemm_tiled128`.
    fn runs_on_tiled128(&self, s: Batched) -> bool {
        let side = TILED128_MN as usize;
        let groups = s.m.div_ceil(side) * s.n.div_ceil(side) * s.images * s.heads;
        self.tiled && s.m >= TILED128_MIN && s.n >= TILED128_MIN && groups >= TILED128_MIN_GROUPS
    }

    /// Into how many slices of K [`Trials::splitk`] splits a product of this shape, and the
    /// terms per slice; `None` where it does not (no trial, batched, or grid or K too small).
    fn split(&self, s: Batched) -> Option<(usize, usize)> {
        let side = TILED_MN as usize;
        let groups = s.m.div_ceil(side) * s.n.div_ceil(side);
        if self.split.is_none() || s.images * s.heads != 1 || groups >= SMALL_GRID_GROUPS {
            return None;
        }
        let wanted = SMALL_GRID_GROUPS.div_ceil(groups).min(s.k / SPLIT_MIN_LEN);
        let len = s.k.div_ceil(wanted.max(1)).next_multiple_of(16);
        let splits = s.k.div_ceil(len);
        (splits >= 2).then_some((splits, len))
    }

    /// The shared buffer of split-K's partial sums, at least `bytes` long.
    fn partial_sums(&self, gpu: &Gpu, bytes: u64) -> wgpu::Buffer {
        let mut shared = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        match &*shared {
            Some(buffer) if buffer.size() >= bytes => buffer.clone(),
            _ => shared
                .insert(gpu.storage("split-k partial sums", bytes))
                .clone(),
        }
    }

    /// Whether A and W can be read as vec4 by the CPU set's kernels.
    fn vec4_ok(&self, k: usize, a_view: View, w_view: View) -> bool {
        !self.tiled && k.is_multiple_of(4) && a_view.aligned() && w_view.aligned()
    }

    /// `c = alpha · a · wᵀ` for every (image, head) matrix of the views.
    #[allow(clippy::too_many_arguments)]
    pub fn batched(
        &self,
        gpu: &Gpu,
        (a, a_view): (&wgpu::Buffer, View),
        (w, w_view): (&wgpu::Buffer, View),
        (c, c_view): (&wgpu::Buffer, View),
        shape: Batched,
        alpha: f32,
    ) -> Dispatch {
        // The Scaled epilogue reads neither bias nor scale: `launch` binds the dummy there.
        let views = [a_view, w_view, c_view];
        let epilogue = Epilogue::Scaled;
        self.launch(
            gpu,
            [a, w, a, a, c],
            views,
            shape,
            (epilogue, None),
            (alpha, 0, false, true),
        )
    }

    /// Whether this kernel set has [`Gemm::backward_product`] (the GPU set).
    pub fn has_backward_product(&self) -> bool {
        self.backward[self.weights_f16 as usize].is_some()
    }

    /// A product of the backward chain on the 64 × 64 tile, where this kernel set has one (the
    /// GPU set; `None` elsewhere): `c[m, n] = (a[m, :] ⊙ scale) · w` for an nn.Linear's weight
    /// `w` [out = k, in = n], i.e. the gradient at the Linear's input from `m` gradient rows
    /// at its output, times `gelu'(gate[m / gate_rows, n])` when a gate is given. Tiles and
    /// sums stay f32 whatever the weights' precision.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_product(
        &self,
        gpu: &Gpu,
        a: &wgpu::Buffer,
        scale: &wgpu::Buffer,
        w: &wgpu::Buffer,
        gate: Option<(&wgpu::Buffer, usize)>,
        c: &wgpu::Buffer,
        (m, n, k): (usize, usize, usize),
    ) -> Option<Dispatch> {
        let w_f16 = self.weights_f16;
        let kernel = self.backward[w_f16 as usize].as_ref()?;
        let (epilogue, gate_rows) = match gate {
            Some((_, rows)) => (GELU_GRAD_EPILOGUE, rows),
            None => (Epilogue::Scaled as u32, 1),
        };
        let params = GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            heads: 1,
            a: View::rows(k),
            w: View::rows(n),
            c: View::rows(n),
            alpha: 1.0,
            col_offset: 0,
            epilogue,
            gate_rows: gate_rows as u32,
            // No kept rows, no split.
            ..bytemuck::Zeroable::zeroed()
        };
        let uniform = gpu.uniform("backward gemm params", &params);
        let (w_used, w_unused, w_bytes) = if w_f16 {
            (9, 7, (2 * k * n).next_multiple_of(4) as u64)
        } else {
            (7, 9, words(k * n))
        };
        let bind = kernel
            .bind()
            .storage(6, a, words(m * k))
            .storage(3, scale, words(k))
            .storage(w_used, w, w_bytes)
            .unused(gpu, w_unused)
            .storage(4, c, words(m * n))
            .storage(10, c, words(m * n))
            .uniform(5, &uniform);
        let bind = match gate {
            Some((gate, rows)) => bind.storage(2, gate, words(m.div_ceil(rows) * n)),
            None => bind.unused(gpu, 2),
        };
        let groups = [
            (n as u32).div_ceil(TILED_MN),
            (m as u32).div_ceil(TILED_MN),
            1,
        ];
        let w_element = if w_f16 { 2 } else { 4 };
        Some(
            bind.dispatch(gpu, groups)
                .work(2 * m * n * k, 4 * (m * k + m * n) + w_element * k * n),
        )
    }

    fn launch(
        &self,
        gpu: &Gpu,
        [a, w, bias, scale, c]: [&wgpu::Buffer; 5],
        [a_view, w_view, c_view]: [View; 3],
        s: Batched,
        (epilogue, keep): (Epilogue, Option<(&wgpu::Buffer, usize)>),
        (alpha, col_offset, w_f16, attention): (f32, usize, bool, bool),
    ) -> Dispatch {
        let vec4 = self.vec4_ok(s.k, a_view, w_view);
        // gemm_block has no residual epilogue: `residual` routes around it, and a direct
        // Residual launch (the kernel tests) takes the next kernel.
        let block = epilogue != Epilogue::Residual && self.runs_on_block(s.m, s.k, a_view, w_view);
        // The block, wide and vec4 kernels read A and W as vec4 (slots 0, 1, 8), the others
        // as scalars (6, 7, 9).
        // nn.Linear products with f16 weights go to the cooperative kernel where there is one.
        let coop = self.coop.as_ref().filter(|_| w_f16 && !attention);
        let split = if coop.is_none() && !attention {
            self.split(s)
        } else {
            None
        };
        let (kernel, groups, vec4_slots) = if let Some((c, kernel)) = coop {
            let side = c.tile();
            let groups = [(s.n as u32).div_ceil(side), (s.m as u32).div_ceil(side), 1];
            (Some(kernel), groups, false)
        } else if split.is_some() {
            let side = TILED_MN;
            let groups = [(s.n as u32).div_ceil(side), (s.m as u32).div_ceil(side), 1];
            let products = self.split.as_ref().map(|(p, _)| &p[w_f16 as usize]);
            (products.and_then(Option::as_ref), groups, false)
        } else if block {
            let (kernel, cols) = if attention {
                (self.block_narrow.as_ref(), BLOCK_COLS_NARROW)
            } else {
                (self.block[w_f16 as usize].as_ref(), BLOCK_COLS)
            };
            let groups = [
                (s.n as u32).div_ceil(cols * BLOCK_WG),
                (s.m as u32).div_ceil(BLOCK_ROWS),
                1,
            ];
            (kernel, groups, true)
        } else if self.runs_on_tiled128(s) {
            let side = TILED128_MN;
            let groups = [(s.n as u32).div_ceil(side), (s.m as u32).div_ceil(side), 1];
            (self.tiled128[w_f16 as usize].as_ref(), groups, false)
        } else if vec4 && s.m >= WIDE_MIN_ROWS {
            let groups = [(s.n as u32).div_ceil(8 * 64), (s.m as u32).div_ceil(8), 1];
            (self.wide[w_f16 as usize].as_ref(), groups, true)
        } else {
            let side = if self.tiled { TILED_MN } else { TILE * WG };
            let groups = [(s.n as u32).div_ceil(side), (s.m as u32).div_ceil(side), 1];
            let kernels = if vec4 { &self.vec4 } else { &self.scalar };
            (kernels[w_f16 as usize].as_ref(), groups, vec4)
        };
        let kernel = kernel.expect("the GEMM variant for this kernel set and weight format");
        let (splits, split_len) = split.unwrap_or((1, 0));
        let groups = [groups[0], groups[1], (s.images * s.heads * splits) as u32];
        let params = GemmParams {
            m: s.m as u32,
            n: s.n as u32,
            k: s.k as u32,
            heads: s.heads as u32,
            a: a_view,
            w: w_view,
            c: c_view,
            alpha,
            col_offset: col_offset as u32,
            epilogue: epilogue as u32,
            gate_rows: 1,
            keep_every: keep.map_or(0, |(_, every)| every as u32),
            split_len: split_len as u32,
            splits: splits as u32,
            _pad: 0,
        };
        let uniform = gpu.uniform("gemm params", &params);
        let count = s.images * s.heads;
        let out_reads = if epilogue == Epilogue::Residual { 2 } else { 1 };
        let w_bytes = if w_f16 { 2 } else { 4 };
        let (a_slot, w_slot, w_f16_slot) = if vec4_slots { (0, 1, 8) } else { (6, 7, 9) };
        let (images, heads) = (s.images, s.heads);
        let a_end = words(a_view.extent(s.m, s.k, images, heads));
        let w_end = (w_bytes * w_view.extent(s.n, s.k, images, heads)).next_multiple_of(4);
        let c_end = words(c_view.extent(s.m, s.n, images, heads));
        let (w_used, w_unused) = if w_f16 {
            (w_f16_slot, w_slot)
        } else {
            (w_slot, w_f16_slot)
        };
        // Split-K's partial sums, [splits, M, N], which the reduction reads.
        let partial = split.map(|_| self.partial_sums(gpu, words(splits * s.m * s.n)));
        let bind_and_dispatch = |kernel: &Kernel, groups: [u32; 3]| {
            let mut bind = kernel
                .bind()
                .storage(a_slot, a, a_end)
                .storage(w_used, w, w_end as u64)
                .unused(gpu, w_unused)
                .storage(4, c, c_end)
                .uniform(5, &uniform);
            bind = match keep {
                Some((kept, every)) => bind.storage(10, kept, words(s.m.div_ceil(every) * s.n)),
                None => bind.storage(10, c, c_end),
            };
            let features = words(col_offset + s.n);
            bind = match epilogue {
                Epilogue::Bias | Epilogue::Gelu => bind.storage(2, bias, features).unused(gpu, 3),
                Epilogue::Residual => bind.storage(2, bias, features).storage(3, scale, features),
                Epilogue::Scaled => bind.unused(gpu, 2).unused(gpu, 3),
            };
            if let Some(partial) = &partial {
                bind = bind.storage(11, partial, words(splits * s.m * s.n));
            }
            bind.dispatch(gpu, groups)
        };
        let product = bind_and_dispatch(kernel, groups).work(
            2 * count * s.m * s.n * s.k,
            count * (4 * s.m * s.k + w_bytes * s.n * s.k + 4 * out_reads * s.m * s.n),
        );
        match (&self.split, split) {
            (Some((_, reduce)), Some(_)) => {
                let groups = [((s.m * s.n) as u32).div_ceil(64), 1, 1];
                let sums = bind_and_dispatch(reduce, groups)
                    .work(splits * s.m * s.n, 4 * (splits + 1) * s.m * s.n);
                product.followed_by(sums)
            }
            _ => product,
        }
    }
}
