// Row-wise and element-wise operations of the graphs, in f32. Kernels whose output feeds a
// cuBLAS product can also write it as f16 (`out16`, may be null), so no conversion pass runs
// before the product. Sums are f32 (no f64: the T4 runs it at 1/32 rate), in tree order.

// out = x / rms(x) * w per row; one block per row.
extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, u16* out16,
                                    int dim, float eps, int x_stride, int out_stride) {
    __shared__ float sh[32];
    const float* xr = x + (size_t)blockIdx.x * x_stride;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
    ss = block_sum(ss, sh);
    const float inv = rsqrtf(ss / (float)dim + eps);
    const size_t o = (size_t)blockIdx.x * out_stride;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = xr[i] * inv * w[i];
        if (out) out[o + i] = v;
        if (out16) out16[o + i] = f2h(v);
    }
}

// out = (v - mean) / sqrt(var + eps) * w + b per row, v = x + pre (pre: a bias added first,
// may be null; b may be null; out may be x).
extern "C" __global__ void layer_norm(const float* x, const float* pre, const float* w,
                                      const float* b, float* out, u16* out16, int dim,
                                      float eps) {
    __shared__ float sh[32];
    const float* xr = x + (size_t)blockIdx.x * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i] + (pre ? pre[i] : 0.0f);
    const float mean = block_sum(s, sh) / (float)dim;
    float v2 = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float d = xr[i] + (pre ? pre[i] : 0.0f) - mean;
        v2 = fmaf(d, d, v2);
    }
    const float var = block_sum(v2, sh) / (float)dim;
    const float inv = rsqrtf(var + eps);
    const size_t o = (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = (xr[i] + (pre ? pre[i] : 0.0f) - mean) * inv * w[i];
        if (b) v += b[i];
        if (out) out[o + i] = v;
        if (out16) out16[o + i] = f2h(v);
    }
}

// Rows of a table in its GGUF blocks, dequantized: out[t] (+)= table[ids[t]] (ids null: row
// `fixed` for every t). One block per token, threads over 32-weight chunks.
template <class T>
__device__ void embed_impl(const u8* table, long long row_bytes, int cols, const int* ids,
                           int fixed, float* out, int add) {
    const int t = blockIdx.x;
    const int r = ids ? ids[t] : fixed;
    const u8* row = table + (size_t)r * row_bytes;
    float* o = out + (size_t)t * cols;
    for (int c = threadIdx.x; c < cols / 32; c += blockDim.x) {
        float w[32];
        dq<T>(row, c, w);
#pragma unroll
        for (int i = 0; i < 32; i++) o[32 * c + i] = add ? o[32 * c + i] + w[i] : w[i];
    }
}

#define EMBED_KERNEL(T, name)                                                                     \
    extern "C" __global__ void embed_##name(const u8* table, long long rb, int cols,             \
                                            const int* ids, int fixed, float* out, int add) {    \
        embed_impl<T>(table, rb, cols, ids, fixed, out, add);                                     \
    }
EMBED_KERNEL(TF32, f32)
EMBED_KERNEL(TF16, f16)
EMBED_KERNEL(TBF16, bf16)
EMBED_KERNEL(TQ4_0, q4_0)
EMBED_KERNEL(TQ4_1, q4_1)
EMBED_KERNEL(TQ5_0, q5_0)
EMBED_KERNEL(TQ5_1, q5_1)
EMBED_KERNEL(TQ8_0, q8_0)
EMBED_KERNEL(TQ4_K, q4_k)
EMBED_KERNEL(TQ5_K, q5_k)
EMBED_KERNEL(TQ6_K, q6_k)
EMBED_KERNEL(TIQ4_NL, iq4_nl)
EMBED_KERNEL(TNF4, nf4)

// After a prompt's Q, K and V products: biases, RoPE of Q (in place) and K from the table, and
// K and V into the f16 cache at the pass's positions. q: n rows of qd, k and v: n rows of kvd.
extern "C" __global__ void bias_rope_store(float* q, const float* k, const float* v,
                                           const float* bq, const float* bk, const float* bv,
                                           u16* kc, u16* vc, const float* rope, const int* step,
                                           int n, int qd, int kvd, int hd) {
    const int half = hd / 2;
    const long long per = qd / 2 + kvd / 2 + kvd;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * per) return;
    const int t = (int)(idx / per);
    int i = (int)(idx % per);
    const int pos = step[0] + t;
    if (i < qd / 2 + kvd / 2) {
        const bool is_q = i < qd / 2;
        if (!is_q) i -= qd / 2;
        const int head = i / half, d = i % half;
        const int ra = head * hd + d, rb = ra + half;
        const float* src = is_q ? q + (size_t)t * qd : k + (size_t)t * kvd;
        const float* bias = is_q ? bq : bk;
        const float a = src[ra] + (bias ? bias[ra] : 0.0f);
        const float b = src[rb] + (bias ? bias[rb] : 0.0f);
        const float2 cs = ((const float2*)rope)[(size_t)pos * half + d];
        const float x0 = a * cs.x - b * cs.y, x1 = a * cs.y + b * cs.x;
        if (is_q) {
            q[(size_t)t * qd + ra] = x0;
            q[(size_t)t * qd + rb] = x1;
        } else {
            kc[(size_t)pos * kvd + ra] = f2h(x0);
            kc[(size_t)pos * kvd + rb] = f2h(x1);
        }
    } else {
        i -= qd / 2 + kvd / 2;
        vc[(size_t)pos * kvd + i] = f2h(v[(size_t)t * kvd + i] + (bv ? bv[i] : 0.0f));
    }
}

// y[i] += b[i % rows] over total values.
extern "C" __global__ void add_bias(float* y, const float* b, long long total, int rows) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) y[i] += b[i % rows];
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float gelu(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

// SwiGLU of n rows of ff: g = silu(g) * u (also as f16 when out16).
extern "C" __global__ void swiglu(float* g, const float* u, u16* out16, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const float v = silu(g[i]) * u[i];
    g[i] = v;
    if (out16) out16[i] = f2h(v);
}

// x = gelu(x + b[i % rows]) (b may be null), also as f16 when out16.
extern "C" __global__ void gelu_bias(float* x, const float* b, u16* out16, long long total,
                                     int rows) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const float v = gelu(x[i] + (b ? b[i % rows] : 0.0f));
    x[i] = v;
    if (out16) out16[i] = f2h(v);
}

extern "C" __global__ void tanh_inplace(float* x, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) x[i] = tanhf(x[i]);
}

// GeGLU: out[t][j] = gelu(wi[t][j]) * wi[t][ff + j] (out may be null when only out16 is used).
extern "C" __global__ void geglu(const float* wi, float* out, u16* out16, int n, int ff) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * ff) return;
    const int t = (int)(i / ff), j = (int)(i % ff);
    const float* r = wi + (size_t)t * 2 * ff;
    const float v = gelu(r[j]) * r[ff + j];
    if (out) out[i] = v;
    if (out16) out16[i] = f2h(v);
}

// f32 rows to f16 rows: n rows of width values, with strides (in elements).
extern "C" __global__ void to_f16(const float* src, int src_stride, u16* dst, int dst_stride,
                                  int n, int width) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * width) return;
    int t = (int)(idx / width), i = (int)(idx % width);
    dst[(size_t)t * dst_stride + i] = f2h(src[(size_t)t * src_stride + i]);
}

// Mean pooling or picking one token per sequence: out[s] = mean of hidden[start..end) (mode 0),
// hidden[start] (mode 1, CLS), hidden[end - 1] (mode 2, last). One block per sequence.
extern "C" __global__ void pool(const float* hidden, const int* starts, const int* ends,
                                float* out, int dim, int mode) {
    int s = blockIdx.x, a = starts[s], e = ends[s];
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v;
        if (mode == 1) v = hidden[(size_t)a * dim + i];
        else if (mode == 2) v = hidden[(size_t)(e - 1) * dim + i];
        else {
            v = 0.0f;
            for (int t = a; t < e; t++) v += hidden[(size_t)t * dim + i];
            v *= 1.0f / (float)(e - a);
        }
        out[(size_t)s * dim + i] = v;
    }
}
