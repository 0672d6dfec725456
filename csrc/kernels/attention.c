/* Causal multi-head self-attention, forward and backward. Compiled once per ISA (simd.h).
 *
 * One (batch, head) pair is one unit of parallel work, done whole by one thread, so nothing races and every sum
 * has one order. Inside a unit, QR query rows at a time meet the keys in blocks of KB (FlashAttention's scheme):
 * the scores never exist beyond a KB×QR tile; the forward keeps an online softmax per row, and the backward
 * recomputes the scores from q, k and the saved log-sum-exp.
 *
 * Query rows are the vector lanes. A tile of scores is stored transposed, st (KB,QR): key j's scores for the QR
 * rows are QR/VW whole vectors. So the softmax's per-row max, sum and rescaling are plain vector operations (no
 * horizontal reductions), and the causal mask is a lane mask. Two register-tiled kernels do all the multiply-adds:
 *   tile_scores    st[j][r]  = Σ_d krow[j][d] · qt[d][r]     (scores, and the backward's dP): q transposed
 *   weighted_sum   out[o][:] += Σ_s w(o,s) · x[s][:]          (P·V, dQ, dK, dV): w a tile of st, either way round
 * K and V are first copied to contiguous rows: the rows of one head lie 3C floats apart in qkv, and a block's KB rows
 * read again and again with that stride fall into a few L1 sets and evict each other (a tile's QR rows of q and
 * dout, read in place by the backward, fit). Each thread prefetches its next unit's rows while it computes.
 *
 * Shapes: qkv (B,T,3C) with q, k, v in that order and head h at columns h·hs .. h·hs+hs of each; out, dout (B,T,C);
 * lse (B,NH,T); hs = C/NH. Row i of one head's q is qkv + i·3C + h·hs; its k is C further, its v 2C further.
 */
#include <math.h>
#include <string.h>

#include "cllm.h"
#include "runtime/dispatch.h"
#include "runtime/memory.h"

#define QR 32 /* query rows per tile: a multiple of AR·VW for every VW */
#define KB 64 /* keys per block: a multiple of AK and of every VW */
_Static_assert(CLLM_DECODE_UNIT_SCRATCH(0) == KB, "a decode unit's scratch holds one block of scores");
#if VW == 16
#define AK 8 /* tile_scores: AK keys × AR row vectors = 16 accumulators of 32 zmm */
#define AR 2
#define DV 4 /* weighted_sum: OT outputs × DV vectors of a row = 16 accumulators */
#else
#define AK 4 /* 8 accumulators of 16 registers */
#define AR 2
#define DV 2
#endif
#define OT 4 /* divides QR and AK */
#define MIN_THREAD_WORK 8192 /* decode: a thread's least share of score multiply-adds worth a parallel region */

/* Lane masks, as sliding windows: vloadu(KEEP_BELOW + 16 - u) keeps lanes < u, vloadu(KEEP_FROM + 16 - t) lanes
 * >= t, vloadu(NEG_BELOW + 16 - t) adds -inf to lanes < t (u, t in 0 .. VW). */
static const float KEEP_BELOW[32] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
static const float KEEP_FROM[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
static const float NEG_BELOW[32] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                                    -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY,
                                    -INFINITY, -INFINITY};

static inline int64_t lanes(int64_t n) { return n < 0 ? 0 : n > VW ? VW : n; }

typedef struct {
    const float *q, *k, *v; /* row 0 of this head's q, k, v; rows are ld floats apart */
    int64_t ld, T, hs;
    int64_t Tq, Tk; /* T rounded up to QR (query rows of the tiles) and to AK (keys of the tiles) */
    float scale;    /* 1/√hs */
} head_t;

/* Head hh of batch row b of qkv (B,T,3C). */
static head_t head_of(const float *qkv, int64_t b, int64_t hh, int64_t T, int64_t C, int64_t NH)
{
    int64_t hs = C / NH;
    const float *base = qkv + b * T * 3 * C + hh * hs;
    head_t h = {base, base + C, base + 2 * C, 3 * C, T, hs, cllm_round_up(T, QR), cllm_round_up(T, AK),
                1.0f / sqrtf((float)hs)};
    return h;
}

/* dst = src transposed, in panels of P columns: key (or row) j's value d at (j/P)·hs·P + d·P + j%P, for j < T,
 * zero up to Tp (a multiple of P).   src rows (T,hs) ld apart -> dst (Tp/P, hs, P)
 * One panel is contiguous, so that a tile's columns stay in L1 whatever T is (with P = Tp: plain (hs,Tp)).
 * 16 rows at a time: their hs values stay in L1 while each destination row gets 16 contiguous floats. */
static void transpose_rows(const float *src, int64_t ld, int64_t T, int64_t hs, int64_t Tp, int64_t P, float *dst)
{
    for (int64_t j0 = 0; j0 < Tp; j0 += 16) {
        int64_t nj = cllm_min(16, Tp - j0), real = cllm_max(0, cllm_min(nj, T - j0));
        float *panel = dst + j0 / P * hs * P + j0 % P; /* P is a multiple of 16 */
        for (int64_t d = 0; d < hs; d++) {
            for (int64_t jj = 0; jj < real; jj++) panel[d * P + jj] = src[(j0 + jj) * ld + d];
            for (int64_t jj = real; jj < nj; jj++) panel[d * P + jj] = 0.0f;
        }
    }
}

/* dst[j][:] = src[j][:] for j < n: rows of hs floats, lds and ldd apart. Inline vector moves: the rows are short
 * (hs = 64 is 4 zmm), too short for memcpy's call and dispatch. */
static void move_rows(const float *src, int64_t lds, int64_t n, int64_t hs, float *dst, int64_t ldd)
{
    for (int64_t j = 0; j < n; j++) {
        const float *a = src + j * lds;
        float *b = dst + j * ldd;
        int64_t d = 0;
        for (; d + VW <= hs; d += VW) vstoreu(b + d, vloadu(a + d));
        for (; d < hs; d++) b[d] = a[d];
    }
}

/* dst[j][:] = src[j·ld : j·ld + hs] for j < T, zero rows up to Tp.   src rows (T,hs) ld apart -> dst (Tp,hs) */
static void copy_rows(const float *src, int64_t ld, int64_t T, int64_t hs, int64_t Tp, float *dst)
{
    move_rows(src, ld, T, hs, dst, hs);
    memset(dst + T * hs, 0, sizeof(float) * (size_t)((Tp - T) * hs));
}

/* Rows r0 .. r1 of the next unit's q, k and v into L2, a tile's worth at a time while this unit computes: rows 3C
 * floats apart each start a new page, where hardware prefetchers do not follow. */
static void prefetch_head_rows(const head_t *next, int64_t r0, int64_t r1)
{
    const float *parts[3] = {next->q, next->k, next->v};
    for (int x = 0; x < 3; x++) cllm_prefetch_rows_l2(parts[x] + r0 * next->ld, next->ld, r1 - r0, next->hs);
}

/* st[j][r] = scale · Σ_d krow[j][d]·qt[d][r] for j < nk (a multiple of AK), r < QR.
 * krow (nk,hs) contiguous rows; qt (hs,ldq) with the tile's QR columns first; st (KB,QR).
 * Each score is one chain of FMAs over d in order: the decode step's row_scores gives the same bits. */
static void tile_scores(const float *krow, int64_t hs, const float *qt, int64_t ldq, int64_t nk, float scale,
                        float *st)
{
    vec vs = vset1(scale);
    for (int64_t j = 0; j < nk; j += AK)
        for (int64_t rv = 0; rv < QR; rv += AR * VW) {
            vec acc[AK][AR];
            for (int k = 0; k < AK; k++)
                for (int x = 0; x < AR; x++) acc[k][x] = vzero();
            const float *kj = krow + j * hs, *qd = qt + rv;
            for (int64_t d = 0; d < hs; d++, qd += ldq) {
                vec a[AR];
                for (int x = 0; x < AR; x++) a[x] = vloadu(qd + x * VW);
                for (int k = 0; k < AK; k++) {
                    vec b = vset1(kj[k * hs + d]);
                    for (int x = 0; x < AR; x++) acc[k][x] = vfmadd(b, a[x], acc[k][x]);
                }
            }
            for (int k = 0; k < AK; k++)
                for (int x = 0; x < AR; x++) vstoreu(st + (j + k) * QR + rv + x * VW, vmul(acc[k][x], vs));
        }
}

/* out[o][d .. d+nv·VW] += Σ_s w[o·wo + s·ws] · x[s][d ..] for o < OT, s < ns: one register tile.
 * x rows ldx apart, out rows hs apart. Each element is one chain of FMAs over s in order. */
static ALWAYS_INLINE void weighted_tile(const float *w, int64_t wo, int64_t ws, const float *x, int64_t ldx,
                                        int64_t ns, int64_t hs, float *out, int64_t d, const int nv)
{
    vec acc[OT][DV];
    for (int o = 0; o < OT; o++)
        for (int v = 0; v < nv; v++) acc[o][v] = vloadu(out + o * hs + d + v * VW);
    for (int64_t s = 0; s < ns; s++) {
        vec xv[DV];
        for (int v = 0; v < nv; v++) xv[v] = vloadu(x + s * ldx + d + v * VW);
        for (int o = 0; o < OT; o++) {
            vec wv = vset1(w[o * wo + s * ws]);
            for (int v = 0; v < nv; v++) acc[o][v] = vfmadd(wv, xv[v], acc[o][v]);
        }
    }
    for (int o = 0; o < OT; o++)
        for (int v = 0; v < nv; v++) vstoreu(out + o * hs + d + v * VW, acc[o][v]);
}

/* out[o][:] += Σ_s w[o·wo + s·ws] · x[s][:] for o < no (a multiple of OT), s < ns.   x (ns,hs) rows ldx apart,
 * out (no,hs). w is a tile of st (KB,QR) of query rows i0 .. and keys j0 .., diag = i0 - j0: wo = QR, ws = 1 sums
 * over query rows (dK, dV); wo = 1, ws = QR over keys (P·V, dQ). The causal mask's zero weights (key j0+j after
 * row i0+r) are skipped a tile of OT outputs at a time: adding them would not change a bit. */
static ALWAYS_INLINE void weighted_sum(const float *w, int64_t wo, int64_t ws, const float *x, int64_t ldx,
                                       int64_t ns, int64_t no, int64_t hs, int64_t diag, float *out)
{
    for (int64_t o0 = 0; o0 < no; o0 += OT) {
        int64_t s0 = wo == 1 ? 0 : cllm_max(0, o0 - diag);             /* rows before the tile's first key */
        int64_t s1 = wo == 1 ? cllm_min(ns, o0 + OT + diag) : ns;       /* keys after the tile's last row */
        if (s1 <= s0) continue;
        const float *wt = w + o0 * wo + s0 * ws, *xs = x + s0 * ldx;
        float *ot = out + o0 * hs;
        int64_t d = 0, n = s1 - s0;
        for (; d + DV * VW <= hs; d += DV * VW) weighted_tile(wt, wo, ws, xs, ldx, n, hs, ot, d, DV);
        for (; d + VW <= hs; d += VW) weighted_tile(wt, wo, ws, xs, ldx, n, hs, ot, d, 1);
        for (; d < hs; d++)
            for (int o = 0; o < OT; o++) {
                float a = ot[o * hs + d];
                for (int64_t s = 0; s < n; s++) a = sfmadd(wt[o * wo + s * ws], xs[s * ldx + d], a);
                ot[o * hs + d] = a;
            }
    }
}

static void scale_row(float *x, int64_t n, float a)
{
    vec va = vset1(a);
    int64_t d = 0;
    for (; d + VW <= n; d += VW) vstoreu(x + d, vmul(vloadu(x + d), va));
    for (; d < n; d++) x[d] *= a;
}

/* out[d] = acc[d] / l for d < hs: a row's final normalisation. */
static void normalise_row(const float *acc, float l, int64_t hs, float *out)
{
    float inv = 1.0f / l;
    for (int64_t d = 0; d < hs; d++) out[d] = acc[d] * inv;
}

/* The online softmax of one block: st (KB,QR) holds the scores of keys j0 .. j0+nk of the rows i0 .. i0+QR;
 * on return it holds e^(s - m) (0 where key j > row i). m, l (QR): the rows' running max and sum of exponentials;
 * alpha (QR): what each row's running Σ p·v must be multiplied by. The sum over keys goes in key order, as in the
 * decode step's softmax_block_row, so that both give the same bits. */
static void softmax_block(float *st, int64_t i0, int64_t j0, int64_t nk, float *m, float *l, float *alpha)
{
    for (int64_t rv = 0; rv < QR; rv += VW) {
        int64_t first = i0 + rv; /* the row in lane 0 */
        vec mx = vloadu(m + rv);
        for (int64_t j = 0; j < nk; j++) {
            vec s = vloadu(st + j * QR + rv);
            int64_t t = j0 + j - first; /* lanes < t are rows before key j0 + j: masked */
            if (t > 0) vstoreu(st + j * QR + rv, s = vadd(s, vloadu(NEG_BELOW + 16 - lanes(t))));
            mx = vmax(mx, s);
        }
        vec sum = vzero();
        for (int64_t j = 0; j < nk; j++) {
            vec p = vexp(vsub(vloadu(st + j * QR + rv), mx));
            int64_t t = j0 + j - first;
            if (t > 0) p = vmul(p, vloadu(KEEP_FROM + 16 - lanes(t))); /* e^-inf is clamped, not 0 */
            vstoreu(st + j * QR + rv, p);
            sum = vadd(sum, p);
        }
        vec a = vexp(vsub(vloadu(m + rv), mx));
        vstoreu(alpha + rv, a);
        vstoreu(l + rv, vfmadd(vloadu(l + rv), a, sum));
        vstoreu(m + rv, mx);
    }
}

/* For one head: out rows (ldo apart) and lse (T). Scratch: qt (hs,Tq); kr, vr (Tk,hs); st (KB,QR); o (QR,hs);
 * m, l, alpha (QR). */
static void head_forward(const head_t *h, const head_t *next, float *out, int64_t ldo, float *lse, float *qt,
                         float *kr, float *vr, float *st, float *o, float *m, float *l, float *alpha)
{
    int64_t T = h->T, hs = h->hs;
    transpose_rows(h->q, h->ld, T, hs, h->Tq, QR, qt);
    copy_rows(h->k, h->ld, T, hs, h->Tk, kr);
    copy_rows(h->v, h->ld, T, hs, h->Tk, vr);
    for (int64_t i0 = 0; i0 < T; i0 += QR) {
        int64_t nr = cllm_min(QR, T - i0), kend = i0 + nr;
        if (next) prefetch_head_rows(next, i0, kend);
        for (int r = 0; r < QR; r++) m[r] = -INFINITY, l[r] = 0.0f;
        memset(o, 0, sizeof(float) * QR * (size_t)hs);
        for (int64_t j0 = 0; j0 < kend; j0 += KB) {
            int64_t nk = cllm_round_up(cllm_min(KB, kend - j0), AK);
            tile_scores(kr + j0 * hs, hs, qt + i0 * hs, QR, nk, h->scale, st);
            softmax_block(st, i0, j0, nk, m, l, alpha);
            for (int r = 0; r < QR; r++) scale_row(o + r * hs, hs, alpha[r]);
            weighted_sum(st, 1, QR, vr + j0 * hs, hs, nk, QR, hs, i0 - j0, o); /* o_r += Σ_j p_rj v_j */
        }
        for (int64_t r = 0; r < nr; r++) {
            normalise_row(o + r * hs, l[r], hs, out + (i0 + r) * ldo);
            lse[i0 + r] = m[r] + logf(l[r]);
        }
    }
}

int ISA_FN(cllm_attention_forward)(const float *qkv, float *out, float *lse, int64_t B, int64_t T, int64_t C,
                                   int64_t NH, int num_threads)
{
    int64_t hs = C / NH, Tq = cllm_round_up(T, QR), Tk = cllm_round_up(T, AK);
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *qt = cllm_alloc(sizeof(float) * (hs * Tq + 2 * Tk * hs + KB * QR + QR * hs + 3 * QR)); /* per thread */
        float *kr = qt ? qt + hs * Tq : NULL, *vr = qt ? kr + Tk * hs : NULL, *st = qt ? vr + Tk * hs : NULL;
        float *o = qt ? st + KB * QR : NULL, *m = qt ? o + QR * hs : NULL;
        int ok = qt != NULL;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static) /* equal units; a thread's next one is u + 1, prefetched */
        for (int64_t u = 0; u < B * NH; u++) {
            if (!ok) continue;
            int64_t b = u / NH, hh = u % NH;
            head_t h = head_of(qkv, b, hh, T, C, NH), n = head_of(qkv, (u + 1) / NH, (u + 1) % NH, T, C, NH);
            head_forward(&h, u + 1 < B * NH ? &n : NULL, out + b * T * C + hh * hs, C, lse + u * T, qt, kr, vr, st, o,
                         m, m + QR, m + 2 * QR);
        }
        cllm_free(qt);
    }
    return failed ? CLLM_ENOMEM : 0;
}

/* The softmax backward of one block: st holds the scores, dpt the dP = dout·vᵀ of keys j0 .. j0+nk and rows
 * i0 .. i0+QR (both (KB,QR)). On return st holds P = e^(s - lse) and dpt dS·scale = P·(dP - D)·scale, both 0 where
 * key j > row i or row i >= T. lse, D: the rows' log-sum-exp and D_i = Σ_d dout_i·out_i, from row i0. */
static void softmax_block_backward(float *st, float *dpt, int64_t i0, int64_t j0, int64_t nk, int64_t T,
                                   const float *lse, const float *D, float scale)
{
    vec vsc = vset1(scale);
    for (int64_t rv = 0; rv < QR; rv += VW) {
        int64_t first = i0 + rv; /* the row in lane 0 */
        vec vl = vloadu(lse + rv), vD = vloadu(D + rv), rows = vloadu(KEEP_BELOW + 16 - lanes(T - first));
        int ragged = T - first < VW;
        for (int64_t j = 0; j < nk; j++) {
            vec p = vexp(vsub(vloadu(st + j * QR + rv), vl));
            int64_t t = j0 + j - first;
            if (t > 0) p = vmul(p, vloadu(KEEP_FROM + 16 - lanes(t)));
            if (ragged) p = vmul(p, rows);
            vstoreu(st + j * QR + rv, p);
            vstoreu(dpt + j * QR + rv, vmul(vmul(p, vsub(vloadu(dpt + j * QR + rv), vD)), vsc));
        }
    }
}

/* For one head: dq, dk, dv rows (ldd apart, overwritten). Scratch: qt, dot (Tq/QR,hs,QR); kr, vr, dkr, dvr (Tk,hs);
 * st, dpt (KB,QR); dqt (QR,hs); lsep, D (Tq). */
typedef struct {
    float *qt, *dot, *kr, *vr, *dkr, *dvr, *st, *dpt, *dqt, *lsep, *D;
} backward_scratch_t;

static void head_backward(const head_t *h, const float *dout, const float *out, int64_t ldo, const float *lse,
                          float *dq, float *dk, float *dv, int64_t ldd, const head_t *next, const float *next_dout,
                          const float *next_out, const backward_scratch_t *w)
{
    int64_t T = h->T, hs = h->hs, Tq = h->Tq, Tk = h->Tk;
    transpose_rows(h->q, h->ld, T, hs, Tq, QR, w->qt);
    transpose_rows(dout, ldo, T, hs, Tq, QR, w->dot);
    copy_rows(h->k, h->ld, T, hs, Tk, w->kr);
    copy_rows(h->v, h->ld, T, hs, Tk, w->vr);
    memset(w->dkr, 0, sizeof(float) * (size_t)(Tk * hs));
    memset(w->dvr, 0, sizeof(float) * (size_t)(Tk * hs));
    for (int64_t i = 0; i < Tq; i++) { /* D_i = Σ_d dout_i·out_i, the softmax backward's row term */
        float Di = 0.0f;
        if (i < T) {
            const float *dor = dout + i * ldo, *o = out + i * ldo;
            vec acc = vzero();
            int64_t d = 0;
            for (; d + VW <= hs; d += VW) acc = vfmadd(vloadu(dor + d), vloadu(o + d), acc);
            Di = vhsum(acc);
            for (; d < hs; d++) Di += dor[d] * o[d];
        }
        w->D[i] = Di;
        w->lsep[i] = i < T ? lse[i] : 0.0f;
    }
    for (int64_t i0 = 0; i0 < T; i0 += QR) {
        int64_t nr = cllm_min(QR, T - i0), kend = i0 + nr;
        if (next) { /* the next unit's rows of q, k, v, dout and out */
            prefetch_head_rows(next, i0, kend);
            cllm_prefetch_rows_l2(next_dout + i0 * ldo, ldo, nr, hs);
            cllm_prefetch_rows_l2(next_out + i0 * ldo, ldo, nr, hs);
        }
        memset(w->dqt, 0, sizeof(float) * QR * (size_t)hs);
        for (int64_t j0 = 0; j0 < kend; j0 += KB) {
            int64_t nk = cllm_round_up(cllm_min(KB, kend - j0), AK);
            const float *kj = w->kr + j0 * hs;
            tile_scores(kj, hs, w->qt + i0 * hs, QR, nk, h->scale, w->st);             /* S */
            tile_scores(w->vr + j0 * hs, hs, w->dot + i0 * hs, QR, nk, 1.0f, w->dpt); /* dP = dout·vᵀ */
            softmax_block_backward(w->st, w->dpt, i0, j0, nk, T, w->lsep + i0, w->D + i0, h->scale);
            /* dV_j += Σ_i P_ij dout_i and dK_j += Σ_i dS_ij q_i over the tile's nr rows, read in place (ragged last
             * tile: rows past T are not there; their weights are 0) */
            weighted_sum(w->st, QR, 1, dout + i0 * ldo, ldo, nr, nk, hs, i0 - j0, w->dvr + j0 * hs);
            weighted_sum(w->dpt, QR, 1, h->q + i0 * h->ld, h->ld, nr, nk, hs, i0 - j0, w->dkr + j0 * hs);
            weighted_sum(w->dpt, 1, QR, kj, hs, nk, QR, hs, i0 - j0, w->dqt); /* dQ_i += Σ_j dS_ij k_j */
        }
        move_rows(w->dqt, hs, nr, hs, dq + i0 * ldd, ldd);
    }
    move_rows(w->dkr, hs, T, hs, dk, ldd);
    move_rows(w->dvr, hs, T, hs, dv, ldd);
}

int ISA_FN(cllm_attention_backward)(const float *dout, const float *qkv, const float *out, const float *lse,
                                    float *dqkv, int64_t B, int64_t T, int64_t C, int64_t NH, int num_threads)
{
    int64_t hs = C / NH, Tq = cllm_round_up(T, QR), Tk = cllm_round_up(T, AK);
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *buf = cllm_alloc(sizeof(float) * (2 * hs * Tq + 4 * Tk * hs + 2 * KB * QR + QR * hs + 2 * Tq));
        backward_scratch_t w = {0};
        if (buf) {
            w.qt = buf, w.dot = w.qt + hs * Tq;
            w.kr = w.dot + hs * Tq, w.vr = w.kr + Tk * hs, w.dkr = w.vr + Tk * hs, w.dvr = w.dkr + Tk * hs;
            w.st = w.dvr + Tk * hs, w.dpt = w.st + KB * QR, w.dqt = w.dpt + KB * QR, w.lsep = w.dqt + QR * hs;
            w.D = w.lsep + Tq;
        } else {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static) /* equal units; a thread's next one is u + 1, prefetched */
        for (int64_t u = 0; u < B * NH; u++) {
            if (!buf) continue;
            int64_t b = u / NH, hh = u % NH, nb = (u + 1) / NH, nh = (u + 1) % NH;
            head_t h = head_of(qkv, b, hh, T, C, NH), n = head_of(qkv, nb, nh, T, C, NH);
            float *dbase = dqkv + b * T * 3 * C + hh * hs;
            int64_t o = b * T * C + hh * hs, no = nb * T * C + nh * hs;
            head_backward(&h, dout + o, out + o, C, lse + u * T, dbase, dbase + C, dbase + 2 * C, 3 * C,
                          u + 1 < B * NH ? &n : NULL, dout + no, out + no, &w);
        }
        cllm_free(buf);
    }
    return failed ? CLLM_ENOMEM : 0;
}

/* ---- the decode step: one new query per sequence against its KV cache ---------------------------------------
 * Cache layout, per sequence slot and head: K transposed, kcache (S,NH,hs,Tk) with key j's value d at d·Tk + j
 * (transpose_rows), so that one row's scores are vector FMAs along the keys; V as rows, vcache (S,NH,Tk,hs). Tk, the
 * capacity, is a multiple of 16 (of every VW), so vector loads of keys past the last one stay inside the slot. A query
 * row meets keys 0 .. pos in the forward's KB-key blocks, through the same online-softmax steps in the same order:
 * its output has the bits of the forward's row at that position. */

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

/* acc[:] += Σ_jj p[jj] · rows[jj][:] for jj < nk: weighted_sum for one row (P·V).
 * p (KB), rows (nk,hs), acc (hs) */
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

/* One query row meets one block of keys: softmax_block for one row. sr (KB) holds the row's scores for the block's
 * first `valid` keys; on return e^(s - m) there. *m, *l: the row's running max and sum of exponentials; acc (hs): its
 * running Σ p·v, multiplied by α = e^(m_old - m). Each step is the forward lane's, in the same order (the sum in key
 * order, vexp for α too), so the bits are the same. */
static void softmax_block_row(float *sr, int64_t valid, float *m, float *l, float *acc, int64_t hs)
{
    float mx = *m;
    for (int64_t j = 0; j < valid; j++) mx = sr[j] > mx ? sr[j] : mx;
    _Alignas(CLLM_ALIGN) float t[VW] = {0};
    vec vmx = vset1(mx);
    int64_t j = 0;
    for (; j + VW <= valid; j += VW) vstoreu(sr + j, vexp(vsub(vloadu(sr + j), vmx)));
    if (j < valid) { /* the ragged end through one padded register */
        int64_t left = valid - j;
        memcpy(t, sr + j, sizeof(float) * (size_t)left);
        vstoreu(t, vexp(vsub(vloadu(t), vmx)));
        memcpy(sr + j, t, sizeof(float) * (size_t)left);
    }
    float sum = 0.0f;
    for (j = 0; j < valid; j++) sum += sr[j];
    vstoreu(t, vexp(vset1(*m - mx)));
    float alpha = t[0];
    *l = sfmadd(*l, alpha, sum);
    *m = mx;
    scale_row(acc, hs, alpha);
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
        transpose_rows(k, 3 * C, T, hs, Tk, Tk, kcache + cell * hs * Tk); /* zeros past T: no stale keys */
        move_rows(v, 3 * C, T, hs, vcache + cell * Tk * hs, hs);
    }
    return 0;
}
