// C = epilogue(A · Wᵀ): A is [M, K] and W is [N, K], both read along K (W in the nn.Linear
// [out, in] layout, or K of attention as it sits in the qkv matrix). Each invocation computes a
// 4×4 block of C from registers, without workgroup memory or barriers: the shape that CPU
// rasterizers (llvmpipe, lavapipe) run fastest.
//
// Matrices may be strided views into larger buffers, and batched over the dispatch's z axis,
// z = image · heads + head, so one launch covers every head of every image in attention.
//
// Epilogue 0: C = acc + bias
// Epilogue 1: C = gelu(acc + bias)
// Epilogue 2: C = C + scale ⊙ (acc + bias)      (residual add with layer scale, in place;
//                                                 not in gemm_block, see there)
// Epilogue 3: C = alpha · acc                    (attention: scores and A·V)
// Epilogue 4: C = acc ⊙ gelu'(bias[row / gate_rows, col])   (the backward chain's fc2ᵀ; only
//                                                 gemm_tiled with BACKWARD, which keeps `store`)
// The epilogue is a uniform, not an override constant: one pipeline serves them all, which
// matters on CPU rasterizers, where compiling the large register-blocked kernel takes seconds.

struct View {
    offset: u32,
    // Element strides between rows, between images and between heads.
    row: u32,
    image: u32,
    head: u32,
}

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    heads: u32,
    a: View,
    w: View,
    c: View,
    alpha: f32,
    // bias and scale are read at column + col_offset: a slice of a Linear's output features.
    col_offset: u32,
    epilogue: u32,
    // Epilogue 4: rows of C per row of the gate (explained classes per image).
    gate_rows: u32,
    // When not 0, rows 0, keep_every, 2·keep_every, … of acc + bias (before the GELU) are also
    // written to `keep`, packed: fc1's pre-activation at the class tokens, which the AGCAM
    // backward reads (N rows per image; 1 where the rows are class tokens only).
    keep_every: u32,
    // gemm_tiled_split and gemm_split_reduce: terms of K per slice, and slices.
    split_len: u32,
    splits: u32,
    _pad0: u32,
}

// W holds f16 values, two per u32 (half the memory and bandwidth); arithmetic stays f32.
override W_F16: bool = false;
// gemm_tiled only: the transposed products of the AGCAM backward chain (src/explain/agcam.rs),
// C = (A ⊙ scale) · W, with W an nn.Linear's [out, in] weight read as [K, N] (element (n, k)
// at k · w.row + n, so it is staged along N) and term k of every row of A scaled by scale[k]
// (layer scale on the gradient side).
override BACKWARD: bool = false;

@group(0) @binding(0) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<uniform> p: GemmParams;
// The scalar entry point reads A and W through these when K, a stride or an offset is not a
// multiple of 4.
@group(0) @binding(6) var<storage, read> a1: array<f32>;
@group(0) @binding(7) var<storage, read> w1: array<f32>;
// The same W as f16 pairs, read instead of w4 / w1 when W_F16 (the host binds W to both).
@group(0) @binding(8) var<storage, read> w4h: array<vec2<u32>>;
@group(0) @binding(9) var<storage, read> w1h: array<u32>;
// The kept rows (see keep_every); the host binds C here when there are none.
@group(0) @binding(10) var<storage, read_write> keep: array<f32>;
// Split-K's partial sums, [splits, M, N] (gemm_tiled_split and gemm_split_reduce only).
@group(0) @binding(11) var<storage, read_write> partial: array<f32>;

// Keeps the pre-activation `v` of C's (row, col) when the row is one of those kept.
fn keep_row(row: u32, col: u32, v: f32) {
    if (p.keep_every != 0u && row % p.keep_every == 0u) {
        keep[(row / p.keep_every) * p.n + col] = v;
    }
}

// Four consecutive W values starting at element 4·i.
fn load_w4(i: u32) -> vec4<f32> {
    if (W_F16) {
        let u = w4h[i];
        return vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y));
    }
    return w4[i];
}

// W element i.
fn load_w(i: u32) -> f32 {
    if (W_F16) {
        return unpack2x16float(w1h[i >> 1u])[i & 1u];
    }
    return w1[i];
}

// Start of matrix z of a view.
fn base(v: View, z: u32) -> u32 {
    return v.offset + (z / p.heads) * v.image + (z % p.heads) * v.head;
}

fn store(c_base: u32, row: u32, col: u32, acc: f32) {
    if (row >= p.m || col >= p.n) {
        return;
    }
    let i = c_base + row * p.c.row + col;
    let f = col + p.col_offset;
    if (p.epilogue <= 1u) {
        keep_row(row, col, acc + bias[f]);
    }
    if (p.epilogue == 0u) {
        c[i] = acc + bias[f];
    } else if (p.epilogue == 1u) {
        c[i] = gelu(acc + bias[f]);
    } else if (p.epilogue == 2u) {
        c[i] = c[i] + scale[f] * (acc + bias[f]);
    } else if (p.epilogue == 3u) {
        c[i] = p.alpha * acc;
    } else {
        c[i] = acc * gelu_grad(bias[(row / p.gate_rows) * p.n + col]);
    }
}

fn store_block(z: u32, m0: u32, n0: u32, acc: array<vec4<f32>, 4>) {
    let c_base = base(p.c, z);
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(c_base, m0 + i, n0 + j, acc[i][j]);
        }
    }
}

// The CPU kernel for matrices of 8 rows or more: each invocation computes 8 rows × 8 columns,
// with the rows the same for the whole workgroup. llvmpipe runs invocations as SIMD lanes and
// turns a load whose address is the same on every lane into one scalar load, so A costs almost
// nothing and each W load feeds 8 rows: 1.7× the 4×4 kernel's GFLOP/s on lavapipe.
const WIDE_ROWS: u32 = 8u;

@compute @workgroup_size(64)
fn gemm_wide(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let n0 = gid.x * 8u;
    let m0 = wid.y * WIDE_ROWS;
    let z = gid.z;
    if (n0 >= p.n) {
        return;
    }
    let k4 = p.k / 4u;
    let a0 = base(p.a, z) / 4u;
    let w0 = base(p.w, z) / 4u;
    let lda = p.a.row / 4u;
    let ldw = p.w.row / 4u;
    var rw: array<u32, 8>;
    for (var j = 0u; j < 8u; j++) {
        rw[j] = w0 + min(n0 + j, p.n - 1u) * ldw;
    }
    var acc: array<vec4<f32>, 16>;
    for (var kk = 0u; kk < k4; kk++) {
        var b: array<vec4<f32>, 8>;
        for (var j = 0u; j < 8u; j++) {
            b[j] = load_w4(rw[j] + kk);
        }
        for (var i = 0u; i < WIDE_ROWS; i++) {
            let x = a4[a0 + min(m0 + i, p.m - 1u) * lda + kk];
            acc[2u * i] += vec4<f32>(dot(x, b[0]), dot(x, b[1]), dot(x, b[2]), dot(x, b[3]));
            acc[2u * i + 1u] += vec4<f32>(dot(x, b[4]), dot(x, b[5]), dot(x, b[6]), dot(x, b[7]));
        }
    }
    let c_base = base(p.c, z);
    for (var i = 0u; i < WIDE_ROWS; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(c_base, m0 + i, n0 + j, acc[2u * i][j]);
            store(c_base, m0 + i, n0 + 4u + j, acc[2u * i + 1u][j]);
        }
    }
}

// The CPU kernel for large products: each invocation computes BLOCK_ROWS rows × BLOCK_COLS
// columns, the rows shared by the whole workgroup. llvmpipe loads a value that differs between
// invocations one lane at a time, but a value the same on every lane with one scalar load, so
// the cost is set by how often each W load (per lane) and A load (shared) is reused: R and C
// times. The accumulators spill to the stack; that costs less than the loads they save (on
// lavapipe, 2 cores, [1576×768]·[768×3072]: 8×8 per invocation 15 GFLOP/s, 16×16 26, 32×24 37).
// Loops of at most 32 iterations are unrolled by Mesa, so both block sides stay ≤ 32.
const BLOCK_ROWS: u32 = 32u;
// Columns per invocation: 24 for nn.Linear products; 8 for attention's, whose N (64 for A·V,
// the token count for scores) would leave most of a 24-column block's lanes idle. The arrays
// are sized for the largest; Mesa unrolls the loops to BLOCK_COLS and drops the rest.
const MAX_BLOCK_COLS: u32 = 24u;
override BLOCK_COLS: u32 = 24u;

@compute @workgroup_size(8)
fn gemm_block(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let n0 = gid.x * BLOCK_COLS;
    let m0 = wid.y * BLOCK_ROWS;
    let z = gid.z;
    if (n0 >= p.n) {
        return;
    }
    let k4 = p.k / 4u;
    let a0 = base(p.a, z) / 4u;
    let w0 = base(p.w, z) / 4u;
    let lda = p.a.row / 4u;
    let ldw = p.w.row / 4u;
    var rw: array<u32, MAX_BLOCK_COLS>;
    for (var j = 0u; j < BLOCK_COLS; j++) {
        rw[j] = w0 + min(n0 + j, p.n - 1u) * ldw;
    }
    var ra: array<u32, BLOCK_ROWS>;
    for (var i = 0u; i < BLOCK_ROWS; i++) {
        ra[i] = a0 + min(m0 + i, p.m - 1u) * lda;
    }
    var acc: array<array<f32, MAX_BLOCK_COLS>, BLOCK_ROWS>;
    for (var kk = 0u; kk < k4; kk++) {
        var b: array<vec4<f32>, MAX_BLOCK_COLS>;
        for (var j = 0u; j < BLOCK_COLS; j++) {
            b[j] = load_w4(rw[j] + kk);
        }
        for (var i = 0u; i < BLOCK_ROWS; i++) {
            let x = a4[ra[i] + kk];
            for (var j = 0u; j < BLOCK_COLS; j++) {
                acc[i][j] += dot(x, b[j]);
            }
        }
    }
    // The epilogue is written for Mesa's compile time as much as for speed: every statement
    // here is unrolled BLOCK_ROWS × BLOCK_COLS times, and Mesa's time to compile grows fast with
    // per-lane loads and branches there (reading C for a residual took it from 8 s to 30 s).
    // So: bias loaded once per column, one select per element, GELU in a rolled second loop,
    // and no residual epilogue (the host adds the branch with `residual_add`).
    let c_base = base(p.c, z);
    let rows = min(BLOCK_ROWS, p.m - m0);
    let cols = min(BLOCK_COLS, p.n - n0);
    let scaled = p.epilogue == 3u;
    var col_bias: array<f32, MAX_BLOCK_COLS>;
    if (!scaled) {
        for (var j = 0u; j < BLOCK_COLS; j++) {
            col_bias[j] = bias[min(n0 + j, p.n - 1u) + p.col_offset];
        }
    }
    for (var i = 0u; i < BLOCK_ROWS; i++) {
        for (var j = 0u; j < BLOCK_COLS; j++) {
            if (i < rows && j < cols) {
                let v = select(acc[i][j] + col_bias[j], p.alpha * acc[i][j], scaled);
                c[c_base + (m0 + i) * p.c.row + n0 + j] = v;
            }
        }
    }
    if (p.epilogue == 1u || (p.keep_every != 0u && !scaled)) {
        for (var i = 0u; i < rows; i++) {
            for (var j = 0u; j < cols; j++) {
                let e = c_base + (m0 + i) * p.c.row + n0 + j;
                keep_row(m0 + i, n0 + j, c[e]);
                if (p.epilogue == 1u) {
                    c[e] = gelu(c[e]);
                }
            }
        }
    }
}

@compute @workgroup_size(8, 8)
fn gemm_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 4u;
    let m0 = gid.y * 4u;
    let z = gid.z;
    if (n0 >= p.n || m0 >= p.m) {
        return;
    }
    let k4 = p.k / 4u;
    let a0 = base(p.a, z) / 4u;
    let w0 = base(p.w, z) / 4u;
    let lda = p.a.row / 4u;
    let ldw = p.w.row / 4u;
    // Rows and columns past the edge are clamped so loads stay in bounds; `store` drops them.
    let ra0 = a0 + min(m0, p.m - 1u) * lda;
    let ra1 = a0 + min(m0 + 1u, p.m - 1u) * lda;
    let ra2 = a0 + min(m0 + 2u, p.m - 1u) * lda;
    let ra3 = a0 + min(m0 + 3u, p.m - 1u) * lda;
    let rw0 = w0 + min(n0, p.n - 1u) * ldw;
    let rw1 = w0 + min(n0 + 1u, p.n - 1u) * ldw;
    let rw2 = w0 + min(n0 + 2u, p.n - 1u) * ldw;
    let rw3 = w0 + min(n0 + 3u, p.n - 1u) * ldw;
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < k4; kk++) {
        let b0 = load_w4(rw0 + kk);
        let b1 = load_w4(rw1 + kk);
        let b2 = load_w4(rw2 + kk);
        let b3 = load_w4(rw3 + kk);
        let x0 = a4[ra0 + kk];
        acc[0] += vec4<f32>(dot(x0, b0), dot(x0, b1), dot(x0, b2), dot(x0, b3));
        let x1 = a4[ra1 + kk];
        acc[1] += vec4<f32>(dot(x1, b0), dot(x1, b1), dot(x1, b2), dot(x1, b3));
        let x2 = a4[ra2 + kk];
        acc[2] += vec4<f32>(dot(x2, b0), dot(x2, b1), dot(x2, b2), dot(x2, b3));
        let x3 = a4[ra3 + kk];
        acc[3] += vec4<f32>(dot(x3, b0), dot(x3, b1), dot(x3, b2), dot(x3, b3));
    }
    store_block(z, m0, n0, acc);
}

@compute @workgroup_size(8, 8)
fn gemm_scalar(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 4u;
    let m0 = gid.y * 4u;
    let z = gid.z;
    if (n0 >= p.n || m0 >= p.m) {
        return;
    }
    let a0 = base(p.a, z);
    let w0 = base(p.w, z);
    var rows: array<u32, 4>;
    var cols: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        rows[i] = a0 + min(m0 + i, p.m - 1u) * p.a.row;
        cols[i] = w0 + min(n0 + i, p.n - 1u) * p.w.row;
    }
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < p.k; kk++) {
        let b = vec4<f32>(
            load_w(cols[0] + kk),
            load_w(cols[1] + kk),
            load_w(cols[2] + kk),
            load_w(cols[3] + kk),
        );
        for (var i = 0u; i < 4u; i++) {
            acc[i] += a1[rows[i] + kk] * b;
        }
    }
    store_block(z, m0, n0, acc);
}

// The same product for real GPUs: a 64×64 tile of C per workgroup of 16×16 invocations, each
// computing 4×4 from registers, with A and W staged through workgroup memory TILE_K columns at a
// time so that every global element is read once per workgroup instead of once per invocation.
// Loads are scalar and bounds-checked, so any K, stride or offset works. Tiles and products are
// `half`: f16 with --precision f16 on adapters with SHADER_F16 (half the workgroup memory,
// packed f16 multiplies), else f32; the sums are f32 either way.

const TILE_MN: u32 = 64u;
const TILE_K: u32 = 16u;
// TILE_K × TILE_MN each, k-major, so that the inner loop reads 4 consecutive rows or columns.
var<workgroup> a_tile: array<half, 1024>;
var<workgroup> w_tile: array<half, 1024>;

@compute @workgroup_size(16, 16)
fn gemm_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let acc = tiled_sums(wid, lid, wid.z, 0u, p.k);
    store_block(wid.z, wid.y * TILE_MN + lid.y * 4u, wid.x * TILE_MN + lid.x * 4u, acc);
}

// A trial kernel (AGCAM_TRIAL_KERNELS=splitk, src/kernels/gemm.rs): split-K for nn.Linear
// products whose 64×64 grid is too small to fill a large GPU (batch 1: ViT-B's proj and fc2 make
// 48 tiles, fc2 with K = 3072 in each). Workgroup z sums K from z · split_len, at most split_len
// terms, into its own slice of `partial`; gemm_split_reduce adds the slices and applies the
// epilogue. Not selected by default until measured.
@compute @workgroup_size(16, 16)
fn gemm_tiled_split(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let k_begin = wid.z * p.split_len;
    let acc = tiled_sums(wid, lid, 0u, k_begin, min(k_begin + p.split_len, p.k));
    let m0 = wid.y * TILE_MN + lid.y * 4u;
    let n0 = wid.x * TILE_MN + lid.x * 4u;
    let slice = wid.z * p.m * p.n;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            if (m0 + i < p.m && n0 + j < p.n) {
                partial[slice + (m0 + i) * p.n + n0 + j] = acc[i][j];
            }
        }
    }
}

// C = epilogue(Σ slices of `partial`), one invocation per element of C.
@compute @workgroup_size(64)
fn gemm_split_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.m * p.n) {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += partial[s * p.m * p.n + i];
    }
    store(base(p.c, 0u), i / p.n, i % p.n, sum);
}

// The sums of gemm_tiled's 4×4 block for this invocation over terms k_begin..k_end of matrix z.
fn tiled_sums(
    wid: vec3<u32>,
    lid: vec3<u32>,
    z: u32,
    k_begin: u32,
    k_end: u32,
) -> array<vec4<f32>, 4> {
    let m_base = wid.y * TILE_MN;
    let n_base = wid.x * TILE_MN;
    let a0 = base(p.a, z);
    let w0 = base(p.w, z);
    let t = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        // 256 invocations fill TILE_K × 64 values of each tile, consecutive invocations
        // reading consecutive elements: along K, or along N for BACKWARD's W.
        for (var e = t; e < TILE_K * TILE_MN; e += 256u) {
            let r = e / TILE_K;
            let kk = e % TILE_K;
            let k = k0 + kk;
            let m = m_base + r;
            var av = 0.0;
            if (m < p.m && k < k_end) {
                av = a1[a0 + m * p.a.row + k];
                if (BACKWARD) {
                    av *= scale[k];
                }
            }
            a_tile[kk * TILE_MN + r] = half(av);
            let wr = select(r, e % TILE_MN, BACKWARD);
            let wk = select(kk, e / TILE_MN, BACKWARD);
            let n = n_base + wr;
            let kw = k0 + wk;
            var wv = 0.0;
            if (n < p.n && kw < k_end) {
                wv = load_w(w0 + select(n * p.w.row + kw, kw * p.w.row + n, BACKWARD));
            }
            w_tile[wk * TILE_MN + wr] = half(wv);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let ao = kk * TILE_MN + lid.y * 4u;
            let wo = kk * TILE_MN + lid.x * 4u;
            let b = vec4<half>(w_tile[wo], w_tile[wo + 1u], w_tile[wo + 2u], w_tile[wo + 3u]);
            acc[0] += vec4<f32>(a_tile[ao] * b);
            acc[1] += vec4<f32>(a_tile[ao + 1u] * b);
            acc[2] += vec4<f32>(a_tile[ao + 2u] * b);
            acc[3] += vec4<f32>(a_tile[ao + 3u] * b);
        }
        workgroupBarrier();
    }
    return acc;
}

// The GPU product for large matrices (see the host for when): a 128×128 tile of C per workgroup
// of 16×16 invocations, each computing 8×8, rows {4·ty + i, 64 + 4·ty + i} and columns
// {4·tx + j, 64 + 4·tx + j} for i, j < 4. The tiles sit in workgroup memory k-major as vec4, so
// each k costs an invocation four vec4 reads for 64 multiply-adds (gemm_tiled: eight scalar
// reads for 16). Always f32: on an H200, f16 tiles and products (summed in f16 over 8 terms)
// made it 1.45× slower, the conversions costing more than the halved traffic saved.
const BIG_MN: u32 = 128u;
const BIG_K: u32 = 8u;
// A tile row in vec4, plus one of padding: the transposed stores of a warp then fall into
// distinct banks (rows 4 k apart land 16 banks apart).
const BIG_ROW4: u32 = 33u;
const BIG_TILE4: u32 = 264u;
// Two stages of each tile: PREFETCH alternates between them.
var<workgroup> a_big: array<vec4<f32>, 528>;
var<workgroup> w_big: array<vec4<f32>, 528>;
// A trial (AGCAM_TRIAL_KERNELS=prefetch128, src/kernels/gemm.rs): software pipelining. The
// global loads of the next K step are issued before the products of this one, so their latency
// hides behind the arithmetic, and the two stages of workgroup memory need one barrier per
// step instead of two. Not selected by default until measured.
override PREFETCH: bool = false;

// Four consecutive k of row `row` (a matrix row start) from A or W, zero past the matrix.
fn big_a4(row: u32, live: bool, k: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (live) {
        if (k < p.k) { v.x = a1[row + k]; }
        if (k + 1u < p.k) { v.y = a1[row + k + 1u]; }
        if (k + 2u < p.k) { v.z = a1[row + k + 2u]; }
        if (k + 3u < p.k) { v.w = a1[row + k + 3u]; }
    }
    return v;
}

fn big_w4(row: u32, live: bool, k: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (live) {
        if (k < p.k) { v.x = load_w(row + k); }
        if (k + 1u < p.k) { v.y = load_w(row + k + 1u); }
        if (k + 2u < p.k) { v.z = load_w(row + k + 2u); }
        if (k + 3u < p.k) { v.w = load_w(row + k + 3u); }
    }
    return v;
}

@compute @workgroup_size(16, 16)
fn gemm_tiled128(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let z = wid.z;
    let m_base = wid.y * BIG_MN;
    let n_base = wid.x * BIG_MN;
    let t = lid.y * 16u + lid.x;
    // Each invocation stages 4 consecutive k of one row of A and one row of W per step.
    let lr = t / 2u;
    let lk = (t % 2u) * 4u;
    let am = m_base + lr;
    let wn = n_base + lr;
    let a_live = am < p.m;
    let w_live = wn < p.n;
    let a_row = base(p.a, z) + min(am, p.m - 1u) * p.a.row;
    let w_row = base(p.w, z) + min(wn, p.n - 1u) * p.w.row;
    // The sums live in `part`, indexed only by loop counters that unroll, so they stay in
    // registers; the store loop below indexes `acc` with computed indices. Summing straight into
    // `acc` put the sums in memory and made the kernel 8× slower on the H200.
    var part: array<vec4<f32>, 16>;
    var next_a = vec4<f32>(0.0);
    var next_w = vec4<f32>(0.0);
    if (PREFETCH) {
        next_a = big_a4(a_row, a_live, lk);
        next_w = big_w4(w_row, w_live, lk);
    }
    var stage = 0u;
    for (var k0 = 0u; k0 < p.k; k0 += BIG_K) {
        var av = next_a;
        var wv = next_w;
        if (!PREFETCH) {
            av = big_a4(a_row, a_live, k0 + lk);
            wv = big_w4(w_row, w_live, k0 + lk);
        }
        let s0 = stage * BIG_TILE4 + lk * BIG_ROW4 + lr / 4u;
        a_big[s0][lr % 4u] = av.x;
        a_big[s0 + BIG_ROW4][lr % 4u] = av.y;
        a_big[s0 + 2u * BIG_ROW4][lr % 4u] = av.z;
        a_big[s0 + 3u * BIG_ROW4][lr % 4u] = av.w;
        w_big[s0][lr % 4u] = wv.x;
        w_big[s0 + BIG_ROW4][lr % 4u] = wv.y;
        w_big[s0 + 2u * BIG_ROW4][lr % 4u] = wv.z;
        w_big[s0 + 3u * BIG_ROW4][lr % 4u] = wv.w;
        workgroupBarrier();
        if (PREFETCH) {
            next_a = big_a4(a_row, a_live, k0 + BIG_K + lk);
            next_w = big_w4(w_row, w_live, k0 + BIG_K + lk);
        }
        let s = stage * BIG_TILE4;
        for (var kk = 0u; kk < BIG_K; kk++) {
            let a_lo = a_big[s + kk * BIG_ROW4 + lid.y];
            let a_hi = a_big[s + kk * BIG_ROW4 + 16u + lid.y];
            let w_lo = w_big[s + kk * BIG_ROW4 + lid.x];
            let w_hi = w_big[s + kk * BIG_ROW4 + 16u + lid.x];
            for (var i = 0u; i < 4u; i++) {
                let lo = vec4<f32>(a_lo[i]);
                let hi = vec4<f32>(a_hi[i]);
                part[2u * i] = fma(lo, w_lo, part[2u * i]);
                part[2u * i + 1u] = fma(lo, w_hi, part[2u * i + 1u]);
                part[8u + 2u * i] = fma(hi, w_lo, part[8u + 2u * i]);
                part[9u + 2u * i] = fma(hi, w_hi, part[9u + 2u * i]);
            }
        }
        // With two stages, the next step writes the other one, which every invocation finished
        // reading before this step's barrier; with one, wait until all have read this one.
        if (PREFETCH) {
            stage = 1u - stage;
        } else {
            workgroupBarrier();
        }
    }
    var acc: array<vec4<f32>, 16>;
    for (var q = 0u; q < 16u; q++) {
        acc[q] = part[q];
    }
    let c_base = base(p.c, z);
    for (var i = 0u; i < 8u; i++) {
        let row = m_base + (i / 4u) * 64u + 4u * lid.y + i % 4u;
        for (var j = 0u; j < 8u; j++) {
            let col = n_base + (j / 4u) * 64u + 4u * lid.x + j % 4u;
            store(c_base, row, col, acc[2u * i + j / 4u][j % 4u]);
        }
    }
}

// C[row] += scale ⊙ A[row] over the views (n columns from col_offset): the residual add that
// follows gemm_block, whose epilogue does not read C. Rows past the 65535-workgroup limit of y
// are covered by striding.
@compute @workgroup_size(64)
fn residual_add(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let col = gid.x;
    if (col >= p.n) {
        return;
    }
    let s = scale[col + p.col_offset];
    for (var row = gid.y; row < p.m; row += groups.y) {
        let i = p.c.offset + row * p.c.row + col;
        c[i] += s * a1[p.a.offset + row * p.a.row + col];
    }
}
