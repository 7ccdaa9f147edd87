// Fragment products of gemm_coop.wgsl on cooperative matrices: the head before this file sets
// FRAG and the types FragA, FragB (f16 operands) and Acc (f32 sums) of one size.
//
// Fragment layout in the staged tiles (gemm_coop_twin.wgsl computes exactly this):
// A(r, k) = a_stage[at + r·STAGE_K + k]  (row-major: coopLoadT),
// B(k, c) = w_stage[at + c·STAGE_K + k]  (column-major: coopLoad; W's rows are B's columns),
// C(r, c) → c_stage[r·FRAG + c]          (row-major: coopStoreT).

var<workgroup> a_stage: array<f16, COOP_MN * STAGE_K>;
var<workgroup> w_stage: array<f16, COOP_MN * STAGE_K>;

// Stores pair `e` (elements 2e and 2e + 1) of both tiles, rounded to f16.
fn stage_pair(e: u32, a: vec2<f32>, w: vec2<f32>) {
    a_stage[2u * e] = f16(a.x);
    a_stage[2u * e + 1u] = f16(a.y);
    w_stage[2u * e] = f16(w.x);
    w_stage[2u * e + 1u] = f16(w.y);
}

fn load_a(at: u32) -> FragA {
    return coopLoadT<FragA>(&a_stage[at], STAGE_K);
}

fn load_b(at: u32) -> FragB {
    return coopLoad<FragB>(&w_stage[at], STAGE_K);
}

fn mma(a: FragA, b: FragB, acc: Acc, lane: u32) -> Acc {
    return coopMultiplyAdd(a, b, acc);
}

fn store_fragment(acc: Acc, lane: u32) {
    coopStoreT(acc, &c_stage[0], FRAG);
}
