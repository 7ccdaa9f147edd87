// The LRP rules of transformer attribution (Chefer, Gur & Wolf, CVPR 2021; docs/method.md §6.3)
// around the full backward's products (shaders/backward.wgsl `bgemm`, with B_SIGN for the z⁺
// rule's Z⁺, W⁺ and W⁻): src/kernels/lrp.rs launches them, src/explain/transformer_attribution.rs
// orders them.
//
// Relevance tensors are laid out like the full backward's gradients, one copy per gradient row
// (image × class) of a per-image activation: element i of a relevance tensor pairs with element
// shared(i) = (i / (rep·inner))·inner + i % inner of the activation, `rep` copies (the classes)
// of each run of `inner` values. [B, N, K, W] rows against [B·N, W] activations: inner = W;
// [B, K, H, N, P] attention relevance against [B, H, N, P] attention: inner = H·N·P.

struct LrpParams {
    // Elements to do (workgroups for add_factors: one per gradient row).
    count: u32,
    inner: u32,
    // Copies of each activation run: the classes per image.
    rep: u32,
    // Tokens per image (add_factors, add_apply).
    tokens: u32,
    // Bit 0: clone_merge has no first relevance (r1).
    flags: u32,
    alpha: f32,
    _pad0: u32,
    _pad1: u32,
}

const LRP_WG: u32 = 64u;
const ONE_BRANCH: u32 = 1u;

@group(0) @binding(0) var<uniform> lp: LrpParams;
// A per-image activation (or a denominator), and a second one (add_factors, add_apply).
@group(0) @binding(1) var<storage, read> xa: array<f32>;
@group(0) @binding(2) var<storage, read> xb: array<f32>;
// A relevance tensor read alongside dst.
@group(0) @binding(3) var<storage, read> rel: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst2: array<f32>;
@group(0) @binding(6) var<storage, read> classes: array<u32>;

// The authors' safe_divide (layers_ours.py): a / (b + 1e-9), 0 where b == 0. The epsilon is
// added whatever the sign of b (their clamp(min=1e-9) + clamp(max=1e-9)).
fn safe_div(a: f32, b: f32) -> f32 {
    if (b == 0.0) {
        return 0.0;
    }
    var den = b + 1e-9;
    if (den == 0.0) {
        den = 1e-9;
    }
    return a / den;
}

fn shared_index(i: u32) -> u32 {
    return (i / (lp.rep * lp.inner)) * lp.inner + i % lp.inner;
}

fn lrp_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_workgroup(wid, nwg) * LRP_WG + lid;
}

// dst = ε(dst, z) in place, z = xa shared: the ratio s = R / Z of an LRP rule.
@compute @workgroup_size(LRP_WG)
fn ratio(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = lrp_index(wid, nwg, lid);
    if (i >= lp.count) {
        return;
    }
    dst[i] = safe_div(dst[i], xa[shared_index(i)]);
}

// dst *= alpha · x, x = xa shared: a bilinear rule's operand times its product with the ratio.
@compute @workgroup_size(LRP_WG)
fn scale_by(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = lrp_index(wid, nwg, lid);
    if (i >= lp.count) {
        return;
    }
    dst[i] *= lp.alpha * xa[shared_index(i)];
}

// The z⁺ rule's input relevance x⁺ ⊙ (sW⁺) + x⁻ ⊙ (sW⁻): dst holds sW⁺ and becomes the
// relevance, rel holds sW⁻, x = xa shared.
@compute @workgroup_size(LRP_WG)
fn zplus_input(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = lrp_index(wid, nwg, lid);
    if (i >= lp.count) {
        return;
    }
    let x = xa[shared_index(i)];
    dst[i] = max(x, 0.0) * dst[i] + min(x, 0.0) * rel[i];
}

// The residual fork (Clone.relprop): dst = x ⊙ (ε(r1, x) + ε(dst, x)), x = xa shared; without r1
// (ONE_BRANCH) x ⊙ ε(dst, x), the class-token pooling's IndexSelect.relprop.
@compute @workgroup_size(LRP_WG)
fn clone_merge(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = lrp_index(wid, nwg, lid);
    if (i >= lp.count) {
        return;
    }
    let x = xa[shared_index(i)];
    var sum = safe_div(dst[i], x);
    if ((lp.flags & ONE_BRANCH) == 0u) {
        sum += safe_div(rel[i], x);
    }
    dst[i] = x * sum;
}

// The residual add x = x1 + x2 (Add.relprop), first pass: per gradient row (one workgroup,
// relevance rel [B, N, K, D]), with s = ε(R, x), r1 = x1 ⊙ s and r2 = x2 ⊙ s summed over the
// row's N·D values, the factors ε(f_i, Σr_i) with f_i = ε(|Σr_i|, |Σr1| + |Σr2|) · ΣR that
// rescale r1 and r2 into dst [B·K, 2]. xa = x (the sum), xb = x1, both [B·N, D]; x2 = x − x1.
@compute @workgroup_size(REDUCE_WG)
fn add_factors(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    let in_range = row < lp.count;
    let image = row / lp.rep;
    let cls = row % lp.rep;
    let d = lp.inner;
    var s1 = 0.0;
    var s2 = 0.0;
    var total = 0.0;
    if (in_range) {
        for (var e = lid; e < lp.tokens * d; e += REDUCE_WG) {
            let token = e / d;
            let col = e % d;
            let a = (image * lp.tokens + token) * d + col;
            let r = rel[((image * lp.tokens + token) * lp.rep + cls) * d + col];
            let x = xa[a];
            let x1 = xb[a];
            let s = safe_div(r, x);
            s1 += x1 * s;
            s2 += (x - x1) * s;
            total += r;
        }
    }
    // Every invocation reaches the barriers inside.
    s1 = workgroup_reduce(s1, lid, false);
    s2 = workgroup_reduce(s2, lid, false);
    total = workgroup_reduce(total, lid, false);
    if (in_range && lid == 0u) {
        let both = abs(s1) + abs(s2);
        dst[2u * row] = safe_div(safe_div(abs(s1), both) * total, s1);
        dst[2u * row + 1u] = safe_div(safe_div(abs(s2), both) * total, s2);
    }
}

// Add.relprop, second pass: r1 = x1 ⊙ s · factor1 into dst2, r2 = x2 ⊙ s · factor2 over the
// relevance in dst, s = ε(R, x); xa = x, xb = x1 shared, rel = add_factors' factors.
@compute @workgroup_size(LRP_WG)
fn add_apply(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = lrp_index(wid, nwg, lid);
    if (i >= lp.count) {
        return;
    }
    let j = shared_index(i);
    let row = (i / (lp.inner * lp.rep * lp.tokens)) * lp.rep + (i / lp.inner) % lp.rep;
    let x = xa[j];
    let x1 = xb[j];
    let s = safe_div(dst[i], x);
    dst2[i] = x1 * s * rel[2u * row];
    dst[i] = (x - x1) * s * rel[2u * row + 1u];
}

// The relevance at the logits: one-hot of each gradient row's class, dst [rows, inner classes].
@compute @workgroup_size(LRP_WG)
fn one_hot(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = lrp_index(wid, nwg, lid);
    if (i >= lp.count) {
        return;
    }
    dst[i] = f32(classes[i / lp.inner] == i % lp.inner);
}
