#!/usr/bin/python3
"""interop_logits.py MODEL_DIR --tokens 1,2,3 --out DIR

Checkpoint interoperability: reads a Hugging Face DeepSeek-V3 model directory written by someone else (here:
a `dsv3 train` checkpoint) with this package's own strict loader (dsv3_ref.weights.load_model_dir: every
tensor of DeepseekV3ForCausalLM by its HF name, shapes checked, the MTP embed/head copies checked equal to the
originals, F32/BF16/FP8+weight_scale_inv decoded independently) and runs the float64 reference forward.

Besides the loader, checks what transformers' DeepseekV3Config / from_pretrained read from the directory:
config.json's identity keys, generation_config.json, the tokenizer files when present, and the safetensors
"format": "pt" metadata that transformers requires. Writes DIR/logits.npy [S, V] and DIR/mtp_logits.npy
[S-1, V] (float32) and DIR/interop.json (what was checked), exit status 1 with a message on any mismatch.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dsv3_ref.safetensors_io import read_safetensors  # noqa: E402
from dsv3_ref.weights import load_model_dir, safetensors_files  # noqa: E402


def fail(msg):
    print(f"interop: {msg}", file=sys.stderr)
    sys.exit(1)


def check_directory(model_dir):
    checked = []
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "deepseek_v3":
        fail(f"config.json model_type is {cfg.get('model_type')!r}, transformers needs 'deepseek_v3'")
    if "DeepseekV3ForCausalLM" not in cfg.get("architectures", []):
        fail("config.json architectures lacks DeepseekV3ForCausalLM")
    checked.append("config.json model_type/architectures")
    gen = os.path.join(model_dir, "generation_config.json")
    if not os.path.exists(gen):
        fail("generation_config.json missing")
    with open(gen) as f:
        g = json.load(f)
    for key in ("bos_token_id", "eos_token_id"):
        if g.get(key) != cfg.get(key):
            fail(f"generation_config.json {key} {g.get(key)} != config.json {cfg.get(key)}")
    checked.append("generation_config.json ids")
    files = safetensors_files(model_dir)
    for fn in files:
        _, meta = read_safetensors(os.path.join(model_dir, fn))
        if (meta or {}).get("format") != "pt":
            fail(f"{fn}: __metadata__ format is {(meta or {}).get('format')!r}, transformers needs 'pt'")
    checked.append(f"safetensors format=pt ({len(files)} file(s))")
    if os.path.exists(os.path.join(model_dir, "tokenizer.json")):
        with open(os.path.join(model_dir, "tokenizer.json")) as f:
            tok = json.load(f)
        if tok.get("model", {}).get("type") != "BPE":
            fail("tokenizer.json is not a BPE tokenizer")
        checked.append("tokenizer.json")
    return cfg, checked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    _, checked = check_directory(a.model_dir)
    cfg, model = load_model_dir(a.model_dir)
    checked.append("every DeepseekV3ForCausalLM tensor by HF name and shape, MTP copies equal")
    tokens = torch.tensor([int(t) for t in a.tokens.split(",")], dtype=torch.int64)
    if int(tokens.max()) >= cfg.vocab_size or int(tokens.min()) < 0:
        fail("token id outside the vocabulary")
    with torch.no_grad():
        logits, mtp_logits = model(tokens[None])
    os.makedirs(a.out, exist_ok=True)
    np.save(os.path.join(a.out, "logits.npy"), logits[0].numpy().astype(np.float32))
    if mtp_logits:
        np.save(os.path.join(a.out, "mtp_logits.npy"), mtp_logits[0][0].numpy().astype(np.float32))
    with open(os.path.join(a.out, "interop.json"), "w") as f:
        json.dump({"checked": checked, "seq": int(tokens.shape[0]), "mtp_depths": len(mtp_logits)}, f, indent=2)
    print("interop: " + "; ".join(checked))


if __name__ == "__main__":
    main()
