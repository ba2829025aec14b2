// Matrix-vector products for decoding (up to MV_MAX_TOKENS tokens), after llama.cpp's
// mul_mat_vec_q (ggml-cuda/mmvq.cu) and its per-type dot products (vecdotq.cuh): the
// activations are quantized once to int8 per 32 values, and each weight block is multiplied
// with __dp4a, four weights per instruction, on the block's own integer levels.
//
// One launch computes the rows of up to three matrices of one type ("parts"). Its prologue
// (every block alike) reads the f32 input rows, applies the RMS norm when a norm weight is
// given, and quantizes them into shared memory; float weights keep f32 inputs there. Each
// warp then takes work items of two rows (two dot products per token), and the epilogue writes
// them as the part's kind says: stored, added to the residual stream, rotated (RoPE pairs i and
// i + head_dim/2 of one head are one item) and written to the f16 KV cache, or combined by
// SwiGLU. Norm, bias, RoPE and the cache store therefore cost no launches of their own.
//
// Lanes within a warp take consecutive pieces of consecutive blocks of a row (LPU lanes per
// block), so a warp's loads cover a contiguous run of the row. Table types (IQ4_NL, NF4) look
// their 4-bit indices up in registers with __byte_perm (llama.cpp's get_int_from_table_16);
// there is no memory access for the table.

#define MV_MAX_TOKENS 8
#define MV_WARPS 4

// What a part's epilogue does with the two dot products of an item.
#define MV_STORE 0       // out[t][r] = dot + bias
#define MV_ADD 1         // out[t][r] += dot + bias (the residual stream)
#define MV_ROPE 2        // rows (r, r + hd/2) of a head rotated, stored f32
#define MV_ROPE_CACHE 3  // the same rotation, stored f16 in the cache at the token's position
#define MV_CACHE 4       // stored f16 in the cache at the token's position
#define MV_SWIGLU 5      // item i: gate row i (this part), up row i (the next): silu(g) * u
#define MV_SWIGLU_UP 6   // out[t][r] = silu(out[t][r]) * (dot + bias): gate computed before

struct MvPart {
    const u8* w;
    const float* bias;
    void* out;
    long long row_bytes;
    int rows;
    int kind;
    int items;
    int out_stride;
};

struct MvParams {
    const float* x;
    const float* norm;
    const int* step;
    const float* rope;
    int x_stride;
    int k;
    int n;
    float eps;
    int head_dim;
    int n_parts;
    int items_total;
    int t0;  // the first token's index in the pass (its position is Step.pos0 + t0 + t)
    MvPart parts[3];
};
static_assert(sizeof(MvPart) == 48, "MvPart layout is shared with matvec.rs");
static_assert(sizeof(MvParams) == 208, "MvParams layout is shared with matvec.rs");

// One token's quantized activations: levels (4 per int), and per 32 values the scale d and
// s = d * (sum of the levels).
struct Act {
    const int* q;
    const float* d;
    const float* s;
};

// 16 int8 levels in four words; x = levels of the low nibbles of the 4 bytes of q4, y = of the
// high nibbles. __byte_perm selects with 3-bit indices: look up in both halves of the table,
// then pick per byte by the index's fourth bit.
__device__ __forceinline__ int2 lookup16(u32 q4, u32 t0, u32 t1, u32 t2, u32 t3) {
    u32 tmp[2];
    const u32 sel = 0x32103210 | ((q4 & 0x88888888) >> 1);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const u32 shift = 16 * i;
        const u32 lo = __byte_perm(t0, t1, q4 >> shift);
        const u32 hi = __byte_perm(t2, t3, q4 >> shift);
        tmp[i] = __byte_perm(lo, hi, sel >> shift);
    }
    return make_int2((int)__byte_perm(tmp[0], tmp[1], 0x6420), (int)__byte_perm(tmp[0], tmp[1], 0x7531));
}

#define PACK4(a, b, c, d) \
    ((u32)(u8)(a) | ((u32)(u8)(b) << 8) | ((u32)(u8)(c) << 16) | ((u32)(u8)(d) << 24))

// Fifth bits b4 (4 bits) into bit 4 of each of 4 bytes.
__device__ __forceinline__ u32 spread4(u32 b4) {
    return ((b4 & 1) << 4) | ((b4 & 2) << 11) | ((b4 & 4) << 18) | ((b4 & 8) << 25);
}

// Per type: QK weights per block, BYTES per block, LPU lanes per block, and the lane's part of
// the block's dot product with one token's activations (`a` points at the block's first chunk).
template <class T> struct Mv;

// Q4_0: 2 lanes per block, each two ints of nibbles (16 weights): w = d (q - 8).
template <> struct Mv<TQ4_0> {
    static constexpr int QK = 32, BYTES = 18, LPU = 2;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const int i = 2 * sub;
        const u32 v0 = ld32_2(b + 2 + 4 * i), v1 = ld32_2(b + 6 + 4 * i);
        int s = __dp4a((int)(v0 & 0x0F0F0F0F), a.q[i], 0);
        s = __dp4a((int)((v0 >> 4) & 0x0F0F0F0F), a.q[i + 4], s);
        s = __dp4a((int)(v1 & 0x0F0F0F0F), a.q[i + 1], s);
        s = __dp4a((int)((v1 >> 4) & 0x0F0F0F0F), a.q[i + 5], s);
        // Each of the two lanes subtracts half of 8 * (sum of the activations).
        return h2f(ld16(b)) * (a.d[0] * (float)s - 4.0f * a.s[0]);
    }
};

// Q4_1: w = d q + m.
template <> struct Mv<TQ4_1> {
    static constexpr int QK = 32, BYTES = 20, LPU = 2;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const int i = 2 * sub;
        const u32 v0 = ld32_4(b + 4 + 4 * i), v1 = ld32_4(b + 8 + 4 * i);
        int s = __dp4a((int)(v0 & 0x0F0F0F0F), a.q[i], 0);
        s = __dp4a((int)((v0 >> 4) & 0x0F0F0F0F), a.q[i + 4], s);
        s = __dp4a((int)(v1 & 0x0F0F0F0F), a.q[i + 1], s);
        s = __dp4a((int)((v1 >> 4) & 0x0F0F0F0F), a.q[i + 5], s);
        return h2f(ld16(b)) * a.d[0] * (float)s + h2f(ld16(b + 2)) * a.s[0] * 0.5f;
    }
};

// Q5_0: nibbles plus fifth bits from qh (bit j: weight j): w = d (q - 16).
template <> struct Mv<TQ5_0> {
    static constexpr int QK = 32, BYTES = 22, LPU = 2;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const u32 qh = ld32_2(b + 2);
        int s = 0;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int i = 2 * sub + k;
            const u32 v = ld32_2(b + 6 + 4 * i);
            const u32 lo = (v & 0x0F0F0F0F) | spread4((qh >> (4 * i)) & 0xF);
            const u32 hi = ((v >> 4) & 0x0F0F0F0F) | spread4((qh >> (16 + 4 * i)) & 0xF);
            s = __dp4a((int)lo, a.q[i], s);
            s = __dp4a((int)hi, a.q[i + 4], s);
        }
        return h2f(ld16(b)) * (a.d[0] * (float)s - 8.0f * a.s[0]);
    }
};

// Q5_1: w = d q + m with fifth bits.
template <> struct Mv<TQ5_1> {
    static constexpr int QK = 32, BYTES = 24, LPU = 2;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const u32 qh = ld32_4(b + 4);
        int s = 0;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int i = 2 * sub + k;
            const u32 v = ld32_4(b + 8 + 4 * i);
            const u32 lo = (v & 0x0F0F0F0F) | spread4((qh >> (4 * i)) & 0xF);
            const u32 hi = ((v >> 4) & 0x0F0F0F0F) | spread4((qh >> (16 + 4 * i)) & 0xF);
            s = __dp4a((int)lo, a.q[i], s);
            s = __dp4a((int)hi, a.q[i + 4], s);
        }
        return h2f(ld16(b)) * a.d[0] * (float)s + h2f(ld16(b + 2)) * a.s[0] * 0.5f;
    }
};

// Q8_0: 4 lanes per block, two ints of levels each.
template <> struct Mv<TQ8_0> {
    static constexpr int QK = 32, BYTES = 34, LPU = 4;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const int i = 2 * sub;
        int s = __dp4a((int)ld32_2(b + 2 + 4 * i), a.q[i], 0);
        s = __dp4a((int)ld32_2(b + 6 + 4 * i), a.q[i + 1], s);
        return h2f(ld16(b)) * a.d[0] * (float)s;
    }
};

// IQ4_NL: Q4_0's nibble layout, levels from ggml's kvalues_iq4nl.
template <> struct Mv<TIQ4_NL> {
    static constexpr int QK = 32, BYTES = 18, LPU = 2;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const u32 t0 = PACK4(-127, -104, -83, -65), t1 = PACK4(-49, -35, -22, -10);
        const u32 t2 = PACK4(1, 13, 25, 38), t3 = PACK4(53, 69, 89, 113);
        const int i = 2 * sub;
        const int2 x0 = lookup16(ld32_2(b + 2 + 4 * i), t0, t1, t2, t3);
        const int2 x1 = lookup16(ld32_2(b + 6 + 4 * i), t0, t1, t2, t3);
        int s = __dp4a(x0.x, a.q[i], 0);
        s = __dp4a(x0.y, a.q[i + 4], s);
        s = __dp4a(x1.x, a.q[i + 1], s);
        s = __dp4a(x1.y, a.q[i + 5], s);
        return h2f(ld16(b)) * a.d[0] * (float)s;
    }
};

// NF4 (64 weights per block; byte j: weight j low, j + 32 high): the levels as int8
// round(127 * level), as the CPU's dot product takes them, the product rescaled by 1/127.
template <> struct Mv<TNF4> {
    static constexpr int QK = 64, BYTES = 34, LPU = 4;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const u32 t0 = PACK4(-127, -88, -67, -50), t1 = PACK4(-36, -23, -12, 0);
        const u32 t2 = PACK4(10, 20, 31, 43), t3 = PACK4(56, 71, 92, 127);
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int m = 2 * sub + k;
            const int2 x = lookup16(ld32_2(b + 2 + 4 * m), t0, t1, t2, t3);
            s0 = __dp4a(x.x, a.q[m], s0);
            s1 = __dp4a(x.y, a.q[8 + m], s1);
        }
        return h2f(ld16(b)) * (1.0f / 127.0f) * (a.d[0] * (float)s0 + a.d[1] * (float)s1);
    }
};

// Q4_K: 16 lanes per super-block of 256; lane: group g of 32 bytes (sub-blocks 2g low
// nibbles, 2g + 1 high), 8 of its bytes. w = d sc q - dmin m per sub-block.
template <> struct Mv<TQ4_K> {
    static constexpr int QK = 256, BYTES = 144, LPU = 16;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const int g = sub >> 2, m = 2 * (sub & 3);
        const u32 sc[3] = {ld32_4(b + 4), ld32_4(b + 8), ld32_4(b + 12)};
        int sc0, mn0, sc1, mn1;
        k_scale_min(2 * g, sc, &sc0, &mn0);
        k_scale_min(2 * g + 1, sc, &sc1, &mn1);
        const u32 v0 = ld32_4(b + 16 + 32 * g + 4 * m), v1 = ld32_4(b + 20 + 32 * g + 4 * m);
        const int* q0 = a.q + 16 * g;  // chunk 2g
        const int* q1 = q0 + 8;        // chunk 2g + 1
        int s0 = __dp4a((int)(v0 & 0x0F0F0F0F), q0[m], 0);
        s0 = __dp4a((int)(v1 & 0x0F0F0F0F), q0[m + 1], s0);
        int s1 = __dp4a((int)((v0 >> 4) & 0x0F0F0F0F), q1[m], 0);
        s1 = __dp4a((int)((v1 >> 4) & 0x0F0F0F0F), q1[m + 1], s1);
        const float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
        // Four lanes share each chunk: each subtracts a quarter of its minimum term.
        return d * ((float)sc0 * a.d[2 * g] * (float)s0 + (float)sc1 * a.d[2 * g + 1] * (float)s1) -
               0.25f * dmin * ((float)mn0 * a.s[2 * g] + (float)mn1 * a.s[2 * g + 1]);
    }
};

// Q5_K: Q4_K plus qh (bit j of byte l: fifth bit of weight l of sub-block j).
template <> struct Mv<TQ5_K> {
    static constexpr int QK = 256, BYTES = 176, LPU = 16;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const int g = sub >> 2, m = 2 * (sub & 3);
        const u32 sc[3] = {ld32_4(b + 4), ld32_4(b + 8), ld32_4(b + 12)};
        int sc0, mn0, sc1, mn1;
        k_scale_min(2 * g, sc, &sc0, &mn0);
        k_scale_min(2 * g + 1, sc, &sc1, &mn1);
        const int* q0 = a.q + 16 * g;
        const int* q1 = q0 + 8;
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const u32 v = ld32_4(b + 48 + 32 * g + 4 * (m + k));
            const u32 h = ld32_4(b + 16 + 4 * (m + k));
            const u32 lo = (v & 0x0F0F0F0F) | (((h >> (2 * g)) & 0x01010101) << 4);
            const u32 hi = ((v >> 4) & 0x0F0F0F0F) | (((h >> (2 * g + 1)) & 0x01010101) << 4);
            s0 = __dp4a((int)lo, q0[m + k], s0);
            s1 = __dp4a((int)hi, q1[m + k], s1);
        }
        const float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
        return d * ((float)sc0 * a.d[2 * g] * (float)s0 + (float)sc1 * a.d[2 * g + 1] * (float)s1) -
               0.25f * dmin * ((float)mn0 * a.s[2 * g] + (float)mn1 * a.s[2 * g + 1]);
    }
};

// Q6_K: 16 lanes per super-block; lane: half n (128 weights), positions l..l+3 of its four
// chunks (ql low/high nibbles at l and l + 32, two bits each of qh at l), int8 scales per 16.
template <> struct Mv<TQ6_K> {
    static constexpr int QK = 256, BYTES = 210, LPU = 16;
    static __device__ __forceinline__ float dot(const u8* b, int sub, Act a) {
        const int n = sub >> 3, ls = sub & 7, is = ls >> 2;
        const u8* ql = b + 64 * n + 4 * ls;
        const u32 qla = ld32_2(ql), qlb = ld32_2(ql + 32);
        const u32 qh = ld32_2(b + 128 + 32 * n + 4 * ls);
        const i8* sc = (const i8*)(b + 192 + 8 * n) + is;
        const u32 v[4] = {
            (qla & 0x0F0F0F0F) | ((qh & 0x03030303) << 4),
            (qlb & 0x0F0F0F0F) | (((qh >> 2) & 0x03030303) << 4),
            ((qla >> 4) & 0x0F0F0F0F) | (((qh >> 4) & 0x03030303) << 4),
            ((qlb >> 4) & 0x0F0F0F0F) | (((qh >> 6) & 0x03030303) << 4),
        };
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const int c = 4 * n + k;
            const int s = __dp4a((int)__vsubss4(v[k], 0x20202020), a.q[8 * c + ls], 0);
            sum += a.d[c] * (float)sc[2 * k] * (float)s;
        }
        return h2f(ld16(b + 208)) * sum;
    }
};

// Float weights: each lane 8 (16-bit) or 4 (f32) consecutive weights per step against f32
// inputs in shared memory.
template <class T> struct MvF;
template <> struct MvF<TF16> {
    static constexpr int PER = 8;
    static __device__ __forceinline__ float dot(const u8* row, int i, const float* x) {
        const uint4 w = *(const uint4*)(row + 2 * (size_t)i);
        const float4 a = *(const float4*)(x + i), c = *(const float4*)(x + i + 4);
        float s = h2f((u16)(w.x & 0xffff)) * a.x;
        s = fmaf(h2f((u16)(w.x >> 16)), a.y, s);
        s = fmaf(h2f((u16)(w.y & 0xffff)), a.z, s);
        s = fmaf(h2f((u16)(w.y >> 16)), a.w, s);
        s = fmaf(h2f((u16)(w.z & 0xffff)), c.x, s);
        s = fmaf(h2f((u16)(w.z >> 16)), c.y, s);
        s = fmaf(h2f((u16)(w.w & 0xffff)), c.z, s);
        return fmaf(h2f((u16)(w.w >> 16)), c.w, s);
    }
};
template <> struct MvF<TBF16> {
    static constexpr int PER = 8;
    static __device__ __forceinline__ float dot(const u8* row, int i, const float* x) {
        const uint4 w = *(const uint4*)(row + 2 * (size_t)i);
        const float4 a = *(const float4*)(x + i), c = *(const float4*)(x + i + 4);
        float s = bf2f((u16)(w.x & 0xffff)) * a.x;
        s = fmaf(bf2f((u16)(w.x >> 16)), a.y, s);
        s = fmaf(bf2f((u16)(w.y & 0xffff)), a.z, s);
        s = fmaf(bf2f((u16)(w.y >> 16)), a.w, s);
        s = fmaf(bf2f((u16)(w.z & 0xffff)), c.x, s);
        s = fmaf(bf2f((u16)(w.z >> 16)), c.y, s);
        s = fmaf(bf2f((u16)(w.w & 0xffff)), c.z, s);
        return fmaf(bf2f((u16)(w.w >> 16)), c.w, s);
    }
};
template <> struct MvF<TF32> {
    static constexpr int PER = 4;
    static __device__ __forceinline__ float dot(const u8* row, int i, const float* x) {
        const float4 w = *(const float4*)(row + 4 * (size_t)i);
        const float4 a = *(const float4*)(x + i);
        return fmaf(w.w, a.w, fmaf(w.z, a.z, fmaf(w.y, a.y, w.x * a.x)));
    }
};

__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }

// The normalization factor of token t's input row: 1/rms with a norm weight, else 1.
__device__ __forceinline__ float row_scale(const MvParams& p, int t, float* red) {
    if (!p.norm) return 1.0f;
    const float* x = p.x + (size_t)t * p.x_stride;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < p.k; i += blockDim.x) ss = fmaf(x[i], x[i], ss);
    ss = block_sum(ss, red);
    return rsqrtf(ss / (float)p.k + p.eps);
}

// Quantizes the n input rows (normalized when p.norm) into shared memory: levels, then per 32
// values d = amax / 127 and s = d * sum(levels) (ggml's block_q8_1).
__device__ void mv_quantize(const MvParams& p, u8* sm, float* red) {
    const int k = p.k, chunks = k >> 5;
    i8* q = (i8*)sm;
    float* d = (float*)(sm + (size_t)p.n * k);
    float* s = d + (size_t)p.n * chunks;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int t = 0; t < p.n; t++) {
        const float inv = row_scale(p, t, red);
        const float* x = p.x + (size_t)t * p.x_stride;
        for (int c = warp; c < chunks; c += nw) {
            const int i = 32 * c + lane;
            float v = x[i] * inv;
            if (p.norm) v *= p.norm[i];
            const float amax = warp_max(fabsf(v));
            const float dd = amax / 127.0f;
            const int l = amax == 0.0f ? 0 : (int)roundf(v / dd);
            const int sum = warp_sum_i(l);
            q[(size_t)t * k + i] = (i8)l;
            if (lane == 0) {
                d[t * chunks + c] = dd;
                s[t * chunks + c] = dd * (float)sum;
            }
        }
    }
    __syncthreads();
}

// Normalized f32 inputs in shared memory, for float weights.
__device__ void mv_floats(const MvParams& p, float* xs, float* red) {
    for (int t = 0; t < p.n; t++) {
        const float inv = row_scale(p, t, red);
        const float* x = p.x + (size_t)t * p.x_stride;
        for (int i = threadIdx.x; i < p.k; i += blockDim.x) {
            float v = x[i] * inv;
            if (p.norm) v *= p.norm[i];
            xs[(size_t)t * p.k + i] = v;
        }
    }
    __syncthreads();
}

// Which two rows (of which parts) item `it` computes; returns the part index.
__device__ __forceinline__ int mv_item(const MvParams& p, int it, int* ra, int* rb, int* pb) {
    int pi = 0;
    while (pi < p.n_parts - 1 && it >= p.parts[pi].items) {
        it -= p.parts[pi].items;
        pi++;
    }
    const MvPart& pt = p.parts[pi];
    *pb = pi;
    if (pt.kind == MV_ROPE || pt.kind == MV_ROPE_CACHE) {
        const int half = p.head_dim >> 1;
        *ra = (it / half) * p.head_dim + it % half;
        *rb = *ra + half;
    } else if (pt.kind == MV_SWIGLU) {
        *ra = it;
        *rb = it;
        *pb = pi + 1;
    } else {
        *ra = 2 * it;
        *rb = 2 * it + 1;
    }
    return pi;
}

__device__ __forceinline__ void mv_epilogue(const MvParams& p, int pa, int pb, int ra, int rb,
                                            int t, float va, float vb) {
    const MvPart& A = p.parts[pa];
    const MvPart& B = p.parts[pb];
    const bool has_b = rb < B.rows;
    const float ba = A.bias ? A.bias[ra] : 0.0f;
    const float bb = (has_b && B.bias) ? B.bias[rb] : 0.0f;
    va += ba;
    vb += bb;
    const int pos = p.step[0] + p.t0 + t;
    switch (A.kind) {
    case MV_STORE: {
        float* o = (float*)A.out + (size_t)t * A.out_stride;
        o[ra] = va;
        if (has_b) o[rb] = vb;
        break;
    }
    case MV_ADD: {
        float* o = (float*)A.out + (size_t)t * A.out_stride;
        o[ra] += va;
        if (has_b) o[rb] += vb;
        break;
    }
    case MV_ROPE:
    case MV_ROPE_CACHE: {
        const int half = p.head_dim >> 1;
        const float2 cs = ((const float2*)p.rope)[(size_t)pos * half + ra % p.head_dim];
        const float x0 = va * cs.x - vb * cs.y, x1 = va * cs.y + vb * cs.x;
        if (A.kind == MV_ROPE) {
            float* o = (float*)A.out + (size_t)t * A.out_stride;
            o[ra] = x0;
            o[rb] = x1;
        } else {
            u16* o = (u16*)A.out + (size_t)pos * A.rows;
            o[ra] = f2h(x0);
            o[rb] = f2h(x1);
        }
        break;
    }
    case MV_CACHE: {
        u16* o = (u16*)A.out + (size_t)pos * A.rows;
        o[ra] = f2h(va);
        if (has_b) o[rb] = f2h(vb);
        break;
    }
    case MV_SWIGLU: {
        float* o = (float*)A.out + (size_t)t * A.out_stride;
        o[ra] = silu_f(va) * vb;
        break;
    }
    case MV_SWIGLU_UP: {
        float* o = (float*)A.out + (size_t)t * A.out_stride;
        o[ra] = silu_f(o[ra]) * va;
        if (has_b) o[rb] = silu_f(o[rb]) * vb;
        break;
    }
    }
}

// Reduces the two rows' sums of every token over the warp and lets lane 0 write them.
template <int NT>
__device__ __forceinline__ void mv_finish(const MvParams& p, int pa, int pb, int ra, int rb,
                                          float (&sa)[NT], float (&sb)[NT]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t < p.n) {
            const float va = warp_sum(sa[t]), vb = warp_sum(sb[t]);
            if (lane == 0) mv_epilogue(p, pa, pb, ra, rb, t, va, vb);
        }
    }
}

template <class T, int NT> __device__ void mv_quant_impl(const MvParams& p) {
    extern __shared__ __align__(16) u8 sm[];
    __shared__ float red[32];
    mv_quantize(p, sm, red);
    const int k = p.k, chunks = k >> 5;
    const int* q = (const int*)sm;
    const float* d = (const float*)(sm + (size_t)p.n * k);
    const float* s = d + (size_t)p.n * chunks;
    constexpr int LPU = Mv<T>::LPU, UPI = 32 / LPU, CPU = Mv<T>::QK / 32;
    const int lane = threadIdx.x & 31, sub = lane % LPU;
    const int units = k / Mv<T>::QK;
    const int warps = gridDim.x * MV_WARPS;
    for (int it = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); it < p.items_total; it += warps) {
        int ra, rb, pb;
        const int pa = mv_item(p, it, &ra, &rb, &pb);
        const MvPart& A = p.parts[pa];
        const MvPart& B = p.parts[pb];
        const bool has_b = rb < B.rows;
        const u8* wa = A.w + (size_t)ra * A.row_bytes;
        const u8* wb = B.w + (size_t)(has_b ? rb : ra) * B.row_bytes;
        float sa[NT], sb[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) sa[t] = sb[t] = 0.0f;
        for (int u = lane / LPU; u < units; u += UPI) {
            const u8* ba = wa + (size_t)u * Mv<T>::BYTES;
            const u8* bb = wb + (size_t)u * Mv<T>::BYTES;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < p.n) {
                    const int c0 = t * chunks + u * CPU;
                    const Act a = {q + (size_t)c0 * 8, d + c0, s + c0};
                    sa[t] += Mv<T>::dot(ba, sub, a);
                    if (has_b) sb[t] += Mv<T>::dot(bb, sub, a);
                }
            }
        }
        mv_finish<NT>(p, pa, pb, ra, rb, sa, sb);
    }
}

template <class T, int NT> __device__ void mv_float_impl(const MvParams& p) {
    extern __shared__ __align__(16) u8 sm[];
    __shared__ float red[32];
    float* xs = (float*)sm;
    mv_floats(p, xs, red);
    constexpr int PER = MvF<T>::PER;
    const int lane = threadIdx.x & 31;
    const int warps = gridDim.x * MV_WARPS;
    for (int it = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); it < p.items_total; it += warps) {
        int ra, rb, pb;
        const int pa = mv_item(p, it, &ra, &rb, &pb);
        const MvPart& A = p.parts[pa];
        const MvPart& B = p.parts[pb];
        const bool has_b = rb < B.rows;
        const u8* wa = A.w + (size_t)ra * A.row_bytes;
        const u8* wb = B.w + (size_t)(has_b ? rb : ra) * B.row_bytes;
        float sa[NT], sb[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) sa[t] = sb[t] = 0.0f;
        for (int i = lane * PER; i < p.k; i += 32 * PER) {
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < p.n) {
                    const float* x = xs + (size_t)t * p.k;
                    sa[t] += MvF<T>::dot(wa, i, x);
                    if (has_b) sb[t] += MvF<T>::dot(wb, i, x);
                }
            }
        }
        mv_finish<NT>(p, pa, pb, ra, rb, sa, sb);
    }
}

#define MV_QUANT_KERNELS(T, name)                                                                 \
    extern "C" __global__ void __launch_bounds__(128) mv1_##name(const MvParams p) {              \
        mv_quant_impl<T, 1>(p);                                                                   \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) mv8_##name(const MvParams p) {              \
        mv_quant_impl<T, MV_MAX_TOKENS>(p);                                                       \
    }
#define MV_FLOAT_KERNELS(T, name)                                                                 \
    extern "C" __global__ void __launch_bounds__(128) mv1_##name(const MvParams p) {              \
        mv_float_impl<T, 1>(p);                                                                   \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) mv8_##name(const MvParams p) {              \
        mv_float_impl<T, MV_MAX_TOKENS>(p);                                                       \
    }

MV_FLOAT_KERNELS(TF32, f32)
MV_FLOAT_KERNELS(TF16, f16)
MV_FLOAT_KERNELS(TBF16, bf16)
MV_QUANT_KERNELS(TQ4_0, q4_0)
MV_QUANT_KERNELS(TQ4_1, q4_1)
MV_QUANT_KERNELS(TQ5_0, q5_0)
MV_QUANT_KERNELS(TQ5_1, q5_1)
MV_QUANT_KERNELS(TQ8_0, q8_0)
MV_QUANT_KERNELS(TQ4_K, q4_k)
MV_QUANT_KERNELS(TQ5_K, q5_k)
MV_QUANT_KERNELS(TQ6_K, q6_k)
MV_QUANT_KERNELS(TIQ4_NL, iq4_nl)
MV_QUANT_KERNELS(TNF4, nf4)
