// Tokenizer loading, encode and decode (see tokenizer.h).
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_set>

#include "dsv3/error.h"

namespace dsv3::tok {
namespace {

nlohmann::json read_json_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  DSV3_CHECK(f.good(), "cannot open ", p.string());
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    DSV3_FAIL("malformed JSON in ", p.string(), ": ", e.what());
  }
}

bool get_bool(const nlohmann::json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  DSV3_CHECK(it->is_boolean(), "field \"", key, "\" must be a boolean, got ", it->dump());
  return it->get<bool>();
}

// tokenizer_config.json writes special tokens either as a string or as {"content": ..., ...}.
std::string config_token(const nlohmann::json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  DSV3_FAIL("tokenizer_config field \"", key, "\" must be a string or an object with \"content\"");
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path, RegexEngine engine) {
  namespace fs = std::filesystem;
  fs::path p(path);
  DSV3_CHECK(fs::exists(p), "tokenizer path does not exist: ", path);
  fs::path file = fs::is_directory(p) ? p / "tokenizer.json" : p;
  DSV3_CHECK(fs::is_regular_file(file), "no tokenizer.json at ", file.string());
  nlohmann::json tj = read_json_file(file);
  nlohmann::json cfg;
  fs::path cfg_path = file.parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(cfg_path)) cfg = read_json_file(cfg_path);
  try {
    return from_json(tj, cfg, engine);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (loading " + file.string() + ")");
  }
}

Tokenizer Tokenizer::from_json(const nlohmann::json& j, const nlohmann::json& cfg, RegexEngine engine) {
  DSV3_CHECK(j.is_object(), "tokenizer.json must be a JSON object");
  DSV3_CHECK(j.contains("model"), "tokenizer.json has no \"model\"");
  auto value_or_null = [&](const char* key) { return j.contains(key) ? j[key] : nlohmann::json(); };
  Tokenizer t;
  t.norm_ = Normalizer::from_json(value_or_null("normalizer"));
  t.pre_ = PreTokenizer::from_json(value_or_null("pre_tokenizer"), engine);
  t.bpe_ = BpeModel::from_json(j["model"]);
  t.bpe_.set_byte_level(t.pre_.byte_level());

  const nlohmann::json dec = value_or_null("decoder");
  if (dec.is_null()) {
    t.byte_level_decoder_ = false;
  } else {
    DSV3_CHECK(dec.is_object() && dec.value("type", "") == "ByteLevel", "unsupported decoder ", dec.dump(),
               " (supported: ByteLevel, or none)");
    t.byte_level_decoder_ = true;
  }

  // Added tokens, registered the way HF's deserializer does it (AddedVocabulary::add_tokens over the JSON
  // list in order): the "id" fields are not trusted. A token whose content is already known (an earlier
  // added token, else the model vocab) takes that id; a new one takes max(added ids) + 1, or the model's
  // vocab entry count when that is larger. An exact duplicate (same content and flags) is ignored.
  const nlohmann::json added = value_or_null("added_tokens");
  DSV3_CHECK(added.is_null() || added.is_array(), "tokenizer.json \"added_tokens\" must be an array");
  std::vector<AddedToken> listed;
  if (added.is_array()) {
    for (const auto& a : added) {
      DSV3_CHECK(a.is_object() && a.contains("content") && a["content"].is_string(),
                 "added token needs a string \"content\": ", a.dump());
      AddedToken tok;
      if (a.contains("id")) {
        DSV3_CHECK(a["id"].is_number_integer(), "added token \"id\" must be an integer: ", a.dump());
        tok.id = static_cast<int32_t>(a["id"].get<int64_t>());
      }
      tok.content = a["content"].get<std::string>();
      tok.single_word = get_bool(a, "single_word", false);
      tok.lstrip = get_bool(a, "lstrip", false);
      tok.rstrip = get_bool(a, "rstrip", false);
      tok.normalized = get_bool(a, "normalized", true);
      tok.special = get_bool(a, "special", false);
      listed.push_back(std::move(tok));
    }
  }
  auto same_token = [](const AddedToken& x, const AddedToken& y) {
    return x.content == y.content && x.single_word == y.single_word && x.lstrip == y.lstrip &&
           x.rstrip == y.rstrip && x.normalized == y.normalized && x.special == y.special;
  };
  std::unordered_set<std::string> special_set;
  std::vector<AddedToken> specials, classic;  // HF's trie order: special tokens, then the others
  std::map<int32_t, AddedToken> by_id;
  for (const AddedToken& a : listed)
    if (a.special && !a.content.empty() && special_set.insert(a.content).second) specials.push_back(a);
  const int32_t model_entries = t.bpe_.n_vocab();
  int32_t max_added = -1;
  for (AddedToken a : listed) {
    if (a.content.empty()) continue;
    bool dup = false;
    for (const auto& [id, b] : by_id) dup = dup || same_token(a, b);
    if (dup) continue;
    auto known = t.added_ids_.find(a.content);
    int32_t id = known != t.added_ids_.end() ? known->second : t.bpe_.token_to_id(a.content);
    if (id < 0)
      id = max_added < 0                                        ? model_entries
           : (max_added >= model_entries || model_entries == 0) ? max_added + 1
                                                                : model_entries;
    a.id = id;
    t.added_ids_[a.content] = id;
    max_added = std::max(max_added, id);
    by_id[id] = a;
    if (!special_set.count(a.content)) classic.push_back(a);
  }
  for (const auto& [id, a] : by_id) t.added_.push_back(a);
  int32_t max_id = std::max(t.bpe_.max_id(), max_added);
  t.vocab_size_ = max_id + 1;
  // Matchers, split by each listed token's `normalized`; matches report the id's current token.
  std::vector<std::string> raw_pats, norm_pats;
  std::vector<AddedToken> raw_toks, norm_toks;
  for (const auto* list : {&specials, &classic}) {
    for (const AddedToken& a : *list) {
      const AddedToken& current = by_id.at(t.added_ids_.at(a.content));
      if (a.normalized) {
        std::string n;
        t.norm_.normalize(a.content, n);
        norm_pats.push_back(std::move(n));
        norm_toks.push_back(current);
      } else {
        raw_pats.push_back(a.content);
        raw_toks.push_back(current);
      }
    }
  }
  t.raw_matcher_.build(std::move(raw_pats), std::move(raw_toks));
  t.normalized_matcher_.build(std::move(norm_pats), std::move(norm_toks));

  // Id tables: token string (added tokens shadow the vocab), special flag, decoded bytes.
  t.id_token_.assign(t.vocab_size_, std::string());
  t.id_present_.assign(t.vocab_size_, 0);
  for (int32_t id = 0; id <= t.bpe_.max_id(); ++id)
    if (const std::string* s = t.bpe_.id_to_token(id)) t.id_token_[id] = *s, t.id_present_[id] = 1;
  for (const AddedToken& a : t.added_) t.id_token_[a.id] = a.content, t.id_present_[a.id] = 1;
  t.special_.assign(t.vocab_size_, 0);
  t.bytes_off_.assign(t.vocab_size_ + 1, 0);
  std::string b;
  for (int32_t id = 0; id < t.vocab_size_; ++id) {
    t.bytes_off_[id] = static_cast<uint32_t>(t.bytes_blob_.size());
    if (!t.id_present_[id]) continue;
    const std::string& s = t.id_token_[id];
    t.special_[id] = special_set.count(s) ? 1 : 0;
    if (t.byte_level_decoder_ && unicode_string_to_bytes(s, b))
      t.bytes_blob_ += b;
    else
      t.bytes_blob_ += s;
  }
  t.bytes_off_[t.vocab_size_] = static_cast<uint32_t>(t.bytes_blob_.size());

  // tokenizer_config.json
  if (cfg.is_object()) {
    t.bos_token_ = config_token(cfg, "bos_token");
    t.eos_token_ = config_token(cfg, "eos_token");
    t.pad_token_ = config_token(cfg, "pad_token");
    t.add_bos_default_ = get_bool(cfg, "add_bos_token", false);
    auto ct = cfg.find("chat_template");
    if (ct != cfg.end() && ct->is_string()) {
      t.chat_template_ = ct->get<std::string>();
    } else if (ct != cfg.end() && ct->is_array()) {  // [{"name": ..., "template": ...}, ...]
      for (const auto& e : *ct)
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template"))
          t.chat_template_ = e["template"].get<std::string>();
      if (t.chat_template_.empty() && !ct->empty() && (*ct)[0].contains("template"))
        t.chat_template_ = (*ct)[0]["template"].get<std::string>();
    }
  }
  t.bos_id_ = t.bos_token_.empty() ? -1 : t.token_to_id(t.bos_token_);
  t.eos_id_ = t.eos_token_.empty() ? -1 : t.token_to_id(t.eos_token_);
  t.pad_id_ = t.pad_token_.empty() ? -1 : t.token_to_id(t.pad_token_);
  return t;
}

void Tokenizer::encode_pretokenized(std::string_view text, std::vector<int32_t>& out) const {
  pre_.for_each_piece(text, [&](Piece p) { bpe_.encode_piece(p, out); });
}

void Tokenizer::encode_segment(std::string_view segment, std::vector<int32_t>& out) const {
  std::string buf;
  std::string_view text = segment;
  if (!norm_.is_identity()) {
    norm_.normalize(segment, buf);
    text = buf;
  }
  if (normalized_matcher_.empty()) {
    encode_pretokenized(text, out);
    return;
  }
  normalized_matcher_.split(
      text, [&](std::string_view s) { encode_pretokenized(s, out); }, [&](int32_t id) { out.push_back(id); });
}

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out) const {
  if (raw_matcher_.empty()) {
    encode_segment(text, out);
    return;
  }
  raw_matcher_.split(
      text, [&](std::string_view s) { encode_segment(s, out); }, [&](int32_t id) { out.push_back(id); });
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_bos) {
    DSV3_CHECK(bos_id_ >= 0, "encode(add_bos=true) but the tokenizer has no BOS token");
    ids.push_back(bos_id_);
  }
  encode_into(text, ids);
  return ids;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return {};
  return std::string_view(bytes_blob_).substr(bytes_off_[id], bytes_off_[id + 1] - bytes_off_[id]);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string s;
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size_ || !id_present_[id]) continue;  // HF skips unknown ids
    if (skip_special_tokens && special_[id]) continue;
    if (!byte_level_decoder_ && !first) s.push_back(' ');
    s += token_bytes(id);
    first = false;
  }
  return s;
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  auto it = added_ids_.find(std::string(token));
  if (it != added_ids_.end()) return it->second;
  return bpe_.token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size_ || !id_present_[id]) return "";
  return id_token_[id];
}

bool Tokenizer::has_id(int32_t id) const {
  return id >= 0 && id < vocab_size_ && id_present_[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size_ && special_[id];
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tok_(&tokenizer), skip_special_(skip_special) {}

std::string IncrementalDecoder::push(int32_t id) {
  if (!tok_->has_id(id)) return "";
  if (skip_special_ && tok_->is_special(id)) return "";
  if (!tok_->byte_level_decoder() && !first_) pending_.push_back(' ');
  first_ = false;
  pending_ += tok_->token_bytes(id);
  size_t keep = utf8_incomplete_tail(pending_);
  std::string out = utf8_lossy(std::string_view(pending_).substr(0, pending_.size() - keep));
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string IncrementalDecoder::flush() {
  std::string out = utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace dsv3::tok
