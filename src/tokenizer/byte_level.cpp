// GPT-2 byte <-> code point alphabet (see byte_level.h).
#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/unicode.h"

namespace dsv3::tok {
namespace {

struct Alphabet {
  std::array<char32_t, 256> cp{};
  std::array<std::string, 256> utf8;
  Alphabet() {
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      cp[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      utf8_append(utf8[b], cp[b]);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t b) {
  return alphabet().utf8[b];
}

std::string bytes_to_unicode_string(std::string_view raw) {
  const Alphabet& a = alphabet();
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) out += a.utf8[c];
  return out;
}

int unicode_to_byte(char32_t cp) {
  if (cp < 256) {
    bool printable = (cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF);
    return printable ? static_cast<int>(cp) : -1;
  }
  if (cp >= 256 + 68) return -1;
  const Alphabet& a = alphabet();
  for (int b = 0; b < 256; ++b)
    if (a.cp[b] == cp) return b;
  return -1;
}

bool unicode_string_to_bytes(std::string_view s, std::string& out) {
  out.clear();
  auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    char32_t cp;
    int len = utf8_decode(p, s.size(), i, cp);
    if (len == 0) return false;
    int b = unicode_to_byte(cp);
    if (b < 0) return false;
    out.push_back(static_cast<char>(b));
    i += len;
  }
  return true;
}

}  // namespace dsv3::tok
