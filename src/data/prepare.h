// `dsv3 data prepare`: text files -> documents -> token ids (+ FIM) -> train/val token shards
// (shard_writer.h).
//
// Pipeline (V3_SPEC.md §7 "Data"):
//  1. Inputs: files, or directories walked recursively (hidden entries skipped); each directory's files are
//     taken in byte-wise sorted path order, inputs in the order given. Every file must be valid to read.
//  2. Documents: a whole file (DocSep::kFile), paragraphs separated by blank lines (kBlankLine; lines of only
//     spaces/tabs/CR count as blank; each paragraph keeps its inner newlines, loses the blank lines around
//     it), or non-blank lines (kLine). Empty documents are dropped. doc_index = position in that global
//     order.
//  3. Split: a document goes to "val" iff u(seed, FNV-1a of its bytes) < val_fraction — a function of the
//     content, so the split of a document never changes when other documents are added, removed or
//     reordered (and identical documents land in the same split).
//  4. Tokens: tokenizer.encode(doc), one EOS appended, and BOS in front when `bos` (the CLI's default follows the
//     tokenizer's add_bos_token, as DeepSeek-V3's tokenizer encodes every text: then a prompt encoded with BOS
//     looks like the start of a training document). At rate fim_rate a document is turned
//     into PSM FIM (tok::fim_encode: cut on characters, the three parts encoded separately), decided and
//     cut by a counter-based draw of (seed, doc_index) only.
//  5. Tokenization runs on n_threads threads over batches of documents; results are written in document
//     order, so the output is byte-identical for any thread count.
//  6. Shards + index.json (written last; an existing index.json is removed first, stale shards after).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv3::data {

enum class DocSep { kFile, kBlankLine, kLine };
DocSep parse_doc_sep(const std::string& s);  // "file" | "blank-line" | "line"; throws dsv3::Error otherwise
const char* doc_sep_name(DocSep s);

// The documents of one file's text (views into `text`), per the rules above.
std::vector<std::string_view> split_documents(std::string_view text, DocSep sep);
// Whether a document belongs to the held-out split.
bool is_val_document(std::string_view doc, uint64_t seed, double val_fraction);
// The input files, in processing order. Throws dsv3::Error for a missing input or a directory with no files.
std::vector<std::string> list_input_files(const std::vector<std::string>& inputs);

struct PrepareProgress {
  int64_t n_docs = 0;
  int64_t bytes_in = 0;     // text bytes tokenized so far
  int64_t bytes_total = 0;  // all input bytes
  int64_t n_tokens = 0;     // tokens written so far (EOS and FIM tokens included)
  double elapsed_s = 0.0;
};

struct PrepareOptions {
  std::string tokenizer;            // tokenizer.json, or a directory holding it
  std::vector<std::string> inputs;  // files and directories
  std::string out_dir;
  double val_fraction = 0.01;
  double fim_rate = 0.1;  // V3: 0.1
  uint64_t seed = 0;
  int n_threads = 0;  // 0: hardware concurrency
  DocSep doc_sep = DocSep::kFile;
  bool bos = false;  // BOS before every document (FIM documents too: BOS <｜fim▁begin｜>…)
  int64_t shard_tokens = int64_t(1) << 26;  // target tokens per shard (256 MiB)
  int64_t batch_bytes = int64_t(16) << 20;  // text tokenized per parallel batch (memory bound)
  std::function<void(const PrepareProgress&)> on_progress;  // called after each batch; null: silent
};

struct PrepareStats {
  int64_t n_files = 0;
  int64_t bytes_in = 0;
  int64_t n_docs = 0, n_docs_train = 0, n_docs_val = 0, n_docs_fim = 0;
  int64_t n_tokens_train = 0, n_tokens_val = 0;
  int64_t n_shards_train = 0, n_shards_val = 0;
  double elapsed_s = 0.0;
};

// Runs the whole pipeline into options.out_dir (created if missing). Throws dsv3::Error with context.
PrepareStats prepare_data(const PrepareOptions& options);

}  // namespace dsv3::data
