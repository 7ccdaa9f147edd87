// The parts of multi-head self-attention that are not GEMMs. Attention runs as
//   scores = d^-0.5 · Q Kᵀ   (batched GEMM over images × heads, gemm.wgsl)
//   probs  = softmax(scores) (softmax_rows, in place; keeps the class-token score row)
//   out    = probs · V       (batched GEMM against Vᵀ, which split_v writes)
// Score rows and Vᵀ rows are padded to a multiple of 4 (`padded`) with zeros, so the second
// GEMM can read them as vec4; the padding is never written.

const WG: u32 = REDUCE_WG;

struct AttnParams {
    // Rows of scores: images · heads · tokens.
    rows: u32,
    tokens: u32,
    padded: u32,
    heads: u32,
    head_dim: u32,
    dim: u32,
    // Elements of split_v's output: images · tokens · dim.
    count: u32,
    // softmax_rows: score row r of the dispatch is row r · row_step of the buffer (N when only
    // the class token's query is computed, 1 otherwise).
    row_step: u32,
}

// softmax_rows: scores [B, H, N, padded] in place; split_v: qkv [B·N, 3D] (read).
@group(0) @binding(0) var<storage, read_write> scores: array<f32>;
// [B, H, N]: the class token's pre-softmax scores, for sigmoid(S) in the AGCAM map.
@group(0) @binding(1) var<storage, read_write> cls_scores: array<f32>;
@group(0) @binding(2) var<uniform> p: AttnParams;
@group(0) @binding(3) var<storage, read> qkv: array<f32>;
// [B·N, D]: V with merged heads, kept for the backward.
@group(0) @binding(4) var<storage, read_write> v_keep: array<f32>;
// [B, H, d, padded]: V transposed per head, the W operand of probs · V.
@group(0) @binding(5) var<storage, read_write> v_t: array<f32>;

@compute @workgroup_size(WG)
fn softmax_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let n = p.tokens;
    let real_row = row * p.row_step;
    let o = real_row * p.padded;
    let is_cls = real_row % n == 0u;
    var m = -3.4e38;
    for (var j = lid; j < n; j += WG) {
        let s = scores[o + j];
        m = max(m, s);
        if (is_cls) {
            cls_scores[(real_row / n) * n + j] = s;
        }
    }
    m = workgroup_reduce(m, lid, true);
    var sum = 0.0;
    for (var j = lid; j < n; j += WG) {
        let e = exp(scores[o + j] - m);
        scores[o + j] = e;
        sum += e;
    }
    let inv = 1.0 / workgroup_reduce(sum, lid, false);
    for (var j = lid; j < n; j += WG) {
        scores[o + j] *= inv;
    }
}

@compute @workgroup_size(WG)
fn split_v(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = linear_workgroup(wid, nwg) * WG + lid;
    if (idx >= p.count) {
        return;
    }
    let token_row = idx / p.dim;
    let col = idx % p.dim;
    let v = qkv[token_row * 3u * p.dim + 2u * p.dim + col];
    v_keep[idx] = v;
    let img = token_row / p.tokens;
    let j = token_row % p.tokens;
    let h = col / p.head_dim;
    let e = col % p.head_dim;
    v_t[((img * p.heads + h) * p.head_dim + e) * p.padded + j] = v;
}

// softmax_rows with one invocation per row and no barriers: CPU rasterizers run this faster.
@compute @workgroup_size(WG)
fn softmax_rows_serial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg) * WG + lid;
    if (row >= p.rows) {
        return;
    }
    let n = p.tokens;
    let real_row = row * p.row_step;
    let o = real_row * p.padded;
    let is_cls = real_row % n == 0u;
    var m = -3.4e38;
    for (var j = 0u; j < n; j++) {
        let s = scores[o + j];
        m = max(m, s);
        if (is_cls) {
            cls_scores[(real_row / n) * n + j] = s;
        }
    }
    var sum = 0.0;
    for (var j = 0u; j < n; j++) {
        let e = exp(scores[o + j] - m);
        scores[o + j] = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < n; j++) {
        scores[o + j] *= inv;
    }
}
