#!/usr/bin/python3
"""Independent PyTorch reference for the FP8 recipe (V3_SPEC.md sections 6.2 and 8; docs/fp8.md).

What it does:
  * the tiled E4M3 quantiser of src/fp8/quantize.h, in torch float64, with its own E4M3 rounding: the
    nearest of the 127 non-negative finite E4M3 values found by binary search over the value table,
    ties to the even code (torch 1.13 has no float8 dtype, and this does not share an algorithm with the
    C++ bit-twiddling codec);
  * `--out DIR`: writes DIR/quant.safetensors with input tensors (random, zeros, tiny/subnormal, exact
    midpoints, saturation, NaN/Inf, partial tiles) and their codes and scales for the tile shapes 1x128,
    128x128 and 128x1 in both scale modes (amax, pow2);
  * `--check-convert FP8_DIR --against BF16_DIR --direction to_bf16|to_fp8`: reads the safetensors bytes
    of both directories. to_bf16: decodes every F8_E4M3 code with the table, multiplies by
    weight_scale_inv (128x128) in float64 and checks that its single BF16 rounding equals the BF16
    directory's value; to_fp8: checks codes and scales equal the 128x128 block quantiser
    (dsv3_ref.numerics) applied to the BF16 values. Every other tensor must be bitwise equal. Prints
    one line per failure; exit 1 on any. loaded_f32: BF16_DIR instead holds the F32 values a loader made
    from FP8_DIR; FP8 weights must equal float32(code * scale) (the exact product rounded once), BF16
    tensors their exact decoding.
What it doesn't: any GEMM (the C++ tests compare against a float64 GEMM of dequantised operands).
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dsv3_ref.safetensors_io import read_safetensors, write_safetensors  # noqa: E402

E4M3_MAX = 448.0
AMAX_FLOOR = torch.tensor(1e-4, dtype=torch.float32)   # the f32 value of 1e-4
TILE = 128


def e4m3_value_table():
    """float64 [256]: value of every code (NaN for S.1111.111)."""
    out = torch.empty(256, dtype=torch.float64)
    for c in range(256):
        sign = -1.0 if c & 0x80 else 1.0
        e, m = (c >> 3) & 0xF, c & 7
        if e == 15 and m == 7:
            out[c] = float("nan")
        elif e == 0:
            out[c] = sign * (m / 8.0) * 2.0 ** -6
        else:
            out[c] = sign * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return out


E4M3 = e4m3_value_table()
POS = E4M3[:127]                      # codes 0..126: 0 .. 448, strictly increasing


def e4m3_rne(q):
    """float64 tensor (finite) -> uint8 codes: nearest finite E4M3 value, ties to the even code,
    |q| beyond 448 saturates; the sign is kept (also for results of zero)."""
    a = q.abs().clamp(max=E4M3_MAX).contiguous()
    hi = torch.searchsorted(POS, a).clamp(max=126)          # first value >= a
    lo = (hi - 1).clamp(min=0)
    d_lo = a - POS[lo]
    d_hi = POS[hi] - a
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = torch.where(pick_hi, hi, lo)
    code = torch.where(torch.signbit(q), code + 128, code)
    return code.to(torch.uint8)


def tile_scale(amax32, mode):
    """amax (float32 tensor, finite) -> float32 scale."""
    s = torch.maximum(amax32, AMAX_FLOOR) / torch.tensor(E4M3_MAX, dtype=torch.float32)  # IEEE f32 division
    if mode == "pow2":
        m, e = torch.frexp(s.to(torch.float64))           # s = m * 2^e, m in [0.5, 1)
        s = torch.where(m == 0.5, s.to(torch.float64), torch.ldexp(torch.ones_like(m), e)).to(torch.float32)
    return s


def quantize_tiles(x, tr, tc, mode):
    """x float32 [R, C] -> (codes uint8 [R, C], scales float32 [ceil(R/tr), ceil(C/tc)])."""
    R, C = x.shape
    nr, nc = -(-R // tr), -(-C // tc)
    x64 = x.to(torch.float64)
    pad = torch.zeros(nr * tr, nc * tc, dtype=torch.float64)
    pad[:R, :C] = x64
    tiles = pad.reshape(nr, tr, nc, tc)
    finite = torch.isfinite(tiles).all(dim=3).all(dim=1)
    amax = tiles.abs().nan_to_num(0.0, 0.0, 0.0).amax(dim=3).amax(dim=1).to(torch.float32)  # exact: f32 inputs
    scale = tile_scale(amax, mode)
    scale = torch.where(finite, scale, torch.tensor(float("nan"), dtype=torch.float32))
    full = scale.to(torch.float64).repeat_interleave(tr, 0).repeat_interleave(tc, 1)[:R, :C]
    q = x64 / full
    codes = e4m3_rne(torch.where(torch.isfinite(q), q, torch.zeros_like(q)))
    bad = ~finite.repeat_interleave(tr, 0).repeat_interleave(tc, 1)[:R, :C]
    codes[bad] = 0x7F
    return codes, scale


# ---------------------------------------------------------------- fixture cases
def midpoint_matrix(g, R, C):
    """Every 1x128, 128x1 and 128x128 tile holds 448 (on the wrapped diagonal), so every scale is exactly 1
    in both modes and the quotient is the value itself: exact E4M3 midpoints exercise ties-to-even."""
    finite = POS[:127]
    idx = torch.randint(0, 126, (R, C), generator=g)
    mids = (finite[idx] + finite[idx + 1]) / 2                 # exact in f32 (<= 5 significant bits)
    sign = torch.where(torch.rand(R, C, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    x = (mids * sign).to(torch.float32)
    # a few exact codes, and f32 values one ulp inside a midpoint
    x[1::7, ::5] = finite[idx[1::7, ::5]].to(torch.float32)
    m32 = x[2::11, ::3]
    x[2::11, ::3] = torch.nextafter(m32, torch.zeros_like(m32))
    r = torch.arange(R)
    for c0 in range(0, C, TILE):
        cols = c0 + (r % TILE)
        keep = cols < C
        x[r[keep], cols[keep]] = 448.0
    return x


def cases():
    g = torch.Generator().manual_seed(20240601)
    out = {}
    rows_mag = torch.pow(10.0, torch.empty(131, 1).uniform_(-3, 3, generator=g))
    cols_mag = torch.pow(10.0, torch.empty(1, 300).uniform_(-1, 1, generator=g))
    out["random"] = (torch.randn(131, 300, generator=g, dtype=torch.float64) * rows_mag * cols_mag).float()
    out["zeros"] = torch.zeros(3, 130, dtype=torch.float32)
    tiny = torch.randn(129, 257, generator=g, dtype=torch.float64) * 1e-6
    tiny[:, 200:] *= 1e-30                                      # f32 subnormal inputs
    tiny[5, :] = 0.0
    out["tiny"] = tiny.float()
    out["midpoints"] = midpoint_matrix(g, 130, 260)
    big = torch.randn(129, 129, generator=g, dtype=torch.float64) * 1e36
    big[0, 0] = 3.3e38
    out["big"] = big.float()
    sat = torch.randn(128, 256, generator=g, dtype=torch.float64) * 7.0
    sat[::3, ::2] = torch.sign(sat[::3, ::2]) * 7.0 * 3.1               # many values at +-amax
    out["saturate"] = sat.float()
    nf = torch.randn(130, 260, generator=g, dtype=torch.float64).float()
    nf[5, 7] = float("nan")
    nf[100, 200] = float("inf")
    nf[129, 3] = float("-inf")
    out["nonfinite"] = nf
    out["edge_1x1"] = torch.tensor([[-0.3]], dtype=torch.float32)
    return out


def write_fixtures(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for name, x in cases().items():
        tensors[f"{name}.x"] = ("F32", x.numpy())
        for tr, tc in ((1, TILE), (TILE, TILE), (TILE, 1)):
            for mode in ("amax", "pow2"):
                codes, scale = quantize_tiles(x, tr, tc, mode)
                key = f"{name}.{tr}x{tc}.{mode}"
                tensors[key + ".codes"] = ("U8", codes.numpy())
                tensors[key + ".scales"] = ("F32", scale.numpy())
    write_safetensors(os.path.join(out_dir, "quant.safetensors"), tensors, {"format": "pt"})


# ---------------------------------------------------------------- converted checkpoints
def load_dir(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        t, _ = read_safetensors(f)
        out.update(t)
    return out


def bf16_values(raw):
    return torch.from_numpy((raw.astype(np.uint32) << 16).view(np.float32).copy()).to(torch.float64)


def bf16_rne(v):
    """float64 tensor -> float64 values rounded once to BF16 (8 significant bits, RNE; normal range)."""
    m, e = torch.frexp(v)                       # v = m * 2^e, |m| in [0.5, 1)
    return torch.ldexp(torch.round(m * 256.0) / 256.0, e)   # torch.round: half to even


def check_convert(fp8_dir, bf16_dir, direction):
    """direction "to_bf16": bf16_dir was made from fp8_dir (values = BF16 RNE of code * scale);
    "to_fp8": fp8_dir was made from bf16_dir (codes and scales = the 128x128 block quantiser of the
    BF16 values, dsv3_ref.numerics). Every other tensor must be bitwise equal."""
    from dsv3_ref.numerics import fp8_block_quantize
    fp8, bf = load_dir(fp8_dir), load_dir(bf16_dir)
    fails = []
    n_fp8 = 0
    for name, (dtype, raw) in fp8.items():
        if name.endswith(".weight_scale_inv"):
            continue
        if name not in bf:
            fails.append(f"{name}: missing from {bf16_dir}")
            continue
        bdt, braw = bf[name]
        if direction == "loaded_f32":
            # bf16_dir holds F32 values as a loader computed them from fp8_dir
            if bdt != "F32":
                fails.append(f"{name}: {bdt} in the F32 directory")
                continue
            got = torch.from_numpy(braw.astype(np.float64))
            if dtype == "F8_E4M3":
                n_fp8 += 1
                codes = torch.from_numpy(raw.astype(np.int64))
                s = torch.from_numpy(fp8[name + "_scale_inv"][1].astype(np.float64))
                R, C = codes.shape
                want = E4M3[codes] * s.repeat_interleave(TILE, 0).repeat_interleave(TILE, 1)[:R, :C]
                want = want.to(torch.float32).to(torch.float64)        # one rounding of the exact product
            elif dtype == "BF16":
                want = bf16_values(raw)
            else:
                want = torch.from_numpy(raw.astype(np.float64))
            if not torch.equal(got, want):
                fails.append(f"{name}: loaded values differ from the decoded {dtype} tensor")
            continue
        if dtype == "F8_E4M3":
            n_fp8 += 1
            sname = name + "_scale_inv"
            if sname not in fp8 or fp8[sname][0] != "F32":
                fails.append(f"{sname}: missing or not F32")
                continue
            if bdt != "BF16":
                fails.append(f"{name}: {bdt} in the BF16 directory")
                continue
            codes = torch.from_numpy(raw.astype(np.int64))
            s = torch.from_numpy(fp8[sname][1].astype(np.float64))
            R, C = codes.shape
            if tuple(s.shape) != (-(-R // TILE), -(-C // TILE)):
                fails.append(f"{sname}: shape {tuple(s.shape)} for weight {R}x{C}")
                continue
            if direction == "to_bf16":
                vals = E4M3[codes] * s.repeat_interleave(TILE, 0).repeat_interleave(TILE, 1)[:R, :C]
                if not torch.equal(bf16_rne(vals), bf16_values(braw)):
                    fails.append(f"{name}: BF16 tensor is not the rounded dequantised FP8 weight")
            else:
                want_codes, want_scale = fp8_block_quantize(bf16_values(braw).numpy())
                if not np.array_equal(want_codes, raw):
                    fails.append(f"{name}: codes differ from the reference quantiser")
                if not np.array_equal(want_scale.view(np.uint32), fp8[sname][1].view(np.uint32)):
                    fails.append(f"{sname}: scales differ from the reference quantiser")
        else:
            if dtype != bdt or raw.shape != braw.shape or raw.tobytes() != braw.tobytes():
                fails.append(f"{name}: {dtype}{list(raw.shape)} differs from {bdt}{list(braw.shape)}")
    extra = set(n for n in bf if n not in fp8 and not n.endswith("_scale_inv"))
    if extra:
        fails.append(f"{len(extra)} tensors only in {bf16_dir}, e.g. {sorted(extra)[0]}")
    for f in fails:
        print("FAIL", f)
    print(f"checked {len(fp8)} tensors ({n_fp8} FP8), {len(fails)} failures")
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the quantiser fixtures here")
    ap.add_argument("--check-convert", metavar="FP8_DIR")
    ap.add_argument("--against", metavar="BF16_DIR")
    ap.add_argument("--direction", choices=["to_bf16", "to_fp8", "loaded_f32"], default="to_bf16")
    a = ap.parse_args()
    if a.check_convert:
        if not a.against:
            ap.error("--check-convert needs --against")
        return check_convert(a.check_convert, a.against, a.direction)
    if not a.out:
        ap.error("--out or --check-convert is required")
    write_fixtures(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
