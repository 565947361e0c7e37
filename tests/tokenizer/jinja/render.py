# Second reference renderer for the DeepSeek-V3 chat template: Python Jinja2 configured the way transformers'
# apply_chat_template configures it (sandboxed environment, trim_blocks, lstrip_blocks). Same interface as
# render.mjs: python3 render.py TOKENIZER_CONFIG_JSON CASES_JSON prints a JSON array of rendered strings
# (or {"error": ...} per case). Optional in the tests: skipped where python3-jinja2 is not installed.
import json
import sys

from jinja2.sandbox import ImmutableSandboxedEnvironment


def token_content(t):
    if t is None:
        return ""
    return t if isinstance(t, str) else t["content"]


def main():
    config = json.load(open(sys.argv[1], encoding="utf-8"))
    cases = json.load(open(sys.argv[2], encoding="utf-8"))
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(config["chat_template"])
    out = []
    for case in cases:
        variables = {
            "messages": case["messages"],
            "bos_token": token_content(config.get("bos_token")),
            "eos_token": token_content(config.get("eos_token")),
        }
        if "add_generation_prompt" in case:
            variables["add_generation_prompt"] = case["add_generation_prompt"]
        try:
            out.append(template.render(**variables))
        except Exception as e:  # the C++ side only compares successful renders
            out.append({"error": str(e)})
    sys.stdout.write(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
