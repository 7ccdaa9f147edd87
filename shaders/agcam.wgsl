// The AGCAM backward of docs method.md §2 and its fused map kernel. Gradient rows are indexed
// r = image · K + slot, K explained classes per image.

const WG: u32 = 64u;

struct AgcamParams {
    // Gradient rows R = B·K.
    rows: u32,
    // Explained classes per image K.
    per_image: u32,
    // vecmat: input and output widths. topk: classes C. accumulate: tokens N.
    in_dim: u32,
    out_dim: u32,
    // vecmat: 1 multiplies by gelu'(aux[r / K, j]), 2 by aux[j] (a column scale).
    // accumulate: 1 adds to the map, 0 overwrites it.
    flag: u32,
    // accumulate: heads H and head width d.
    heads: u32,
    head_dim: u32,
    // vecmat_sliced with FOLD: the LayerNorm's epsilon.
    eps: f32,
}

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: AgcamParams;
@group(0) @binding(6) var<storage, read_write> classes: array<u32>;
// vecmat: `weight` as f16 pairs, read instead of it when W_F16 (the host binds both).
@group(0) @binding(7) var<storage, read> weight_h: array<u32>;

override W_F16: bool = false;

fn load_weight(i: u32) -> f32 {
    if (W_F16) {
        return unpack2x16float(weight_h[i >> 1u])[i & 1u];
    }
    return weight[i];
}

// vecmat4: `weight` read four columns at a time (f32, or f16 pairs when W_F16); accumulate: V
// (always f32) four elements at a time.
@group(0) @binding(8) var<storage, read> weight4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> weight4h: array<vec2<u32>>;

// Weight elements 4·i .. 4·i + 3.
fn load_weight4(i: u32) -> vec4<f32> {
    if (W_F16) {
        let u = weight4h[i];
        return vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y));
    }
    return weight4[i];
}

// vecmat_sliced with FOLD: the chain's LayerNorm backward folded into the product that reads
// its result, one dispatch instead of two (GPUs, where a dispatch costs more than the arithmetic
// it saves; on llvmpipe the folded product cost more than the two). The product's input row r
// is then
//   g_y[r] = g[r] + LNᵀ(gu[r]) = g[r] + rstd·(gu[r] − mean(gu[r]) − x̂·mean(gu[r] ⊙ x̂))
// with g in `input`, gu = γ ⊙ (the LayerNorm's output gradient) in `aux`, and the LayerNorm's
// input x at the class token of image r / K in `fold_x` (x̂ its normalised value). Each
// workgroup computes the statistics of its rows, the workgroups of the first column block write
// g_y to `fold_out` (the next layer's g), and every workgroup multiplies g_y as it reads it.
@group(0) @binding(10) var<storage, read> fold_x: array<f32>;
@group(0) @binding(11) var<storage, read_write> fold_out: array<f32>;

override FOLD: bool = false;
// Per row of the workgroup (VS_ROWS): mean and 1/σ of x, mean(gu), mean(gu ⊙ x̂).
var<workgroup> fold_stats: array<vec4<f32>, VS_ROWS>;

// g_y[r, i], where `stats` are row r's.
fn fold_input(r: u32, i: u32, stats: vec4<f32>) -> f32 {
    let d = p.in_dim;
    let xhat = (fold_x[(r / p.per_image) * d + i] - stats.x) * stats.y;
    return input[r * d + i] + stats.y * (aux[r * d + i] - stats.z - xhat * stats.w);
}

// Writes g_y of the VS_ROWS rows from r0 (their statistics in fold_stats), indices i = first,
// first + step, …: the first column block's share of the next layer's g.
fn fold_store(r0: u32, first: u32, step: u32) {
    for (var t = 0u; t < VS_ROWS; t++) {
        let r = r0 + t;
        if (r < p.rows) {
            for (var i = first; i < p.in_dim; i += step) {
                fold_out[r * p.in_dim + i] = fold_input(r, i, fold_stats[t]);
            }
        }
    }
}

const NONE: u32 = 0xffffffffu;

// Whether class j with logit x comes before class i with logit y: larger first, then lower index.
fn ranks_before(x: f32, j: u32, y: f32, i: u32) -> bool {
    return x > y || (x == y && j < i);
}

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

// input: logits [B, C] -> classes [B·K]: the K largest logits of each image, in descending
// order, the lowest index first among equal values (as torch.topk and argmax on CPU).
// One workgroup per image, dispatched along x.
@compute @workgroup_size(WG)
fn topk(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let img = wid.x;
    let c = p.in_dim;
    let k = p.per_image;
    let logits0 = img * c;
    // Candidates are compared in (value descending, index ascending) order; `NONE` marks "no
    // candidate yet", so no sentinel value can shadow a real logit, however large.
    var prev_index = NONE;
    var prev_value = 0.0;
    for (var slot = 0u; slot < k; slot++) {
        // The next class after the previous one in that order.
        var vi = NONE;
        var v = 0.0;
        for (var j = lid; j < c; j += WG) {
            let x = input[logits0 + j];
            let after_prev = prev_index == NONE || x < prev_value
                || (x == prev_value && j > prev_index);
            if (after_prev && (vi == NONE || ranks_before(x, j, v, vi))) {
                v = x;
                vi = j;
            }
        }
        best_value[lid] = v;
        best_index[lid] = vi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) {
                let oi = best_index[lid + s];
                let ov = best_value[lid + s];
                if (oi != NONE && (best_index[lid] == NONE
                    || ranks_before(ov, oi, best_value[lid], best_index[lid]))) {
                    best_value[lid] = ov;
                    best_index[lid] = oi;
                }
            }
            workgroupBarrier();
        }
        prev_value = best_value[0];
        prev_index = best_index[0];
        if (lid == 0u) {
            classes[img * k + slot] = prev_index;
        }
        workgroupBarrier();
    }
}

const VM_ROWS: u32 = 4u; // = the 4 of row_starts4 / store_rows4

// Where gradient rows r0 .. r0 + 3 start in `input` (clamped to the last row, so that loads stay
// in bounds; `store_rows4` drops the extras). A vector, not an array: private arrays indexed in
// loops cost llvmpipe memory traffic.
fn row_starts4(r0: u32) -> vec4<u32> {
    return min(vec4<u32>(r0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.rows - 1u)) * p.in_dim;
}

// input[x + i] of the four rows that start at x.
fn input4(x: vec4<u32>, i: u32) -> vec4<f32> {
    return vec4<f32>(input[x.x + i], input[x.y + i], input[x.z + i], input[x.w + i]);
}

// g_y[r, i] of rows r0 .. r0 + 3 (clamped to the last row, as row_starts4), their statistics
// in `stats`.
fn fold_input4(r0: u32, i: u32, stats: array<vec4<f32>, VS_ROWS>) -> vec4<f32> {
    let last = p.rows - 1u;
    return vec4<f32>(
        fold_input(min(r0, last), i, stats[0]),
        fold_input(min(r0 + 1u, last), i, stats[1]),
        fold_input(min(r0 + 2u, last), i, stats[2]),
        fold_input(min(r0 + 3u, last), i, stats[3]),
    );
}

// Output value v of row r, column j, after the flag's factor.
fn finish(r: u32, j: u32, v: f32) -> f32 {
    if (p.flag == 1u) {
        return v * gelu_grad(aux[(r / p.per_image) * p.out_dim + j]);
    }
    if (p.flag == 2u) {
        return v * aux[j];
    }
    return v;
}

// Column j of rows r0 .. r0 + 3 (those that exist).
fn store_rows4(r0: u32, j: u32, sums: vec4<f32>) {
    for (var t = 0u; t < 4u; t++) {
        let r = r0 + t;
        if (r < p.rows) {
            out[r * p.out_dim + j] = finish(r, j, sums[t]);
        }
    }
}

// out[r, j] = Σ_i scale[i]·input[r, i]·weight[i, j]  (× gelu'(aux[r / K, j]) when flag = 1).
// This is the transpose of an nn.Linear applied to gradient rows: weight is the Linear's
// [out, in] matrix read as [in_dim, out_dim]. Each invocation serves VM_ROWS rows of one
// column, so one weight read feeds several rows.
@compute @workgroup_size(WG)
fn vecmat(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let j = gid.x;
    // From the workgroup id, so that compilers see the rows (and the input loads) as uniform
    // across the workgroup: llvmpipe then loads each input value once, not once per lane.
    let r0 = wid.y * VM_ROWS;
    if (j >= p.out_dim || r0 >= p.rows) {
        return;
    }
    let x = row_starts4(r0);
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < p.in_dim; i++) {
        acc += input4(x, i) * (load_weight(i * p.out_dim + j) * scale[i]);
    }
    store_rows4(r0, j, acc);
}

// vecmat for out_dim a multiple of 4: each invocation serves VM4_ROWS rows × VM_COLS4 vec4
// columns. llvmpipe loads per-lane data one lane at a time, and the rows are the same for the
// whole workgroup (one scalar load each), so every weight load feeds VM4_ROWS rows.
const VM4_ROWS: u32 = 8u;
// Rows each invocation serves, at most VM4_ROWS: 1 for a single gradient row (batch 1, one
// class), where the other 7 would repeat its multiply-adds for nothing.
override VM4_LIVE_ROWS: u32 = VM4_ROWS;
const VM_COLS4: u32 = 4u;
// vec4 columns each invocation serves, at most VM_COLS4: 2 for a single gradient row, whose
// 768-wide products then spread over 12 workgroups instead of 6.
override VM4_LIVE_COLS4: u32 = VM_COLS4;
// Small workgroups, so that a single gradient row over a 768-wide output still spreads over
// several CPU threads (GPUs run vecmat_sliced instead): one SIMD batch each on llvmpipe's 8
// lanes, 12 workgroups at 2 vec4 columns per invocation. At 4 columns (48 invocations), 16 per
// workgroup (3 workgroups for 2 threads) took ViT-B's chain at batch 1 81–82 ms on lavapipe,
// 8 61–72, 4 73–77; at 2 columns, 8 and 16 per workgroup matched (BENCHMARKS.md).
const VM4_WG: u32 = 8u;

@compute @workgroup_size(VM4_WG)
fn vecmat4(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let j4 = gid.x * VM4_LIVE_COLS4;
    let r0 = wid.y * VM4_LIVE_ROWS;
    let out4 = p.out_dim / 4u;
    if (j4 >= out4 || r0 >= p.rows) {
        return;
    }
    var rows: array<u32, VM4_ROWS>;
    for (var t = 0u; t < VM4_LIVE_ROWS; t++) {
        rows[t] = min(r0 + t, p.rows - 1u) * p.in_dim;
    }
    var cols: array<u32, VM_COLS4>;
    for (var c = 0u; c < VM4_LIVE_COLS4; c++) {
        cols[c] = min(j4 + c, out4 - 1u);
    }
    var acc: array<array<vec4<f32>, VM_COLS4>, VM4_ROWS>;
    for (var i = 0u; i < p.in_dim; i++) {
        let s = scale[i];
        var w: array<vec4<f32>, VM_COLS4>;
        for (var c = 0u; c < VM4_LIVE_COLS4; c++) {
            w[c] = load_weight4(i * out4 + cols[c]) * s;
        }
        for (var t = 0u; t < VM4_LIVE_ROWS; t++) {
            let x = input[rows[t] + i];
            for (var c = 0u; c < VM4_LIVE_COLS4; c++) {
                acc[t][c] += x * w[c];
            }
        }
    }
    for (var t = 0u; t < VM4_LIVE_ROWS; t++) {
        let r = r0 + t;
        for (var c = 0u; c < VM4_LIVE_COLS4; c++) {
            if (r < p.rows && j4 + c < out4) {
                for (var e = 0u; e < 4u; e++) {
                    let j = 4u * (j4 + c) + e;
                    out[r * p.out_dim + j] = finish(r, j, acc[t][c][e]);
                }
            }
        }
    }
}

// vecmat for GPUs: a workgroup serves VS_COLS columns × VS_ROWS rows, its VS_SLICES rows of
// invocations each summing every VS_SLICES-th input index, and adds the slices through
// workgroup memory. A warp reads 4 weight rows × VS_COLS consecutive columns (32-byte
// sectors, fully used). Narrow columns and many slices keep a single gradient row (batch 1)
// spread over many workgroups instead of a few that walk the whole depth.
const VS_COLS: u32 = 8u;
// Slices of the reduction per workgroup: 32 by default; the `wide-slices` trial runs 128 (1,024
// invocations, a quarter of the depth each), for the latency of a single gradient row.
override VS_SLICES: u32 = 32u;
const VS_FOLDED: u32 = 32u;
const VS_ROWS: u32 = 4u; // = the 4 of row_starts4 / store_rows4
var<workgroup> slice_sums: array<vec4<f32>, VS_COLS * VS_SLICES>;

// vecmat_sliced with FOLD: invocations per row that compute its statistics in parallel (a
// serial sum over the row would cost a GPU more than the dispatch that the fold saves).
const FOLD_LANES: u32 = 64u; // VS_ROWS · FOLD_LANES ≤ VS_COLS · VS_SLICES

// Sums v over each row's FOLD_LANES invocations (f = flat invocation index): row t's sum ends
// in slice_sums[t · FOLD_LANES]. Every invocation calls it.
fn fold_lanes_sum(f: u32, v: vec4<f32>) {
    let live = f < VS_ROWS * FOLD_LANES;
    if (live) {
        slice_sums[f] = v;
    }
    workgroupBarrier();
    for (var stride = FOLD_LANES / 2u; stride > 0u; stride >>= 1u) {
        if (live && f % FOLD_LANES < stride) {
            slice_sums[f] += slice_sums[f + stride];
        }
        workgroupBarrier();
    }
}

// The statistics of vecmat_sliced's VS_ROWS rows from r0 (clamped to the last row) into
// fold_stats, in two passes (the mean, then the rest). Every invocation calls it.
fn fold_sliced_stats(r0: u32, f: u32) {
    let t = min(f / FOLD_LANES, VS_ROWS - 1u);
    let lane = f % FOLD_LANES;
    let live = f < VS_ROWS * FOLD_LANES;
    let r = min(r0 + t, p.rows - 1u);
    let d = p.in_dim;
    let xb = (r / p.per_image) * d;
    let gb = r * d;
    var s = 0.0;
    if (live) {
        for (var i = lane; i < d; i += FOLD_LANES) {
            s += fold_x[xb + i];
        }
    }
    fold_lanes_sum(f, vec4<f32>(s, 0.0, 0.0, 0.0));
    let mean = slice_sums[t * FOLD_LANES].x / f32(d);
    workgroupBarrier();
    var part = vec4<f32>(0.0);
    if (live) {
        for (var i = lane; i < d; i += FOLD_LANES) {
            let c = fold_x[xb + i] - mean;
            let gu = aux[gb + i];
            part += vec4<f32>(c * c, gu, gu * c, 0.0);
        }
    }
    fold_lanes_sum(f, part);
    if (live && lane == 0u) {
        let total = slice_sums[f];
        let rstd = inverseSqrt(total.x / f32(d) + p.eps);
        fold_stats[t] = vec4<f32>(mean, rstd, total.y / f32(d), total.z * rstd / f32(d));
    }
    workgroupBarrier();
}

@compute @workgroup_size(VS_COLS, VS_SLICES)
fn vecmat_sliced(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let j = wid.x * VS_COLS + lid.x;
    let r0 = wid.y * VS_ROWS;
    if (FOLD) {
        let f = lid.y * VS_COLS + lid.x;
        fold_sliced_stats(r0, f);
        if (wid.x == 0u) {
            fold_store(r0, f, VS_COLS * VS_SLICES);
        }
    }
    // Clamped, so that every invocation reaches the barrier; the store drops the extras.
    let jc = min(j, p.out_dim - 1u);
    let x = row_starts4(r0);
    // In registers for the loop (read but unused without FOLD).
    let stats = fold_stats;
    var acc = vec4<f32>(0.0);
    for (var i = lid.y; i < p.in_dim; i += VS_SLICES) {
        var g: vec4<f32>;
        if (FOLD) {
            g = fold_input4(r0, i, stats);
        } else {
            g = input4(x, i);
        }
        acc += g * (load_weight(i * p.out_dim + jc) * scale[i]);
    }
    slice_sums[lid.y * VS_COLS + lid.x] = acc;
    workgroupBarrier();
    // Wider workgroups first fold their slices onto the first VS_FOLDED in parallel, so that
    // the serial sum below stays VS_FOLDED long (the default adds its 32 slices as they are).
    if (VS_SLICES > VS_FOLDED) {
        if (lid.y < VS_FOLDED) {
            var folded = acc;
            for (var s = lid.y + VS_FOLDED; s < VS_SLICES; s += VS_FOLDED) {
                folded += slice_sums[s * VS_COLS + lid.x];
            }
            slice_sums[lid.y * VS_COLS + lid.x] = folded;
        }
        workgroupBarrier();
    }
    if (lid.y != 0u || j >= p.out_dim) {
        return;
    }
    var sum = vec4<f32>(0.0);
    for (var s = 0u; s < min(VS_SLICES, VS_FOLDED); s++) {
        sum += slice_sums[s * VS_COLS + lid.x];
    }
    store_rows4(r0, j, sum);
}

// ReLU(⟨dO[r, h], V[r / K, j, h]⟩) · sigmoid(S[r / K, h, j]): the map term of gradient row r,
// token j and head h (see accumulate).
fn head_term(r: u32, j: u32, h: u32) -> f32 {
    let n = p.in_dim;
    let img = r / p.per_image;
    let d = p.head_dim;
    let dim = p.heads * d;
    let go = r * dim + h * d;
    let vo = (img * n + j) * dim + h * d;
    var g = 0.0;
    if (d % 4u == 0u) {
        // V through its vec4 view (binding 8): a quarter of the per-lane loads.
        for (var e = 0u; e < d; e += 4u) {
            let o = vec4<f32>(input[go + e], input[go + e + 1u], input[go + e + 2u], input[go + e + 3u]);
            g += dot(o, weight4[(vo + e) / 4u]);
        }
    } else {
        for (var e = 0u; e < d; e++) {
            g += input[go + e] * weight[vo + e];
        }
    }
    let s = aux[(img * p.heads + h) * n + j];
    return max(g, 0.0) / (1.0 + exp(-s));
}

// Writes (flag = 0) or adds (flag = 1) the map value of gradient row r at token j.
fn store_map(r: u32, j: u32, total: f32) {
    let o = r * (p.in_dim - 1u) + j - 1u;
    out[o] = select(total, out[o] + total, p.flag != 0u);
}

// The fused AGCAM kernel for one layer:
// out[r, j-1] (+)= Σ_h ReLU(⟨dO[r, h], V[r / K, j, h]⟩) · sigmoid(S[r / K, h, j]), j = 1..N-1.
// input: dO [R, D] (gradient of the merged attention output), weight: V [B·N, D],
// aux: class-token scores S [B, H, N], out: maps [R, N-1].
@compute @workgroup_size(WG)
fn accumulate(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let n = p.in_dim;
    let j = gid.x + 1u;
    // Uniform across the workgroup (see vecmat): the dO row is loaded once per workgroup.
    let r = wid.y;
    if (j >= n || r >= p.rows) {
        return;
    }
    var total = 0.0;
    for (var h = 0u; h < p.heads; h++) {
        total += head_term(r, j, h);
    }
    store_map(r, j, total);
}

// accumulate for GPUs: one invocation per (token, head) pair, ACC_WG of them per workgroup
// covering whole tokens (ACC_WG / H of them, so H ≤ ACC_WG), the heads then summed through
// workgroup memory. The per-token kernel above gives a batch-1 map a few hundred invocations
// that each walk all H heads; here H times as many share the work.
const ACC_WG: u32 = 256u;
var<workgroup> head_terms: array<f32, ACC_WG>;

@compute @workgroup_size(ACC_WG)
fn accumulate_heads(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
) {
    let lid = lid3.x;
    let n = p.in_dim;
    let heads = p.heads;
    let per_group = ACC_WG / heads;
    let h = lid % heads;
    let jl = lid / heads;
    let j = wid.x * per_group + jl + 1u;
    let r = wid.y;
    let live = jl < per_group && j < n && r < p.rows;
    var term = 0.0;
    if (live) {
        term = head_term(r, j, h);
    }
    head_terms[lid] = term;
    workgroupBarrier();
    if (!live || h != 0u) {
        return;
    }
    var total = 0.0;
    for (var t = 0u; t < heads; t++) {
        total += head_terms[lid + t];
    }
    store_map(r, j, total);
}
