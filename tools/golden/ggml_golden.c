// Quantizes the golden input rows with llama.cpp's own ggml and writes the bytes and ggml's
// dequantization of them, one file per type. Built and run by tools/make-golden.sh against the
// peer build of llama.cpp; never linked into qgguf.
//
//   ggml_golden DIR N_ROWS N_PER_ROW
//   reads DIR/inputs.f32, writes DIR/<type>.q and DIR/<type>.ggml.f32
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml.h"

// Reference quantizers of the activation formats, exported by libggml-base (ggml-quants.h).
void quantize_row_q8_1_ref(const float * x, void * y, int64_t k);
void quantize_row_q8_K_ref(const float * x, void * y, int64_t k);

static void write_file(const char * dir, const char * name, const char * ext, const void * p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    FILE * f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) { perror(path); exit(1); }
    fclose(f);
}

int main(int argc, char ** argv) {
    if (argc != 4) { fprintf(stderr, "usage: ggml_golden DIR N_ROWS N_PER_ROW\n"); return 2; }
    const char * dir = argv[1];
    const int64_t nrows = atoll(argv[2]), n_per_row = atoll(argv[3]), n = nrows * n_per_row;
    char path[4096];
    snprintf(path, sizeof path, "%s/inputs.f32", dir);
    FILE * f = fopen(path, "rb");
    float * x = malloc(n * sizeof(float));
    if (!f || fread(x, sizeof(float), n, f) != (size_t) n) { perror(path); return 1; }
    fclose(f);

    const enum ggml_type types[] = {
        GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0,
        GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
        GGML_TYPE_IQ4_NL, GGML_TYPE_Q8_1, GGML_TYPE_Q8_K,
    };
    float * y = malloc(n * sizeof(float));
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const enum ggml_type type = types[t];
        const size_t nbytes = ggml_row_size(type, n_per_row) * nrows;
        void * q = calloc(1, nbytes);
        if (type == GGML_TYPE_Q8_1) {
            quantize_row_q8_1_ref(x, q, n);
        } else if (type == GGML_TYPE_Q8_K) {
            quantize_row_q8_K_ref(x, q, n);
        } else {
            ggml_quantize_chunk(type, x, q, 0, nrows, n_per_row, NULL);
        }
        const char * name = ggml_type_name(type);
        write_file(dir, name, "q", q, nbytes);
        const struct ggml_type_traits * tt = ggml_get_type_traits(type);
        if (tt->to_float) {
            tt->to_float(q, y, n);
            write_file(dir, name, "ggml.f32", y, n * sizeof(float));
        }
        free(q);
    }
    free(x);
    free(y);
    return 0;
}
