// BatchSource: where the trainer gets its token batches. The trainer knows nothing about files or tokenizers;
// the shard loader (data pipeline) and synthetic sources for tests implement this.
//
// Contract: next() fills `tokens` with B rows of S token ids (row-major [B, S]); within a row, position i
// predicts i+1 (documents are packed, separated by EOS, no cross-document mask — V3_SPEC.md §7). state()
// returns everything needed to resume at exactly the next batch (cursor, epoch, shuffle seed), and
// restore(state()) on a fresh source with the same inputs must make the following next() calls identical.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

namespace dsv3::train {

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual void next(int64_t B, int64_t S, std::vector<int32_t>& tokens) = 0;
  virtual nlohmann::json state() const = 0;
  virtual void restore(const nlohmann::json& state) = 0;
  // Identifies the data (e.g. tokenizer hash + shard list) so a resumed run can refuse different data.
  virtual std::string fingerprint() const = 0;
};

}  // namespace dsv3::train
