// A fast 64-bit hash of byte strings, shared by the trainer's word table and the encoder's piece cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace cllm_bpe {

// 8 bytes at a time multiplied in, then a final avalanche (MurmurHash3's fmix64 constants).
inline uint64_t hash_bytes(std::string_view s)
{
    const unsigned char *p = reinterpret_cast<const unsigned char *>(s.data());
    size_t n = s.size();
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t(n) * 0xc4ceb9fe1a85ec53ULL);
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        std::memcpy(&v, p, 8);
        h = (h ^ v) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
    }
    if (n) {
        uint64_t v = 0;
        std::memcpy(&v, p, n);
        h = (h ^ v) * 0x9E3779B97F4A7C15ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

}  // namespace cllm_bpe
