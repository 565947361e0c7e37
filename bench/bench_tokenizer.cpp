// Tokenizer throughput, one thread, on the test corpus (scripts/make-tokenizer-corpus.py, ~6 MB of mixed
// English, code, CJK, Arabic, digits, emoji and special tokens). Reports MB/s of UTF-8 input (bytes/s).
//   BM_Encode/native       full encode, hand-written DeepSeek-V3 pre-tokenizer (the default)
//   BM_Encode/oniguruma    full encode, the three regexes on Oniguruma
//   BM_PreTokenize/...     pre-tokenization alone, both engines
//   BM_EncodeCold          encode with a fresh tokenizer per pass (empty BPE memo)
//   BM_Decode              ids -> bytes
// The baseline is Hugging Face tokenizers (Rust, Node binding) on the same documents in the same run: with
// DSV3_BENCH_HF=1 the program first runs tests/tokenizer/hf/reference.js (single-threaded) and prints its
// timing. Inputs: DSV3_TOKENIZER (tokenizer.json or dir; default: shared/data/deepseek-v3 found above the
// working directory or the binary) and DSV3_TOKENIZER_CORPUS (default BUILD/tokenizer-hf/corpus.jsonl,
// generated when missing; BUILD/tokenizer-hf is where the HF test leaves the npm install).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using dsv3::tok::RegexEngine;
using dsv3::tok::Tokenizer;

namespace {

fs::path exe_dir() {
  return fs::canonical("/proc/self/exe").parent_path();
}

// Walks up from the working directory and from the binary's directory looking for rel (also as ../rel,
// for the shared/ folder that sits beside the repository).
fs::path find_upwards(const fs::path& rel) {
  for (fs::path start : {fs::current_path(), exe_dir()}) {
    for (fs::path d = start; !d.empty(); d = d.parent_path()) {
      if (fs::exists(d / rel)) return d / rel;
      if (fs::exists(d / ".." / rel)) return fs::canonical(d / ".." / rel);
      if (d == d.root_path()) break;
    }
  }
  return {};
}

struct Inputs {
  fs::path tokenizer_path, corpus_path, work;
  std::vector<std::string> docs;
  size_t bytes = 0;
  std::unique_ptr<Tokenizer> native, onig;
  std::vector<std::vector<int32_t>> ids;
};

Inputs& inputs() {
  static Inputs in = [] {
    Inputs in;
    const char* t = std::getenv("DSV3_TOKENIZER");
    in.tokenizer_path = t ? fs::path(t) : find_upwards("shared/data/deepseek-v3");
    if (in.tokenizer_path.empty()) {
      std::fprintf(stderr, "bench_tokenizer: set DSV3_TOKENIZER to a tokenizer.json or model dir\n");
      std::exit(2);
    }
    in.work = exe_dir().parent_path() / "tokenizer-hf";
    if (!fs::exists(in.work)) in.work = exe_dir() / "tokenizer-hf";
    const char* c = std::getenv("DSV3_TOKENIZER_CORPUS");
    in.corpus_path = c ? fs::path(c) : in.work / "corpus.jsonl";
    if (!fs::exists(in.corpus_path)) {
      fs::path script = find_upwards("scripts/make-tokenizer-corpus.py");
      fs::create_directories(in.corpus_path.parent_path());
      std::string cmd = "python3 '" + script.string() + "' '" + in.corpus_path.string() + "' --mb 6";
      if (script.empty() || std::system(cmd.c_str()) != 0) {
        std::fprintf(stderr, "bench_tokenizer: cannot generate the corpus (%s)\n", cmd.c_str());
        std::exit(2);
      }
    }
    std::ifstream f(in.corpus_path);
    for (std::string line; std::getline(f, line);) {
      in.docs.push_back(nlohmann::json::parse(line).get<std::string>());
      in.bytes += in.docs.back().size();
    }
    in.native = std::make_unique<Tokenizer>(Tokenizer::load(in.tokenizer_path.string()));
    in.onig =
        std::make_unique<Tokenizer>(Tokenizer::load(in.tokenizer_path.string(), RegexEngine::kOniguruma));
    for (const auto& d : in.docs) in.ids.push_back(in.native->encode(d));
    return in;
  }();
  return in;
}

void BM_Encode(benchmark::State& state) {
  Inputs& in = inputs();
  const Tokenizer& tok = state.range(0) == 0 ? *in.native : *in.onig;
  std::vector<int32_t> ids;
  size_t n_ids = 0;
  for (auto _ : state) {
    n_ids = 0;
    for (const auto& d : in.docs) {
      ids.clear();
      tok.encode_into(d, ids);
      n_ids += ids.size();
    }
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.bytes));
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(n_ids * state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(state.range(0) == 0 ? "native" : "oniguruma");
}
BENCHMARK(BM_Encode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_PreTokenize(benchmark::State& state) {
  Inputs& in = inputs();
  const Tokenizer& tok = state.range(0) == 0 ? *in.native : *in.onig;
  size_t n = 0;
  for (auto _ : state) {
    for (const auto& d : in.docs) tok.pre_tokenizer().for_each_piece(d, [&](dsv3::tok::Piece) { ++n; });
  }
  benchmark::DoNotOptimize(n);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.bytes));
  state.SetLabel(state.range(0) == 0 ? "native" : "oniguruma");
}
BENCHMARK(BM_PreTokenize)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_EncodeCold(benchmark::State& state) {
  Inputs& in = inputs();
  std::vector<int32_t> ids;
  for (auto _ : state) {
    state.PauseTiming();
    Tokenizer tok = Tokenizer::load(in.tokenizer_path.string());  // new model id: empty memo
    state.ResumeTiming();
    for (const auto& d : in.docs) {
      ids.clear();
      tok.encode_into(d, ids);
    }
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.bytes));
}
BENCHMARK(BM_EncodeCold)->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_Decode(benchmark::State& state) {
  Inputs& in = inputs();
  size_t out = 0;
  for (auto _ : state) {
    for (const auto& ids : in.ids) out += in.native->decode(ids).size();
  }
  benchmark::DoNotOptimize(out);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * in.bytes));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond)->MinTime(1.0);

// Times Hugging Face on the same corpus with the reference script (fastest and median of 5 passes).
void run_hf_baseline() {
  Inputs& in = inputs();
  fs::path script = find_upwards("tests/tokenizer/hf/reference.js");
  if (script.empty() || !fs::exists(in.work / "node_modules/tokenizers")) {
    std::printf("HF baseline: skipped (run the TokenizerHf tests first to install the reference in %s)\n",
                in.work.c_str());
    return;
  }
  fs::copy_file(script, in.work / "reference.js", fs::copy_options::overwrite_existing);
  fs::path tj =
      fs::is_directory(in.tokenizer_path) ? in.tokenizer_path / "tokenizer.json" : in.tokenizer_path;
  nlohmann::json jobs = nlohmann::json::array({{{"kind", "encode"},
                                                {"tokenizer", tj.string()},
                                                {"corpus", in.corpus_path.string()},
                                                {"out", (in.work / "bench_hf_ids.jsonl").string()},
                                                {"time", true}}});
  std::ofstream(in.work / "bench_jobs.json") << jobs.dump();
  std::string cmd =
      "cd '" + in.work.string() +
      "' && RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false UV_THREADPOOL_SIZE=1 node reference.js "
      "bench_jobs.json";
  std::printf("HF baseline (%s):\n", cmd.c_str());
  std::fflush(stdout);
  if (std::system(cmd.c_str()) != 0) std::printf("HF baseline: reference.js failed\n");
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  Inputs& in = inputs();
  std::printf("corpus: %s (%zu documents, %.2f MB); tokenizer: %s\n", in.corpus_path.c_str(), in.docs.size(),
              in.bytes / 1e6, in.tokenizer_path.c_str());
  if (const char* hf = std::getenv("DSV3_BENCH_HF"); hf && std::string(hf) == "1") run_hf_baseline();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
