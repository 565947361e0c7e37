#!/usr/bin/python3
"""Training-step throughput of the PyTorch reference model in float32 next to `dsv3 train`, in one run.

The PyTorch side is the reference model of dsv3_ref/ (written from V3_SPEC.md, the one the gradient tests pin
the C++ code to) built in float32 instead of float64, with the same training step as `dsv3 train`: forward
with the full loss (CE + λ·MTP CE + sequence-wise balance loss, dsv3_ref/losses.py), autograd backward,
global-norm clipping at 1.0 and torch.optim.AdamW (β 0.9/0.95, weight decay 0.1 on matrices, foreach) — torch's
own CPU kernels (MKL/oneDNN GEMMs) with `--threads` intra-op threads and OMP_WAIT_POLICY=passive (spinning
OpenMP waiters made torch ~5x slower on the shared machine). The dsv3 side runs
`dsv3 train --model CONFIG --batch B --seq S --steps N --precision P` on the synthetic stream and reads the
per-step tokens/s from metrics.jsonl. Rounds alternate between the two so that both see the same machine load.

    /usr/bin/python3 reference/train_bench.py --dsv3 build/release/dsv3 --config configs/small.json \\
        --batch 8 --seq 256 --steps 6 --rounds 3 --precision bf16 --precision f32

Reported: median tokens/s over every timed step (the first `--warmup` steps of each run are dropped), model
FLOPs per token (6 × activated matmul parameters of the main model + 3 × causal attention; the formula of
`dsv3 plan`, MTP excluded) and the achieved GFLOP/s.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# libgomp reads the wait policy when torch loads: spinning waiters cost several-fold on a shared machine
# (BENCHMARKS.md "OpenMP waiting policy"), for torch as for dsv3.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dsv3_ref.model as ref_model  # noqa: E402
import dsv3_ref.weights as ref_weights  # noqa: E402
from dsv3_ref.config import Config  # noqa: E402
from dsv3_ref.losses import training_loss  # noqa: E402


def build_f32_model(cfg, seed):
    ref_model.DTYPE = torch.float32       # parameters, positions and RoPE tables in float32
    ref_weights.DTYPE = torch.float32
    model = ref_weights.build_model(cfg, ref_weights.master_weights(cfg, seed))
    for p in model.parameters():
        assert p.dtype == torch.float32, p.dtype
    return model


def train_flops_per_token(cfg, S):
    """6 × activated matmul parameters (main model, no embedding; K of N_r routed experts) + 3 × attention."""
    L, K, N = cfg.num_hidden_layers, cfg.num_experts_per_tok, cfg.n_routed_experts
    m = build_shapes(cfg)
    active = 0
    for name, shape in m:
        if len(shape) != 2 or name == "model.embed_tokens.weight":
            continue
        if name.startswith("model.layers."):
            layer = int(name.split(".")[2])
            if layer >= L:
                continue
        n = shape[0] * shape[1]
        if ".mlp.experts." in name:
            n = n * K / N
        active += n
    H, dqk, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim
    attn = 2.0 * H * (dqk + dv) * (S / 2.0) * L
    return 3.0 * (2.0 * active + attn)


def build_shapes(cfg):
    saved = ref_model.DTYPE
    ref_model.DTYPE = torch.float32
    try:
        model = ref_model.DeepseekV3(cfg)
    finally:
        ref_model.DTYPE = saved
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def torch_run(cfg, B, S, steps, warmup, seed):
    model = build_f32_model(cfg, seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    g = torch.Generator().manual_seed(seed)
    rates, losses = [], []
    for step in range(steps):
        tokens = torch.randint(0, cfg.vocab_size, (B, S), generator=g, dtype=torch.int64)
        t0 = time.perf_counter()
        total, _, _ = training_loss(model, tokens, 0.3, 1e-4)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(float(total))
        if step >= warmup:
            rates.append(B * S / dt)
    return rates, losses


def dsv3_run(binary, config, B, S, steps, warmup, precision, threads):
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        env.setdefault("OMP_WAIT_POLICY", "passive")
        cmd = [binary, "train", "--model", config, "--batch", str(B), "--seq", str(S), "--steps", str(steps),
               "--precision", precision, "--eval-every", "0", "--checkpoint-every", "0", "--quiet",
               "--out", os.path.join(out, "run")]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        rates = []
        with open(os.path.join(out, "run", "metrics.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if r.get("type") == "step" and r["step"] > warmup:
                    rates.append(r["tokens_per_s"])
        return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/small.json")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6, help="steps per run (the first --warmup are not timed)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--dsv3", default="", help="dsv3 binary; empty: PyTorch only")
    ap.add_argument("--precision", action="append", default=[], help="dsv3 --precision (repeatable)")
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args()
    if args.steps <= args.warmup:
        ap.error("--steps must exceed --warmup")
    torch.set_num_threads(args.threads)
    cfg = Config.from_json(args.config)
    fpt = train_flops_per_token(cfg, args.seq)
    precisions = args.precision or (["bf16"] if args.dsv3 else [])
    results = {"torch": []}
    results.update({f"dsv3-{p}": [] for p in precisions})
    for r in range(args.rounds):
        if not args.skip_torch:
            rates, _ = torch_run(cfg, args.batch, args.seq, args.steps, args.warmup, args.seed)
            results["torch"] += rates
            print(f"round {r}: torch f32 {statistics.median(rates):.0f} tok/s", flush=True)
        for p in precisions:
            rates = dsv3_run(args.dsv3, args.config, args.batch, args.seq, args.steps, args.warmup, p, args.threads)
            results[f"dsv3-{p}"] += rates
            print(f"round {r}: dsv3 {p} {statistics.median(rates):.0f} tok/s", flush=True)
    print(f"\nconfig {args.config}, B={args.batch}, S={args.seq}, {args.threads} threads, "
          f"{fpt / 1e9:.4f} train GFLOP/token; medians over {args.rounds} rounds x {args.steps - args.warmup} steps")
    base = statistics.median(results["torch"]) if results["torch"] else None
    summary = {}
    for name, rates in results.items():
        if not rates:
            continue
        med = statistics.median(rates)
        gf = med * fpt / 1e9
        ratio = f"{med / base:.2f}x torch" if base else ""
        print(f"  {name:12s} {med:9.0f} tok/s  {gf:7.1f} GFLOP/s  {ratio}")
        summary[name] = {"tokens_per_s": med, "gflops": gf, "samples": len(rates)}
    print(json.dumps({"flops_per_token": fpt, "results": summary}))


if __name__ == "__main__":
    main()
