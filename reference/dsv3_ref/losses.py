"""DeepSeek-V3 training loss on top of the float64 reference (written from V3_SPEC.md 5.2 and 7,
independently of the C++ code), for autograd gradient fixtures.

    L = CE_main + lam * mean_k CE_k + sum over MAIN-model MoE layers of L_bal

* CE_main: mean over the B*(S-1) predicted positions (position i predicts token i+1).
* CE_k (MTP depth k, logits [B, S-k, V]): row i predicts token i+k+1; mean over its own
  B*(S-k-1) valid rows (Megatron-style; the paper's 1/T differs by (S-k-1)/(S-1)).
* L_bal, per sequence of S tokens and per main-model MoE layer:
      alpha * sum_i f_i P_i,   f_i = N_r/(K_r S) * #{t : i selected for t}   (no gradient)
                               P_i = mean_t s_{i,t} / sum_j s_{j,t}          (s = sigmoid(u W_g^T))
  with the experts the router actually selected (bias-corrected, group-limited), averaged over
  the batch's sequences.
The affinities are taken with forward hooks on each router (`AffinityRecorder`): the hook
recomputes s = sigmoid(u W_g^T) from the router's own input, so the balance-loss gradient flows
into u and W_g exactly as it would through the router's s; model.py is not modified.
"""
import torch
import torch.nn.functional as F


class AffinityRecorder:
    """Forward hooks on every MoE router: records (layer index, s [N, N_r] with autograd, idx [N, K])
    per call, in call order (main layers, then MTP layers)."""

    def __init__(self, model):
        self.records = []
        self.handles = []
        for li, layer in enumerate(model.model.layers):
            if layer.is_moe:
                self.handles.append(layer.mlp.gate.register_forward_hook(self._hook(li)))

    @staticmethod
    def _affinity(gate, u):
        return torch.sigmoid(u @ gate.weight.t())

    def _hook(self, li):
        def fn(module, inputs, output):
            u = inputs[0]
            idx = output[0]
            self.records.append((li, self._affinity(module, u), idx.detach()))
        return fn

    def clear(self):
        self.records = []

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def shifted_ce(logits, tokens, k):
    """Depth-k next-token CE (k = 0: main model). logits [B, S-k, V], tokens [B, S]."""
    B, S = tokens.shape
    n_valid = S - k - 1
    if n_valid <= 0:
        raise ValueError(f"depth {k} has no target with S={S}")
    pred = logits[:, :n_valid, :]
    target = tokens[:, k + 1:]
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="mean")


def seq_balance_loss(s, idx, B, S, cfg, alpha):
    """One MoE layer: s [B*S, N_r] affinities, idx [B*S, K] selected experts -> scalar (mean over B)."""
    N, K = cfg.n_routed_experts, cfg.num_experts_per_tok
    s = s.reshape(B, S, N)
    with torch.no_grad():
        counts = torch.zeros(B, N, dtype=s.dtype)
        counts.scatter_add_(1, idx.reshape(B, S * K), torch.ones(B, S * K, dtype=s.dtype))
        f = counts * (N / (K * S))
    p = (s / s.sum(-1, keepdim=True)).mean(1)                 # [B, N]
    return alpha * (f * p).sum(-1).mean()


def expert_counts(records, n_experts):
    """{layer index: [tokens per expert]} from an AffinityRecorder's records."""
    out = {}
    for li, _, idx in records:
        out[li] = out.get(li, 0) + torch.bincount(idx.reshape(-1), minlength=n_experts)
    return {li: [int(v) for v in c] for li, c in out.items()}


def training_loss(model, tokens, lam, alpha, trace=None):
    """Full forward + loss. tokens [B, S] int64. Returns (total, parts dict of tensors, recorder)."""
    cfg = model.cfg
    B, S = tokens.shape
    rec = AffinityRecorder(model)
    try:
        logits, mtp_logits = model(tokens, trace=trace)
    finally:
        rec.remove()
    main_ce = shifted_ce(logits, tokens, 0)
    mtp_ce = [shifted_ce(ml, tokens, k) for k, ml in enumerate(mtp_logits, start=1)]
    balance = torch.zeros((), dtype=logits.dtype)
    for li, s, idx in rec.records:
        if li < cfg.num_hidden_layers:
            balance = balance + seq_balance_loss(s, idx, B, S, cfg, alpha)
    total = main_ce + balance
    if mtp_ce:
        total = total + lam * torch.stack(mtp_ce).mean()
    parts = {"main_ce": main_ce, "mtp_ce": mtp_ce, "balance": balance, "logits": logits, "mtp_logits": mtp_logits}
    return total, parts, rec
