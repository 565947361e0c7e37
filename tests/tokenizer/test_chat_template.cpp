// render_chat against real Jinja renderers running DeepSeek-V3's shipped chat_template (the npm package
// @huggingface/jinja via tests/tokenizer/jinja/render.mjs, required wherever node exists; Python Jinja2 as
// transformers configures it via render.py, where installed), a few hand-written expectations, the JSON
// message reader, and parse_assistant_output.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsv3/error.h"
#include "tokenizer/chat_template.h"
#include "../temp_dir.h"
#include "tokenizer_test_util.h"

using namespace dsv3::tok;
using nlohmann::json;
namespace fs = std::filesystem;
using dsv3::tok::testing::v3_dir;

namespace {

fs::path jinja_dir() {
  return fs::path(DSV3_SOURCE_DIR) / "tests" / "tokenizer" / "jinja";
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool have_command(const char* name) {
  return std::system((std::string("command -v ") + name + " >/dev/null 2>&1").c_str()) == 0;
}

using dsv3::test::TempDir;

json msg(const std::string& role, const json& content) {
  return {{"role", role}, {"content", content}};
}
json call(const std::string& name, const std::string& args, const std::string& type = "function") {
  return {{"type", type}, {"function", {{"name", name}, {"arguments", args}}}};
}
json tool_calls_msg(const json& calls, const json& content = nullptr) {
  return {{"role", "assistant"}, {"content", content}, {"tool_calls", calls}};
}

// The conversations every renderer must agree on. Each is rendered with add_generation_prompt true and false
// (and a few with it undefined).
std::vector<json> conversations() {
  std::vector<json> c;
  c.push_back(json::array({msg("user", "Hello")}));
  c.push_back(json::array(
      {msg("system", "You are terse."), msg("user", "Hi"), msg("assistant", "Hi."), msg("user", "Bye")}));
  c.push_back(json::array({msg("system", "First."), msg("system", "Second."), msg("user", "q")}));
  // A system message in the middle is still hoisted to the front, joined with "\n\n".
  c.push_back(json::array({msg("system", "A"), msg("user", "u1"), msg("assistant", "a1"), msg("system", "B"),
                           msg("user", "u2"), msg("system", "C")}));
  c.push_back(json::array({msg("user", "中文问题：天空为什么是蓝色的？"),
                           msg("assistant", "因为瑞利散射。🌤️"),
                           msg("user", "مرحبا שלום e\u0301 \u200d👩‍💻 ｜▁")}));
  c.push_back(json::array({msg("system", ""), msg("user", ""), msg("assistant", ""), msg("user", "")}));
  c.push_back(json::array({msg("user", "Weather in Paris?"),
                           tool_calls_msg(json::array({call("get_weather", R"({"city": "Paris"})")})),
                           msg("tool", R"({"temp_c": 21})"), msg("assistant", "It is 21 °C.")}));
  c.push_back(
      json::array({msg("user", "Three lookups"),
                   tool_calls_msg(json::array(
                       {call("a", "{}"), call("b", R"({"x":1})"), call("c", R"({"y":[1,2,{"z":"w"}]})")})),
                   msg("tool", "ra"), msg("tool", "rb"), msg("tool", "rc"), msg("assistant", "done")}));
  // Two tool-call rounds: ns.is_first and ns.is_output_first are never reset.
  c.push_back(json::array({msg("system", "tools on"), msg("user", "go"),
                           tool_calls_msg(json::array({call("step1", "{}")})), msg("tool", "r1"),
                           tool_calls_msg(json::array({call("step2", R"({"k":"v"})")})), msg("tool", "r2"),
                           msg("assistant", "finished"), msg("user", "again?")}));
  c.push_back(json::array({msg("user", "x"), tool_calls_msg(json::array({call("f", "{}")})), msg("tool", "1"),
                           msg("tool", "2"), msg("tool", "3"), msg("tool", "")}));  // ends in tool outputs
  // Tool output followed by a user turn: the template never closes the outputs.
  c.push_back(json::array({msg("user", "x"), tool_calls_msg(json::array({call("f", "{}")})),
                           msg("tool", "out"), msg("user", "thanks")}));
  // Assistant with content and tool_calls: the calls are ignored.
  c.push_back(json::array({msg("user", "x"), tool_calls_msg(json::array({call("f", "{}")}), "I will call f."),
                           msg("user", "ok")}));
  // Null content with an empty tool_calls list renders nothing but resets is_tool.
  c.push_back(json::array({msg("user", "x"), tool_calls_msg(json::array({call("f", "{}")})), msg("tool", "o"),
                           tool_calls_msg(json::array()), msg("assistant", "after")}));
  c.push_back(json::array({msg("developer", "ignored role"), msg("user", "u"), msg("assistant", "a")}));
  c.push_back(json::array({msg("user", "{{ bos_token }} {% if true %}x{% endif %} {# c #} '\" \\n \\\\"),
                           msg("assistant", "line1\nline2\r\n\ttabbed  ")}));
  c.push_back(json::array({msg("user", "<｜User｜><｜Assistant｜><｜end▁of▁sentence｜><｜tool▁sep｜>"),
                           msg("assistant", "<｜begin▁of▁sentence｜>")}));
  c.push_back(
      json::array({msg("user", "unicode args"),
                   tool_calls_msg(json::array({call("search", "{\n  \"q\": \"東京 ✈\",\n  \"n\": 3\n}"),
                                               call("translate", R"({"text":"naïve café","to":"de"})")})),
                   msg("tool", "結果1\n結果2"), msg("tool", "Ergebnis"), msg("assistant", "Here you go.")}));
  c.push_back(json::array({msg("system", "only a system prompt")}));
  c.push_back(json::array());
  c.push_back(json::array({msg("user", std::string(10000, 'x') + "\n" + std::string(3000, ' ')),
                           msg("assistant", std::string(5000, '\n'))}));
  c.push_back(json::array(
      {msg("user", "a"), msg("assistant", "b"), msg("assistant", "c"), msg("user", "d"), msg("user", "e")}));
  c.push_back(
      json::array({msg("user", "typed"), tool_calls_msg(json::array({call("run", "ls", "code_interpreter")})),
                   msg("tool", "file.txt"), msg("assistant", "one file")}));
  // Tool output then assistant content, then a second round starting with another tool output.
  c.push_back(json::array({msg("user", "q"), tool_calls_msg(json::array({call("f", "1")})), msg("tool", "r"),
                           msg("assistant", "mid"), msg("tool", "late output"), msg("assistant", "end")}));
  c.push_back(json::array({msg("system", "s1"), msg("system", ""), msg("system", "s3"),
                           tool_calls_msg(json::array({call("first", "{}"), call("second", "{}")})),
                           tool_calls_msg(json::array({call("third", "{}")}))}));
  return c;
}

json reference_cases() {
  json cases = json::array();
  const auto convs = conversations();
  for (size_t i = 0; i < convs.size(); ++i) {
    for (bool gen : {false, true}) cases.push_back({{"messages", convs[i]}, {"add_generation_prompt", gen}});
    if (i % 5 == 0) cases.push_back({{"messages", convs[i]}});  // add_generation_prompt undefined
  }
  return cases;
}

std::string render_case(const json& c) {
  ChatTemplateOptions opt;
  opt.add_generation_prompt = c.value("add_generation_prompt", false);
  return render_chat(chat_messages_from_json(c["messages"]), opt);
}

// Runs `command` (which writes JSON to `out`), returns the parsed array.
json run_reference(const std::string& command, const fs::path& out) {
  const int rc = std::system((command + " > '" + out.string() + "'").c_str());
  EXPECT_EQ(rc, 0) << command;
  return json::parse(read_file(out));
}

void compare_with(const json& cases, const json& rendered, const char* engine) {
  ASSERT_EQ(rendered.size(), cases.size()) << engine;
  int compared = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(rendered[i].is_string()) << engine << " failed on case " << i << ": " << rendered[i].dump()
                                         << "\nmessages: " << cases[i]["messages"].dump();
    EXPECT_EQ(render_case(cases[i]), rendered[i].get<std::string>())
        << engine << " case " << i << " messages: " << cases[i]["messages"].dump();
    ++compared;
  }
  EXPECT_GE(compared, 40);
}

}  // namespace

TEST(ChatTemplate, ConstantIsTheShippedTemplate) {
  const json cfg = json::parse(read_file(v3_dir() / "tokenizer_config.json"));
  EXPECT_EQ(cfg["chat_template"].get<std::string>(), std::string(kDeepSeekV3ChatTemplate));
  EXPECT_TRUE(is_deepseek_v3_chat_template(cfg["chat_template"].get<std::string>()));
  EXPECT_FALSE(is_deepseek_v3_chat_template("{{ messages }}"));
}

TEST(ChatTemplate, HandCheckedExamples) {
  std::vector<ChatMessage> m = {{"system", "S1"}, {"user", "Hi"}, {"system", "S2"}};
  ChatTemplateOptions gen;
  gen.add_generation_prompt = true;
  EXPECT_EQ(render_chat(m, gen), "<｜begin▁of▁sentence｜>S1\n\nS2<｜User｜>Hi<｜Assistant｜>");
  EXPECT_EQ(render_chat(m), "<｜begin▁of▁sentence｜>S1\n\nS2<｜User｜>Hi");

  ChatMessage calls("assistant", std::nullopt, {ToolCall("f", "{\"a\":1}"), ToolCall("g", "{}")});
  std::vector<ChatMessage> t = {{"user", "q"}, calls, {"tool", "r1"}, {"tool", "r2"}, {"assistant", "ok"}};
  EXPECT_EQ(
      render_chat(t, gen),
      "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function"
      "<｜tool▁sep｜>f\n```json\n{\"a\":1}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<"
      "｜tool▁sep｜>g\n"
      "```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜><｜tool▁outputs▁begin｜>"
      "<｜tool▁output▁begin｜>r1<｜tool▁output▁end｜>\n<｜tool▁output▁begin｜>r2<｜tool▁output▁end｜>"
      "<｜tool▁outputs▁end｜>ok<｜end▁of▁sentence｜><｜Assistant｜>");
  // Ending in a tool output: outputs are closed and no generation prompt follows.
  t.pop_back();
  const std::string s = render_chat(t, gen);
  EXPECT_TRUE(s.ends_with("<｜tool▁output▁end｜><｜tool▁outputs▁end｜>")) << s;

  ChatTemplateOptions custom;
  custom.bos_token = "";
  EXPECT_EQ(render_chat({{"user", "x"}}, custom), "<｜User｜>x");
}

TEST(ChatTemplate, NullContentIsAnError) {
  EXPECT_THROW(render_chat({{"user", std::nullopt}}), dsv3::Error);
  EXPECT_THROW(render_chat({{"system", std::nullopt}}), dsv3::Error);
  EXPECT_THROW(render_chat({{"tool", std::nullopt}}), dsv3::Error);
  EXPECT_NO_THROW(render_chat({{"assistant", std::nullopt}}));  // no calls: renders nothing, as Python Jinja2
}

TEST(ChatTemplate, MessagesFromJson) {
  const json j = json::parse(R"([
    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "f", "arguments": {"x": [1, 2]}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "r"}
  ])");
  const auto m = chat_messages_from_json(j);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(*m[0].content, "ab");
  EXPECT_FALSE(m[1].content.has_value());
  ASSERT_EQ(m[1].tool_calls.size(), 1u);
  EXPECT_EQ(m[1].tool_calls[0].id, "call_1");
  EXPECT_EQ(m[1].tool_calls[0].function.arguments, R"({"x":[1,2]})");
  EXPECT_EQ(m[2].tool_call_id, "call_1");
  EXPECT_EQ(chat_message_from_json(chat_message_to_json(m[1])).tool_calls[0].function.name, "f");

  EXPECT_THROW(chat_messages_from_json(json::object()), dsv3::Error);
  EXPECT_THROW(chat_message_from_json(json{{"content", "x"}}), dsv3::Error);
  EXPECT_THROW(chat_message_from_json(json{{"role", "user"}, {"content", 5}}), dsv3::Error);
  EXPECT_THROW(chat_message_from_json(
                   json{{"role", "assistant"}, {"tool_calls", json::array({{{"type", "function"}}})}}),
               dsv3::Error);
  try {
    chat_messages_from_json(json::array({msg("user", "ok"), json{{"role", 3}}}));
    FAIL() << "expected an error";
  } catch (const dsv3::Error& e) {
    EXPECT_NE(std::string(e.what()).find("messages[1]"), std::string::npos) << e.what();
  }
}

// The key test: byte equality with @huggingface/jinja running the shipped template.
TEST(ChatTemplate, MatchesHuggingFaceJinja) {
  if (!have_command("node")) GTEST_SKIP() << "node not installed";
  // The npm package is installed in the build tree (tests/tokenizer/jinja holds package.json + lock +
  // script).
  const fs::path work = fs::path(DSV3_BINARY_DIR) / "chat-template-jinja";
  fs::create_directories(work);
  for (const char* f : {"package.json", "package-lock.json", "render.mjs"})
    fs::copy_file(jinja_dir() / f, work / f, fs::copy_options::overwrite_existing);
  if (!fs::exists(work / "node_modules" / "@huggingface" / "jinja" / "package.json")) {
    ASSERT_TRUE(have_command("npm")) << "node is installed but npm is not";
    const std::string cmd = "cd '" + work.string() + "' && npm ci --no-audit --no-fund > npm.log 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << "npm ci failed in " << work << " (see npm.log there)";
  }
  TempDir tmp;
  const json cases = reference_cases();
  std::ofstream(tmp.path / "cases.json") << cases.dump();
  const json rendered = run_reference("node '" + (work / "render.mjs").string() + "' '" +
                                          (v3_dir() / "tokenizer_config.json").string() + "' '" +
                                          (tmp.path / "cases.json").string() + "'",
                                      tmp.path / "out.json");
  compare_with(cases, rendered, "@huggingface/jinja");
}

// Same cases through Python Jinja2 set up as transformers does (an independent second engine).
TEST(ChatTemplate, MatchesPythonJinja2) {
  if (!have_command("python3") || std::system("python3 -c 'import jinja2' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3-jinja2 not installed";
  TempDir tmp;
  const json cases = reference_cases();
  std::ofstream(tmp.path / "cases.json") << cases.dump();
  const json rendered = run_reference("python3 '" + (jinja_dir() / "render.py").string() + "' '" +
                                          (v3_dir() / "tokenizer_config.json").string() + "' '" +
                                          (tmp.path / "cases.json").string() + "'",
                                      tmp.path / "out.json");
  compare_with(cases, rendered, "jinja2");
}

TEST(ChatTemplate, ParsePlainContent) {
  auto r = parse_assistant_output("Just text.<｜end▁of▁sentence｜>");
  EXPECT_EQ(r.content, "Just text.");
  EXPECT_TRUE(r.tool_calls.empty());
  EXPECT_TRUE(r.error.empty());
  EXPECT_EQ(parse_assistant_output("").content, "");
}

TEST(ChatTemplate, ParseToolCalls) {
  const std::string text =
      "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
      "{\"city\": "
      "\"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n"
      "{\"tz\": \"CET\", \"fmt\": \"```\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>";
  auto r = parse_assistant_output(text);
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.content, "Let me check.");
  EXPECT_TRUE(r.tool_calls_closed);
  ASSERT_EQ(r.tool_calls.size(), 2u);
  EXPECT_EQ(r.tool_calls[0].type, "function");
  EXPECT_EQ(r.tool_calls[0].function.name, "get_weather");
  EXPECT_EQ(r.tool_calls[0].function.arguments, "{\"city\": \"Paris\"}");
  EXPECT_EQ(r.tool_calls[1].function.name, "get_time");
  EXPECT_EQ(r.tool_calls[1].function.arguments, "{\"tz\": \"CET\", \"fmt\": \"```\"}");
}

TEST(ChatTemplate, ParseRoundTripsRenderedCalls) {
  // What render_chat writes for an assistant tool-call turn is what the model is trained to emit.
  ChatMessage calls("assistant", std::nullopt,
                    {ToolCall("lookup", "{\"q\": \"東京\"}"), ToolCall("sum", "[1, 2]")});
  const std::string prompt = render_chat({{"user", "u"}, calls}, {"", false});
  const std::string reply = prompt.substr(prompt.find(kAssistantToken) + kAssistantToken.size());
  auto r = parse_assistant_output(reply);
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.tool_calls.size(), 2u);
  EXPECT_EQ(r.tool_calls[0].function.name, "lookup");
  EXPECT_EQ(r.tool_calls[0].function.arguments, "{\"q\": \"東京\"}");
  EXPECT_EQ(r.tool_calls[1].function.arguments, "[1, 2]");
  EXPECT_TRUE(r.tool_calls_closed);
}

TEST(ChatTemplate, ParseTruncatedAndMalformed) {
  // Stopped after the first call: the call is kept, the block is not closed.
  auto r = parse_assistant_output(
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{}\n```<"
      "｜tool▁call▁end｜>");
  EXPECT_TRUE(r.error.empty());
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_FALSE(r.tool_calls_closed);
  // Stopped inside a call: error, the raw text stays in content.
  const std::string cut =
      "pre<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"a\":";
  r = parse_assistant_output(cut);
  EXPECT_FALSE(r.error.empty());
  EXPECT_TRUE(r.tool_calls.empty());
  EXPECT_EQ(r.content, cut);
  // Garbage after the block opener.
  r = parse_assistant_output("x<｜tool▁calls▁begin｜>not a call");
  EXPECT_FALSE(r.error.empty());
  EXPECT_EQ(r.content, "x<｜tool▁calls▁begin｜>not a call");
  // Arguments without a fence are taken as is.
  r = parse_assistant_output(
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n{\"b\":2}"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].function.arguments, "{\"b\":2}");
}
