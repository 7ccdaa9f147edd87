//! The cooperative-matrix GEMM (shaders/gemm_coop.wgsl) that [`super::Gemm`] runs for nn.Linear
//! products with `--precision f16` where the adapter has tensor cores, and its plain twin.
//!
//! Four modules, each a head (fragment side, fragment types, entry point) followed by the
//! fragment products, gemm.wgsl (params, bindings, epilogues) and the kernel:
//! - `gemm_coop16`: 16 × 16 × 16 cooperative matrices, f16 → f32 (Vulkan; NVIDIA offers it);
//! - `gemm_coop8`: 8 × 8 × 8, f16 → f32 (Metal's simdgroup matrices; Vulkan where offered);
//! - `gemm_twin16`, `gemm_twin8`: the same kernels with the fragment products in scalar loops,
//!   which run everywhere; the tests force them into the engine to check the tiling, staging,
//!   fragment layout and epilogues that the cooperative kernels share with them.

use super::SCALAR_BINDINGS;
use crate::gpu::Gpu;
use crate::kernels::{module_with, Kernel};

/// The module of a cooperative GEMM: `$head`, then the fragment side, the entry point, the
/// fragment products `$ops`, gemm.wgsl and the kernel.
macro_rules! coop_module {
    // On cooperative matrices of shape `$shape`: f16 operands, f32 sums.
    ($entry:literal, $frag:literal, $shape:literal) => {
        coop_module!(
            $entry,
            $frag,
            concat!(
                "enable wgpu_cooperative_matrix;\n",
                "alias FragA = coop_mat",
                $shape,
                "<f16, A>;\nalias FragB = coop_mat",
                $shape,
                "<f16, B>;\nalias Acc = coop_mat",
                $shape,
                "<f32, C>;\n",
            ),
            "gemm_coop_mma.wgsl"
        )
    };
    ($entry:literal, $frag:literal, $head:expr, $ops:literal) => {
        concat!(
            $head,
            "const FRAG: u32 = ",
            $frag,
            "u;\n@compute @workgroup_size(LANES)\nfn ",
            $entry,
            "(@builtin(workgroup_id) wid: vec3<u32>, \
             @builtin(local_invocation_index) lane: u32) {\n    coop_gemm(wid, lane);\n}\n",
            include_str!(concat!("../../shaders/", $ops)),
            include_str!("../../shaders/gemm.wgsl"),
            include_str!("../../shaders/gemm_coop.wgsl"),
        )
    };
}

pub(crate) const COOP16_SOURCE: &str = coop_module!("gemm_coop16", "16", "16x16");
pub(crate) const COOP8_SOURCE: &str = coop_module!("gemm_coop8", "8", "8x8");
pub(crate) const TWIN16_SOURCE: &str = coop_module!("gemm_twin16", "16", "", "gemm_coop_twin.wgsl");
pub(crate) const TWIN8_SOURCE: &str = coop_module!("gemm_twin8", "8", "", "gemm_coop_twin.wgsl");

/// Invocations per workgroup: one subgroup where subgroups are 32 wide (NVIDIA, Apple). The
/// host needs only the tile side; this is for the test that mirrors the shader.
#[cfg(test)]
const LANES: u32 = 32;
/// Fragments per side of a workgroup's tile of C.
const FRAGS: u32 = 4;

/// One of the four kernels, by fragment side and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CoopKernel {
    /// Side of a fragment: 16 or 8.
    pub fragment: u32,
    /// The scalar twin rather than cooperative matrices.
    pub twin: bool,
}

impl CoopKernel {
    /// The shader module and entry point.
    pub fn entry(self) -> &'static str {
        match (self.twin, self.fragment) {
            (false, 16) => "gemm_coop16",
            (false, _) => "gemm_coop8",
            (true, 16) => "gemm_twin16",
            (true, _) => "gemm_twin8",
        }
    }

    /// Side of the tile of C that one workgroup computes.
    pub fn tile(self) -> u32 {
        FRAGS * self.fragment
    }

    /// Compiles the kernel for f16 weights (the only weights it serves).
    pub fn compile(self, gpu: &Gpu) -> Kernel {
        // The cooperative kernels need f16 arithmetic for their operands; the twins run on
        // f32 arithmetic (OpenGL has no f16).
        let m = module_with(gpu, self.entry(), !self.twin);
        Kernel::new(gpu, &m, self.entry(), SCALAR_BINDINGS, &[("W_F16", 1.0)])
    }

    /// The kernel the engine runs for f16 weights on `gpu`, if any: the cooperative one that
    /// matches the adapter's configurations (see [`Gpu::cooperative_fragment`]), or, in tests,
    /// the twin forced by [`force_twin`].
    pub fn select(gpu: &Gpu) -> Option<CoopKernel> {
        #[cfg(test)]
        if let Some(fragment) = FORCED_TWIN.with(std::cell::Cell::get) {
            return Some(CoopKernel {
                fragment,
                twin: true,
            });
        }
        gpu.cooperative_fragment().map(|fragment| CoopKernel {
            fragment,
            twin: false,
        })
    }
}

#[cfg(test)]
thread_local! {
    static FORCED_TWIN: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// Test-only switch: GEMM launchers built on this thread while `fragment` is `Some(16 | 8)`
/// run nn.Linear products with f16 weights on that twin, on any adapter.
#[cfg(test)]
pub(crate) fn force_twin(fragment: Option<u32>) {
    FORCED_TWIN.with(|f| f.set(fragment));
}

#[cfg(test)]
pub(crate) const MIRRORS: [crate::kernels::Mirror; 2] = [
    crate::kernels::Mirror {
        shader: "gemm_twin16",
        constants: &[("LANES", LANES), ("FRAGS", FRAGS), ("FRAG", 16)],
        workgroups: &[("gemm_twin16", [LANES, 1, 1])],
        structs: &[],
    },
    crate::kernels::Mirror {
        shader: "gemm_twin8",
        constants: &[("LANES", LANES), ("FRAGS", FRAGS), ("FRAG", 8)],
        workgroups: &[("gemm_twin8", [LANES, 1, 1])],
        structs: &[],
    },
];
