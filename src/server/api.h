// The OpenAI-compatible API as data: request bodies → validated GenerationSpecs, engine token events → choice
// deltas (text, logprobs, tool calls, finish reason), and the JSON shapes of responses, stream chunks and errors.
// No sockets here (server.h does HTTP), so every rule below is unit-tested without a network.
//
// Requests (docs/server.md lists every field):
//  * /v1/chat/completions: `messages` are rendered with the DeepSeek-V3 chat template (tokenizer/chat_template.h)
//    with the generation prompt; `tools` (unless tool_choice is "none") are described in an extra system
//    message (tools_system_prompt) and the reply is parsed for V3 tool calls.
//  * /v1/completions: `prompt` is a string, a list of token ids, or a list of either (one choice group per
//    prompt); with `suffix` the prompt becomes the FIM prompt `<｜fim▁begin｜>prompt<｜fim▁hole｜>suffix<｜fim▁end｜>`.
//  * wrong JSON types or out-of-range values raise ApiError 400 naming `param`; an unknown model 404.
//
// Choices: each choice of a request is its own engine request; with a `seed` the choice i draws from
// choice_seed(seed, i) (choice 0 uses the seed itself, so n=1 and choice 0 of n>1 agree); without one each choice
// gets a fresh random seed.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "infer/engine.h"
#include "infer/sampler.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace dsv3::server {

// An error answered in OpenAI's shape {"error":{"message","type","param","code"}} with an HTTP status.
struct ApiError : std::runtime_error {
  int status;
  std::string param, code, type;
  ApiError(int status_, const std::string& message, std::string param_ = "", std::string code_ = "",
           std::string type_ = "");
};

// "invalid_request_error" (400/404/405/413), "authentication_error" (401), "rate_limit_error" (429),
// "service_unavailable" (503), "server_error" (other 5xx).
std::string error_type_for_status(int status);
nlohmann::json error_json(const ApiError& e);

enum class Endpoint { kChat, kCompletions };

// What the server needs to turn a body into engine requests.
struct ApiContext {
  const tok::Tokenizer* tokenizer = nullptr;
  std::string model_name;      // the name /v1/models lists and requests must use
  int64_t vocab_size = 0;      // the model's (ids at or above it are rejected)
  int64_t context_length = 0;  // prompt + generated tokens per choice
};

// One validated request. prompts.size() × n choices; choice k uses prompts[k / n].
struct GenerationSpec {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;
  std::vector<std::vector<int32_t>> prompts;
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int64_t max_tokens = 0;      // 0: up to the context limit
  std::vector<std::string> stop;
  infer::SamplingParams sampling;  // seed = the request's seed (per-choice seeds via choice_seed)
  bool seed_given = false;
  bool logprobs = false;
  int32_t top_logprobs = 0;
  bool parse_tool_calls = false;  // tools were offered: parse the reply for V3 tool calls
  bool skip_special_tokens = true;
  bool ignore_eos = false;

  int64_t n_choices() const { return int64_t(prompts.size()) * n; }
  // The engine request of choice k, max_tokens resolved against the context limit.
  infer::GenerationRequest engine_request(int64_t k, int64_t context_length, uint64_t random_seed) const;
};

uint64_t choice_seed(uint64_t seed, int64_t choice);

// Parse + validate a body (throws ApiError).
GenerationSpec parse_chat_request(const nlohmann::json& body, const ApiContext& ctx);
GenerationSpec parse_completion_request(const nlohmann::json& body, const ApiContext& ctx);

// Chat messages (+ tools) → the prompt string the model sees (throws ApiError on a bad shape).
std::string render_chat_prompt(const nlohmann::json& messages, const nlohmann::json& tools,
                               const nlohmann::json& tool_choice, const tok::Tokenizer& tokenizer);
// The system text that offers `tools` (validated OpenAI function tools) to the model, in V3's call syntax.
std::string tools_system_prompt(const nlohmann::json& tools, const nlohmann::json& tool_choice);

// ---- choices ----

struct LogprobEntry {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<infer::TokenLogprob> top;
};

// What one engine event adds to a choice.
struct ChoiceDelta {
  std::string content;
  std::vector<LogprobEntry> logprobs;
  std::vector<tok::ToolCall> tool_calls;  // only on the final delta
  std::string finish_reason;              // "" until the choice ends: "stop", "length", "tool_calls", "error"
  std::string error;                      // with finish_reason "error"
  bool empty() const { return content.empty() && logprobs.empty() && tool_calls.empty() && finish_reason.empty(); }
};

// Turns a choice's token events into text deltas: streaming detokenization (IncrementalDecoder), stop strings
// (StopStringMatcher: never emitted, matched across token boundaries), and with tools, the V3 tool-call block
// held back from the content and parsed at the end (parse_assistant_output). The hidden stop token (EOS) adds
// no text and no logprob entry, but counts as a completion token.
class ChoiceAssembler {
 public:
  ChoiceAssembler(const tok::Tokenizer& tokenizer, const GenerationSpec& spec);
  ChoiceDelta push(const infer::TokenEvent& ev);
  bool finished() const { return !finish_reason_.empty(); }
  // A stop string matched: the engine request must be cancelled (the choice already finished with "stop").
  bool stopped_by_string() const { return stopper_.stopped(); }
  int64_t completion_tokens() const { return n_tokens_; }
  const std::string& content() const { return content_; }
  const std::vector<tok::ToolCall>& tool_calls() const { return tool_calls_; }
  const std::string& finish_reason() const { return finish_reason_; }
  const std::vector<LogprobEntry>& logprobs() const { return logprobs_; }

 private:
  std::string after_stop(std::string text);  // the tool-call splitter
  void finish(ChoiceDelta& d, const std::string& reason);

  const tok::Tokenizer& tok_;
  tok::IncrementalDecoder decoder_;
  infer::StopStringMatcher stopper_;
  bool parse_tools_, want_logprobs_;
  bool in_tool_block_ = false;
  std::string held_;        // content held back: could be the start of the tool-call marker
  std::string tool_block_;  // from the marker on
  std::string content_;
  std::vector<tok::ToolCall> tool_calls_;
  std::vector<LogprobEntry> logprobs_;
  std::string finish_reason_;
  int64_t n_tokens_ = 0;
};

// ---- response shapes ----

std::string token_text(const tok::Tokenizer& tokenizer, int32_t id);  // lossy UTF-8 of the id's bytes
nlohmann::json chat_logprobs_json(const tok::Tokenizer& tokenizer, const std::vector<LogprobEntry>& entries);
// Completions shape; text_offset counts UTF-8 bytes from `offset0` (the generated text's start).
nlohmann::json completion_logprobs_json(const tok::Tokenizer& tokenizer, const std::vector<LogprobEntry>& entries,
                                        int64_t offset0);
nlohmann::json tool_calls_json(const std::vector<tok::ToolCall>& calls, bool with_index);
// A finished choice of a non-streaming response: chat {index, message {role, content (null when only tool calls),
// tool_calls?}, logprobs, finish_reason}; completions {index, text, logprobs, finish_reason}.
nlohmann::json choice_json(const tok::Tokenizer& tokenizer, Endpoint endpoint, int64_t index, const ChoiceAssembler& c,
                           bool logprobs);
// A choice of a stream chunk: chat {index, delta {content?, tool_calls?}, logprobs, finish_reason}; completions
// {index, text, logprobs, finish_reason}. text_offset: UTF-8 bytes of this choice's logprob tokens sent before.
nlohmann::json delta_choice_json(const tok::Tokenizer& tokenizer, Endpoint endpoint, int64_t index,
                                 const ChoiceDelta& d, bool logprobs, int64_t text_offset);
nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens);
std::string new_id(const std::string& prefix);  // "chatcmpl-…", "cmpl-…", "call_…": random hex

}  // namespace dsv3::server
