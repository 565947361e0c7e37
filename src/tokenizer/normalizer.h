// tokenizer.json "normalizer": applied to the text between added tokens before pre-tokenization.
// Supported: null, Sequence (of supported ones, possibly empty: DeepSeek-V3 uses an empty Sequence),
// NFC, NFD, NFKC, NFKD (through ICU). Anything else is a dsv3::Error at load time, so a tokenizer is never
// silently run with a normalization step missing. Invalid UTF-8 bytes pass through unchanged.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/unicode.h"

namespace dsv3::tok {

class Normalizer {
 public:
  static Normalizer from_json(const nlohmann::json& j);
  bool is_identity() const { return forms_.empty(); }
  // Replaces out with the normalized text.
  void normalize(std::string_view in, std::string& out) const;
  nlohmann::json to_json() const { return json_; }

 private:
  std::vector<NormalForm> forms_;  // applied in order
  nlohmann::json json_;
};

}  // namespace dsv3::tok
