// Moving tokens around: patches out of images, the token sequence out of patch embeddings, and
// rows out of larger matrices. One invocation per output element.

const WG: u32 = 256u;

struct TokenParams {
    // Number of output elements.
    count: u32,
    // Embedding width D (assemble, gather) or patch size P (im2col).
    dim: u32,
    // im2col: image height and width. assemble: tokens N. gather: source row stride.
    a: u32,
    b: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> extra: array<f32>;
@group(0) @binding(2) var<storage, read> extra2: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<uniform> p: TokenParams;
@group(0) @binding(5) var<storage, read> index: array<u32>;
// gather_indexed: `src` as f16 pairs, read instead of it when SRC_F16 (the host binds both).
@group(0) @binding(6) var<storage, read> src_h: array<u32>;

override SRC_F16: bool = false;

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_workgroup(wid, nwg) * WG + lid;
}

// src: images [B, 3, H, W] -> dst: patches [B·gh·gw, 3·P·P] in the conv weight's (c, ky, kx)
// order, so that patch embedding is a GEMM against the [D, 3·P·P] weight.
@compute @workgroup_size(WG)
fn im2col(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = element(wid, nwg, lid);
    if (idx >= p.count) {
        return;
    }
    let ps = p.dim;
    let height = p.a;
    let width = p.b;
    let gw = width / ps;
    let patch_len = 3u * ps * ps;
    let patches_per_image = (height / ps) * gw;
    let col = idx % patch_len;
    let patch_index = idx / patch_len;
    let img = patch_index / patches_per_image;
    let pi = patch_index % patches_per_image;
    let c = col / (ps * ps);
    let ky = (col / ps) % ps;
    let kx = col % ps;
    let y = (pi / gw) * ps + ky;
    let x = (pi % gw) * ps + kx;
    dst[idx] = src[((img * 3u + c) * height + y) * width + x];
}

// src: patch embeddings [B·(N-1), D], extra: class token [D], extra2: position embedding
// [N, D] -> dst: tokens [B·N, D].
@compute @workgroup_size(WG)
fn assemble(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = element(wid, nwg, lid);
    if (idx >= p.count) {
        return;
    }
    let d = p.dim;
    let n = p.a;
    let e = idx % d;
    let t = (idx / d) % n;
    let img = idx / (d * n);
    var v: f32;
    if (t == 0u) {
        v = extra[e];
    } else {
        v = src[(img * (n - 1u) + t - 1u) * d + e];
    }
    dst[idx] = v + extra2[t * d + e];
}

// dst[r] = src[r · stride]: for example the class-token row of every image.
@compute @workgroup_size(WG)
fn gather_strided(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = element(wid, nwg, lid);
    if (idx >= p.count) {
        return;
    }
    let d = p.dim;
    dst[idx] = src[(idx / d) * p.a * d + idx % d];
}

// dst[r] = src[index[r]]: for example the classifier rows of the explained classes.
@compute @workgroup_size(WG)
fn gather_indexed(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = element(wid, nwg, lid);
    if (idx >= p.count) {
        return;
    }
    let d = p.dim;
    let i = index[idx / d] * d + idx % d;
    if (SRC_F16) {
        dst[idx] = unpack2x16float(src_h[i >> 1u])[i & 1u];
    } else {
        dst[idx] = src[i];
    }
}

// dst[b] = mean of src's patch tokens (all but the class token) of image b: global average
// pooling. src: tokens [B·N, D] (N in `a`), dst: [B, D].
@compute @workgroup_size(WG)
fn mean_patches(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = element(wid, nwg, lid);
    if (idx >= p.count) {
        return;
    }
    let d = p.dim;
    let n = p.a;
    let img = idx / d;
    let e = idx % d;
    var s = 0.0;
    for (var t = 1u; t < n; t++) {
        s += src[(img * n + t) * d + e];
    }
    dst[idx] = s / f32(n - 1u);
}
