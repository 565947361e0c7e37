// Deterministic synthetic token stream (see synthetic_source.h).
#include "train/synthetic_source.h"

#include "core/rng.h"
#include "dsv3/error.h"

namespace dsv3::train {

SyntheticSource::SyntheticSource(int64_t vocab_size, uint64_t seed, const std::string& split)
    : vocab_(vocab_size), seed_(seed), stream_(hash_name(("synthetic/" + split).c_str())), split_(split) {
  DSV3_CHECK(vocab_size >= 2, "synthetic data needs vocab_size >= 2, got ", vocab_size);
}

void SyntheticSource::next(int64_t B, int64_t S, std::vector<int32_t>& tokens) {
  DSV3_CHECK(B > 0 && S > 0, "synthetic batch must be non-empty, got B=", B, " S=", S);
  tokens.resize(size_t(B * S));
  const uint64_t V = uint64_t(vocab_);
  for (int64_t b = 0; b < B; ++b) {
    const uint64_t n = uint64_t(sequences_ + b);
    int32_t* row = tokens.data() + b * S;
    // Draw index per token: 2 words per position (choice, random token), from counter (n << 24) + i (S < 2^24).
    for (int64_t i = 0; i < S; ++i) {
      const auto r = philox4x32(seed_, stream_, (n << 24) + uint64_t(i));
      if (i == 0 || double(r[0]) / 4294967296.0 >= 0.85) {
        row[i] = int32_t(r[1] % V);
      } else {
        row[i] = int32_t((uint64_t(row[i - 1]) * 5u + 3u) % V);
      }
    }
  }
  sequences_ += B;
}

void SyntheticSource::restore(const nlohmann::json& state) {
  DSV3_CHECK(state.is_object() && state.contains("sequences") && state["sequences"].is_number_integer(),
             "synthetic data: bad saved state ", state.dump());
  sequences_ = state["sequences"];
}

std::string SyntheticSource::fingerprint() const {
  return "synthetic-v1:vocab=" + std::to_string(vocab_) + ":seed=" + std::to_string(seed_) + ":split=" + split_;
}

}  // namespace dsv3::train
