#!/usr/bin/python3
"""Write the reference fixtures that pin the C++ forward pass (docs/reference.md).

For each config x storage dtype: DIR/<config>-<dtype>/ with an HF model dir (config.json +
model.safetensors), tokens, float64-computed logits / MTP logits / named intermediates (as
float32 .npy), absorbed_check.json and meta.json.  The numbers are computed from the
weights as READ BACK from the written safetensors file (decoded exactly, then float64), so
the fixture pins file -> logits.

    /usr/bin/python3 reference/make_fixtures.py --out fixtures/reference
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dsv3_ref.checks import absorbed_vs_naive, routing_margins  # noqa: E402
from dsv3_ref.config import Config  # noqa: E402
from dsv3_ref.weights import INIT_RECIPE, load_model_dir, master_weights, to_storage, write_model_dir  # noqa: E402

FIXTURE_VERSION = 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABSORBED_TOL = 1e-10


def make_tokens(cfg, seq, seed):
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, cfg.vocab_size, (seq,), generator=g, dtype=torch.int64)


def save(path, arr, dtype=np.float32):
    np.save(path, np.ascontiguousarray(np.asarray(arr, dtype=dtype)))


def run_one(out_dir, cfg_name, cfg, master, dtype, tokens, seed):
    t0 = time.time()
    model_dir = os.path.join(out_dir, "model")
    write_model_dir(model_dir, cfg, to_storage(master, cfg, dtype), dtype)
    cfg2, model = load_model_dir(model_dir)

    S = tokens.shape[0]
    trace = {}
    with torch.no_grad():
        logits, mtp_logits = model(tokens[None], trace=trace)
    save(os.path.join(out_dir, "tokens.npy"), tokens.numpy(), np.int64)
    save(os.path.join(out_dir, "logits.npy"), logits[0].numpy())
    for k, ml in enumerate(mtp_logits, start=1):
        save(os.path.join(out_dir, "mtp_logits.npy" if k == 1 else f"mtp{k}_logits.npy"), ml[0].numpy())
    names = []
    for name, v in trace.items():
        if "._" in name:                                   # internal (routing margins), not a fixture
            continue
        is_idx = name.endswith("topk_idx")
        save(os.path.join(out_dir, name + ".npy"), v[0].numpy(), np.int64 if is_idx else np.float32)
        names.append(name)

    absorbed = absorbed_vs_naive(model, tokens[None])
    absorbed["tolerance"] = ABSORBED_TOL
    absorbed["ok"] = absorbed["max_abs_diff"] < ABSORBED_TOL
    with open(os.path.join(out_dir, "absorbed_check.json"), "w") as f:
        json.dump(absorbed, f, indent=2)

    routing = {}
    for li, layer in enumerate(model.model.layers):
        if layer.is_moe:
            p = f"L{li}." if li < cfg.num_hidden_layers else f"mtp.L{li}."
            if p + "_select_scores" in trace:
                routing[p[:-1]] = routing_margins(trace, layer.mlp.gate, p)
    lg = logits[0]
    meta = {
        "fixture_version": FIXTURE_VERSION,
        "config": cfg_name,
        "dtype": dtype,
        "seed": seed,
        "token_seed": seed + 1,
        "S": S,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "compute_dtype": "float64 (outputs stored float32)",
        "init_recipe": INIT_RECIPE,
        "rope": {
            "kind": model.rope.kind,
            "inv_freq": [float(x) for x in model.rope.inv_freq],
            "ramp": [float(x) for x in model.rope.ramp],
            "cos_sin_scale": model.rope.cos_sin_scale,
            "softmax_scale": model.rope.softmax_scale,
        },
        "logits_stats": {"std": lg.std().item(), "max_abs": lg.abs().max().item()},
        "routing": routing,
        "absorbed_max_abs_diff": absorbed["max_abs_diff"],
        "intermediates": sorted(names),
        "seconds": round(time.time() - t0, 3),
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--configs", default="tiny,tiny_noqlora,small", help="config names in --configs-dir")
    ap.add_argument("--configs-dir", default=os.path.join(REPO, "configs"))
    ap.add_argument("--dtypes", default="f32,bf16,fp8", help="storage dtypes: f32,bf16,fp8")
    ap.add_argument("--seq", type=int, default=17, help="sequence length S")
    ap.add_argument("--seed", type=int, default=1234, help="weight seed (tokens use seed+1)")
    ap.add_argument("--long", default="tiny:f32:64",
                    help="extra fixtures CONFIG:DTYPE:S,... written to <config>-<dtype>-s<S> ('' for none)")
    args = ap.parse_args(argv)

    t_all = time.time()
    configs = [c for c in args.configs.split(",") if c]
    dtypes = [d for d in args.dtypes.split(",") if d]
    jobs = [(c, d, args.seq, f"{c}-{d}") for c in configs for d in dtypes]
    for spec in [s for s in args.long.split(",") if s]:
        c, d, s = spec.split(":")
        jobs.append((c, d, int(s), f"{c}-{d}-s{s}"))

    cache = {}
    failed = False
    for c, d, seq, dirname in jobs:
        if c not in cache:
            cfg = Config.from_json(os.path.join(args.configs_dir, c + ".json"))
            cache[c] = (cfg, master_weights(cfg, args.seed))
        cfg, master = cache[c]
        out_dir = os.path.join(args.out, dirname)
        os.makedirs(out_dir, exist_ok=True)
        meta = run_one(out_dir, c, cfg, master, d, make_tokens(cfg, seq, args.seed), args.seed)
        ok = meta["absorbed_max_abs_diff"] < ABSORBED_TOL
        failed |= not ok
        gaps = [v.get("min_topk_gap", float("inf")) for v in meta["routing"].values()]
        print(f"{dirname:24s} S={seq:3d} {meta['seconds']:6.2f}s  logits std {meta['logits_stats']['std']:.3f} "
              f"max {meta['logits_stats']['max_abs']:.2f}  absorbed diff {meta['absorbed_max_abs_diff']:.2e}"
              f"{'' if ok else ' FAIL'}  min top-k gap {min(gaps) if gaps else float('nan'):.2e}")
    print(f"total {time.time() - t_all:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
