// Helpers prepended to every agcam shader (see src/kernels/mod.rs).

// Index of this workgroup in a dispatch laid out by `Grid::linear` on the host: x first, then
// y, so that more than 65535 workgroups fit in one dispatch.
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

const INV_SQRT2: f32 = 0.70710678118654752;
const INV_SQRT_2PI: f32 = 0.39894228040143268;

// Complementary error function, Numerical Recipes' Chebyshev fit: relative error < 1.2e-7
// everywhere, including the tails, where `1 - erf` would cancel.
fn erfc_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp(-z * z + poly);
    return select(2.0 - r, r, x >= 0.0);
}

// Standard normal CDF.
fn normal_cdf(x: f32) -> f32 {
    return 0.5 * erfc_approx(-x * INV_SQRT2);
}

// Exact (erf) GELU, as nn.GELU() with approximate="none".
fn gelu(x: f32) -> f32 {
    return x * normal_cdf(x);
}

// d gelu / dx = Phi(x) + x * phi(x).
fn gelu_grad(x: f32) -> f32 {
    return normal_cdf(x) + x * INV_SQRT_2PI * exp(-0.5 * x * x);
}

// Workgroup size of every kernel that reduces across its workgroup with `workgroup_reduce`.
const REDUCE_WG: u32 = 64u;
var<workgroup> reduce_scratch: array<f32, REDUCE_WG>;

// Sum (or max) of `value` over the REDUCE_WG invocations of the workgroup, returned to all.
// Must be reached by every invocation (it holds barriers).
fn workgroup_reduce(value: f32, lid: u32, is_max: bool) -> f32 {
    reduce_scratch[lid] = value;
    workgroupBarrier();
    for (var s = REDUCE_WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let o = reduce_scratch[lid + s];
            reduce_scratch[lid] = select(reduce_scratch[lid] + o, max(reduce_scratch[lid], o), is_max);
        }
        workgroupBarrier();
    }
    let r = reduce_scratch[0];
    workgroupBarrier();
    return r;
}
