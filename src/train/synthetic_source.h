// SyntheticSource: a BatchSource over a deterministic, learnable synthetic token stream, for tests and for
// running the trainer without a data set ("data": "synthetic").
//
// Sequence n (counted over every row ever emitted) is a function of (seed, split, n) only: it starts at a
// random token and each next token is, with probability 0.85, the successor succ(t) = (a·t + c) mod V
// (a fixed affine map), otherwise a uniform random token — so a model can learn the map (loss falls well
// below ln V) but never reaches zero. Split "val" draws from a different stream than "train".
// State: {"sequences": n}. Not here: files, tokenizers, packing, FIM (data pipeline).
#pragma once
#include <cstdint>
#include <string>

#include "train/batch_source.h"

namespace dsv3::train {

class SyntheticSource : public BatchSource {
 public:
  SyntheticSource(int64_t vocab_size, uint64_t seed, const std::string& split = "train");

  void next(int64_t B, int64_t S, std::vector<int32_t>& tokens) override;
  nlohmann::json state() const override { return {{"sequences", sequences_}}; }
  void restore(const nlohmann::json& state) override;
  std::string fingerprint() const override;

 private:
  int64_t vocab_;
  uint64_t seed_, stream_;
  std::string split_;
  int64_t sequences_ = 0;
};

}  // namespace dsv3::train
