// DeepSeek-V3 chat template, transcribed by hand from the shipped Jinja (see chat_template.h and
// docs/chat_template.md), and the reverse parse of the model's tool-call output.
#include "tokenizer/chat_template.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "dsv3/error.h"

namespace dsv3::tok {

// Verbatim copy of tokenizer_config.json["chat_template"] of DeepSeek-V3 (split at tag boundaries for line
// length only; the pieces concatenate to the original). test_chat_template checks it against the file.
static constexpr char kTemplateText[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', "
    "is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}"
    "{% set ns.is_first_sp = false %}{%- else %}"
    "{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}"
    "{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}"
    "{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}"
    "{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}"
    "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + "
    "tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + "
    "'<｜tool▁call▁end｜>'}}"
    "{%- set ns.is_first = true -%}{%- else %}"
    "{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + "
    "'```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}"
    "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"
    "{%- set ns.is_tool = false -%}{%- else %}"
    "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- set ns.is_output_first = false %}{%- else %}"
    "{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}"
    "{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}";
const std::string_view kDeepSeekV3ChatTemplate{kTemplateText, sizeof(kTemplateText) - 1};

bool is_deepseek_v3_chat_template(std::string_view chat_template) {
  return chat_template == kDeepSeekV3ChatTemplate;
}

namespace {

const std::string& content_of(const ChatMessage& m, size_t index) {
  DSV3_CHECK(m.content.has_value(), "chat message ", index, " (role \"", m.role,
             "\") has null content; only an assistant message with tool_calls may");
  return *m.content;
}

// One tool call as the template writes it, from `<｜tool▁call▁begin｜>` to `<｜tool▁call▁end｜>`.
void append_tool_call(std::string& out, const ToolCall& call) {
  out += kToolCallBegin;
  out += call.type;
  out += kToolSep;
  out += call.function.name;
  out += "\n```json\n";
  out += call.function.arguments;
  out += "\n```";
  out += kToolCallEnd;
}

}  // namespace

// The state variables and branches below mirror the template's `ns` namespace and its if-blocks one to one;
// the comments quote the template condition each branch implements.
std::string render_chat(const std::vector<ChatMessage>& messages, const ChatTemplateOptions& options) {
  // First loop: every system message, in order, joined with "\n\n" (ns.system_prompt, ns.is_first_sp).
  std::string system_prompt;
  bool is_first_sp = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "system") continue;
    if (!is_first_sp) system_prompt += "\n\n";
    system_prompt += content_of(messages[i], i);
    is_first_sp = false;
  }

  std::string out = options.bos_token;
  out += system_prompt;
  bool is_first = false;        // ns.is_first: a tool call has been written (never reset)
  bool is_tool = false;         // ns.is_tool: the last rendered thing was a tool output
  bool is_output_first = true;  // ns.is_output_first: no tool output written yet (never reset)
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      is_tool = false;
      out += kUserToken;
      out += content_of(m, i);
    } else if (m.role == "assistant" && !m.content) {
      // {% if message['role'] == 'assistant' and message['content'] is none %}
      is_tool = false;
      for (const ToolCall& call : m.tool_calls) {
        if (!is_first) {
          out += kAssistantToken;
          out += kToolCallsBegin;
          append_tool_call(out, call);
          is_first = true;
        } else {
          out += "\n";
          append_tool_call(out, call);
          out += kToolCallsEnd;
          out += kEosToken;
        }
      }
    } else if (m.role == "assistant") {
      // {% if message['role'] == 'assistant' and message['content'] is not none %}: tool_calls ignored.
      if (is_tool) {
        out += kToolOutputsEnd;
        out += *m.content;
        out += kEosToken;
        is_tool = false;
      } else {
        out += kAssistantToken;
        out += *m.content;
        out += kEosToken;
      }
    } else if (m.role == "tool") {
      is_tool = true;
      if (is_output_first) {
        out += kToolOutputsBegin;
        out += kToolOutputBegin;
        out += content_of(m, i);
        out += kToolOutputEnd;
        is_output_first = false;
      } else {
        out += "\n";
        out += kToolOutputBegin;
        out += content_of(m, i);
        out += kToolOutputEnd;
      }
    }
    // "system" was handled by the first loop; any other role renders nothing.
  }
  if (is_tool) out += kToolOutputsEnd;
  if (options.add_generation_prompt && !is_tool) out += kAssistantToken;
  return out;
}

// ---- JSON <-> ChatMessage -------------------------------------------------------------------------------

namespace {

std::string string_field(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  DSV3_CHECK(it->is_string(), where, ".", key, " must be a string, got ", it->type_name());
  return it->get<std::string>();
}

}  // namespace

ChatMessage chat_message_from_json(const nlohmann::json& j) {
  DSV3_CHECK(j.is_object(), "chat message must be a JSON object, got ", j.type_name());
  ChatMessage m;
  auto role = j.find("role");
  DSV3_CHECK(role != j.end() && role->is_string(), "chat message needs a string \"role\"");
  m.role = role->get<std::string>();
  auto content = j.find("content");
  if (content != j.end() && !content->is_null()) {
    if (content->is_string()) {
      m.content = content->get<std::string>();
    } else if (content->is_array()) {
      std::string joined;
      for (const auto& part : *content) {
        DSV3_CHECK(part.is_object() && part.value("type", "") == "text" && part.contains("text") &&
                       part["text"].is_string(),
                   "chat message content parts must be {\"type\":\"text\",\"text\":...}");
        joined += part["text"].get<std::string>();
      }
      m.content = std::move(joined);
    } else {
      DSV3_FAIL("chat message content must be a string, an array of text parts or null, got ",
                content->type_name());
    }
  }
  m.tool_call_id = string_field(j, "tool_call_id", "message");
  m.name = string_field(j, "name", "message");
  auto calls = j.find("tool_calls");
  if (calls != j.end() && !calls->is_null()) {
    DSV3_CHECK(calls->is_array(), "message.tool_calls must be an array");
    for (const auto& c : *calls) {
      DSV3_CHECK(c.is_object(), "message.tool_calls[] must be objects");
      ToolCall call;
      call.id = string_field(c, "id", "tool_call");
      if (c.contains("type")) call.type = string_field(c, "type", "tool_call");
      auto fn = c.find("function");
      DSV3_CHECK(fn != c.end() && fn->is_object(), "tool_call.function must be an object");
      auto name = fn->find("name");
      DSV3_CHECK(name != fn->end() && name->is_string(), "tool_call.function.name must be a string");
      call.function.name = name->get<std::string>();
      auto args = fn->find("arguments");
      if (args != fn->end())
        call.function.arguments = args->is_string() ? args->get<std::string>() : args->dump();
      m.tool_calls.push_back(std::move(call));
    }
  }
  return m;
}

std::vector<ChatMessage> chat_messages_from_json(const nlohmann::json& j) {
  DSV3_CHECK(j.is_array(), "messages must be a JSON array, got ", j.type_name());
  std::vector<ChatMessage> out;
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    try {
      out.push_back(chat_message_from_json(j[i]));
    } catch (const Error& e) {
      DSV3_FAIL("messages[", i, "]: ", e.what());
    }
  }
  return out;
}

nlohmann::json chat_message_to_json(const ChatMessage& m) {
  nlohmann::json j = {{"role", m.role}};
  j["content"] = m.content ? nlohmann::json(*m.content) : nlohmann::json(nullptr);
  if (!m.tool_calls.empty()) {
    nlohmann::json calls = nlohmann::json::array();
    for (const ToolCall& c : m.tool_calls) {
      nlohmann::json jc = {{"type", c.type},
                           {"function", {{"name", c.function.name}, {"arguments", c.function.arguments}}}};
      if (!c.id.empty()) jc["id"] = c.id;
      calls.push_back(std::move(jc));
    }
    j["tool_calls"] = std::move(calls);
  }
  if (!m.tool_call_id.empty()) j["tool_call_id"] = m.tool_call_id;
  if (!m.name.empty()) j["name"] = m.name;
  return j;
}

// ---- model output -> content + tool calls ---------------------------------------------------------------

namespace {

bool starts_with_at(std::string_view s, size_t pos, std::string_view prefix) {
  return pos <= s.size() && s.substr(pos, prefix.size()) == prefix;
}

size_t skip_space(std::string_view s, size_t pos) {
  while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t')) ++pos;
  return pos;
}

std::string_view trim(std::string_view s) {
  size_t b = skip_space(s, 0);
  size_t e = s.size();
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\n' || s[e - 1] == '\r' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

// Parses one `<｜tool▁call▁begin｜>TYPE<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>` at `pos`
// (which points just past the begin marker). Returns the position after the end marker, or npos with `error`.
size_t parse_one_call(std::string_view s, size_t pos, ToolCall& call, std::string& error) {
  size_t sep = s.find(kToolSep, pos);
  size_t end = s.find(kToolCallEnd, pos);
  if (end == std::string_view::npos) {
    error = "tool call without <｜tool▁call▁end｜>";
    return std::string_view::npos;
  }
  if (sep == std::string_view::npos || sep > end) {
    error = "tool call without <｜tool▁sep｜>";
    return std::string_view::npos;
  }
  call.type = std::string(trim(s.substr(pos, sep - pos)));
  std::string_view body = s.substr(sep + kToolSep.size(), end - sep - kToolSep.size());
  size_t nl = body.find('\n');
  call.function.name = std::string(trim(body.substr(0, nl)));
  if (call.function.name.empty()) {
    error = "tool call without a function name";
    return std::string_view::npos;
  }
  std::string_view args = nl == std::string_view::npos ? std::string_view{} : body.substr(nl + 1);
  // Arguments are fenced as ```json ... ```; take what is inside the fence, else the whole rest.
  std::string_view t = trim(args);
  if (t.substr(0, 3) == "```") {
    size_t line_end = t.find('\n');
    size_t close = t.rfind("```");
    if (line_end != std::string_view::npos && close != std::string_view::npos && close > line_end)
      t = trim(t.substr(line_end + 1, close - line_end - 1));
    else if (line_end == std::string_view::npos)
      t = {};
  }
  call.function.arguments = std::string(t);
  return end + kToolCallEnd.size();
}

}  // namespace

ParsedAssistantOutput parse_assistant_output(std::string_view text) {
  ParsedAssistantOutput r;
  if (text.size() >= kEosToken.size() && text.substr(text.size() - kEosToken.size()) == kEosToken)
    text.remove_suffix(kEosToken.size());
  size_t block = text.find(kToolCallsBegin);
  if (block == std::string_view::npos) {
    r.content = std::string(text);
    return r;
  }
  r.content = std::string(text.substr(0, block));
  size_t pos = block + kToolCallsBegin.size();
  while (true) {
    pos = skip_space(text, pos);
    if (pos == text.size()) break;  // generation stopped before <｜tool▁calls▁end｜>
    if (starts_with_at(text, pos, kToolCallsEnd)) {
      r.tool_calls_closed = true;
      pos += kToolCallsEnd.size();
      break;
    }
    if (!starts_with_at(text, pos, kToolCallBegin)) {
      r.error = "expected <｜tool▁call▁begin｜> or <｜tool▁calls▁end｜> at byte " + std::to_string(pos);
      break;
    }
    ToolCall call;
    size_t next = parse_one_call(text, pos + kToolCallBegin.size(), call, r.error);
    if (next == std::string_view::npos) break;
    r.tool_calls.push_back(std::move(call));
    pos = next;
  }
  if (!r.error.empty()) {
    // Keep everything from the first unparsed byte on, so nothing the model wrote is lost.
    r.content += text.substr(r.tool_calls.empty() ? block : pos);
    return r;
  }
  std::string_view tail = text.substr(std::min(pos, text.size()));
  if (!trim(tail).empty()) r.content += tail;
  return r;
}

}  // namespace dsv3::tok
