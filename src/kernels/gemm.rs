//! Launcher of shaders/gemm.wgsl: `C = epilogue(A · Wᵀ + bias)` over nn.Linear weights.

use super::{module, Access, Dispatch, Kernel};
use crate::gpu::Gpu;

/// What happens to `A · Wᵀ + bias` before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Epilogue {
    /// `C = acc + bias`.
    Bias = 0,
    /// `C = gelu(acc + bias)`.
    Gelu = 1,
    /// `C += scale ⊙ (acc + bias)`: a residual branch with layer scale, in place.
    Residual = 2,
}

const VEC4_BINDINGS: &[(u32, Access)] = &[
    (0, Access::Read),
    (1, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Uniform),
];
const SCALAR_BINDINGS: &[(u32, Access)] = &[
    (6, Access::Read),
    (7, Access::Read),
    (2, Access::Read),
    (3, Access::Read),
    (4, Access::ReadWrite),
    (5, Access::Uniform),
];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

/// The GEMM pipelines: per epilogue, a vec4 variant (K a multiple of 4) and a scalar one.
pub(crate) struct Gemm {
    vec4: Vec<Kernel>,
    scalar: Vec<Kernel>,
}

/// Output columns and rows per invocation, and invocations per workgroup side.
const TILE: u32 = 4;
const WG: u32 = 8;

impl Gemm {
    pub fn new(gpu: &Gpu) -> Gemm {
        let m = module(gpu, "gemm");
        let variants = |entry: &str, bindings| {
            [Epilogue::Bias, Epilogue::Gelu, Epilogue::Residual]
                .iter()
                .map(|&e| Kernel::new(gpu, &m, entry, bindings, &[("EPILOGUE", e as u32 as f64)]))
                .collect()
        };
        Gemm {
            vec4: variants("gemm_vec4", VEC4_BINDINGS),
            scalar: variants("gemm_scalar", SCALAR_BINDINGS),
        }
    }

    /// `c[m, n] = epilogue(a[m, k] · w[n, k]ᵀ + bias[n])`. `scale` is read only by
    /// [`Epilogue::Residual`]; pass any buffer otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(
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
        let params = GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            _pad: 0,
        };
        let uniform = gpu.uniform("gemm params", &params);
        let kernels = if k % 4 == 0 { &self.vec4 } else { &self.scalar };
        let groups = [
            (n as u32).div_ceil(TILE * WG),
            (m as u32).div_ceil(TILE * WG),
            1,
        ];
        kernels[epilogue as usize].dispatch(gpu, &[a, w, bias, scale, c, &uniform], groups)
    }
}
