// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
//
// The value at (seed, stream, index) depends on nothing else, so a tensor initialised on one rank or split
// across many gets identical numbers, and any element can be regenerated without replaying a sequence.
#pragma once
#include <array>
#include <cstdint>

namespace dsv3 {

std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t stream, uint64_t counter);

// Uniform in (0, 1) from the index-th draw of (seed, stream).
float rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);
// n standard-normal samples (Box-Muller over philox words) times `std`, element i a function of
// (seed, stream, i) only.
void rng_fill_normal(float* out, uint64_t n, float std, uint64_t seed, uint64_t stream);
// Stable 64-bit hash of a string (FNV-1a), used to derive a stream id from a tensor name.
uint64_t hash_name(const char* s);

}  // namespace dsv3
