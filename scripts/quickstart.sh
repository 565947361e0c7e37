#!/usr/bin/env bash
# The main job on built-in defaults: train a small DeepSeek-V3-architecture model from scratch on text from
# Debian packages, then sample from it.
#   1. install the Debian packages and build (release),
#   2. corpus: English prose (bible-kjv, fortunes), Chinese (fortunes-zh, manpages-zh), Python source (the
#      installed standard library) — cleaned, deterministic (scripts/make-corpus.py),
#   3. a byte-level BPE tokenizer trained on it with the V3 special tokens (vocabulary 8192),
#   4. `dsv3 data prepare`: token shards with FIM (rate 0.1, PSM) and a held-out validation split,
#   5. `dsv3 train --config configs/train/quickstart.json`: MLA, MoE with shared + routed experts, group-limited
#      routing, MTP, auxiliary-loss-free balancing; progress line, JSONL metrics, validation loss, checkpoints,
#   6. samples from the final checkpoint (English, Chinese, Python, a FIM completion), a loss plot, and how to
#      serve the checkpoint.
# Everything goes to runs/quickstart/ (override with --out). Re-running resumes an unfinished training run and
# reuses the corpus, tokenizer and shards.
#
#   scripts/quickstart.sh [--corpus DIR]... [--steps N] [--out DIR] [--vocab-size N]
#     --corpus DIR   train on your own text instead (files under DIR, one document per file; repeatable)
#     --steps N      optimizer steps (default: the recipe's)
set -euo pipefail
cd "$(dirname "$0")/.."

out=runs/quickstart
corpora=()
steps=""
vocab=8192
while [[ $# -gt 0 ]]; do
  case "$1" in
    --corpus) corpora+=("$2"); shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --vocab-size) vocab="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "quickstart: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh
scripts/build.sh release
bin=build/release/dsv3
mkdir -p "$out"
stamp() { date +%H:%M:%S; }

if [[ ${#corpora[@]} -eq 0 ]]; then
  echo "== $(stamp) corpus from Debian packages -> $out/corpus"
  /usr/bin/python3 scripts/make-corpus.py "$out/corpus"
  corpora=("$out/corpus/english" "$out/corpus/chinese" "$out/corpus/code")
fi

tok="$out/tokenizer"
if [[ ! -f "$tok/tokenizer.json" ]]; then
  echo "== $(stamp) BPE tokenizer (vocabulary $vocab) -> $tok"
  mapfile -t files < <(find "${corpora[@]}" -type f -not -name '.*' | LC_ALL=C sort)
  "$bin" tokenizer train --vocab-size "$vocab" --input "${files[@]}" --out "$tok.tmp"
  rm -rf "$tok" && mv "$tok.tmp" "$tok"
fi

echo "== $(stamp) data prepare -> $out/data"
"$bin" data prepare --tokenizer "$tok" --input "${corpora[@]}" --out "$out/data" --doc-sep file --quiet

# The model: configs/quickstart.json with the tokenizer's vocabulary size.
vocab_size=$(/usr/bin/python3 -c 'import json,sys
t = json.load(open(sys.argv[1]))
print(max([*t["model"]["vocab"].values(), *(a["id"] for a in t["added_tokens"])]) + 1)' "$tok/tokenizer.json")
/usr/bin/python3 - "$vocab_size" "$out/model_config.json" <<'EOF'
import json, sys
cfg = json.load(open("configs/quickstart.json"))
cfg["vocab_size"] = int(sys.argv[1])
with open(sys.argv[2], "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
EOF

run="$out/train"
args=(train --config configs/train/quickstart.json --model "$out/model_config.json" --tokenizer "$tok"
      --data "$out/data" --out "$run")
[[ -n "$steps" ]] && args+=(--steps "$steps")
[[ -f "$run/checkpoints/latest" ]] && args+=(--resume latest)
echo "== $(stamp) dsv3 ${args[*]}"
"$bin" "${args[@]}"

ckpt="$run/checkpoints/$(cat "$run/checkpoints/latest")"
"$bin" plot "$run" --out "$run/loss.png" > /dev/null

echo
echo "== $(stamp) results"
/usr/bin/python3 - "$run/metrics.jsonl" <<'EOF'
import json, sys
steps, evals = [], []
for line in open(sys.argv[1]):
    j = json.loads(line)
    if j.get("type") == "step":
        steps.append(j)
    elif j.get("type") == "eval":
        evals.append(j)
if evals:
    print(f"validation loss: {evals[0]['val_loss']:.3f} at step {evals[0]['step']} -> "
          f"{evals[-1]['val_loss']:.3f} at step {evals[-1]['step']}")
vio = [(s["step"], s["maxvio_window"]) for s in steps if "maxvio_window" in s]
if vio:
    peak = max(vio[: max(1, len(vio) // 4)], key=lambda v: v[1])
    print(f"MaxVio (mean over MoE layers, running window): peak {peak[1]:.3f} at step {peak[0]} -> "
          f"{vio[-1][1]:.3f} at step {vio[-1][0]} (auxiliary-loss-free bias at work)")
EOF

sample() {  # label, prompt
  echo "--- $1"
  "$bin" generate --model "$ckpt" --prompt "$2" --max-tokens 60 --temperature 0.7 --top-p 0.9 \
    --repetition-penalty 1.1 --seed 1 --output text
  echo
}
sample "English" "And God said unto Moses,"
sample "Chinese" "子曰："
sample "Python" $'def read_config(path):\n    """Read a configuration file."""\n'
sample "FIM (prefix + suffix -> middle)" \
  $'<｜fim▁begin｜>def add(a, b):\n<｜fim▁hole｜>\n\nprint(add(1, 2))\n<｜fim▁end｜>'

cat <<EOF

Checkpoint (Hugging Face DeepSeek-V3 format): $ckpt
Curves: $run/loss.png   metrics: $run/metrics.jsonl   samples during training: $run/samples.jsonl
Serve it (OpenAI-compatible API):
  $bin serve --model $ckpt --port 8080
  curl -s localhost:8080/v1/completions -H 'Content-Type: application/json' \\
       -d '{"prompt": "And the LORD said", "max_tokens": 40}'
Chat in the terminal:   $bin chat --model $ckpt
Generate:               $bin generate --model $ckpt --prompt "In the beginning"
EOF
