"""Minimal safetensors reader/writer (json + numpy), no dependency on the `safetensors` package.

File layout (https://github.com/huggingface/safetensors): 8-byte little-endian u64 N,
then an N-byte UTF-8 JSON header, then the data section.  The header maps each tensor
name to {"dtype", "shape", "data_offsets": [begin, end]} with offsets relative to the
start of the data section, plus an optional "__metadata__" str->str map.  We pad the
header with spaces so N is a multiple of 8 (the data section starts 8-aligned), write
tensors in sorted-name order, contiguous, little-endian, no gaps.
Raw storage dtypes are carried as numpy arrays of the matching width: BF16 as uint16
bits, F8_E4M3 as uint8 codes.
"""
import json
import struct

import numpy as np

# safetensors dtype -> numpy dtype of the raw stored elements
RAW_NUMPY = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "F8_E4M3": np.dtype("u1"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("u1"),
}


def write_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> (dtype_str, raw numpy array with RAW_NUMPY[dtype_str] element type)."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        dtype, arr = tensors[name]
        want = RAW_NUMPY[dtype]
        arr = np.asarray(arr)
        if arr.dtype.itemsize != want.itemsize or arr.dtype.kind != want.kind:
            raise ValueError(f"{name}: raw array dtype {arr.dtype} does not carry {dtype}")
        data = np.ascontiguousarray(arr, dtype=want).tobytes()
        header[name] = {"dtype": dtype, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((-len(hbytes)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """-> (dict name -> (dtype_str, raw numpy array), metadata dict).  Validates offsets."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: too short")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError(f"{path}: header length {n} past end of file")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    data = memoryview(buf)[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    spans = []
    for name, info in header.items():
        dtype = info["dtype"]
        shape = tuple(info["shape"])
        b, e = info["data_offsets"]
        nd = RAW_NUMPY[dtype]
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * nd.itemsize or e > len(data) or b < 0:
            raise ValueError(f"{path}: bad data_offsets for {name}")
        out[name] = (dtype, np.frombuffer(data[b:e], dtype=nd).reshape(shape).copy())
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:  # contiguous, non-overlapping, covering the data section
        if b != pos:
            raise ValueError(f"{path}: gap or overlap in data section at {b}")
        pos = e
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} trailing bytes")
    return out, meta
