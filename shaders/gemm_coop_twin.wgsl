// The plain twin of gemm_coop_mma.wgsl: the same fragment products in scalar loops, for
// adapters without cooperative matrices, so that gemm_coop.wgsl's tiling, staging and
// indexing run and are tested on CPU rasterizers (which lack f16 arithmetic on OpenGL). The
// head before this file sets FRAG.
//
// Tiles hold f16 pairs (pack2x16float rounds as the cooperative kernel's f16() does); the
// products of two f16 values are exact in f32 and summed in f32. A "fragment" is the offset of
// its first element; invocation `lane` owns elements lane + LANES·q of each accumulator, in
// the row-major C(r, c) = element r·FRAG + c.

alias FragA = u32;
alias FragB = u32;
alias Acc = array<f32, FRAG * FRAG / LANES>;

var<workgroup> a_stage: array<u32, COOP_MN * STAGE_K / 2u>;
var<workgroup> w_stage: array<u32, COOP_MN * STAGE_K / 2u>;

fn stage_pair(e: u32, a: vec2<f32>, w: vec2<f32>) {
    a_stage[e] = pack2x16float(a);
    w_stage[e] = pack2x16float(w);
}

fn load_a(at: u32) -> FragA {
    return at;
}

fn load_b(at: u32) -> FragB {
    return at;
}

// acc + A · B with A(r, k) = a_stage[a + r·STAGE_K + k] and B(k, c) = w_stage[b + c·STAGE_K + k].
// The elements lane + LANES·q of a lane share column c = lane % FRAG (LANES is a multiple of
// FRAG), so the lane reads that column of B once and each of its rows of A once, a pair of k
// at a time (fragment offsets and STAGE_K are even).
fn mma(a: FragA, b: FragB, acc: Acc, lane: u32) -> Acc {
    var column: array<vec2<f32>, FRAG / 2u>;
    let c = lane % FRAG;
    for (var k2 = 0u; k2 < FRAG / 2u; k2++) {
        column[k2] = unpack2x16float(w_stage[(b + c * STAGE_K) / 2u + k2]);
    }
    var out = acc;
    for (var q = 0u; q < FRAG * FRAG / LANES; q++) {
        let r = (lane + LANES * q) / FRAG;
        let row = (a + r * STAGE_K) / 2u;
        var sum = 0.0;
        for (var k2 = 0u; k2 < FRAG / 2u; k2++) {
            sum += dot(unpack2x16float(a_stage[row + k2]), column[k2]);
        }
        out[q] += sum;
    }
    return out;
}

fn store_fragment(acc: Acc, lane: u32) {
    for (var q = 0u; q < FRAG * FRAG / LANES; q++) {
        c_stage[lane + LANES * q] = acc[q];
    }
}
