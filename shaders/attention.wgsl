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
    // Query rows per (image, head): N, or 1 where only the class token's query is computed
    // (scores then hold [B, H, 1, padded]).
    queries: u32,
}

// softmax_rows: scores [B, H, queries, padded] in place; split_v: qkv [B·N, 3D] (read).
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
    let o = row * p.padded;
    // The class token's query is the first of each (image, head).
    let is_cls = row % p.queries == 0u;
    let cls_row = row / p.queries;
    var m = -3.4e38;
    for (var j = lid; j < n; j += WG) {
        let s = scores[o + j];
        m = max(m, s);
        if (is_cls) {
            cls_scores[cls_row * n + j] = s;
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
    let o = row * p.padded;
    // The class token's query is the first of each (image, head).
    let is_cls = row % p.queries == 0u;
    let cls_row = row / p.queries;
    var m = -3.4e38;
    for (var j = 0u; j < n; j++) {
        let s = scores[o + j];
        m = max(m, s);
        if (is_cls) {
            cls_scores[cls_row * n + j] = s;
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

// ---------------------------------------------------------------------------------------------
// Fused attention (flash-attention style): out = softmax(d^-0.5 · Q Kᵀ) · V for every query row
// without writing the [N, N] scores. One workgroup per (block of FA_WG query rows, head, image),
// one invocation per query row; keys and values stream through workgroup memory FA_KEYS tokens
// at a time, and each row keeps a running max m, sum l and unnormalised output acc (online
// softmax: when a tile raises the max, l and acc are rescaled by exp(m_old − m_new)). It also
// writes what the AGCAM backward keeps: the class token's pre-softmax scores (query row 0) and
// V with merged heads (the first query block of each head). Head dims up to FA_MAX_D: every
// per-row loop runs over FA_MAX_D columns, zero past the head dim, so that its trip count is a
// constant the shader compiler can unroll and q and acc can stay in registers.

const FA_WG: u32 = 64u;
const FA_KEYS: u32 = 16u;
const FA_MAX_D: u32 = 64u;

struct FusedParams {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    dim: u32,
    // d^-0.5, as the unfused path's scores GEMM applies it.
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// [B·N, D]: the merged attention output.
@group(0) @binding(6) var<storage, read_write> fused_out: array<f32>;
@group(0) @binding(7) var<uniform> fp: FusedParams;

var<workgroup> k_tile: array<f32, FA_KEYS * FA_MAX_D>;
var<workgroup> v_tile: array<f32, FA_KEYS * FA_MAX_D>;

@compute @workgroup_size(FA_WG)
fn attention_fused(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = fp.tokens;
    let d = fp.head_dim;
    let dim = fp.dim;
    let head = wid.y;
    let img = wid.z;
    let row = wid.x * FA_WG + lid;
    let in_range = row < n;
    let col0 = head * d;

    var q: array<f32, FA_MAX_D>;
    var acc: array<f32, FA_MAX_D>;
    if (in_range) {
        let qo = (img * n + row) * 3u * dim + col0;
        for (var e = 0u; e < FA_MAX_D; e++) {
            q[e] = select(0.0, qkv[qo + min(e, d - 1u)], e < d);
            acc[e] = 0.0;
        }
    }
    var m = -3.4e38;
    var l = 0.0;
    var s: array<f32, FA_KEYS>;
    for (var t0 = 0u; t0 < n; t0 += FA_KEYS) {
        let keys = min(FA_KEYS, n - t0);
        // The tile's keys and values, zero past the last token and the head dim.
        for (var i = lid; i < FA_KEYS * FA_MAX_D; i += FA_WG) {
            let j = t0 + i / FA_MAX_D;
            let e = i % FA_MAX_D;
            var kv = 0.0;
            var vv = 0.0;
            if (j < n && e < d) {
                let o = (img * n + j) * 3u * dim + col0 + e;
                kv = qkv[o + dim];
                vv = qkv[o + 2u * dim];
                if (wid.x == 0u) {
                    v_keep[(img * n + j) * dim + col0 + e] = vv;
                }
            }
            k_tile[i] = kv;
            v_tile[i] = vv;
        }
        workgroupBarrier();
        if (in_range) {
            var tile_max = m;
            for (var jj = 0u; jj < keys; jj++) {
                var qk = 0.0;
                for (var e = 0u; e < FA_MAX_D; e++) {
                    qk += q[e] * k_tile[jj * FA_MAX_D + e];
                }
                let score = qk * fp.scale;
                s[jj] = score;
                tile_max = max(tile_max, score);
                if (row == 0u) {
                    cls_scores[(img * fp.heads + head) * n + t0 + jj] = score;
                }
            }
            // exp(-3.4e38 - x) is 0 on the first tile, where l and acc are still 0.
            let rescale = exp(m - tile_max);
            l *= rescale;
            for (var e = 0u; e < FA_MAX_D; e++) {
                acc[e] *= rescale;
            }
            for (var jj = 0u; jj < keys; jj++) {
                let w = exp(s[jj] - tile_max);
                l += w;
                for (var e = 0u; e < FA_MAX_D; e++) {
                    acc[e] += w * v_tile[jj * FA_MAX_D + e];
                }
            }
            m = tile_max;
        }
        workgroupBarrier();
    }
    if (in_range) {
        let inv = 1.0 / l;
        let oo = (img * n + row) * dim + col0;
        for (var e = 0u; e < d; e++) {
            fused_out[oo + e] = acc[e] * inv;
        }
    }
}
