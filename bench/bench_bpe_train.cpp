// BPE training time on ~20 MB of text (see BENCHMARKS.md "## BPE training").
//
// Corpus: installed Debian text, alternating between prose (/usr/share/common-licenses, /usr/share/doc) and
// code (/usr/lib/python3*/ sources), files in sorted order, files that are not NUL-free UTF-8 or are > 1 MB
// skipped, until 20 MB; written once to $TMPDIR/dsv3_bpe_bench_corpus_v2.txt. DSV3_BPE_CORPUS=path uses that
// file instead. The content depends on what the machine has installed, so compare figures from one machine
// only.
//
// Benchmarks (each repetition is one full run; report the median):
//   BM_PreTokenize      the V3 pre-tokenizer alone over the corpus: the floor of the counting phase.
//   BM_BpeTrain/N       dsv3 tokenizer train with vocab N: stream + count + merge (what the CLI does, minus
//                       writing the JSON). Counters: count_s, merge_s, merges, distinct words.
// There is no FLOP roofline for this workload; the in-run baseline is BM_PreTokenize (counting cannot beat
// it) and the external one is HF tokenizers' trainer, measured separately (BENCHMARKS.md).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe_trainer.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace fs = std::filesystem;

namespace {

constexpr size_t kCorpusBytes = size_t(20) * 1000 * 1000;

// Plain UTF-8 text without NUL bytes (so the same corpus also feeds HF's trainer, which needs UTF-8).
bool is_text_file(const fs::path& p) {
  const std::string ext = p.extension().string();
  if (ext == ".gz" || ext == ".pyc" || ext == ".so" || ext == ".xz" || ext == ".bz2" || ext == ".zip")
    return false;
  std::error_code ec;
  if (!fs::is_regular_file(p, ec) || fs::is_symlink(p, ec)) return false;
  const auto size = fs::file_size(p, ec);
  if (ec || size == 0 || size > 1000000) return false;
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string s = ss.str();
  return s.find('\0') == std::string::npos && dsv3::tok::utf8_is_valid(s);
}

std::vector<fs::path> list_files(const std::vector<fs::path>& roots, const char* only_ext) {
  std::vector<fs::path> out;
  for (const auto& root : roots) {
    std::error_code ec;
    if (!fs::exists(root, ec)) continue;
    for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      const fs::path& p = it->path();
      if (only_ext && p.extension() != only_ext) continue;
      if (is_text_file(p)) out.push_back(p);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

const std::string& corpus_path() {
  static const std::string path = [] {
    if (const char* env = std::getenv("DSV3_BPE_CORPUS")) return std::string(env);
    const fs::path out = fs::temp_directory_path() / "dsv3_bpe_bench_corpus_v2.txt";
    if (fs::exists(out) && fs::file_size(out) >= kCorpusBytes) return out.string();
    std::vector<fs::path> python_roots;
    for (const auto& e : fs::directory_iterator("/usr/lib"))
      if (e.path().filename().string().rfind("python3", 0) == 0) python_roots.push_back(e.path());
    const auto prose = list_files({"/usr/share/common-licenses", "/usr/share/doc"}, nullptr);
    const auto code = list_files(python_roots, ".py");
    std::ofstream f(out, std::ios::binary);
    size_t written = 0;
    for (size_t i = 0; written < kCorpusBytes && (i < prose.size() || i < code.size()); ++i) {
      for (const auto* list : {&prose, &code}) {
        if (i >= list->size() || written >= kCorpusBytes) continue;
        std::ifstream in((*list)[i], std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        const std::string s = ss.str();
        f << s;
        written += s.size();
      }
    }
    return out.string();
  }();
  return path;
}

std::string read_corpus() {
  std::ifstream in(corpus_path(), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void BM_PreTokenize(benchmark::State& state) {
  const std::string text = read_corpus();
  const auto pre = dsv3::tok::PreTokenizer::deepseek_v3();
  int64_t pieces = 0;
  for (auto _ : state) {
    pieces = 0;
    pre.for_each_piece(text, [&](dsv3::tok::Piece) { ++pieces; });
    benchmark::DoNotOptimize(pieces);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["MB"] = double(text.size()) / 1e6;
  state.counters["pieces"] = double(pieces);
}
BENCHMARK(BM_PreTokenize)->Unit(benchmark::kSecond)->Iterations(1)->Repetitions(3)->UseRealTime();

void BM_BpeTrain(benchmark::State& state) {
  const std::string path = corpus_path();
  const int64_t bytes = int64_t(fs::file_size(path));
  dsv3::tok::BpeTrainStats stats;
  for (auto _ : state) {
    dsv3::tok::BpeTrainerOptions o;
    o.vocab_size = int32_t(state.range(0));
    dsv3::tok::BpeTrainer trainer(dsv3::tok::PreTokenizer::deepseek_v3(), o);
    trainer.add_file(path);
    auto model = trainer.train();
    benchmark::DoNotOptimize(model.merges.data());
    stats = trainer.stats();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * bytes);
  state.counters["MB"] = double(bytes) / 1e6;
  state.counters["count_s"] = stats.count_s;
  state.counters["merge_s"] = stats.merge_s;
  state.counters["merges"] = double(stats.n_merges);
  state.counters["words"] = double(stats.n_words);
}
BENCHMARK(BM_BpeTrain)->Arg(32000)->Unit(benchmark::kSecond)->Iterations(1)->Repetitions(3)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
