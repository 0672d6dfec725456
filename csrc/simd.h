/* A thin vector abstraction so that each hot kernel is written once and compiled once per instruction set.
 *
 * setup.py compiles every "ISA source" (matmul.c, ...) several times with -DCLLM_ISA=<name> and that ISA's compiler
 * flags: baseline (x86-64 SSE2, or the portable scalar path elsewhere), avx2 (AVX2 + FMA) and avx512 (AVX-512
 * F/CD/BW/DQ/VL). ISA_FN(name) gives each copy its own symbol (name_avx2, ...); dispatch.c picks one at run time.
 *
 *   vec            one SIMD register of VW floats
 *   vload/vstore   aligned 64-byte packed buffers only; vloadu/vstoreu for anything else
 *   vfmadd(a,b,c)  a*b + c (fused where the ISA has FMA, so results differ between ISAs, never between runs)
 */
#ifndef CLLM_SIMD_H
#define CLLM_SIMD_H

#ifndef CLLM_ISA
#define CLLM_ISA baseline
#endif
#define CLLM_CAT_(a, b) a##_##b
#define CLLM_CAT(a, b) CLLM_CAT_(a, b)
#define ISA_FN(name) CLLM_CAT(name, CLLM_ISA)

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
#define vfmadd(a, b, c) _mm512_fmadd_ps((a), (b), (c))

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
#define vfmadd(a, b, c) _mm256_fmadd_ps((a), (b), (c))

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
#define vfmadd(a, b, c) _mm_add_ps(_mm_mul_ps((a), (b)), (c))

#else /* portable: plain floats; the compiler may still vectorise */
#define VW 1
typedef float vec;
#define vzero() 0.0f
#define vset1(x) (x)
#define vload(p) (*(p))
#define vloadu(p) (*(p))
#define vstoreu(p, v) (*(p) = (v))
#define vadd(a, b) ((a) + (b))
#define vfmadd(a, b, c) ((a) * (b) + (c))
#endif

#endif
