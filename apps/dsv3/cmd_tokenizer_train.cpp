// `dsv3 tokenizer train`: learns byte-level BPE merges over the DeepSeek-V3 pre-tokenizer and writes a
// tokenizer directory (tokenizer.json + tokenizer_config.json) that Hugging Face `tokenizers` and dsv3 load.
//   dsv3 tokenizer train --vocab-size N --input FILE... --out DIR [--min-frequency K] [--max-words M]
// Every input file is one document, streamed in chunks. Progress (bytes counted, then merges done / target
// and elapsed seconds) goes to stderr; a summary line goes to stdout. See src/tokenizer/bpe_trainer.h.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "dsv3/error.h"
#include "tokenizer/bpe_trainer.h"

namespace {

void register_tokenizer(CLI::App& root) {
  CLI::App* tokenizer = root.add_subcommand("tokenizer", "Tokenizer tools");
  tokenizer->require_subcommand(1);

  struct Opts {
    int32_t vocab_size = 32000;
    std::vector<std::string> inputs;
    std::string out;
    int64_t min_frequency = 2;
    size_t max_words = size_t(4) << 20;
    bool quiet = false;
  };
  auto opts = std::make_shared<Opts>();
  CLI::App* train =
      tokenizer->add_subcommand("train", "Train a byte-level BPE tokenizer (DeepSeek-V3 layout)");
  train
      ->add_option("--vocab-size", opts->vocab_size,
                   "total vocabulary size, bytes and special tokens included")
      ->capture_default_str();
  train->add_option("--input", opts->inputs, "training text files (each one document)")->required();
  train->add_option("--out", opts->out, "output directory for tokenizer.json and tokenizer_config.json")
      ->required();
  train->add_option("--min-frequency", opts->min_frequency, "stop when the best pair occurs fewer times")
      ->capture_default_str();
  train
      ->add_option("--max-words", opts->max_words,
                   "distinct pre-token pieces kept while counting (memory cap)")
      ->capture_default_str();
  train->add_flag("--quiet", opts->quiet, "no progress on stderr");
  train->callback([opts] {
    using namespace dsv3::tok;
    for (const std::string& f : opts->inputs)
      DSV3_CHECK(std::filesystem::is_regular_file(f), "tokenizer train: input \"", f,
                 "\" is not a readable file");
    int64_t total_bytes = 0;
    for (const std::string& f : opts->inputs) total_bytes += int64_t(std::filesystem::file_size(f));

    BpeTrainerOptions o;
    o.vocab_size = opts->vocab_size;
    o.min_frequency = opts->min_frequency;
    o.max_words = opts->max_words;
    if (!opts->quiet) {
      o.on_progress = [total_bytes, last = -1.0](const BpeTrainProgress& p) mutable {
        // At most a few lines per second, plus the first and the last of each phase.
        const bool edge =
            p.done == 0 || (p.total > 0 && p.done == p.total) || (p.total == 0 && p.done == total_bytes);
        if (!edge && p.elapsed_s - last < 0.5) return;
        last = p.elapsed_s;
        if (std::string_view(p.phase) == "count")
          std::fprintf(stderr, "count: %.1f / %.1f MB, elapsed %.1f s\n", double(p.done) / 1e6,
                       double(total_bytes) / 1e6, p.elapsed_s);
        else
          std::fprintf(stderr, "merge: %lld / %lld, elapsed %.1f s\n", (long long)p.done, (long long)p.total,
                       p.elapsed_s);
      };
    }
    BpeTrainer trainer(PreTokenizer::deepseek_v3(), o);
    for (const std::string& f : opts->inputs) trainer.add_file(f);
    const TrainedBpe model = trainer.train();
    save_bpe_tokenizer(model, opts->out);
    const BpeTrainStats& s = trainer.stats();
    std::printf(
        "tokenizer train: %.1f MB, %lld pieces, %lld distinct (%lld pruned), %lld merges -> vocab %d in %s "
        "(count %.2f s, merge %.2f s)\n",
        double(s.bytes_read) / 1e6, (long long)s.n_pieces, (long long)s.n_words, (long long)s.n_words_pruned,
        (long long)s.n_merges, s.vocab_size, opts->out.c_str(), s.count_s, s.merge_s);
    if (s.vocab_size < opts->vocab_size)
      std::fprintf(stderr,
                   "warning: the corpus ran out of pairs (min frequency %lld): vocab %d < requested %d\n",
                   (long long)opts->min_frequency, s.vocab_size, opts->vocab_size);
  });
}

}  // namespace

DSV3_REGISTER_COMMAND(register_tokenizer);
