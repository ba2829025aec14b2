// Row-wise and element-wise operations of the transformer graphs, in f32 (as the CPU backend).

// out = x / rms(x) * w per row of dim; one block per row. The sum of squares is accumulated in
// f64, as on the CPU (Qwen2's residual stream carries values in the thousands).
extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, int dim,
                                    float eps) {
    __shared__ double sh[32];
    const float* xr = x + (size_t)blockIdx.x * dim;
    float* o = out + (size_t)blockIdx.x * dim;
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i];
        ss += (double)__fmul_rn(v, v);
    }
    ss = block_sum_d(ss, sh);
    float mean = (float)(ss / (double)dim);
    float inv = 1.0f / sqrtf(mean + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = __fmul_rn(__fmul_rn(xr[i], inv), w[i]);
}

// out = (x - mean) / sqrt(var + eps) * w + b per row (b may be null; out may be x).
extern "C" __global__ void layer_norm(const float* x, const float* w, const float* b, float* out,
                                      int dim, float eps) {
    __shared__ double sh[32];
    const float* xr = x + (size_t)blockIdx.x * dim;
    float* o = out + (size_t)blockIdx.x * dim;
    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += (double)xr[i];
    float mean = (float)(block_sum_d(s, sh) / (double)dim);
    double v2 = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float d = xr[i] - mean;
        v2 += (double)__fmul_rn(d, d);
    }
    float var = (float)(block_sum_d(v2, sh) / (double)dim);
    float inv = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __fmul_rn(__fmul_rn(xr[i] - mean, inv), w[i]);
        o[i] = b ? v + b[i] : v;
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

// SwiGLU: g = silu(g) * u.
extern "C" __global__ void silu_mul(float* g, const float* u, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) g[i] = silu(g[i]) * u[i];
}

extern "C" __global__ void gelu_inplace(float* x, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) x[i] = gelu(x[i]);
}

extern "C" __global__ void tanh_inplace(float* x, long long total) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) x[i] = tanhf(x[i]);
}

// GeGLU: out[t][j] = gelu(wi[t][j]) * wi[t][ff + j].
extern "C" __global__ void geglu(const float* wi, float* out, int n, int ff) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * ff) return;
    int t = (int)(i / ff), j = (int)(i % ff);
    const float* r = wi + (size_t)t * 2 * ff;
    out[i] = gelu(r[j]) * r[ff + j];
}

// NEOX rotary embedding in place: in each of n rows (stride `stride`), `heads` vectors of hd
// values at column offset 0; dimension i pairs with i + hd/2. Position of row t: pos[t] if pos
// is given, else pos0 + t. Angles in f64 as on the CPU. One thread per (row, pair), all heads.
extern "C" __global__ void rope_neox(float* x, int n, int heads, int hd, int stride, int pos0,
                                     const int* pos, float theta) {
    int half = hd / 2;
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * half) return;
    int t = (int)(idx / half), i = (int)(idx % half);
    int p = pos ? pos[t] : pos0 + t;
    double freq = 1.0 / pow((double)theta, 2.0 * (double)i / (double)hd);
    double ang = (double)p * freq;
    float s = (float)sin(ang), c = (float)cos(ang);
    float* row = x + (size_t)t * stride;
    for (int h = 0; h < heads; h++) {
        float* v = row + h * hd;
        float a = v[i], b = v[i + half];
        v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        v[i + half] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
}

// f32 rows to f16 rows: n rows of width values, with strides (in elements).
extern "C" __global__ void to_f16(const float* src, int src_stride, u16* dst, int dst_stride,
                                  int n, int width) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * width) return;
    int t = (int)(idx / width), i = (int)(idx % width);
    dst[(size_t)t * dst_stride + i] = f2h(src[(size_t)t * src_stride + i]);
}

// Appends n positions of keys and values (rows of kvd f32) to an f16 cache at position pos0.
extern "C" __global__ void kv_store(const float* k, const float* v, u16* kc, u16* vc, int n,
                                    int kvd, int pos0) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * kvd) return;
    size_t at = (size_t)pos0 * kvd + idx;
    kc[at] = f2h(k[idx]);
    vc[at] = f2h(v[idx]);
}

// Softmax of attention scores for the encoders' cuBLAS path: rows of L keys (row r is query
// q0 + r % nq of head r / nq), scaled; keys farther than `window` from the query are masked
// (window < 0: none). Writes probabilities as f16 for the second product.
extern "C" __global__ void softmax_scores(const float* S, u16* P, int L, int nq, int q0,
                                          int window, float scale) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    int i = q0 + r % nq;
    const float* s = S + (size_t)r * L;
    u16* p = P + (size_t)r * L;
    int lo = 0, hi = L;
    if (window >= 0) {
        lo = max(0, i - window);
        hi = min(L, i + window + 1);
    }
    float m = NEG_INF;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) m = fmaxf(m, s[j] * scale);
    m = block_max(m, sh);
    float sum = 0.0f;
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) sum += expf(s[j] * scale - m);
    sum = block_sum(sum, sh);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < L; j += blockDim.x)
        p[j] = (j >= lo && j < hi) ? f2h(expf(s[j] * scale - m) * inv) : (u16)0;
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
