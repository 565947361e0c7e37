// OpenAI request validation, prompt building, choice assembly and response shapes (see api.h).
#include "server/api.h"

#include <cmath>
#include <cstdio>
#include <random>

#include "dsv3/error.h"
#include "tokenizer/fim.h"
#include "tokenizer/unicode.h"

namespace dsv3::server {

using json = nlohmann::json;

ApiError::ApiError(int status_, const std::string& message, std::string param_, std::string code_, std::string type_)
    : std::runtime_error(message),
      status(status_),
      param(std::move(param_)),
      code(std::move(code_)),
      type(type_.empty() ? error_type_for_status(status_) : std::move(type_)) {}

std::string error_type_for_status(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

json error_json(const ApiError& e) {
  json err = {{"message", e.what()}, {"type", e.type}};
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return json{{"error", std::move(err)}};
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param, "invalid_value");
}
[[noreturn]] void bad_type(const std::string& param, const char* want, const json& got) {
  throw ApiError(400, "'" + param + "' must be " + want + ", got " + got.type_name(), param, "invalid_type");
}

// The field, or nullptr when absent or null (OpenAI clients send null for "not set").
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const json& body, const char* name, bool def) {
  const json* v = field(body, name);
  if (!v) return def;
  if (!v->is_boolean()) bad_type(name, "a boolean", *v);
  return v->get<bool>();
}

int64_t get_int(const json& body, const char* name, int64_t def, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v) return def;
  int64_t x = 0;
  if (v->is_number_integer()) {
    x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v->get<int64_t>();
  } else if (v->is_number_float() && std::nearbyint(v->get<double>()) == v->get<double>() &&
             std::fabs(v->get<double>()) < 9e15) {
    x = int64_t(v->get<double>());
  } else {
    bad_type(name, "an integer", *v);
  }
  if (x < lo || x > hi)
    bad(name, "'" + std::string(name) + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                  std::to_string(x));
  return x;
}

double get_number(const json& body, const char* name, double def, double lo, double hi, bool lo_open = false) {
  const json* v = field(body, name);
  if (!v) return def;
  if (!v->is_number()) bad_type(name, "a number", *v);
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "'%s' must be in %s%g, %g], got %g", name, lo_open ? "(" : "[", lo, hi, x);
    bad(name, buf);
  }
  return x;
}

void check_object(const json& body) {
  if (!body.is_object())
    throw ApiError(400, std::string("the request body must be a JSON object, got ") + body.type_name(), "",
                   "invalid_body");
}

void check_model(const json& body, const ApiContext& ctx, GenerationSpec& s) {
  const json* m = field(body, "model");
  s.model = ctx.model_name;
  if (!m) return;
  if (!m->is_string()) bad_type("model", "a string", *m);
  if (m->get<std::string>() != ctx.model_name)
    throw ApiError(404, "The model '" + m->get<std::string>() + "' does not exist (this server serves '" +
                            ctx.model_name + "')",
                   "model", "model_not_found");
}

// Fields shared by both endpoints.
void parse_common(const json& body, const ApiContext& ctx, GenerationSpec& s) {
  s.n = int32_t(get_int(body, "n", 1, 1, 128));
  s.stream = get_bool(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad_type("stream_options", "an object", *so);
    if (const json* iu = field(*so, "include_usage")) {
      if (!iu->is_boolean()) bad_type("stream_options.include_usage", "a boolean", *iu);
      s.include_usage = iu->get<bool>();
    }
  }
  const int64_t mt = get_int(body, "max_tokens", 0, 1, INT64_MAX);
  s.max_tokens = get_int(body, "max_completion_tokens", mt, 1, INT64_MAX);
  if (const json* st = field(body, "stop")) {
    if (st->is_string()) {
      s.stop.push_back(st->get<std::string>());
    } else if (st->is_array()) {
      if (st->size() > 16) bad("stop", "'stop' takes at most 16 strings");
      for (const json& x : *st) {
        if (!x.is_string()) bad_type("stop", "a string or an array of strings", *st);
        s.stop.push_back(x.get<std::string>());
      }
    } else {
      bad_type("stop", "a string or an array of strings", *st);
    }
  }
  infer::SamplingParams& p = s.sampling;
  p.temperature = float(get_number(body, "temperature", 1.0, 0.0, 2.0));
  p.top_p = float(get_number(body, "top_p", 1.0, 0.0, 1.0, /*lo_open=*/true));
  const int64_t top_k = get_int(body, "top_k", 0, -1, INT32_MAX);
  p.top_k = top_k < 0 ? 0 : int32_t(top_k);
  p.min_p = float(get_number(body, "min_p", 0.0, 0.0, 1.0));
  p.presence_penalty = float(get_number(body, "presence_penalty", 0.0, -2.0, 2.0));
  p.frequency_penalty = float(get_number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  p.repetition_penalty = float(get_number(body, "repetition_penalty", 1.0, 0.0, 100.0, /*lo_open=*/true));
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) bad_type("seed", "an integer", *seed);
    p.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : uint64_t(seed->get<int64_t>());
    s.seed_given = true;
  }
  if (const json* lb = field(body, "logit_bias")) {
    if (!lb->is_object()) bad_type("logit_bias", "an object mapping token ids to biases", *lb);
    for (const auto& [key, val] : lb->items()) {
      size_t pos = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &pos);
      } catch (const std::exception&) {
        pos = 0;
      }
      if (pos != key.size() || pos == 0 || id < 0 || id >= ctx.vocab_size)
        bad("logit_bias", "logit_bias key '" + key + "' is not a token id in [0, " + std::to_string(ctx.vocab_size) +
                              ")");
      if (!val.is_number()) bad_type("logit_bias", "an object of numbers", val);
      const double b = val.get<double>();
      if (!(b >= -100.0 && b <= 100.0)) bad("logit_bias", "logit_bias values must be in [-100, 100]");
      p.logit_bias.emplace_back(int32_t(id), float(b));
    }
  }
  s.ignore_eos = get_bool(body, "ignore_eos", false);
  s.skip_special_tokens = get_bool(body, "skip_special_tokens", true);
}

// Every prompt must leave room for one generated token.
void check_prompts(const GenerationSpec& s, const ApiContext& ctx, const char* param) {
  for (const auto& p : s.prompts) {
    if (p.empty()) bad(param, "the prompt is empty");
    if (int64_t(p.size()) >= ctx.context_length)
      throw ApiError(400,
                     "the prompt has " + std::to_string(p.size()) + " tokens; this server's context length is " +
                         std::to_string(ctx.context_length) + " (prompt + at least one generated token)",
                     param, "context_length_exceeded");
  }
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

void validate_tools(const json& tools) {
  if (!tools.is_array()) bad_type("tools", "an array", tools);
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& t = tools[i];
    const std::string at = "tools[" + std::to_string(i) + "]";
    if (!t.is_object()) bad_type(at, "an object", t);
    if (t.value("type", "function") != "function") bad(at + ".type", "only \"function\" tools are supported");
    auto fn = t.find("function");
    if (fn == t.end() || !fn->is_object()) bad(at + ".function", at + ".function must be an object");
    auto name = fn->find("name");
    if (name == fn->end() || !name->is_string() || name->get<std::string>().empty())
      bad(at + ".function.name", at + ".function.name must be a non-empty string");
    auto desc = fn->find("description");
    if (desc != fn->end() && !desc->is_null() && !desc->is_string())
      bad_type(at + ".function.description", "a string", *desc);
    auto params = fn->find("parameters");
    if (params != fn->end() && !params->is_null() && !params->is_object())
      bad_type(at + ".function.parameters", "an object (JSON Schema)", *params);
  }
}

// "none" | "auto" | "required" | {"type":"function","function":{"name":...}}: the forced name or "".
std::string tool_choice_name(const json& tool_choice, const json& tools) {
  if (tool_choice.is_null()) return "";
  if (tool_choice.is_string()) {
    const std::string c = tool_choice.get<std::string>();
    if (c != "none" && c != "auto" && c != "required")
      bad("tool_choice", "tool_choice must be \"none\", \"auto\", \"required\" or a function, got \"" + c + "\"");
    return "";
  }
  if (!tool_choice.is_object()) bad_type("tool_choice", "a string or an object", tool_choice);
  auto fn = tool_choice.find("function");
  if (fn == tool_choice.end() || !fn->is_object() || !fn->contains("name") || !(*fn)["name"].is_string())
    bad("tool_choice", "tool_choice.function.name must be a string");
  const std::string name = (*fn)["name"].get<std::string>();
  bool found = false;
  for (const json& t : tools) found = found || t["function"]["name"] == name;
  if (!found) bad("tool_choice", "tool_choice names '" + name + "', which is not among the tools");
  return name;
}

bool tools_offered(const json& tools, const json& tool_choice) {
  return tools.is_array() && !tools.empty() && !(tool_choice.is_string() && tool_choice == "none");
}

}  // namespace

uint64_t choice_seed(uint64_t seed, int64_t choice) {
  return choice == 0 ? seed : splitmix64(seed ^ splitmix64(uint64_t(choice)));
}

infer::GenerationRequest GenerationSpec::engine_request(int64_t k, int64_t context_length,
                                                        uint64_t random_seed) const {
  infer::GenerationRequest r;
  r.prompt = prompts[size_t(k / n)];
  r.sampling = sampling;
  r.sampling.seed = seed_given ? choice_seed(sampling.seed, k % n) : random_seed;
  r.sampling.logprobs = logprobs;
  r.sampling.top_logprobs = top_logprobs;
  const int64_t room = context_length - int64_t(r.prompt.size());
  r.max_tokens = max_tokens > 0 ? std::min(max_tokens, room) : room;
  r.ignore_eos = ignore_eos;
  return r;
}

std::string tools_system_prompt(const json& tools, const json& tool_choice) {
  std::string s =
      "## Tools\n\nYou can call the functions below. To call functions, reply with:\n" + std::string(tok::kToolCallsBegin) +
      std::string(tok::kToolCallBegin) + "function" + std::string(tok::kToolSep) +
      "FUNCTION_NAME\n```json\n{\"argument\": \"value\"}\n```" + std::string(tok::kToolCallEnd) +
      std::string(tok::kToolCallsEnd) + "\n(one " + std::string(tok::kToolCallBegin) + "..." +
      std::string(tok::kToolCallEnd) +
      " per call, separated by newlines; the arguments are a JSON object matching the function's parameters).\n";
  for (const json& t : tools) {
    const json& fn = t["function"];
    s += "\n### " + fn["name"].get<std::string>() + "\n";
    if (fn.contains("description") && fn["description"].is_string()) s += fn["description"].get<std::string>() + "\n";
    s += "Parameters: " + (fn.contains("parameters") && fn["parameters"].is_object() ? fn["parameters"].dump()
                                                                                      : std::string("{}")) +
         "\n";
  }
  const std::string forced = tool_choice_name(tool_choice, tools);
  if (!forced.empty())
    s += "\nYou must call the function " + forced + ".\n";
  else if (tool_choice.is_string() && tool_choice == "required")
    s += "\nYou must call at least one function.\n";
  return s;
}

std::string render_chat_prompt(const json& messages, const json& tools, const json& tool_choice,
                               const tok::Tokenizer& tokenizer) {
  if (messages.is_null()) throw ApiError(400, "'messages' is required", "messages", "missing_field");
  if (!messages.is_array()) bad_type("messages", "an array", messages);
  if (messages.empty()) bad("messages", "'messages' must not be empty");
  std::vector<tok::ChatMessage> msgs;
  try {
    msgs = tok::chat_messages_from_json(messages);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "messages", "invalid_value");
  }
  // OpenAI's newer "developer" role is the system prompt of reasoning-era clients.
  for (tok::ChatMessage& m : msgs)
    if (m.role == "developer") m.role = "system";
  if (!tools.is_null()) validate_tools(tools);
  if (!tool_choice.is_null()) tool_choice_name(tool_choice, tools.is_null() ? json::array() : tools);
  // All system messages are joined after BOS by the template, so the tool description can go last.
  if (tools_offered(tools, tool_choice)) msgs.emplace_back("system", tools_system_prompt(tools, tool_choice));
  tok::ChatTemplateOptions opt;
  if (!tokenizer.bos_token().empty()) opt.bos_token = tokenizer.bos_token();
  opt.add_generation_prompt = true;
  try {
    return tok::render_chat(msgs, opt);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "messages", "invalid_value");
  }
}

GenerationSpec parse_chat_request(const json& body, const ApiContext& ctx) {
  check_object(body);
  GenerationSpec s;
  s.endpoint = Endpoint::kChat;
  check_model(body, ctx, s);
  const json tools = body.contains("tools") ? body["tools"] : json(nullptr);
  const json tool_choice = body.contains("tool_choice") ? body["tool_choice"] : json(nullptr);
  const json messages = body.contains("messages") ? body["messages"] : json(nullptr);
  const std::string prompt = render_chat_prompt(messages, tools, tool_choice, *ctx.tokenizer);
  s.prompts.push_back(ctx.tokenizer->encode(prompt, /*add_bos=*/false));
  s.parse_tool_calls = tools_offered(tools, tool_choice);
  parse_common(body, ctx, s);
  s.logprobs = get_bool(body, "logprobs", false);
  s.top_logprobs = int32_t(get_int(body, "top_logprobs", 0, 0, 20));
  if (s.top_logprobs > 0 && !s.logprobs) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  check_prompts(s, ctx, "messages");
  return s;
}

GenerationSpec parse_completion_request(const json& body, const ApiContext& ctx) {
  check_object(body);
  GenerationSpec s;
  s.endpoint = Endpoint::kCompletions;
  check_model(body, ctx, s);
  const tok::Tokenizer& tk = *ctx.tokenizer;
  const json* prompt = field(body, "prompt");
  if (!prompt) throw ApiError(400, "'prompt' is required", "prompt", "missing_field");
  std::optional<std::string> suffix;
  if (const json* sf = field(body, "suffix")) {
    if (!sf->is_string()) bad_type("suffix", "a string", *sf);
    suffix = sf->get<std::string>();
  }
  auto add_text = [&](const std::string& text) {
    if (suffix) {
      try {
        tok::fim_token_ids(tk);
      } catch (const Error& e) {
        bad("suffix", std::string("this model's tokenizer cannot do fill-in-the-middle: ") + e.what());
      }
      s.prompts.push_back(tk.encode(tok::fim_prompt(text, *suffix), /*add_bos=*/true));
    } else {
      s.prompts.push_back(tk.encode(text, tk.add_bos_default()));
    }
  };
  auto add_ids = [&](const json& arr) {
    if (suffix) bad("suffix", "'suffix' needs a text prompt, not token ids");
    std::vector<int32_t> ids;
    for (const json& x : arr) {
      if (!x.is_number_integer()) bad_type("prompt", "a string, an array of token ids, or an array of those", *prompt);
      const int64_t v = x.get<int64_t>();
      if (v < 0 || v >= ctx.vocab_size)
        bad("prompt", "token id " + std::to_string(v) + " is outside the vocabulary [0, " +
                          std::to_string(ctx.vocab_size) + ")");
      ids.push_back(int32_t(v));
    }
    s.prompts.push_back(std::move(ids));
  };
  if (prompt->is_string()) {
    add_text(prompt->get<std::string>());
  } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number_integer()) {
    add_ids(*prompt);
  } else if (prompt->is_array() && !prompt->empty()) {
    for (const json& p : *prompt) {
      if (p.is_string())
        add_text(p.get<std::string>());
      else if (p.is_array())
        add_ids(p);
      else
        bad_type("prompt", "a string, an array of token ids, or an array of those", *prompt);
    }
  } else {
    bad_type("prompt", "a non-empty string, array of token ids, or array of those", *prompt);
  }
  parse_common(body, ctx, s);
  const int64_t lp = get_int(body, "logprobs", -1, 0, 20);
  s.logprobs = lp >= 0;
  s.top_logprobs = int32_t(std::max<int64_t>(lp, 0));
  if (get_bool(body, "echo", false)) bad("echo", "'echo' is not supported");
  if (field(body, "best_of") && get_int(body, "best_of", 1, 1, 128) != s.n)
    bad("best_of", "'best_of' other than n is not supported");
  check_prompts(s, ctx, "prompt");
  return s;
}

// ---- choices ----

ChoiceAssembler::ChoiceAssembler(const tok::Tokenizer& tokenizer, const GenerationSpec& spec)
    : tok_(tokenizer),
      decoder_(tokenizer, spec.skip_special_tokens),
      stopper_(spec.stop),
      parse_tools_(spec.parse_tool_calls),
      want_logprobs_(spec.logprobs) {}

std::string ChoiceAssembler::after_stop(std::string text) {
  if (!parse_tools_) return text;
  if (in_tool_block_) {
    tool_block_ += text;
    return "";
  }
  held_ += text;
  const std::string_view marker = tok::kToolCallsBegin;
  const size_t at = held_.find(marker);
  if (at != std::string::npos) {
    std::string out = held_.substr(0, at);
    tool_block_ = held_.substr(at);
    held_.clear();
    in_tool_block_ = true;
    return out;
  }
  // Keep the longest tail that could still grow into the marker.
  size_t keep = std::min(held_.size(), marker.size() - 1);
  while (keep > 0 && held_.compare(held_.size() - keep, keep, marker.substr(0, keep)) != 0) --keep;
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

void ChoiceAssembler::finish(ChoiceDelta& d, const std::string& reason_in) {
  std::string reason = reason_in;
  if (!stopper_.stopped()) {
    std::string rest = stopper_.push(decoder_.flush());
    if (!stopper_.stopped()) rest += stopper_.flush();
    else reason = "stop";
    d.content += after_stop(std::move(rest));
  }
  d.content += held_;
  held_.clear();
  if (in_tool_block_) {
    tok::ParsedAssistantOutput parsed = tok::parse_assistant_output(tool_block_);
    if (parsed.error.empty() && !parsed.tool_calls.empty()) {
      for (tok::ToolCall& c : parsed.tool_calls) c.id = new_id("call_");
      d.content += parsed.content;
      d.tool_calls = parsed.tool_calls;
      tool_calls_ = std::move(parsed.tool_calls);
      if (reason == "stop") reason = "tool_calls";
    } else {
      d.content += tool_block_;  // not a well-formed call: the model's text as it is
    }
    tool_block_.clear();
  }
  d.finish_reason = reason;
  finish_reason_ = reason;
}

ChoiceDelta ChoiceAssembler::push(const infer::TokenEvent& ev) {
  ChoiceDelta d;
  if (finished()) return d;
  if (ev.token >= 0) {
    ++n_tokens_;
    if (!ev.is_stop_token) {
      if (want_logprobs_) {
        LogprobEntry e{ev.token, ev.logprob, ev.top_logprobs};
        d.logprobs.push_back(e);
        logprobs_.push_back(std::move(e));
      }
      std::string out = stopper_.push(decoder_.push(ev.token));
      d.content += after_stop(std::move(out));
      if (stopper_.stopped()) finish(d, "stop");
    }
  }
  if (ev.finished && !finished()) {
    switch (ev.reason) {
      case infer::FinishReason::kStop: finish(d, "stop"); break;
      case infer::FinishReason::kLength: finish(d, "length"); break;
      case infer::FinishReason::kCancelled: finish(d, "cancelled"); break;
      default:
        d.error = ev.error.empty() ? "generation failed" : ev.error;
        finish(d, "error");
    }
  }
  content_ += d.content;
  return d;
}

// ---- response shapes ----

std::string token_text(const tok::Tokenizer& tokenizer, int32_t id) {
  return tok::utf8_lossy(tokenizer.token_bytes(id));
}

namespace {
json bytes_json(std::string_view b) {
  json a = json::array();
  for (unsigned char c : b) a.push_back(int(c));
  return a;
}
}  // namespace

json chat_logprobs_json(const tok::Tokenizer& tokenizer, const std::vector<LogprobEntry>& entries) {
  json content = json::array();
  for (const LogprobEntry& e : entries) {
    json top = json::array();
    for (const infer::TokenLogprob& t : e.top)
      top.push_back({{"token", token_text(tokenizer, t.token)},
                     {"logprob", t.logprob},
                     {"bytes", bytes_json(tokenizer.token_bytes(t.token))}});
    content.push_back({{"token", token_text(tokenizer, e.token)},
                       {"logprob", e.logprob},
                       {"bytes", bytes_json(tokenizer.token_bytes(e.token))},
                       {"top_logprobs", std::move(top)}});
  }
  return json{{"content", std::move(content)}};
}

json completion_logprobs_json(const tok::Tokenizer& tokenizer, const std::vector<LogprobEntry>& entries,
                              int64_t offset0) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  int64_t off = offset0;
  for (const LogprobEntry& e : entries) {
    const std::string t = token_text(tokenizer, e.token);
    tokens.push_back(t);
    token_logprobs.push_back(e.logprob);
    json alt = json::object();
    for (const infer::TokenLogprob& a : e.top) alt[token_text(tokenizer, a.token)] = a.logprob;
    top.push_back(std::move(alt));
    offsets.push_back(off);
    off += int64_t(tokenizer.token_bytes(e.token).size());
  }
  return json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", std::move(top)},
              {"text_offset", std::move(offsets)}};
}

json tool_calls_json(const std::vector<tok::ToolCall>& calls, bool with_index) {
  json out = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    json c = {{"id", calls[i].id},
              {"type", calls[i].type.empty() ? std::string("function") : calls[i].type},
              {"function", {{"name", calls[i].function.name}, {"arguments", calls[i].function.arguments}}}};
    if (with_index) c["index"] = i;
    out.push_back(std::move(c));
  }
  return out;
}

json choice_json(const tok::Tokenizer& tokenizer, Endpoint endpoint, int64_t index, const ChoiceAssembler& c,
                 bool logprobs) {
  json choice = {{"index", index}, {"finish_reason", c.finish_reason()}};
  if (endpoint == Endpoint::kChat) {
    json msg = {{"role", "assistant"}};
    msg["content"] = c.content().empty() && !c.tool_calls().empty() ? json(nullptr) : json(c.content());
    if (!c.tool_calls().empty()) msg["tool_calls"] = tool_calls_json(c.tool_calls(), false);
    choice["message"] = std::move(msg);
    choice["logprobs"] = logprobs ? chat_logprobs_json(tokenizer, c.logprobs()) : json(nullptr);
  } else {
    choice["text"] = c.content();
    choice["logprobs"] = logprobs ? completion_logprobs_json(tokenizer, c.logprobs(), 0) : json(nullptr);
  }
  return choice;
}

json delta_choice_json(const tok::Tokenizer& tokenizer, Endpoint endpoint, int64_t index, const ChoiceDelta& d,
                       bool logprobs, int64_t text_offset) {
  json c = {{"index", index}};
  if (endpoint == Endpoint::kChat) {
    json delta = json::object();
    if (!d.content.empty() || d.tool_calls.empty()) delta["content"] = d.content;
    if (!d.tool_calls.empty()) delta["tool_calls"] = tool_calls_json(d.tool_calls, true);
    c["delta"] = std::move(delta);
    c["logprobs"] = logprobs && !d.logprobs.empty() ? chat_logprobs_json(tokenizer, d.logprobs) : json(nullptr);
  } else {
    c["text"] = d.content;
    c["logprobs"] = logprobs ? completion_logprobs_json(tokenizer, d.logprobs, text_offset) : json(nullptr);
  }
  c["finish_reason"] = d.finish_reason.empty() ? json(nullptr) : json(d.finish_reason);
  return c;
}

json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens}};
}

std::string new_id(const std::string& prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%08llx", (unsigned long long)rng(), (unsigned long long)(rng() >> 32));
  return prefix + buf;
}

}  // namespace dsv3::server
