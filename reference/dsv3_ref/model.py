"""Independent PyTorch reference of the DeepSeek-V3 forward pass (float64), written from V3_SPEC.md.

What it does: embedding -> L pre-norm decoder layers (MLA attention with decoupled,
interleaved-pair RoPE + YaRN; dense SwiGLU for l < first_k_dense_replace, DeepSeekMoE
with sigmoid router, bias-corrected group-limited top-k after that) -> final RMSNorm ->
lm_head, then the MTP modules (spec 5.1).  MLA exists in two forms: the naive/training
form (spec 4.1, materialised per-head K/V) and the absorbed form over a latent cache
(spec 4.2, caches only c_t and k^R_t); `forward(..., caches=...)` uses the latter.
What it doesn't: low-precision compute (weights are whatever the checkpoint stores,
decoded exactly, then everything is float64), batching tricks, training state (bias
update, balance loss) -- those come later.
Invariants: every parameter/buffer is named by its HF checkpoint name
(`model.layers.3.mlp.experts.5.up_proj.weight`, ...), so `state_dict()` keys == HF names
and autograd over the same weights is direct.  The MTP module k is `model.layers[L+k-1]`;
the checkpoint's copies `model.layers.{L}.embed_tokens.weight` and
`model.layers.{L}.shared_head.head.weight` are NOT parameters here (the MTP shares the main
embedding and head, spec 5.1); the checkpoint loader checks they equal the originals.

Shapes: B batch, S sequence, D hidden, H heads, d_n / d_r / d_v head dims, d_c kv latent,
N_r routed experts, K experts per token.  Linear weights are [out, in], y = x W^T.
"""
import torch
import torch.nn as nn

from .config import Config, Rope

DTYPE = torch.float64


def _put(trace, name, value):
    if trace is not None:
        trace[name] = value.detach()


class Linear(nn.Module):
    """y = x W^T, no bias. weight [out, in]."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_out, n_in, dtype=DTYPE))

    def forward(self, x):
        return x @ self.weight.t()


class RMSNorm(nn.Module):
    """w * x / sqrt(mean(x^2) + eps)  (spec 2.1). weight [dim]."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=DTYPE))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def silu(z):
    return z * torch.sigmoid(z)


def apply_rope(x, positions, rope):
    """Rotate ADJACENT pairs (2j, 2j+1) by angle pos*f'_j (spec 4.4), scaled by the YaRN
    cos/sin multiplier.  x [..., S, (heads,) d_r] with the sequence axis given by
    positions' broadcast: x is [B, S, d_r] or [B, S, H, d_r]; positions [S] (float64)."""
    inv_freq = torch.as_tensor(rope.inv_freq, dtype=DTYPE)
    ang = positions.to(DTYPE)[:, None] * inv_freq[None, :]              # [S, d_r/2]
    cos = torch.cos(ang) * rope.cos_sin_scale
    sin = torch.sin(ang) * rope.cos_sin_scale
    if x.dim() == 4:                                                    # [B, S, H, d_r]
        cos, sin = cos[:, None, :], sin[:, None, :]
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack((y0, y1), dim=-1).reshape(x.shape)


class LatentCache:
    """Per-layer MLA cache of the absorbed form: normalised c_t [B, T, d_c], roped k^R_t
    [B, T, d_r] and their positions [T]."""

    def __init__(self):
        self.c = None
        self.k_pe = None
        self.pos = None

    def append(self, c, k_pe, pos):
        if self.c is None:
            self.c, self.k_pe, self.pos = c, k_pe, pos
        else:
            self.c = torch.cat((self.c, c), 1)
            self.k_pe = torch.cat((self.k_pe, k_pe), 1)
            self.pos = torch.cat((self.pos, pos), 0)


class MLA(nn.Module):
    """Multi-head latent attention (spec 4.1, 4.2). HF names under `self_attn.`."""

    def __init__(self, cfg: Config, rope: Rope):
        super().__init__()
        self.cfg, self.rope = cfg, rope
        D, H = cfg.hidden_size, cfg.num_attention_heads
        self.n_heads = H
        self.d_n, self.d_r, self.d_v = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        self.d_c = cfg.kv_lora_rank
        if cfg.q_lora_rank:
            self.q_a_proj = Linear(D, cfg.q_lora_rank)                          # [d_q, D]
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, 1e-6)                 # eps hard-coded (2.1)
            self.q_b_proj = Linear(cfg.q_lora_rank, H * (self.d_n + self.d_r))  # [H(d_n+d_r), d_q]
        else:
            self.q_proj = Linear(D, H * (self.d_n + self.d_r))                  # [H(d_n+d_r), D]
        self.kv_a_proj_with_mqa = Linear(D, self.d_c + self.d_r)                # [d_c+d_r, D]
        self.kv_a_layernorm = RMSNorm(self.d_c, 1e-6)
        self.kv_b_proj = Linear(self.d_c, H * (self.d_n + self.d_v))            # [H(d_n+d_v), d_c]
        self.o_proj = Linear(H * self.d_v, D)                                   # [D, H d_v]

    def project(self, a, positions):
        """a [B,S,D] -> q_nope [B,S,H,d_n], q_pe [B,S,H,d_r] (roped), c [B,S,d_c] (normed latent),
        k_pe [B,S,d_r] (roped shared key)."""
        B, S, _ = a.shape
        if self.cfg.q_lora_rank:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(a)))
        else:
            q = self.q_proj(a)
        q = q.view(B, S, self.n_heads, self.d_n + self.d_r)
        q_nope = q[..., :self.d_n]
        q_pe = apply_rope(q[..., self.d_n:], positions, self.rope)
        kv = self.kv_a_proj_with_mqa(a)
        c = self.kv_a_layernorm(kv[..., :self.d_c])
        k_pe = apply_rope(kv[..., self.d_c:], positions, self.rope)
        return q_nope, q_pe, c, k_pe

    def forward(self, a, positions, trace=None, prefix="", cache=None):
        """Naive form when cache is None (causal over this call's tokens); absorbed form over
        the latent cache otherwise (this call's tokens are appended first)."""
        q_nope, q_pe, c, k_pe = self.project(a, positions)
        _put(trace, prefix + "kv_latent", c)
        _put(trace, prefix + "k_pe", k_pe)
        if cache is None:
            o = self.attend_naive(q_nope, q_pe, c, k_pe, positions, positions)
        else:
            cache.append(c, k_pe, positions)
            o = self.attend_absorbed(q_nope, q_pe, cache.c, cache.k_pe, positions, cache.pos)
        return self.o_proj(o)

    @staticmethod
    def _causal_softmax(score, q_pos, k_pos):
        """score [B,H,S,T]; key t visible to query s iff k_pos[t] <= q_pos[s]."""
        masked = k_pos[None, :] > q_pos[:, None]                           # [S, T]
        score = score.masked_fill(masked, float("-inf"))
        return torch.softmax(score, dim=-1)

    def attend_naive(self, q_nope, q_pe, c, k_pe, q_pos, k_pos):
        """Spec 4.1: materialise k^C, v per head. Returns o [B,S,H*d_v] (head-major)."""
        B, T, _ = c.shape
        kvb = self.kv_b_proj(c).view(B, T, self.n_heads, self.d_n + self.d_v)
        k_nope, v = kvb[..., :self.d_n], kvb[..., self.d_n:]
        score = (torch.einsum("bshd,bthd->bhst", q_nope, k_nope)
                 + torch.einsum("bshr,btr->bhst", q_pe, k_pe)) * self.rope.softmax_scale
        p = self._causal_softmax(score, q_pos, k_pos)
        o = torch.einsum("bhst,bthd->bshd", p, v)
        return o.reshape(o.shape[0], o.shape[1], self.n_heads * self.d_v)

    def attend_absorbed(self, q_nope, q_pe, c, k_pe, q_pos, k_pos):
        """Spec 4.2: fold W^UK into the query and W^UV after the weighted sum over the latents.
        c [B,T,d_c], k_pe [B,T,d_r] are the cache. Returns o [B,S,H*d_v]."""
        w = self.kv_b_proj.weight.view(self.n_heads, self.d_n + self.d_v, self.d_c)
        w_uk, w_uv = w[:, :self.d_n, :], w[:, self.d_n:, :]                 # [H,d_n,d_c], [H,d_v,d_c]
        q_lat = torch.einsum("bshd,hdc->bshc", q_nope, w_uk)                # q~ [B,S,H,d_c]
        score = (torch.einsum("bshc,btc->bhst", q_lat, c)
                 + torch.einsum("bshr,btr->bhst", q_pe, k_pe)) * self.rope.softmax_scale
        p = self._causal_softmax(score, q_pos, k_pos)
        o_lat = torch.einsum("bhst,btc->bshc", p, c)                        # o^ [B,S,H,d_c]
        o = torch.einsum("bshc,hvc->bshv", o_lat, w_uv)
        return o.reshape(o.shape[0], o.shape[1], self.n_heads * self.d_v)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate x) * up x) (spec 2.2). HF names gate_proj/up_proj/down_proj."""

    def __init__(self, dim, inter):
        super().__init__()
        self.gate_proj = Linear(dim, inter)
        self.up_proj = Linear(dim, inter)
        self.down_proj = Linear(inter, dim)

    def forward(self, x):
        return self.down_proj(silu(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    """Router (spec 3 steps 1-6). weight [N_r, D] (trainable), e_score_correction_bias [N_r]
    (a buffer: no gradient, moved by the balance rule)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.zeros(cfg.n_routed_experts, cfg.hidden_size, dtype=DTYPE))
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts, dtype=DTYPE))

    def select(self, scores, bias):
        """Bias-corrected, group-limited top-K.  scores [N, N_r] (sigmoid affinities).
        Returns (idx [N,K] ascending, biased/masked selection scores [N,N_r], group scores or None)."""
        cfg = self.cfg
        c = scores + bias[None, :]
        group_scores = None
        if cfg.n_group > 1:
            n = c.shape[0]
            grouped = c.view(n, cfg.n_group, cfg.n_routed_experts // cfg.n_group)
            group_scores = grouped.topk(2, dim=-1).values.sum(-1)                # [N, G]
            keep = group_scores.topk(cfg.topk_group, dim=-1).indices
            keep_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
            c = grouped.masked_fill(~keep_mask[..., None], float("-inf")).view(n, -1)
        idx = c.topk(cfg.num_experts_per_tok, dim=-1).indices
        idx = idx.sort(dim=-1).values
        return idx, c, group_scores

    def forward(self, u, force_idx=None):
        """u [N, D] -> idx [N,K] (ascending), weights [N,K], info dict (router logits, margins)."""
        cfg = self.cfg
        z = u @ self.weight.t()                                           # router logits [N, N_r]
        s = torch.sigmoid(z)                                              # affinities
        with torch.no_grad():
            idx, c, group_scores = self.select(s, self.e_score_correction_bias)
        if force_idx is not None:
            idx = force_idx.sort(dim=-1).values
        w = s.gather(1, idx)                                              # UNBIASED affinities
        if cfg.norm_topk_prob:
            w = w / w.sum(-1, keepdim=True)
        w = w * cfg.routed_scaling_factor
        info = {"router_logits": z.detach(), "select_scores": c, "group_scores": group_scores}
        return idx, w, info


class MoE(nn.Module):
    """DeepSeekMoE (spec 3 step 7): sum_i g_i Expert_i(u) + Shared(u)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.gate = MoEGate(cfg)
        self.experts = nn.ModuleList(MLP(cfg.hidden_size, cfg.moe_intermediate_size)
                                     for _ in range(cfg.n_routed_experts))
        self.shared_experts = (MLP(cfg.hidden_size, cfg.n_shared_experts * cfg.moe_intermediate_size)
                               if cfg.n_shared_experts > 0 else None)

    def forward(self, u, trace=None, prefix="", force_idx=None):
        shape = u.shape
        x = u.reshape(-1, shape[-1])                                      # [N, D]
        idx, w, info = self.gate(x, force_idx)
        _put(trace, prefix + "router_logits", info["router_logits"].view(*shape[:-1], -1))
        _put(trace, prefix + "topk_idx", idx.view(*shape[:-1], -1))
        _put(trace, prefix + "topk_w", w.view(*shape[:-1], -1))
        if trace is not None:
            trace[prefix + "_select_scores"] = info["select_scores"]
            trace[prefix + "_group_scores"] = info["group_scores"]
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            y = y.index_add(0, rows, w[rows, slot][:, None] * expert(x[rows]))
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y.view(shape)


class DecoderLayer(nn.Module):
    """Pre-norm block (spec 2): x += MLA(norm(x)); x += FFN(norm(x))."""

    def __init__(self, cfg: Config, rope: Rope, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MLA(cfg, rope)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.is_moe = cfg.is_moe_layer(layer_index)
        self.mlp = MoE(cfg) if self.is_moe else MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, positions, trace=None, prefix="", cache=None, force_idx=None):
        a = self.input_layernorm(x)
        _put(trace, prefix + "attn_norm", a)
        attn = self.self_attn(a, positions, trace, prefix, cache)
        _put(trace, prefix + "attn_out", attn)
        x = x + attn
        m = self.post_attention_layernorm(x)
        _put(trace, prefix + "ffn_norm", m)
        ffn = self.mlp(m, trace, prefix, force_idx) if self.is_moe else self.mlp(m)
        _put(trace, prefix + "ffn_out", ffn)
        x = x + ffn
        _put(trace, prefix + "out", x)
        return x


class SharedHead(nn.Module):
    """`shared_head.norm` of an MTP module; the head matrix itself is the main lm_head."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class MTPLayer(DecoderLayer):
    """MTP module k at HF layer index num_hidden_layers+k-1 (spec 5.1): enorm, hnorm,
    eh_proj [D, 2D], one decoder layer, shared_head.norm."""

    def __init__(self, cfg: Config, rope: Rope, layer_index: int):
        super().__init__(cfg, rope, layer_index)
        D = cfg.hidden_size
        self.enorm = RMSNorm(D, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(D, cfg.rms_norm_eps)
        self.eh_proj = Linear(2 * D, D)
        self.shared_head = SharedHead(cfg)

    def mtp_forward(self, h_prev, emb_next, positions, trace=None, prefix="", cache=None, force_idx=None):
        """h_prev [B,n,D] (previous depth's post-norm hidden), emb_next [B,n,D] (E[t_{i+k}]).
        Returns (decoder output [B,n,D], shared_head.norm output [B,n,D])."""
        e = self.enorm(emb_next)
        h = self.hnorm(h_prev)
        u = self.eh_proj(torch.cat((e, h), dim=-1))                         # embedding FIRST
        _put(trace, prefix + "in", u)
        out = self.forward(u, positions, trace, prefix, cache, force_idx)
        hn = self.shared_head.norm(out)
        _put(trace, prefix + "head_norm", hn)
        return out, hn


class Backbone(nn.Module):
    """`model.*`: embed_tokens [V,D], layers (main 0..L-1, then MTP L..L+D_mtp-1), norm."""

    def __init__(self, cfg: Config, rope: Rope):
        super().__init__()
        L = cfg.num_hidden_layers
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, dtype=DTYPE)
        layers = [DecoderLayer(cfg, rope, l) for l in range(L)]
        layers += [MTPLayer(cfg, rope, L + k) for k in range(cfg.num_nextn_predict_layers)]
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DeepseekV3(nn.Module):
    """DeepseekV3ForCausalLM equivalent. state_dict() keys are HF checkpoint names."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.rope = Rope(cfg)
        self.model = Backbone(cfg, self.rope)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size)

    def mtp_layer_index(self, k):
        return self.cfg.num_hidden_layers + k - 1

    def forward(self, tokens, trace=None, caches=None, start_pos=0, force_routing=None, mtp=True):
        """tokens [B,S] int64 -> (logits [B,S,V], [mtp logits depth k: [B,S-k,V]]).

        caches: None (naive MLA, whole sequence) or a list of LatentCache per main layer (absorbed
        MLA; tokens are at positions start_pos.. and MTP is skipped -- see mtp_forward).
        force_routing: optional {trace prefix ("L3." / "mtp.L4."): idx [B*S, K]} to pin experts.
        Trace names follow docs/reference.md (emb, L{l}.*, final_norm, mtp.L{n}.*)."""
        cfg = self.cfg
        B, S = tokens.shape
        fr = force_routing or {}
        x = self.model.embed_tokens(tokens)
        _put(trace, "emb", x)
        pos = torch.arange(start_pos, start_pos + S, dtype=DTYPE)
        for l in range(cfg.num_hidden_layers):
            p = f"L{l}."
            x = self.model.layers[l](x, pos, trace, p, None if caches is None else caches[l], fr.get(p))
        h = self.model.norm(x)
        _put(trace, "final_norm", h)
        logits = self.lm_head(h)
        mtp_logits = []
        if mtp and caches is None:
            mtp_logits = self.mtp_forward(h, tokens, trace, force_routing=fr)
        return logits, mtp_logits

    def mtp_forward(self, h, tokens, trace=None, caches=None, force_routing=None):
        """Spec 5.1 over a whole sequence: depth k uses E[t_{i+k}] and h^{k-1}_i, i=0..S-1-k,
        at positions 0..S-1-k.  h [B,S,D] = final-normed hidden.  Returns [logits_k [B,S-k,V]]."""
        cfg = self.cfg
        fr = force_routing or {}
        S = tokens.shape[1]
        out = []
        h_prev = h
        for k in range(1, cfg.num_nextn_predict_layers + 1):
            n = S - k
            if n <= 0:
                break
            li = self.mtp_layer_index(k)
            p = f"mtp.L{li}."
            emb = self.model.embed_tokens(tokens[:, k:k + n])
            pos = torch.arange(n, dtype=DTYPE)
            cache = None if caches is None else caches[k - 1]
            _, hn = self.model.layers[li].mtp_forward(h_prev[:, :n], emb, pos, trace, p, cache, fr.get(p))
            out.append(self.lm_head(hn))
            h_prev = hn
        return out

    def new_caches(self):
        return [LatentCache() for _ in range(self.cfg.num_hidden_layers)]
