// Attention. Two kernels:
//
// attn_decode_hd*: causal attention of up to 8 decoded tokens over the f16 KV cache, split
// along the keys (flash-decoding). Each warp scores one split of `split_len` keys with an
// online softmax, the block's four warps merge in shared memory, and the last block of a
// (token, head) to finish merges the blocks' partial results (a counter per (token, head), reset
// by that block), so the whole attention is one launch. The split count is fixed by the
// context size, not by the position: blocks past the cached positions return at once, so the
// same launch serves every position of a captured graph. Positions come from the pass's Step.
//
// flash_hd*: tiled attention on tensor cores for prompts and encoder batches (after
// FlashAttention-2's loop order): a block takes 64 queries of one head, each warp 16; Q K^T and
// P V run as mma.sync m16n8k8 (f16 inputs, f32 sums; sm_75). Queries are split into an f16
// value and its f16 remainder, so the scores see the queries' f32 values; probabilities are
// rounded to f16 for P V. Three masks: causal over a KV cache (decoder prompts, Step.pos0 the
// first query's position), within a packed sequence, and a symmetric window (ModernBERT's local
// layers). Encoders rotate queries and keys (RoPE) as they load them.

struct AttnParams {
    const float* q;
    const u16* kc;
    const u16* vc;
    float* out;
    float* part;
    int* counters;
    const int* step;
    int n_head;
    int n_kv;
    int split_len;
    int blocks;
    float scale;
    int q_stride;
    int out_stride;
    int pad;
};
static_assert(sizeof(AttnParams) == 88, "AttnParams layout is shared with attention.rs");

#define ATT_WARPS 4

template <int HD>
__device__ void attn_decode_impl(const AttnParams& p) {
    constexpr int DPL = HD >= 32 ? HD / 32 : 1;  // dims per lane (lanes past HD idle)
    __shared__ float qsh[ATT_WARPS][HD];
    __shared__ float wm[ATT_WARPS], wl[ATT_WARPS];
    __shared__ float wacc[ATT_WARPS][HD];
    __shared__ int last;
    const int t = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int len = p.step[0] + t + 1;
    const int per_block = ATT_WARPS * p.split_len;
    const int active = (len + per_block - 1) / per_block;
    if ((int)blockIdx.x >= active) return;
    const int kvh = h / (p.n_head / p.n_kv);
    const int kvd = p.n_kv * HD;
    const bool dims = lane * DPL < HD;
    for (int d = lane; d < HD; d += 32) qsh[w][d] = p.q[(size_t)t * p.q_stride + h * HD + d];
    __syncwarp();
    const int lo = (blockIdx.x * ATT_WARPS + w) * p.split_len;
    const int hi = min(len, lo + p.split_len);
    float acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
    float m = NEG_INF, l = 0.0f;
    for (int j0 = lo; j0 < hi; j0 += 32) {
        const int j = j0 + lane;
        float s = NEG_INF;
        if (j < hi) {
            const uint4* kr = (const uint4*)(p.kc + (size_t)j * kvd + kvh * HD);
            float dot = 0.0f;
#pragma unroll
            for (int d8 = 0; d8 < HD / 8; d8++) {
                const uint4 u = kr[d8];
                const u32 a[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    dot = fmaf(qsh[w][8 * d8 + 2 * e], h2f((u16)(a[e] & 0xffff)), dot);
                    dot = fmaf(qsh[w][8 * d8 + 2 * e + 1], h2f((u16)(a[e] >> 16)), dot);
                }
            }
            s = dot * p.scale;
        }
        const float mnew = fmaxf(m, warp_max(s));
        const float pj = j < hi ? expf(s - mnew) : 0.0f;
        const float corr = expf(m - mnew);
        l = l * corr + warp_sum(pj);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] *= corr;
        const int cnt = min(32, hi - j0);
        const u16* vbase = p.vc + (size_t)j0 * kvd + kvh * HD + lane * DPL;
        for (int jj = 0; jj < cnt; jj++) {
            const float pw = __shfl_sync(FULL_MASK, pj, jj);
            const u16* vr = vbase + (size_t)jj * kvd;
            if (!dims) continue;
            if constexpr (DPL == 1) {
                acc[0] = fmaf(pw, h2f(vr[0]), acc[0]);
            } else {
#pragma unroll
                for (int i = 0; i < DPL; i += 2) {
                    const u32 v2 = *(const u32*)(vr + i);
                    acc[i] = fmaf(pw, h2f((u16)(v2 & 0xffff)), acc[i]);
                    acc[i + 1] = fmaf(pw, h2f((u16)(v2 >> 16)), acc[i + 1]);
                }
            }
        }
        m = mnew;
    }
    // Merge the block's warps (a warp with no keys has l = 0 and m = -inf).
    if (lane == 0) {
        wm[w] = m;
        wl[w] = l;
    }
    if (dims) {
#pragma unroll
        for (int i = 0; i < DPL; i++) wacc[w][lane * DPL + i] = acc[i];
    }
    __syncthreads();
    const size_t th = (size_t)t * p.n_head + h;
    if (w == 0) {
        float M = NEG_INF;
        for (int k = 0; k < ATT_WARPS; k++) M = fmaxf(M, wm[k]);
        float L = 0.0f, a[DPL];
#pragma unroll
        for (int i = 0; i < DPL; i++) a[i] = 0.0f;
        for (int k = 0; k < ATT_WARPS; k++) {
            if (wl[k] > 0.0f && dims) {
                const float c = expf(wm[k] - M);
                L += wl[k] * c;
#pragma unroll
                for (int i = 0; i < DPL; i++) a[i] += wacc[k][lane * DPL + i] * c;
            } else if (wl[k] > 0.0f) {
                L += wl[k] * expf(wm[k] - M);
            }
        }
        if (active == 1) {
            const float inv = 1.0f / L;
            if (dims) {
#pragma unroll
                for (int i = 0; i < DPL; i++)
                    p.out[(size_t)t * p.out_stride + h * HD + lane * DPL + i] = a[i] * inv;
            }
        } else {
            float* pp = p.part + (th * p.blocks + blockIdx.x) * (HD + 2);
            if (lane == 0) {
                pp[0] = M;
                pp[1] = L;
            }
            if (dims) {
#pragma unroll
                for (int i = 0; i < DPL; i++) pp[2 + lane * DPL + i] = a[i];
            }
            __threadfence();
            if (lane == 0) last = atomicAdd(&p.counters[th], 1) == active - 1;
        }
    }
    __syncthreads();
    if (active == 1 || w != 0 || !last) return;
    // The last block of this (token, head): merge every block's partial result.
    __threadfence();
    const float* base = p.part + th * p.blocks * (HD + 2);
    float M = NEG_INF;
    for (int b = 0; b < active; b++) M = fmaxf(M, __ldcg(base + (size_t)b * (HD + 2)));
    float L = 0.0f, a[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) a[i] = 0.0f;
    for (int b = 0; b < active; b++) {
        const float* pb = base + (size_t)b * (HD + 2);
        const float lb = __ldcg(pb + 1);
        if (lb > 0.0f) {
            const float c = expf(__ldcg(pb) - M);
            L += lb * c;
            if (dims) {
#pragma unroll
                for (int i = 0; i < DPL; i++) a[i] += __ldcg(pb + 2 + lane * DPL + i) * c;
            }
        }
    }
    const float inv = 1.0f / L;
    if (dims) {
#pragma unroll
        for (int i = 0; i < DPL; i++)
            p.out[(size_t)t * p.out_stride + h * HD + lane * DPL + i] = a[i] * inv;
    }
    if (lane == 0) p.counters[th] = 0;
}

#define ATTN_DECODE(HD)                                                                           \
    extern "C" __global__ void __launch_bounds__(128) attn_decode_hd##HD(const AttnParams p) {    \
        attn_decode_impl<HD>(p);                                                                  \
    }
ATTN_DECODE(16)
ATTN_DECODE(32)
ATTN_DECODE(64)
ATTN_DECODE(128)

// ---------------------------------------------------------------------------------------------
// Tensor-core attention for prompts and encoder batches.

struct FlashParams {
    const float* q;
    const void* k;
    const void* v;
    float* out;
    u16* out16;
    const int* tiles;
    const int* pos;
    const float* rope;
    const int* step;
    int q_stride;
    int k_stride;
    int v_stride;
    int out_stride;
    int n_head;
    int n_kv;
    int window;
    int n_q;
    float scale;
    int kv_f16;
    int causal;
    int pad;
};
static_assert(sizeof(FlashParams) == 120, "FlashParams layout is shared with attention.rs");

#define FA_BQ 64
#define FA_BK 64

__device__ __forceinline__ u32 pack_h2(float a, float b) {
    return (u32)f2h(a) | ((u32)f2h(b) << 16);
}

// D = C + A B for one m16n8k8 tile (A 16x8 row-major, B 8x8 column-major, f16; C, D f32).
__device__ __forceinline__ void mma16816(float (&c)[4], u32 a0, u32 a1, u32 b0) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
}

__device__ __forceinline__ float fa_load(const void* base, int f16, size_t i) {
    return f16 ? h2f(((const u16*)base)[i]) : ((const float*)base)[i];
}

template <int D>
__device__ void flash_impl(const FlashParams& p) {
    constexpr int KS = D + 8;      // padded row of the key tile (halves)
    constexpr int VS = FA_BK + 8;  // padded row of the transposed value tile
    constexpr int NK = D / 8;      // k-steps of Q K^T and n-tiles of P V
    constexpr int HALF = D / 2;
    __shared__ __align__(16) u16 ks[FA_BK * KS];
    __shared__ __align__(16) u16 vt[D * VS];
    const int h = blockIdx.y;
    const int kvh = h / (p.n_head / p.n_kv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, tq = lane & 3;
    // This tile's queries (rows of q/out) and keys (rows of k/v), and how positions relate.
    int q0, qn, k0, kn, qpos0;  // query rows q0.., keys k0.., first query's index in its keys
    if (p.causal) {
        q0 = blockIdx.x * FA_BQ;
        qn = min(FA_BQ, p.n_q - q0);
        k0 = 0;
        qpos0 = p.step[0] + q0;
        kn = qpos0 + qn;
    } else {
        const int* tl = p.tiles + 4 * blockIdx.x;
        k0 = tl[0];
        kn = tl[1];
        q0 = tl[2];
        qn = tl[3];
        qpos0 = q0 - k0;
    }
    // Queries of this warp's rows g and g + 8, as f16 hi/lo pairs per k-step.
    u32 qh[NK][2], ql[NK][2];
    {
        float qv[2][D / 4];  // [row][k-step * 2 + e] for dims 8kk + 2tq + e
        for (int r = 0; r < 2; r++) {
            const int qi = warp * 16 + g + 8 * r;
            const bool ok = qi < qn;
            const float* qr = p.q + (size_t)(q0 + qi) * p.q_stride + h * D;
#pragma unroll
            for (int kk = 0; kk < NK; kk++) {
#pragma unroll
                for (int e = 0; e < 2; e++) qv[r][2 * kk + e] = ok ? qr[8 * kk + 2 * tq + e] : 0.0f;
            }
            if (ok && p.rope) {
                const float2* cs = (const float2*)p.rope + (size_t)p.pos[q0 + qi] * HALF;
#pragma unroll
                for (int kk = 0; kk < NK / 2; kk++) {
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const float2 c = cs[8 * kk + 2 * tq + e];
                        const float a = qv[r][2 * kk + e], b = qv[r][2 * (kk + NK / 2) + e];
                        qv[r][2 * kk + e] = a * c.x - b * c.y;
                        qv[r][2 * (kk + NK / 2) + e] = a * c.y + b * c.x;
                    }
                }
            }
        }
#pragma unroll
        for (int kk = 0; kk < NK; kk++) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const float a = qv[r][2 * kk], b = qv[r][2 * kk + 1];
                const u16 ha = f2h(a), hb = f2h(b);
                qh[kk][r] = (u32)ha | ((u32)hb << 16);
                ql[kk][r] = pack_h2(a - h2f(ha), b - h2f(hb));
            }
        }
    }
    float o[NK][4];
#pragma unroll
    for (int n = 0; n < NK; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float mrow[2] = {NEG_INF, NEG_INF}, lrow[2] = {0.0f, 0.0f};
    // Keys this tile's queries may see.
    int klo = 0, khi = kn;
    if (p.window >= 0) {
        klo = max(0, qpos0 - p.window);
        khi = min(kn, qpos0 + qn - 1 + p.window + 1);
    }
    for (int kt = klo / FA_BK * FA_BK; kt < khi; kt += FA_BK) {
        __syncthreads();
        // Keys (rotated when the queries are) and transposed values into shared memory.
        for (int idx = threadIdx.x; idx < FA_BK * HALF; idx += blockDim.x) {
            const int j = idx / HALF, i = idx % HALF;
            const int key = kt + j;
            float a = 0.0f, b = 0.0f, va = 0.0f, vb = 0.0f;
            if (key < kn) {
                const size_t row = (size_t)(k0 + key);
                const size_t kb = row * p.k_stride + kvh * D, vb0 = row * p.v_stride + kvh * D;
                a = fa_load(p.k, p.kv_f16, kb + i);
                b = fa_load(p.k, p.kv_f16, kb + i + HALF);
                va = fa_load(p.v, p.kv_f16, vb0 + i);
                vb = fa_load(p.v, p.kv_f16, vb0 + i + HALF);
                if (p.rope) {
                    const float2 c = ((const float2*)p.rope)[(size_t)p.pos[k0 + key] * HALF + i];
                    const float x0 = a * c.x - b * c.y, x1 = a * c.y + b * c.x;
                    a = x0;
                    b = x1;
                }
            }
            ks[j * KS + i] = f2h(a);
            ks[j * KS + i + HALF] = f2h(b);
            vt[i * VS + j] = f2h(va);
            vt[(i + HALF) * VS + j] = f2h(vb);
        }
        __syncthreads();
        // Scores of rows g, g + 8 against keys 8j + 2tq + e.
        float s[FA_BK / 8][4];
#pragma unroll
        for (int j = 0; j < FA_BK / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < NK; kk++) {
                const u32 b0 = *(const u32*)&ks[(8 * j + g) * KS + 8 * kk + 2 * tq];
                mma16816(s[j], qh[kk][0], qh[kk][1], b0);
                mma16816(s[j], ql[kk][0], ql[kk][1], b0);
            }
        }
        // Masks and the online softmax, per row.
        float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int j = 0; j < FA_BK / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1;
                const int qi = warp * 16 + g + 8 * r;
                const int key = kt + 8 * j + 2 * tq + (e & 1);
                const int qp = qpos0 + qi;  // the query's index among its keys
                bool ok = qi < qn && key < kn;
                if (p.causal) ok = ok && key <= qp;
                if (p.window >= 0) ok = ok && key >= qp - p.window && key <= qp + p.window;
                s[j][e] = ok ? s[j][e] * p.scale : NEG_INF;
                mx[r] = fmaxf(mx[r], s[j][e]);
            }
        }
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 2));
            const float mnew = fmaxf(mrow[r], mx[r]);
            corr[r] = mnew == NEG_INF ? 1.0f : expf(mrow[r] - mnew);
            mrow[r] = mnew;
            lrow[r] *= corr[r];
        }
        u32 pa[FA_BK / 8][2];
#pragma unroll
        for (int j = 0; j < FA_BK / 8; j++) {
            float pv[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1;
                pv[e] = s[j][e] == NEG_INF ? 0.0f : expf(s[j][e] - mrow[r]);
                lrow[r] += pv[e];
            }
            pa[j][0] = pack_h2(pv[0], pv[1]);
            pa[j][1] = pack_h2(pv[2], pv[3]);
        }
#pragma unroll
        for (int n = 0; n < NK; n++) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
#pragma unroll
            for (int j = 0; j < FA_BK / 8; j++) {
                const u32 b0 = *(const u32*)&vt[(8 * n + g) * VS + 8 * j + 2 * tq];
                mma16816(o[n], pa[j][0], pa[j][1], b0);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        lrow[r] += __shfl_xor_sync(FULL_MASK, lrow[r], 1);
        lrow[r] += __shfl_xor_sync(FULL_MASK, lrow[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int qi = warp * 16 + g + 8 * r;
        if (qi >= qn) continue;
        const float inv = lrow[r] > 0.0f ? 1.0f / lrow[r] : 0.0f;
        const size_t row = (size_t)(q0 + qi) * p.out_stride + h * D;
#pragma unroll
        for (int n = 0; n < NK; n++) {
            const int d = 8 * n + 2 * tq;
            const float a = o[n][2 * r] * inv, b = o[n][2 * r + 1] * inv;
            if (p.out) *(float2*)(p.out + row + d) = make_float2(a, b);
            if (p.out16) *(u32*)(p.out16 + row + d) = pack_h2(a, b);
        }
    }
}

#define FLASH(D)                                                                                  \
    extern "C" __global__ void __launch_bounds__(128) flash_hd##D(const FlashParams p) {          \
        flash_impl<D>(p);                                                                         \
    }
FLASH(16)
FLASH(32)
FLASH(64)
FLASH(128)
