// `dsv3 chat`: multi-turn chat on stdin/stdout with the DeepSeek-V3 chat template, streaming each reply.
//   dsv3 chat --model DIR [--system TEXT] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]
// One user message per input line. Commands: /reset (forget the conversation), /system TEXT (set the system
// prompt and reset), /exit or /quit (or end of input), /help. Works with piped stdin: replies go to stdout, one
// per turn followed by a newline; the "> " prompt and notices go to stderr, and only when stdin is a terminal.
// Turn t samples with seed + t, so a scripted conversation is reproducible.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include "commands.h"
#include "dsv3/error.h"
#include "infer/engine.h"
#include "infer_options.h"
#include "server/api.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace dsv3::cli {

namespace {

namespace fs = std::filesystem;

void register_chat(CLI::App& root) {
  struct Opts {
    std::string model, system;
    int64_t max_tokens = 256, ctx = 0;
    float temperature = 0.7f, top_p = 1.0f;
    int32_t top_k = 0;
    uint64_t seed = 0;
    InferOptions infer;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = root.add_subcommand("chat", "Interactive chat with the chat template (stdin/stdout, streams replies)");
  cmd->footer("Commands: /reset, /system TEXT, /exit (or /quit, or end of input), /help.");
  cmd->add_option("--model", o->model, "model directory (config.json + safetensors + tokenizer.json)")->required();
  cmd->add_option("--system", o->system, "system prompt");
  cmd->add_option("--max-tokens", o->max_tokens, "tokens per reply at most")->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "sampling temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "nucleus sampling")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "sampling seed (turn t uses seed + t)")->capture_default_str();
  cmd->add_option("--ctx", o->ctx, "context length (0 = the model's, at most 4096)")->capture_default_str();
  add_infer_options(cmd, o->infer);
  cmd->callback([o] {
    DSV3_CHECK(o->max_tokens > 0, "chat: --max-tokens must be positive, got ", o->max_tokens);
    DSV3_CHECK(fs::exists(fs::path(o->model) / "tokenizer.json"), "chat: ", o->model,
               " has no tokenizer.json (chat needs one)");
    tok::Tokenizer tokenizer = tok::Tokenizer::load(o->model);
    infer::InferWeights w = load_infer_weights(o->model, o->infer);
    infer::EngineConfig ec;
    ec.max_slots = 1;
    ec.max_seq_len = o->ctx > 0 ? o->ctx : std::min<int64_t>(w.cfg.max_position_embeddings, 4096);
    ec.kv_dtype = kv_dtype(o->infer, w);
    infer::Engine engine(w, ec);

    const bool tty = isatty(STDIN_FILENO);
    auto notice = [tty](const std::string& s) {
      if (tty) std::fprintf(stderr, "%s\n", s.c_str());
    };
    notice("dsv3 chat: type a message; /reset, /system TEXT, /exit, /help");
    std::vector<tok::ChatMessage> history;
    auto reset = [&] {
      history.clear();
      if (!o->system.empty()) history.emplace_back("system", o->system);
    };
    reset();
    tok::ChatTemplateOptions topt;
    if (!tokenizer.bos_token().empty()) topt.bos_token = tokenizer.bos_token();
    topt.add_generation_prompt = true;

    server::GenerationSpec spec;  // carries the detokenization options for the assembler
    uint64_t turn = 0;
    std::string line;
    while (true) {
      if (tty) std::fprintf(stderr, "> "), std::fflush(stderr);
      if (!std::getline(std::cin, line)) break;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line == "/exit" || line == "/quit") break;
      if (line == "/reset") {
        reset();
        notice("(conversation cleared)");
        continue;
      }
      if (line.rfind("/system", 0) == 0 && (line.size() == 7 || line[7] == ' ')) {
        o->system = line.size() > 8 ? line.substr(8) : "";
        reset();
        notice("(system prompt set; conversation cleared)");
        continue;
      }
      if (line == "/help") {
        std::fprintf(stderr, "/reset  forget the conversation\n/system TEXT  set the system prompt\n/exit  quit\n");
        continue;
      }
      if (line.empty()) continue;
      history.emplace_back("user", line);
      std::vector<int32_t> prompt = tokenizer.encode(tok::render_chat(history, topt), /*add_bos=*/false);
      if (int64_t(prompt.size()) >= engine.config().max_seq_len) {
        std::fprintf(stderr, "chat: the conversation (%zu tokens) no longer fits the context (%lld); use /reset\n",
                     prompt.size(), (long long)engine.config().max_seq_len);
        history.pop_back();
        continue;
      }
      infer::GenerationRequest req;
      req.prompt = std::move(prompt);
      req.max_tokens = std::min(o->max_tokens, engine.config().max_seq_len - int64_t(req.prompt.size()));
      req.sampling.temperature = o->temperature;
      req.sampling.top_p = o->top_p;
      req.sampling.top_k = o->top_k;
      req.sampling.seed = o->seed + turn++;
      server::ChoiceAssembler reply(tokenizer, spec);
      std::string error;
      engine.submit(std::move(req), [&](const infer::TokenEvent& ev) {
        const server::ChoiceDelta d = reply.push(ev);
        std::fwrite(d.content.data(), 1, d.content.size(), stdout);
        std::fflush(stdout);
        if (!d.error.empty()) error = d.error;
      });
      engine.run_until_idle();
      std::fputc('\n', stdout);
      std::fflush(stdout);
      DSV3_CHECK(error.empty(), "chat: ", error);
      history.emplace_back("assistant", reply.content());
    }
  });
}

}  // namespace

DSV3_REGISTER_COMMAND(register_chat);

}  // namespace dsv3::cli
