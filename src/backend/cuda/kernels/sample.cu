// Sampling on the device, so that a decoded token costs one token id back to the host, not the
// logits. The same rules as the CPU's `Sampler` (crate::sampling): repetition penalty over the
// Step's token ids, then greedy (argmax, first index on ties), or top-k, softmax, top-p,
// temperature and a draw with the host's uniform number (Step.draw).

struct SampleParams {
    const float* logits;
    const int* step;  // Step: n_penalty at [3], draw at [4] (f32 bits), ids from [8]
    float* cand_v;
    int* cand_i;
    int* counter;
    int* out;
    int n_vocab;
    int top_k;
    float top_p;
    float temperature;
    float penalty;
    int per_block;
};
static_assert(sizeof(SampleParams) == 72, "SampleParams layout is shared with sample.rs");

#define STEP_PENALTY_IDS 8

// The logit of token i after the repetition penalty (ids: sorted, in shared memory).
__device__ __forceinline__ float penalized(const SampleParams& p, const int* ids, int nid, int i) {
    float v = p.logits[i];
    if (v != v) v = NEG_INF;
    if (p.penalty != 1.0f && nid > 0) {
        int lo = 0, hi = nid;
        while (lo < hi) {
            const int mid = (lo + hi) >> 1;
            if (ids[mid] < i) lo = mid + 1;
            else hi = mid;
        }
        if (lo < nid && ids[lo] == i) v = v > 0.0f ? v / p.penalty : v * p.penalty;
    }
    return v;
}

__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

__device__ int load_penalty_ids(const SampleParams& p, int* ids) {
    const int nid = p.penalty != 1.0f ? min(p.step[3], 256) : 0;
    for (int i = threadIdx.x; i < nid; i += blockDim.x) ids[i] = p.step[STEP_PENALTY_IDS + i];
    __syncthreads();
    return nid;
}

// Greedy: each block's best (value, index), then the last block to finish picks the best of
// those and writes the token.
extern "C" __global__ void __launch_bounds__(256) sample_argmax(const SampleParams p) {
    __shared__ int ids[256];
    __shared__ float bv[256];
    __shared__ int bi[256];
    __shared__ int last;
    const int nid = load_penalty_ids(p, ids);
    float best = NEG_INF;
    int besti = 0x7fffffff;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n_vocab; i += gridDim.x * blockDim.x) {
        const float v = penalized(p, ids, nid, i);
        if (before(v, i, best, besti)) {
            best = v;
            besti = i;
        }
    }
    bv[threadIdx.x] = best;
    bi[threadIdx.x] = besti;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s && before(bv[threadIdx.x + s], bi[threadIdx.x + s], bv[threadIdx.x], bi[threadIdx.x])) {
            bv[threadIdx.x] = bv[threadIdx.x + s];
            bi[threadIdx.x] = bi[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        p.cand_v[blockIdx.x] = bv[0];
        p.cand_i[blockIdx.x] = bi[0];
        __threadfence();
        last = atomicAdd(p.counter, 1) == (int)gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    best = NEG_INF;
    besti = 0x7fffffff;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) {
        const float v = __ldcg(p.cand_v + b);
        const int i = __ldcg(p.cand_i + b);
        if (before(v, i, best, besti)) {
            best = v;
            besti = i;
        }
    }
    bv[threadIdx.x] = best;
    bi[threadIdx.x] = besti;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s && before(bv[threadIdx.x + s], bi[threadIdx.x + s], bv[threadIdx.x], bi[threadIdx.x])) {
            bv[threadIdx.x] = bv[threadIdx.x + s];
            bi[threadIdx.x] = bi[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        *p.out = bi[0];
        *p.counter = 0;
    }
}

#define TOPK_N 4096

// Sorts n (a power of two, at most TOPK_N) pairs in shared memory, best first.
__device__ void bitonic_desc(float* v, int* ix, int n) {
    for (int k = 2; k <= n; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                const int l = i ^ j;
                if (l > i) {
                    const bool first = (i & k) == 0;
                    const bool swap = first ? before(v[l], ix[l], v[i], ix[i])
                                            : before(v[i], ix[i], v[l], ix[l]);
                    if (swap) {
                        const float tv = v[i];
                        v[i] = v[l];
                        v[l] = tv;
                        const int ti = ix[i];
                        ix[i] = ix[l];
                        ix[l] = ti;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// Top-k, stage 1: each block sorts its `per_block` logits (TOPK_N at most) and keeps its best
// top_k; the last block to finish sorts all blocks' candidates and draws the token.
extern "C" __global__ void __launch_bounds__(1024) sample_topk(const SampleParams p) {
    __shared__ float v[TOPK_N];
    __shared__ int ix[TOPK_N];
    __shared__ int sid[256];
    __shared__ int last;
    const int nid = load_penalty_ids(p, sid);
    const int base = blockIdx.x * p.per_block;
    for (int i = threadIdx.x; i < p.per_block; i += blockDim.x) {
        const int g = base + i;
        v[i] = g < p.n_vocab ? penalized(p, sid, nid, g) : NEG_INF;
        ix[i] = g < p.n_vocab ? g : 0x7fffffff;
    }
    __syncthreads();
    bitonic_desc(v, ix, p.per_block);
    for (int r = threadIdx.x; r < p.top_k; r += blockDim.x) {
        p.cand_v[blockIdx.x * p.top_k + r] = v[r];
        p.cand_i[blockIdx.x * p.top_k + r] = ix[r];
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(p.counter, 1) == (int)gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const int nc = gridDim.x * p.top_k;
    int n = 1;
    while (n < nc) n <<= 1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        v[i] = i < nc ? __ldcg(p.cand_v + i) : NEG_INF;
        ix[i] = i < nc ? __ldcg(p.cand_i + i) : 0x7fffffff;
    }
    __syncthreads();
    bitonic_desc(v, ix, n);
    if (threadIdx.x != 0) return;
    // The CPU's chain on the k best, in order: softmax at temperature 1, the top-p cut, then
    // weights at the temperature and the draw.
    const int k = min(p.top_k, p.n_vocab);
    const float mx = v[0];
    float sum = 0.0f;
    for (int i = 0; i < k; i++) sum += expf(v[i] - mx);
    int keep = k;
    if (p.top_p < 1.0f) {
        float acc = 0.0f;
        for (int i = 0; i < k; i++) {
            acc += expf(v[i] - mx) / sum;
            if (acc >= p.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    float total = 0.0f;
    for (int i = 0; i < keep; i++) total += expf((v[i] - mx) / p.temperature);
    float r = __int_as_float(p.step[4]) * total;
    int tok = ix[keep - 1];
    for (int i = 0; i < keep; i++) {
        r -= expf((v[i] - mx) / p.temperature);
        if (r <= 0.0f) {
            tok = ix[i];
            break;
        }
    }
    *p.out = tok;
    *p.counter = 0;
}
