// Pre-tokenizers (see pretokenize.h). Two implementations of the same semantics:
//  * the general one: every Split step finds its matches with Oniguruma (or a literal search for String
//    patterns), turns them into (range, is_match) spans covering the piece, applies the behavior and drops
//    empty pieces, in the order HF's Pattern / NormalizedString::split do;
//  * split_v3(): the DeepSeek-V3 sequence written out by hand. Each regex alternative is reduced to a
//    decision on the current character's class (docs/tokenizer.md derives each case):
//      A  [ASCII punct][A-Za-z]+        punct followed by a maximal ASCII-letter run
//      B  [^\r\n L P S]?[L M]+          optional one char outside L/P/S/CR/LF, then a maximal L/M run
//      C  ' '?[P S]+[\r\n]*             optional space, maximal P/S run, maximal CR/LF run
//      D  \s*[\r\n]+                    whitespace run cut right after its last CR/LF
//      E  \s+(?!\S)                     whitespace run to the end of the piece, or all but its last char
//      F  \s+                           the single whitespace char E could not take
//    tried in that order at each position; characters where nothing matches collect into gap pieces.
#include "tokenizer/pretokenize.h"

#include <algorithm>
#include <cstring>

#include "dsv3/error.h"
#include "tokenizer/onig_util.h"
#include "tokenizer/unicode.h"

namespace dsv3::tok {

const char* const kDeepSeekV3DigitsRegex = "\\p{N}{1,3}";
const char* const kDeepSeekV3CjkRegex =
    "[\xE4\xB8\x80-\xE9\xBE\xA5\xE3\x81\x80-\xE3\x82\x9F\xE3\x82\xA0-\xE3\x83\xBF]+";
const char* const kDeepSeekV3WordRegex =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
    "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
const char* const kByteLevelRegex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct PreTokenizer::Step {
  enum Kind { kSplit, kByteLevel } kind = kSplit;
  // Split
  std::string pattern;
  bool is_regex = true;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  std::shared_ptr<OnigRegex> regex;  // Regex patterns, and ByteLevel with use_regex
  // ByteLevel
  bool add_prefix_space = false;
  bool use_regex = true;
  bool trim_offsets = true;
};

PreTokenizer::PreTokenizer() = default;
PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(const PreTokenizer&) = default;
PreTokenizer& PreTokenizer::operator=(const PreTokenizer&) = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

namespace {

const char* behavior_name(SplitBehavior b) {
  switch (b) {
    case SplitBehavior::kRemoved:
      return "Removed";
    case SplitBehavior::kIsolated:
      return "Isolated";
    case SplitBehavior::kMergedWithPrevious:
      return "MergedWithPrevious";
    case SplitBehavior::kMergedWithNext:
      return "MergedWithNext";
    case SplitBehavior::kContiguous:
      return "Contiguous";
  }
  return "?";
}

SplitBehavior parse_behavior(const std::string& s) {
  for (auto b : {SplitBehavior::kRemoved, SplitBehavior::kIsolated, SplitBehavior::kMergedWithPrevious,
                 SplitBehavior::kMergedWithNext, SplitBehavior::kContiguous})
    if (s == behavior_name(b)) return b;
  DSV3_FAIL("pre_tokenizer Split: unknown behavior \"", s,
            "\" (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

bool json_bool(const nlohmann::json& j, const char* key, bool dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  DSV3_CHECK(j[key].is_boolean(), "pre_tokenizer field \"", key, "\" must be a boolean");
  return j[key].get<bool>();
}

// ---- The hand-written DeepSeek-V3 matcher. Input is valid UTF-8 (the caller guarantees it). ----

inline int decode_valid(const unsigned char* p, size_t i, char32_t& cp) {
  unsigned c = p[i];
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  if (c < 0xE0) {
    cp = ((c & 0x1F) << 6) | (p[i + 1] & 0x3F);
    return 2;
  }
  if (c < 0xF0) {
    cp = ((c & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
    return 3;
  }
  cp = ((c & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12) | ((p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
  return 4;
}

constexpr uint8_t kLM = kClassL | kClassM;
constexpr uint8_t kPS = kClassP | kClassS;
constexpr uint8_t kLPS = kClassL | kClassP | kClassS;

inline bool is_ascii_alpha(unsigned c) {
  return (c | 0x20) - 'a' < 26u;
}
// The ASCII punctuation class of alternative A: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~
inline bool is_ascii_punct(unsigned c) {
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
         (c >= 0x7B && c <= 0x7E);
}

struct V3Text {
  const unsigned char* p;
  size_t n;
  const uint8_t* cls;  // char_class_table()
  // Class and length of the character at i (i < n).
  inline uint8_t at(size_t i, int& len) const {
    char32_t cp;
    len = decode_valid(p, i, cp);
    return cls[cp];
  }
  // End of the maximal run starting at i of characters whose class intersects mask.
  inline size_t run(size_t i, uint8_t mask) const {
    while (i < n) {
      int len;
      if (!(at(i, len) & mask)) break;
      i += len;
    }
    return i;
  }
};

// Returns the end of the leftmost-first match of the word regex starting exactly at i, or 0 if none
// (no alternative matches an empty string, so 0 is never a real end for i < n).
inline size_t v3_word_match(const V3Text& t, size_t i) {
  int l0;
  unsigned c0 = t.p[i];
  uint8_t k0 = t.at(i, l0);
  // A: [punct][A-Za-z]+
  if (c0 < 0x80 && is_ascii_punct(c0) && i + 1 < t.n && is_ascii_alpha(t.p[i + 1])) {
    size_t j = i + 2;
    while (j < t.n && is_ascii_alpha(t.p[j])) ++j;
    return j;
  }
  // B: [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
  if (!(k0 & kLPS) && c0 != '\r' && c0 != '\n') {
    size_t j = i + l0;
    if (j < t.n) {
      int l1;
      if (t.at(j, l1) & kLM) return t.run(j + l1, kLM);
    }
  }
  if (k0 & kLM) return t.run(i + l0, kLM);
  // C:  ?[\p{P}\p{S}]+[\r\n]*
  size_t ps = 0;
  if (c0 == ' ' && i + 1 < t.n) {
    int l1;
    if (t.at(i + 1, l1) & kPS) ps = i + 1 + l1;
  }
  if (!ps && (k0 & kPS)) ps = i + l0;
  if (ps) {
    size_t j = t.run(ps, kPS);
    while (j < t.n && (t.p[j] == '\r' || t.p[j] == '\n')) ++j;
    return j;
  }
  if (!(k0 & kClassSpace)) return 0;
  // D, E, F on the whitespace run [i, j).
  size_t j = i, last_nl = 0, last_start = i;
  bool nl = false;
  while (j < t.n) {
    int len;
    if (!(t.at(j, len) & kClassSpace)) break;
    if (t.p[j] == '\r' || t.p[j] == '\n') nl = true, last_nl = j;
    last_start = j;
    j += len;
  }
  if (nl) return last_nl + 1;             // D
  if (j == t.n) return j;                 // E, nothing follows
  if (last_start > i) return last_start;  // E, give back the last whitespace char
  return j;                               // F
}

void v3_word_split(std::string_view s, PieceSink sink) {
  V3Text t{reinterpret_cast<const unsigned char*>(s.data()), s.size(), char_class_table()};
  size_t i = 0, gap = 0;
  while (i < t.n) {
    size_t e = v3_word_match(t, i);
    if (e) {
      if (gap < i) sink(Piece{s.substr(gap, i - gap), false});
      sink(Piece{s.substr(i, e - i), false});
      i = gap = e;
    } else {
      unsigned c = t.p[i];
      i += c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    }
  }
  if (gap < t.n) sink(Piece{s.substr(gap), false});
}

inline bool is_v3_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF);
}

// Step 2: maximal runs of CJK ideographs / kana vs everything else, each then split by the word regex.
void v3_cjk_split(std::string_view s, PieceSink sink) {
  auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0, start = 0;
  bool in_cjk = false;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {  // ASCII is never CJK
      if (in_cjk) {
        v3_word_split(s.substr(start, i - start), sink);
        start = i, in_cjk = false;
      }
      ++i;
      continue;
    }
    char32_t cp;
    int len = decode_valid(p, i, cp);
    bool cjk = is_v3_cjk(cp);
    if (cjk != in_cjk) {
      if (i > start) v3_word_split(s.substr(start, i - start), sink);
      start = i, in_cjk = cjk;
    }
    i += len;
  }
  if (start < n) v3_word_split(s.substr(start), sink);
}

// Step 1: \p{N}{1,3}. Number pieces pass steps 2 and 3 unchanged (no CJK range holds a number and no word
// alternative can start at a number without an L/M after it), so they are emitted directly.
void split_v3(std::string_view s, PieceSink sink) {
  auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const uint8_t* cls = char_class_table();
  size_t n = s.size(), i = 0, start = 0;
  while (i < n) {
    char32_t cp;
    int len = decode_valid(p, i, cp);
    if (!(cls[cp] & kClassN)) {
      i += len;
      continue;
    }
    if (start < i) v3_cjk_split(s.substr(start, i - start), sink);
    size_t chunk = i;
    int count = 0;
    while (i < n) {
      len = decode_valid(p, i, cp);
      if (!(cls[cp] & kClassN)) break;
      i += len;
      if (++count == 3) {
        sink(Piece{s.substr(chunk, i - chunk), false});
        chunk = i, count = 0;
      }
    }
    if (chunk < i) sink(Piece{s.substr(chunk, i - chunk), false});
    start = i;
  }
  if (start < n) v3_cjk_split(s.substr(start), sink);
}

}  // namespace

PreTokenizer PreTokenizer::from_json(const nlohmann::json& j, RegexEngine engine) {
  PreTokenizer pt;
  pt.json_null_ = j.is_null();
  if (j.is_null()) return pt;
  DSV3_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(),
             "pre_tokenizer must be an object with a string \"type\"");
  pt.json_was_sequence_ = j["type"] == "Sequence";
  // Flatten nested Sequences: applying steps one after another to all pieces is associative.
  std::vector<const nlohmann::json*> flat;
  auto flatten = [&](auto&& self, const nlohmann::json& node) -> void {
    DSV3_CHECK(node.is_object() && node.contains("type") && node["type"].is_string(),
               "pre_tokenizer entry must be an object with a string \"type\": ", node.dump().substr(0, 200));
    if (node["type"] == "Sequence") {
      DSV3_CHECK(node.contains("pretokenizers") && node["pretokenizers"].is_array(),
                 "pre_tokenizer Sequence needs a \"pretokenizers\" array");
      for (const auto& c : node["pretokenizers"]) self(self, c);
    } else {
      flat.push_back(&node);
    }
  };
  flatten(flatten, j);
  for (const nlohmann::json* sp : flat) {
    const nlohmann::json& s = *sp;
    const std::string type = s["type"];
    Step st;
    if (type == "Split") {
      st.kind = Step::kSplit;
      DSV3_CHECK(s.contains("pattern") && s["pattern"].is_object(),
                 "pre_tokenizer Split needs a \"pattern\" object");
      const auto& pat = s["pattern"];
      if (pat.contains("Regex")) {
        DSV3_CHECK(pat["Regex"].is_string(), "Split pattern Regex must be a string");
        st.pattern = pat["Regex"].get<std::string>();
        st.is_regex = true;
        st.regex = std::make_shared<OnigRegex>(st.pattern);
      } else if (pat.contains("String")) {
        DSV3_CHECK(pat["String"].is_string(), "Split pattern String must be a string");
        st.pattern = pat["String"].get<std::string>();
        st.is_regex = false;
      } else {
        DSV3_FAIL("pre_tokenizer Split pattern must have \"Regex\" or \"String\": ", pat.dump());
      }
      DSV3_CHECK(s.contains("behavior") && s["behavior"].is_string(),
                 "pre_tokenizer Split needs a \"behavior\"");
      st.behavior = parse_behavior(s["behavior"].get<std::string>());
      st.invert = json_bool(s, "invert", false);
    } else if (type == "ByteLevel") {
      st.kind = Step::kByteLevel;
      st.add_prefix_space = json_bool(s, "add_prefix_space", true);
      st.use_regex = json_bool(s, "use_regex", true);
      st.trim_offsets = json_bool(s, "trim_offsets", true);
      if (st.use_regex) st.regex = std::make_shared<OnigRegex>(kByteLevelRegex);
      pt.byte_level_ = true;
    } else {
      DSV3_FAIL("unsupported pre_tokenizer type \"", type, "\" (supported: Sequence, Split, ByteLevel)");
    }
    pt.steps_.push_back(std::move(st));
  }
  // Recognize the exact DeepSeek-V3 sequence.
  const auto& v = pt.steps_;
  auto is_split = [&](size_t k, const char* re) {
    return v[k].kind == Step::kSplit && v[k].is_regex && v[k].pattern == re &&
           v[k].behavior == SplitBehavior::kIsolated && !v[k].invert;
  };
  pt.native_v3_ = engine == RegexEngine::kAuto && v.size() == 4 && is_split(0, kDeepSeekV3DigitsRegex) &&
                  is_split(1, kDeepSeekV3CjkRegex) && is_split(2, kDeepSeekV3WordRegex) &&
                  v[3].kind == Step::kByteLevel && !v[3].add_prefix_space && !v[3].use_regex;
  return pt;
}

nlohmann::json PreTokenizer::to_json() const {
  if (json_null_) return nullptr;
  nlohmann::json arr = nlohmann::json::array();
  for (const Step& st : steps_) {
    nlohmann::json s;
    if (st.kind == Step::kSplit) {
      s["type"] = "Split";
      s["pattern"] = nlohmann::json{{st.is_regex ? "Regex" : "String", st.pattern}};
      s["behavior"] = behavior_name(st.behavior);
      s["invert"] = st.invert;
    } else {
      s["type"] = "ByteLevel";
      s["add_prefix_space"] = st.add_prefix_space;
      s["trim_offsets"] = st.trim_offsets;
      s["use_regex"] = st.use_regex;
    }
    arr.push_back(std::move(s));
  }
  if (!json_was_sequence_ && arr.size() == 1) return arr[0];
  return nlohmann::json{{"type", "Sequence"}, {"pretokenizers", arr}};
}

PreTokenizer PreTokenizer::deepseek_v3(RegexEngine engine) {
  nlohmann::json split = nlohmann::json::array();
  for (const char* re : {kDeepSeekV3DigitsRegex, kDeepSeekV3CjkRegex, kDeepSeekV3WordRegex})
    split.push_back(
        {{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}});
  split.push_back(
      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
  return from_json(nlohmann::json{{"type", "Sequence"}, {"pretokenizers", split}}, engine);
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  out.clear();
  for_each_piece(text, [&](Piece p) { out.push_back(p.text); });
}

void PreTokenizer::for_each_piece(std::string_view text, PieceSink sink) const {
  // Valid UTF-8 runs go through the steps; each invalid byte is a piece of its own.
  size_t i = 0;
  while (i < text.size()) {
    size_t v = utf8_valid_prefix(text.substr(i));
    if (v) {
      std::string_view run = text.substr(i, v);
      if (native_v3_)
        split_v3(run, sink);
      else
        apply(0, Piece{run, false}, sink);
    }
    i += v;
    if (i < text.size()) sink(Piece{text.substr(i++, 1), false});
  }
}

void PreTokenizer::apply(size_t k, Piece piece, PieceSink sink) const {
  if (k == steps_.size()) {
    sink(piece);
    return;
  }
  split_with_step(steps_[k], piece, [&](Piece sub) { apply(k + 1, sub, sink); });
}

// One step on one piece. A piece carrying a virtual prefix space is matched as " " + text; the resulting
// ranges are mapped back (the range that starts at 0 carries the space).
void PreTokenizer::split_with_step(const Step& st, Piece piece, PieceSink sink) const {
  if (st.kind == Step::kByteLevel) {
    if (st.add_prefix_space && !piece.prefix_space && (piece.text.empty() || piece.text[0] != ' '))
      piece.prefix_space = true;
    if (!st.use_regex) {
      sink(piece);
      return;
    }
  }
  std::string buf;
  std::string_view hay = piece.text;
  if (piece.prefix_space) {
    buf.reserve(piece.text.size() + 1);
    buf.push_back(' ');
    buf.append(piece.text);
    hay = buf;
  }
  const size_t shift = piece.prefix_space ? 1 : 0;
  auto emit = [&](size_t a, size_t b) {  // [a, b) in hay coordinates, non-empty
    if (shift && a == 0)
      sink(Piece{piece.text.substr(0, b - 1), true});
    else
      sink(Piece{piece.text.substr(a - shift, b - a), false});
  };
  // (range, is_match) spans covering hay, in order (HF's Pattern::find_matches).
  struct Span {
    size_t a, b;
    bool match;
  };
  std::vector<Span> spans;
  if (hay.empty()) {
    spans.push_back({0, 0, false});
  } else {
    size_t prev = 0;
    auto on_match = [&](size_t s, size_t e) {
      if (prev != s) spans.push_back({prev, s, false});
      spans.push_back({s, e, true});
      prev = e;
    };
    if (st.kind == Step::kByteLevel || st.is_regex) {
      st.regex->for_each_match(hay, on_match);
    } else if (!st.pattern.empty()) {
      for (size_t pos = hay.find(st.pattern); pos != std::string_view::npos;
           pos = hay.find(st.pattern, pos)) {
        on_match(pos, pos + st.pattern.size());
        pos += st.pattern.size();
      }
    }
    if (prev != hay.size()) spans.push_back({prev, hay.size(), false});
  }
  if (st.kind == Step::kByteLevel) {  // ByteLevel's regex split is always Isolated
    for (const Span& s : spans)
      if (s.b > s.a) emit(s.a, s.b);
    return;
  }
  if (st.invert)
    for (Span& s : spans) s.match = !s.match;
  // Apply the behavior: produce (range, removed) pieces.
  std::vector<Span> out;  // here .match means "remove"
  out.reserve(spans.size());
  switch (st.behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) out.push_back({s.a, s.b, false});
      break;
    case SplitBehavior::kRemoved:
      out = spans;
      break;
    case SplitBehavior::kContiguous: {
      int prev_match = -1;
      for (const Span& s : spans) {
        if (prev_match == static_cast<int>(s.match))
          out.back().b = s.b;
        else
          out.push_back({s.a, s.b, false});
        prev_match = s.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const Span& s : spans) {
        if (s.match && !prev_match && !out.empty())
          out.back().b = s.b;
        else
          out.push_back({s.a, s.b, false});
        prev_match = s.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.match && !prev_match && !out.empty())
          out.back().a = s.a;
        else
          out.push_back({s.a, s.b, false});
        prev_match = s.match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  for (const Span& s : out)
    if (!s.match && s.b > s.a) emit(s.a, s.b);
}

}  // namespace dsv3::tok
