// C = epilogue(A · Wᵀ) for nn.Linear products on cooperative matrices (tensor cores), with the
// params, bindings and epilogues of gemm.wgsl (this file follows it in the module).
//
// One workgroup is one subgroup of LANES invocations (the host selects this kernel only where
// subgroups are at most LANES wide) and computes a COOP_MN × COOP_MN tile of C as
// FRAGS × FRAGS fragments of FRAG × FRAG. The head of the module says what a fragment is:
// - gemm_coop_mma.wgsl: cooperative matrices, coop_mat{FRAG}x{FRAG}<f16, A|B> multiplied into
//   coop_mat{FRAG}x{FRAG}<f32, C> (16 on Vulkan/NVIDIA, 8 on Metal);
// - gemm_coop_twin.wgsl: the same products in scalar loops over the same staged values and
//   the same fragment layout, so that this tiling and indexing runs, and is tested, on
//   adapters without cooperative matrices (CPU rasterizers).
//
// A and W are staged STAGE_K columns at a time in workgroup memory, rounded to f16, with zeros
// past the matrix edges: a cooperative load bounds-checks only a fragment's first element, so
// the fragments only ever read these fully padded tiles, never the buffers. The f32 sums leave
// the fragments one at a time through c_stage, where every invocation applies gemm.wgsl's
// epilogue (bias, GELU, residual with layer scale) to the elements inside the matrix. The
// barriers around both stages are what orders the workgroup-memory traffic between the
// cooperative operations and the scalar code (naga emits no availability/visibility semantics
// in cooperative modules, gfx-rs/wgpu#8805; the GPU check verifies the results).

const LANES: u32 = 32u;
const FRAGS: u32 = 4u;
const COOP_MN: u32 = FRAGS * FRAG;
const STAGE_K: u32 = 2u * FRAG;

var<workgroup> c_stage: array<f32, FRAG * FRAG>;

// The fragments are named variables, not an array: SPIR-V gives arrays an ArrayStride, which
// is not defined for cooperative matrices (naga decorates every array), so the 4 × 4 grid of
// fragments and the four B fragments of a step are written out.
fn coop_gemm(wid: vec3<u32>, lane: u32) {
    let z = wid.z;
    let m_base = wid.y * COOP_MN;
    let n_base = wid.x * COOP_MN;
    let a0 = base(p.a, z);
    let w0 = base(p.w, z);
    // acc_ij: rows i·FRAG.., columns j·FRAG.. of the tile.
    var acc00 = Acc();
    var acc01 = Acc();
    var acc02 = Acc();
    var acc03 = Acc();
    var acc10 = Acc();
    var acc11 = Acc();
    var acc12 = Acc();
    var acc13 = Acc();
    var acc20 = Acc();
    var acc21 = Acc();
    var acc22 = Acc();
    var acc23 = Acc();
    var acc30 = Acc();
    var acc31 = Acc();
    var acc32 = Acc();
    var acc33 = Acc();
    // Offset of fragment row (or column) 1 in a staged tile.
    let next = FRAG * STAGE_K;
    for (var k0 = 0u; k0 < p.k; k0 += STAGE_K) {
        // Row r of each tile holds k0.. k0 + STAGE_K of matrix row m_base + r (A) or
        // n_base + r (W), two consecutive k per step.
        for (var e = lane; e < COOP_MN * STAGE_K / 2u; e += LANES) {
            let r = e / (STAGE_K / 2u);
            let k = k0 + 2u * (e % (STAGE_K / 2u));
            let m = m_base + r;
            let n = n_base + r;
            var av = vec2<f32>();
            var wv = vec2<f32>();
            if (m < p.m) {
                let row = a0 + m * p.a.row;
                if (k < p.k) {
                    av.x = a1[row + k];
                }
                if (k + 1u < p.k) {
                    av.y = a1[row + k + 1u];
                }
            }
            if (n < p.n) {
                let row = w0 + n * p.w.row;
                if (k < p.k) {
                    wv.x = load_w(row + k);
                }
                if (k + 1u < p.k) {
                    wv.y = load_w(row + k + 1u);
                }
            }
            stage_pair(e, av, wv);
        }
        workgroupBarrier();
        for (var kf = 0u; kf < STAGE_K; kf += FRAG) {
            let b0 = load_b(kf);
            let b1 = load_b(next + kf);
            let b2 = load_b(2u * next + kf);
            let b3 = load_b(3u * next + kf);
            var a = load_a(kf);
            acc00 = mma(a, b0, acc00, lane);
            acc01 = mma(a, b1, acc01, lane);
            acc02 = mma(a, b2, acc02, lane);
            acc03 = mma(a, b3, acc03, lane);
            a = load_a(next + kf);
            acc10 = mma(a, b0, acc10, lane);
            acc11 = mma(a, b1, acc11, lane);
            acc12 = mma(a, b2, acc12, lane);
            acc13 = mma(a, b3, acc13, lane);
            a = load_a(2u * next + kf);
            acc20 = mma(a, b0, acc20, lane);
            acc21 = mma(a, b1, acc21, lane);
            acc22 = mma(a, b2, acc22, lane);
            acc23 = mma(a, b3, acc23, lane);
            a = load_a(3u * next + kf);
            acc30 = mma(a, b0, acc30, lane);
            acc31 = mma(a, b1, acc31, lane);
            acc32 = mma(a, b2, acc32, lane);
            acc33 = mma(a, b3, acc33, lane);
        }
        workgroupBarrier();
    }
    let c_base = base(p.c, z);
    let at = vec4<u32>(m_base, n_base, c_base, lane);
    emit_fragment(acc00, 0u, 0u, at);
    emit_fragment(acc01, 0u, 1u, at);
    emit_fragment(acc02, 0u, 2u, at);
    emit_fragment(acc03, 0u, 3u, at);
    emit_fragment(acc10, 1u, 0u, at);
    emit_fragment(acc11, 1u, 1u, at);
    emit_fragment(acc12, 1u, 2u, at);
    emit_fragment(acc13, 1u, 3u, at);
    emit_fragment(acc20, 2u, 0u, at);
    emit_fragment(acc21, 2u, 1u, at);
    emit_fragment(acc22, 2u, 2u, at);
    emit_fragment(acc23, 2u, 3u, at);
    emit_fragment(acc30, 3u, 0u, at);
    emit_fragment(acc31, 3u, 1u, at);
    emit_fragment(acc32, 3u, 2u, at);
    emit_fragment(acc33, 3u, 3u, at);
}

// Applies the epilogue to fragment (i, j) of the tile: `at` holds the tile's first row and
// column, the start of matrix C and the lane.
fn emit_fragment(acc: Acc, i: u32, j: u32, at: vec4<u32>) {
    let lane = at.w;
    store_fragment(acc, lane);
    workgroupBarrier();
    let row0 = at.x + i * FRAG;
    let col0 = at.y + j * FRAG;
    for (var e = lane; e < FRAG * FRAG; e += LANES) {
        store(at.z, row0 + e / FRAG, col0 + e % FRAG, c_stage[e]);
    }
    workgroupBarrier();
}
