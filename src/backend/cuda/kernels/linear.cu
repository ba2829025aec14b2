// Dequantization of weights to f16 (or f32) rows for cuBLAS (prompts and encoder batches): one
// thread per 32-weight chunk, the values of the CPU's `dequantize_row`.

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
