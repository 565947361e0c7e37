#!/usr/bin/env bash
# The main job on built-in defaults: install dependencies, build, then
#   1. `dsv3 plan` on the real 671B config (parameters, activated parameters, FLOPs, KV-cache bytes),
#   2. `dsv3 init` a random `small` DeepSeek-V3-architecture model (HF format, BF16 storage),
#   3. `dsv3 forward` over a token sequence, writing logits and MTP logits as .npy.
# Outputs go to runs/quickstart/. (Training replaces step 2 with a real run once it lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
bin=build/release/dsv3
out=runs/quickstart
mkdir -p "$out"
echo "== dsv3 plan --config 671b"
"$bin" plan --config 671b
echo "== dsv3 init --config small --dtype bf16"
"$bin" init --config small --out "$out/small-init" --seed 0 --dtype bf16
tokens=$(seq -s, 1 7 896)
echo "== dsv3 forward (128 tokens)"
start=$(date +%s.%N)
"$bin" forward --model "$out/small-init" --tokens "$tokens" --logits "$out/logits.npy" --mtp-logits "$out/mtp_logits.npy"
awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "forward wall time %.2f s (includes loading the model)\n", b - a }'
echo "wrote $out/logits.npy and $out/mtp_logits.npy"
