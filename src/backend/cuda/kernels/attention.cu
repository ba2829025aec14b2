// Causal attention of the decoder over its f16 KV cache, with an online softmax (one pass over
// the keys). One warp per (query, head, key split): lane l scores key j0 + l of each tile of 32
// keys, the warp updates the running max and sum, then accumulates the value rows with lanes
// over dimensions (coalesced). Long caches are cut into splits (flash-decoding) whose partial
// results attn_combine merges, so a single decoded token still spreads over the GPU.
//
// q: n rows of n_head * HD (f32); caches: rows of n_kv * HD (f16), positions 0..pos0 + n.

template <int HD>
__device__ __forceinline__ void attn_causal_impl(const float* q, const u16* kc, const u16* vc,
                                                 float* out, float* part, int n, int n_head,
                                                 int n_kv, int pos0, float scale, int nsplit,
                                                 int split_len) {
    constexpr int DPL = (HD + 31) / 32;
    __shared__ float qsh[4][HD];
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    long long idx = (long long)blockIdx.x * 4 + w;
    if (idx >= (long long)n * n_head * nsplit) return;
    int split = (int)(idx % nsplit);
    int th = (int)(idx / nsplit);
    int t = th / n_head, h = th % n_head;
    int kvh = h / (n_head / n_kv);
    int qd = n_head * HD, kvd = n_kv * HD;
    for (int d = lane; d < HD; d += 32) qsh[w][d] = q[(size_t)t * qd + h * HD + d];
    __syncwarp();
    int len = pos0 + t + 1;
    int lo = split * split_len, hi = min(len, lo + split_len);
    float acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
    float m = NEG_INF, l = 0.0f;
    for (int j0 = lo; j0 < hi; j0 += 32) {
        int j = j0 + lane;
        float s = NEG_INF;
        if (j < hi) {
            const uint4* kr = (const uint4*)(kc + (size_t)j * kvd + kvh * HD);
            float dot = 0.0f;
#pragma unroll
            for (int d8 = 0; d8 < HD / 8; d8++) {
                uint4 u = kr[d8];
                u32 a[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    dot = fmaf(qsh[w][8 * d8 + 2 * e], h2f((u16)(a[e] & 0xffff)), dot);
                    dot = fmaf(qsh[w][8 * d8 + 2 * e + 1], h2f((u16)(a[e] >> 16)), dot);
                }
            }
            s = dot * scale;
        }
        float mnew = fmaxf(m, warp_max(s));
        float p = j < hi ? expf(s - mnew) : 0.0f;
        float corr = expf(m - mnew);
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] *= corr;
        int cnt = min(32, hi - j0);
        for (int jj = 0; jj < cnt; jj++) {
            float pj = __shfl_sync(FULL_MASK, p, jj);
            const u16* vr = vc + (size_t)(j0 + jj) * kvd + kvh * HD;
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                int d = lane + 32 * i;
                if (d < HD) acc[i] = fmaf(pj, h2f(vr[d]), acc[i]);
            }
        }
        m = mnew;
    }
    if (nsplit == 1) {
        float inv = 1.0f / l;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            int d = lane + 32 * i;
            if (d < HD) out[(size_t)t * qd + h * HD + d] = acc[i] * inv;
        }
    } else {
        float* pp = part + ((size_t)th * nsplit + split) * (HD + 2);
        if (lane == 0) {
            pp[0] = m;
            pp[1] = l;
        }
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            int d = lane + 32 * i;
            if (d < HD) pp[2 + d] = acc[i];
        }
    }
}

#define ATTN_KERNEL(HD)                                                                           \
    extern "C" __global__ void __launch_bounds__(128)                                             \
        attn_causal_hd##HD(const float* q, const u16* kc, const u16* vc, float* out, float* part, \
                           int n, int n_head, int n_kv, int pos0, float scale, int nsplit,        \
                           int split_len) {                                                       \
        attn_causal_impl<HD>(q, kc, vc, out, part, n, n_head, n_kv, pos0, scale, nsplit,          \
                             split_len);                                                          \
    }

ATTN_KERNEL(16)
ATTN_KERNEL(32)
ATTN_KERNEL(64)
ATTN_KERNEL(128)

// Merges the splits of attn_causal: one warp per (query, head).
extern "C" __global__ void attn_combine(const float* part, float* out, int rows, int hd,
                                        int nsplit) {
    int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int th = blockIdx.x * (blockDim.x >> 5) + w;
    if (th >= rows) return;
    const float* p = part + (size_t)th * nsplit * (hd + 2);
    float M = NEG_INF;
    for (int s = 0; s < nsplit; s++) M = fmaxf(M, p[(size_t)s * (hd + 2)]);
    float L = 0.0f;
    for (int s = 0; s < nsplit; s++) {
        const float* ps = p + (size_t)s * (hd + 2);
        if (ps[1] > 0.0f) L += ps[1] * expf(ps[0] - M);
    }
    float inv = 1.0f / L;
    for (int d = lane; d < hd; d += 32) {
        float a = 0.0f;
        for (int s = 0; s < nsplit; s++) {
            const float* ps = p + (size_t)s * (hd + 2);
            if (ps[1] > 0.0f) a += ps[2 + d] * expf(ps[0] - M);
        }
        out[(size_t)th * hd + d] = a * inv;
    }
}
