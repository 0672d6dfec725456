/* Rotary position embedding, HF Llama's half-split form (rotate_half, rope.h), and its inverse (the backward).
 * Compiled once per ISA (simd.h). */
#include "cllm.h"
#include "runtime/dispatch.h"
#include "rope.h"

/* Each head rotated at its row's position pos[m] (rope.h).   x, out (M, H, hs), out may be x; pos (M);
 * cos_t, sin_t (P, hs/2) */
int ISA_FN(cllm_rope)(const float *x, float *out, const int32_t *pos, const float *cos_t, const float *sin_t,
                      int64_t M, int64_t H, int64_t hs, int inverse, int num_threads)
{
    const int64_t half = hs / 2;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *c = cos_t + (int64_t)pos[m] * half, *s = sin_t + (int64_t)pos[m] * half;
        for (int64_t h = 0; h < H; h++) rope_head(x + (m * H + h) * hs, out + (m * H + h) * hs, c, s, half, inverse);
    }
    return 0;
}
