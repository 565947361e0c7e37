// DeepSeek-V3 chat formatting: conversation -> prompt string (render_chat) and model output -> content + tool
// calls (parse_assistant_output).
//
// render_chat reproduces, byte for byte, the Jinja `chat_template` shipped in DeepSeek-V3's
// tokenizer_config.json (kept verbatim in kDeepSeekV3ChatTemplate). It is a hand-written transcription of
// that one template, not a Jinja engine; docs/chat_template.md says why and lists the template's quirks,
// which are kept on purpose (the first tool call of a conversation differs from later ones,
// `<｜tool▁calls▁end｜>` and EOS follow only the later ones, tool-output state spans messages, tool_calls are
// ignored when content is set). tests/tokenizer/test_chat_template.cpp pins it to a real Jinja renderer on
// the shipped template.
//
// Not here: tokenization (the prompt string goes through Tokenizer::encode without add_bos, since the BOS
// token is part of the rendered string), JSON request validation beyond message shape (the server's job).
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsv3::tok {

// Token strings the template writes (U+FF5C fullwidth bar, U+2581 lower one-eighth block).
inline constexpr std::string_view kBosToken = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEosToken = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kPadToken = "<｜▁pad▁｜>";
inline constexpr std::string_view kUserToken = "<｜User｜>";
inline constexpr std::string_view kAssistantToken = "<｜Assistant｜>";
inline constexpr std::string_view kToolCallsBegin = "<｜tool▁calls▁begin｜>";
inline constexpr std::string_view kToolCallsEnd = "<｜tool▁calls▁end｜>";
inline constexpr std::string_view kToolCallBegin = "<｜tool▁call▁begin｜>";
inline constexpr std::string_view kToolCallEnd = "<｜tool▁call▁end｜>";
inline constexpr std::string_view kToolOutputsBegin = "<｜tool▁outputs▁begin｜>";
inline constexpr std::string_view kToolOutputsEnd = "<｜tool▁outputs▁end｜>";
inline constexpr std::string_view kToolOutputBegin = "<｜tool▁output▁begin｜>";
inline constexpr std::string_view kToolOutputEnd = "<｜tool▁output▁end｜>";
inline constexpr std::string_view kToolSep = "<｜tool▁sep｜>";

// The `chat_template` string of DeepSeek-V3's tokenizer_config.json, verbatim. render_chat implements exactly
// this template; the BPE trainer writes it into the tokenizer_config.json it produces.
extern const std::string_view kDeepSeekV3ChatTemplate;

struct ToolCallFunction {
  std::string name;
  std::string arguments;  // JSON text, written into the prompt as is
};

struct ToolCall {
  std::string id;  // OpenAI's call id; the V3 template does not render it
  std::string type = "function";
  ToolCallFunction function;

  ToolCall() = default;
  ToolCall(std::string name, std::string arguments, std::string type_ = "function", std::string id_ = "")
      : id(std::move(id_)), type(std::move(type_)), function{std::move(name), std::move(arguments)} {}
};

// One message in OpenAI chat form. role: "system" | "user" | "assistant" | "tool"; other roles are ignored by
// the template. content: nullopt is JSON null (only meaningful for an assistant message carrying tool_calls).
struct ChatMessage {
  std::string role;
  std::optional<std::string> content;
  std::vector<ToolCall> tool_calls;  // read only when role == "assistant" and content is null
  std::string tool_call_id;          // tool messages; not rendered by the V3 template
  std::string name;                  // not rendered by the V3 template

  ChatMessage() = default;
  ChatMessage(std::string role_, std::optional<std::string> content_, std::vector<ToolCall> tool_calls_ = {})
      : role(std::move(role_)), content(std::move(content_)), tool_calls(std::move(tool_calls_)) {}
};

struct ChatTemplateOptions {
  std::string bos_token = std::string(kBosToken);
  bool add_generation_prompt = false;  // end with `<｜Assistant｜>` so the model writes the next reply
};

// Renders `messages` exactly as the V3 Jinja template does. Throws dsv3::Error where the template would fail:
// a system/user/tool message, or an assistant message without tool_calls, whose content is null.
std::string render_chat(const std::vector<ChatMessage>& messages, const ChatTemplateOptions& options = {});

// True when `chat_template` (e.g. Tokenizer::chat_template()) is the template render_chat implements.
bool is_deepseek_v3_chat_template(std::string_view chat_template);

// OpenAI-style JSON -> ChatMessage. content: string, null/absent (-> nullopt) or an array of
// {"type":"text","text":...} parts (joined without separator). tool_calls[i].function.arguments: a string, or
// any other JSON value (serialized compactly). Throws dsv3::Error on a wrong shape, naming the field.
ChatMessage chat_message_from_json(const nlohmann::json& j);
std::vector<ChatMessage> chat_messages_from_json(const nlohmann::json& j);  // j: array of messages
nlohmann::json chat_message_to_json(const ChatMessage& m);

// Model output split into the reply text and its tool calls, in V3's format:
//   CONTENT<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>TYPE<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
//   [\n<｜tool▁call▁begin｜>...<｜tool▁call▁end｜>]...<｜tool▁calls▁end｜>[<｜end▁of▁sentence｜>]
struct ParsedAssistantOutput {
  std::string content;               // text before the tool-call block (plus any text after it)
  std::vector<ToolCall> tool_calls;  // id left empty; the server assigns ids
  bool tool_calls_closed = false;  // `<｜tool▁calls▁end｜>` was seen (false: generation stopped inside it)
  std::string error;               // non-empty when the block was malformed; content then keeps the raw block
};

// Never throws on model text: a malformed tool-call block is reported in `error` and left in `content`.
// A trailing `<｜end▁of▁sentence｜>` is dropped. Calls that parsed before a truncation are kept.
ParsedAssistantOutput parse_assistant_output(std::string_view text);

}  // namespace dsv3::tok
