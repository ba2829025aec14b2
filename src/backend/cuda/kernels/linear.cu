// Matrix-vector products with dequantization fused into the dot product (decode, and batches
// of up to 8 tokens), and dequantization of weights to f16 (or f32) for cuBLAS.
//
// matvec: one warp per output row, 8 rows per block of 256 threads. Lane l takes chunks
// l, l + 32, ... of the row (32 weights each, coalesced: the warp reads 32 consecutive chunks),
// dequantizes each once into registers and multiplies it with the f32 activations of every
// token. y[t][r] = (acc ? y[t][r] : 0) + (sum + bias[r]).

#define MAXN 8

template <class T, int N>
__device__ __forceinline__ void matvec_impl(const u8* W, long long row_bytes, int rows, int cols,
                                            const float* x, int n, float* y, const float* bias,
                                            int acc) {
    int lane = threadIdx.x & 31;
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    const u8* row = W + (size_t)r * row_bytes;
    int nch = cols >> 5;
    float s[N];
#pragma unroll
    for (int t = 0; t < N; t++) s[t] = 0.0f;
    for (int c = lane; c < nch; c += 32) {
        float w[32];
        dq<T>(row, c, w);
#pragma unroll
        for (int t = 0; t < N; t++) {
            if (t < n) {
                const float4* xp = (const float4*)(x + (size_t)t * cols + (size_t)c * 32);
                float a = 0.0f;
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    float4 v = xp[k];
                    a = fmaf(w[4 * k], v.x, a);
                    a = fmaf(w[4 * k + 1], v.y, a);
                    a = fmaf(w[4 * k + 2], v.z, a);
                    a = fmaf(w[4 * k + 3], v.w, a);
                }
                s[t] += a;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < N; t++) {
        if (t < n) {
            float v = warp_sum(s[t]);
            if (lane == 0) {
                float* o = y + (size_t)t * rows + r;
                float b = bias ? bias[r] : 0.0f;
                *o = (acc ? *o : 0.0f) + (v + b);
            }
        }
    }
}

template <class T>
__device__ __forceinline__ void dequant_impl(const u8* W, long long row_bytes, int rows, int cols,
                                             void* out, int to_f16) {
    int nch = cols >> 5;
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * nch) return;
    int r = (int)(idx / nch), c = (int)(idx % nch);
    float w[32];
    dq<T>(W + (size_t)r * row_bytes, c, w);
    size_t at = (size_t)r * cols + (size_t)c * 32;
    if (to_f16) {
        uint4* o = (uint4*)((u16*)out + at);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            u32 p[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                p[i] = (u32)f2h(w[8 * k + 2 * i]) | ((u32)f2h(w[8 * k + 2 * i + 1]) << 16);
            o[k] = make_uint4(p[0], p[1], p[2], p[3]);
        }
    } else {
        float4* o = (float4*)((float*)out + at);
#pragma unroll
        for (int k = 0; k < 8; k++)
            o[k] = make_float4(w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3]);
    }
}

#define LINEAR_KERNELS(T, name)                                                                   \
    extern "C" __global__ void __launch_bounds__(256)                                             \
        matvec1_##name(const u8* W, long long rb, int rows, int cols, const float* x, int n,     \
                       float* y, const float* bias, int acc) {                                    \
        matvec_impl<T, 1>(W, rb, rows, cols, x, 1, y, bias, acc);                                 \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                             \
        matvec8_##name(const u8* W, long long rb, int rows, int cols, const float* x, int n,     \
                       float* y, const float* bias, int acc) {                                    \
        matvec_impl<T, MAXN>(W, rb, rows, cols, x, n, y, bias, acc);                              \
    }                                                                                             \
    extern "C" __global__ void dequant_##name(const u8* W, long long rb, int rows, int cols,      \
                                              void* out, int to_f16) {                            \
        dequant_impl<T>(W, rb, rows, cols, out, to_f16);                                          \
    }

LINEAR_KERNELS(TF32, f32)
LINEAR_KERNELS(TF16, f16)
LINEAR_KERNELS(TBF16, bf16)
LINEAR_KERNELS(TQ4_0, q4_0)
LINEAR_KERNELS(TQ4_1, q4_1)
LINEAR_KERNELS(TQ5_0, q5_0)
LINEAR_KERNELS(TQ5_1, q5_1)
LINEAR_KERNELS(TQ8_0, q8_0)
LINEAR_KERNELS(TQ4_K, q4_k)
LINEAR_KERNELS(TQ5_K, q5_k)
LINEAR_KERNELS(TQ6_K, q6_k)
LINEAR_KERNELS(TIQ4_NL, iq4_nl)
LINEAR_KERNELS(TNF4, nf4)
