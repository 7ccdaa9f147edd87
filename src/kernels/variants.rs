//! The catalogue of every shader variant the engine can compile: which entry point of which
//! shader file, with which override constants and arithmetic type, and on which back ends the
//! engine would select it. `agcam shaders --out DIR` writes each one as a complete WGSL file,
//! and the tests translate each with naga for the back ends it targets and check that every
//! kernel the launchers compile on the test adapters is listed here.

use super::agcam::{VECMAT4_SINGLE_ROW, VS_SLICES, VS_WIDE_SLICES};
use super::{shader_source, KernelSet, SHADERS};
use crate::gpu::Backend;

/// One shader variant: a compute entry point of one shader file, specialised by override
/// constants and by the arithmetic type of its `half` alias.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShaderVariant {
    /// The file in `shaders/` (without `.wgsl`), e.g. `gemm`.
    pub shader: &'static str,
    /// The `@compute` entry point, e.g. `gemm_tiled`.
    pub kernel: &'static str,
    /// Override constants as the engine passes them (booleans as 0 / 1).
    pub constants: Vec<(&'static str, u32)>,
    /// Whether the `half` alias is `f16` (f16 arithmetic, needs the adapter's SHADER_F16);
    /// otherwise it is `f32`.
    pub f16_math: bool,
    /// Selected only on adapters without SHADER_F16 (f16 weights with f32 arithmetic, where
    /// adapters that have it get the twin with `f16_math` set).
    pub without_f16: bool,
    /// The kernel set that uses it, or `None` for kernels both sets share.
    pub kernel_set: Option<KernelSet>,
    /// For the cooperative-matrix GEMMs: the side of the f16 → f32 cooperative matrices it
    /// multiplies, which the adapter must offer (see `Gpu::cooperative_fragment`).
    pub cooperative_matrix: Option<u32>,
    /// Back ends on which the engine would select it.
    pub targets: Vec<Backend>,
}

/// Every back end the engine runs on.
const ALL: [Backend; 4] = [Backend::Vulkan, Backend::Metal, Backend::Dx12, Backend::Gl];

impl ShaderVariant {
    fn new(
        shader: &'static str,
        kernel: &'static str,
        constants: &[(&'static str, u32)],
        kernel_set: Option<KernelSet>,
    ) -> ShaderVariant {
        let mut constants = constants.to_vec();
        constants.sort_unstable();
        ShaderVariant {
            shader,
            kernel,
            constants,
            f16_math: false,
            without_f16: false,
            kernel_set,
            cooperative_matrix: None,
            targets: ALL.to_vec(),
        }
    }

    /// The same variant with f16 arithmetic: wgpu grants SHADER_F16 on Vulkan, Metal and DX12,
    /// never on OpenGL.
    fn f16_math(mut self) -> ShaderVariant {
        self.f16_math = true;
        self.targets.retain(|&b| b != Backend::Gl);
        self
    }

    /// The same variant, selected only where the adapter lacks SHADER_F16.
    fn without_f16(mut self) -> ShaderVariant {
        self.without_f16 = true;
        self
    }

    /// The same variant on cooperative matrices of side `fragment`, selected only on `targets`.
    fn cooperative(mut self, fragment: u32, targets: &[Backend]) -> ShaderVariant {
        self.cooperative_matrix = Some(fragment);
        self.targets = targets.to_vec();
        self
    }

    /// The same variant, never selected on OpenGL (see `Gemm::block`).
    fn not_on_gl(mut self) -> ShaderVariant {
        self.targets.retain(|&b| b != Backend::Gl);
        self
    }

    /// A file name unique within the catalogue: the kernel, each constant that differs from
    /// off (`-w_f16`, `-block_cols8`), then the arithmetic type.
    pub fn file_name(&self) -> String {
        let mut name = self.kernel.to_string();
        for &(constant, value) in &self.constants {
            let constant = constant.to_lowercase();
            match (self.is_bool(constant.as_str()), value) {
                (true, 0) => {}
                (true, _) => name += &format!("-{constant}"),
                (false, v) => name += &format!("-{constant}{v}"),
            }
        }
        name += if self.f16_math {
            "-f16.wgsl"
        } else {
            "-f32.wgsl"
        };
        name
    }

    fn is_bool(&self, lowercase_constant: &str) -> bool {
        let needle = format!("override {}: bool", lowercase_constant.to_uppercase());
        self.file_body().contains(&needle)
    }

    fn file_body(&self) -> &'static str {
        SHADERS
            .iter()
            .find(|(n, _)| *n == self.shader)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no shader named {}", self.shader))
    }

    /// The complete WGSL of this variant: the source the engine compiles, with each override
    /// constant's default replaced by the value the engine passes, so that the file compiles
    /// on its own to exactly the kernel the engine runs.
    pub fn source(&self) -> String {
        let header = format!(
            "// agcam shader variant: entry point `{}` of shaders/{}.wgsl, {} arithmetic{}.\n\
             // Selected on: {}.\n",
            self.kernel,
            self.shader,
            if self.f16_math { "f16" } else { "f32" },
            self.constants
                .iter()
                .map(|(c, v)| format!(", {c} = {v}"))
                .collect::<String>(),
            self.targets
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(", "),
        );
        let mut lines: Vec<String> = shader_source(self.shader, self.f16_math)
            .lines()
            .map(str::to_string)
            .collect();
        for &(constant, value) in &self.constants {
            let prefix = format!("override {constant}:");
            let line = lines
                .iter_mut()
                .find(|l| l.trim_start().starts_with(&prefix))
                .unwrap_or_else(|| panic!("{}.wgsl has no override {constant}", self.shader));
            let (declaration, _) = line.split_once('=').expect("an override with a default");
            let literal = if declaration.contains("bool") {
                (value != 0).to_string()
            } else {
                format!("{value}u")
            };
            *line = format!("{}= {literal}; // set by agcam", declaration);
        }
        header + &lines.join("\n") + "\n"
    }
}

/// Every shader variant the engine can compile, in the order of the launchers in
/// `src/kernels/`. Keep it in step with their constructors: a test compiles every launcher on
/// the test adapters and fails on any kernel missing here, or any Vulkan variant never built.
pub fn shader_variants() -> Vec<ShaderVariant> {
    use KernelSet::{Cpu, Gpu};
    let v = ShaderVariant::new;
    let mut out = Vec::new();
    // gemm: f32 and f16 weights (W_F16) for each GEMM of each set. For f16 weights on an
    // adapter with SHADER_F16, the GPU set compiles its whole module with f16 arithmetic.
    for w_f16 in [0, 1] {
        let w = [("W_F16", w_f16)];
        for entry in ["gemm_vec4", "gemm_scalar", "gemm_wide"] {
            out.push(v("gemm", entry, &w, Some(Cpu)));
        }
        out.push(v("gemm", "gemm_block", &w, Some(Cpu)).not_on_gl());
        // gemm_tiled_split and gemm_tiled128 with PREFETCH are trial kernels, selected only
        // through AGCAM_TRIAL_KERNELS (`Trials`), as is gemm_split_reduce below.
        let prefetch = [w[0], ("PREFETCH", 1)];
        for (entry, constants) in [
            ("gemm_tiled", &w[..]),
            ("gemm_tiled128", &w[..]),
            ("gemm_tiled_split", &w[..]),
            ("gemm_tiled128", &prefetch[..]),
        ] {
            let f32_math = v("gemm", entry, constants, Some(Gpu));
            out.push(if w_f16 == 1 {
                f32_math.without_f16()
            } else {
                f32_math
            });
            out.push(v("gemm", entry, constants, Some(Gpu)).f16_math());
        }
        // The backward chain's transposed products: f32 tiles with either weight format.
        let backward = [w[0], ("BACKWARD", 1)];
        out.push(v("gemm", "gemm_tiled", &backward, Some(Gpu)));
    }
    out.push(v("gemm", "gemm_block", &[("BLOCK_COLS", 8)], Some(Cpu)).not_on_gl());
    out.push(v("gemm", "residual_add", &[], None));
    out.push(v("gemm", "residual_add", &[], Some(Gpu)).f16_math());
    out.push(v("gemm", "gemm_split_reduce", &[], Some(Gpu)));
    out.push(v("gemm", "gemm_split_reduce", &[], Some(Gpu)).f16_math());
    // The cooperative-matrix GEMM, for f16 weights, with either kernel set. 16 × 16 only on
    // Vulkan: Metal's simdgroup matrices are 8 × 8 (naga writes MSL for a 16 × 16 module, but
    // with a `simdgroup_float16x16` type that Metal does not have), and DX12 and OpenGL have
    // no cooperative matrices in wgpu 30. Their scalar twins (gemm_twin16, gemm_twin8) are
    // compiled by the tests only, so they are not listed.
    let w_f16 = [("W_F16", 1)];
    out.push(
        v("gemm_coop16", "gemm_coop16", &w_f16, None)
            .f16_math()
            .cooperative(16, &[Backend::Vulkan]),
    );
    out.push(
        v("gemm_coop8", "gemm_coop8", &w_f16, None)
            .f16_math()
            .cooperative(8, &[Backend::Vulkan, Backend::Metal]),
    );
    for entry in [
        "layernorm",
        "layernorm_serial",
        "layernorm_backward",
        "layernorm_backward_serial",
    ] {
        out.push(v("layernorm", entry, &[], None));
    }
    for entry in ["softmax_rows", "softmax_rows_serial", "split_v"] {
        out.push(v("attention", entry, &[], None));
    }
    // Flash-style attention without the [N, N] scores, where no caller reads them.
    out.push(v("attention", "attention_fused", &[], Some(Gpu)));
    for entry in ["im2col", "assemble", "gather_strided", "mean_patches"] {
        out.push(v("tokens", entry, &[], None));
    }
    for src_f16 in [0, 1] {
        out.push(v("tokens", "gather_indexed", &[("SRC_F16", src_f16)], None));
    }
    out.push(v("agcam", "topk", &[], None));
    out.push(v("agcam", "accumulate", &[], None));
    out.push(v("agcam", "accumulate_heads", &[], Some(Gpu)));
    for w_f16 in [0, 1] {
        let w = [("W_F16", w_f16)];
        // The default slices and the `wide-slices` trial's, each plain and with the LN2
        // backward folded into its input.
        for slices in [VS_SLICES, VS_WIDE_SLICES] {
            let sliced = [w[0], ("VS_SLICES", slices)];
            out.push(v("agcam", "vecmat_sliced", &sliced, Some(Gpu)));
            let folded = [w[0], ("VS_SLICES", slices), ("FOLD", 1)];
            out.push(v("agcam", "vecmat_sliced", &folded, Some(Gpu)));
        }
        out.push(v("agcam", "vecmat", &w, Some(Cpu)));
        out.push(v("agcam", "vecmat4", &w, Some(Cpu)));
        let single_row = [w[0], VECMAT4_SINGLE_ROW[0], VECMAT4_SINGLE_ROW[1]];
        out.push(v("agcam", "vecmat4", &single_row, Some(Cpu)));
    }
    for entry in ["head_mean", "rollout_step", "raw_attention"] {
        out.push(v("baselines", entry, &[], None));
    }
    // The full backward (generic attention): f32 and f16 weights as the right operand.
    for b_f16 in [0, 1] {
        out.push(v("backward", "bgemm", &[("B_F16", b_f16)], None));
    }
    // Transformer attribution's z⁺ products read the positive or negative part of the weights
    // or sum only the positive terms (B_SIGN 1, 2, 3), in each of the same variants.
    for sign in [None, Some(1), Some(2), Some(3)] {
        let signed = |mut constants: Vec<(&'static str, u32)>| {
            constants.extend(sign.map(|s| ("B_SIGN", s)));
            constants
        };
        if sign.is_some() {
            for b_f16 in [0, 1] {
                out.push(v(
                    "backward",
                    "bgemm",
                    &signed(vec![("B_F16", b_f16)]),
                    None,
                ));
            }
        }
        // bgemm_block: scalar or vec4 loads of A and of B; 8 columns per invocation, 4 for
        // narrow products (at most 32 columns, f32 only), 24 for wide ones.
        for cols in [None, Some(4), Some(24)] {
            for b_f16 in [0, 1] {
                if cols == Some(4) && b_f16 == 1 {
                    continue;
                }
                // B_TERMS4: B read along k, with A_VEC4 only.
                for (b_vec4, a_vec4, b_terms4) in
                    [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0), (0, 1, 1)]
                {
                    let mut constants =
                        vec![("B_F16", b_f16), ("B_VEC4", b_vec4), ("A_VEC4", a_vec4)];
                    if let Some(cols) = cols {
                        constants.push(("BB_COLS", cols));
                    }
                    if b_terms4 == 1 {
                        constants.push(("B_TERMS4", 1));
                    }
                    let constants = signed(constants);
                    out.push(v("backward", "bgemm_block", &constants, Some(Cpu)).not_on_gl());
                }
            }
        }
    }
    for entry in [
        "gelu_copy",
        "keep_copy",
        "seed",
        "softmax_backward",
        "relevance_step",
    ] {
        out.push(v("backward", entry, &[], None));
    }
    for entry in ["key_value_gradient", "patch_map"] {
        out.push(v("gradcam", entry, &[], None));
    }
    for entry in [
        "ratio",
        "scale_by",
        "zplus_input",
        "clone_merge",
        "add_factors",
        "add_apply",
        "one_hot",
    ] {
        out.push(v("lrp", entry, &[], None));
    }
    out
}

/// What the launchers compile, recorded by the tests to hold [`shader_variants`] to account.
#[cfg(test)]
pub(crate) mod compiled {
    use std::sync::Mutex;

    /// (shader, entry point, sorted constants, f16 arithmetic, back end).
    pub(crate) type Compiled = (String, String, Vec<(String, u32)>, bool, wgpu::Backend);

    static LOG: Mutex<Vec<Compiled>> = Mutex::new(Vec::new());

    pub(crate) fn record(entry: Compiled) {
        LOG.lock().unwrap().push(entry);
    }

    pub(crate) fn all() -> Vec<Compiled> {
        LOG.lock().unwrap().clone()
    }
}
