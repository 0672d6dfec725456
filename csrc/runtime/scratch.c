/* One large scratch buffer kept from call to call. Big temporaries (the weight gradient's chunk partials, tens
 * of MB) would otherwise be mapped and faulted in, page by page, on every call. One caller at a time holds it;
 * a concurrent caller (another Python thread: the kernels release the GIL) gets a fresh allocation instead. */
#include "cllm.h"
#include "memory.h"

static void *slot = NULL;
static size_t slot_bytes = 0;
static int slot_busy = 0;

#if defined(_MSC_VER)
#include <intrin.h>
static int try_lock(void) { return _InterlockedCompareExchange((volatile long *)&slot_busy, 1, 0) == 0; }
static void unlock(void) { _InterlockedExchange((volatile long *)&slot_busy, 0); }
static void *current(void) { return _InterlockedCompareExchangePointer(&slot, NULL, NULL); }
#else
static int try_lock(void)
{
    int expected = 0;
    return __atomic_compare_exchange_n(&slot_busy, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}
static void unlock(void) { __atomic_store_n(&slot_busy, 0, __ATOMIC_RELEASE); }
static void *current(void) { return __atomic_load_n(&slot, __ATOMIC_ACQUIRE); }
#endif

void *cllm_scratch_get(size_t bytes)
{
    if (!try_lock()) return cllm_alloc(bytes);
    if (slot_bytes < bytes) {
        cllm_free(slot);
        void *p = cllm_alloc(bytes);
#if defined(_MSC_VER)
        _InterlockedExchangePointer(&slot, p);
#else
        __atomic_store_n(&slot, p, __ATOMIC_RELEASE);
#endif
        slot_bytes = p ? bytes : 0;
    }
    if (slot) return slot;
    unlock();
    return NULL;
}

void cllm_scratch_put(void *p)
{
    if (!p) return;
    if (p == current()) unlock();
    else cllm_free(p);
}
