// LayerNorm over the last axis, forward and the backward the AGCAM chain needs.
// One workgroup per row; rows past 65535 spill into the y dimension of the dispatch.

const WG: u32 = REDUCE_WG;

struct LnParams {
    rows: u32,
    dim: u32,
    // Input row r is row `r / rows_per_input * input_row_stride` of x: 1 and 1 for a plain
    // row-wise norm, 1 and N to read only the class token of each image, K and N (or K and 1)
    // in the backward, where K gradient rows share one input row.
    rows_per_input: u32,
    input_row_stride: u32,
    eps: f32,
    // Backward only: 1 adds the result to `out`, 0 overwrites it.
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: LnParams;
// Backward only: the gradient with respect to the norm's output, [rows, dim].
@group(0) @binding(5) var<storage, read> upstream: array<f32>;

fn input_base(row: u32) -> u32 {
    return (row / p.rows_per_input) * p.input_row_stride * p.dim;
}

// Mean and 1/sqrt(var + eps) of the input row, two-pass for accuracy.
fn row_stats(base: u32, lid: u32) -> vec2<f32> {
    var s = 0.0;
    for (var i = lid; i < p.dim; i += WG) {
        s += x[base + i];
    }
    let mean = workgroup_reduce(s, lid, false) / f32(p.dim);
    var q = 0.0;
    for (var i = lid; i < p.dim; i += WG) {
        let d = x[base + i] - mean;
        q += d * d;
    }
    let variance = workgroup_reduce(q, lid, false) / f32(p.dim);
    return vec2<f32>(mean, inverseSqrt(variance + p.eps));
}

@compute @workgroup_size(WG)
fn layernorm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = input_base(row);
    let stats = row_stats(base, lid);
    let o = row * p.dim;
    for (var i = lid; i < p.dim; i += WG) {
        out[o + i] = (x[base + i] - stats.x) * stats.y * gamma[i] + beta[i];
    }
}

// out = [out +] dL/dx for y = LayerNorm(x), given u = dL/dy:
// dx = rstd * (γu - mean(γu) - x̂ · mean(γu · x̂)).
@compute @workgroup_size(WG)
fn layernorm_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = input_base(row);
    let stats = row_stats(base, lid);
    let o = row * p.dim;
    var s_gu = 0.0;
    var s_gux = 0.0;
    for (var i = lid; i < p.dim; i += WG) {
        let gu = gamma[i] * upstream[o + i];
        s_gu += gu;
        s_gux += gu * (x[base + i] - stats.x) * stats.y;
    }
    let mean_gu = workgroup_reduce(s_gu, lid, false) / f32(p.dim);
    let mean_gux = workgroup_reduce(s_gux, lid, false) / f32(p.dim);
    for (var i = lid; i < p.dim; i += WG) {
        let xhat = (x[base + i] - stats.x) * stats.y;
        let dx = stats.y * (gamma[i] * upstream[o + i] - mean_gu - xhat * mean_gux);
        out[o + i] = select(dx, out[o + i] + dx, p.accumulate != 0u);
    }
}

// Mean and 1/sqrt(var + eps) of the input row at `base`, two-pass, by one invocation.
fn serial_stats(base: u32) -> vec2<f32> {
    var s = 0.0;
    for (var i = 0u; i < p.dim; i++) {
        s += x[base + i];
    }
    let mean = s / f32(p.dim);
    var q = 0.0;
    for (var i = 0u; i < p.dim; i++) {
        let d = x[base + i] - mean;
        q += d * d;
    }
    return vec2<f32>(mean, inverseSqrt(q / f32(p.dim) + p.eps));
}

// Row index of a one-invocation-per-row dispatch laid out by `linear_grid`.
fn serial_row(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_workgroup(wid, nwg) * WG + lid;
}

// The forward with one invocation per row and no barriers: CPU rasterizers run this faster.
@compute @workgroup_size(WG)
fn layernorm_serial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = serial_row(wid, nwg, lid);
    if (row >= p.rows) {
        return;
    }
    let base = input_base(row);
    let stats = serial_stats(base);
    let mean = stats.x;
    let rstd = stats.y;
    let o = row * p.dim;
    for (var i = 0u; i < p.dim; i++) {
        out[o + i] = (x[base + i] - mean) * rstd * gamma[i] + beta[i];
    }
}

// The backward with one invocation per row and no barriers, for the many rows of the full
// backward on CPU rasterizers.
@compute @workgroup_size(WG)
fn layernorm_backward_serial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = serial_row(wid, nwg, lid);
    if (row >= p.rows) {
        return;
    }
    let base = input_base(row);
    let stats = serial_stats(base);
    let mean = stats.x;
    let rstd = stats.y;
    let o = row * p.dim;
    var s_gu = 0.0;
    var s_gux = 0.0;
    for (var i = 0u; i < p.dim; i++) {
        let gu = gamma[i] * upstream[o + i];
        s_gu += gu;
        s_gux += gu * (x[base + i] - mean) * rstd;
    }
    let mean_gu = s_gu / f32(p.dim);
    let mean_gux = s_gux / f32(p.dim);
    for (var i = 0u; i < p.dim; i++) {
        let xhat = (x[base + i] - mean) * rstd;
        let dx = rstd * (gamma[i] * upstream[o + i] - mean_gu - xhat * mean_gux);
        out[o + i] = select(dx, out[o + i] + dx, p.accumulate != 0u);
    }
}
