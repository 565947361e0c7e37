"""Storage-format codecs for the reference, in plain numpy (V3_SPEC sections 6.2, 8).

What it does: BF16 round-to-nearest-even (RNE) encode/decode, FP8 E4M3 ("e4m3fn":
bias 7, no infinities, 0x7F/0xFF = NaN, max 448) RNE encode with saturation and
decode, and the 128x128 block quantiser used by DeepSeek-V3 checkpoints
(`weight_scale_inv` = per-block multiplier, scale = amax/448 over the real
elements of each, possibly partial, block).
What it doesn't: any compute in low precision; the reference always decodes the
stored values and computes in float64.
Invariants: every encoder is exact RNE of its input (float32 or float64);
decode(encode(decode(c))) == decode(c) for every finite code c.
"""
import numpy as np

E4M3_MAX = 448.0
FP8_BLOCK = 128


# ---------------------------------------------------------------- BF16
def bf16_encode(x):
    """float32 array (other floats are first rounded to float32) -> uint16 BF16 bits, RNE."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    u = x.view(np.uint32).astype(np.uint64)
    lsb = (u >> 16) & 1
    rounded = ((u + 0x7FFF + lsb) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():  # keep NaN a (quiet) NaN, never let rounding turn it into Inf
        rounded[nan] = ((u[nan] >> 16).astype(np.uint16) | 0x0040)
    return rounded


def bf16_decode(bits):
    """uint16 BF16 bits -> float32 (exact)."""
    b = np.ascontiguousarray(np.asarray(bits, dtype=np.uint16))
    return (b.astype(np.uint32) << 16).view(np.float32)


def bf16_round(x):
    """Value of x after storage as BF16, as float32."""
    return bf16_decode(bf16_encode(x))


# ---------------------------------------------------------------- FP8 E4M3
def _e4m3_table():
    vals = np.zeros(256, dtype=np.float64)
    for c in range(256):
        s = -1.0 if c & 0x80 else 1.0
        e = (c >> 3) & 0xF
        m = c & 0x7
        if e == 0xF and m == 0x7:
            vals[c] = np.nan
        elif e == 0:
            vals[c] = s * m * 2.0 ** -9          # subnormal: m/8 * 2^-6
        else:
            vals[c] = s * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return vals


E4M3_VALUES = _e4m3_table()   # float64 [256], code -> value (NaN for 0x7F, 0xFF)


def e4m3_decode(codes):
    """uint8 codes -> float64 values (exact)."""
    return E4M3_VALUES[np.asarray(codes, dtype=np.uint8)]


def e4m3_encode(x):
    """float array -> uint8 E4M3 codes: exact round-to-nearest-even, saturating to +-448.

    |x| >= 448 (incl. +-inf) -> +-448 (code 0x7E/0xFE); NaN -> 0x7F; values that
    round to zero keep their sign (0x00 / 0x80).
    """
    x = np.asarray(x, dtype=np.float64)
    sign = np.signbit(x).astype(np.uint8) << 7
    a = np.abs(x)
    nan = np.isnan(a)
    a = np.where(nan, 0.0, np.minimum(a, E4M3_MAX))
    # exponent of the binade: a = mant * 2^e2, mant in [0.5, 1)  -> floor(log2 a) = e2 - 1
    _, e2 = np.frexp(a)
    e = np.maximum(e2.astype(np.int64) - 1, -6)          # below 2^-6: subnormal quantum 2^-9
    quantum = np.ldexp(1.0, (e - 3).astype(np.int32))    # 3 mantissa bits
    q = np.rint(a / quantum)                             # exact division by a power of 2; rint = RNE
    v = q * quantum                                      # representable (may be 2^(e+1): next binade)
    v = np.minimum(v, E4M3_MAX)
    # value -> code
    _, ve2 = np.frexp(v)
    ve = ve2.astype(np.int64) - 1
    normal = v >= 2.0 ** -6
    exp_field = np.where(normal, ve + 7, 0)
    mant_field = np.where(normal,
                          np.rint(np.ldexp(v, (-ve).astype(np.int32)) * 8.0 - 8.0),
                          np.rint(v * 2.0 ** 9))
    code = (exp_field.astype(np.int64) << 3) | mant_field.astype(np.int64)
    code = code.astype(np.uint8) | sign
    code = np.where(nan, np.uint8(0x7F), code).astype(np.uint8)
    return code


# ---------------------------------------------------------------- 128x128 block quantiser
def n_blocks(n, block=FP8_BLOCK):
    return (n + block - 1) // block


def fp8_block_quantize(w, block=FP8_BLOCK):
    """w [out, in] (float32, or float64 e.g. dequantised values) -> (codes uint8 [out, in],
    scale_inv float32 [ceil(out/128), ceil(in/128)]).

    Per block: scale = float32(amax(|w_block|) / 448), amax over the real elements (a partial
    edge block is treated as zero-padded); for float32 input this equals the float32 division.
    codes = RNE(w / scale) of the quotient computed in float64 (exact enough that no double
    rounding occurs for float32 w).  An all-zero block gets scale 1.0 (codes 0).
    """
    w = np.asarray(w)
    if w.dtype != np.float64:
        w = w.astype(np.float32)
    w = w.astype(np.float64)
    assert w.ndim == 2
    out_dim, in_dim = w.shape
    nb_o, nb_i = n_blocks(out_dim, block), n_blocks(in_dim, block)
    pad = np.zeros((nb_o * block, nb_i * block), dtype=np.float64)
    pad[:out_dim, :in_dim] = np.abs(w)
    amax = pad.reshape(nb_o, block, nb_i, block).max(axis=(1, 3))
    scale = (amax / E4M3_MAX).astype(np.float32)
    scale = np.where(amax == 0, np.float32(1.0), scale).astype(np.float32)
    full = np.repeat(np.repeat(scale.astype(np.float64), block, 0), block, 1)[:out_dim, :in_dim]
    codes = e4m3_encode(w / full)
    return codes, scale


def fp8_block_dequantize(codes, scale_inv, block=FP8_BLOCK):
    """codes uint8 [out, in], scale_inv f32 [nb_o, nb_i] -> float64 code*scale (exact in float64)."""
    codes = np.asarray(codes, dtype=np.uint8)
    out_dim, in_dim = codes.shape
    s = np.asarray(scale_inv, dtype=np.float32).astype(np.float64)
    assert s.shape == (n_blocks(out_dim, block), n_blocks(in_dim, block)), (s.shape, codes.shape)
    full = np.repeat(np.repeat(s, block, 0), block, 1)[:out_dim, :in_dim]
    return e4m3_decode(codes) * full
