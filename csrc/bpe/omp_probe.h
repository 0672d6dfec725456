// Thread-policy helpers shared by the C++ tokenizer code: what OpenMP this module was built with, and how many
// threads a region asked for num_threads really gets (used by the tests to see the per-call clause work).
#pragma once
#ifdef _OPENMP
#include <omp.h>
#endif

namespace cllm_bpe {

inline bool openmp_enabled()
{
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

// Distinct OpenMP threads that ran a parallel region of num_threads (1 without OpenMP).
inline int threads_used(int num_threads)
{
    int used = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(num_threads)
    {
#pragma omp single
        used = omp_get_num_threads();
    }
#else
    (void)num_threads;
#endif
    return used;
}

}  // namespace cllm_bpe
