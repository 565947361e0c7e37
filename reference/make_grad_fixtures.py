#!/usr/bin/python3
"""Write the reference gradient fixtures that pin the C++ training forward/backward (docs/training.md).

For each config: DIR/<config>/ with an HF model dir (F32 storage, the weights of make_fixtures.py:
same recipe and seed), a token batch [B, S], the loss parts of dsv3_ref/losses.py computed by the
float64 reference, and the autograd gradient of that loss w.r.t. every parameter:

    model/config.json, model/model.safetensors   the weights (F32)
    tokens.npy            int64 [B, S]
    loss.json             {"loss", "main_ce", "mtp_ce": [...], "balance", "lambda", "alpha"}
    grads.safetensors     F32 gradient of every parameter, HF names (no e_score_correction_bias)
    expert_counts.json    {layer index: tokens per expert} for every MoE layer (MTP included)
    meta.json             B, S, seeds, routing margins per MoE layer, gradient scales

    /usr/bin/python3 reference/make_grad_fixtures.py --out fixtures/grad
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dsv3_ref.checks import routing_margins  # noqa: E402
from dsv3_ref.config import Config  # noqa: E402
from dsv3_ref.losses import expert_counts, training_loss  # noqa: E402
from dsv3_ref.weights import load_model_dir, master_weights, to_storage, write_model_dir  # noqa: E402

FIXTURE_VERSION = 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_TOPK_GAP = 1e-4   # a smaller K-th/(K+1)-th margin could flip in f32: refuse the fixture


def write_grads(path, named):
    from dsv3_ref.safetensors_io import write_safetensors
    tensors = {name: ("F32", g.astype(np.float32)) for name, g in named.items()}
    write_safetensors(path, tensors, {"format": "pt"})


def run_one(out_dir, cfg_name, cfg, seed, token_seed, B, S, lam, alpha):
    t0 = time.time()
    model_dir = os.path.join(out_dir, "model")
    write_model_dir(model_dir, cfg, to_storage(master_weights(cfg, seed), cfg, "f32"), "f32")
    _, model = load_model_dir(model_dir)
    g = torch.Generator().manual_seed(token_seed)
    tokens = torch.randint(0, cfg.vocab_size, (B, S), generator=g, dtype=torch.int64)

    trace = {}
    total, parts, rec = training_loss(model, tokens, lam, alpha, trace=trace)
    model.zero_grad(set_to_none=True)
    total.backward()

    grads = {}
    for name, p in model.named_parameters():
        grads[name] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().numpy()
    write_grads(os.path.join(out_dir, "grads.safetensors"), grads)
    np.save(os.path.join(out_dir, "tokens.npy"), tokens.numpy().astype(np.int64))
    loss = {
        "loss": total.item(),
        "main_ce": parts["main_ce"].item(),
        "mtp_ce": [v.item() for v in parts["mtp_ce"]],
        "balance": parts["balance"].item(),
        "lambda": lam,
        "alpha": alpha,
    }
    with open(os.path.join(out_dir, "loss.json"), "w") as f:
        json.dump(loss, f, indent=2)
    counts = expert_counts(rec.records, cfg.n_routed_experts)
    with open(os.path.join(out_dir, "expert_counts.json"), "w") as f:
        json.dump({str(k): v for k, v in sorted(counts.items())}, f, indent=2)

    routing = {}
    for li, layer in enumerate(model.model.layers):
        if layer.is_moe:
            p = f"L{li}." if li < cfg.num_hidden_layers else f"mtp.L{li}."
            routing[p[:-1]] = routing_margins(trace, layer.mlp.gate, p)
    gaps = [v["min_topk_gap"] for v in routing.values() if "min_topk_gap" in v]
    gaps += [v["min_group_gap"] for v in routing.values() if "min_group_gap" in v]
    meta = {
        "fixture_version": FIXTURE_VERSION,
        "config": cfg_name,
        "storage": "f32",
        "seed": seed,
        "token_seed": token_seed,
        "B": B,
        "S": S,
        "lambda": lam,
        "alpha": alpha,
        "torch_version": torch.__version__,
        "compute_dtype": "float64 (gradients stored float32)",
        "routing": routing,
        "min_routing_gap": min(gaps) if gaps else None,
        "grad_max_abs": {k: float(np.abs(v).max()) for k, v in grads.items()},
        "seconds": round(time.time() - t0, 3),
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta, loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--configs", default="tiny:12,tiny_noqlora:12,small:12",
                    help="CONFIG:S,... (configs from --configs-dir, S tokens per sequence)")
    ap.add_argument("--configs-dir", default=os.path.join(REPO, "configs"))
    ap.add_argument("--batch", type=int, default=2, help="sequences B")
    ap.add_argument("--seed", type=int, default=1234, help="weight seed (as make_fixtures.py)")
    ap.add_argument("--token-seed", type=int, default=1240,
                    help="token batch seed (1236 = seed+2 gave a 8.9e-5 top-k margin in small: too close to a tie)")
    ap.add_argument("--lambda", dest="lam", type=float, default=0.3, help="MTP loss weight")
    ap.add_argument("--alpha", type=float, default=0.1,
                    help="balance loss weight (large, so its gradient is visible next to the CE's)")
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    t_all = time.time()
    failed = False
    for spec in [s for s in args.configs.split(",") if s]:
        name, seq = spec.split(":")
        cfg = Config.from_json(os.path.join(args.configs_dir, name + ".json"))
        out_dir = os.path.join(args.out, name)
        os.makedirs(out_dir, exist_ok=True)
        meta, loss = run_one(out_dir, name, cfg, args.seed, args.token_seed, args.batch, int(seq), args.lam,
                             args.alpha)
        gap = meta["min_routing_gap"]
        ok = gap is None or gap > MIN_TOPK_GAP
        failed |= not ok
        print(f"{name:14s} B={args.batch} S={seq:>3s} {meta['seconds']:6.2f}s  loss {loss['loss']:.6f} "
              f"(main {loss['main_ce']:.4f}, mtp {loss['mtp_ce']}, balance {loss['balance']:.5f})  "
              f"min routing gap {gap if gap is not None else float('nan'):.2e}{'' if ok else ' TOO SMALL'}")
    print(f"total {time.time() - t_all:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
