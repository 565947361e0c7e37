// Philox4x32-10 and the samplers built on it (see rng.h).
#include "core/rng.h"

#include <cmath>

namespace dsv3 {

std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t stream, uint64_t counter) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = uint32_t(stream), c3 = uint32_t(stream >> 32);
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n1 = uint32_t(p1);
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    const uint32_t n3 = uint32_t(p0);
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

static inline float to_unit(uint32_t x) { return (float(x >> 8) + 0.5f) * (1.0f / 16777216.0f); }

float rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return to_unit(philox4x32(seed, stream, index / 4)[index % 4]);
}

void rng_fill_normal(float* out, uint64_t n, float std, uint64_t seed, uint64_t stream) {
  // Each philox call yields two normals (Box-Muller on words 0,1 and 2,3).
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < int64_t((n + 3) / 4); ++blk) {
    auto w = philox4x32(seed, stream, uint64_t(blk));
    for (int pair = 0; pair < 2; ++pair) {
      const double u1 = to_unit(w[2 * pair]), u2 = to_unit(w[2 * pair + 1]);
      const double r = std::sqrt(-2.0 * std::log(u1));
      const double z0 = r * std::cos(2.0 * M_PI * u2), z1 = r * std::sin(2.0 * M_PI * u2);
      const uint64_t i = uint64_t(blk) * 4 + uint64_t(pair) * 2;
      if (i < n) out[i] = float(z0) * std;
      if (i + 1 < n) out[i + 1] = float(z1) * std;
    }
  }
}

uint64_t hash_name(const char* s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; ++s) h = (h ^ uint8_t(*s)) * 1099511628211ull;
  return h;
}

}  // namespace dsv3
