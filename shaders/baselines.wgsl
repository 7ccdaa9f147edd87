// The class-agnostic baselines the paper compares AGCAM with (method.md §5):
//   raw attention:     the last layer's class-token attention row, mean over heads;
//   attention rollout: R = Â_L ⋯ Â_1 with Â = (mean_h A + I) / 2, map = R[CLS, 1:].
// Rollout needs only R's class-token row, so it runs as a row-vector chain r ← r · Â_k from
// the last layer down, over the Â_k that `head_mean` keeps during the forward pass.

const WG: u32 = REDUCE_WG;

struct BaselineParams {
    images: u32,
    tokens: u32,
    padded: u32,
    heads: u32,
    // rollout_step: 1 starts the chain (r = e_CLS), 2 ends it (writes the map layout), 3 both.
    mode: u32,
    // Elements to compute (head_mean, rollout_step).
    count: u32,
    _pad0: u32,
    _pad1: u32,
}

// head_mean: attention probabilities [B, H, N, padded]; raw_attention: class-token scores
// [B, H, N]; rollout_step: Â_k [B, N, N].
@group(0) @binding(0) var<storage, read> src: array<f32>;
// rollout_step: the chain vector r [B, N].
@group(0) @binding(1) var<storage, read> row: array<f32>;
// head_mean: Â [B, N, N]; rollout_step: r' [B, N] or the map [B, N-1]; raw_attention: map.
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> p: BaselineParams;

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_workgroup(wid, nwg) * WG + lid;
}

@compute @workgroup_size(WG)
fn head_mean(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = element(wid, nwg, lid);
    if (idx >= p.count) {
        return;
    }
    let n = p.tokens;
    let j = idx % n;
    let i = (idx / n) % n;
    let img = idx / (n * n);
    var s = 0.0;
    for (var h = 0u; h < p.heads; h++) {
        s += src[((img * p.heads + h) * n + i) * p.padded + j];
    }
    dst[idx] = 0.5 * s / f32(p.heads) + select(0.0, 0.5, i == j);
}

@compute @workgroup_size(WG)
fn rollout_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = element(wid, nwg, lid);
    if (idx >= p.count) {
        return;
    }
    let n = p.tokens;
    let j = idx % n;
    let img = idx / n;
    let a = img * n * n;
    var s: f32;
    if ((p.mode & 1u) != 0u) {
        s = src[a + j];
    } else {
        s = 0.0;
        for (var i = 0u; i < n; i++) {
            s += row[img * n + i] * src[a + i * n + j];
        }
    }
    if ((p.mode & 2u) != 0u) {
        if (j > 0u) {
            dst[img * (n - 1u) + j - 1u] = s;
        }
    } else {
        dst[idx] = s;
    }
}

// One workgroup per image: softmax of each head's class-token score row, mean over heads.
@compute @workgroup_size(WG)
fn raw_attention(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let img = wid.x;
    let n = p.tokens;
    for (var j = lid + 1u; j < n; j += WG) {
        dst[img * (n - 1u) + j - 1u] = 0.0;
    }
    for (var h = 0u; h < p.heads; h++) {
        let o = (img * p.heads + h) * n;
        var m = -3.4e38;
        for (var j = lid; j < n; j += WG) {
            m = max(m, src[o + j]);
        }
        m = workgroup_reduce(m, lid, true);
        var sum = 0.0;
        for (var j = lid; j < n; j += WG) {
            sum += exp(src[o + j] - m);
        }
        let scale = 1.0 / (workgroup_reduce(sum, lid, false) * f32(p.heads));
        for (var j = lid + 1u; j < n; j += WG) {
            dst[img * (n - 1u) + j - 1u] += exp(src[o + j] - m) * scale;
        }
    }
}
