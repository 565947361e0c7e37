"""Random weights for the reference fixtures, their checkpoint storage (f32 / bf16 / fp8) and
loading an HF model dir back into the float64 reference.

Independent of the C++ code: values come from torch.Generator(seed) in the order of
`DeepseekV3(cfg).state_dict()` (module registration order, == HF names), one
torch.randn(float64) draw per tensor, rounded to float32 ("master" weights).  The recipe
(documented in docs/reference.md) is chosen so that every layer contributes O(1) to the
residual stream, logits are O(1-10), and routing is decisive yet visibly moved by the bias:

  *norm*.weight (all RMSNorms)         1 + 0.1 N(0,1)
  model.embed_tokens.weight            1.0 N(0,1)
  lm_head.weight                       N(0,1) * 2/sqrt(D)            (logit std ~2)
  mlp.gate.weight (router)             N(0,1) * 2/sqrt(D)            (router logit std ~2)
  mlp.gate.e_score_correction_bias     0.1 N(0,1)
  every other Linear [out, in]         N(0,1) / sqrt(in)             (unit gain)

Storage (spec 6.1/6.2):
  f32  every tensor F32
  bf16 every tensor BF16 (RNE of the float32 master) except e_score_correction_bias F32
  fp8  q_a_proj, q_b_proj / q_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj and all
       gate/up/down_proj (dense, shared, routed, MTP layer) as F8_E4M3 + `<name>_scale_inv`
       F32 [ceil(out/128), ceil(in/128)]; e_score_correction_bias F32; everything else BF16
       (embeddings, heads, norms, router weight, eh_proj).
The checkpoint also stores `model.layers.{L}.embed_tokens.weight` and
`model.layers.{L}.shared_head.head.weight` for each MTP layer L (copies, same dtype).
"""
import json
import math
import os
from collections import OrderedDict

import numpy as np
import torch

from .config import Config
from .model import DeepseekV3, DTYPE
from .numerics import bf16_decode, bf16_encode, fp8_block_dequantize, fp8_block_quantize
from .safetensors_io import read_safetensors, write_safetensors

FP8_SUFFIXES = ("q_a_proj.weight", "q_b_proj.weight", "q_proj.weight", "kv_a_proj_with_mqa.weight",
                "kv_b_proj.weight", "o_proj.weight", "gate_proj.weight", "up_proj.weight",
                "down_proj.weight")
STORAGE_DTYPES = ("f32", "bf16", "fp8")
TORCH_DTYPE_NAME = {"f32": "float32", "bf16": "bfloat16", "fp8": "bfloat16"}
QUANTIZATION_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                       "weight_block_size": [128, 128]}

INIT_RECIPE = {
    "norm": "1 + 0.1*N(0,1)",
    "embed_tokens": "1.0*N(0,1)",
    "lm_head": "N(0,1)*2/sqrt(hidden_size)",
    "router_weight": "N(0,1)*2/sqrt(hidden_size)",
    "e_score_correction_bias": "0.1*N(0,1)",
    "linear": "N(0,1)/sqrt(in_features)",
    "order": "state_dict() order of DeepseekV3(cfg), one torch.randn(float64) per tensor from "
             "torch.Generator().manual_seed(seed), rounded to float32",
}


def _init_one(name, shape, g, cfg):
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    D = cfg.hidden_size
    leaf = name.split(".")[-2] if name.endswith(".weight") else name.split(".")[-1]
    if name.endswith("e_score_correction_bias"):
        v = 0.1 * z
    elif "norm" in leaf:                    # *_layernorm, norm, enorm, hnorm, shared_head.norm
        v = 1.0 + 0.1 * z
    elif name == "model.embed_tokens.weight":
        v = 1.0 * z
    elif name == "lm_head.weight":
        v = z * (2.0 / math.sqrt(D))
    elif name.endswith("mlp.gate.weight"):
        v = z * (2.0 / math.sqrt(D))
    else:
        assert name.endswith(".weight") and len(shape) == 2, name
        v = z / math.sqrt(shape[1])
    return v.to(torch.float32).numpy()


def master_weights(cfg: Config, seed: int):
    """-> OrderedDict HF name -> float32 numpy array (unique tensors; no MTP copies)."""
    model = DeepseekV3(cfg)
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for name, t in model.state_dict().items():
        out[name] = _init_one(name, tuple(t.shape), g, cfg)
    return out


def mtp_copy_names(cfg: Config):
    """(copy name, original name) pairs stored in a V3 checkpoint for each MTP layer."""
    pairs = []
    for k in range(cfg.num_nextn_predict_layers):
        li = cfg.num_hidden_layers + k
        pairs.append((f"model.layers.{li}.embed_tokens.weight", "model.embed_tokens.weight"))
        pairs.append((f"model.layers.{li}.shared_head.head.weight", "lm_head.weight"))
    return pairs


def is_fp8_tensor(name):
    return name.endswith(FP8_SUFFIXES)


def to_storage(master, cfg: Config, dtype: str):
    """master float32 dict -> dict name -> (safetensors dtype, raw numpy array)."""
    assert dtype in STORAGE_DTYPES, dtype
    full = OrderedDict(master)
    for copy, orig in mtp_copy_names(cfg):
        full[copy] = master[orig]
    out = OrderedDict()
    for name, w in full.items():
        if dtype == "f32" or name.endswith("e_score_correction_bias"):
            out[name] = ("F32", w.astype(np.float32))
        elif dtype == "fp8" and is_fp8_tensor(name):
            codes, scale = fp8_block_quantize(w)
            out[name] = ("F8_E4M3", codes)
            out[name + "_scale_inv"] = ("F32", scale)
        else:
            out[name] = ("BF16", bf16_encode(w))
    return out


def decode_storage(tensors):
    """dict name -> (dtype, raw) -> dict name -> float64 numpy (FP8 dequantised, scale_inv consumed)."""
    out = OrderedDict()
    for name, (dt, raw) in tensors.items():
        if name.endswith("_scale_inv"):
            if name[:-len("_scale_inv")] not in tensors:
                raise ValueError(f"{name} without its weight")
            continue
        if dt == "F8_E4M3":
            sname = name + "_scale_inv"
            if sname not in tensors:
                raise ValueError(f"FP8 tensor {name} without {sname}")
            sdt, scale = tensors[sname]
            if sdt != "F32":
                raise ValueError(f"{sname}: dtype {sdt}")
            out[name] = fp8_block_dequantize(raw, scale)
        elif dt == "BF16":
            out[name] = bf16_decode(raw).astype(np.float64)
        elif dt in ("F32", "F64", "F16"):
            out[name] = raw.astype(np.float64)
        else:
            raise ValueError(f"{name}: unsupported dtype {dt}")
    return out


def write_model_dir(path, cfg: Config, storage, dtype):
    """HF model dir: config.json (+quantization_config for fp8, torch_dtype) + model.safetensors."""
    os.makedirs(path, exist_ok=True)
    d = dict(cfg.raw)
    d["torch_dtype"] = TORCH_DTYPE_NAME[dtype]
    d.pop("quantization_config", None)
    if dtype == "fp8":
        d["quantization_config"] = dict(QUANTIZATION_CONFIG)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(path, "model.safetensors"), storage, {"format": "pt"})


def safetensors_files(path):
    """The weight files of a model dir: the shards named by model.safetensors.index.json, or model.safetensors."""
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def load_model_dir(path):
    """HF model dir (single model.safetensors or sharded with model.safetensors.index.json) ->
    (Config, float64 DeepseekV3 with the decoded weights)."""
    cfg = Config.from_json(os.path.join(path, "config.json"))
    tensors = {}
    for fn in safetensors_files(path):
        t, _ = read_safetensors(os.path.join(path, fn))
        tensors.update(t)
    return cfg, build_model(cfg, decode_storage(tensors))


def build_model(cfg: Config, state):
    """float64 numpy dict (HF names) -> DeepseekV3. Strict: every model tensor must be present;
    the only extra names allowed are the MTP embed/head copies, which must equal the originals."""
    model = DeepseekV3(cfg)
    own = model.state_dict()
    extra = set(state) - set(own)
    for copy, orig in mtp_copy_names(cfg):
        if copy in state:
            extra.discard(copy)
            if not np.array_equal(state[copy], state[orig]):
                raise ValueError(f"{copy} differs from {orig}")
    missing = set(own) - set(state)
    if missing or extra:
        raise ValueError(f"checkpoint mismatch: missing {sorted(missing)[:5]} extra {sorted(extra)[:5]}")
    new = OrderedDict()
    for name, t in own.items():
        v = torch.from_numpy(np.ascontiguousarray(state[name], dtype=np.float64))
        if tuple(v.shape) != tuple(t.shape):
            raise ValueError(f"{name}: shape {tuple(v.shape)} != {tuple(t.shape)}")
        new[name] = v.to(DTYPE)
    model.load_state_dict(new, strict=True)
    return model
