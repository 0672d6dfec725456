/* Causal multi-head self-attention, forward and backward. Compiled once per ISA (simd.h).
 *
 * One (batch, head) pair is one unit of parallel work, done whole by one thread, so nothing races and every sum
 * has one order. Inside a unit, QR query rows at a time meet the keys in blocks of KB with an online softmax:
 * the scores never exist beyond a QR×KB tile, and the backward recomputes them from q, k and the saved
 * log-sum-exp (FlashAttention's scheme). K (and V, for the backward) are first transposed to [hs][T] so that
 * scores are vector FMAs along the keys.
 *
 * Shapes: qkv (B,T,3C) with q, k, v in that order and head h at columns h·hs .. h·hs+hs of each; out, dout (B,T,C);
 * lse (B,NH,T); hs = C/NH. Row i of one head's q is qkv + i·3C + h·hs; its k is C further, its v 2C further.
 */
#include <math.h>
#include <string.h>

#include "cllm.h"
#include "dispatch.h"
#include "memory.h"

#define QR 8  /* query rows per tile */
#define KB 64 /* keys per block: a multiple of every VW */
_Static_assert(CLLM_DECODE_UNIT_SCRATCH(0) == KB, "a decode unit's scratch holds one block of scores");
#define MIN_THREAD_WORK 8192 /* decode: a thread's least share of score multiply-adds worth a parallel region */

typedef struct {
    const float *q, *k, *v; /* row 0 of this head's q, k, v; rows are ld floats apart */
    int64_t ld, T, hs, Tp;  /* Tp: T rounded up to VW, the row length of the transposed copies */
    float scale;            /* 1/√hs */
} head_t;

/* Head hh of batch row b of qkv (B,T,3C). */
static head_t head_of(const float *qkv, int64_t b, int64_t hh, int64_t T, int64_t C, int64_t NH)
{
    int64_t hs = C / NH;
    const float *base = qkv + b * T * 3 * C + hh * hs;
    head_t h = {base, base + C, base + 2 * C, 3 * C, T, hs, cllm_round_up(T, VW), 1.0f / sqrtf((float)hs)};
    return h;
}

/* dst[d][j] = src[j·ld + d] for j < T (zero up to Tp).   src rows (T,hs) -> dst (hs,Tp)
 * 16 rows at a time: their hs values stay in L1 while each destination row gets 16 contiguous floats. */
static void transpose_rows(const float *src, int64_t ld, int64_t T, int64_t hs, int64_t Tp, float *dst)
{
    for (int64_t j0 = 0; j0 < T; j0 += 16) {
        int64_t nj = cllm_min(16, T - j0);
        for (int64_t d = 0; d < hs; d++)
            for (int64_t jj = 0; jj < nj; jj++) dst[d * Tp + j0 + jj] = src[(j0 + jj) * ld + d];
    }
    for (int64_t d = 0; d < hs; d++)
        for (int64_t j = T; j < Tp; j++) dst[d * Tp + j] = 0.0f;
}

/* dst[j][:] = src[j·ld : j·ld + hs] for j < T.   src rows (T,hs) ld apart -> dst (T,hs) contiguous
 * The rows of one head lie 3C floats apart in qkv: read again and again with that stride they fall into a few
 * L1 sets and evict each other, so a head's K and V rows are read (and dK, dV summed) in contiguous copies. */
static void copy_rows(const float *src, int64_t ld, int64_t T, int64_t hs, float *dst)
{
    for (int64_t j = 0; j < T; j++) memcpy(dst + j * hs, src + j * ld, sizeof(float) * (size_t)hs);
}

/* s[r][jj] = scale · Σ_d a_r[d]·bt[d][j0+jj] for r < QR, jj < nkv (a multiple of VW).
 * a: QR rows of length hs (rows past the tile repeat the last one); bt (hs,Tp); s (QR,KB). */
static void tile_scores(const float *a[QR], const float *bt, int64_t Tp, int64_t hs, int64_t j0, int64_t nkv,
                        float scale, float *s)
{
    vec vs = vset1(scale);
    int64_t jv = 0;
    for (; jv + 2 * VW <= nkv; jv += 2 * VW) { /* two vectors of keys: 16 FMAs per 2 loads + 8 broadcasts */
        vec acc0[QR], acc1[QR];
        for (int r = 0; r < QR; r++) acc0[r] = acc1[r] = vzero();
        const float *b = bt + j0 + jv;
        for (int64_t d = 0; d < hs; d++) {
            vec b0 = vloadu(b + d * Tp), b1 = vloadu(b + d * Tp + VW);
            for (int r = 0; r < QR; r++) {
                vec ar = vset1(a[r][d]);
                acc0[r] = vfmadd(ar, b0, acc0[r]);
                acc1[r] = vfmadd(ar, b1, acc1[r]);
            }
        }
        for (int r = 0; r < QR; r++) {
            vstoreu(s + r * KB + jv, vmul(acc0[r], vs));
            vstoreu(s + r * KB + jv + VW, vmul(acc1[r], vs));
        }
    }
    for (; jv < nkv; jv += VW) {
        vec acc[QR];
        for (int r = 0; r < QR; r++) acc[r] = vzero();
        const float *b = bt + j0 + jv;
        for (int64_t d = 0; d < hs; d++) {
            vec bv = vloadu(b + d * Tp);
            for (int r = 0; r < QR; r++) acc[r] = vfmadd(vset1(a[r][d]), bv, acc[r]);
        }
        for (int r = 0; r < QR; r++) vstoreu(s + r * KB + jv, vmul(acc[r], vs));
    }
}

/* acc[r][:] += Σ_jj p[r][jj] · rows[jj][:] for r < QR, jj < nk.   p (QR,KB), rows nk × hs (ld apart),
 * acc (QR,hs) */
static void tile_weighted_rows(const float *p, const float *rows, int64_t ld, int64_t nk, int64_t hs, float *acc)
{
    int64_t d = 0;
    for (; d + 2 * VW <= hs; d += 2 * VW) { /* two vectors of each row at a time */
        vec a0[QR], a1[QR];
        for (int r = 0; r < QR; r++) a0[r] = vloadu(acc + r * hs + d), a1[r] = vloadu(acc + r * hs + d + VW);
        for (int64_t jj = 0; jj < nk; jj++) {
            vec x0 = vloadu(rows + jj * ld + d), x1 = vloadu(rows + jj * ld + d + VW);
            for (int r = 0; r < QR; r++) {
                vec pr = vset1(p[r * KB + jj]);
                a0[r] = vfmadd(pr, x0, a0[r]);
                a1[r] = vfmadd(pr, x1, a1[r]);
            }
        }
        for (int r = 0; r < QR; r++) vstoreu(acc + r * hs + d, a0[r]), vstoreu(acc + r * hs + d + VW, a1[r]);
    }
    for (; d + VW <= hs; d += VW) {
        vec a[QR];
        for (int r = 0; r < QR; r++) a[r] = vloadu(acc + r * hs + d);
        for (int64_t jj = 0; jj < nk; jj++) {
            vec x = vloadu(rows + jj * ld + d);
            for (int r = 0; r < QR; r++) a[r] = vfmadd(vset1(p[r * KB + jj]), x, a[r]);
        }
        for (int r = 0; r < QR; r++) vstoreu(acc + r * hs + d, a[r]);
    }
    for (; d < hs; d++)
        for (int r = 0; r < QR; r++) {
            float a = acc[r * hs + d];
            for (int64_t jj = 0; jj < nk; jj++) a = sfmadd(p[r * KB + jj], rows[jj * ld + d], a);
            acc[r * hs + d] = a;
        }
}

static void scale_row(float *x, int64_t n, float a)
{
    vec va = vset1(a);
    int64_t d = 0;
    for (; d + VW <= n; d += VW) vstoreu(x + d, vmul(vloadu(x + d), va));
    for (; d < n; d++) x[d] *= a;
}

/* Query rows i0 .. i0+QR of the tile (clamped to T-1) as pointers into rows of length hs, ld apart. */
static void tile_rows(const float *base, int64_t ld, int64_t i0, int64_t T, const float *rows[QR])
{
    for (int r = 0; r < QR; r++) rows[r] = base + cllm_min(i0 + r, T - 1) * ld;
}

/* One query row meets one block of keys (online softmax).   sr (KB): the row's scores for this block, of which
 * the first `valid` count (the causal mask); on return sr holds e^(s - m) there and 0 up to KB. *m, *l: the
 * row's running max and sum of exponentials; acc (hs): its running Σ p·v, rescaled when the max grows.
 * The forward (QR rows at a time) and the decode step (one row) share it, so that they give the same bits. */
static void softmax_block_row(float *sr, int64_t valid, float *m, float *l, float *acc, int64_t hs)
{
    float mx = *m;
    int64_t jj = 0;
    if (valid >= VW) {
        vec vm = vloadu(sr);
        for (jj = VW; jj + VW <= valid; jj += VW) vm = vmax(vm, vloadu(sr + jj));
        float bm = vhmax(vm);
        mx = bm > mx ? bm : mx;
    }
    for (; jj < valid; jj++) mx = sr[jj] > mx ? sr[jj] : mx;
    float alpha = expf(*m - mx), sum = 0.0f;
    vec vmx = vset1(mx), vsum = vzero();
    jj = 0;
    for (; jj + VW <= valid; jj += VW) {
        vec e = vexp(vsub(vloadu(sr + jj), vmx));
        vstoreu(sr + jj, e);
        vsum = vadd(vsum, e);
    }
    sum = vhsum(vsum);
    if (jj < valid) { /* the ragged end through one padded register, padding dropped */
        _Alignas(CLLM_ALIGN) float t[VW] = {0};
        int64_t left = valid - jj;
        memcpy(t, sr + jj, sizeof(float) * (size_t)left);
        vstoreu(t, vexp(vsub(vloadu(t), vmx)));
        for (int64_t u = 0; u < left; u++) sum += t[u];
        memcpy(sr + jj, t, sizeof(float) * (size_t)left);
    }
    for (jj = cllm_max(valid, 0); jj < KB; jj++) sr[jj] = 0.0f; /* masked keys weigh nothing */
    *l = sfmadd(*l, alpha, sum);
    *m = mx;
    if (alpha != 1.0f) scale_row(acc, hs, alpha);
}

/* out[d] = acc[d] / l for d < hs: a row's final normalisation. */
static void normalise_row(const float *acc, float l, int64_t hs, float *out)
{
    float inv = 1.0f / l;
    for (int64_t d = 0; d < hs; d++) out[d] = acc[d] * inv;
}

/* For one head: out rows (ldo apart) and lse (T). Scratch: kt (hs,Tp), vr (T,hs), s (QR,KB), acc (QR,hs). */
static void head_forward(const head_t *h, float *out, int64_t ldo, float *lse, float *kt, float *vr, float *s,
                         float *acc)
{
    int64_t T = h->T, hs = h->hs;
    transpose_rows(h->k, h->ld, T, hs, h->Tp, kt);
    copy_rows(h->v, h->ld, T, hs, vr);
    for (int64_t i0 = 0; i0 < T; i0 += QR) {
        int64_t nr = cllm_min(QR, T - i0), kend = i0 + nr;
        float m[QR], l[QR];
        const float *q[QR];
        tile_rows(h->q, h->ld, i0, T, q);
        for (int r = 0; r < QR; r++) m[r] = -INFINITY, l[r] = 0.0f;
        memset(acc, 0, sizeof(float) * QR * hs);
        for (int64_t j0 = 0; j0 < kend; j0 += KB) {
            int64_t nk = cllm_min(KB, kend - j0), nkv = cllm_round_up(nk, VW);
            tile_scores(q, kt, h->Tp, hs, j0, nkv, h->scale, s);
            for (int64_t r = 0; r < nr; r++) /* causal: keys j <= i */
                softmax_block_row(s + r * KB, cllm_max(0, cllm_min(nk, i0 + r - j0 + 1)), &m[r], &l[r],
                                  acc + r * hs, hs);
            for (int64_t r = nr; r < QR; r++) memset(s + r * KB, 0, sizeof(float) * KB);
            tile_weighted_rows(s, vr + j0 * hs, hs, nk, hs, acc);
        }
        for (int64_t r = 0; r < nr; r++) {
            normalise_row(acc + r * hs, l[r], hs, out + (i0 + r) * ldo);
            lse[i0 + r] = m[r] + logf(l[r]);
        }
    }
}

int ISA_FN(cllm_attention_forward)(const float *qkv, float *out, float *lse, int64_t B, int64_t T, int64_t C,
                                   int64_t NH, int num_threads)
{
    int64_t hs = C / NH, Tp = cllm_round_up(T, VW);
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *kt = cllm_alloc(sizeof(float) * (hs * Tp + T * hs + QR * KB + QR * hs)); /* one block per thread */
        float *vr = kt ? kt + hs * Tp : NULL, *s = kt ? vr + T * hs : NULL, *acc = kt ? s + QR * KB : NULL;
        int ok = kt != NULL;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < B * NH; u++) {
            if (!ok) continue;
            int64_t b = u / NH, hh = u % NH;
            head_t h = head_of(qkv, b, hh, T, C, NH);
            head_forward(&h, out + b * T * C + hh * hs, C, lse + u * T, kt, vr, s, acc);
        }
        cllm_free(kt);
    }
    return failed ? CLLM_ENOMEM : 0;
}

/* dst[jj][:] += Σ_r w[r][jj] · src_r[:] for jj < nk.   w (QR,KB); src: QR rows of hs; dst rows ld apart.
 * A vector of each src row stays in a register while the keys go by. */
static void tile_outer_add(const float *w, const float *src[QR], int64_t nk, int64_t hs, float *dst, int64_t ld)
{
    int64_t d = 0;
    for (; d + 2 * VW <= hs; d += 2 * VW) { /* two vectors of each row: a broadcast weight feeds two FMAs */
        vec s0[QR], s1[QR];
        for (int r = 0; r < QR; r++) s0[r] = vloadu(src[r] + d), s1[r] = vloadu(src[r] + d + VW);
        for (int64_t jj = 0; jj < nk; jj++) {
            vec a0 = vloadu(dst + jj * ld + d), a1 = vloadu(dst + jj * ld + d + VW);
            for (int r = 0; r < QR; r++) {
                vec wr = vset1(w[r * KB + jj]);
                a0 = vfmadd(wr, s0[r], a0);
                a1 = vfmadd(wr, s1[r], a1);
            }
            vstoreu(dst + jj * ld + d, a0), vstoreu(dst + jj * ld + d + VW, a1);
        }
    }
    for (; d + VW <= hs; d += VW) {
        vec sv[QR];
        for (int r = 0; r < QR; r++) sv[r] = vloadu(src[r] + d);
        for (int64_t jj = 0; jj < nk; jj++) {
            vec a = vloadu(dst + jj * ld + d);
            for (int r = 0; r < QR; r++) a = vfmadd(vset1(w[r * KB + jj]), sv[r], a);
            vstoreu(dst + jj * ld + d, a);
        }
    }
    for (; d < hs; d++)
        for (int64_t jj = 0; jj < nk; jj++) {
            float a = dst[jj * ld + d];
            for (int r = 0; r < QR; r++) a += w[r * KB + jj] * src[r][d];
            dst[jj * ld + d] = a;
        }
}

/* For one head: dq, dk, dv rows (ldd apart, overwritten). Scratch: kt, vt (hs,Tp); kr, dkr, dvr (T,hs);
 * p, ds (QR,KB); dqa (QR,hs). */
static void head_backward(const head_t *h, const float *dout, const float *out, int64_t ldo, const float *lse,
                          float *dq, float *dk, float *dv, int64_t ldd, float *kt, float *vt, float *kr, float *dkr,
                          float *dvr, float *p, float *ds, float *dqa)
{
    int64_t T = h->T, hs = h->hs;
    transpose_rows(h->k, h->ld, T, hs, h->Tp, kt);
    transpose_rows(h->v, h->ld, T, hs, h->Tp, vt);
    copy_rows(h->k, h->ld, T, hs, kr);
    memset(dkr, 0, sizeof(float) * (size_t)(T * hs));
    memset(dvr, 0, sizeof(float) * (size_t)(T * hs));
    for (int64_t i0 = 0; i0 < T; i0 += QR) {
        int64_t nr = cllm_min(QR, T - i0), kend = i0 + nr;
        const float *q[QR], *dov[QR];
        float D[QR]; /* D_i = Σ_d dout_i·out_i, the softmax backward's row term */
        tile_rows(h->q, h->ld, i0, T, q);
        tile_rows(dout, ldo, i0, T, dov);
        for (int r = 0; r < QR; r++) {
            const float *o = out + cllm_min(i0 + r, T - 1) * ldo;
            vec acc = vzero();
            int64_t d = 0;
            for (; d + VW <= hs; d += VW) acc = vfmadd(vloadu(dov[r] + d), vloadu(o + d), acc);
            D[r] = vhsum(acc);
            for (; d < hs; d++) D[r] += dov[r][d] * o[d];
        }
        memset(dqa, 0, sizeof(float) * QR * hs);
        for (int64_t j0 = 0; j0 < kend; j0 += KB) {
            int64_t nk = cllm_min(KB, kend - j0), nkv = cllm_round_up(nk, VW);
            tile_scores(q, kt, h->Tp, hs, j0, nkv, h->scale, p);  /* scores */
            tile_scores(dov, vt, h->Tp, hs, j0, nkv, 1.0f, ds);  /* dP = dout · vᵀ */
            for (int r = 0; r < QR; r++) {
                float *pr = p + r * KB, *dsr = ds + r * KB;
                int64_t valid = r < nr ? cllm_max(0, cllm_min(nk, i0 + r - j0 + 1)) : 0;
                vec vl = vset1(lse[cllm_min(i0 + r, T - 1)]), vD = vset1(D[r]), vsc = vset1(h->scale);
                int64_t jj = 0;
                for (; jj + VW <= valid; jj += VW) {
                    vec pj = vexp(vsub(vloadu(pr + jj), vl));                    /* P = e^(s - lse) */
                    vstoreu(pr + jj, pj);
                    vstoreu(dsr + jj, vmul(vmul(pj, vsub(vloadu(dsr + jj), vD)), vsc)); /* dS·scale */
                }
                if (jj < valid) {
                    _Alignas(CLLM_ALIGN) float tp[VW] = {0}, td[VW] = {0};
                    int64_t left = valid - jj;
                    memcpy(tp, pr + jj, sizeof(float) * (size_t)left);
                    memcpy(td, dsr + jj, sizeof(float) * (size_t)left);
                    vec pj = vexp(vsub(vloadu(tp), vl));
                    vstoreu(tp, pj);
                    vstoreu(td, vmul(vmul(pj, vsub(vloadu(td), vD)), vsc));
                    memcpy(pr + jj, tp, sizeof(float) * (size_t)left);
                    memcpy(dsr + jj, td, sizeof(float) * (size_t)left);
                }
                for (jj = valid; jj < KB; jj++) pr[jj] = dsr[jj] = 0.0f;
            }
            tile_outer_add(p, dov, nk, hs, dvr + j0 * hs, hs);     /* dV_j += Σ_i P_ij dout_i */
            tile_outer_add(ds, q, nk, hs, dkr + j0 * hs, hs);      /* dK_j += Σ_i dS_ij q_i·scale */
            tile_weighted_rows(ds, kr + j0 * hs, hs, nk, hs, dqa); /* dQ_i += Σ_j dS_ij k_j·scale */
        }
        for (int64_t r = 0; r < nr; r++) memcpy(dq + (i0 + r) * ldd, dqa + r * hs, sizeof(float) * hs);
    }
    for (int64_t j = 0; j < T; j++) {
        memcpy(dk + j * ldd, dkr + j * hs, sizeof(float) * (size_t)hs);
        memcpy(dv + j * ldd, dvr + j * hs, sizeof(float) * (size_t)hs);
    }
}

int ISA_FN(cllm_attention_backward)(const float *dout, const float *qkv, const float *out, const float *lse,
                                    float *dqkv, int64_t B, int64_t T, int64_t C, int64_t NH, int num_threads)
{
    int64_t hs = C / NH, Tp = cllm_round_up(T, VW);
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *kt = cllm_alloc(sizeof(float) * (2 * hs * Tp + 3 * T * hs + 2 * QR * KB + QR * hs)); /* per thread */
        float *vt = kt ? kt + hs * Tp : NULL, *kr = kt ? vt + hs * Tp : NULL, *dkr = kt ? kr + T * hs : NULL;
        float *dvr = kt ? dkr + T * hs : NULL, *p = kt ? dvr + T * hs : NULL;
        float *ds = kt ? p + QR * KB : NULL, *dqa = kt ? ds + QR * KB : NULL;
        int ok = kt != NULL;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < B * NH; u++) {
            if (!ok) continue;
            int64_t b = u / NH, hh = u % NH;
            head_t h = head_of(qkv, b, hh, T, C, NH);
            float *dbase = dqkv + b * T * 3 * C + hh * hs;
            const float *ob = out + b * T * C + hh * hs, *dob = dout + b * T * C + hh * hs;
            head_backward(&h, dob, ob, C, lse + u * T, dbase, dbase + C, dbase + 2 * C, 3 * C, kt, vt, kr, dkr, dvr,
                          p, ds, dqa);
        }
        cllm_free(kt);
    }
    return failed ? CLLM_ENOMEM : 0;
}

/* ---- the decode step: one new query per sequence against its KV cache ---------------------------------------
 * Cache layout, per sequence slot and head: K transposed, kcache (S,NH,hs,Tk) with key j's value d at d·Tk + j, the
 * layout the forward gives its own K (transpose_rows), so that scores are vector FMAs along the keys in the same
 * order; V as rows, vcache (S,NH,Tk,hs). Tk, the capacity, is a multiple of 16 (of every VW), so vector loads of
 * keys past the last one stay inside the slot. A query row meets keys 0 .. pos in the forward's KB-key blocks,
 * through the same online-softmax update: its output has the bits of the forward's row at that position. */

/* s[jj] = scale · Σ_d q[d]·kt[d][j0+jj] for jj < nkv (a multiple of VW): tile_scores for one row, each score the
 * same chain of FMAs over d. Four vectors of keys at a time (independent chains).   q (hs), kt (hs,Tk), s (KB) */
static void row_scores(const float *q, const float *kt, int64_t Tk, int64_t hs, int64_t j0, int64_t nkv, float scale,
                       float *s)
{
    vec vs = vset1(scale);
    const float *b = kt + j0;
    int64_t jv = 0;
    for (; jv + 4 * VW <= nkv; jv += 4 * VW) {
        vec a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
        for (int64_t d = 0; d < hs; d++) {
            vec qd = vset1(q[d]);
            const float *bd = b + d * Tk + jv;
            a0 = vfmadd(qd, vloadu(bd), a0);
            a1 = vfmadd(qd, vloadu(bd + VW), a1);
            a2 = vfmadd(qd, vloadu(bd + 2 * VW), a2);
            a3 = vfmadd(qd, vloadu(bd + 3 * VW), a3);
        }
        vstoreu(s + jv, vmul(a0, vs));
        vstoreu(s + jv + VW, vmul(a1, vs));
        vstoreu(s + jv + 2 * VW, vmul(a2, vs));
        vstoreu(s + jv + 3 * VW, vmul(a3, vs));
    }
    for (; jv < nkv; jv += VW) {
        vec a = vzero();
        for (int64_t d = 0; d < hs; d++) a = vfmadd(vset1(q[d]), vloadu(b + d * Tk + jv), a);
        vstoreu(s + jv, vmul(a, vs));
    }
}

/* acc[:] += Σ_jj p[jj] · rows[jj][:] for jj < nk: tile_weighted_rows for one row.   p (KB), rows (nk,hs), acc (hs) */
static void row_weighted_rows(const float *p, const float *rows, int64_t nk, int64_t hs, float *acc)
{
    int64_t d = 0;
    for (; d + 2 * VW <= hs; d += 2 * VW) {
        vec a0 = vloadu(acc + d), a1 = vloadu(acc + d + VW);
        for (int64_t jj = 0; jj < nk; jj++) {
            vec pj = vset1(p[jj]);
            a0 = vfmadd(pj, vloadu(rows + jj * hs + d), a0);
            a1 = vfmadd(pj, vloadu(rows + jj * hs + d + VW), a1);
        }
        vstoreu(acc + d, a0), vstoreu(acc + d + VW, a1);
    }
    for (; d + VW <= hs; d += VW) {
        vec a = vloadu(acc + d);
        for (int64_t jj = 0; jj < nk; jj++) a = vfmadd(vset1(p[jj]), vloadu(rows + jj * hs + d), a);
        vstoreu(acc + d, a);
    }
    for (; d < hs; d++) {
        float a = acc[d];
        for (int64_t jj = 0; jj < nk; jj++) a = sfmadd(p[jj], rows[jj * hs + d], a);
        acc[d] = a;
    }
}

/* One head of one sequence: store the new k, v at pos, then out (hs) = attention of q over keys 0 .. pos.
 * q, k, v (hs); kt (hs,Tk) and vrows (Tk,hs): the head's cache. Scratch: s (KB), acc (hs). */
static void head_decode(const float *q, const float *k, const float *v, float *kt, float *vrows, int64_t Tk,
                        int64_t hs, int64_t pos, float *out, float *s, float *acc)
{
    for (int64_t d = 0; d < hs; d++) kt[d * Tk + pos] = k[d];
    memcpy(vrows + pos * hs, v, sizeof(float) * (size_t)hs);
    float m = -INFINITY, l = 0.0f, scale = 1.0f / sqrtf((float)hs);
    memset(acc, 0, sizeof(float) * (size_t)hs);
    for (int64_t j0 = 0; j0 <= pos; j0 += KB) {
        int64_t nk = cllm_min(KB, pos + 1 - j0);
        row_scores(q, kt, Tk, hs, j0, cllm_round_up(nk, VW), scale, s);
        softmax_block_row(s, nk, &m, &l, acc, hs);
        row_weighted_rows(s, vrows + j0 * hs, nk, hs, acc);
    }
    normalise_row(acc, l, hs, out);
}

void ISA_FN(cllm_attention_decode_unit)(const float *qkv, float *kcache, float *vcache, float *out, const int32_t *slot,
                                        const int32_t *pos, int64_t C, int64_t NH, int64_t Tk, int64_t u,
                                        float *scratch)
{
    int64_t hs = C / NH, m = u / NH, hh = u % NH, cell = (int64_t)slot[m] * NH + hh;
    const float *q = qkv + m * 3 * C + hh * hs;
    head_decode(q, q + C, q + 2 * C, kcache + cell * hs * Tk, vcache + cell * Tk * hs, Tk, hs, pos[m],
                out + m * C + hh * hs, scratch, scratch + KB);
}

int ISA_FN(cllm_attention_decode)(const float *qkv, float *kcache, float *vcache, float *out, const int32_t *slot,
                                  const int32_t *pos, int64_t M, int64_t C, int64_t NH, int64_t Tk, int num_threads)
{
    int64_t hs = C / NH, work = 0;
    for (int64_t m = 0; m < M; m++) work += ((int64_t)pos[m] + 1) * C; /* multiply-adds of the scores */
    int failed = 0, nt = (int)cllm_max(1, cllm_min(num_threads, cllm_min(M * NH, work / MIN_THREAD_WORK)));
    (void)nt; /* unused without OpenMP */
#pragma omp parallel num_threads(nt)
    {
        float *s = cllm_alloc(sizeof(float) * CLLM_DECODE_UNIT_SCRATCH(hs)); /* one block per thread */
        if (!s) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < M * NH; u++) /* (row, head) pairs: rows own distinct slots, so nothing races */
            if (s) ISA_FN(cllm_attention_decode_unit)(qkv, kcache, vcache, out, slot, pos, C, NH, Tk, u, s);
        cllm_free(s);
    }
    return failed ? CLLM_ENOMEM : 0;
}

int ISA_FN(cllm_attention_cache_store)(const float *qkv, float *kcache, float *vcache, int64_t slot, int64_t T,
                                       int64_t C, int64_t NH, int64_t Tk, int num_threads)
{
    int64_t hs = C / NH;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t hh = 0; hh < NH; hh++) {
        int64_t cell = slot * NH + hh;
        const float *k = qkv + C + hh * hs, *v = k + C;
        transpose_rows(k, 3 * C, T, hs, Tk, kcache + cell * hs * Tk); /* zeros past T: no stale keys */
        float *vrows = vcache + cell * Tk * hs;
        for (int64_t t = 0; t < T; t++) memcpy(vrows + t * hs, v + t * 3 * C, sizeof(float) * (size_t)hs);
    }
    return 0;
}
