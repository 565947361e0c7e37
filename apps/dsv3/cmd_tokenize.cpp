// `dsv3 tokenize` and `dsv3 detokenize`: text <-> token ids with a Hugging Face tokenizer.json.
//   dsv3 tokenize --tokenizer PATH (--text S | --file F) [--bos] [--json]
//   dsv3 detokenize --tokenizer PATH --ids 1,2,3 [--skip-special]
// PATH is a tokenizer.json file or a model directory. tokenize prints the ids comma-separated (or as a JSON
// array with --json) on one line; no BOS unless --bos. detokenize writes the decoded bytes exactly (no
// trailing newline added), so `detokenize(tokenize(x)) == x` byte for byte.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "commands.h"
#include "dsv3/error.h"
#include "tokenizer/tokenizer.h"

namespace {

void register_tokenize(CLI::App& root) {
  struct Opts {
    std::string tokenizer, text, file;
    bool bos = false, json = false;
  };
  auto opts = std::make_shared<Opts>();
  CLI::App* cmd = root.add_subcommand("tokenize", "Encode text to token ids (no BOS unless --bos)");
  cmd->add_option("--tokenizer", opts->tokenizer, "tokenizer.json file or model directory")->required();
  auto* text = cmd->add_option("--text", opts->text, "text to encode");
  auto* file = cmd->add_option("--file", opts->file, "file whose bytes are encoded");
  text->excludes(file);
  cmd->add_flag("--bos", opts->bos, "prepend the BOS token");
  cmd->add_flag("--json", opts->json, "print a JSON array instead of comma-separated ids");
  cmd->callback([opts, text, file] {
    DSV3_CHECK(text->count() + file->count() == 1, "tokenize: give exactly one of --text or --file");
    std::string input = opts->text;
    if (file->count()) {
      std::ifstream f(opts->file, std::ios::binary);
      DSV3_CHECK(f.good(), "tokenize: cannot open ", opts->file);
      input.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    auto tok = dsv3::tok::Tokenizer::load(opts->tokenizer);
    std::vector<int32_t> ids = tok.encode(input, opts->bos);
    std::string out;
    out += opts->json ? "[" : "";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += opts->json ? ", " : ",";
      out += std::to_string(ids[i]);
    }
    out += opts->json ? "]\n" : "\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
  });
}

void register_detokenize(CLI::App& root) {
  struct Opts {
    std::string tokenizer, ids;
    bool skip_special = false;
  };
  auto opts = std::make_shared<Opts>();
  CLI::App* cmd = root.add_subcommand("detokenize", "Decode token ids to text");
  cmd->add_option("--tokenizer", opts->tokenizer, "tokenizer.json file or model directory")->required();
  cmd->add_option("--ids", opts->ids, "comma-separated token ids, e.g. 1,2,3")->required();
  cmd->add_flag("--skip-special", opts->skip_special, "drop special tokens");
  cmd->callback([opts] {
    auto tok = dsv3::tok::Tokenizer::load(opts->tokenizer);
    std::vector<int32_t> ids;
    for (int64_t v : dsv3::cli::parse_int_list(opts->ids)) {
      DSV3_CHECK(v >= 0 && v < tok.vocab_size(), "detokenize: id ", v, " is outside the vocabulary [0, ",
                 tok.vocab_size(), ")");
      ids.push_back(static_cast<int32_t>(v));
    }
    std::string text = tok.decode(ids, opts->skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

}  // namespace

DSV3_REGISTER_COMMAND(register_tokenize);
DSV3_REGISTER_COMMAND(register_detokenize);
