// The byte-level alphabet of GPT-2 style BPE (used by DeepSeek-V3's ByteLevel pre-tokenizer and decoder):
// every byte maps to one printable code point. Bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF map to themselves;
// the other 68 bytes map, in increasing byte order, to U+0100, U+0101, ... (so ' ' -> 'Ġ', '\n' -> 'Ċ').
// Vocabulary strings are written in this alphabet; decoding maps each code point back to its byte.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv3::tok {

// byte -> UTF-8 string of its mapped code point.
const std::string& byte_to_unicode(uint8_t b);
// Maps every byte of raw (any bytes, valid UTF-8 or not).
std::string bytes_to_unicode_string(std::string_view raw);
// Code point -> byte, or -1 if cp is not in the alphabet.
int unicode_to_byte(char32_t cp);
// Inverse of bytes_to_unicode_string: false (and out unspecified) if some character of s is not in the
// alphabet or s is not valid UTF-8.
bool unicode_string_to_bytes(std::string_view s, std::string& out);

}  // namespace dsv3::tok
