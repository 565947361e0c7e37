#!/usr/bin/python3
"""Checks on the reference itself (each can fail; exit status 1 if any does).

    /usr/bin/python3 reference/selftest.py [-v]

YaRN table of the 671B config (spec 4.3) and sigma; RoPE pairing convention; E4M3 codec on all
256 codes, all midpoints and random values against a brute-force nearest search; BF16 RNE
against torch; FP8 128x128 block quantiser error bound and bit-exact re-quantisation;
safetensors round trip and header layout; FP8 storage tensor set; absorbed == naive MLA;
MoE selection examples (bias moves the choice, weights from unbiased scores; group limit
drops a high-scoring expert; -inf masking); causal mask for logits and MTP logits;
RoPE relativity (a uniform position offset does not change attention).
"""
import json
import math
import os
import struct
import sys
import tempfile
import time
import traceback

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dsv3_ref.checks import absorbed_vs_naive  # noqa: E402
from dsv3_ref.config import Config, Rope  # noqa: E402
from dsv3_ref.model import DTYPE, MoEGate, apply_rope  # noqa: E402
from dsv3_ref import numerics as nx  # noqa: E402
from dsv3_ref.safetensors_io import read_safetensors, write_safetensors  # noqa: E402
from dsv3_ref.weights import (build_model, decode_storage, is_fp8_tensor, master_weights,  # noqa: E402
                              to_storage)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")

SPEC_YARN_671B = [1, 0.749894, 0.562341, 0.421697, 0.316228, 0.237137, 0.177828, 0.133352, 0.1,
                  0.0749894, 0.0562341, 0.0390069, 0.0268794, 0.0183781, 0.012448, 0.00833451,
                  0.0055, 0.003562, 0.00224937, 0.00137051, 0.000790569, 0.00041499, 0.000177828,
                  3.3338e-05, 2.5e-05, 1.87474e-05, 1.40585e-05, 1.05424e-05, 7.90569e-06,
                  5.92843e-06, 4.4457e-06, 3.3338e-06]


def cfg_of(name, **over):
    with open(os.path.join(CONFIGS, name + ".json")) as f:
        d = json.load(f)
    d.update(over)
    return Config(d)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


# ------------------------------------------------------------------ RoPE / YaRN
def test_yarn_671b():
    cfg = cfg_of("671b")
    r = Rope(cfg)
    check(r.kind == "yarn", "671b: rope kind")
    check((r.lo, r.hi) == (10, 23.0), f"671b ramp bounds {(r.lo, r.hi)} != (10, 23)")
    check(len(r.inv_freq) == 32, "671b: 32 pairs")
    for j, (got, want) in enumerate(zip(r.inv_freq, SPEC_YARN_671B)):
        check(abs(got - want) <= 1e-5 * want, f"f'_{j} = {got} != spec {want}")
    check(abs(r.softmax_scale - 0.1352338) < 5e-8, f"sigma {r.softmax_scale} != 0.1352338")
    check(abs(r.cos_sin_scale - 1.0) < 1e-15, "cos/sin multiplier must be 1 for V3")


def test_yarn_variants():
    # no rope_scaling -> plain RoPE and sigma = (d_n+d_r)^-1/2
    r = Rope(cfg_of("tiny", rope_scaling=None))
    check(r.kind == "default" and abs(r.softmax_scale - 24 ** -0.5) < 1e-15, "plain rope sigma")
    check(np.allclose(r.inv_freq, 10000.0 ** (-np.arange(4) * 2 / 8), rtol=1e-15), "plain inv_freq")
    # mscale != mscale_all_dim -> cos/sin multiplier = get_m(s,mscale)/get_m(s,mscale_all_dim)
    rs = dict(cfg_of("tiny").rope_scaling, mscale=0.707, mscale_all_dim=1.0)
    r = Rope(cfg_of("tiny", rope_scaling=rs))
    want = (0.1 * 0.707 * math.log(40) + 1) / (0.1 * math.log(40) + 1)
    check(abs(r.cos_sin_scale - want) < 1e-15, "cos/sin multiplier")
    # floor/ceil (not round): 671b with beta_fast 22 -> corr 11.77 -> lo 11; small (d_r 32):
    # corr(32) = 5.236 -> lo 5, corr(1) = 11.257 -> hi 12
    rs = dict(cfg_of("671b").rope_scaling, beta_fast=22)
    r = Rope(cfg_of("671b", rope_scaling=rs))
    check((r.lo, r.hi) == (11, 23.0), f"beta_fast 22: bounds {(r.lo, r.hi)} != (11, 23)")
    r = Rope(cfg_of("small"))
    check((r.lo, r.hi) == (5, 12.0), f"small: bounds {(r.lo, r.hi)} != (5, 12)")
    check(abs(r.inv_freq[8] - 10000.0 ** (-16 / 32) * (1 - 3 / 7 + 3 / 7 / 40)) < 1e-15,
          "small: f'_8 with ramp 3/7")
    # lo == hi -> hi += 0.001: tiny betas push both bounds to the clamp d_r-1 = 63
    rs = dict(cfg_of("671b").rope_scaling, beta_fast=8.15e-6, beta_slow=1e-6)
    r = Rope(cfg_of("671b", rope_scaling=rs))
    check(r.lo == 63 and abs(r.hi - 63.001) < 1e-12, f"lo==hi rule: lo {r.lo} hi {r.hi}")
    check(np.all(r.ramp == 0.0), "all pairs below lo keep their frequency")


def test_rope_pairing():
    cfg = cfg_of("tiny")
    r = Rope(cfg)
    d = cfg.qk_rope_head_dim
    pos = torch.tensor([0.0, 3.0, 7.0], dtype=DTYPE)
    eye = torch.eye(d, dtype=DTYPE)                                  # [d, d] as "heads"
    x = eye[None, None].expand(1, 3, d, d)                           # [B=1, S=3, H=d, d]
    y = apply_rope(x, pos, r)
    for si, p in enumerate(pos.tolist()):
        for j in range(d // 2):
            a = p * r.inv_freq[j]
            c, s = math.cos(a), math.sin(a)
            e0 = y[0, si, 2 * j]                                     # rotate e_{2j}
            e1 = y[0, si, 2 * j + 1]
            w0 = torch.zeros(d, dtype=DTYPE)
            w0[2 * j], w0[2 * j + 1] = c, s
            w1 = torch.zeros(d, dtype=DTYPE)
            w1[2 * j], w1[2 * j + 1] = -s, c
            check(torch.allclose(e0, w0, atol=1e-15) and torch.allclose(e1, w1, atol=1e-15),
                  f"adjacent-pair rotation wrong at pos {p} pair {j}")


# ------------------------------------------------------------------ numerics
def test_e4m3_codes():
    v = nx.E4M3_VALUES
    check(np.isnan(v[0x7F]) and np.isnan(v[0xFF]), "NaN codes")
    check(np.isfinite(v).sum() == 254, "254 finite codes")
    check(v[0x7E] == 448 and v[0xFE] == -448, "max 448")
    check(v[0x01] == 2.0 ** -9 and v[0x08] == 2.0 ** -6 and v[0x38] == 1.0 and v[0x07] == 7 * 2.0 ** -9,
          "anchor values")
    for c in range(256):
        if np.isnan(v[c]):
            continue
        got = int(nx.e4m3_encode(np.array([v[c]]))[0])
        check(got == c, f"code {c:#04x} ({v[c]}) encodes to {got:#04x}")
    # finite positive values ascend with the code
    check(np.all(np.diff(v[:0x7F]) > 0), "monotone codes")


def _even_code(c0, c1):
    return c0 if c0 % 2 == 0 else c1


def test_e4m3_midpoints():
    v = nx.E4M3_VALUES
    for sign in (0, 0x80):
        for c in range(0, 0x7E):
            lo, hi = v[c | sign], v[(c + 1) | sign]
            mid = (lo + hi) / 2
            want = _even_code(c, c + 1) | sign
            got = int(nx.e4m3_encode(np.array([mid]))[0])
            check(got == want, f"midpoint {mid} -> {got:#04x}, want {want:#04x}")
            eps = abs(hi - lo) * 1e-6
            toward_lo = mid - eps if sign == 0 else mid + eps
            toward_hi = mid + eps if sign == 0 else mid - eps
            check(int(nx.e4m3_encode(np.array([toward_lo]))[0]) == c | sign, f"below midpoint {mid}")
            check(int(nx.e4m3_encode(np.array([toward_hi]))[0]) == (c + 1) | sign, f"above midpoint {mid}")
    # saturation, specials, underflow
    sat = nx.e4m3_encode(np.array([448.0, 449.0, 464.0, 480.0, 1e6, np.inf, -500.0, -np.inf, np.nan]))
    check(list(sat) == [0x7E] * 6 + [0xFE, 0xFE, 0x7F], f"saturation/NaN {list(map(hex, sat))}")
    small = nx.e4m3_encode(np.array([2.0 ** -10, 2.0 ** -10 * 1.0001, 3 * 2.0 ** -10, 1e-30, -1e-30, 0.0, -0.0]))
    check(list(small) == [0x00, 0x01, 0x02, 0x00, 0x80, 0x00, 0x80], f"subnormal rounding {list(map(hex, small))}")


def test_e4m3_bruteforce():
    rng = np.random.default_rng(7)
    x = np.exp(rng.uniform(math.log(2.0 ** -12), math.log(600.0), 200000)) * rng.choice([-1, 1], 200000)
    x = np.concatenate([x, rng.normal(0, 1, 50000)])
    got = nx.e4m3_encode(x)
    v = nx.E4M3_VALUES
    pos_codes = np.arange(0x7F)                                  # 0x00..0x7E finite non-negative
    pv = v[pos_codes]
    a = np.minimum(np.abs(x), 448.0)
    dist = np.abs(a[:, None] - pv[None, :])
    best = dist.min(1, keepdims=True)
    cand = dist == best
    # among tied candidates pick the even code
    even = cand & (pos_codes[None, :] % 2 == 0)
    pick = np.where(even.any(1), even.argmax(1), cand.argmax(1))
    want = pos_codes[pick].astype(np.uint8) | (np.signbit(x).astype(np.uint8) << 7)
    bad = np.nonzero(got != want)[0]
    check(bad.size == 0, f"{bad.size} mismatches vs brute force, e.g. x={x[bad[:3]]} got {got[bad[:3]]} want {want[bad[:3]]}")


def test_bf16():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, 100000), rng.normal(0, 1e-30, 1000), rng.normal(0, 1e30, 1000)]).astype(np.float32)
    # exact ties: low 16 bits == 0x8000, with both parities of bit 16
    u = rng.integers(0x3F000000, 0x40000000, 2000, dtype=np.uint64).astype(np.uint32)
    ties = ((u & 0xFFFF0000) | 0x8000).view(np.float32)
    edge = np.array([0.0, -0.0, np.inf, -np.inf, 3.3895314e38, 1e-45], dtype=np.float32)
    x = np.concatenate([x, ties, edge])
    got = nx.bf16_encode(x)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    bad = np.nonzero(got != want)[0]
    check(bad.size == 0, f"bf16 RNE differs from torch at {bad.size} values, e.g. {x[bad[:3]]}")
    check(np.isnan(nx.bf16_decode(nx.bf16_encode(np.array([np.nan], np.float32))))[0], "bf16 NaN")


def test_fp8_block():
    rng = np.random.default_rng(11)
    for shape in [(576, 200), (64, 130), (1, 1), (300, 129), (128, 128), (256, 7)]:
        w = rng.normal(0, 1, shape) * 10.0 ** rng.uniform(-4, 2, (shape[0], 1))
        w[rng.random(shape) < 0.01] = 0.0
        w = w.astype(np.float32)
        codes, scale = nx.fp8_block_quantize(w)
        nbo, nbi = -(-shape[0] // 128), -(-shape[1] // 128)
        check(scale.shape == (nbo, nbi) and scale.dtype == np.float32, f"scale shape {scale.shape} for {shape}")
        # scale = amax/448 of the real elements of each block
        for bo in range(nbo):
            for bi in range(nbi):
                blk = w[bo * 128:(bo + 1) * 128, bi * 128:(bi + 1) * 128]
                check(scale[bo, bi] == np.float32(np.abs(blk).max() / np.float32(448)), "block scale")
        deq = nx.fp8_block_dequantize(codes, scale)
        full = np.repeat(np.repeat(scale.astype(np.float64), 128, 0), 128, 1)[:shape[0], :shape[1]]
        err = np.abs(deq - w.astype(np.float64))
        bound = np.abs(w) / 16 + full * 2.0 ** -10
        check(np.all(err <= bound), f"fp8 block error bound violated for {shape}: {(err - bound).max()}")
        # the block maximum is represented exactly as +-448 * scale (never clipped away)
        check(np.all(np.abs(nx.e4m3_decode(codes)) <= 448), "codes in range")
        # re-quantising the (float64) dequantised weights reproduces codes and scales bit-exactly
        c2, s2 = nx.fp8_block_quantize(deq)
        check(np.array_equal(c2, codes) and np.array_equal(s2.view(np.uint32), scale.view(np.uint32)),
              f"re-quantisation not bit-exact for {shape}")
        # ...and from float32-rounded dequantised values the codes still come back
        c3, s3 = nx.fp8_block_quantize(deq.astype(np.float32))
        check(np.array_equal(c3, codes), f"re-quantisation from f32 changes codes for {shape}")
        check(np.all(np.abs(s3.astype(np.float64) - scale) <= np.spacing(scale)), "f32 re-quant scale > 1 ulp")


def test_safetensors():
    rng = np.random.default_rng(5)
    t = {
        "b.f32": ("F32", rng.normal(size=(3, 5)).astype(np.float32)),
        "a.bf16": ("BF16", nx.bf16_encode(rng.normal(size=(7,)))),
        "c.fp8": ("F8_E4M3", rng.integers(0, 126, (2, 3), dtype=np.uint8)),
        "d.i64": ("I64", np.arange(5, dtype=np.int64)),
        "e.empty": ("F32", np.zeros((0, 4), np.float32)),
    }
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.safetensors")
        write_safetensors(p, t, {"format": "pt"})
        raw = open(p, "rb").read()
        (n,) = struct.unpack("<Q", raw[:8])
        check(n % 8 == 0, "header length not a multiple of 8")
        hdr = json.loads(raw[8:8 + n])
        check(hdr["__metadata__"] == {"format": "pt"}, "metadata")
        end = 0
        for name in sorted(t):
            b, e = hdr[name]["data_offsets"]
            check(b == end, "offsets not contiguous / relative to data section")
            end = e
        check(8 + n + end == len(raw), "file size")
        check(hdr["a.bf16"]["dtype"] == "BF16" and hdr["c.fp8"]["shape"] == [2, 3], "header fields")
        back, meta = read_safetensors(p)
        for name, (dt, arr) in t.items():
            check(back[name][0] == dt and np.array_equal(back[name][1], arr), f"round trip {name}")
        # a corrupt header (offset past the end) must be rejected
        bad = bytearray(raw)
        hb = raw[8:8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[9,')
        bad[8:8 + n] = hb
        open(p, "wb").write(bytes(bad))
        try:
            read_safetensors(p)
            check(False, "corrupt safetensors accepted")
        except ValueError:
            pass


def test_fp8_storage_set():
    cfg = cfg_of("tiny")
    st = to_storage(master_weights(cfg, 1), cfg, "fp8")
    L = cfg.num_hidden_layers
    fp8 = {n for n, (dt, _) in st.items() if dt == "F8_E4M3"}
    want_leaf = {"q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    check(all(n.split(".")[-2] in want_leaf for n in fp8), "unexpected FP8 tensor")
    check(f"model.layers.{L}.mlp.experts.7.down_proj.weight" in fp8, "MTP expert not FP8")
    check(f"model.layers.{L}.self_attn.q_b_proj.weight" in fp8, "MTP attention not FP8")
    check("model.layers.0.mlp.gate_proj.weight" in fp8, "dense MLP not FP8")
    check("model.layers.1.mlp.shared_experts.up_proj.weight" in fp8, "shared expert not FP8")
    for n in fp8:
        dt, s = st[n + "_scale_inv"]
        o, i = st[n][1].shape
        check(dt == "F32" and s.shape == (-(-o // 128), -(-i // 128)), f"{n}_scale_inv")
    check(st["model.layers.1.mlp.gate.weight"][0] == "BF16", "router must be BF16")
    check(st["model.layers.1.mlp.gate.e_score_correction_bias"][0] == "F32", "bias must be F32")
    check(st[f"model.layers.{L}.eh_proj.weight"][0] == "BF16", "eh_proj must be BF16")
    check(st[f"model.layers.{L}.shared_head.head.weight"][0] == "BF16", "head copy")
    check(np.array_equal(st[f"model.layers.{L}.embed_tokens.weight"][1], st["model.embed_tokens.weight"][1]), "embed copy")
    check(all(is_fp8_tensor(n) == (st[n][0] == "F8_E4M3") for n in st if not n.endswith("_scale_inv")), "is_fp8_tensor")
    # bf16 storage: everything BF16 except the bias
    sb = to_storage(master_weights(cfg, 1), cfg, "bf16")
    check(all((dt == "F32") == n.endswith("e_score_correction_bias") for n, (dt, _) in sb.items()), "bf16 set")


# ------------------------------------------------------------------ model
def random_model(name, seed=3, **over):
    cfg = cfg_of(name, **over)
    st = to_storage(master_weights(cfg, seed), cfg, "f32")
    return build_model(cfg, decode_storage(st))


def test_absorbed_equals_naive():
    for name in ("tiny", "tiny_noqlora"):
        model = random_model(name)
        tokens = torch.randint(0, model.cfg.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
        res = absorbed_vs_naive(model, tokens, prefill=4)
        check(res["max_abs_diff"] < 1e-10, f"{name}: absorbed vs naive {res['max_abs_diff']}")


def _gate(n_routed, n_group, topk_group, k, norm=True, rsf=2.5):
    cfg = cfg_of("tiny", n_routed_experts=n_routed, n_group=n_group, topk_group=topk_group,
                 num_experts_per_tok=k, hidden_size=n_routed, norm_topk_prob=norm, routed_scaling_factor=rsf)
    g = MoEGate(cfg)
    with torch.no_grad():
        g.weight.copy_(torch.eye(n_routed, dtype=DTYPE))             # router logits z = u
    return g


def _logit(p):
    p = torch.tensor(p, dtype=DTYPE)
    return torch.log(p / (1 - p))


def test_moe_bias_changes_selection():
    g = _gate(4, 1, 1, 2)
    s = [0.9, 0.8, 0.7, 0.1]
    with torch.no_grad():
        g.e_score_correction_bias.copy_(torch.tensor([0.0, 0.0, 0.15, 0.0], dtype=DTYPE))
        idx, w, _ = g(_logit(s)[None])
    check(idx.tolist() == [[0, 2]], f"biased selection {idx.tolist()} != [[0, 2]]")
    want = torch.tensor([0.9, 0.7], dtype=DTYPE) / 1.6 * 2.5                 # unbiased s, normalised, x2.5
    check(torch.allclose(w[0], want, rtol=1e-13), f"weights {w[0].tolist()} != {want.tolist()}")
    with torch.no_grad():
        g.e_score_correction_bias.zero_()
        idx0, _, _ = g(_logit(s)[None])
    check(idx0.tolist() == [[0, 1]], "without bias experts 0,1 must win")
    # norm_topk_prob = false: w = s * routed_scaling_factor
    g2 = _gate(4, 1, 1, 2, norm=False, rsf=2.0)
    idx2, w2, _ = g2(_logit(s)[None])
    check(torch.allclose(w2[0], torch.tensor([1.8, 1.6], dtype=DTYPE), rtol=1e-13), "norm_topk_prob=false")


def test_moe_group_limit():
    g = _gate(8, 4, 2, 2)
    # groups (0,1) (2,3) (4,5) (6,7); top-2 sums 1.0, 1.2, 1.1, 0.2; max-rule would keep group 0
    s = [0.95, 0.05, 0.6, 0.6, 0.55, 0.55, 0.1, 0.1]
    idx, w, info = g(_logit(s)[None])
    check(idx.tolist() == [[2, 3]], f"group-limited selection {idx.tolist()} != [[2, 3]] (expert 0 must be dropped)")
    check(torch.allclose(info["group_scores"][0], torch.tensor([1.0, 1.2, 1.1, 0.2], dtype=DTYPE), atol=1e-12),
          "group score = sum of top-2")
    check(torch.allclose(w.sum(), torch.tensor(2.5, dtype=DTYPE), rtol=1e-13), "weights sum to routed_scaling_factor")
    # all allowed biased scores negative: dropped groups must still lose (-inf, not 0.0 masking)
    with torch.no_grad():
        g.e_score_correction_bias.fill_(-2.0)
    idx, _, _ = g(_logit(s)[None])
    check(idx.tolist() == [[2, 3]], f"masking with -inf: {idx.tolist()}")
    # K spanning both kept groups, expert 4/5 from the second kept group
    g3 = _gate(8, 4, 2, 3)
    idx, _, _ = g3(_logit(s)[None])
    check(idx[0, :2].tolist() == [2, 3] and idx[0, 2].item() in (4, 5), f"K=3 selection {idx.tolist()}")


def test_causal():
    model = random_model("tiny")
    S, j = 15, 9
    g = torch.Generator().manual_seed(4)
    t1 = torch.randint(0, model.cfg.vocab_size, (1, S), generator=g)
    t2 = t1.clone()
    t2[0, j] = (t1[0, j] + 1) % model.cfg.vocab_size
    with torch.no_grad():
        l1, m1 = model(t1)
        l2, m2 = model(t2)
    check((l1[0, :j] - l2[0, :j]).abs().max() < 1e-12, "logits before the changed token moved")
    check((l1[0, j:] - l2[0, j:]).abs().max(-1).values.min() > 1e-6, "logits from the changed token on did not move")
    # MTP row i uses h_i and t_{i+1}: rows < j-1 unchanged, row j-1 and later change
    check((m1[0][0, :j - 1] - m2[0][0, :j - 1]).abs().max() < 1e-12, "MTP rows before j-1 moved")
    check((m1[0][0, j - 1:] - m2[0][0, j - 1:]).abs().max(-1).values.min() > 1e-6, "MTP rows from j-1 did not move")


def test_rope_relative():
    model = random_model("tiny_noqlora")
    t = torch.randint(0, model.cfg.vocab_size, (1, 11), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a, _ = model(t, mtp=False)
        b, _ = model(t, caches=model.new_caches(), start_pos=1000)   # absorbed, positions 1000..1010
    check((a - b).abs().max() < 1e-9, f"uniform position offset changed logits by {(a - b).abs().max()}")


def test_q_norm_eps():
    cfg = cfg_of("tiny", rms_norm_eps=1e-2)
    model = random_model("tiny", rms_norm_eps=1e-2)
    at = model.model.layers[0].self_attn
    check(at.q_a_layernorm.eps == 1e-6 and at.kv_a_layernorm.eps == 1e-6, "latent norms must use eps 1e-6")
    check(model.model.layers[0].input_layernorm.eps == 1e-2 and model.model.norm.eps == 1e-2, "rms_norm_eps")
    del cfg


def test_weights_deterministic_and_named():
    cfg = cfg_of("tiny")
    a, b = master_weights(cfg, 5), master_weights(cfg, 5)
    check(all(np.array_equal(a[k], b[k]) for k in a), "weights not deterministic")
    L = cfg.num_hidden_layers
    for n in ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
              "model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.experts.7.up_proj.weight",
              "model.layers.1.mlp.shared_experts.down_proj.weight", "model.layers.1.mlp.gate.e_score_correction_bias",
              f"model.layers.{L}.enorm.weight", f"model.layers.{L}.hnorm.weight", f"model.layers.{L}.eh_proj.weight",
              f"model.layers.{L}.shared_head.norm.weight", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"]:
        check(n in a, f"missing HF name {n}")
    check(a[f"model.layers.{L}.eh_proj.weight"].shape == (64, 128), "eh_proj shape [D, 2D]")
    nq = master_weights(cfg_of("tiny_noqlora"), 5)
    check("model.layers.0.self_attn.q_proj.weight" in nq and "model.layers.0.self_attn.q_a_proj.weight" not in nq,
          "q_lora_rank null -> q_proj")


def _np_rms(x, w, eps):
    return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def _np_rope_pairs(x, pos, inv_freq):
    y = x.copy()
    for j, f in enumerate(inv_freq):
        c, s_ = math.cos(pos * f), math.sin(pos * f)
        y[2 * j] = x[2 * j] * c - x[2 * j + 1] * s_
        y[2 * j + 1] = x[2 * j] * s_ + x[2 * j + 1] * c
    return y


def test_mla_loop():
    """Per-head, per-query loop over explicit weight row blocks (spec 4.1 layout) vs the module."""
    for name in ("tiny", "tiny_noqlora"):
        model = random_model(name)
        cfg = model.cfg
        sd = {k: v.numpy() for k, v in model.state_dict().items()}
        pre = "model.layers.1.self_attn."
        H, dn, dr, dv, dc = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim,
                             cfg.v_head_dim, cfg.kv_lora_rank)
        S = 6
        a = np.random.default_rng(2).normal(size=(S, cfg.hidden_size))
        with torch.no_grad():
            got = model.model.layers[1].self_attn(torch.from_numpy(a)[None], torch.arange(S, dtype=DTYPE))[0].numpy()
        inv = model.rope.inv_freq
        sigma = model.rope.softmax_scale
        want = np.zeros((S, cfg.hidden_size))
        for s_ in range(S):
            o = []
            if cfg.q_lora_rank:
                cq = _np_rms(sd[pre + "q_a_proj.weight"] @ a[s_], sd[pre + "q_a_layernorm.weight"], 1e-6)
                q = sd[pre + "q_b_proj.weight"] @ cq
            else:
                q = sd[pre + "q_proj.weight"] @ a[s_]
            for h in range(H):
                qh = q[h * (dn + dr):(h + 1) * (dn + dr)]
                qh = np.concatenate([qh[:dn], _np_rope_pairs(qh[dn:], s_, inv)])
                scores, vals = [], []
                for t in range(s_ + 1):
                    kv = sd[pre + "kv_a_proj_with_mqa.weight"] @ a[t]
                    c = _np_rms(kv[:dc], sd[pre + "kv_a_layernorm.weight"], 1e-6)
                    kr = _np_rope_pairs(kv[dc:], t, inv)
                    wblk = sd[pre + "kv_b_proj.weight"][h * (dn + dv):(h + 1) * (dn + dv)]
                    k = np.concatenate([wblk[:dn] @ c, kr])
                    scores.append(qh @ k * sigma)
                    vals.append(wblk[dn:] @ c)
                p = np.exp(np.array(scores) - max(scores))
                p /= p.sum()
                o.append((p[:, None] * np.array(vals)).sum(0))
            want[s_] = sd[pre + "o_proj.weight"] @ np.concatenate(o)
        err = np.abs(got - want).max()
        check(err < 1e-12, f"{name}: MLA module vs explicit loop {err}")


def test_moe_combine_loop():
    """sum_k w_k Expert_k(u) + Shared(u) per token, from explicit weights, vs the module."""
    model = random_model("small")
    cfg = model.cfg
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    pre = "model.layers.2.mlp."
    u = np.random.default_rng(8).normal(size=(5, cfg.hidden_size))
    moe = model.model.layers[2].mlp
    tr = {}
    with torch.no_grad():
        got = moe(torch.from_numpy(u)[None], tr, "x.")[0].numpy()
    idx, w = tr["x.topk_idx"][0].numpy(), tr["x.topk_w"][0].numpy()

    def swiglu(p, x):
        g = sd[p + "gate_proj.weight"] @ x
        return sd[p + "down_proj.weight"] @ (g / (1 + np.exp(-g)) * (sd[p + "up_proj.weight"] @ x))

    for t in range(u.shape[0]):
        want = swiglu(pre + "shared_experts.", u[t])
        for e, we in zip(idx[t], w[t]):
            want = want + we * swiglu(pre + f"experts.{e}.", u[t])
        err = np.abs(got[t] - want).max()
        check(err < 1e-12, f"MoE combine token {t}: {err}")
    check(sd[pre + "shared_experts.gate_proj.weight"].shape[0] == cfg.n_shared_experts * cfg.moe_intermediate_size,
          "shared expert width n_shared * moe_intermediate")


def test_mtp_input():
    """u_i = eh_proj [enorm(E[t_{i+1}]); hnorm(h_i)] with h = final-normed hidden; S-1 rows; row i
    = lm_head(shared_head.norm(layer(u)))."""
    model = random_model("tiny_noqlora")
    cfg = model.cfg
    L = cfg.num_hidden_layers
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    S = 9
    t = torch.randint(0, cfg.vocab_size, (1, S), generator=torch.Generator().manual_seed(12))
    tr = {}
    with torch.no_grad():
        _, mtp = model(t, trace=tr)
    h = tr["final_norm"][0].numpy()
    E = sd["model.embed_tokens.weight"]
    p = f"model.layers.{L}."
    eps = cfg.rms_norm_eps
    check(mtp[0].shape == (1, S - 1, cfg.vocab_size), "MTP depth 1 has S-1 rows")
    for i in range(S - 1):
        e = _np_rms(E[t[0, i + 1].item()], sd[p + "enorm.weight"], eps)
        hh = _np_rms(h[i], sd[p + "hnorm.weight"], eps)
        u = sd[p + "eh_proj.weight"] @ np.concatenate([e, hh])
        err = np.abs(u - tr[f"mtp.L{L}.in"][0, i].numpy()).max()
        check(err < 1e-12, f"MTP input row {i}: {err}")
    with torch.no_grad():
        u = tr[f"mtp.L{L}.in"]
        out = model.model.layers[L](u, torch.arange(S - 1, dtype=DTYPE))
        lg = model.lm_head(model.model.layers[L].shared_head.norm(out))
    check((lg - mtp[0]).abs().max() < 1e-12, "MTP logits = lm_head(shared_head.norm(layer(u)))")


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_")]


def main():
    verbose = "-v" in sys.argv
    failed = 0
    t0 = time.time()
    for fn in TESTS:
        t = time.time()
        try:
            fn()
            print(f"PASS {fn.__name__} ({time.time() - t:.2f}s)")
        except Exception as e:  # noqa: BLE001 - report every failing check, then exit non-zero
            failed += 1
            print(f"FAIL {fn.__name__}: {e}")
            if verbose:
                traceback.print_exc()
    print(f"{len(TESTS) - failed}/{len(TESTS)} passed in {time.time() - t0:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
