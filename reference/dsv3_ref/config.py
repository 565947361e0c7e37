"""DeepSeek-V3 config (HF config.json field names) and the rotary/YaRN constants derived from it.

Implements V3_SPEC sections 1.1 (fields), 4.1 (softmax scale) and 4.3 (YaRN inverse
frequencies, cos/sin multiplier).  Everything here is float64 numpy.
Only the V3 semantics are accepted (sigmoid router, noaux_tc top-k, silu, moe_layer_freq 1);
anything else raises instead of silently computing something different.
"""
import json
import math

import numpy as np


class Config:
    """Typed view of an HF DeepSeek-V3 config.json dict (paper/HF field names)."""

    def __init__(self, d):
        self.raw = dict(d)
        g = d.get
        self.vocab_size = int(d["vocab_size"])
        self.hidden_size = int(d["hidden_size"])
        self.intermediate_size = int(d["intermediate_size"])
        self.moe_intermediate_size = int(d["moe_intermediate_size"])
        self.num_hidden_layers = int(d["num_hidden_layers"])
        self.num_nextn_predict_layers = int(g("num_nextn_predict_layers", 0) or 0)
        self.num_attention_heads = int(d["num_attention_heads"])
        self.n_shared_experts = int(g("n_shared_experts", 0) or 0)
        self.n_routed_experts = int(d["n_routed_experts"])
        self.routed_scaling_factor = float(g("routed_scaling_factor", 1.0))
        self.kv_lora_rank = int(d["kv_lora_rank"])
        q = g("q_lora_rank")
        self.q_lora_rank = int(q) if q else None          # null / 0 -> no query compression
        self.qk_rope_head_dim = int(d["qk_rope_head_dim"])
        self.qk_nope_head_dim = int(d["qk_nope_head_dim"])
        self.v_head_dim = int(d["v_head_dim"])
        self.n_group = int(g("n_group", 1) or 1)
        self.topk_group = int(g("topk_group", 1) or 1)
        self.num_experts_per_tok = int(d["num_experts_per_tok"])
        self.first_k_dense_replace = int(g("first_k_dense_replace", 0))
        self.moe_layer_freq = int(g("moe_layer_freq", 1))
        self.norm_topk_prob = bool(g("norm_topk_prob", True))
        self.scoring_func = g("scoring_func", "sigmoid")
        self.topk_method = g("topk_method", "noaux_tc")
        self.hidden_act = g("hidden_act", "silu")
        self.rms_norm_eps = float(g("rms_norm_eps", 1e-6))
        self.rope_theta = float(g("rope_theta", 10000.0))
        self.rope_scaling = g("rope_scaling")
        self.tie_word_embeddings = bool(g("tie_word_embeddings", False))
        self.attention_bias = bool(g("attention_bias", False))
        self._validate()

    @staticmethod
    def from_json(path):
        with open(path) as f:
            return Config(json.load(f))

    def _validate(self):
        def need(cond, msg):
            if not cond:
                raise ValueError("config: " + msg)
        need(self.scoring_func == "sigmoid", f"scoring_func {self.scoring_func!r} (only V3 sigmoid)")
        need(self.topk_method == "noaux_tc", f"topk_method {self.topk_method!r} (only noaux_tc)")
        need(self.hidden_act == "silu", f"hidden_act {self.hidden_act!r}")
        need(self.moe_layer_freq == 1, "moe_layer_freq must be 1")
        need(not self.tie_word_embeddings, "tie_word_embeddings must be false")
        need(not self.attention_bias, "attention_bias must be false")
        need(self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim must be even")
        need(self.n_routed_experts % self.n_group == 0, "n_routed_experts % n_group != 0")
        need(1 <= self.topk_group <= self.n_group, "topk_group out of range")
        gsize = self.n_routed_experts // self.n_group
        need(self.n_group == 1 or gsize >= 2, "group score needs >= 2 experts per group")
        need(self.num_experts_per_tok <= self.topk_group * gsize,
             "num_experts_per_tok exceeds the experts of the kept groups")

    # derived
    @property
    def qk_head_dim(self):
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer_index):
        """Layer index in HF numbering (MTP layers included): dense below first_k_dense_replace."""
        return layer_index >= self.first_k_dense_replace


def yarn_get_m(scale, mscale):
    """get_m(s, m) = 0.1*m*ln(s) + 1, and 1 when s <= 1 (spec 4.3)."""
    if scale <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


class Rope:
    """Rotary constants: inv_freq [d_r/2] (f'_j), cos/sin multiplier, softmax scale sigma."""

    def __init__(self, cfg):
        d_r = cfg.qk_rope_head_dim
        theta = cfg.rope_theta
        j = np.arange(d_r // 2, dtype=np.float64)
        base = theta ** (-2.0 * j / d_r)                       # f_j
        sigma = (cfg.qk_nope_head_dim + d_r) ** -0.5
        self.kind = "default"
        self.cos_sin_scale = 1.0
        self.ramp = np.zeros_like(base)
        rs = cfg.rope_scaling
        if rs:
            kind = rs.get("type", rs.get("rope_type"))
            if kind != "yarn":
                raise NotImplementedError(f"rope_scaling type {kind!r}")
            self.kind = "yarn"
            s = float(rs["factor"])
            l0 = float(rs["original_max_position_embeddings"])
            beta_fast = float(rs.get("beta_fast", 32))
            beta_slow = float(rs.get("beta_slow", 1))
            # HF defaults when absent: mscale 1, mscale_all_dim 0 (-> m = 1)
            mscale = float(rs.get("mscale", 1.0))
            mscale_all_dim = float(rs.get("mscale_all_dim", 0.0))

            def corr(n_rot):
                return d_r * math.log(l0 / (2.0 * math.pi * n_rot)) / (2.0 * math.log(theta))

            lo = max(math.floor(corr(beta_fast)), 0)
            hi = min(math.ceil(corr(beta_slow)), d_r - 1)
            hi = float(hi)
            if lo == hi:
                hi += 0.001
            self.lo, self.hi = lo, hi
            self.ramp = np.clip((j - lo) / (hi - lo), 0.0, 1.0)   # 0 keep, 1 interpolate
            base = base * (1.0 - self.ramp) + (base / s) * self.ramp
            self.cos_sin_scale = yarn_get_m(s, mscale) / yarn_get_m(s, mscale_all_dim)
            m = yarn_get_m(s, mscale_all_dim)
            sigma = sigma * m * m
        self.inv_freq = base            # float64 [d_r/2]
        self.softmax_scale = sigma
