// Added-token matching (see added_tokens.h).
#include "tokenizer/added_tokens.h"

#include <algorithm>
#include <cstring>

#include "tokenizer/unicode.h"

namespace dsv3::tok {
namespace {

// Last code point of s[0, end), or -1 if there is none or it is not valid UTF-8.
long last_code_point(std::string_view s, size_t end) {
  auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t back = 1; back <= 4 && back <= end; ++back) {
    size_t i = end - back;
    if ((p[i] & 0xC0) == 0x80) continue;
    char32_t cp;
    int len = utf8_decode(p, end, i, cp);
    return len == static_cast<int>(back) ? static_cast<long>(cp) : -1;
  }
  return -1;
}

long first_code_point(std::string_view s, size_t begin, int* len_out = nullptr) {
  if (begin >= s.size()) return -1;
  char32_t cp;
  int len = utf8_decode(reinterpret_cast<const unsigned char*>(s.data()), s.size(), begin, cp);
  if (len_out) *len_out = len;
  return len ? static_cast<long>(cp) : -1;
}

}  // namespace

void AddedTokenMatcher::build(std::vector<std::string> patterns, std::vector<AddedToken> tokens) {
  nodes_.assign(1, Node{});
  edges_.clear();
  std::memset(first_byte_, 0, sizeof(first_byte_));
  single_first_byte_ = -1;
  tokens_ = std::move(tokens);
  for (size_t k = 0; k < patterns.size(); ++k) {
    const std::string& pat = patterns[k];
    if (pat.empty()) continue;  // HF ignores empty tokens
    int32_t node = 0;
    for (unsigned char c : pat) {
      uint64_t key = (static_cast<uint64_t>(node) << 8) | c;
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        nodes_.push_back(Node{});
        it = edges_.emplace(key, static_cast<int32_t>(nodes_.size() - 1)).first;
      }
      node = it->second;
    }
    if (nodes_[node].terminal < 0) nodes_[node].terminal = static_cast<int32_t>(k);
    unsigned char f = static_cast<unsigned char>(pat[0]);
    first_byte_[f] = true;
    if (single_first_byte_ == -1)
      single_first_byte_ = f;
    else if (single_first_byte_ != f)
      single_first_byte_ = -2;
  }
  if (nodes_.size() == 1) tokens_.clear();
}

int AddedTokenMatcher::longest_at(std::string_view s, size_t pos, size_t& end) const {
  int32_t node = 0, best = -1;
  for (size_t k = pos; k < s.size(); ++k) {
    auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[k]));
    if (it == edges_.end()) break;
    node = it->second;
    if (nodes_[node].terminal >= 0) best = nodes_[node].terminal, end = k + 1;
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view s, FunctionRef<void(std::string_view)> on_text,
                              FunctionRef<void(int32_t)> on_token) const {
  if (s.empty()) return;
  if (tokens_.empty()) {
    on_text(s);
    return;
  }
  const size_t n = s.size();
  size_t start_offset = 0;  // HF's name: end of the last emitted match
  size_t pos = 0;
  while (pos < n) {
    if (single_first_byte_ >= 0) {
      const void* hit = std::memchr(s.data() + pos, single_first_byte_, n - pos);
      if (!hit) break;
      pos = static_cast<const char*>(hit) - s.data();
    } else {
      while (pos < n && !first_byte_[static_cast<unsigned char>(s[pos])]) ++pos;
      if (pos >= n) break;
    }
    size_t stop = 0;
    int k = longest_at(s, pos, stop);
    if (k < 0) {
      ++pos;
      continue;
    }
    size_t start = pos;
    pos = stop;  // the automaton resumes after the raw match whatever happens below
    const AddedToken& tok = tokens_[k];
    if (tok.single_word) {
      long before = last_code_point(s, start), after = first_code_point(s, stop);
      bool start_space = start == 0 || before < 0 || !rust_is_word_char(static_cast<char32_t>(before));
      bool stop_space = stop == n || after < 0 || !rust_is_word_char(static_cast<char32_t>(after));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) {
      size_t newstart = start;
      while (newstart > 0) {
        long cp = last_code_point(s, newstart);
        if (cp < 0 || !rust_is_whitespace(static_cast<char32_t>(cp))) break;
        newstart -= cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      }
      start = std::max(newstart, start_offset);
    }
    if (tok.rstrip) {
      int len = 0;
      for (long cp;
           (cp = first_code_point(s, stop, &len)) >= 0 && rust_is_whitespace(static_cast<char32_t>(cp));)
        stop += len;
    }
    if (start_offset < start) on_text(s.substr(start_offset, start - start_offset));
    on_token(tok.id);
    start_offset = stop;
  }
  if (start_offset < n) on_text(s.substr(start_offset));
}

}  // namespace dsv3::tok
