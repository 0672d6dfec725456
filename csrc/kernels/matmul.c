/* Packed, cache-blocked SGEMM and the linear layers built on it. Compiled once per ISA (see simd.h).
 *
 * C[M,N] (+)= A[M,K] · B[K,N], A and B given by strides so that x·wᵀ, dy·w and dyᵀ·x need no transposed copies.
 * The BLIS loop nest, per work item (a band of rows × NC columns of C, owned by one thread):
 *
 *   for each KC block of K, in order         the K sum is never split between threads
 *     pack B[KC, NC] into NR-column panels    (stays in L2, used by the whole band)
 *     for each MC-row block of the band
 *       pack A[MC, KC] into MR-row panels
 *       for each MR-row panel of A            (stays in L1)
 *         for each NR-column panel of B       micro-kernel: MR×NR accumulators in registers
 *
 * Every output element is the same sequence of FMAs whatever the tile sizes or the thread that owns it, so the
 * tile sizes may follow the thread count while the bits do not. Only KC shapes the result, and it is a constant.
 *
 * An elementwise epilogue (enum post_op) can follow a tile's last KC block while the tile is still in L1: the
 * residual add after an attention or MLP projection, GELU after the MLP's first layer, GELU's derivative on the
 * gradient that goes back through it. Each saves a pass over a [tokens, width] array.
 */
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cllm.h"
#include "runtime/dispatch.h"
#include "gelu.h"
#include "runtime/memory.h"
#include "runtime/simd.h"

#if VW == 16
#define MR 12 /* 12 rows × 2 zmm = 24 accumulators of 32 registers */
#define NR 32
#elif VW == 8
#define MR 6 /* 6 rows × 2 ymm = 12 accumulators of 16 registers */
#define NR 16
#else
#define MR 4
#define NR (2 * VW > 8 ? 2 * VW : 8)
#endif
#define NV (NR / VW)
#define KC 256     /* K block: fixed, it decides the order of the K sum */
#define MC 192     /* rows of A packed at a time: a multiple of every MR */
#define PACK_GROUP 96 /* rows of a transposed A packed together: whole 64-byte lines and MR panels (measured) */
#define PACK_AHEAD 16 /* rows of a transposed A prefetched ahead of the packing */
#define B_AHEAD 8     /* k steps of a packed B panel prefetched ahead of the micro-kernel */
#define NC_MAX 512 /* columns of B packed at a time: KC×NC_MAX floats = 512 KiB fit in L2 */

/* The sums over M of linear_backward (dw, db) are cut into chunks of rows computed in parallel and added up the
 * sphere tree. The chunk count depends on the shape only; scratch for the dw partials stays under a cap. A dw of
 * DW_WHOLE_FLOATS or more has row panels enough for any thread count, so it is one GEMM over all of M (the output
 * head's: no 32 MB of partials). A chunk's db is summed from its dw GEMM's packed A (dyᵀ): dy is read once. */
#define DW_CHUNK_ROWS 1024
#define DW_SCRATCH_FLOATS ((int64_t)1 << 23)
#define DW_WHOLE_FLOATS ((int64_t)1 << 20)
#define DB_CHUNK_ROWS 64 /* db alone (no dw asked for) */

enum store_mode { STORE, ACCUMULATE, ADD_BIAS };

/* What becomes of a tile of C once its whole sum is in. P is post_in, G post_out: arrays shaped and strided as C.
 * The same vector functions as the standalone kernels (residual_forward, gelu.h), so the bits are theirs. */
enum post_op {
    POST_NONE,
    POST_RESIDUAL, /* C = P + C */
    POST_GELU,     /* G = gelu(C), C kept */
    POST_GELU_GRAD /* C = C·gelu'(P) */
};

typedef struct {
    int64_t M, N, K;
    const float *A; int64_t rsa, csa; /* A[i,k] = A[i*rsa + k*csa] */
    const float *B; int64_t rsb, csb; /* B[k,j] = B[k*rsb + j*csb] */
    float *C; int64_t ldc;            /* C[i,j] = C[i*ldc + j] */
    int accumulate;                   /* C += A·B (else C = A·B) */
    const float *bias;                /* C = A·B + bias[j]; NULL for none; not with accumulate */
    enum post_op post;                /* then this, on the final C */
    const float *post_in;
    float *post_out;
    float *row_sums;                  /* NULL, or row_sums[i] += Σ_k A[i,k] (k in order), while packing A */
    int64_t band, bands, nc, tiles_n; /* work items: bands of rows × NC-column tiles (plan_items) */
} gemm_t;

#if VW == 16
/* dst[k·ldd + i] <- a[i·rsa + k] for i < rows (<= 16), k < kc: a block of rows transposed through 16×16
 * in-register transposes, about 3× the scalar copy. Packs A's row panels (12 rows) and wᵀ's column panels. */
static void transpose_16_rows(const float *a, int64_t rsa, int rows, int64_t kc, float *dst, int64_t ldd)
{
    const __mmask16 valid = (__mmask16)((1u << rows) - 1);
    int64_t k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 r[16], t[16], u[16];
        for (int i = 0; i < 16; i++) r[i] = i < rows ? _mm512_loadu_ps(a + i * rsa + k) : _mm512_setzero_ps();
        for (int i = 0; i < 16; i += 2) { /* per 128-bit lane: pairs of rows interleaved */
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int g = 0; g < 4; g++) { /* u[4g+c], lane L: rows 4g..4g+3 at column 4L+c */
            u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
            u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
            u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
            u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
        }
        for (int c = 0; c < 4; c++) { /* a 4×4 transpose of lanes gives column 4L+c of all 16 rows */
            __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
            __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
            __m512 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
            _mm512_mask_storeu_ps(dst + (k + c) * ldd, valid, _mm512_shuffle_f32x4(v0, v2, 0x88));
            _mm512_mask_storeu_ps(dst + (k + 4 + c) * ldd, valid, _mm512_shuffle_f32x4(v0, v2, 0xDD));
            _mm512_mask_storeu_ps(dst + (k + 8 + c) * ldd, valid, _mm512_shuffle_f32x4(v1, v3, 0x88));
            _mm512_mask_storeu_ps(dst + (k + 12 + c) * ldd, valid, _mm512_shuffle_f32x4(v1, v3, 0xDD));
        }
    }
    for (; k < kc; k++)
        for (int i = 0; i < rows; i++) dst[k * ldd + i] = a[i * rsa + k];
}
#endif

/* Ap[mc/MR][kc][MR] <- A[i0 : i0+mc, k0 : k0+kc], rows past mc zero-padded. */
static void pack_A(const gemm_t *g, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float *Ap)
{
    const float *a = g->A + i0 * g->rsa + k0 * g->csa;
    if (g->csa == 1) { /* rows of A contiguous: read each row once */
        int64_t i = 0;
#if VW == 16 && MR == 12
        for (; i + MR <= mc; i += MR) transpose_16_rows(a + i * g->rsa, g->rsa, MR, kc, Ap + i * kc, MR);
#endif
        for (; i < mc; i++) {
            float *dst = Ap + (i / MR) * MR * kc + i % MR;
            for (int64_t k = 0; k < kc; k++) dst[k * MR] = a[i * g->rsa + k];
        }
    } else { /* columns of A contiguous (Aᵀ given): PACK_GROUP rows (whole cache lines) of each column at a time */
        for (int64_t p0 = 0; p0 < mc; p0 += PACK_GROUP)
            for (int64_t k = 0; k < kc; k++) {
                if (g->rsa == 1 && k + PACK_AHEAD < kc) /* rows far apart: hardware prefetch does not see them */
                    for (int64_t p = p0; p < cllm_min(mc, p0 + PACK_GROUP); p += 16)
                        cllm_prefetch(a + p + (k + PACK_AHEAD) * g->csa);
                for (int64_t p = p0; p < cllm_min(mc, p0 + PACK_GROUP); p += MR) {
                    float *dst = Ap + p * kc + k * MR;
                    const float *src = a + p * g->rsa + k * g->csa;
                    int64_t rows = cllm_min(MR, mc - p);
                    if (g->rsa == 1 && rows == MR) memcpy(dst, src, MR * sizeof(float)); /* a fixed-size vector copy */
                    else
                        for (int64_t r = 0; r < rows; r++) dst[r] = src[r * g->rsa];
                }
            }
    }
    int64_t padded = cllm_round_up(mc, MR);
    for (int64_t i = mc; i < padded; i++)
        for (int64_t k = 0; k < kc; k++) Ap[(i / MR) * MR * kc + k * MR + i % MR] = 0.0f;
}

/* Bp[nc/NR][kc][NR] <- B[k0 : k0+kc, j0 : j0+nc], columns past nc zero-padded. */
static void pack_B(const gemm_t *g, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float *Bp)
{
    for (int64_t p = 0; p < nc; p += NR, Bp += NR * kc) {
        int64_t cols = cllm_min(NR, nc - p);
        const float *b = g->B + k0 * g->rsb + (j0 + p) * g->csb;
        if (g->csb == 1) {
            for (int64_t k = 0; k < kc; k++) {
                if (cols == NR) {
                    memcpy(Bp + k * NR, b + k * g->rsb, NR * sizeof(float));
                } else {
                    memcpy(Bp + k * NR, b + k * g->rsb, (size_t)cols * sizeof(float));
                    for (int64_t c = cols; c < NR; c++) Bp[k * NR + c] = 0.0f;
                }
            }
        } else {
#if VW == 16 && NR == 32
            if (cols == NR && g->rsb == 1) { /* wᵀ: B's columns are w's rows */
                transpose_16_rows(b, g->csb, 16, kc, Bp, NR);
                transpose_16_rows(b + 16 * g->csb, g->csb, 16, kc, Bp + 16, NR);
                continue;
            }
#endif
            for (int64_t c = 0; c < cols; c++)
                for (int64_t k = 0; k < kc; k++) Bp[k * NR + c] = b[c * g->csb + k * g->rsb];
            for (int64_t c = cols; c < NR; c++)
                for (int64_t k = 0; k < kc; k++) Bp[k * NR + c] = 0.0f;
        }
    }
}

/* g->row_sums[i0 : i0+mc] += Σ_k A[i, k] over the packed block Ap (mc × kc), k in order. */
static void add_row_sums(const gemm_t *g, int64_t i0, int64_t mc, int64_t kc, const float *Ap)
{
    for (int64_t p = 0; p < mc; p += MR) {
        float s[MR];
        const float *a = Ap + p * kc;
        for (int r = 0; r < MR; r++) s[r] = p + r < mc ? g->row_sums[i0 + p + r] : 0.0f;
        for (int64_t k = 0; k < kc; k++)
            for (int r = 0; r < MR; r++) s[r] += a[k * MR + r];
        for (int r = 0; r < MR && p + r < mc; r++) g->row_sums[i0 + p + r] = s[r];
    }
}

/* C[MR,NR] (mode)= Ap[kc][MR] · Bp[kc][NR]: the only place where the flops are. */
static void micro_kernel(int64_t kc, const float *restrict Ap, const float *restrict Bp, float *restrict C,
                         int64_t ldc, enum store_mode mode, const float *restrict bias)
{
    vec acc[MR][NV];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NV; j++) acc[i][j] = vzero();
    if (mode == ACCUMULATE) /* C was written a KC block ago and has left L1 and L2: fetch it during the FMAs */
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j += 16) cllm_prefetch(C + i * ldc + j);
    for (int64_t k = 0; k < kc; k++, Ap += MR, Bp += NR) {
        vec b[NV];
        for (int j = 0; j < NR; j += 16) cllm_prefetch(Bp + B_AHEAD * NR + j); /* B streams from L2 */
        for (int j = 0; j < NV; j++) b[j] = vload(Bp + j * VW);
        for (int i = 0; i < MR; i++) {
            vec a = vset1(Ap[i]);
            for (int j = 0; j < NV; j++) acc[i][j] = vfmadd(a, b[j], acc[i][j]);
        }
    }
    for (int i = 0; i < MR; i++) {
        float *c = C + i * ldc;
        for (int j = 0; j < NV; j++) {
            vec v = acc[i][j];
            if (mode == ACCUMULATE) v = vadd(vloadu(c + j * VW), v);
            else if (mode == ADD_BIAS) v = vadd(v, vloadu(bias + j * VW));
            vstoreu(c + j * VW, v);
        }
    }
}

/* A ragged tile (rows < MR or cols < NR): the same kernel into a scratch tile, then the same single add. */
static void edge_kernel(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, int64_t rows,
                        int64_t cols, enum store_mode mode, const float *bias)
{
    _Alignas(CLLM_ALIGN) float tile[MR * NR];
    micro_kernel(kc, Ap, Bp, tile, NR, STORE, NULL);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float v = tile[i * NR + j];
            if (mode == ACCUMULATE) v = C[i * ldc + j] + v;
            else if (mode == ADD_BIAS) v = v + bias[j];
            C[i * ldc + j] = v;
        }
}

static inline void post_vec(enum post_op op, float *c, const float *p, float *g)
{
    if (op == POST_RESIDUAL) vstoreu(c, vadd(vloadu(p), vloadu(c)));
    else if (op == POST_GELU) vstoreu(g, gelu_vec(vloadu(c)));
    else if (op == POST_GELU_GRAD) vstoreu(c, gelu_grad_vec(vloadu(p), vloadu(c)));
}

/* g->post on C[i0 : i0+rows, j0 : j0+cols]; a ragged end of a row through one padded register. */
static void finish_tile(const gemm_t *g, int64_t i0, int64_t j0, int64_t rows, int64_t cols)
{
    for (int64_t i = i0; i < i0 + rows; i++) {
        int64_t at = i * g->ldc + j0, j = 0;
        float *c = g->C + at, *out = g->post_out ? g->post_out + at : NULL;
        const float *in = g->post_in ? g->post_in + at : NULL;
        for (; j + VW <= cols; j += VW) post_vec(g->post, c + j, in ? in + j : NULL, out ? out + j : NULL);
        if (j < cols) {
            _Alignas(CLLM_ALIGN) float tc[VW] = {0}, tp[VW] = {0}, tg[VW];
            size_t left = sizeof(float) * (size_t)(cols - j);
            memcpy(tc, c + j, left);
            if (in) memcpy(tp, in + j, left);
            post_vec(g->post, tc, tp, tg);
            memcpy(c + j, tc, left);
            if (out) memcpy(out + j, tg, left);
        }
    }
}

/* Work item `item` of g: a band of rows × NC columns of C, over the whole K range. Each packed B block is used by
 * every MC-row block of the band; Ap, Bp are the calling thread's packing buffers. */
static void gemm_item(const gemm_t *g, int64_t item, float *Ap, float *Bp)
{
    int64_t i0 = (item % g->bands) * g->band, j0 = (item / g->bands) * g->nc;
    int64_t mb = cllm_min(g->band, g->M - i0), nc = cllm_min(g->nc, g->N - j0);
    if (g->K == 0 && !g->accumulate) { /* an empty sum: C = bias or 0 */
        for (int64_t i = 0; i < mb; i++)
            for (int64_t j = 0; j < nc; j++) g->C[(i0 + i) * g->ldc + j0 + j] = g->bias ? g->bias[j0 + j] : 0.0f;
        if (g->post) finish_tile(g, i0, j0, mb, nc);
    }
    for (int64_t k0 = 0; k0 < g->K; k0 += KC) {
        int64_t kc = cllm_min(KC, g->K - k0);
        enum store_mode mode = (k0 > 0 || g->accumulate) ? ACCUMULATE : (g->bias ? ADD_BIAS : STORE);
        pack_B(g, k0, kc, j0, nc, Bp);
        for (int64_t ic = i0; ic < i0 + mb; ic += MC) {
            int64_t mc = cllm_min(MC, i0 + mb - ic);
            pack_A(g, ic, mc, k0, kc, Ap);
            if (g->row_sums && j0 == 0) add_row_sums(g, ic, mc, kc, Ap); /* one item per band does it */
            for (int64_t ir = 0; ir < mc; ir += MR) {
                int64_t panel_rows = cllm_min(MR, mc - ir);
                int last_k = g->post && k0 + kc == g->K;
                if (last_k && g->post_in) /* the epilogue's input for this row panel, into L2 during the FMAs */
                    cllm_prefetch_rows_l2(g->post_in + (ic + ir) * g->ldc + j0, g->ldc, panel_rows, nc);
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    float *c = g->C + (ic + ir) * g->ldc + j0 + jr;
                    const float *bias = g->bias ? g->bias + j0 + jr : NULL;
                    const float *a = Ap + ir * kc, *b = Bp + jr * kc;
                    int64_t cols = cllm_min(NR, nc - jr);
                    if (panel_rows == MR && cols == NR) micro_kernel(kc, a, b, c, g->ldc, mode, bias);
                    else edge_kernel(kc, a, b, c, g->ldc, panel_rows, cols, mode, bias);
                }
                if (last_k) /* a whole row panel at once, still in L1/L2: its long rows let GELU's chains of vector
                               operations overlap, which one 32-column tile at a time did not */
                    finish_tile(g, ic + ir, j0, panel_rows, nc);
            }
        }
    }
}

/* Split C into bands of rows × NC-column blocks: as few as give each thread a couple of items (fewer items means
 * fewer repacks of B), NC as wide as L2 allows. */
static void plan_items(gemm_t *g, int64_t min_items)
{
    if (g->M == 0 || g->N == 0) {
        g->bands = g->tiles_n = 0;
        return;
    }
    g->tiles_n = cllm_ceil_div(g->N, NC_MAX);
    g->bands = cllm_min(cllm_ceil_div(min_items, g->tiles_n), cllm_ceil_div(g->M, MR));
    while (g->bands * g->tiles_n < min_items && cllm_ceil_div(g->N, g->tiles_n) > NR) g->tiles_n *= 2;
    g->band = cllm_round_up(cllm_ceil_div(g->M, g->bands), MR);
    g->nc = cllm_round_up(cllm_ceil_div(g->N, g->tiles_n), NR);
    g->bands = cllm_ceil_div(g->M, g->band);
    g->tiles_n = cllm_ceil_div(g->N, g->nc);
}

/* The calling thread's packing buffers for A (MC×KC) and B (KC×NC_MAX), kept for the thread's life: OpenMP's
 * worker threads persist, so the buffers are allocated (and their pages faulted in) once, not on every call. */
static float *packing_buffer(void)
{
    static CLLM_THREAD_LOCAL float *buffer = NULL;
    if (!buffer) buffer = cllm_alloc(sizeof(float) * (MC * KC + KC * NC_MAX));
    return buffer;
}

/* Run several independent GEMMs as one pool of work items shared by num_threads threads. */
static int gemm_run(gemm_t *gs, int n, int num_threads)
{
    int64_t total = 0, *first = malloc(sizeof(int64_t) * (n + 1));
    if (!first) return CLLM_ENOMEM;
    /* Work items per problem in proportion to its flops: one thread wants the fewest, several want ~4 each
     * so that dynamic scheduling can even out uneven items. */
    double flops = 0.0, target = num_threads > 1 ? 4.0 * num_threads : 1.0;
    for (int p = 0; p < n; p++) flops += (double)gs[p].M * gs[p].N * (gs[p].K + 1);
    for (int p = 0; p < n; p++) {
        double share = flops > 0 ? (double)gs[p].M * gs[p].N * (gs[p].K + 1) / flops : 1.0;
        plan_items(&gs[p], (int64_t)(target * share + 0.999));
        first[p] = total;
        total += gs[p].bands * gs[p].tiles_n;
    }
    first[n] = total;
    int failed = 0;
    int nt = (int)cllm_max(1, cllm_min(num_threads, total));
#pragma omp parallel num_threads(nt) if (total > 0)
    {
        float *Ap = packing_buffer(), *Bp = Ap ? Ap + MC * KC : NULL;
        if (!Ap || !Bp) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < total; t++) {
            if (!Ap || !Bp) continue;
            int p = 0;
            while (t >= first[p + 1]) p++;
            gemm_item(&gs[p], t - first[p], Ap, Bp);
        }
    }
    free(first);
    return failed ? CLLM_ENOMEM : 0;
}

int ISA_FN(cllm_linear_forward)(const float *x, const float *w, const float *b, const float *residual, float *y,
                                float *gelu_y, int64_t M, int64_t K, int64_t N, int num_threads)
{
    gemm_t g = {.M = M, .N = N, .K = K, .A = x, .rsa = K, .csa = 1, .B = w, .rsb = 1, .csb = K,
                .C = y, .ldc = N, .bias = b, .post = residual ? POST_RESIDUAL : gelu_y ? POST_GELU : POST_NONE,
                .post_in = residual, .post_out = gelu_y};
    return gemm_run(&g, 1, num_threads);
}

/* db[N] (+)= Σ_m dy[m,:], in DB_CHUNK_ROWS row chunks added up the sphere tree. */
static int bias_backward(const float *dy, float *db, int64_t M, int64_t N, int accumulate, int num_threads)
{
    int64_t chunks = cllm_max(1, cllm_ceil_div(M, DB_CHUNK_ROWS));
    float *partials = cllm_alloc(sizeof(float) * chunks * N);
    if (!partials) return CLLM_ENOMEM;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        float *s = partials + c * N;
        for (int64_t j = 0; j < N; j++) s[j] = 0.0f;
        for (int64_t m = c * DB_CHUNK_ROWS; m < cllm_min(M, (c + 1) * DB_CHUNK_ROWS); m++)
            for (int64_t j = 0; j < N; j++) s[j] += dy[m * N + j];
    }
    cllm_tree_reduce(partials, chunks, N, db, accumulate, num_threads);
    cllm_free(partials);
    return 0;
}

int ISA_FN(cllm_linear_backward)(const float *dy, const float *x, const float *w, const float *gelu_x, float *dx,
                                 float *dw, float *db, int64_t M, int64_t K, int64_t N, int accumulate,
                                 int num_threads)
{
    /* dw's M sum: chunks of at least DW_CHUNK_ROWS rows, as many as the scratch cap allows. */
    int64_t chunks = N * K >= DW_WHOLE_FLOATS ? 1 : cllm_max(1, cllm_ceil_div(M, DW_CHUNK_ROWS));
    chunks = cllm_min(chunks, cllm_max(1, DW_SCRATCH_FLOATS / cllm_max(1, N * K)));
    int64_t rows = cllm_ceil_div(M, chunks);
    chunks = M > 0 ? cllm_ceil_div(M, rows) : 1;
    float *partials = NULL, *db_partials = NULL; /* dw's and db's per chunk */
    gemm_t *gs = malloc(sizeof(gemm_t) * (size_t)(1 + chunks));
    if (!gs || (dw && chunks > 1 && !(partials = cllm_scratch_get(sizeof(float) * chunks * N * K))) ||
        (dw && db && !(db_partials = cllm_alloc(sizeof(float) * chunks * N)))) {
        cllm_scratch_put(partials);
        free(gs);
        return CLLM_ENOMEM;
    }
    if (db_partials) memset(db_partials, 0, sizeof(float) * (size_t)(chunks * N)); /* the chunks' sums start at 0 */
    int n = 0;
    if (dx) /* dx[M,K] = dy[M,N] · w[N,K] (· gelu'(gelu_x)) */
        gs[n++] = (gemm_t){.M = M, .N = K, .K = N, .A = dy, .rsa = N, .csa = 1, .B = w, .rsb = K, .csb = 1,
                           .C = dx, .ldc = K, .post = gelu_x ? POST_GELU_GRAD : POST_NONE, .post_in = gelu_x};
    for (int64_t c = 0; dw && c < chunks; c++) { /* dw[N,K] (+)= dy[rows,N]ᵀ · x[rows,K] per chunk */
        int64_t m0 = c * rows, mrows = cllm_min(rows, M - m0);
        gs[n++] = (gemm_t){.M = N, .N = K, .K = mrows, .A = dy + m0 * N, .rsa = 1, .csa = N,
                           .B = x + m0 * K, .rsb = K, .csb = 1,
                           .C = partials ? partials + c * N * K : dw, .ldc = K,
                           .accumulate = partials ? 0 : accumulate,
                           .row_sums = db_partials ? db_partials + c * N : NULL};
    }
    int err = n ? gemm_run(gs, n, num_threads) : 0;
    if (!err && partials) cllm_tree_reduce(partials, chunks, N * K, dw, accumulate, num_threads);
    if (!err && db_partials) cllm_tree_reduce(db_partials, chunks, N, db, accumulate, num_threads);
    cllm_scratch_put(partials);
    cllm_free(db_partials);
    free(gs);
    if (!err && db && !dw) err = bias_backward(dy, db, M, N, accumulate, num_threads);
    return err;
}

/* ---- linear_forward_packed: y = x·wᵀ + b for a few rows (the decode step), weights packed once ------------------
 * wp (ceil(N/CLLM_PANEL), K, CLLM_PANEL): wp[p][k][c] = w[p·PANEL + c][k], zero past N, so each panel of PANEL
 * output columns streams from memory once, in order, for all M rows: one pass over the weights per step, which is
 * what bounds a decode step. Threads own contiguous ranges of panels (columns): no sum is split.
 * y[m,n] is the GEMM's chain exactly: per KC block of k, FMAs from 0 in k order, the block sums added in order to
 * the bias (or nothing) and then to the running total; so a row has the bits linear_forward gives it in any batch. */
#define PANEL CLLM_PANEL
#define PV (PANEL / VW) /* vectors per panel row */
#if VW == 16
#define PR 4 /* rows × panels per tile: 4 × 3 × 2 = 24 accumulators of 32 zmm */
#define PG 3
#elif VW == 8
#define PR 3 /* 3 × 1 × 4 = 12 accumulators of 16 ymm */
#define PG 1
#else
#define PR 1
#define PG 1
#endif
#define MIN_PART_FMAS 16384 /* a thread's least share of the work: less costs more to hand out than it saves */

/* y[r, c] for r < rows, c < ncols (<= panels·PANEL) over all of K; rows and panels are constants where it is
 * called, so the accumulators live in registers.   x rows K apart, y rows ldy apart, panels K·PANEL apart. */
static ALWAYS_INLINE void packed_tile(const float *x, int64_t K, const float *wp, const float *bias, float *y,
                                      int64_t ldy, int64_t ncols, const int rows, const int panels)
{
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        int64_t kend = cllm_min(K, k0 + KC);
        vec acc[PR][PG * PV];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < panels * PV; j++) acc[r][j] = vzero();
        for (int64_t k = k0; k < kend; k++) {
            vec w[PG * PV];
            for (int p = 0; p < panels; p++)
                for (int v = 0; v < PV; v++) w[p * PV + v] = vloadu(wp + p * K * PANEL + k * PANEL + v * VW);
            for (int r = 0; r < rows; r++) {
                vec xr = vset1(x[r * K + k]);
                for (int j = 0; j < panels * PV; j++) acc[r][j] = vfmadd(xr, w[j], acc[r][j]);
            }
        }
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < panels * PV; j++) {
                int64_t c = (int64_t)j * VW;
                float *yc = y + r * ldy + c;
                if (c + VW <= ncols) {
                    vec v = acc[r][j];
                    if (k0 > 0) v = vadd(vloadu(yc), v);
                    else if (bias) v = vadd(v, vloadu(bias + c));
                    vstoreu(yc, v);
                } else if (c < ncols) { /* the ragged last columns, as the GEMM's edge_kernel adds them */
                    _Alignas(CLLM_ALIGN) float t[VW];
                    vstoreu(t, acc[r][j]);
                    for (int64_t u = 0; u < ncols - c; u++)
                        yc[u] = k0 > 0 ? yc[u] + t[u] : (bias ? t[u] + bias[c + u] : t[u]);
                }
            }
    }
}

#define PACKED_TILE(R, P) packed_tile(x, K, wp, bias, y, ldy, ncols, R, P)
#if PR == 4
#define PACKED_ROWS_CASES(P)                                                                                      \
    case 1: PACKED_TILE(1, P); break;                                                                             \
    case 2: PACKED_TILE(2, P); break;                                                                             \
    case 3: PACKED_TILE(3, P); break;                                                                             \
    default: PACKED_TILE(4, P); break;
#elif PR == 3
#define PACKED_ROWS_CASES(P)                                                                                      \
    case 1: PACKED_TILE(1, P); break;                                                                             \
    case 2: PACKED_TILE(2, P); break;                                                                             \
    default: PACKED_TILE(3, P); break;
#else
#define PACKED_ROWS_CASES(P) default: PACKED_TILE(1, P); break;
#endif

/* One tile of `rows` (<= PR) rows and `panels` (PG, or 1 for the last few) panels. */
static void packed_tiles(const float *x, int64_t K, const float *wp, const float *bias, float *y, int64_t ldy,
                         int64_t ncols, int rows, int panels)
{
    if (panels == PG) {
        switch (rows) { PACKED_ROWS_CASES(PG) }
    } else {
        switch (rows) { PACKED_ROWS_CASES(1) }
    }
}

/* Part `part` of `parts` of linear_forward_packed: the columns of panels [P·part/parts, P·(part+1)/parts) for all
 * M rows; returns that range's first and last column (c0, c1) in *cols. What one thread does, here or in
 * decode.c's single parallel region. */
void ISA_FN(cllm_linear_packed_part)(const float *x, const float *wp, const float *b, float *y, int64_t M, int64_t K,
                                     int64_t N, int64_t part, int64_t parts, int64_t cols[2])
{
    int64_t P = cllm_ceil_div(N, PANEL), p_end = P * (part + 1) / parts, p = P * part / parts;
    cols[0] = cllm_min(N, p * PANEL), cols[1] = cllm_min(N, p_end * PANEL);
    while (p < p_end) { /* a group of panels stays in L2 while every row uses it */
        int panels = p + PG <= p_end ? PG : 1;
        for (int64_t r = 0; r < M; r += PR)
            packed_tiles(x + r * K, K, wp + p * K * PANEL, b ? b + p * PANEL : NULL, y + r * N + p * PANEL, N,
                         cllm_min(N - p * PANEL, panels * PANEL), (int)cllm_min(PR, M - r), panels);
        p += panels;
    }
}

int ISA_FN(cllm_linear_forward_packed)(const float *x, const float *wp, const float *b, float *y, int64_t M,
                                       int64_t K, int64_t N, int num_threads)
{
    int64_t P = cllm_ceil_div(N, PANEL), work = cllm_ceil_div(M * N * K, MIN_PART_FMAS);
    int64_t parts = cllm_max(1, cllm_min(cllm_min(num_threads, P), work));
#pragma omp parallel for num_threads((int)parts) schedule(static)
    for (int64_t t = 0; t < parts; t++) {
        int64_t cols[2];
        ISA_FN(cllm_linear_packed_part)(x, wp, b, y, M, K, N, t, parts, cols);
    }
    return 0;
}
