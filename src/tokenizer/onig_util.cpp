// Oniguruma wrapper (see onig_util.h).
#include "tokenizer/onig_util.h"

#include <cstring>
#include <memory>
#include <mutex>

#include "dsv3/error.h"
#include "tokenizer/unicode.h"

namespace dsv3::tok {

void onig_ensure_initialized() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encs[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encs, 1);
  });
}

OnigRegex::OnigRegex(const std::string& pattern) : pattern_(pattern) {
  onig_ensure_initialized();
  regex_t* re = nullptr;
  OnigErrorInfo einfo;
  auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  int rc = onig_new(&re, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_ONIGURUMA,
                    &einfo);
  if (rc != ONIG_NORMAL) {
    OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(msg, rc, &einfo);
    DSV3_FAIL("invalid regex \"", pattern, "\": ", reinterpret_cast<const char*>(msg));
  }
  re_ = std::shared_ptr<regex_t>(re, Deleter{});
}

std::pair<long, long> OnigRegex::search(std::string_view text, size_t from) const {
  struct RegionHolder {
    OnigRegion* r = onig_region_new();
    ~RegionHolder() { onig_region_free(r, 1); }
  };
  thread_local RegionHolder holder;  // reused: one allocation per thread, not per search
  OnigRegion* region = holder.r;
  onig_region_clear(region);
  auto* s = reinterpret_cast<const OnigUChar*>(text.data());
  auto* end = s + text.size();
  int r = onig_search(re_.get(), s, end, s + from, end, region, ONIG_OPTION_NONE);
  std::pair<long, long> out{-1, -1};
  if (r >= 0) out = {region->beg[0], region->end[0]};
  DSV3_CHECK(r >= 0 || r == ONIG_MISMATCH, "oniguruma search failed with code ", r);
  return out;
}

const uint8_t* onig_char_class_table() {
  static const std::unique_ptr<uint8_t[]> table = [] {
    onig_ensure_initialized();
    auto t = std::make_unique<uint8_t[]>(0x110000);
    std::memset(t.get(), 0, 0x110000);
    auto fill = [&](int ctype, uint8_t bit) {
      OnigCodePoint sb_out = 0;
      const OnigCodePoint* ranges = nullptr;
      int rc = ONIGENC_GET_CTYPE_CODE_RANGE(ONIG_ENCODING_UTF8, ctype, &sb_out, &ranges);
      DSV3_CHECK(rc == 0 && ranges != nullptr, "oniguruma: no code ranges for ctype ", ctype);
      for (OnigCodePoint k = 0; k < ranges[0]; ++k) {
        OnigCodePoint from = ranges[1 + 2 * k], to = ranges[2 + 2 * k];
        for (OnigCodePoint c = from; c <= to && c < 0x110000; ++c) t[c] |= bit;
      }
    };
    auto prop = [&](const char* name) {
      auto* p = reinterpret_cast<OnigUChar*>(const_cast<char*>(name));
      int ct = ONIGENC_PROPERTY_NAME_TO_CTYPE(ONIG_ENCODING_UTF8, p, p + std::strlen(name));
      DSV3_CHECK(ct >= 0, "oniguruma: unknown property ", name);
      return ct;
    };
    fill(prop("L"), kClassL);
    fill(prop("M"), kClassM);
    fill(prop("N"), kClassN);
    fill(prop("P"), kClassP);
    fill(prop("S"), kClassS);
    fill(ONIGENC_CTYPE_SPACE, kClassSpace);
    return t;
  }();
  return table.get();
}

}  // namespace dsv3::tok
