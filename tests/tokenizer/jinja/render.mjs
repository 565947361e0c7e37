// Reference renderer for the DeepSeek-V3 chat template, used by tests/tokenizer/test_chat_template.cpp.
//
// The test copies package.json, package-lock.json and this script to BUILD/chat-template-jinja and runs
// `npm ci` there, so nothing is installed into the source tree.
// Usage: node render.mjs TOKENIZER_CONFIG_JSON CASES_JSON
//   TOKENIZER_CONFIG_JSON: a tokenizer_config.json with `chat_template` and `bos_token` (string or AddedToken).
//   CASES_JSON: [{"messages": [...], "add_generation_prompt": bool}, ...]
// Prints a JSON array with one rendered string per case (or {"error": "..."} where the template threw), so the
// C++ side compares bytes without any delimiter games. The template is rendered by the same Jinja engine
// transformers.js uses; nothing here knows the template's logic.
import { readFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";

const [configPath, casesPath] = process.argv.slice(2);
if (!configPath || !casesPath) {
  console.error("usage: node render.mjs TOKENIZER_CONFIG_JSON CASES_JSON");
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, "utf8"));
const cases = JSON.parse(readFileSync(casesPath, "utf8"));
const tokenContent = (t) => (t === null || t === undefined ? "" : typeof t === "string" ? t : t.content);
const template = new Template(config.chat_template);
const bos = tokenContent(config.bos_token);
const eos = tokenContent(config.eos_token);

const out = cases.map((c) => {
  try {
    const vars = { messages: c.messages, bos_token: bos, eos_token: eos };
    if (c.add_generation_prompt !== undefined) vars.add_generation_prompt = c.add_generation_prompt;
    return template.render(vars);
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) };
  }
});
process.stdout.write(JSON.stringify(out));
