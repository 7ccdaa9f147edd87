// The full backward through the ViT (no detach), for methods that need ∂logit/∂A of every
// attention row (src/explain/full_backward.rs): a general strided batched GEMM, and the
// elementwise and row kernels around it. No parameter gradients are computed.

// A matrix inside a buffer, in elements: element (r, c) of the matrix of batch entry
// (image, class, head) is at offset + image·image + class·cls + head·head + r·row + c·col.
// Transposes are stride swaps. Must match `Mat` in src/kernels/backward.rs.
struct Mat {
    offset: u32,
    row: u32,
    col: u32,
    image: u32,
    cls: u32,
    head: u32,
    _pad0: u32,
    _pad1: u32,
}

struct BgParams {
    m: u32,
    n: u32,
    k: u32,
    // The batch: images × classes × heads products, dispatched along z.
    classes: u32,
    heads: u32,
    // Bit 0: multiply by gelu'(aux); bit 1: scale term k by kscale[k].
    flags: u32,
    alpha: f32,
    // Epilogue: output row r reads aux row r / aux_div.
    aux_div: u32,
    a: Mat,
    b: Mat,
    c: Mat,
    aux: Mat,
}

// B as f16 pairs (the weight matrices with f16 storage) instead of f32.
override B_F16: bool = false;
// B as loaded: 0 as stored, 1 its positive part max(b, 0), 2 its negative part min(b, 0) (the
// LRP z⁺ rule's W⁺ and W⁻, src/kernels/lrp.rs, without storing either); 3 as stored, with only
// the positive terms a·b summed (the z⁺ rule's Z⁺ = x⁺W⁺ᵀ + x⁻W⁻ᵀ in one product).
override B_SIGN: u32 = 0u;
const POSITIVE_TERMS: u32 = 3u;
// bgemm_block: B's columns are contiguous and 4-aligned (col 1, offset, row and batch strides
// and n multiples of 4): each invocation reads 4 columns per load.
override B_VEC4: bool = false;
// bgemm_block: A's rows are contiguous and 4-aligned and k is a multiple of 4: each row is
// read 4 terms per load.
override A_VEC4: bool = false;
// bgemm_block with A_VEC4: B's columns are contiguous along k and 4-aligned (row 1, offset,
// col and batch strides multiples of 4; no term scales): each invocation reads 4 terms of a
// column per load, as gemm_block reads W. B is then a transposed weight (the LRP's Z⁺) or Vᵀ.
override B_TERMS4: bool = false;

@group(0) @binding(0) var<storage, read> ga: array<f32>;
@group(0) @binding(1) var<storage, read> gb: array<f32>;
@group(0) @binding(2) var<storage, read> kscale: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>;
@group(0) @binding(4) var<storage, read_write> gc: array<f32>;
@group(0) @binding(5) var<uniform> p: BgParams;
@group(0) @binding(6) var<storage, read> gb_f16: array<u32>;
// B again, as vec4 (bgemm_block with B_VEC4).
@group(0) @binding(7) var<storage, read> gb4: array<vec4<f32>>;
// A again, as vec4 (bgemm_block with A_VEC4).
@group(0) @binding(8) var<storage, read> ga4: array<vec4<f32>>;

const GELU_GRAD: u32 = 1u;
const K_SCALED: u32 = 2u;
// Invocations per workgroup side and outputs per invocation side of `bgemm`.
const BG_WG: u32 = 8u;
const BG_TILE: u32 = 4u;

fn mat_base(t: Mat, z: u32) -> u32 {
    let head = z % p.heads;
    let cls = (z / p.heads) % p.classes;
    let image = z / (p.heads * p.classes);
    return t.offset + image * t.image + cls * t.cls + head * t.head;
}

fn load_b(i: u32) -> f32 {
    if (B_F16) {
        let pair = unpack2x16float(gb_f16[i >> 1u]);
        return signed_part(select(pair.x, pair.y, (i & 1u) == 1u));
    }
    return signed_part(gb[i]);
}

// B[i..i+4] for i a multiple of 4.
fn load_b4(i: u32) -> vec4<f32> {
    if (B_F16) {
        let b = vec4<f32>(unpack2x16float(gb_f16[i >> 1u]), unpack2x16float(gb_f16[(i >> 1u) + 1u]));
        return signed_part4(b);
    }
    return signed_part4(gb4[i >> 2u]);
}

// B_SIGN's part of a loaded value.
fn signed_part(b: f32) -> f32 {
    if (B_SIGN == 1u) {
        return max(b, 0.0);
    }
    if (B_SIGN == 2u) {
        return min(b, 0.0);
    }
    return b;
}

// Term a·b of a product, or max(a·b, 0) with POSITIVE_TERMS.
fn term4(a: f32, b: vec4<f32>) -> vec4<f32> {
    if (B_SIGN == POSITIVE_TERMS) {
        return max(a * b, vec4<f32>(0.0));
    }
    return a * b;
}

fn term(a: f32, b: f32) -> f32 {
    if (B_SIGN == POSITIVE_TERMS) {
        return max(a * b, 0.0);
    }
    return a * b;
}

// Σ of the terms a[t]·b[t].
fn dot_terms(a: vec4<f32>, b: vec4<f32>) -> f32 {
    if (B_SIGN == POSITIVE_TERMS) {
        return dot(max(a * b, vec4<f32>(0.0)), vec4<f32>(1.0));
    }
    return dot(a, b);
}

fn signed_part4(b: vec4<f32>) -> vec4<f32> {
    if (B_SIGN == 1u) {
        return max(b, vec4<f32>(0.0));
    }
    if (B_SIGN == 2u) {
        return min(b, vec4<f32>(0.0));
    }
    return b;
}

// C = alpha · op(A) · op(B) [⊙ gelu'(aux)] for every batch entry, each invocation a 4 × 4
// block held in registers (no workgroup memory: CPU rasterizers run this well, and it is
// correct everywhere). Out-of-range rows and columns are clamped on load and never stored.
@compute @workgroup_size(BG_WG, BG_WG, 1)
fn bgemm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row0 = (wid.y * BG_WG + lid.y) * BG_TILE;
    let col0 = (wid.x * BG_WG + lid.x) * BG_TILE;
    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    let z = wid.z;
    let a0 = mat_base(p.a, z);
    let b0 = mat_base(p.b, z);
    var a_row: array<u32, 4>;
    var b_col: array<u32, 4>;
    for (var i = 0u; i < BG_TILE; i++) {
        a_row[i] = a0 + min(row0 + i, p.m - 1u) * p.a.row;
        b_col[i] = b0 + min(col0 + i, p.n - 1u) * p.b.col;
    }
    let scaled = (p.flags & K_SCALED) != 0u;
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < p.k; kk++) {
        let ak = kk * p.a.col;
        let bk = kk * p.b.row;
        var bv = vec4<f32>(load_b(b_col[0] + bk), load_b(b_col[1] + bk), load_b(b_col[2] + bk),
            load_b(b_col[3] + bk));
        if (scaled) {
            bv *= kscale[kk];
        }
        for (var i = 0u; i < BG_TILE; i++) {
            acc[i] += term4(ga[a_row[i] + ak], bv);
        }
    }
    let c0 = mat_base(p.c, z);
    let x0 = mat_base(p.aux, z);
    let gelu_grad_epilogue = (p.flags & GELU_GRAD) != 0u;
    for (var i = 0u; i < BG_TILE; i++) {
        let r = row0 + i;
        if (r >= p.m) {
            break;
        }
        for (var j = 0u; j < BG_TILE; j++) {
            let c = col0 + j;
            if (c >= p.n) {
                break;
            }
            var v = p.alpha * acc[i][j];
            if (gelu_grad_epilogue) {
                v *= gelu_grad(aux[x0 + (r / p.aux_div) * p.aux.row + c * p.aux.col]);
            }
            gc[c0 + r * p.c.row + c * p.c.col] = v;
        }
    }
}

// The CPU kernel set's product: each invocation computes BB_ROWS rows × BB_COLS columns, the
// rows shared by the whole workgroup (one SIMD vector on llvmpipe). llvmpipe loads a value that
// is the same on every lane (A: the rows depend on the workgroup only) with one scalar load
// and a value that differs per lane one lane at a time, so each per-lane load of B serves
// BB_ROWS multiply-adds (see gemm_block in gemm.wgsl). Loops of at most 32 iterations are
// unrolled by Mesa. Columns per invocation: 8, or 4 for products of at most 32 columns (a
// head's width), which would leave half of the lanes of an 8-column workgroup idle; the arrays
// are sized for the largest.
const BB_ROWS: u32 = 32u;

// Row kk of B at this invocation's columns (rb: their element offsets), times kscale[kk].
fn block_b_row(b0: u32, n0: u32, rb: array<u32, BB_MAX_COLS>, kk: u32) -> array<f32, BB_MAX_COLS> {
    var s = 1.0;
    if ((p.flags & K_SCALED) != 0u) {
        s = kscale[kk];
    }
    let bk = kk * p.b.row;
    var bv: array<f32, BB_MAX_COLS>;
    if (B_VEC4) {
        for (var j = 0u; j < BB_COLS; j += 4u) {
            // Past the last column: any 4 columns of the row (never stored).
            let v = load_b4(b0 + min(n0 + j, p.n - 4u) + bk) * s;
            bv[j] = v.x;
            bv[j + 1u] = v.y;
            bv[j + 2u] = v.z;
            bv[j + 3u] = v.w;
        }
    } else {
        for (var j = 0u; j < BB_COLS; j++) {
            bv[j] = load_b(rb[j] + bk) * s;
        }
    }
    return bv;
}
// Columns per invocation: 8, or 4 for narrow products and 24 for wide ones (the host's
// `block_columns`); the arrays are sized for the widest, and Mesa unrolls the loops to BB_COLS.
const BB_MAX_COLS: u32 = 24u;
override BB_COLS: u32 = 8u;

@compute @workgroup_size(8)
fn bgemm_block(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let n0 = gid.x * BB_COLS;
    let m0 = wid.y * BB_ROWS;
    let z = wid.z;
    if (n0 >= p.n) {
        return;
    }
    let a0 = mat_base(p.a, z);
    let b0 = mat_base(p.b, z);
    var rb: array<u32, BB_MAX_COLS>;
    for (var j = 0u; j < BB_COLS; j++) {
        rb[j] = b0 + min(n0 + j, p.n - 1u) * p.b.col;
    }
    var ra: array<u32, BB_ROWS>;
    for (var i = 0u; i < BB_ROWS; i++) {
        ra[i] = a0 + min(m0 + i, p.m - 1u) * p.a.row;
    }
    var acc: array<array<f32, BB_MAX_COLS>, BB_ROWS>;
    if (A_VEC4) {
        for (var kk = 0u; kk < p.k; kk += 4u) {
            var bq: array<vec4<f32>, BB_MAX_COLS>;
            if (B_TERMS4) {
                for (var j = 0u; j < BB_COLS; j++) {
                    bq[j] = load_b4(rb[j] + kk);
                }
            } else {
                let r0 = block_b_row(b0, n0, rb, kk);
                let r1 = block_b_row(b0, n0, rb, kk + 1u);
                let r2 = block_b_row(b0, n0, rb, kk + 2u);
                let r3 = block_b_row(b0, n0, rb, kk + 3u);
                for (var j = 0u; j < BB_COLS; j++) {
                    bq[j] = vec4<f32>(r0[j], r1[j], r2[j], r3[j]);
                }
            }
            for (var i = 0u; i < BB_ROWS; i++) {
                let x = ga4[(ra[i] + kk) >> 2u];
                for (var j = 0u; j < BB_COLS; j++) {
                    acc[i][j] += dot_terms(x, bq[j]);
                }
            }
        }
    } else {
        for (var kk = 0u; kk < p.k; kk++) {
            let bv = block_b_row(b0, n0, rb, kk);
            let ak = kk * p.a.col;
            for (var i = 0u; i < BB_ROWS; i++) {
                let x = ga[ra[i] + ak];
                for (var j = 0u; j < BB_COLS; j++) {
                    acc[i][j] += term(x, bv[j]);
                }
            }
        }
    }
    // As gemm_block: one select per element in the unrolled store, the GELU' epilogue in a
    // rolled second loop (Mesa's compile time grows fast with per-lane work unrolled here).
    let c0 = mat_base(p.c, z);
    let rows = min(BB_ROWS, p.m - m0);
    let cols = min(BB_COLS, p.n - n0);
    for (var i = 0u; i < BB_ROWS; i++) {
        for (var j = 0u; j < BB_COLS; j++) {
            if (i < rows && j < cols) {
                gc[c0 + (m0 + i) * p.c.row + (n0 + j) * p.c.col] = p.alpha * acc[i][j];
            }
        }
    }
    if ((p.flags & GELU_GRAD) != 0u) {
        let x0 = mat_base(p.aux, z);
        for (var i = 0u; i < rows; i++) {
            for (var j = 0u; j < cols; j++) {
                let r = m0 + i;
                let c = n0 + j;
                let e = c0 + r * p.c.row + c * p.c.col;
                gc[e] *= gelu_grad(aux[x0 + (r / p.aux_div) * p.aux.row + c * p.aux.col]);
            }
        }
    }
}

// --- elementwise and row kernels -------------------------------------------------------------

struct ElemParams {
    // Elements (gelu_copy, copy, seed) or rows (softmax_backward, relevance_step) to do.
    count: u32,
    tokens: u32,
    classes: u32,
    dim: u32,
    heads: u32,
    // Row length of the attention buffers (tokens rounded up to a multiple of 4).
    padded: u32,
    // relevance_step: bit 0 = first step (r is e_CLS), bit 1 = last step (write the map),
    // bit 2 = the weights are per gradient row [B, K, H, N, padded] (transformer attribution's
    // attention relevance) instead of per image [B, H, N, padded] (the attention itself).
    // seed: bit 0 = average pooling.
    flags: u32,
    _pad: u32,
}

const EW_WG: u32 = 64u;

@group(0) @binding(10) var<storage, read> src: array<f32>;
@group(0) @binding(11) var<storage, read_write> dst: array<f32>;
// Post-softmax attention of one layer [B, H, N, padded].
@group(0) @binding(12) var<storage, read> probs: array<f32>;
@group(0) @binding(13) var<uniform> e: ElemParams;
// ∂logit/∂A of one layer [B, K, H, N, padded]; softmax_backward turns it into ∂logit/∂S.
@group(0) @binding(14) var<storage, read_write> grad_attn: array<f32>;

fn elem_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_workgroup(wid, nwg) * EW_WG + lid;
}

// dst = gelu(src): the MLP activation, when the forward keeps the pre-activation.
@compute @workgroup_size(EW_WG)
fn gelu_copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = elem_index(wid, nwg, lid);
    if (i < e.count) {
        dst[i] = gelu(src[i]);
    }
}

// dst = src: keeps the residual stream before a block changes it in place.
@compute @workgroup_size(EW_WG)
fn keep_copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = elem_index(wid, nwg, lid);
    if (i < e.count) {
        dst[i] = src[i];
    }
}

// The gradient of x_L [B, N, K, D] from the gradient at the pooled token src [B·K, D]: zero
// except at token 0 of each image (class-token pooling), or src / (N - 1) at every patch token
// (average pooling).
@compute @workgroup_size(EW_WG)
fn seed(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = elem_index(wid, nwg, lid);
    if (i >= e.count) {
        return;
    }
    let col = i % e.dim;
    let cls = (i / e.dim) % e.classes;
    let token = (i / (e.dim * e.classes)) % e.tokens;
    let image = i / (e.dim * e.classes * e.tokens);
    // flags bit 0: average pooling, the mean of the patch tokens reaches the logits.
    let mean = (e.flags & 1u) != 0u;
    var v = 0.0;
    if (mean && token != 0u) {
        v = src[(image * e.classes + cls) * e.dim + col] / f32(e.tokens - 1u);
    } else if (!mean && token == 0u) {
        v = src[(image * e.classes + cls) * e.dim + col];
    }
    dst[i] = v;
}

// Row of probs [B, H, N, padded] that gradient row `row` of [B, K, H, N, padded] belongs to.
fn probs_row(row: u32) -> u32 {
    let i = row % e.tokens;
    let h = (row / e.tokens) % e.heads;
    let image = row / (e.tokens * e.heads * e.classes);
    return (image * e.heads + h) * e.tokens + i;
}

// Softmax backward in place, one invocation per row: dS = A ⊙ (dA − Σ_j dA_j A_j).
@compute @workgroup_size(EW_WG)
fn softmax_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = elem_index(wid, nwg, lid);
    if (row >= e.count) {
        return;
    }
    let g = row * e.padded;
    let a = probs_row(row) * e.padded;
    var dot = 0.0;
    for (var j = 0u; j < e.tokens; j++) {
        dot += grad_attn[g + j] * probs[a + j];
    }
    for (var j = 0u; j < e.tokens; j++) {
        grad_attn[g + j] = probs[a + j] * (grad_attn[g + j] - dot);
    }
}

// One step of generic attention's relevance, from the last layer down, one invocation per
// (gradient row q = image·K + class, key j):
//   r'[j] = r[j] + Σ_i r[i] · Ā[i, j],   Ā = mean_h max(0, ∇A_h ⊙ A_h)
// (`probs` holds A_h, or with flag bit 2 transformer attribution's R_A,h of each gradient row)
// (r = e_CLS on the first step), without forming Ā or R. The last step writes r'[1:] as the
// map [B·K, N-1] to dst instead of r' [B·K, N].
@compute @workgroup_size(EW_WG)
fn relevance_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = elem_index(wid, nwg, lid);
    if (idx >= e.count) {
        return;
    }
    let n = e.tokens;
    let q = idx / n;
    let j = idx % n;
    let first = (e.flags & 1u) != 0u;
    let last = (e.flags & 2u) != 0u;
    let weight_row = select(q / e.classes, q, (e.flags & 4u) != 0u);
    // Only row CLS of r is non-zero on the first step.
    let rows = select(n, 1u, first);
    var sum = 0.0;
    for (var h = 0u; h < e.heads; h++) {
        let g = (q * e.heads + h) * n * e.padded + j;
        let a = (weight_row * e.heads + h) * n * e.padded + j;
        for (var i = 0u; i < rows; i++) {
            // Never read src on the first step: it is not bound then.
            var r_i = 1.0;
            if (!first) {
                r_i = src[q * n + i];
            }
            sum += r_i * max(0.0, grad_attn[g + i * e.padded] * probs[a + i * e.padded]);
        }
    }
    var r_j = f32(j == 0u);
    if (!first) {
        r_j = src[q * n + j];
    }
    let value = r_j + sum / f32(e.heads);
    if (last) {
        if (j > 0u) {
            dst[q * (n - 1u) + j - 1u] = value;
        }
    } else {
        dst[q * n + j] = value;
    }
}
