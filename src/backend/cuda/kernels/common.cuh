// Shared helpers. No CUDA headers: NVRTC compiles this without an include path, so halves are
// converted with PTX instructions and carried as 16-bit integers. Nothing here needs more than
// sm_75 (Turing, the T4).

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define FULL_MASK 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf2f(u16 h) { return __int_as_float(((u32)h) << 16); }

__device__ __forceinline__ u16 ld16(const u8* p) { return *(const u16*)p; }

// 32-bit loads from 2- and 4-byte aligned addresses (block fields of odd-sized ggml blocks).
__device__ __forceinline__ u32 ld32_2(const u8* p) {
    return (u32)ld16(p) | ((u32)ld16(p + 2) << 16);
}
__device__ __forceinline__ u32 ld32_4(const u8* p) { return *(const u32*)p; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ int warp_sum_i(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ float block_max(float v, float* shared32) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) shared32[w] = v;
    __syncthreads();
    float t = lane < nw ? shared32[lane] : NEG_INF;
    return warp_max(t);
}

// Sum over a block of up to 1024 threads (blockDim.x a multiple of 32); every thread gets it.
__device__ float block_sum(float v, float* shared32) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shared32[w] = v;
    __syncthreads();
    float t = lane < nw ? shared32[lane] : 0.0f;
    return warp_sum(t);
}
