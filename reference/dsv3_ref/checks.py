"""Self-consistency checks of the reference that fixtures record: absorbed MLA over an
incrementally filled latent cache vs the naive forward (spec 4.2, 5.3), and routing margins
(how far each token's expert choice is from a tie, spec 3 precision notes)."""
import torch

from .model import DTYPE


def absorbed_vs_naive(model, tokens, prefill=5):
    """Run the main model as prefill(`prefill` tokens) + 1-token decode steps with the absorbed
    MLA over LatentCaches, and the MTP module(s) the same way (entry i computed once t_{i+k} is
    known); compare with the naive full forward.  tokens [B,S].  Returns a dict of max |diff|."""
    cfg = model.cfg
    S = tokens.shape[1]
    with torch.no_grad():
        ref_trace = {}
        ref_logits, ref_mtp = model(tokens, trace=ref_trace)

        caches = model.new_caches()
        traces, logits = [], []
        bounds = [0, min(prefill, S)] + list(range(min(prefill, S) + 1, S + 1))
        for a, b in zip(bounds[:-1], bounds[1:]):
            tr = {}
            lg, _ = model(tokens[:, a:b], trace=tr, caches=caches, start_pos=a)
            traces.append(tr)
            logits.append(lg)
        logits = torch.cat(logits, 1)
        res = {"chunks": [b - a for a, b in zip(bounds[:-1], bounds[1:])],
               "logits": (logits - ref_logits).abs().max().item()}
        per_layer = {}
        for l in range(cfg.num_hidden_layers):
            for key in ("attn_out", "out"):
                name = f"L{l}.{key}"
                got = torch.cat([t[name] for t in traces], 1)
                per_layer[name] = (got - ref_trace[name]).abs().max().item()
        res["layers"] = per_layer

        # MTP, incrementally: depth-k entry i needs h^{k-1}_i and t_{i+k}.
        h_prev = torch.cat([t["final_norm"] for t in traces], 1)
        mtp = {}
        for k in range(1, cfg.num_nextn_predict_layers + 1):
            n = S - k
            if n <= 0:
                break
            li = model.mtp_layer_index(k)
            layer = model.model.layers[li]
            cache = model.new_caches()[0]
            hs, outs = [], []
            b2 = [0, min(prefill, n)] + list(range(min(prefill, n) + 1, n + 1))
            for a, b in zip(b2[:-1], b2[1:]):
                emb = model.model.embed_tokens(tokens[:, a + k:b + k])
                pos = torch.arange(a, b, dtype=DTYPE)
                _, hn = layer.mtp_forward(h_prev[:, a:b], emb, pos, cache=cache)
                hs.append(hn)
                outs.append(model.lm_head(hn))
            got = torch.cat(outs, 1)
            mtp[f"mtp{k}_logits"] = (got - ref_mtp[k - 1]).abs().max().item()
            h_prev = torch.cat(hs, 1)
        res["mtp"] = mtp
        res["max_abs_diff"] = max([res["logits"]] + list(per_layer.values()) + list(mtp.values()))
    return res


def routing_margins(trace, gate, prefix):
    """For one MoE layer's trace: smallest gap between the K-th and (K+1)-th biased,
    group-masked selection score and between the kept and first dropped group score, over
    tokens; and how many tokens would pick a different expert set without the bias."""
    cfg = gate.cfg
    c = trace[prefix + "_select_scores"]                       # [N, N_r] with -inf for dropped groups
    K = cfg.num_experts_per_tok
    srt = c.sort(dim=-1, descending=True).values
    finite_next = torch.isfinite(srt[:, K]) if srt.shape[1] > K else None
    res = {}
    if finite_next is not None and finite_next.any():
        res["min_topk_gap"] = (srt[:, K - 1] - srt[:, K])[finite_next].min().item()
    gs = trace[prefix + "_group_scores"]
    if gs is not None and cfg.topk_group < cfg.n_group:
        g = gs.sort(dim=-1, descending=True).values
        res["min_group_gap"] = (g[:, cfg.topk_group - 1] - g[:, cfg.topk_group]).min().item()
    logits = trace[prefix + "router_logits"].reshape(-1, cfg.n_routed_experts)
    idx = trace[prefix + "topk_idx"].reshape(-1, K)
    unbiased, _, _ = gate.select(torch.sigmoid(logits), torch.zeros(cfg.n_routed_experts, dtype=DTYPE))
    res["tokens_changed_by_bias"] = int((unbiased != idx).any(-1).sum().item())
    res["tokens"] = int(idx.shape[0])
    return res
