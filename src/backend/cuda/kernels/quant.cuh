// Dequantization of ggml blocks, 32 weights ("a chunk") at a time: chunk c of a row holds
// weights 32c..32c+31. Every kernel that reads quantized weights goes through these, so the
// matrix-vector product (dequantization fused into the dot product) and the f16 dequantization
// before cuBLAS see the same values as the CPU's `dequantize_row`: products and sums are rounded
// as the Rust code rounds them (__fmul_rn and friends keep the compiler from fusing them).

struct TF32 {};
struct TF16 {};
struct TBF16 {};
struct TQ4_0 {};
struct TQ4_1 {};
struct TQ5_0 {};
struct TQ5_1 {};
struct TQ8_0 {};
struct TQ4_K {};
struct TQ5_K {};
struct TQ6_K {};
struct TIQ4_NL {};
struct TNF4 {};

__constant__ signed char KV_IQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                         1,    13,   25,  38,  53,  69,  89,  113};

__constant__ float NF4_LEVELS[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

template <class T> __device__ __forceinline__ void dq(const u8* row, int c, float* w);

template <> __device__ __forceinline__ void dq<TF32>(const u8* row, int c, float* w) {
    const float4* p = (const float4*)(row + (size_t)c * 128);
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float4 v = p[k];
        w[4 * k] = v.x; w[4 * k + 1] = v.y; w[4 * k + 2] = v.z; w[4 * k + 3] = v.w;
    }
}

template <> __device__ __forceinline__ void dq<TF16>(const u8* row, int c, float* w) {
    const uint4* p = (const uint4*)(row + (size_t)c * 64);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        uint4 v = p[k];
        u32 a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[8 * k + 2 * i] = h2f((u16)(a[i] & 0xffff));
            w[8 * k + 2 * i + 1] = h2f((u16)(a[i] >> 16));
        }
    }
}

template <> __device__ __forceinline__ void dq<TBF16>(const u8* row, int c, float* w) {
    const uint4* p = (const uint4*)(row + (size_t)c * 64);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        uint4 v = p[k];
        u32 a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[8 * k + 2 * i] = bf2f((u16)(a[i] & 0xffff));
            w[8 * k + 2 * i + 1] = bf2f((u16)(a[i] >> 16));
        }
    }
}

// Q8_0: f16 d, 32 int8. 34 bytes: 2-byte aligned.
template <> __device__ __forceinline__ void dq<TQ8_0>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)c * 34;
    float d = h2f(ld16(b));
#pragma unroll
    for (int i = 0; i < 16; i++) {
        u16 v = ld16(b + 2 + 2 * i);
        w[2 * i] = __fmul_rn((float)(i8)(v & 0xff), d);
        w[2 * i + 1] = __fmul_rn((float)(i8)(v >> 8), d);
    }
}

// The "split" nibble layout of Q4_0, Q4_1, IQ4_NL: byte j holds weight j (low) and j + 16.
__device__ __forceinline__ void nibbles16(const u8* qs, int* lo_hi) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        u16 v = ld16(qs + 2 * i);
        lo_hi[2 * i] = v & 0xf;
        lo_hi[2 * i + 16] = (v >> 4) & 0xf;
        lo_hi[2 * i + 1] = (v >> 8) & 0xf;
        lo_hi[2 * i + 17] = (v >> 12) & 0xf;
    }
}

template <> __device__ __forceinline__ void dq<TQ4_0>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)c * 18;
    float d = h2f(ld16(b));
    int q[32];
    nibbles16(b + 2, q);
#pragma unroll
    for (int i = 0; i < 32; i++) w[i] = __fmul_rn((float)(q[i] - 8), d);
}

template <> __device__ __forceinline__ void dq<TIQ4_NL>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)c * 18;
    float d = h2f(ld16(b));
    int q[32];
    nibbles16(b + 2, q);
#pragma unroll
    for (int i = 0; i < 32; i++) w[i] = __fmul_rn(d, (float)KV_IQ4NL[q[i]]);
}

template <> __device__ __forceinline__ void dq<TQ4_1>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)c * 20;
    float d = h2f(ld16(b)), m = h2f(ld16(b + 2));
    int q[32];
    nibbles16(b + 4, q);
#pragma unroll
    for (int i = 0; i < 32; i++) w[i] = __fadd_rn(__fmul_rn((float)q[i], d), m);
}

// Q5_0 / Q5_1: bit j of the 32-bit qh is the fifth bit of weight j.
template <> __device__ __forceinline__ void dq<TQ5_0>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)c * 22;
    float d = h2f(ld16(b));
    u32 qh = (u32)ld16(b + 2) | ((u32)ld16(b + 4) << 16);
    int q[32];
    nibbles16(b + 6, q);
#pragma unroll
    for (int i = 0; i < 32; i++) {
        int l = q[i] | (((qh >> i) & 1) << 4);
        w[i] = __fmul_rn((float)(l - 16), d);
    }
}

template <> __device__ __forceinline__ void dq<TQ5_1>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)c * 24;
    float d = h2f(ld16(b)), m = h2f(ld16(b + 2));
    u32 qh = *(const u32*)(b + 4);
    int q[32];
    nibbles16(b + 8, q);
#pragma unroll
    for (int i = 0; i < 32; i++) {
        int l = q[i] | (((qh >> i) & 1) << 4);
        w[i] = __fadd_rn(__fmul_rn((float)l, d), m);
    }
}

// NF4: 64 weights per block (f16 absmax, 32 bytes); byte j holds weight j (low) and j + 32.
template <> __device__ __forceinline__ void dq<TNF4>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)(c >> 1) * 34;
    float d = h2f(ld16(b));
    int shift = (c & 1) * 4;
#pragma unroll
    for (int i = 0; i < 16; i++) {
        u16 v = ld16(b + 2 + 2 * i);
        w[2 * i] = __fmul_rn(d, NF4_LEVELS[(v >> shift) & 0xf]);
        w[2 * i + 1] = __fmul_rn(d, NF4_LEVELS[(v >> (8 + shift)) & 0xf]);
    }
}

// The 6-bit scale and min of sub-block j from the 12 scale bytes of Q4_K / Q5_K (s: 3 words).
__device__ __forceinline__ void k_scale_min(int j, const u32* s, int* sc, int* mn) {
#define KB(k) ((int)((s[(k) >> 2] >> (8 * ((k) & 3))) & 0xff))
    if (j < 4) {
        *sc = KB(j) & 63;
        *mn = KB(j + 4) & 63;
    } else {
        *sc = (KB(j + 4) & 0xf) | ((KB(j - 4) >> 6) << 4);
        *mn = (KB(j + 4) >> 4) | ((KB(j) >> 6) << 4);
    }
#undef KB
}

// Q4_K: 256 weights: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles in 4 groups of 32
// bytes (group g holds sub-block 2g in low nibbles, 2g + 1 in high). 144 bytes: 16-aligned.
template <> __device__ __forceinline__ void dq<TQ4_K>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)(c >> 3) * 144;
    int j = c & 7;
    float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
    u32 s[3] = {*(const u32*)(b + 4), *(const u32*)(b + 8), *(const u32*)(b + 12)};
    int sc, mn;
    k_scale_min(j, s, &sc, &mn);
    float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)mn);
    const uint4* qs = (const uint4*)(b + 16 + 32 * (j >> 1));
    int shift = (j & 1) * 4;
#pragma unroll
    for (int k = 0; k < 2; k++) {
        uint4 v = qs[k];
        u32 a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int l = (a[i] >> (8 * e + shift)) & 0xf;
                w[16 * k + 4 * i + e] = __fsub_rn(__fmul_rn(d1, (float)l), m1);
            }
    }
}

// Q5_K: as Q4_K with 32 bytes of fifth bits (bit j of byte i: weight i of sub-block j) before
// the nibbles. 176 bytes: 16-aligned.
template <> __device__ __forceinline__ void dq<TQ5_K>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)(c >> 3) * 176;
    int j = c & 7;
    float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
    u32 s[3] = {*(const u32*)(b + 4), *(const u32*)(b + 8), *(const u32*)(b + 12)};
    int sc, mn;
    k_scale_min(j, s, &sc, &mn);
    float d1 = __fmul_rn(d, (float)sc), m1 = __fmul_rn(dmin, (float)mn);
    const uint4* qh = (const uint4*)(b + 16);
    const uint4* qs = (const uint4*)(b + 48 + 32 * (j >> 1));
    int shift = (j & 1) * 4;
#pragma unroll
    for (int k = 0; k < 2; k++) {
        uint4 v = qs[k], h = qh[k];
        u32 a[4] = {v.x, v.y, v.z, v.w};
        u32 hb[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int l = ((a[i] >> (8 * e + shift)) & 0xf) | (((hb[i] >> (8 * e + j)) & 1) << 4);
                w[16 * k + 4 * i + e] = __fsub_rn(__fmul_rn(d1, (float)l), m1);
            }
    }
}

// Q6_K: 256 weights: 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales (one per
// 16 weights), f16 d. 210 bytes: 2-aligned. Chunk j: half j/4 (128 weights), quarter k = j%4.
template <> __device__ __forceinline__ void dq<TQ6_K>(const u8* row, int c, float* w) {
    const u8* b = row + (size_t)(c >> 3) * 210;
    int j = c & 7, half = j >> 2, k = j & 3;
    float d = h2f(ld16(b + 208));
    const u8* ql = b + 64 * half + 32 * (k & 1);
    const u8* qh = b + 128 + 32 * half;
    int nshift = (k >> 1) * 4, hshift = 2 * k;
    const i8* scales = (const i8*)(b + 192 + 8 * half + 2 * k);
    float d0 = __fmul_rn(d, (float)scales[0]), d1 = __fmul_rn(d, (float)scales[1]);
#pragma unroll
    for (int i = 0; i < 16; i++) {
        u16 l2 = ld16(ql + 2 * i), h2 = ld16(qh + 2 * i);
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int l = ((l2 >> (8 * e + nshift)) & 0xf) | (((h2 >> (8 * e + hshift)) & 3) << 4);
            int idx = 2 * i + e;
            w[idx] = __fmul_rn(idx < 16 ? d0 : d1, (float)(l - 32));
        }
    }
}
