// UTF-8 helpers, the character-class table and ICU-backed Unicode properties and normalization (see
// unicode.h). The table built from the system Oniguruma lives in onig_util.cpp (oniguruma.h and the ICU
// headers cannot share a translation unit: both define UChar).
#include "tokenizer/unicode.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "dsv3/error.h"

namespace dsv3::tok {

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t utf8_valid_prefix(std::string_view s) {
  auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    char32_t cp;
    int len = utf8_decode(p, n, i, cp);
    if (len == 0) return i;
    i += len;
  }
  return n;
}

// Length of the maximal subpart of an ill-formed sequence starting at i (Unicode "substitution of maximal
// subparts", which Rust's from_utf8_lossy follows): the lead byte plus the continuation bytes that are
// still a valid prefix of some well-formed sequence. At least 1.
static size_t maximal_subpart(const unsigned char* p, size_t n, size_t i) {
  unsigned c = p[i];
  size_t need;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  size_t k = 1;
  for (size_t j = 0; j < need && i + k < n; ++j) {
    unsigned b = p[i + k];
    if (b < lo || b > hi) break;
    lo = 0x80, hi = 0xBF;
    ++k;
  }
  return k;
}

std::string utf8_lossy(std::string_view bytes) {
  auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size(), i = 0;
  std::string out;
  out.reserve(n);
  while (i < n) {
    size_t v = utf8_valid_prefix(bytes.substr(i));
    out.append(bytes.data() + i, v);
    i += v;
    if (i >= n) break;
    i += maximal_subpart(p, n, i);
    out += "\xEF\xBF\xBD";
  }
  return out;
}

size_t utf8_incomplete_tail(std::string_view s) {
  auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  // Look back at most 3 bytes for a lead byte whose sequence is cut off by the end of s.
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    size_t i = n - back;
    unsigned c = p[i];
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    if (c < 0xC2 || c > 0xF4) return 0;
    size_t len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (len <= back) return 0;  // the sequence is complete (or longer than its lead allows): not a tail
    return maximal_subpart(p, n, i) == back ? back : 0;
  }
  return 0;
}

namespace {
struct ClassRun {
  uint32_t first;
  uint8_t mask;
};
constexpr ClassRun kClassRuns[] = {
#include "tokenizer/unicode_classes.inc"
};
}  // namespace

const uint8_t* char_class_table() {
  static const std::unique_ptr<uint8_t[]> table = [] {
    auto t = std::make_unique<uint8_t[]>(0x110000);
    constexpr size_t n = sizeof(kClassRuns) / sizeof(kClassRuns[0]);
    for (size_t k = 0; k < n; ++k) {
      uint32_t end = k + 1 < n ? kClassRuns[k + 1].first : 0x110000;
      std::memset(t.get() + kClassRuns[k].first, kClassRuns[k].mask, end - kClassRuns[k].first);
    }
    return t;
  }();
  return table.get();
}

bool rust_is_whitespace(char32_t cp) {
  return u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_WHITE_SPACE);
}

bool rust_is_word_char(char32_t cp) {
  auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) return true;
  int gc = u_charType(c);
  return gc == U_NON_SPACING_MARK || gc == U_ENCLOSING_MARK || gc == U_COMBINING_SPACING_MARK ||
         gc == U_DECIMAL_DIGIT_NUMBER || gc == U_CONNECTOR_PUNCTUATION;
}

static const UNormalizer2* normalizer_instance(NormalForm form) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (form) {
    case NormalForm::kNFC:
      n = unorm2_getNFCInstance(&err);
      break;
    case NormalForm::kNFD:
      n = unorm2_getNFDInstance(&err);
      break;
    case NormalForm::kNFKC:
      n = unorm2_getNFKCInstance(&err);
      break;
    case NormalForm::kNFKD:
      n = unorm2_getNFKDInstance(&err);
      break;
  }
  DSV3_CHECK(U_SUCCESS(err) && n, "ICU: cannot get normalizer: ", u_errorName(err));
  return n;
}

// Normalizes one valid UTF-8 run.
static void normalize_valid(const UNormalizer2* norm, std::string_view in, std::string& out) {
  bool ascii = true;
  for (unsigned char c : in) ascii &= c < 0x80;
  if (ascii) {  // ASCII is invariant under all four forms
    out.append(in);
    return;
  }
  UErrorCode err = U_ZERO_ERROR;
  int32_t n16 = 0;
  u_strFromUTF8(nullptr, 0, &n16, in.data(), static_cast<int32_t>(in.size()), &err);
  DSV3_CHECK(err == U_BUFFER_OVERFLOW_ERROR || U_SUCCESS(err),
             "ICU: UTF-8 conversion failed: ", u_errorName(err));
  std::vector<UChar> src(n16 + 1);
  err = U_ZERO_ERROR;
  u_strFromUTF8(src.data(), n16 + 1, nullptr, in.data(), static_cast<int32_t>(in.size()), &err);
  DSV3_CHECK(U_SUCCESS(err), "ICU: UTF-8 conversion failed: ", u_errorName(err));
  std::vector<UChar> dst(static_cast<size_t>(n16) * 3 + 16);
  err = U_ZERO_ERROR;
  int32_t nd = unorm2_normalize(norm, src.data(), n16, dst.data(), static_cast<int32_t>(dst.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    dst.resize(nd + 1);
    err = U_ZERO_ERROR;
    nd = unorm2_normalize(norm, src.data(), n16, dst.data(), static_cast<int32_t>(dst.size()), &err);
  }
  DSV3_CHECK(U_SUCCESS(err), "ICU: normalization failed: ", u_errorName(err));
  int32_t n8 = 0;
  err = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &n8, dst.data(), nd, &err);
  size_t base = out.size();
  out.resize(base + n8 + 1);
  err = U_ZERO_ERROR;
  u_strToUTF8(out.data() + base, n8 + 1, nullptr, dst.data(), nd, &err);
  DSV3_CHECK(U_SUCCESS(err), "ICU: UTF-16 conversion failed: ", u_errorName(err));
  out.resize(base + n8);
}

void unicode_normalize(NormalForm form, std::string_view in, std::string& out) {
  const UNormalizer2* norm = normalizer_instance(form);
  out.clear();
  size_t i = 0;
  while (i < in.size()) {
    size_t v = utf8_valid_prefix(in.substr(i));
    if (v) normalize_valid(norm, in.substr(i, v), out);
    i += v;
    if (i < in.size()) out.push_back(in[i++]);  // an invalid byte passes through on its own
  }
}

}  // namespace dsv3::tok
