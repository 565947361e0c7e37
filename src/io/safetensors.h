// Safetensors read (mmap, zero-copy, fully validated header, sharded index) and write (streamed, atomic).
//
// File layout (Hugging Face safetensors): u64 little-endian N | N bytes of UTF-8 JSON header | data section.
// Header: {"__metadata__": {str: str}?, "<name>": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...}
// with offsets relative to the data section. A file is accepted only if the tensors' byte ranges, sorted,
// tile the data section exactly (no gap, no overlap, nothing left over) and every range has exactly
// numel * dtype_size bytes. Every error is a dsv3::Error that names the file (and the tensor, if any).
//
// Model directories follow transformers: `model.safetensors`, or `model.safetensors.index.json`
// ({"metadata": {...}, "weight_map": {tensor: shard}}) plus shards `model-00001-of-0000N.safetensors`.
// When both a single file and an index exist the single file wins (as in transformers).
// See docs/formats.md for the details and the choices made.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace dsv3::io {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;  // same limit as the HF library

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets in the data section; end - begin == numel * dtype_size
  std::string file;             // path of the .safetensors file holding it
  uint64_t nbytes() const { return end - begin; }
};

// One .safetensors file, mapped read-only (MAP_PRIVATE). Tensors handed out by get() keep the mapping alive.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in header order
  const TensorInfo* find(const std::string& name) const;              // nullptr if absent
  // Zero-copy view into the mapping; the memory is read-only (writing through it faults: clone() first).
  // If the bytes are not aligned to the dtype size (possible only in files
  // written by other tools) the tensor is copied into an aligned owned buffer instead.
  Tensor get(const std::string& name) const;
  // Asks the kernel to start reading this tensor's pages (madvise WILLNEED); a hint, never an error.
  void prefetch(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  uint64_t data_offset() const { return data_offset_; }  // 8 + N: where the data section starts in the file

 private:
  SafetensorsFile() = default;
  struct Mapping;
  std::shared_ptr<Mapping> map_;
  std::string path_;
  uint64_t file_size_ = 0, data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// A model's weights: a directory with model.safetensors or model.safetensors.index.json + shards, or a single
// .safetensors file. The index is validated against the shards when opened.
class SafetensorsModel {
 public:
  static SafetensorsModel open(const std::string& path);

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws naming the tensor if missing
  Tensor get(const std::string& name) const;               // throws naming the tensor and the path if missing
  std::vector<std::string> names() const;                  // sorted
  size_t size() const { return entries_.size(); }
  const std::string& path() const { return path_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  // __metadata__ of the single file, or of the first shard for a sharded model.
  const std::map<std::string, std::string>& metadata() const;

 private:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, Entry> entries_;
};

// Writes one .safetensors file atomically: tensors in the given order, header padded with spaces so the data
// section starts at a multiple of 8, tensor bytes streamed (never the whole file in memory).
// Names must be unique, non-empty and not "__metadata__".
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes a model directory (created if missing). Shards are filled greedily in the given order so that each
// shard's tensor bytes are <= max_shard_bytes (unless one tensor alone is larger); one shard gives a plain
// model.safetensors and no index, more give model-0000k-of-0000N.safetensors + model.safetensors.index.json
// ({"metadata": {"total_size": bytes, ...metadata}, "weight_map": {...}}), written last. Every shard gets
// `metadata` as its __metadata__, with "format": "pt" added when absent (transformers requires it).
// Afterwards, files of the other layout (a stale model.safetensors / index / other model-*-of-* shards) are
// removed so the directory holds exactly one consistent set of weights.
void write_safetensors_model(const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
                             uint64_t max_shard_bytes = 5ull << 30,
                             const std::map<std::string, std::string>& metadata = {});

}  // namespace dsv3::io
