// Data preparation: documents -> tokens -> shards (see prepare.h).
#include "data/prepare.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "core/rng.h"
#include "data/shard_writer.h"
#include "dsv3/error.h"
#include "io/atomic_file.h"
#include "tokenizer/fim.h"
#include "tokenizer/tokenizer.h"

namespace dsv3::data {

namespace fs = std::filesystem;

DocSep parse_doc_sep(const std::string& s) {
  if (s == "file") return DocSep::kFile;
  if (s == "blank-line") return DocSep::kBlankLine;
  if (s == "line") return DocSep::kLine;
  DSV3_FAIL("unknown document separator \"", s, "\" (expected file, blank-line or line)");
}

const char* doc_sep_name(DocSep s) {
  switch (s) {
    case DocSep::kFile:
      return "file";
    case DocSep::kBlankLine:
      return "blank-line";
    case DocSep::kLine:
      return "line";
  }
  return "?";
}

namespace {

bool is_blank(std::string_view line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r') return false;
  return true;
}

// Calls f(line) for each line of text, without its '\n'; a final line without '\n' counts too.
template <typename F>
void for_each_line(std::string_view text, F&& f) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string_view::npos ? text.size() : nl;
    f(text.substr(pos, end - pos), pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
  }
}

std::string read_whole_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  DSV3_CHECK(f.good(), "cannot open input file \"", path, "\"");
  std::string s;
  f.seekg(0, std::ios::end);
  const auto size = f.tellg();
  DSV3_CHECK(size >= 0, "cannot size input file \"", path, "\"");
  s.resize(size_t(size));
  f.seekg(0);
  f.read(s.data(), std::streamsize(s.size()));
  DSV3_CHECK(f.gcount() == std::streamsize(s.size()), "short read on input file \"", path, "\"");
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

const std::regex& shard_name_re() {
  static const std::regex re("(train|val)-[0-9]{5}\\.bin");
  return re;
}

// Reads a file's bytes (for copying the tokenizer files).
std::string slurp(const std::string& path) {
  return read_whole_file(path);
}

}  // namespace

std::vector<std::string_view> split_documents(std::string_view text, DocSep sep) {
  std::vector<std::string_view> docs;
  if (sep == DocSep::kFile) {
    if (!text.empty()) docs.push_back(text);
    return docs;
  }
  if (sep == DocSep::kLine) {
    for_each_line(text, [&](std::string_view line, size_t) {
      if (!is_blank(line)) docs.push_back(line);
    });
    return docs;
  }
  // Blank-line paragraphs: from the first non-blank line to the end of the last non-blank line before a
  // blank line (its '\n' excluded).
  size_t start = std::string_view::npos, end = 0;
  for_each_line(text, [&](std::string_view line, size_t pos) {
    if (is_blank(line)) {
      if (start != std::string_view::npos) docs.push_back(text.substr(start, end - start));
      start = std::string_view::npos;
    } else {
      if (start == std::string_view::npos) start = pos;
      end = pos + line.size();
    }
  });
  if (start != std::string_view::npos) docs.push_back(text.substr(start, end - start));
  return docs;
}

bool is_val_document(std::string_view doc, uint64_t seed, double val_fraction) {
  static const uint64_t kValStream = hash_name("dsv3.data.val");
  if (val_fraction <= 0.0) return false;
  const uint64_t h = fnv1a64(doc.data(), doc.size());
  const auto w = philox4x32(seed, kValStream, h);
  // 53-bit uniform in [0, 1).
  const double u = double((uint64_t(w[0]) << 21) ^ (uint64_t(w[1]) >> 11)) * (1.0 / 9007199254740992.0);
  return u < val_fraction;
}

std::vector<std::string> list_input_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(in, ec);
    DSV3_CHECK(!ec && fs::exists(st), "input \"", in, "\" does not exist");
    if (fs::is_regular_file(st)) {
      files.push_back(in);
      continue;
    }
    DSV3_CHECK(fs::is_directory(st), "input \"", in, "\" is neither a file nor a directory");
    std::vector<std::string> found;
    auto it = fs::recursive_directory_iterator(in, fs::directory_options::follow_directory_symlink, ec);
    DSV3_CHECK(!ec, "cannot list input directory \"", in, "\": ", ec.message());
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      DSV3_CHECK(!ec, "error walking input directory \"", in, "\": ", ec.message());
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) found.push_back(it->path().string());
    }
    DSV3_CHECK(!found.empty(), "input directory \"", in, "\" holds no files");
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

PrepareStats prepare_data(const PrepareOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  DSV3_CHECK(o.val_fraction >= 0.0 && o.val_fraction <= 1.0, "--val-fraction must be in [0, 1], got ",
             o.val_fraction);
  DSV3_CHECK(o.fim_rate >= 0.0 && o.fim_rate <= 1.0, "--fim-rate must be in [0, 1], got ", o.fim_rate);
  DSV3_CHECK(!o.out_dir.empty(), "no output directory given");
  DSV3_CHECK(!o.inputs.empty(), "no input given");

  const std::string tok_json = tokenizer_json_path(o.tokenizer);
  const tok::Tokenizer tokenizer = tok::Tokenizer::load(o.tokenizer);
  const int32_t eos = tokenizer.eos_id();
  DSV3_CHECK(eos >= 0, "tokenizer \"", tok_json, "\" has no EOS token");
  const int32_t bos = tokenizer.bos_id();
  DSV3_CHECK(!o.bos || bos >= 0, "tokenizer \"", tok_json, "\" has no BOS token (prepare without BOS)");
  tok::FimTokenIds fim_ids;
  if (o.fim_rate > 0.0) fim_ids = tok::fim_token_ids(tokenizer);
  const tok::FimOptions fim{o.fim_rate, o.seed};
  const tok::EncodeFn encode = [&tokenizer](std::string_view s) { return tokenizer.encode(s, false); };

  const std::vector<std::string> files = list_input_files(o.inputs);
  int64_t bytes_total = 0;
  for (const std::string& f : files) bytes_total += int64_t(fs::file_size(f));

  // Start clean: without an index the directory is not a data set until this run finishes.
  fs::create_directories(o.out_dir);
  const fs::path index_path = fs::path(o.out_dir) / std::string(kIndexFile);
  fs::remove(index_path);

  const int n_threads =
      o.n_threads > 0 ? o.n_threads : int(std::max(1u, std::thread::hardware_concurrency()));
  ShardWriter train(o.out_dir, "train", o.shard_tokens), val(o.out_dir, "val", o.shard_tokens);
  PrepareStats st;
  st.n_files = int64_t(files.size());

  // One batch: the files' texts (owning) and their documents (views).
  std::vector<std::string> texts;
  std::vector<std::string_view> docs;
  std::vector<std::vector<int32_t>> out;
  int64_t batch_bytes = 0;

  auto run_batch = [&] {
    const size_t n = docs.size();
    out.assign(n, {});
    std::vector<uint8_t> fim_applied(n, 0), to_val(n, 0);
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mu;
    auto work = [&] {
      try {
        for (size_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < n;) {
          const uint64_t doc_index = uint64_t(st.n_docs) + i;
          std::vector<int32_t>& ids = out[i];
          std::vector<int32_t> body;
          if (o.fim_rate > 0.0) {
            fim_applied[i] = tok::fim_draw_text(docs[i], fim, doc_index).applied;
            body = tok::fim_encode(docs[i], fim, doc_index, fim_ids, encode);
          } else {
            body = tokenizer.encode(docs[i], false);
          }
          if (o.bos) {
            ids.reserve(body.size() + 2);
            ids.push_back(bos);
            ids.insert(ids.end(), body.begin(), body.end());
          } else {
            ids = std::move(body);
          }
          ids.push_back(eos);
          to_val[i] = is_val_document(docs[i], o.seed, o.val_fraction);
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
        failed = true;
      }
    };
    const int n_workers = int(std::min<size_t>(size_t(n_threads), std::max<size_t>(n, 1)));
    std::vector<std::thread> pool;
    for (int t = 1; t < n_workers; ++t) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
    for (size_t i = 0; i < n; ++i) {
      (to_val[i] ? val : train).add_document(out[i]);
      st.n_docs_val += to_val[i];
      st.n_docs_train += !to_val[i];
      st.n_docs_fim += fim_applied[i];
    }
    st.n_docs += int64_t(n);
    st.bytes_in += batch_bytes;
    texts.clear();
    docs.clear();
    out.clear();
    batch_bytes = 0;
    if (o.on_progress) {
      PrepareProgress p;
      p.n_docs = st.n_docs;
      p.bytes_in = st.bytes_in;
      p.bytes_total = bytes_total;
      p.n_tokens = train.n_tokens() + val.n_tokens();
      p.elapsed_s = seconds_since(t0);
      o.on_progress(p);
    }
  };

  for (const std::string& f : files) {
    texts.push_back(read_whole_file(f));
    batch_bytes += int64_t(texts.back().size());
    for (std::string_view d : split_documents(texts.back(), o.doc_sep)) docs.push_back(d);
    if (batch_bytes >= o.batch_bytes) run_batch();
  }
  if (!texts.empty()) run_batch();
  DSV3_CHECK(st.n_docs > 0, "the inputs hold no documents");

  const std::vector<ShardInfo> train_shards = train.finish();
  const std::vector<ShardInfo> val_shards = val.finish();
  st.n_tokens_train = train.n_tokens();
  st.n_tokens_val = val.n_tokens();
  st.n_shards_train = int64_t(train_shards.size());
  st.n_shards_val = int64_t(val_shards.size());

  // Tokenizer copies, so the directory is self-describing.
  io::atomic_write_file((fs::path(o.out_dir) / "tokenizer.json").string(), slurp(tok_json));
  const fs::path cfg = fs::path(tok_json).parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(cfg))
    io::atomic_write_file((fs::path(o.out_dir) / "tokenizer_config.json").string(), slurp(cfg.string()));

  // Stale shards of an earlier run with more shards.
  std::set<std::string> keep;
  for (const auto& s : train_shards) keep.insert(s.file);
  for (const auto& s : val_shards) keep.insert(s.file);
  for (const auto& e : fs::directory_iterator(o.out_dir)) {
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, shard_name_re()) && !keep.count(name)) fs::remove(e.path());
  }

  auto split_json = [](const std::vector<ShardInfo>& shards, int64_t n_tokens, int64_t n_docs) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& s : shards) arr.push_back(s.to_json());
    return nlohmann::json{{"n_tokens", n_tokens}, {"n_docs", n_docs}, {"shards", arr}};
  };
  nlohmann::json index;
  index["format"] = kIndexFormat;
  index["version"] = kIndexVersion;
  index["dtype"] = "uint32";
  index["tokenizer"] = {{"fingerprint", tokenizer_fingerprint(tok_json)},
                        {"vocab_size", tokenizer.vocab_size()},
                        {"eos_id", eos},
                        {"bos_id", tokenizer.bos_id()}};
  index["documents"] = {{"doc_sep", doc_sep_name(o.doc_sep)}, {"eos_after_each", true}, {"bos_before_each", o.bos}};
  index["fim"] = {{"rate", o.fim_rate}, {"mode", "psm"}, {"n_docs", st.n_docs_fim}};
  index["split"] = {{"val_fraction", o.val_fraction}, {"rule", "content-hash"}};
  index["seed"] = o.seed;
  index["inputs"] = {{"n_files", st.n_files}, {"bytes", bytes_total}};
  index["splits"] = {{"train", split_json(train_shards, st.n_tokens_train, st.n_docs_train)},
                     {"val", split_json(val_shards, st.n_tokens_val, st.n_docs_val)}};
  io::atomic_write_file(index_path.string(), index.dump(2) + "\n");
  st.elapsed_s = seconds_since(t0);
  return st;
}

}  // namespace dsv3::data
