// Safetensors reader (mmap + full header validation), model-directory/index loader and streaming writer.
// Format and the validation rules are described in safetensors.h and docs/formats.md.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "dsv3/error.h"
#include "io/atomic_file.h"

namespace dsv3::io {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

// ------------------------------------------------------------------------------------------------ mapping

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t len = 0;
  ~Mapping() {
    if (addr) ::munmap(addr, len);
  }
};

namespace {

// Parses JSON text, rejecting duplicate keys in any object (nlohmann would silently keep one of them).
// Returns false with `err` set on a syntax error or a duplicate key.
bool parse_json_strict(const char* text, size_t n, ojson& out, std::string& err) {
  std::vector<std::set<std::string>> keys;
  std::string dup;
  auto cb = [&](int /*depth*/, ojson::parse_event_t ev, ojson& parsed) {
    if (ev == ojson::parse_event_t::object_start) keys.emplace_back();
    else if (ev == ojson::parse_event_t::object_end) keys.pop_back();
    else if (ev == ojson::parse_event_t::key && !keys.empty()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && dup.empty()) dup = k;
    }
    return true;
  };
  try {
    out = ojson::parse(text, text + n, cb);
  } catch (const ojson::exception& e) {
    err = e.what();
    return false;
  }
  if (!dup.empty()) {
    err = "duplicate key \"" + dup + "\"";
    return false;
  }
  return true;
}

// a * b with overflow detection.
bool mul_ok(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

#define FILE_CHECK(cond, ...) DSV3_CHECK(cond, "safetensors file '", path, "': ", __VA_ARGS__)
#define TENSOR_CHECK(cond, ...) \
  DSV3_CHECK(cond, "safetensors file '", path, "', tensor '", name, "': ", __VA_ARGS__)

// Validates one header entry and returns it (offsets not yet checked against the data section).
TensorInfo parse_entry(const std::string& path, const std::string& name, const ojson& e) {
  TENSOR_CHECK(e.is_object(), "header entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"}) TENSOR_CHECK(e.contains(key), "missing \"", key, "\"");
  TensorInfo t;
  t.name = name;
  t.file = path;

  const ojson& dt = e["dtype"];
  TENSOR_CHECK(dt.is_string(), "\"dtype\" is not a string");
  try {
    t.dtype = dtype_from_name(dt.get_ref<const std::string&>());
  } catch (const Error&) {
    TENSOR_CHECK(false, "unknown dtype \"", dt.get_ref<const std::string&>(), "\"");
  }

  const ojson& sh = e["shape"];
  TENSOR_CHECK(sh.is_array(), "\"shape\" is not an array");
  uint64_t numel = 1;
  for (const ojson& d : sh) {
    TENSOR_CHECK(d.is_number_integer() || d.is_number_unsigned(), "shape ", sh.dump(), " has a non-integer entry");
    TENSOR_CHECK(d.is_number_unsigned(), "shape ", sh.dump(), " has a negative entry");
    uint64_t v = d.get<uint64_t>();
    TENSOR_CHECK(v <= uint64_t(std::numeric_limits<int64_t>::max()), "shape ", sh.dump(), " entry too large");
    TENSOR_CHECK(mul_ok(numel, v, numel), "shape ", sh.dump(), " has too many elements (overflow)");
    t.shape.push_back(int64_t(v));
  }
  TENSOR_CHECK(numel <= uint64_t(std::numeric_limits<int64_t>::max()), "shape ", sh.dump(), " has too many elements");
  uint64_t expect_bytes = 0;
  TENSOR_CHECK(mul_ok(numel, dtype_size(t.dtype), expect_bytes), "byte size of shape ", sh.dump(), " overflows");

  const ojson& off = e["data_offsets"];
  TENSOR_CHECK(off.is_array() && off.size() == 2, "\"data_offsets\" must be an array [begin, end], got ", off.dump());
  for (const ojson& o : off)
    TENSOR_CHECK(o.is_number_unsigned(), "\"data_offsets\" ", off.dump(), " must be non-negative integers");
  t.begin = off[0].get<uint64_t>();
  t.end = off[1].get<uint64_t>();
  TENSOR_CHECK(t.begin <= t.end, "\"data_offsets\" ", off.dump(), " has end < begin");
  TENSOR_CHECK(t.end - t.begin == expect_bytes, "data_offsets ", off.dump(), " span ", t.end - t.begin,
               " bytes but dtype ", dtype_name(t.dtype), " shape ", shape_str(t.shape), " needs ", expect_bytes);
  return t;
}

#undef TENSOR_CHECK

}  // namespace

// ------------------------------------------------------------------------------------------------ SafetensorsFile

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FILE_CHECK(fd >= 0, "cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    FILE_CHECK(false, "cannot stat: ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    FILE_CHECK(false, "not a regular file");
  }
  const uint64_t size = uint64_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    FILE_CHECK(false, "file is ", size, " bytes, too short for the 8-byte header length");
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);  // the mapping stays valid after the descriptor is closed
  FILE_CHECK(addr != MAP_FAILED, "mmap of ", size, " bytes failed: ", std::strerror(map_err));

  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->map_ = std::make_shared<Mapping>();
  f->map_->addr = addr;
  f->map_->len = size;
  f->path_ = path;
  f->file_size_ = size;
  const auto* bytes = static_cast<const unsigned char*>(addr);

  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian u64
  FILE_CHECK(n <= kMaxSafetensorsHeaderBytes, "header length ", n, " exceeds the ", kMaxSafetensorsHeaderBytes,
             "-byte limit (corrupt or not a safetensors file)");
  FILE_CHECK(8 + n <= size, "header length ", n, " runs past the end of the ", size, "-byte file (truncated?)");
  f->data_offset_ = 8 + n;
  const uint64_t data_size = size - f->data_offset_;

  ojson header;
  std::string err;
  FILE_CHECK(parse_json_strict(reinterpret_cast<const char*>(bytes + 8), n, header, err), "header is not valid JSON: ",
             err);
  FILE_CHECK(header.is_object(), "header is not a JSON object (got ", header.type_name(), ")");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      FILE_CHECK(it->is_object(), "__metadata__ is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        FILE_CHECK(m->is_string(), "__metadata__ value for \"", m.key(), "\" is not a string");
        f->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    f->by_name_[name] = f->tensors_.size();
    f->tensors_.push_back(parse_entry(path, name, *it));
  }

  // The byte ranges, sorted, must tile [0, data_size) exactly.
  std::vector<const TensorInfo*> order;
  for (const TensorInfo& t : f->tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : order) {
    FILE_CHECK(t->end <= data_size, "tensor '", t->name, "' occupies data bytes [", t->begin, ", ", t->end,
               ") but the data section has only ", data_size, " bytes (file truncated?)");
    FILE_CHECK(t->begin >= pos, "tensor '", t->name, "' [", t->begin, ", ", t->end, ") overlaps tensor '",
               prev ? prev->name : "", "' which ends at ", pos);
    FILE_CHECK(t->begin == pos, "gap of ", t->begin - pos, " bytes before tensor '", t->name, "' at data offset ",
               pos);
    pos = t->end;
    prev = t;
  }
  FILE_CHECK(pos == data_size, "data section is ", data_size, " bytes but the tensors cover only ", pos,
             " (", data_size - pos, " trailing bytes)");
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  DSV3_CHECK(t != nullptr, "safetensors file '", path_, "' has no tensor '", name, "'");
  auto* p = static_cast<unsigned char*>(map_->addr) + data_offset_ + t->begin;
  Tensor view = Tensor::wrap(p, t->shape, t->dtype, map_);
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(t->dtype) != 0) return view.clone();  // misaligned: copy
  return view;
}

void SafetensorsFile::prefetch(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t || t->nbytes() == 0) return;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  uintptr_t lo = reinterpret_cast<uintptr_t>(map_->addr) + data_offset_ + t->begin;
  uintptr_t hi = lo + t->nbytes();
  lo &= ~(page - 1);
  ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_WILLNEED);
}

// ------------------------------------------------------------------------------------------------ SafetensorsModel

namespace {

constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kIndexName = "model.safetensors.index.json";

std::string read_small_file(const std::string& path, uint64_t limit) {
  std::error_code ec;
  uint64_t size = fs::file_size(path, ec);
  DSV3_CHECK(!ec, "cannot stat '", path, "': ", ec.message());
  DSV3_CHECK(size <= limit, "'", path, "' is ", size, " bytes, more than the ", limit, "-byte limit");
  std::ifstream in(path, std::ios::binary);
  DSV3_CHECK(in.good(), "cannot open '", path, "': ", std::strerror(errno));
  std::string s(size, '\0');
  in.read(s.data(), std::streamsize(size));
  DSV3_CHECK(in.gcount() == std::streamsize(size), "short read of '", path, "'");
  return s;
}

// Shard names in an index must stay inside the model directory.
bool safe_relative(const std::string& shard) {
  fs::path p(shard);
  if (shard.empty() || p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

SafetensorsModel SafetensorsModel::open(const std::string& path) {
  SafetensorsModel m;
  m.path_ = path;
  std::error_code ec;
  auto add_file = [&](std::shared_ptr<SafetensorsFile> f) {
    for (const TensorInfo& t : f->tensors()) m.entries_[t.name] = Entry{f.get(), &t};
    m.files_.push_back(std::move(f));
  };
  if (fs::is_regular_file(path, ec)) {
    add_file(SafetensorsFile::open(path));
    return m;
  }
  DSV3_CHECK(fs::is_directory(path, ec), "model weights path '", path, "' does not exist");
  const fs::path dir(path);
  if (fs::exists(dir / kSingleName, ec)) {
    add_file(SafetensorsFile::open((dir / kSingleName).string()));
    return m;
  }
  const std::string index_path = (dir / kIndexName).string();
  DSV3_CHECK(fs::exists(index_path, ec), "model directory '", path, "' holds neither ", kSingleName, " nor ",
             kIndexName);

#define INDEX_CHECK(cond, ...) DSV3_CHECK(cond, "safetensors index '", index_path, "': ", __VA_ARGS__)
  std::string text = read_small_file(index_path, 256ull << 20);
  ojson index;
  std::string err;
  INDEX_CHECK(parse_json_strict(text.data(), text.size(), index, err), "not valid JSON: ", err);
  INDEX_CHECK(index.is_object(), "not a JSON object");
  INDEX_CHECK(index.contains("weight_map") && index["weight_map"].is_object(), "missing \"weight_map\" object");
  INDEX_CHECK(!index.contains("metadata") || index["metadata"].is_object(), "\"metadata\" is not an object");

  std::map<std::string, std::string> shard_of;  // tensor -> shard file name
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    INDEX_CHECK(it->is_string(), "weight_map value for tensor '", it.key(), "' is not a string");
    const std::string& shard = it->get_ref<const std::string&>();
    INDEX_CHECK(safe_relative(shard), "tensor '", it.key(), "' maps to shard \"", shard,
                "\", which is not a relative path inside the model directory");
    shard_of[it.key()] = shard;
    by_shard[shard].push_back(it.key());
  }
  for (const auto& [shard, names] : by_shard) {
    const std::string shard_path = (dir / shard).string();
    INDEX_CHECK(fs::is_regular_file(shard_path, ec), "shard '", shard_path, "' (holding tensor '", names.front(),
                "' and ", names.size() - 1, " more) does not exist");
    std::shared_ptr<SafetensorsFile> f;
    try {
      f = SafetensorsFile::open(shard_path);
    } catch (const Error& e) {
      INDEX_CHECK(false, "cannot load shard: ", e.what());
    }
    for (const TensorInfo& t : f->tensors()) {
      auto seen = m.entries_.find(t.name);
      INDEX_CHECK(seen == m.entries_.end(), "tensor '", t.name, "' is stored in two shards: '",
                  seen->second.file->path(), "' and '", shard_path, "'");
      auto mapped = shard_of.find(t.name);
      INDEX_CHECK(mapped != shard_of.end(), "shard '", shard_path, "' holds tensor '", t.name,
                  "', which the index does not list");
      INDEX_CHECK(mapped->second == shard, "shard '", shard_path, "' holds tensor '", t.name,
                  "', but the index maps it to '", mapped->second, "'");
    }
    for (const std::string& name : names)
      INDEX_CHECK(f->find(name) != nullptr, "index maps tensor '", name, "' to shard '", shard_path,
                  "', which does not contain it");
    add_file(std::move(f));
  }
#undef INDEX_CHECK
  return m;
}

const TensorInfo& SafetensorsModel::info(const std::string& name) const {
  auto it = entries_.find(name);
  DSV3_CHECK(it != entries_.end(), "tensor '", name, "' not found in model weights '", path_, "'");
  return *it->second.info;
}

Tensor SafetensorsModel::get(const std::string& name) const {
  auto it = entries_.find(name);
  DSV3_CHECK(it != entries_.end(), "tensor '", name, "' not found in model weights '", path_, "'");
  return it->second.file->get(name);
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& kv : entries_) out.push_back(kv.first);
  std::sort(out.begin(), out.end());
  return out;
}

const std::map<std::string, std::string>& SafetensorsModel::metadata() const {
  static const std::map<std::string, std::string> kEmpty;
  return files_.empty() ? kEmpty : files_.front()->metadata();
}

// ------------------------------------------------------------------------------------------------ writer

namespace {

// The header bytes (JSON + space padding to a multiple of 8) for tensors laid out back to back in order.
std::string build_header(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  ojson h = ojson::object();
  if (!metadata.empty()) {
    ojson md = ojson::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    h["__metadata__"] = std::move(md);
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    FILE_CHECK(!name.empty(), "empty tensor name");
    FILE_CHECK(name != "__metadata__", "a tensor may not be named __metadata__");
    FILE_CHECK(!h.contains(name), "duplicate tensor name '", name, "'");
    for (int64_t d : t.shape) FILE_CHECK(d >= 0, "tensor '", name, "' has negative shape ", shape_str(t.shape));
    FILE_CHECK(t.data != nullptr || t.numel() == 0, "tensor '", name, "' has no data");
    uint64_t nb = t.nbytes();
    ojson e = ojson::object();
    e["dtype"] = std::string(dtype_name(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + nb};
    h[name] = std::move(e);
    offset += nb;
  }
  std::string s;
  try {
    s = h.dump(-1, ' ', false, ojson::error_handler_t::strict);
  } catch (const ojson::exception& e) {
    FILE_CHECK(false, "cannot encode header (tensor names and metadata must be valid UTF-8): ", e.what());
  }
  s.append((8 - s.size() % 8) % 8, ' ');
  return s;
}

// True for "model-DDDDD-of-DDDDD.safetensors", the shard names this writer produces.
bool is_shard_name(const std::string& f) {
  const std::string pre = "model-", mid = "-of-", suf = ".safetensors";
  if (f.size() != pre.size() + 5 + mid.size() + 5 + suf.size()) return false;
  auto digits = [&](size_t at) {
    return std::all_of(f.begin() + long(at), f.begin() + long(at + 5), [](char c) { return c >= '0' && c <= '9'; });
  };
  return f.compare(0, pre.size(), pre) == 0 && digits(pre.size()) && f.compare(pre.size() + 5, mid.size(), mid) == 0 &&
         digits(pre.size() + 5 + mid.size()) && f.compare(f.size() - suf.size(), suf.size(), suf) == 0;
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = build_header(path, tensors, metadata);
  atomic_write_file(path, [&](std::FILE* f) {
    unsigned char len[8];
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    fwrite_checked(f, len, 8, path);
    fwrite_checked(f, header.data(), header.size(), path);
    for (const auto& [name, t] : tensors) fwrite_checked(f, t.data, t.nbytes(), path);
  });
}

#undef FILE_CHECK

void write_safetensors_model(const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
                             uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  DSV3_CHECK(!ec && fs::is_directory(dir), "cannot create model directory '", dir, "': ", ec.message());
  std::map<std::string, std::string> shard_md = metadata;
  shard_md.emplace("format", "pt");

  // Greedy split in the given order: start a new shard when the next tensor would overflow a non-empty one.
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  uint64_t cur = 0, total = 0;
  for (const auto& nt : tensors) {
    uint64_t nb = nt.second.nbytes();
    if (!shards.back().empty() && nb > 0 && cur + nb > max_shard_bytes) {  // 0-byte tensors never split
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(nt);
    cur += nb;
    total += nb;
  }

  const fs::path d(dir);
  std::set<std::string> keep;
  if (shards.size() == 1) {
    write_safetensors((d / kSingleName).string(), shards[0], shard_md);
    keep.insert(kSingleName);
  } else {
    ojson weight_map = ojson::object();
    std::vector<std::string> files;
    for (size_t i = 0; i < shards.size(); ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      files.push_back(name);
    }
    // Names of the weight map: validated by write_safetensors per shard; duplicates across shards checked here.
    std::map<std::string, std::string> wm;
    for (size_t i = 0; i < shards.size(); ++i)
      for (const auto& nt : shards[i])
        DSV3_CHECK(wm.emplace(nt.first, files[i]).second, "writing '", dir, "': duplicate tensor name '", nt.first,
                   "'");
    for (size_t i = 0; i < shards.size(); ++i) {
      write_safetensors((d / files[i]).string(), shards[i], shard_md);
      keep.insert(files[i]);
    }
    ojson index = ojson::object();
    ojson md = ojson::object();
    md["total_size"] = total;
    for (const auto& [k, v] : metadata)
      if (k != "total_size") md[k] = v;
    index["metadata"] = std::move(md);
    for (const auto& [name, file] : wm) weight_map[name] = file;
    index["weight_map"] = std::move(weight_map);
    std::string text;
    try {
      text = index.dump(2, ' ', false, ojson::error_handler_t::strict) + "\n";
    } catch (const ojson::exception& e) {
      DSV3_FAIL("writing '", dir, "': cannot encode index: ", e.what());
    }
    atomic_write_file((d / kIndexName).string(), text);
    keep.insert(kIndexName);
  }

  // Remove weights of the other layout / other shard counts so readers cannot pick up stale files.
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(d, ec)) {
    const std::string fname = entry.path().filename().string();
    bool ours = fname == kSingleName || fname == kIndexName || is_shard_name(fname);
    if (ours && !keep.count(fname)) stale.push_back(entry.path());
  }
  for (const fs::path& p : stale) {
    fs::remove(p, ec);
    DSV3_CHECK(!ec, "cannot remove stale weights file '", p.string(), "': ", ec.message());
  }
}

}  // namespace dsv3::io
