// Thin RAII wrapper over an Oniguruma regex, compiled the way the Rust `onig` crate used by Hugging Face
// tokenizers compiles it (UTF-8, ONIG_OPTION_NONE, Oniguruma syntax), plus find-all iteration with that
// crate's rule for empty matches (an empty match right at the end of the previous match is skipped and the
// search moves one character on). The regex is immutable after construction and safe to share between
// threads; each search uses its own region.
#pragma once
#include <oniguruma.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsv3::tok {

void onig_ensure_initialized();

class OnigRegex {
 public:
  explicit OnigRegex(const std::string& pattern);  // throws dsv3::Error with Oniguruma's message
  // Calls f(start, end) for every match in text, in order (byte offsets).
  template <typename F>
  void for_each_match(std::string_view text, F&& f) const;
  const std::string& pattern() const { return pattern_; }

 private:
  // Searches text from byte `from`; returns {start, end} or {-1, -1}.
  std::pair<long, long> search(std::string_view text, size_t from) const;
  struct Deleter {
    void operator()(regex_t* r) const { onig_free(r); }
  };
  std::string pattern_;
  std::shared_ptr<regex_t> re_;
};

template <typename F>
void OnigRegex::for_each_match(std::string_view text, F&& f) const {
  size_t pos = 0;
  long last_match_end = -1;
  while (pos <= text.size()) {
    auto [s, e] = search(text, pos);
    if (s < 0) break;
    if (s == e && last_match_end == e) {
      // Skip one character (one byte when it is not a valid UTF-8 lead, which cannot happen for the
      // valid text the pre-tokenizer hands us).
      size_t step = 1;
      if (pos < text.size()) {
        unsigned char c = static_cast<unsigned char>(text[pos]);
        step = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      }
      pos += step;
      continue;
    }
    pos = static_cast<size_t>(e);
    last_match_end = e;
    f(static_cast<size_t>(s), static_cast<size_t>(e));
  }
}

}  // namespace dsv3::tok
