// `dsv3 convert`: rewrite a Hugging Face DeepSeek-V3 model directory in the FP8 checkpoint format or in BF16
// (V3_SPEC.md §6.2; docs/fp8.md).
//
//   to FP8:  every Linear weight the real checkpoint stores in FP8 (TensorRole::kLinear: attention, dense MLP,
//            shared and routed experts, of the main layers and the MTP layer's decoder) becomes F8_E4M3 codes +
//            an F32 `<name>_scale_inv` [ceil(out/128), ceil(in/128)] (core/fp8_block.h quantizer); every other
//            tensor is BF16 except `e_score_correction_bias` (F32). config.json gets the real checkpoint's
//            quantization_config {"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8",
//            "weight_block_size":[128,128]} and torch_dtype "bfloat16".
//   to BF16: FP8 weights are dequantized (code·scale formed exactly, rounded once to BF16), scales dropped,
//            router bias stays F32, the rest BF16; quantization_config is removed from config.json.
// Input tensors may be F32, F16, BF16 or F8_E4M3 + scale_inv; every name must be in the tensor table.
// The output mirrors the input's layout (same shard file names, an index when the input has one). Streamed:
// tensors are converted one at a time from the memory-mapped input into the open output shard. Atomic: the
// directory is built as OUT.tmp-<pid> and renamed into place at the end; an existing OUT is refused unless
// `force`. Every other config.json field is kept verbatim; tokenizer files and generation_config.json are copied.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace dsv3::fp8 {

enum class CheckpointFormat { kFp8, kBf16 };
// "fp8" or "bf16"; anything else is an error naming the accepted values.
CheckpointFormat parse_checkpoint_format(const std::string& s);

struct ConvertProgress {
  int64_t done = 0, total = 0;        // tensors written / to write
  uint64_t bytes_written = 0, bytes_total = 0;
  const std::string* name = nullptr;  // the tensor just written
};

struct ConvertOptions {
  std::string in_dir, out_dir;
  CheckpointFormat to = CheckpointFormat::kFp8;
  bool force = false;  // replace an existing out_dir
  std::function<void(const ConvertProgress&)> progress;
};

struct ConvertStats {
  int64_t n_tensors = 0, n_fp8 = 0;  // tensors written (scales included), FP8 weights among them
  uint64_t bytes_out = 0;            // tensor bytes written
};

ConvertStats convert_checkpoint(const ConvertOptions& opt);

// BF16 bits of the exact product e4m3(code)·scale, rounded once (RNE); NaN stays NaN.
uint16_t e4m3_scaled_to_bf16(uint8_t code, float scale);

}  // namespace dsv3::fp8
