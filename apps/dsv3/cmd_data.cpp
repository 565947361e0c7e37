// `dsv3 data prepare | check`: turn text into training token shards, and validate a prepared directory.
//   dsv3 data prepare --tokenizer T --input FILES/DIRS... --out DIR [--val-fraction 0.01] [--fim-rate 0.1]
//                     [--seed N] [--threads N] [--doc-sep file|blank-line|line] [--shard-tokens N]
//   dsv3 data check --dir DIR [--tokenizer T]
// Progress (docs, MB, tokens, tokens/s) goes to stderr, a summary to stdout. See src/data/prepare.h and
// docs/data.md.
#include <algorithm>
#include <cstdio>

#include "commands.h"
#include "data/prepare.h"
#include "data/shard_loader.h"
#include "dsv3/error.h"
#include "tokenizer/tokenizer.h"

namespace {

void register_data(CLI::App& root) {
  CLI::App* data = root.add_subcommand("data", "Training data tools (token shards)");
  data->require_subcommand(1);

  struct PrepOpts {
    std::string tokenizer, out, doc_sep = "file";
    std::vector<std::string> inputs;
    double val_fraction = 0.01, fim_rate = 0.1;
    uint64_t seed = 0;
    int threads = 0;
    int64_t shard_tokens = int64_t(1) << 26;
    std::string bos = "auto";
    bool quiet = false;
  };
  auto po = std::make_shared<PrepOpts>();
  CLI::App* prep =
      data->add_subcommand("prepare", "Tokenize text into train/val uint32 token shards + index.json");
  prep->add_option("--tokenizer", po->tokenizer, "tokenizer.json or a directory holding it")->required();
  prep->add_option("--input", po->inputs, "input text files or directories (walked recursively, sorted)")
      ->required();
  prep->add_option("--out", po->out, "output data directory")->required();
  prep->add_option("--val-fraction", po->val_fraction,
                   "fraction of documents held out (chosen by content hash)")
      ->capture_default_str();
  prep->add_option("--fim-rate", po->fim_rate,
                   "fraction of documents turned into PSM fill-in-the-middle (V3: 0.1)")
      ->capture_default_str();
  prep->add_option("--seed", po->seed, "seed of the FIM and val draws")->capture_default_str();
  prep->add_option("--threads", po->threads,
                   "tokenizer threads (0: all cores); output is identical for any count")
      ->capture_default_str();
  prep->add_option("--doc-sep", po->doc_sep,
                   "what one document is: a whole file, a blank-line paragraph, a line")
      ->check(CLI::IsMember({"file", "blank-line", "line"}))
      ->capture_default_str();
  prep->add_option("--shard-tokens", po->shard_tokens, "target tokens per shard file")->capture_default_str();
  prep->add_option("--bos", po->bos,
                   "BOS before every document: auto follows the tokenizer's add_bos_token (DeepSeek-V3: on)")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  prep->add_flag("--quiet", po->quiet, "no progress on stderr");
  prep->callback([po] {
    using namespace dsv3::data;
    PrepareOptions o;
    o.tokenizer = po->tokenizer;
    o.inputs = po->inputs;
    o.out_dir = po->out;
    o.val_fraction = po->val_fraction;
    o.fim_rate = po->fim_rate;
    o.seed = po->seed;
    o.n_threads = po->threads;
    o.doc_sep = parse_doc_sep(po->doc_sep);
    o.shard_tokens = po->shard_tokens;
    o.bos = po->bos == "on" || (po->bos == "auto" && dsv3::tok::Tokenizer::load(po->tokenizer).add_bos_default());
    if (!po->quiet) {
      o.on_progress = [last = -1.0](const PrepareProgress& p) mutable {
        const bool done = p.bytes_in == p.bytes_total;
        if (!done && p.elapsed_s - last < 0.5) return;
        last = p.elapsed_s;
        const double secs = std::max(p.elapsed_s, 1e-9);
        std::fprintf(stderr, "prepare: %lld docs, %.1f / %.1f MB, %lld tokens, %.0f tokens/s, %.1f MB/s\n",
                     (long long)p.n_docs, double(p.bytes_in) / 1e6, double(p.bytes_total) / 1e6,
                     (long long)p.n_tokens, double(p.n_tokens) / secs, double(p.bytes_in) / 1e6 / secs);
      };
    }
    const PrepareStats s = prepare_data(o);
    const double secs = std::max(s.elapsed_s, 1e-9);
    std::printf(
        "data prepare: %lld files, %.1f MB, %lld docs (%lld train, %lld val, %lld FIM) -> %lld train tokens "
        "in %lld "
        "shards, %lld val tokens in %lld shards, %s (%.2f s, %.0f tokens/s)\n",
        (long long)s.n_files, double(s.bytes_in) / 1e6, (long long)s.n_docs, (long long)s.n_docs_train,
        (long long)s.n_docs_val, (long long)s.n_docs_fim, (long long)s.n_tokens_train,
        (long long)s.n_shards_train, (long long)s.n_tokens_val, (long long)s.n_shards_val, po->out.c_str(),
        s.elapsed_s, double(s.n_tokens_train + s.n_tokens_val) / secs);
  });

  struct CheckOpts {
    std::string dir, tokenizer;
  };
  auto co = std::make_shared<CheckOpts>();
  CLI::App* check =
      data->add_subcommand("check", "Validate a prepared data directory (sizes, checksums, ids)");
  check->add_option("--dir", co->dir, "data directory (index.json + shards)")->required();
  check->add_option("--tokenizer", co->tokenizer, "also require the data to come from this tokenizer");
  check->callback([co] {
    using namespace dsv3::data;
    const DataSummary s = verify_data_dir(co->dir);
    if (!co->tokenizer.empty()) check_tokenizer(co->dir, co->tokenizer);
    std::printf(
        "data check: %s ok: tokenizer %s (vocab %d, eos %d); train %lld tokens, %lld docs, %lld shards; "
        "val %lld tokens, %lld docs, %lld shards\n",
        co->dir.c_str(), s.tokenizer_fingerprint.c_str(), s.vocab_size, s.eos_id, (long long)s.n_tokens_train,
        (long long)s.n_docs_train, (long long)s.n_shards_train, (long long)s.n_tokens_val,
        (long long)s.n_docs_val, (long long)s.n_shards_val);
  });
}

}  // namespace

DSV3_REGISTER_COMMAND(register_data);
