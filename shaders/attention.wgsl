// Multi-head self-attention for one query row per workgroup: scores, softmax, A·V.
//
// qkv is [B·N, 3D] as timm's fused projection lays it out (q, k, v blocks of D, each split into
// H heads of d). Besides the merged output [B·N, D], it keeps what the AGCAM backward needs:
// the class-token row of the pre-softmax scores (scale included) and V for every token.

const WG: u32 = 64u;
const MAX_TOKENS: u32 = 2048u;
const MAX_HEAD_DIM: u32 = 256u;

struct AttnParams {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    dim: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
// [B, H, N]: the class token's scores against every key.
@group(0) @binding(2) var<storage, read_write> cls_scores: array<f32>;
// [B·N, D]: V, merged heads.
@group(0) @binding(3) var<storage, read_write> v_keep: array<f32>;
@group(0) @binding(4) var<uniform> p: AttnParams;

var<workgroup> q_row: array<f32, MAX_HEAD_DIM>;
var<workgroup> probs: array<f32, MAX_TOKENS>;
var<workgroup> partial: array<f32, WG>;

fn reduce_max(value: f32, lid: u32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] = max(partial[lid], partial[lid + s]);
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(value: f32, lid: u32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

// Dispatch: x = query token, y = head, z = image.
@compute @workgroup_size(WG)
fn attention(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = wid.x;
    let h = wid.y;
    let b = wid.z;
    let n = p.tokens;
    let d = p.head_dim;
    let stride = 3u * p.dim;
    let row0 = b * n;
    let q_off = (row0 + i) * stride + h * d;
    let k_off = p.dim + h * d;
    let v_off = 2u * p.dim + h * d;

    for (var e = lid; e < d; e += WG) {
        q_row[e] = qkv[q_off + e];
        v_keep[(row0 + i) * p.dim + h * d + e] = qkv[(row0 + i) * stride + v_off + e];
    }
    workgroupBarrier();

    var local_max = -3.4e38;
    for (var j = lid; j < n; j += WG) {
        let k_base = (row0 + j) * stride + k_off;
        var s = 0.0;
        for (var e = 0u; e < d; e++) {
            s += q_row[e] * qkv[k_base + e];
        }
        s *= p.scale;
        probs[j] = s;
        local_max = max(local_max, s);
        if (i == 0u) {
            cls_scores[(b * p.heads + h) * n + j] = s;
        }
    }
    let m = reduce_max(local_max, lid);

    var local_sum = 0.0;
    for (var j = lid; j < n; j += WG) {
        let e = exp(probs[j] - m);
        probs[j] = e;
        local_sum += e;
    }
    let inv_sum = 1.0 / reduce_sum(local_sum, lid);

    for (var e = lid; e < d; e += WG) {
        var acc = 0.0;
        for (var j = 0u; j < n; j++) {
            acc += probs[j] * qkv[(row0 + j) * stride + v_off + e];
        }
        out[(row0 + i) * p.dim + h * d + e] = acc * inv_sum;
    }
}
