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

fn coop_gemm(wid: vec3<u32>, lane: u32) {
    let z = wid.z;
    let m_base = wid.y * COOP_MN;
    let n_base = wid.x * COOP_MN;
    let a0 = base(p.a, z);
    let w0 = base(p.w, z);
    var acc: array<Acc, FRAGS * FRAGS>;
    for (var f = 0u; f < FRAGS * FRAGS; f++) {
        acc[f] = Acc();
    }
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
            var b: array<FragB, FRAGS>;
            for (var j = 0u; j < FRAGS; j++) {
                b[j] = load_b(j * FRAG * STAGE_K + kf);
            }
            for (var i = 0u; i < FRAGS; i++) {
                let a = load_a(i * FRAG * STAGE_K + kf);
                for (var j = 0u; j < FRAGS; j++) {
                    acc[i * FRAGS + j] = mma(a, b[j], acc[i * FRAGS + j], lane);
                }
            }
        }
        workgroupBarrier();
    }
    let c_base = base(p.c, z);
    for (var f = 0u; f < FRAGS * FRAGS; f++) {
        store_fragment(acc[f], lane);
        workgroupBarrier();
        let row0 = m_base + (f / FRAGS) * FRAG;
        let col0 = n_base + (f % FRAGS) * FRAG;
        for (var e = lane; e < FRAG * FRAG; e += LANES) {
            store(c_base, row0 + e / FRAG, col0 + e % FRAG, c_stage[e]);
        }
        workgroupBarrier();
    }
}
