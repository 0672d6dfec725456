/* A thin vector abstraction so that each hot kernel is written once and compiled once per instruction set.
 *
 * setup.py compiles every "ISA source" (matmul.c, ...) several times with -DCLLM_ISA=<name> and that ISA's compiler
 * flags: baseline (x86-64 SSE2, or the portable scalar path elsewhere), avx2 (AVX2 + FMA) and avx512 (AVX-512
 * F/CD/BW/DQ/VL). ISA_FN(name) gives each copy its own symbol (name_avx2, ...); dispatch.c picks one at run time.
 *
 *   vec            one SIMD register of VW floats
 *   vload/vstore   aligned 64-byte packed buffers only; vloadu/vstoreu for anything else
 *   vfmadd(a,b,c)  a*b + c (fused where the ISA has FMA, so results differ between ISAs, never between runs)
 *   sfmadd(a,b,c)  the same for one float, fused exactly when vfmadd is (never left to the compiler's contraction,
 *                  so that two kernels meant to give the same bits do)
 *   vhsum/vhmax    horizontal sum / max of one register, in a fixed order
 *   vexp           e^x (polynomial; see below)
 */
#ifndef CLLM_SIMD_H
#define CLLM_SIMD_H

#ifndef CLLM_ISA
#define CLLM_ISA baseline
#endif
#define CLLM_CAT_(a, b) a##_##b
#define CLLM_CAT(a, b) CLLM_CAT_(a, b)
#define ISA_FN(name) CLLM_CAT(name, CLLM_ISA)

/* For register-tiled helpers whose constant arguments (tile sizes) must be folded at every call site. */
#if defined(_MSC_VER)
#define ALWAYS_INLINE __forceinline
#else
#define ALWAYS_INLINE inline __attribute__((always_inline))
#endif

#if defined(__AVX512F__)
#include <immintrin.h>
#define VW 16
typedef __m512 vec;
#define vzero() _mm512_setzero_ps()
#define vset1(x) _mm512_set1_ps(x)
#define vload(p) _mm512_load_ps(p)
#define vloadu(p) _mm512_loadu_ps(p)
#define vstoreu(p, v) _mm512_storeu_ps((p), (v))
#define vadd(a, b) _mm512_add_ps((a), (b))
#define vsub(a, b) _mm512_sub_ps((a), (b))
#define vmul(a, b) _mm512_mul_ps((a), (b))
#define vdiv(a, b) _mm512_div_ps((a), (b))
#define vmax(a, b) _mm512_max_ps((a), (b))
#define vmin(a, b) _mm512_min_ps((a), (b))
#define vsqrt(a) _mm512_sqrt_ps(a)
#define vfmadd(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define vhsum(a) _mm512_reduce_add_ps(a)
#define vhmax(a) _mm512_reduce_max_ps(a)
static inline vec vexp2i(vec n, vec p) { return _mm512_scalef_ps(p, n); } /* p·2^n, n integral */
static inline float sfmadd(float a, float b, float c)
{
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VW 8
typedef __m256 vec;
#define vzero() _mm256_setzero_ps()
#define vset1(x) _mm256_set1_ps(x)
#define vload(p) _mm256_load_ps(p)
#define vloadu(p) _mm256_loadu_ps(p)
#define vstoreu(p, v) _mm256_storeu_ps((p), (v))
#define vadd(a, b) _mm256_add_ps((a), (b))
#define vsub(a, b) _mm256_sub_ps((a), (b))
#define vmul(a, b) _mm256_mul_ps((a), (b))
#define vdiv(a, b) _mm256_div_ps((a), (b))
#define vmax(a, b) _mm256_max_ps((a), (b))
#define vmin(a, b) _mm256_min_ps((a), (b))
#define vsqrt(a) _mm256_sqrt_ps(a)
#define vfmadd(a, b, c) _mm256_fmadd_ps((a), (b), (c))
static inline float vhsum(vec a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
static inline float vhmax(vec a)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)));
}
static inline float sfmadd(float a, float b, float c)
{
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}
static inline vec vexp2i(vec n, vec p)
{
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

#elif defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define VW 4
typedef __m128 vec;
#define vzero() _mm_setzero_ps()
#define vset1(x) _mm_set1_ps(x)
#define vload(p) _mm_load_ps(p)
#define vloadu(p) _mm_loadu_ps(p)
#define vstoreu(p, v) _mm_storeu_ps((p), (v))
#define vadd(a, b) _mm_add_ps((a), (b))
#define vsub(a, b) _mm_sub_ps((a), (b))
#define vmul(a, b) _mm_mul_ps((a), (b))
#define vdiv(a, b) _mm_div_ps((a), (b))
#define vmax(a, b) _mm_max_ps((a), (b))
#define vmin(a, b) _mm_min_ps((a), (b))
#define vsqrt(a) _mm_sqrt_ps(a)
#define vfmadd(a, b, c) _mm_add_ps(_mm_mul_ps((a), (b)), (c))
static inline float vhsum(vec s)
{
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
static inline float vhmax(vec s)
{
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)));
}
static inline float sfmadd(float a, float b, float c)
{
    return _mm_cvtss_f32(_mm_add_ss(_mm_mul_ss(_mm_set_ss(a), _mm_set_ss(b)), _mm_set_ss(c)));
}
static inline vec vexp2i(vec n, vec p)
{
    __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvtps_epi32(n), _mm_set1_epi32(127)), 23);
    return _mm_mul_ps(p, _mm_castsi128_ps(e));
}

#else /* portable: plain floats; the compiler may still vectorise */
#include <math.h>
#define VW 1
typedef float vec;
#define vzero() 0.0f
#define vset1(x) (x)
#define vload(p) (*(p))
#define vloadu(p) (*(p))
#define vstoreu(p, v) (*(p) = (v))
#define vadd(a, b) ((a) + (b))
#define vsub(a, b) ((a) - (b))
#define vmul(a, b) ((a) * (b))
#define vdiv(a, b) ((a) / (b))
#define vmax(a, b) ((a) > (b) ? (a) : (b))
#define vmin(a, b) ((a) < (b) ? (a) : (b))
#define vsqrt(a) sqrtf(a)
#define vfmadd(a, b, c) ((a) * (b) + (c))
#define vhsum(a) (a)
#define vhmax(a) (a)
#define sfmadd(a, b, c) vfmadd(a, b, c)
static inline vec vexp2i(vec n, vec p) { return ldexpf(p, (int)n); }
#endif

/* Rounding to the nearest integer, as a float (|x| < 2^22). */
static inline vec vround(vec x)
{
    const vec magic = vset1(12582912.0f); /* 1.5·2^23: adding it pushes the fraction out of the mantissa */
    return vsub(vadd(x, magic), magic);
}

/* e^x, relative error about 2e-7 over the float range (x clamped to [-87.3, 88.3]):
 * x = n·ln2 + r with |r| <= ln2/2, e^r by its degree-6 Taylor polynomial, then scaled by 2^n. */
static inline vec vexp(vec x)
{
    x = vmin(vmax(x, vset1(-87.3f)), vset1(88.3f));
    vec n = vround(vmul(x, vset1(1.44269504088896341f)));
    vec r = vfmadd(n, vset1(-0.693359375f), x); /* ln2 split in two so that n·ln2 is exact enough */
    r = vfmadd(n, vset1(2.12194440e-4f), r);
    vec p = vset1(1.0f / 720.0f);
    p = vfmadd(p, r, vset1(1.0f / 120.0f));
    p = vfmadd(p, r, vset1(1.0f / 24.0f));
    p = vfmadd(p, r, vset1(1.0f / 6.0f));
    p = vfmadd(p, r, vset1(0.5f));
    p = vfmadd(p, r, vset1(1.0f));
    p = vfmadd(p, r, vset1(1.0f));
    return vexp2i(n, p);
}

#endif
