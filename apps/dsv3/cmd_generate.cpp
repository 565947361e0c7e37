// `dsv3 generate`: generate from a prompt with the inference engine (paged latent cache, absorbed MLA).
//   dsv3 generate --model DIR (--prompt-ids 1,2,3 | --prompt TEXT) [--max-tokens N] [--temperature T]
//                 [--top-k K] [--top-p P] [--min-p M] [--seed S] [--ignore-eos] [--output text|ids]
//                 [--weights auto|f32|bf16|fp8] [--lm-head auto|bf16|fp8] [--kv-cache auto|f32|bf16]
// Weights stay in the checkpoint's format (BF16 → BF16, FP8 → FP8 codes + block scales) unless --weights says;
// --lm-head fp8 re-holds lm_head in FP8 128×128 blocks after loading (the V3 FP8 format keeps it in BF16);
// the KV cache holds BF16 rows for BF16/FP8 weights unless --kv-cache says (infer_options.h).
// --prompt is encoded with DIR/tokenizer.json (BOS as tokenizer_config.json says, unless --no-bos). Output
// streams to stdout as it is generated: decoded text when DIR has a tokenizer (the stop token is not
// printed), else the ids comma-separated. Timing (prefill and decode tokens/s) goes to stderr at the end.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "commands.h"
#include "dsv3/error.h"
#include "infer_options.h"
#include "infer/engine.h"
#include "infer/infer_weights.h"
#include "tokenizer/tokenizer.h"

namespace dsv3::cli {

namespace {

namespace fs = std::filesystem;

void register_generate(CLI::App& root) {
  struct Opts {
    std::string model, prompt_ids, prompt, output = "auto";
    InferOptions infer;
    int64_t max_tokens = 64, ctx = 0;
    float temperature = 1.0f, top_p = 1.0f, min_p = 0.0f, presence = 0.0f, frequency = 0.0f, repetition = 1.0f;
    int32_t top_k = 0;
    uint64_t seed = 0;
    bool ignore_eos = false, no_bos = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = root.add_subcommand("generate", "Generate tokens from a prompt (streams to stdout)");
  cmd->add_option("--model", o->model, "model directory (config.json + safetensors [+ tokenizer.json])")->required();
  auto* ids_opt = cmd->add_option("--prompt-ids", o->prompt_ids, "prompt as comma-separated token ids");
  auto* text_opt = cmd->add_option("--prompt", o->prompt, "prompt text (needs tokenizer.json in the model dir)");
  ids_opt->excludes(text_opt);
  cmd->add_option("--max-tokens", o->max_tokens, "tokens to generate at most")->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "sampling temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-k", o->top_k, "keep the k most likely tokens (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "nucleus: smallest set with this much probability")->capture_default_str();
  cmd->add_option("--min-p", o->min_p, "drop tokens below min_p x the top probability")->capture_default_str();
  cmd->add_option("--presence-penalty", o->presence, "OpenAI presence penalty")->capture_default_str();
  cmd->add_option("--frequency-penalty", o->frequency, "OpenAI frequency penalty")->capture_default_str();
  cmd->add_option("--repetition-penalty", o->repetition, "CTRL/HF repetition penalty (1 = off)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  cmd->add_option("--ctx", o->ctx, "context limit (0 = prompt + max-tokens, capped by the model)")->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "do not stop at the end-of-sequence token");
  cmd->add_flag("--no-bos", o->no_bos, "with --prompt: do not prepend BOS");
  add_infer_options(cmd, o->infer);
  cmd->add_option("--output", o->output, "what to stream")
      ->check(CLI::IsMember({"auto", "text", "ids"}))
      ->capture_default_str();
  cmd->callback([o, ids_opt, text_opt] {
    DSV3_CHECK(ids_opt->count() + text_opt->count() == 1, "generate: give exactly one of --prompt-ids or --prompt");
    const bool have_tok = fs::exists(fs::path(o->model) / "tokenizer.json");
    std::optional<tok::Tokenizer> tokenizer;
    if (text_opt->count() || (o->output != "ids" && have_tok)) {
      DSV3_CHECK(have_tok, "generate: ", (fs::path(o->model) / "tokenizer.json").string(),
                 " not found (needed for --prompt / --output text)");
      tokenizer = tok::Tokenizer::load(o->model);
    }
    const bool text_out = o->output == "text" || (o->output == "auto" && tokenizer.has_value());

    infer::GenerationRequest req;
    if (ids_opt->count()) {
      for (int64_t v : parse_int_list(o->prompt_ids)) {
        DSV3_CHECK(v >= 0 && v <= INT32_MAX, "generate: token id ", v, " is out of range");
        req.prompt.push_back(int32_t(v));
      }
    } else {
      req.prompt = tokenizer->encode(o->prompt, !o->no_bos && tokenizer->add_bos_default());
    }
    req.max_tokens = o->max_tokens;
    req.ignore_eos = o->ignore_eos;
    req.sampling.temperature = o->temperature;
    req.sampling.top_k = o->top_k;
    req.sampling.top_p = o->top_p;
    req.sampling.min_p = o->min_p;
    req.sampling.presence_penalty = o->presence;
    req.sampling.frequency_penalty = o->frequency;
    req.sampling.repetition_penalty = o->repetition;
    req.sampling.seed = o->seed;

    const auto t_load = std::chrono::steady_clock::now();
    infer::InferWeights w = load_infer_weights(o->model, o->infer);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

    infer::EngineConfig ec;
    ec.max_slots = 1;
    const int64_t want = o->ctx > 0 ? o->ctx : int64_t(req.prompt.size()) + std::max<int64_t>(o->max_tokens, 1);
    ec.max_seq_len = std::min(want, w.cfg.max_position_embeddings);
    ec.kv_token_budget = ec.max_seq_len;
    ec.prefill_chunk = 256;
    ec.max_step_tokens = 256;
    ec.kv_dtype = kv_dtype(o->infer, w);
    infer::Engine engine(w, ec);

    std::optional<tok::IncrementalDecoder> dec;
    if (text_out) dec.emplace(*tokenizer, /*skip_special=*/false);
    int64_t n_out = 0;
    infer::FinishReason reason = infer::FinishReason::kNone;
    std::string error;
    std::chrono::steady_clock::time_point t_first;
    const auto t0 = std::chrono::steady_clock::now();
    engine.submit(req, [&](const infer::TokenEvent& ev) {
      if (ev.token >= 0) {
        if (n_out == 0) t_first = std::chrono::steady_clock::now();
        if (!ev.is_stop_token) {
          std::string s = text_out ? dec->push(ev.token) : (n_out ? "," : "") + std::to_string(ev.token);
          std::fwrite(s.data(), 1, s.size(), stdout);
          std::fflush(stdout);
        }
        ++n_out;
      }
      if (ev.finished) reason = ev.reason, error = ev.error;
    });
    engine.run_until_idle();
    const auto t_end = std::chrono::steady_clock::now();
    if (text_out) {
      std::string s = dec->flush();
      std::fwrite(s.data(), 1, s.size(), stdout);
    }
    std::fputc('\n', stdout);
    std::fflush(stdout);
    DSV3_CHECK(reason != infer::FinishReason::kError, "generate: ", error);

    const double prefill_s = n_out ? std::chrono::duration<double>(t_first - t0).count() : 0.0;
    const double decode_s = std::chrono::duration<double>(t_end - (n_out ? t_first : t0)).count();
    std::fprintf(stderr, "generate: %s\n", describe_runtime(w, engine.kv_config()).c_str());
    std::fprintf(stderr,
                 "generate: load %.2f s | prompt %zu tokens, prefill %.3f s (%.1f tok/s) | %lld tokens in %.3f s "
                 "(%.2f tok/s after the first) | finish: %s\n",
                 load_s, req.prompt.size(), prefill_s, prefill_s > 0 ? double(req.prompt.size()) / prefill_s : 0.0,
                 (long long)n_out, decode_s, n_out > 1 && decode_s > 0 ? double(n_out - 1) / decode_s : 0.0,
                 std::string(infer::finish_reason_name(reason)).c_str());
  });
}

}  // namespace

DSV3_REGISTER_COMMAND(register_generate);

}  // namespace dsv3::cli
