#!/usr/bin/python3
"""Independent check of dsv3's safetensors / npy files, using only json + numpy (no safetensors, no torch).

Called by tests/io/test_safetensors.cpp and test_npy.cpp. Every tensor holds the same deterministic values
on both sides, element i (flat, C order):
    float dtypes: ((7*i) % 17 - 8) / 4      (exact in every float format down to FP8)
    signed ints : (7*i) % 17 - 8
    U8          : (7*i) % 251
    BOOL        : i % 3 == 0
Modes:
    check PATH        validate the file's layout byte by byte and every tensor's values; exit 0 if all good
    write PATH        write a file covering every dtype the way the HF library lays it out, plus metadata
    npy_check PATH DTYPE   np.load PATH and compare with the formula (DTYPE: numpy name, e.g. float32)
    npy_write DIR     write a.npy (float32 [2,3,4]), b.npy (int64 [5]), c.npy (bool scalar),
                      f.npy (Fortran-ordered float64 [3,4]) with np.save
"""
import json
import struct
import sys

import numpy as np

DTYPES = ["BOOL", "U8", "I8", "I16", "I32", "I64", "F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"]
SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "F16": 2, "BF16": 2, "F32": 4, "F64": 8,
        "F8_E4M3": 1, "F8_E5M2": 1}


def expected(dtype, n):
    i = np.arange(n, dtype=np.int64)
    if dtype == "BOOL":
        return (i % 3 == 0).astype(np.float64)
    if dtype == "U8":
        return ((7 * i) % 251).astype(np.float64)
    v = ((7 * i) % 17 - 8).astype(np.float64)
    return v if dtype.startswith("I") else v / 4


def decode_fp8(bits, ebits, mbits, bias):
    """Decodes FP8 codes from their bit fields (only finite codes are meaningful here)."""
    b = bits.astype(np.int64)
    s = (b >> (ebits + mbits)) & 1
    e = (b >> mbits) & ((1 << ebits) - 1)
    m = b & ((1 << mbits) - 1)
    sub = np.ldexp(m / (1 << mbits), 1 - bias)
    norm = np.ldexp(1 + m / (1 << mbits), e - bias)
    v = np.where(e == 0, sub, norm)
    return np.where(s == 1, -v, v)


def decode(dtype, raw, n):
    if dtype == "BOOL":
        a = np.frombuffer(raw, dtype=np.uint8, count=n)
        assert np.all(a <= 1), "BOOL bytes must be 0 or 1"
        return a.astype(np.float64)
    if dtype == "BF16":
        u = np.frombuffer(raw, dtype="<u2", count=n).astype(np.uint32) << 16
        return u.view(np.float32).astype(np.float64)
    if dtype == "F8_E4M3":
        return decode_fp8(np.frombuffer(raw, dtype=np.uint8, count=n), 4, 3, 7)
    if dtype == "F8_E5M2":
        return decode_fp8(np.frombuffer(raw, dtype=np.uint8, count=n), 5, 2, 15)
    np_name = {"U8": "u1", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "F16": "<f2", "F32": "<f4",
               "F64": "<f8"}[dtype]
    return np.frombuffer(raw, dtype=np_name, count=n).astype(np.float64)


def encode(dtype, vals):
    if dtype == "BOOL":
        return vals.astype(np.uint8).tobytes()
    if dtype == "BF16":
        return (vals.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()  # exact values: no rounding
    if dtype in ("F8_E4M3", "F8_E5M2"):
        ebits, mbits, bias = (4, 3, 7) if dtype == "F8_E4M3" else (5, 2, 15)
        table = decode_fp8(np.arange(256), ebits, mbits, bias)
        codes = [int(np.nonzero(table == v)[0][0]) for v in vals]  # first match: +0 for 0
        return bytes(codes)
    np_name = {"U8": "u1", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "F16": "<f2", "F32": "<f4",
               "F64": "<f8"}[dtype]
    return vals.astype(np_name).tobytes()


def fail(msg):
    print("safetensors_check: " + msg)
    sys.exit(1)


def check(path):
    data = open(path, "rb").read()
    if len(data) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n % 8 != 0:
        fail("header length %d is not a multiple of 8" % n)
    text = data[8:8 + n].decode("utf-8")
    if not text.startswith("{"):
        fail("header does not start with '{'")
    body = text.rstrip(" ")
    if not body.endswith("}") or len(text) - len(body) > 7:
        fail("header padding is not 0..7 trailing spaces")
    header = json.loads(text)
    meta = header.pop("__metadata__", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        fail("__metadata__ must map strings to strings")
    payload = data[8 + n:]
    spans = sorted((info["data_offsets"][0], info["data_offsets"][1], name) for name, info in header.items())
    pos = 0
    for b, e, name in spans:
        if b != pos:
            fail("tensor %s starts at %d, expected %d" % (name, b, pos))
        pos = e
    if pos != len(payload):
        fail("tensors cover %d bytes, data section has %d" % (pos, len(payload)))
    for name, info in header.items():
        dtype, shape = info["dtype"], info["shape"]
        b, e = info["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if e - b != count * SIZE[dtype]:
            fail("tensor %s: %d bytes for %d elements of %s" % (name, e - b, count, dtype))
        got = decode(dtype, payload[b:e], count)
        want = expected(dtype, count)
        if not np.array_equal(got, want):
            fail("tensor %s (%s): values differ, first got %s want %s" % (name, dtype, got[:6], want[:6]))
    print("OK %d tensors, metadata %s" % (len(header), json.dumps(meta, sort_keys=True)))


def write(path):
    # Header in one order, data in another (reverse), like files from other writers may be.
    shapes = {"BOOL": [7], "U8": [300], "I8": [4, 5], "I16": [3, 2, 2], "I32": [17], "I64": [2, 3], "F16": [9],
              "BF16": [3, 5], "F32": [2, 3, 4], "F64": [5], "F8_E4M3": [2, 17], "F8_E5M2": [17]}
    tensors = [("t." + d.lower(), d, shapes[d]) for d in DTYPES] + [("scalar", "F32", []), ("empty", "BF16", [0, 3])]
    blobs = {name: encode(d, expected(d, int(np.prod(s, dtype=np.int64)))) for name, d, s in tensors}
    header = {"__metadata__": {"format": "pt", "writer": "numpy"}}
    pos = 0
    offsets = {}
    for name, _, _ in reversed(tensors):
        offsets[name] = [pos, pos + len(blobs[name])]
        pos += len(blobs[name])
    for name, d, s in tensors:
        header[name] = {"dtype": d, "shape": s, "data_offsets": offsets[name]}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, _, _ in reversed(tensors):
            f.write(blobs[name])
    print("OK wrote %d tensors" % len(tensors))


def npy_check(path, dtype):
    a = np.load(path)
    if a.dtype != np.dtype(dtype):
        fail("dtype %s, expected %s" % (a.dtype, dtype))
    kind = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64",
            "float16": "F16", "float32": "F32", "float64": "F64"}[dtype]
    if not np.array_equal(a.reshape(-1).astype(np.float64), expected(kind, a.size)):
        fail("values differ")
    print("OK shape %s" % (list(a.shape),))


def npy_write(d):
    np.save(d + "/a.npy", expected("F32", 24).astype(np.float32).reshape(2, 3, 4))
    np.save(d + "/b.npy", expected("I64", 5).astype(np.int64))
    np.save(d + "/c.npy", np.array(True))
    np.save(d + "/f.npy", np.asfortranarray(expected("F64", 12).reshape(3, 4)))
    print("OK")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "check":
        check(sys.argv[2])
    elif mode == "write":
        write(sys.argv[2])
    elif mode == "npy_check":
        npy_check(sys.argv[2], sys.argv[3])
    elif mode == "npy_write":
        npy_write(sys.argv[2])
    else:
        fail("unknown mode " + mode)
