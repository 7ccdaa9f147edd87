//! Launcher of shaders/layernorm.wgsl: LayerNorm forward and backward.

use super::{linear_grid, module, words, Access, Dispatch, Kernel};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LnParams {
    rows: u32,
    dim: u32,
    rows_per_input: u32,
    input_row_stride: u32,
    eps: f32,
    accumulate: u32,
    _pad: [u32; 2],
}

/// Which input row each output row reads: row `r / rows_per_input * input_row_stride`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowMap {
    pub rows_per_input: usize,
    pub input_row_stride: usize,
}

impl RowMap {
    /// Values of the input that `rows` output rows of width `dim` read.
    fn input_extent(&self, rows: usize, dim: usize) -> usize {
        match rows {
            0 => 0,
            _ => ((rows - 1) / self.rows_per_input * self.input_row_stride + 1) * dim,
        }
    }

    /// Output row r reads input row r.
    pub const IDENTITY: RowMap = RowMap {
        rows_per_input: 1,
        input_row_stride: 1,
    };
}

/// Rows per workgroup of the serial kernel (its workgroup size).
const SERIAL_WG: u32 = 64;

#[cfg(test)]
pub(super) const MIRROR: super::Mirror = super::Mirror {
    shader: "layernorm",
    constants: &[("WG", SERIAL_WG)],
    workgroups: &[
        ("layernorm_serial", [SERIAL_WG, 1, 1]),
        ("layernorm_backward_serial", [SERIAL_WG, 1, 1]),
    ],
    structs: &[super::layout!(LnParams {
        rows,
        dim,
        rows_per_input,
        input_row_stride,
        eps,
        accumulate
    })],
};

pub(crate) struct LayerNorm {
    /// One invocation per row (CPU kernel set), instead of one workgroup per row.
    serial: bool,
    forward: Kernel,
    forward_serial: Kernel,
    backward: Kernel,
    backward_serial: Kernel,
}

impl LayerNorm {
    pub fn new(gpu: &Gpu, serial: bool) -> LayerNorm {
        let m = module(gpu, "layernorm");
        let backward_bindings: &[(u32, Access)] = &[
            (0, Access::Read),
            (1, Access::Read),
            (3, Access::ReadWrite),
            (4, Access::Uniform),
            (5, Access::Read),
        ];
        LayerNorm {
            serial,
            forward: Kernel::new(
                gpu,
                &m,
                "layernorm",
                &[
                    (0, Access::Read),
                    (1, Access::Read),
                    (2, Access::Read),
                    (3, Access::ReadWrite),
                    (4, Access::Uniform),
                ],
                &[],
            ),
            forward_serial: Kernel::new(
                gpu,
                &m,
                "layernorm_serial",
                &[
                    (0, Access::Read),
                    (1, Access::Read),
                    (2, Access::Read),
                    (3, Access::ReadWrite),
                    (4, Access::Uniform),
                ],
                &[],
            ),
            backward: Kernel::new(gpu, &m, "layernorm_backward", backward_bindings, &[]),
            backward_serial: Kernel::new(
                gpu,
                &m,
                "layernorm_backward_serial",
                backward_bindings,
                &[],
            ),
        }
    }

    fn params(rows: usize, dim: usize, map: RowMap, eps: f32, accumulate: bool) -> LnParams {
        LnParams {
            rows: rows as u32,
            dim: dim as u32,
            rows_per_input: map.rows_per_input as u32,
            input_row_stride: map.input_row_stride as u32,
            eps,
            accumulate: accumulate as u32,
            _pad: [0; 2],
        }
    }

    /// `out[r] = LayerNorm(x[map(r)]) · gamma + beta` for `rows` rows of width `dim`.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        gamma: &wgpu::Buffer,
        beta: &wgpu::Buffer,
        out: &wgpu::Buffer,
        (rows, dim): (usize, usize),
        map: RowMap,
        eps: f32,
    ) -> Dispatch {
        let uniform = gpu.uniform(
            "layernorm params",
            &Self::params(rows, dim, map, eps, false),
        );
        let (kernel, groups) = if self.serial {
            (
                &self.forward_serial,
                linear_grid((rows as u32).div_ceil(SERIAL_WG)),
            )
        } else {
            (&self.forward, linear_grid(rows as u32))
        };
        kernel
            .bind()
            .storage(0, x, words(map.input_extent(rows, dim)))
            .storage(1, gamma, words(dim))
            .storage(2, beta, words(dim))
            .storage(3, out, words(rows * dim))
            .uniform(4, &uniform)
            .dispatch(gpu, groups)
            .work(8 * rows * dim, 4 * 2 * rows * dim)
    }

    /// `out[r] (+)= d LayerNorm(x[map(r)]) / dx ᵀ · upstream[r]`, the input gradient of a
    /// LayerNorm whose output gradient is `upstream`.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_backward(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        gamma: &wgpu::Buffer,
        upstream: &wgpu::Buffer,
        out: &wgpu::Buffer,
        (rows, dim): (usize, usize),
        map: RowMap,
        eps: f32,
        accumulate: bool,
    ) -> Dispatch {
        self.backward_with(
            gpu,
            (x, gamma, upstream, out),
            (rows, dim),
            map,
            (eps, accumulate),
            false,
        )
    }

    /// [`LayerNorm::dispatch_backward`] for the many rows of the full backward: one invocation
    /// per row on the CPU kernel set (one workgroup per row there costs barriers per row).
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_backward_rows(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        gamma: &wgpu::Buffer,
        upstream: &wgpu::Buffer,
        out: &wgpu::Buffer,
        (rows, dim): (usize, usize),
        map: RowMap,
        eps: f32,
        accumulate: bool,
    ) -> Dispatch {
        let buffers = (x, gamma, upstream, out);
        let serial = self.serial;
        self.backward_with(gpu, buffers, (rows, dim), map, (eps, accumulate), serial)
    }

    fn backward_with(
        &self,
        gpu: &Gpu,
        (x, gamma, upstream, out): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        (rows, dim): (usize, usize),
        map: RowMap,
        (eps, accumulate): (f32, bool),
        serial: bool,
    ) -> Dispatch {
        let uniform = gpu.uniform(
            "layernorm backward params",
            &Self::params(rows, dim, map, eps, accumulate),
        );
        let (kernel, groups) = if serial {
            (
                &self.backward_serial,
                linear_grid((rows as u32).div_ceil(SERIAL_WG)),
            )
        } else {
            (&self.backward, linear_grid(rows as u32))
        };
        kernel
            .bind()
            .storage(0, x, words(map.input_extent(rows, dim)))
            .storage(1, gamma, words(dim))
            .storage(3, out, words(rows * dim))
            .uniform(4, &uniform)
            .storage(5, upstream, words(rows * dim))
            .dispatch(gpu, groups)
            .work(14 * rows * dim, 4 * 3 * rows * dim)
    }
}
