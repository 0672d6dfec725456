/* Run-time choice of the ISA path: the best this CPU and OS support among those compiled (setup.py defines
 * CLLM_HAVE_AVX2 / CLLM_HAVE_AVX512 when it built them), overridable with cllm_set_isa() or CLLM_ISA=name. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cllm.h"
#include "dispatch.h"

#define CLLM_ISA_NAME(name) cllm_##name##_baseline
CLLM_ISA_KERNELS(CLLM_DECLARE)
static const cllm_kernel_table baseline_table = {"baseline", CLLM_ISA_KERNELS(CLLM_ENTRY)};
#undef CLLM_ISA_NAME
#ifdef CLLM_HAVE_AVX2
#define CLLM_ISA_NAME(name) cllm_##name##_avx2
CLLM_ISA_KERNELS(CLLM_DECLARE)
static const cllm_kernel_table avx2_table = {"avx2", CLLM_ISA_KERNELS(CLLM_ENTRY)};
#undef CLLM_ISA_NAME
#endif
#ifdef CLLM_HAVE_AVX512
#define CLLM_ISA_NAME(name) cllm_##name##_avx512
CLLM_ISA_KERNELS(CLLM_DECLARE)
static const cllm_kernel_table avx512_table = {"avx512", CLLM_ISA_KERNELS(CLLM_ENTRY)};
#undef CLLM_ISA_NAME
#endif

/* Ordered from most portable to fastest. */
static const cllm_kernel_table *const tables[] = {
    &baseline_table,
#ifdef CLLM_HAVE_AVX2
    &avx2_table,
#endif
#ifdef CLLM_HAVE_AVX512
    &avx512_table,
#endif
};
#define N_TABLES ((int)(sizeof(tables) / sizeof(tables[0])))

static const cllm_kernel_table *active = NULL;

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
/* __builtin_cpu_supports checks CPUID and that the OS saves the wider registers (XGETBV). */
static int cpu_supports(const char *name)
{
    __builtin_cpu_init();
    if (strcmp(name, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(name, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return strcmp(name, "baseline") == 0;
}
#elif defined(_MSC_VER) && defined(_M_X64)
#include <intrin.h>
static int cpu_supports(const char *name)
{
    int r[4];
    __cpuid(r, 1);
    int osxsave = (r[2] >> 27) & 1, fma = (r[2] >> 12) & 1;
    unsigned long long xcr0 = osxsave ? _xgetbv(0) : 0;
    __cpuidex(r, 7, 0);
    int avx2 = fma && ((r[1] >> 5) & 1) && (xcr0 & 0x6) == 0x6;
    int avx512 = avx2 && ((r[1] >> 16) & 1) && ((r[1] >> 28) & 1) && ((r[1] >> 30) & 1) && ((r[1] >> 17) & 1) &&
                 ((r[1] >> 31) & 1) && (xcr0 & 0xe6) == 0xe6;
    if (strcmp(name, "avx2") == 0) return avx2;
    if (strcmp(name, "avx512") == 0) return avx512;
    return strcmp(name, "baseline") == 0;
}
#else
static int cpu_supports(const char *name) { return strcmp(name, "baseline") == 0; }
#endif

static const cllm_kernel_table *best_table(void)
{
    const char *forced = getenv("CLLM_ISA");
    if (forced && *forced && strcmp(forced, "auto") != 0)
        for (int i = 0; i < N_TABLES; i++)
            if (strcmp(tables[i]->name, forced) == 0 && cpu_supports(forced)) return tables[i];
    for (int i = N_TABLES - 1; i > 0; i--)
        if (cpu_supports(tables[i]->name)) return tables[i];
    return tables[0];
}

static const cllm_kernel_table *table(void)
{
    if (!active) active = best_table(); /* idempotent: a race only stores the same pointer twice */
    return active;
}

int cllm_set_isa(const char *name)
{
    if (strcmp(name, "auto") == 0) {
        active = NULL;
        active = best_table();
        return 0;
    }
    for (int i = 0; i < N_TABLES; i++)
        if (strcmp(tables[i]->name, name) == 0 && cpu_supports(name)) {
            active = tables[i];
            return 0;
        }
    return -1;
}

const char *cllm_isa(void) { return table()->name; }

static void join_names(char *buf, size_t size, int supported_only)
{
    buf[0] = '\0';
    for (int i = 0; i < N_TABLES; i++) {
        if (supported_only && !cpu_supports(tables[i]->name)) continue;
        if (buf[0]) strncat(buf, ",", size - strlen(buf) - 1);
        strncat(buf, tables[i]->name, size - strlen(buf) - 1);
    }
}

const char *cllm_compiled_isas(void)
{
    static char buf[64];
    join_names(buf, sizeof buf, 0);
    return buf;
}

const char *cllm_cpu_isas(void)
{
    static char buf[64];
    join_names(buf, sizeof buf, 1);
    return buf;
}

int cllm_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int cllm_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

const char *cllm_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
#define CLLM_STR_(x) #x
#define CLLM_STR(x) CLLM_STR_(x)
    return "msvc " CLLM_STR(_MSC_VER);
#else
    return "unknown";
#endif
}

int cllm_native_build(void)
{
#if defined(CLLM_BUILD_NATIVE) && CLLM_BUILD_NATIVE
    return 1;
#else
    return 0;
#endif
}

int cllm_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The public kernels of cllm.h: each calls the chosen ISA's copy. */
#define CLLM_WRAPPER(name, params, args) \
    int cllm_##name params { return table()->name args; }
CLLM_ISA_KERNELS(CLLM_WRAPPER)
