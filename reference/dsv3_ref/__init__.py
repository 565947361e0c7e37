"""dsv3_ref: independent float64 PyTorch reference of DeepSeek-V3 (see docs/reference.md)."""
from .config import Config, Rope, yarn_get_m
from .model import DeepseekV3, LatentCache
from .weights import load_model_dir, master_weights, to_storage, decode_storage, build_model
