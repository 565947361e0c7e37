// The OpenAI API layer without sockets (src/server/api.h): request validation (status + param), prompt building
// (chat template, tools, FIM), per-choice seeds, and the choice assembler's stop strings, tool-call parsing and
// logprob shapes on scripted token events.
#include <gtest/gtest.h>

#include "server/api.h"
#include "server_test_util.h"
#include "tokenizer/fim.h"

namespace {

using dsv3::server::ApiContext;
using dsv3::server::ApiError;
using dsv3::server::ChoiceAssembler;
using dsv3::server::ChoiceDelta;
using dsv3::server::GenerationSpec;
using json = nlohmann::json;
namespace tok = dsv3::tok;
namespace infer = dsv3::infer;

ApiContext context() {
  ApiContext c;
  c.tokenizer = &dsv3::test::server_tokenizer();
  c.model_name = "tiny";
  c.vocab_size = 320;
  c.context_length = 256;
  return c;
}

json chat_body() {
  return json{{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", "Hello there"}}})}};
}

// Runs fn and returns the ApiError it throws (fails the test when it does not throw).
template <class F>
ApiError api_error(F fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no ApiError thrown";
  return ApiError(0, "");
}

TEST(ServerApi, ChatRequestRendersTemplateAndMapsFields) {
  json b = chat_body();
  b["messages"].insert(b["messages"].begin(), json{{"role", "system"}, {"content", "Be brief."}});
  b.update(json{{"temperature", 0.5}, {"top_p", 0.9}, {"top_k", 7}, {"min_p", 0.05}, {"presence_penalty", 0.5},
                {"frequency_penalty", -0.5}, {"repetition_penalty", 1.1}, {"seed", 42}, {"n", 2},
                {"max_tokens", 9}, {"stop", "xy"}, {"logprobs", true}, {"top_logprobs", 4},
                {"logit_bias", {{"17", -100}, {"5", 2.5}}}, {"stream", true},
                {"stream_options", {{"include_usage", true}}}});
  GenerationSpec s = dsv3::server::parse_chat_request(b, context());
  const tok::Tokenizer& t = dsv3::test::server_tokenizer();
  std::vector<tok::ChatMessage> msgs = {{"system", "Be brief."}, {"user", "Hello there"}};
  tok::ChatTemplateOptions o;
  o.bos_token = t.bos_token();
  o.add_generation_prompt = true;
  ASSERT_EQ(s.prompts.size(), 1u);
  EXPECT_EQ(s.prompts[0], t.encode(tok::render_chat(msgs, o), false));
  EXPECT_EQ(s.prompts[0][0], t.bos_id());
  json dev = b;
  dev["messages"][0]["role"] = "developer";  // treated as "system"
  EXPECT_EQ(dsv3::server::parse_chat_request(dev, context()).prompts[0], s.prompts[0]);
  EXPECT_FLOAT_EQ(s.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s.sampling.top_p, 0.9f);
  EXPECT_EQ(s.sampling.top_k, 7);
  EXPECT_FLOAT_EQ(s.sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(s.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(s.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(s.sampling.repetition_penalty, 1.1f);
  EXPECT_TRUE(s.seed_given);
  EXPECT_EQ(s.sampling.seed, 42u);
  EXPECT_EQ(s.n, 2);
  EXPECT_EQ(s.max_tokens, 9);
  EXPECT_EQ(s.stop, std::vector<std::string>{"xy"});
  EXPECT_TRUE(s.logprobs);
  EXPECT_EQ(s.top_logprobs, 4);
  ASSERT_EQ(s.sampling.logit_bias.size(), 2u);
  EXPECT_TRUE(s.stream && s.include_usage);
  EXPECT_FALSE(s.parse_tool_calls);

  // Per-choice engine requests: seeds derived per choice, max_tokens clamped to the context.
  infer::GenerationRequest r0 = s.engine_request(0, 256, 7), r1 = s.engine_request(1, 256, 7);
  EXPECT_EQ(r0.sampling.seed, 42u);
  EXPECT_EQ(r1.sampling.seed, dsv3::server::choice_seed(42, 1));
  EXPECT_NE(r1.sampling.seed, 42u);
  EXPECT_EQ(r0.max_tokens, 9);
  EXPECT_TRUE(r0.sampling.logprobs);
  s.max_tokens = 0;
  EXPECT_EQ(s.engine_request(0, 256, 7).max_tokens, 256 - int64_t(s.prompts[0].size()));
  s.seed_given = false;
  EXPECT_EQ(s.engine_request(1, 256, 7).sampling.seed, 7u);
}

TEST(ServerApi, BadFieldsAre400WithParam) {
  struct Case {
    const char* field;
    json value;
  };
  const std::vector<Case> cases = {
      {"temperature", "hot"}, {"temperature", 3.0},   {"top_p", 0},          {"n", 0},
      {"n", 1.5},             {"max_tokens", -1},     {"max_tokens", "10"},  {"stop", 5},
      {"stop", json::array({1})}, {"seed", "x"},      {"logit_bias", {{"abc", 1}}},
      {"logit_bias", {{"999", 1}}}, {"logit_bias", {{"3", 500}}}, {"stream", "yes"}, {"messages", "hi"},
      {"messages", json::array()}, {"presence_penalty", 9}, {"top_logprobs", 3},
      {"tools", json::array({{{"type", "function"}}})}, {"tool_choice", "sometimes"},
      {"stream_options", {{"include_usage", 1}}}};
  for (const Case& c : cases) {
    json b = chat_body();
    b[c.field] = c.value;
    ApiError e = api_error([&] { dsv3::server::parse_chat_request(b, context()); });
    EXPECT_EQ(e.status, 400) << c.field << " = " << c.value.dump();
    EXPECT_EQ(e.param.rfind(c.field, 0), 0u) << c.field << ": param '" << e.param << "'";
    EXPECT_EQ(e.type, "invalid_request_error");
  }
  ApiError e = api_error([&] { dsv3::server::parse_chat_request(json::array(), context()); });
  EXPECT_EQ(e.status, 400);
  json b = chat_body();
  b["model"] = "gpt-9";
  e = api_error([&] { dsv3::server::parse_chat_request(b, context()); });
  EXPECT_EQ(e.status, 404);
  EXPECT_EQ(e.code, "model_not_found");
  const json j = dsv3::server::error_json(e);
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(j["error"]["message"].is_string());
  // A prompt that fills the context.
  b = chat_body();
  b["messages"][0]["content"] = std::string(2000, 'z');
  e = api_error([&] { dsv3::server::parse_chat_request(b, context()); });
  EXPECT_EQ(e.code, "context_length_exceeded");
}

TEST(ServerApi, CompletionPromptsAndFim) {
  const tok::Tokenizer& t = dsv3::test::server_tokenizer();
  ApiContext ctx = context();
  GenerationSpec s = dsv3::server::parse_completion_request(json{{"prompt", "The quick"}, {"n", 2}}, ctx);
  ASSERT_EQ(s.prompts.size(), 1u);
  EXPECT_EQ(s.prompts[0], t.encode("The quick", t.add_bos_default()));
  EXPECT_EQ(s.n_choices(), 2);
  s = dsv3::server::parse_completion_request(json{{"prompt", {5, 6, 7}}}, ctx);
  EXPECT_EQ(s.prompts[0], (std::vector<int32_t>{5, 6, 7}));
  s = dsv3::server::parse_completion_request(json{{"prompt", json::array({json("a"), json::array({9, 10})})}, {"n", 3}}, ctx);
  ASSERT_EQ(s.prompts.size(), 2u);
  EXPECT_EQ(s.n_choices(), 6);
  EXPECT_EQ(s.engine_request(4, 256, 0).prompt, (std::vector<int32_t>{9, 10}));
  // suffix → `<｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>` with BOS.
  s = dsv3::server::parse_completion_request(json{{"prompt", "def f():"}, {"suffix", "  return 1"}}, ctx);
  const tok::FimTokenIds fim = tok::fim_token_ids(t);
  EXPECT_EQ(s.prompts[0], t.encode(tok::fim_prompt("def f():", "  return 1"), true));
  EXPECT_EQ(s.prompts[0][1], fim.begin);
  EXPECT_EQ(s.prompts[0].back(), fim.end);
  s = dsv3::server::parse_completion_request(json{{"prompt", "x"}, {"logprobs", 3}}, ctx);
  EXPECT_TRUE(s.logprobs);
  EXPECT_EQ(s.top_logprobs, 3);

  for (const json& bad : {json{{"prompt", 5}}, json{{"prompt", {-1}}}, json{{"prompt", {400}}}, json::object(),
                          json{{"prompt", "x"}, {"suffix", 3}}, json{{"prompt", {1, 2}}, {"suffix", "s"}},
                          json{{"prompt", "x"}, {"echo", true}}, json{{"prompt", "x"}, {"logprobs", 21}}}) {
    ApiError e = api_error([&] { dsv3::server::parse_completion_request(bad, ctx); });
    EXPECT_EQ(e.status, 400) << bad.dump();
    EXPECT_FALSE(e.param.empty()) << bad.dump();
  }
}

TEST(ServerApi, ToolsAreOfferedInASystemMessage) {
  const tok::Tokenizer& t = dsv3::test::server_tokenizer();
  const json tools = json::array({{{"type", "function"},
                                   {"function",
                                    {{"name", "get_weather"},
                                     {"description", "Weather in a city"},
                                     {"parameters", {{"type", "object"}}}}}}});
  const json msgs = chat_body()["messages"];
  const std::string with = dsv3::server::render_chat_prompt(msgs, tools, nullptr, t);
  const std::string without = dsv3::server::render_chat_prompt(msgs, nullptr, nullptr, t);
  const std::string none = dsv3::server::render_chat_prompt(msgs, tools, "none", t);
  EXPECT_EQ(none, without);
  EXPECT_NE(with.find("### get_weather\nWeather in a city\nParameters: {\"type\":\"object\"}"), std::string::npos);
  EXPECT_NE(with.find(std::string(tok::kToolCallsBegin)), std::string::npos);
  // System text sits right after BOS; the conversation follows unchanged.
  EXPECT_EQ(with.rfind(t.bos_token() + "## Tools", 0), 0u);
  EXPECT_EQ(with.substr(with.size() - (without.size() - t.bos_token().size())), without.substr(t.bos_token().size()));
  const std::string forced =
      dsv3::server::render_chat_prompt(msgs, tools, json{{"type", "function"}, {"function", {{"name", "get_weather"}}}}, t);
  EXPECT_NE(forced.find("You must call the function get_weather."), std::string::npos);
  ApiError e = api_error([&] {
    dsv3::server::render_chat_prompt(msgs, tools, json{{"type", "function"}, {"function", {{"name", "nope"}}}}, t);
  });
  EXPECT_EQ(e.param, "tool_choice");
}

// Scripted engine events for `ids`; the last one finishes with `reason` (EOS appended as the stop token for kStop).
std::vector<infer::TokenEvent> events_for(const std::vector<int32_t>& ids, infer::FinishReason reason) {
  std::vector<infer::TokenEvent> evs;
  for (size_t i = 0; i < ids.size(); ++i) {
    infer::TokenEvent ev;
    ev.token = ids[i];
    ev.index = int64_t(i);
    ev.logprob = -0.25f * float(i + 1);
    ev.top_logprobs = {{ids[i], ev.logprob}, {3, -5.0f}};
    evs.push_back(ev);
  }
  if (reason == infer::FinishReason::kStop) {
    infer::TokenEvent ev;
    ev.token = 1;  // EOS
    ev.index = int64_t(ids.size());
    ev.is_stop_token = true;
    evs.push_back(ev);
  }
  evs.back().finished = true;
  evs.back().reason = reason;
  return evs;
}

struct FedRun {
  std::string streamed;
  std::vector<ChoiceDelta> deltas;
};
FedRun feed(ChoiceAssembler& a, const std::vector<infer::TokenEvent>& evs) {
  FedRun r;
  for (const auto& ev : evs) {
    ChoiceDelta d = a.push(ev);
    r.streamed += d.content;
    r.deltas.push_back(d);
    if (a.finished()) break;
  }
  return r;
}

TEST(ServerApi, StopStringsAcrossTokenBoundaries) {
  const tok::Tokenizer& t = dsv3::test::server_tokenizer();
  const std::string text = "The quick brown fox jumps over the lazy dog.";
  const std::vector<int32_t> ids = t.encode(text);
  for (const std::string stop : {"fox j", "o", "lazy dog.", "k b", "zzz"}) {
    SCOPED_TRACE(stop);
    GenerationSpec spec;
    spec.stop = {stop, "never-here"};
    ChoiceAssembler a(t, spec);
    FedRun r = feed(a, events_for(ids, infer::FinishReason::kLength));
    const size_t at = text.find(stop);
    const std::string want = at == std::string::npos ? text : text.substr(0, at);
    EXPECT_EQ(r.streamed, want);
    EXPECT_EQ(a.content(), want);
    EXPECT_EQ(a.finish_reason(), at == std::string::npos ? "length" : "stop");
    EXPECT_EQ(a.stopped_by_string(), at != std::string::npos);
    // Tokens are counted up to the one that completed the stop string.
    if (at != std::string::npos) {
      int64_t n = 0;
      std::string so_far;
      while (so_far.find(stop) == std::string::npos) so_far += t.decode(std::vector<int32_t>{ids[size_t(n++)]});
      EXPECT_EQ(a.completion_tokens(), n);
    } else {
      EXPECT_EQ(a.completion_tokens(), int64_t(ids.size()));
    }
  }
  // EOS ends with "stop", adds no text, counts as a token.
  GenerationSpec spec;
  ChoiceAssembler a(t, spec);
  FedRun r = feed(a, events_for(ids, infer::FinishReason::kStop));
  EXPECT_EQ(r.streamed, text);
  EXPECT_EQ(a.finish_reason(), "stop");
  EXPECT_EQ(a.completion_tokens(), int64_t(ids.size()) + 1);
}

TEST(ServerApi, ToolCallOutputBecomesToolCalls) {
  const tok::Tokenizer& t = dsv3::test::server_tokenizer();
  const std::string call = std::string(tok::kToolCallBegin) + "function" + std::string(tok::kToolSep) +
                           "get_weather\n```json\n{\"city\": \"Paris\"}\n```" + std::string(tok::kToolCallEnd);
  const std::string call2 = std::string(tok::kToolCallBegin) + "function" + std::string(tok::kToolSep) +
                            "get_time\n```json\n{}\n```" + std::string(tok::kToolCallEnd);
  const std::string text =
      "Let me check." + std::string(tok::kToolCallsBegin) + call + "\n" + call2 + std::string(tok::kToolCallsEnd);
  const std::vector<int32_t> ids = t.encode(text);
  EXPECT_NE(std::find(ids.begin(), ids.end(), t.token_to_id(std::string(tok::kToolCallsBegin))), ids.end());
  GenerationSpec spec;
  spec.parse_tool_calls = true;
  spec.logprobs = true;
  ChoiceAssembler a(t, spec);
  FedRun r = feed(a, events_for(ids, infer::FinishReason::kStop));
  EXPECT_EQ(r.streamed, "Let me check.");  // the block never reaches the content stream
  EXPECT_EQ(a.finish_reason(), "tool_calls");
  ASSERT_EQ(a.tool_calls().size(), 2u);
  EXPECT_EQ(a.tool_calls()[0].function.name, "get_weather");
  EXPECT_EQ(json::parse(a.tool_calls()[0].function.arguments), json({{"city", "Paris"}}));
  EXPECT_EQ(a.tool_calls()[1].function.name, "get_time");
  EXPECT_EQ(a.tool_calls()[0].id.rfind("call_", 0), 0u);
  EXPECT_NE(a.tool_calls()[0].id, a.tool_calls()[1].id);
  EXPECT_EQ(r.deltas.back().tool_calls.size(), 2u);
  const json tc = dsv3::server::tool_calls_json(a.tool_calls(), true);
  EXPECT_EQ(tc[1]["index"], 1);
  EXPECT_EQ(tc[0]["type"], "function");
  EXPECT_EQ(tc[0]["function"]["name"], "get_weather");
  EXPECT_EQ(a.logprobs().size(), ids.size());
  // The response shapes the server sends for it: the final stream chunk and the non-streaming choice.
  const json chunk = dsv3::server::delta_choice_json(t, dsv3::server::Endpoint::kChat, 0, r.deltas.back(), false, 0);
  EXPECT_EQ(chunk["finish_reason"], "tool_calls");
  ASSERT_EQ(chunk["delta"]["tool_calls"].size(), 2u);
  EXPECT_EQ(chunk["delta"]["tool_calls"][1]["index"], 1);
  EXPECT_EQ(chunk["delta"]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_FALSE(chunk["delta"].contains("content"));  // the text went out in earlier chunks
  const json choice = dsv3::server::choice_json(t, dsv3::server::Endpoint::kChat, 0, a, true);
  EXPECT_EQ(choice["message"]["content"], "Let me check.");
  EXPECT_EQ(choice["message"]["tool_calls"].size(), 2u);
  EXPECT_FALSE(choice["message"]["tool_calls"][0].contains("index"));
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["logprobs"]["content"].size(), ids.size());
  // Only a call, no text: content is null.
  ChoiceAssembler only(t, spec);
  feed(only, events_for(t.encode(std::string(tok::kToolCallsBegin) + call + std::string(tok::kToolCallsEnd)),
                        infer::FinishReason::kStop));
  EXPECT_TRUE(dsv3::server::choice_json(t, dsv3::server::Endpoint::kChat, 0, only, false)["message"]["content"].is_null());

  // Without tools offered, the same text is plain content.
  GenerationSpec plain;
  ChoiceAssembler b(t, plain);
  feed(b, events_for(ids, infer::FinishReason::kStop));
  EXPECT_EQ(b.content(), text);
  EXPECT_EQ(b.finish_reason(), "stop");
  // A malformed block stays in the content.
  const std::string broken = "Hm." + std::string(tok::kToolCallsBegin) + std::string(tok::kToolCallBegin) + "function";
  ChoiceAssembler c(t, spec);
  feed(c, events_for(t.encode(broken), infer::FinishReason::kLength));
  EXPECT_EQ(c.content(), broken);
  EXPECT_TRUE(c.tool_calls().empty());
  EXPECT_EQ(c.finish_reason(), "length");
  // Text that only looks like the start of the marker is released at the end.
  const std::string partial = "a <｜tool";
  ChoiceAssembler d(t, spec);
  feed(d, events_for(t.encode(partial), infer::FinishReason::kStop));
  EXPECT_EQ(d.content(), partial);
}

TEST(ServerApi, LogprobShapes) {
  const tok::Tokenizer& t = dsv3::test::server_tokenizer();
  const std::vector<int32_t> ids = t.encode("Hello there");
  std::vector<dsv3::server::LogprobEntry> entries;
  for (int32_t id : ids) entries.push_back({id, -0.5f, {{id, -0.5f}, {7, -2.0f}}});
  const json chat = dsv3::server::chat_logprobs_json(t, entries);
  ASSERT_EQ(chat["content"].size(), ids.size());
  std::string bytes;
  for (const json& e : chat["content"]) {
    EXPECT_EQ(e["logprob"], -0.5);
    EXPECT_EQ(e["top_logprobs"].size(), 2u);
    EXPECT_EQ(e["top_logprobs"][1]["token"], dsv3::server::token_text(t, 7));
    for (const json& b : e["bytes"]) bytes.push_back(char(b.get<int>()));
  }
  EXPECT_EQ(bytes, "Hello there");
  const json comp = dsv3::server::completion_logprobs_json(t, entries, 4);
  ASSERT_EQ(comp["tokens"].size(), ids.size());
  EXPECT_EQ(comp["text_offset"][0], 4);
  EXPECT_EQ(comp["text_offset"][1], 4 + int64_t(t.token_bytes(ids[0]).size()));
  EXPECT_EQ(comp["top_logprobs"][0].size(), 2u);
  EXPECT_EQ(comp["token_logprobs"][0], -0.5);
  const json u = dsv3::server::usage_json(5, 7);
  EXPECT_EQ(u["total_tokens"], 12);
}

}  // namespace
