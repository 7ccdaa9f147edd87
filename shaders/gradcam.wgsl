// Grad-CAM on the last block's LN1 output (docs method.md §6.2), class-token pooling, in the
// closed form: per gradient row r = image · K + slot,
//   u[r] = (1/P) · [0, concat_h(−d^-0.5 · dS_h[CLS] · q_h[CLS]), concat_h((1 − a_h[CLS]) · dO_h)]
// is the mean over the P patch tokens of ∂logit/∂qkv (a patch token's query reaches nothing),
// w[r] = u[r] · W_qkv (vecmat in agcam.wgsl), and map[r, j] = ReLU(X[j] · w[r]).

const WG: u32 = REDUCE_WG;

struct GradCamParams {
    // Gradient rows R = B·K.
    rows: u32,
    // Explained classes per image K.
    per_image: u32,
    // Tokens N = 1 + P.
    tokens: u32,
    heads: u32,
    head_dim: u32,
    // The attention scale d^-0.5.
    scale: f32,
    // 1 / P.
    inv_patches: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: GradCamParams;
// key_value_gradient: dO [R, D], the gradient of the last block's merged attention output at
// the class token (the AGCAM chain's first step).
@group(0) @binding(1) var<storage, read> d_out: array<f32>;
// V of every token, merged heads [B·N, D].
@group(0) @binding(2) var<storage, read> v: array<f32>;
// The class token's pre-softmax scores S = q·kᵀ·d^-0.5 [B, H, N].
@group(0) @binding(3) var<storage, read> cls_scores: array<f32>;
// The qkv projection [B·N, 3D]: the class token's query is row b·N, columns 0..D.
@group(0) @binding(4) var<storage, read> qkv: array<f32>;
// [R, 3D]: u as above.
@group(0) @binding(5) var<storage, read_write> u: array<f32>;
// map: the last block's LN1 output X [B·N, D].
@group(0) @binding(6) var<storage, read> x: array<f32>;
// [R, D]: w = u · W_qkv, the mean patch-token gradient of X.
@group(0) @binding(7) var<storage, read> w: array<f32>;
// [R, P]: the maps.
@group(0) @binding(8) var<storage, read_write> maps: array<f32>;

// ⟨dO[r, h], V[img, j, h]⟩: the class-token row of ∂logit/∂A for head h at key j.
fn attention_gradient(r: u32, img: u32, h: u32, j: u32) -> f32 {
    let d = p.head_dim;
    let dim = p.heads * d;
    let go = r * dim + h * d;
    let vo = (img * p.tokens + j) * dim + h * d;
    var g = 0.0;
    for (var e = 0u; e < d; e++) {
        g += d_out[go + e] * v[vo + e];
    }
    return g;
}

// One workgroup per (head, gradient row), dispatched as x = head, y = row: the softmax of the
// class token's score row, the softmax backward at its own key (dS[CLS]), and head h's columns
// of u's query (zero), key and value slices.
@compute @workgroup_size(WG)
fn key_value_gradient(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let h = wid.x;
    let r = wid.y;
    if (h >= p.heads || r >= p.rows) {
        return;
    }
    let n = p.tokens;
    let img = r / p.per_image;
    let s0 = (img * p.heads + h) * n;
    var m = -3.4e38;
    for (var j = lid; j < n; j += WG) {
        m = max(m, cls_scores[s0 + j]);
    }
    m = workgroup_reduce(m, lid, true);
    // Σ_j e^(S_j − m) and Σ_j e^(S_j − m) · dA_j.
    var z = 0.0;
    var t = 0.0;
    for (var j = lid; j < n; j += WG) {
        let e = exp(cls_scores[s0 + j] - m);
        z += e;
        t += e * attention_gradient(r, img, h, j);
    }
    z = workgroup_reduce(z, lid, false);
    t = workgroup_reduce(t, lid, false);
    let a0 = exp(cls_scores[s0] - m) / z;
    // dS[CLS] = a_0 (dA_0 − Σ_j a_j dA_j).
    let ds0 = a0 * (attention_gradient(r, img, h, 0u) - t / z);
    let d = p.head_dim;
    let dim = p.heads * d;
    let key_coef = -p.scale * ds0 * p.inv_patches;
    let value_coef = (1.0 - a0) * p.inv_patches;
    for (var e = lid; e < d; e += WG) {
        let c = h * d + e;
        let o = r * 3u * dim;
        u[o + c] = 0.0;
        u[o + dim + c] = key_coef * qkv[img * n * 3u * dim + c];
        u[o + 2u * dim + c] = value_coef * d_out[r * dim + c];
    }
}

// map[r, j − 1] = ReLU(X[img, j] · w[r]) for the patch tokens j = 1..N−1: one invocation per
// token, the gradient row uniform across the workgroup (y), so w's loads are shared.
@compute @workgroup_size(WG)
fn patch_map(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let n = p.tokens;
    let j = gid.x + 1u;
    let r = wid.y;
    if (j >= n || r >= p.rows) {
        return;
    }
    let dim = p.heads * p.head_dim;
    let img = r / p.per_image;
    let xo = (img * n + j) * dim;
    let wo = r * dim;
    var sum = 0.0;
    for (var e = 0u; e < dim; e++) {
        sum += x[xo + e] * w[wo + e];
    }
    maps[r * (n - 1u) + j - 1u] = max(sum, 0.0);
}
