// Normalizer parsing and application (see normalizer.h).
#include "tokenizer/normalizer.h"

#include "dsv3/error.h"

namespace dsv3::tok {

Normalizer Normalizer::from_json(const nlohmann::json& j) {
  Normalizer n;
  n.json_ = j;
  auto add = [&](auto&& self, const nlohmann::json& node) -> void {
    if (node.is_null()) return;
    DSV3_CHECK(node.is_object() && node.contains("type") && node["type"].is_string(),
               "normalizer must be an object with a string \"type\": ", node.dump().substr(0, 200));
    const std::string type = node["type"];
    if (type == "Sequence") {
      DSV3_CHECK(node.contains("normalizers") && node["normalizers"].is_array(),
                 "normalizer Sequence needs a \"normalizers\" array");
      for (const auto& c : node["normalizers"]) self(self, c);
    } else if (type == "NFC") {
      n.forms_.push_back(NormalForm::kNFC);
    } else if (type == "NFD") {
      n.forms_.push_back(NormalForm::kNFD);
    } else if (type == "NFKC") {
      n.forms_.push_back(NormalForm::kNFKC);
    } else if (type == "NFKD") {
      n.forms_.push_back(NormalForm::kNFKD);
    } else {
      DSV3_FAIL("unsupported normalizer type \"", type, "\" (supported: Sequence, NFC, NFD, NFKC, NFKD)");
    }
  };
  add(add, j);
  return n;
}

void Normalizer::normalize(std::string_view in, std::string& out) const {
  if (forms_.empty()) {
    out.assign(in);
    return;
  }
  std::string tmp;
  unicode_normalize(forms_[0], in, out);
  for (size_t k = 1; k < forms_.size(); ++k) {
    tmp.swap(out);
    unicode_normalize(forms_[k], tmp, out);
  }
}

}  // namespace dsv3::tok
