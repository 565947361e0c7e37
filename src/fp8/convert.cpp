// Checkpoint conversion FP8 <-> BF16 (see convert.h).
#include "fp8/convert.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/dtype.h"
#include "core/fp8_block.h"
#include "dsv3/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/tensor_names.h"

namespace dsv3::fp8 {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

constexpr int64_t kBlock = 128;
const char* const kCopiedFiles[] = {"tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                    "special_tokens_map.json", "generation_config.json"};

// One tensor of an output shard: its name, stored dtype and shape, and how to produce its bytes.
struct OutTensor {
  std::string name;
  DType dtype;
  Shape shape;
  std::string source;      // input tensor it is made from
  bool is_scale = false;   // the weight_scale_inv produced together with the preceding FP8 weight
  uint64_t nbytes() const { return uint64_t(shape_numel(shape)) * dtype_size(dtype); }
};

struct OutShard {
  std::string file;  // basename, as in the input
  std::vector<OutTensor> tensors;
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  DSV3_CHECK(in, "cannot read ", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// F32 copy of an input tensor; FP8 weights are dequantized with their scale (f32 product, as the loader).
Tensor input_f32(const io::SafetensorsModel& st, const std::string& name) {
  const Tensor raw = st.get(name);
  if (raw.dtype != DType::F8_E4M3) return raw.to_f32();
  const Tensor scale = st.get(name + "_scale_inv").to_f32();
  Tensor out = Tensor::empty(raw.shape);
  fp8_block_dequantize(raw.ptr<uint8_t>(), scale.f32(), raw.shape[0], raw.shape[1], kBlock, kBlock, out.f32());
  return out;
}

// BF16 bytes of an input tensor: BF16 copied, FP8 dequantized exactly then rounded once, others rounded.
Tensor input_bf16(const io::SafetensorsModel& st, const std::string& name) {
  const Tensor raw = st.get(name);
  Tensor out = Tensor::empty(raw.shape, DType::BF16);
  uint16_t* o = out.ptr<uint16_t>();
  const int64_t n = raw.numel();
  if (raw.dtype == DType::BF16) {
    std::memcpy(o, raw.data, size_t(n) * 2);
  } else if (raw.dtype == DType::F8_E4M3) {
    const Tensor scale = st.get(name + "_scale_inv").to_f32();
    const int64_t R = raw.shape[0], C = raw.shape[1], nbc = ceil_div(C, kBlock);
    const uint8_t* c = raw.ptr<uint8_t>();
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t j = 0; j < C; ++j)
        o[r * C + j] = e4m3_scaled_to_bf16(c[r * C + j], scale.f32()[(r / kBlock) * nbc + j / kBlock]);
  } else {
    const Tensor f = raw.to_f32();
    convert_from_f32(DType::BF16, f.f32(), o, size_t(n));
  }
  return out;
}

// Checks the input tensor set against the table and plans the output shards.
std::vector<OutShard> plan_output(const io::SafetensorsModel& st, const ModelConfig& cfg, CheckpointFormat to) {
  std::map<std::string, TensorSpec> specs;
  for (const TensorSpec& s : weight_specs(cfg)) specs.emplace(s.name, s);
  std::vector<OutShard> shards;
  for (const auto& file : st.files()) {
    OutShard sh;
    sh.file = fs::path(file->path()).filename().string();
    for (const io::TensorInfo& info : file->tensors()) {
      const std::string& name = info.name;
      if (name.ends_with("_scale_inv")) {
        const std::string base = name.substr(0, name.size() - 10);
        DSV3_CHECK(st.has(base) && st.info(base).dtype == DType::F8_E4M3, "tensor ", name, " in ", info.file,
                   " is a scale without an F8_E4M3 weight ", base);
        continue;  // read with its weight; written again only next to an FP8 output
      }
      auto it = specs.find(name);
      DSV3_CHECK(it != specs.end(), "tensor ", name, " in ", info.file,
                 " is not a DeepSeek-V3 tensor of this config (", cfg.num_hidden_layers, " layers, ",
                 cfg.n_routed_experts, " routed experts)");
      const TensorSpec& s = it->second;
      DSV3_CHECK(info.shape == s.shape, "tensor ", name, " in ", info.file, " has shape ", shape_str(info.shape),
                 ", expected ", shape_str(s.shape), " for this config");
      DSV3_CHECK(info.dtype == DType::F32 || info.dtype == DType::BF16 || info.dtype == DType::F16 ||
                     info.dtype == DType::F8_E4M3,
                 "tensor ", name, " in ", info.file, " has dtype ", dtype_name(info.dtype),
                 "; convert reads F32, F16, BF16 and F8_E4M3");
      if (info.dtype == DType::F8_E4M3) {
        DSV3_CHECK(s.shape.size() == 2, "tensor ", name, " is F8_E4M3 but not a matrix");
        const std::string sname = name + "_scale_inv";
        const Shape want = {ceil_div(s.shape[0], kBlock), ceil_div(s.shape[1], kBlock)};
        DSV3_CHECK(st.has(sname), "tensor ", name, " is F8_E4M3 but its scale ", sname, " is missing");
        DSV3_CHECK(st.info(sname).shape == want, "scale ", sname, " has shape ", shape_str(st.info(sname).shape),
                   ", expected ", shape_str(want), " (128x128 blocks)");
      }
      if (to == CheckpointFormat::kFp8 && role_is_fp8(s.role)) {
        sh.tensors.push_back({name, DType::F8_E4M3, s.shape, name, false});
        sh.tensors.push_back({name + "_scale_inv", DType::F32,
                              {ceil_div(s.shape[0], kBlock), ceil_div(s.shape[1], kBlock)}, name, true});
      } else {
        const DType dt = s.role == TensorRole::kRouterBias ? DType::F32 : DType::BF16;
        sh.tensors.push_back({name, dt, s.shape, name, false});
      }
    }
    shards.push_back(std::move(sh));
  }
  return shards;
}

// safetensors header of a shard: {"__metadata__": {"format": "pt"}, name: {dtype, shape, data_offsets}...},
// padded with spaces to a multiple of 8.
std::string shard_header(const OutShard& sh) {
  ojson h = ojson::object();
  h["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  for (const OutTensor& t : sh.tensors) {
    h[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string s = h.dump();
  s.append((8 - s.size() % 8) % 8, ' ');
  return s;
}

void write_shard(const io::SafetensorsModel& st, const OutShard& sh, const fs::path& path, ConvertStats& stats,
                 ConvertProgress& prog, const ConvertOptions& opt) {
  const std::string header = shard_header(sh);
  io::atomic_write_file(path.string(), [&](std::FILE* f) {
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t(header.size()) >> (8 * i));
    io::fwrite_checked(f, len, 8, path.string());
    io::fwrite_checked(f, header.data(), header.size(), path.string());
    Tensor pending_scale;  // the scale of the FP8 weight just written
    for (const OutTensor& t : sh.tensors) {
      Tensor out;
      if (t.is_scale) {
        out = pending_scale;
        pending_scale = Tensor();
      } else if (t.dtype == DType::F8_E4M3) {
        const Tensor w = input_f32(st, t.source);
        out = Tensor::empty(t.shape, DType::F8_E4M3);
        pending_scale = Tensor::empty({ceil_div(t.shape[0], kBlock), ceil_div(t.shape[1], kBlock)}, DType::F32);
        fp8_block_quantize(w.f32(), t.shape[0], t.shape[1], kBlock, kBlock, out.ptr<uint8_t>(), pending_scale.f32());
        ++stats.n_fp8;
      } else if (t.dtype == DType::BF16) {
        out = input_bf16(st, t.source);
      } else {
        out = input_f32(st, t.source);
      }
      DSV3_CHECK(out.nbytes() == t.nbytes(), "internal: ", t.name, " produced ", out.nbytes(), " bytes, planned ",
                 t.nbytes());
      io::fwrite_checked(f, out.data, out.nbytes(), path.string());
      ++stats.n_tensors;
      stats.bytes_out += out.nbytes();
      prog.done += 1;
      prog.bytes_written += out.nbytes();
      prog.name = &t.name;
      if (opt.progress) opt.progress(prog);
    }
  });
}

void write_index(const std::vector<OutShard>& shards, const fs::path& in_index, const fs::path& out_index) {
  ojson in = ojson::parse(read_text(in_index), nullptr, false);
  DSV3_CHECK(!in.is_discarded() && in.is_object(), "cannot parse ", in_index.string());
  ojson md = in.contains("metadata") && in["metadata"].is_object() ? in["metadata"] : ojson::object();
  uint64_t total = 0;
  ojson wm = ojson::object();
  std::map<std::string, std::string> sorted;
  for (const OutShard& sh : shards)
    for (const OutTensor& t : sh.tensors) {
      total += t.nbytes();
      sorted.emplace(t.name, sh.file);
    }
  for (const auto& [n, f] : sorted) wm[n] = f;
  md["total_size"] = total;
  ojson out = ojson::object();
  out["metadata"] = md;
  out["weight_map"] = wm;
  io::atomic_write_file(out_index.string(), out.dump(2) + "\n");
}

}  // namespace

CheckpointFormat parse_checkpoint_format(const std::string& s) {
  if (s == "fp8") return CheckpointFormat::kFp8;
  if (s == "bf16") return CheckpointFormat::kBf16;
  DSV3_FAIL("unsupported target format \"", s, "\": convert writes fp8 or bf16");
}

uint16_t e4m3_scaled_to_bf16(uint8_t code, float scale) {
  const double v = double(e4m3_to_f32(code)) * double(scale);  // exact: 4 × 24 significant bits
  if (std::isnan(v)) return f32_to_bf16(NAN);
  // Round to f32 with round-to-odd (truncate, then set the last bit if inexact), then RNE to BF16: with 16
  // spare bits this equals a single RNE rounding of v.
  float f = float(v);
  if (double(f) != v && std::isfinite(f)) {
    if (std::fabs(double(f)) > std::fabs(v)) f = std::nextafter(f, 0.0f);
    f = bits_f32(f32_bits(f) | 1u);
  }
  return f32_to_bf16(f);
}

ConvertStats convert_checkpoint(const ConvertOptions& opt) {
  const fs::path in(opt.in_dir);
  fs::path out = opt.out_dir.empty() ? fs::path() : fs::absolute(opt.out_dir).lexically_normal();
  if (!out.empty() && out.filename().empty()) out = out.parent_path();  // "dir/" names dir
  DSV3_CHECK(!opt.in_dir.empty() && fs::is_directory(in), "convert: input directory '", opt.in_dir,
             "' does not exist");
  DSV3_CHECK(fs::exists(in / "config.json"), "convert: '", opt.in_dir, "' has no config.json");
  DSV3_CHECK(!opt.out_dir.empty(), "convert: no output directory given");
  std::error_code ec;
  DSV3_CHECK(!fs::exists(out) || !fs::equivalent(in, out, ec), "convert: output directory is the input directory");
  DSV3_CHECK(!fs::exists(out) || opt.force, "convert: output directory '", opt.out_dir,
             "' exists (pass --force to replace it)");
  const ModelConfig cfg = ModelConfig::load((in / "config.json").string());
  ojson cfg_json = ojson::parse(read_text(in / "config.json"), nullptr, false);
  DSV3_CHECK(!cfg_json.is_discarded() && cfg_json.is_object(), "convert: cannot parse ", (in / "config.json").string());
  const io::SafetensorsModel st = io::SafetensorsModel::open(opt.in_dir);
  const std::vector<OutShard> shards = plan_output(st, cfg, opt.to);
  const bool indexed = fs::exists(in / "model.safetensors.index.json") && !fs::exists(in / "model.safetensors");

  // Build next to the destination (same filesystem), then rename into place.
  const fs::path parent = out.parent_path();
  fs::create_directories(parent, ec);
  DSV3_CHECK(fs::is_directory(parent), "convert: cannot create '", parent.string(), "': ", ec.message());
  const fs::path tmp = parent / (out.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  DSV3_CHECK(fs::create_directory(tmp, ec), "convert: cannot create '", tmp.string(), "': ", ec.message());
  ConvertStats stats;
  try {
    ConvertProgress prog;
    for (const OutShard& sh : shards)
      for (const OutTensor& t : sh.tensors) {
        prog.total += 1;
        prog.bytes_total += t.nbytes();
      }
    for (const OutShard& sh : shards) write_shard(st, sh, tmp / sh.file, stats, prog, opt);
    if (indexed) write_index(shards, in / "model.safetensors.index.json", tmp / "model.safetensors.index.json");
    if (opt.to == CheckpointFormat::kFp8) {
      cfg_json["quantization_config"] = ojson::parse(
          R"({"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8","weight_block_size":[128,128]})");
    } else {
      cfg_json.erase("quantization_config");
    }
    cfg_json["torch_dtype"] = "bfloat16";
    io::atomic_write_file((tmp / "config.json").string(), cfg_json.dump(2) + "\n");
    for (const char* name : kCopiedFiles)
      if (fs::exists(in / name)) fs::copy_file(in / name, tmp / name, fs::copy_options::overwrite_existing);
    if (fs::exists(out)) {
      const fs::path old = parent / (out.filename().string() + ".old-" + std::to_string(::getpid()));
      fs::rename(out, old);
      fs::rename(tmp, out);
      fs::remove_all(old);
    } else {
      fs::rename(tmp, out);
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return stats;
}

}  // namespace dsv3::fp8
